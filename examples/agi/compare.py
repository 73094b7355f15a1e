"""Compare the package's analyser with the independent AgI reference on one run directory.

Runs ``iondiff-stream analyze`` as a user would (unless ``OUT/summary.json`` exists and ``--reuse`` is
given), reads ``OUT/hops.csv``, ``OUT/summary.json`` and ``OUT/results.zarr`` (array ``sites_A``), and the
reference (``RUN_DIR/reference.json`` / ``.npz`` from ``reference.py``, computed here when missing), and
prints ONE JSON line.

Usage::

    python examples/agi/compare.py RUN_DIR [--out OUT] [--reuse] [--iondiff /path/to/iondiff-stream]

``RUN_DIR`` holds ``dump.lammpstrj``, ``agi.data`` and ``run.json`` (``run_series.py``); ``OUT`` defaults to
``RUN_DIR/analysis``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys

import numpy as np
from scipy.spatial import cKDTree

HERE = os.path.dirname(os.path.abspath(__file__))


def _wrap(x: np.ndarray, L: np.ndarray) -> np.ndarray:
    y = x - L * np.floor(x / L)
    return np.where(y >= L, 0.0, y)


def _near(a: np.ndarray, b: np.ndarray, L: np.ndarray) -> np.ndarray:
    """Minimum-image distance from every point of ``a`` to the nearest point of ``b``, A."""
    if len(a) == 0 or len(b) == 0:
        return np.full(len(a), np.inf)
    return cKDTree(_wrap(b, L), boxsize=L).query(_wrap(a, L))[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--out", default=None)
    ap.add_argument("--reuse", action="store_true", help="reuse OUT when it already holds summary.json")
    ap.add_argument("--iondiff", default=os.path.join(os.path.dirname(sys.executable), "iondiff-stream"))
    ap.add_argument("--tol", type=float, default=0.5, help="site match distance, A")
    a = ap.parse_args()
    run = a.run_dir
    out = a.out or os.path.join(run, "analysis")
    meta = json.load(open(os.path.join(run, "run.json")))
    T, dt = meta.get("T"), meta.get("dt_ps", 0.004)

    if not (a.reuse and os.path.exists(os.path.join(out, "summary.json"))):
        cmd = [a.iondiff, "analyze", os.path.join(run, "dump.lammpstrj"), "--topology", os.path.join(run, "agi.data"),
               "--mobile", "type 1", "--md-timestep-ps", str(dt), "--out", out, "--no-progress", "--overwrite"]
        if T is not None:
            cmd += ["--temperature", str(T)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)

    if not os.path.exists(os.path.join(run, "reference.json")):
        sys.path.insert(0, HERE)
        from reference import run_reference

        run_reference(run)
    ref = json.load(open(os.path.join(run, "reference.json")))
    refz = np.load(os.path.join(run, "reference.npz"))
    L = np.asarray(ref["box_A"], float)
    summ = json.load(open(os.path.join(out, "summary.json")))

    import zarr

    g = zarr.open_group(os.path.join(out, "results.zarr"), mode="r")
    found = np.asarray(g["sites_A"][:], float).reshape(-1, 3)
    tet = refz["sites_A"]
    tet_mean = refz["sites_mean_A"]
    d_tet = _near(tet, found, L)            # every tetrahedral site -> nearest found site
    d_found = _near(found, tet, L)          # every found site -> nearest tetrahedral site
    d_tet_mean = _near(tet_mean, found, L)

    # per-ion hop counts, mapped by atom id
    ref_ids = refz["mobile_atom_ids"]
    ref_counts = refz["hops_per_ion"].astype(float)
    found_counts = dict.fromkeys(ref_ids.tolist(), 0)
    with open(os.path.join(out, "hops.csv")) as fh:
        for row in csv.DictReader(fh):
            aid = int(row["atom_id"])
            if aid in found_counts:
                found_counts[aid] += 1
    fc = np.array([found_counts[i] for i in ref_ids.tolist()], float)
    pearson = float(np.corrcoef(fc, ref_counts)[0, 1]) if fc.std() > 0 and ref_counts.std() > 0 else float("nan")

    n_found = summ.get("n_hops", int(fc.sum()))
    nu_found = summ.get("hop_frequency_per_ps")
    d_found_tr = summ.get("D_tracer_cm2_s")
    res = {
        "run_dir": run, "T": T, "out": out,
        "n_sites_found": int(len(found)),
        "tet_sites_with_found_site_within_tol": int((d_tet < a.tol).sum()),
        "tet_sites_with_found_site_within_tol_fraction": float((d_tet < a.tol).mean()),
        "tet_sites_mean_with_found_site_within_tol": int((d_tet_mean < a.tol).sum()),
        "found_sites_within_tol_of_tet_site": int((d_found < a.tol).sum()),
        "found_sites_median_dist_to_tet_A": float(np.median(d_found)) if len(found) else None,
        "tol_A": a.tol,
        "hops_found": n_found, "hops_ref": ref["n_hops"],
        "hops_found_over_ref": n_found / ref["n_hops"] if ref["n_hops"] else None,
        "nu_found_per_ps": nu_found, "nu_ref_per_ps": ref["nu_per_ps"],
        "nu_found_over_ref": nu_found / ref["nu_per_ps"] if nu_found is not None and ref["nu_per_ps"] else None,
        "pearson_per_ion_hops": pearson,
        "D_tracer_cm2_s": d_found_tr, "D_plain_msd_ref_cm2_s": ref["D_tracer_plain_cm2_s"],
        "D_tracer_over_plain": d_found_tr / ref["D_tracer_plain_cm2_s"] if d_found_tr else None,
        "D_hops_cm2_s": summ.get("D_hops_cm2_s"),
        "hop_msd_fraction": summ.get("hop_msd_fraction"), "hop_msd_check": summ.get("hop_msd_check"),
        "ref_share_tet_tet_1p79": ref["share_tet_tet_1p79"], "ref_sites_visited": ref["n_sites_visited"],
        "warnings": summ.get("warnings", []),
    }
    print(json.dumps(res))


if __name__ == "__main__":
    main()
