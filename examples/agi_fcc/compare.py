"""Compare the package's analyser with the independent fcc-iodide AgI reference, one JSON line per run directory.

Runs ``iondiff-stream analyze`` as a user would (unless ``--reuse`` and ``OUT/summary.json`` exists), reads
``OUT/hops.csv`` (closed hops: ``open`` false), ``OUT/summary.json`` and ``OUT/results.zarr`` (``sites_A``), and
the reference (``RUN_DIR/reference.json`` / ``.npz`` from ``reference.py``, computed here when missing).

Usage::

    python examples/agi_fcc/compare.py RUN_DIR [RUN_DIR ...] [--reuse] [--iondiff /path/to/iondiff-stream]

``RUN_DIR`` holds ``dump.lammpstrj``, ``agi_fcc.data`` and ``run.json`` (``run_series.py``); the analysis goes
to ``RUN_DIR/analysis``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time

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


def _commit(iondiff: str) -> str | None:
    """Short commit of the checkout whose ``.venv`` holds ``iondiff`` (None when not a git checkout)."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(iondiff))))
    try:
        return subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _is_open(v: str) -> bool:
    return v.strip().lower() in ("true", "1", "yes")


def compare_run(run: str, iondiff: str, reuse: bool, tol: float = 0.5) -> dict:
    out = os.path.join(run, "analysis")
    meta = json.load(open(os.path.join(run, "run.json")))
    T, dt = meta.get("T"), meta.get("dt_ps", 0.004)
    wall, commit_before, commit_after = None, None, None
    if not (reuse and os.path.exists(os.path.join(out, "summary.json"))):
        cmd = [iondiff, "analyze", os.path.join(run, "dump.lammpstrj"), "--topology",
               os.path.join(run, "agi_fcc.data"), "--mobile", "type 1", "--md-timestep-ps", str(dt),
               "--out", out, "--overwrite", "--no-progress"]
        if T is not None:
            cmd += ["--temperature", str(T)]
        commit_before = _commit(iondiff)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        commit_after = _commit(iondiff)
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
    n_t = int(refz["n_tet_sites"])
    sites, sites_mean = refz["sites_A"], refz["sites_mean_A"]
    d_ref = _near(sites, found, L)
    d_ref_mean = _near(sites_mean, found, L)
    d_found = _near(found, sites, L)
    d_found_tet = _near(found, sites[:n_t], L)
    d_found_oct = _near(found, sites[n_t:], L)
    # found sites on the straight tet-oct path (sum of the two distances within 0.3 A of its length a sqrt(3)/4)
    seg = float(ref["lattice_a_A"]) * np.sqrt(3) / 4
    on_seg = (d_found_tet + d_found_oct) < seg + 0.3

    ref_ids = refz["mobile_atom_ids"]
    ref_counts = refz["hops_per_ion"].astype(float)
    counts = dict.fromkeys(ref_ids.tolist(), 0)
    n_rows = n_closed = 0
    with open(os.path.join(out, "hops.csv")) as fh:
        for row in csv.DictReader(fh):
            n_rows += 1
            if _is_open(row.get("open", "false")):
                continue
            n_closed += 1
            aid = int(row["atom_id"])
            if aid in counts:
                counts[aid] += 1
    fc = np.array([counts[i] for i in ref_ids.tolist()], float)
    pearson = float(np.corrcoef(fc, ref_counts)[0, 1]) if fc.std() > 0 and ref_counts.std() > 0 else None
    n_found = summ.get("n_hops")
    nu = summ.get("hop_frequency_per_ps")
    D = summ.get("D_tracer_cm2_s")
    return {
        "run_dir": run, "T": T, "out": out, "analyze_wall_s": wall,
        "main_commit": commit_before if commit_before == commit_after else f"{commit_before}..{commit_after}",
        "n_sites_found": int(len(found)), "n_sites_ref": int(len(sites)), "n_tet_ref": n_t,
        "n_oct_ref": int(len(sites) - n_t), "tol_A": tol,
        "ref_sites_with_found_within_tol": int((d_ref < tol).sum()),
        "ref_sites_with_found_within_tol_share": float((d_ref < tol).mean()),
        "ref_tet_with_found_within_tol": int((d_ref[:n_t] < tol).sum()),
        "ref_oct_with_found_within_tol": int((d_ref[n_t:] < tol).sum()),
        "ref_mean_sites_with_found_within_tol": int((d_ref_mean < tol).sum()),
        "found_sites_within_tol_of_ref": int((d_found < tol).sum()),
        "found_sites_within_tol_of_ref_share": float((d_found < tol).mean()) if len(found) else None,
        "found_sites_within_tol_of_tet": int((d_found_tet < tol).sum()),
        "found_sites_within_tol_of_oct": int((d_found_oct < tol).sum()),
        "found_sites_median_dist_to_ref_A": float(np.median(d_found)) if len(found) else None,
        "found_sites_on_tet_oct_path_share": float(on_seg.mean()) if len(found) else None,
        "hops_found": n_found, "hops_csv_rows": n_rows, "hops_csv_closed": n_closed, "hops_ref": ref["n_hops"],
        "hops_found_over_ref": n_found / ref["n_hops"] if n_found is not None and ref["n_hops"] else None,
        "hops_closed_over_ref": n_closed / ref["n_hops"] if ref["n_hops"] else None,
        "hops_ref_tet_only": ref["n_hops_tet_only"],
        "nu_found_per_ps": nu, "nu_ref_per_ps": ref["nu_per_ps"],
        "nu_found_over_ref": nu / ref["nu_per_ps"] if nu is not None and ref["nu_per_ps"] else None,
        "pearson_per_ion_hops": pearson,
        "D_tracer_cm2_s": D, "D_plain_msd_ref_cm2_s": ref["D_tracer_plain_cm2_s"],
        "D_tracer_over_plain": D / ref["D_tracer_plain_cm2_s"] if D else None,
        "hop_msd_fraction": summ.get("hop_msd_fraction"), "hop_msd_check": summ.get("hop_msd_check"),
        "site_model": summ.get("site_model"), "site_check": summ.get("site_check"),
        "ref_share_nn_jumps": ref["share_nn_jumps"], "ref_oct_share_frames": ref["oct_share_frames_raw"],
        "ref_sites_visited": ref["n_sites_visited"], "msd_I_max_A2": ref["msd_I_max_A2"],
        "warnings": summ.get("warnings", []),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", nargs="+")
    ap.add_argument("--reuse", action="store_true", help="reuse RUN_DIR/analysis when it holds summary.json")
    ap.add_argument("--iondiff", default=os.path.join(os.path.dirname(sys.executable), "iondiff-stream"))
    ap.add_argument("--tol", type=float, default=0.5, help="site match distance, A")
    a = ap.parse_args()
    for run in a.run_dirs:
        print(json.dumps(compare_run(run, a.iondiff, a.reuse, a.tol)), flush=True)


if __name__ == "__main__":
    main()
