"""Compare the package's analyser with the per-frame framework reference (``reference_framework.py``) on CaF2.

For every run (``OUT_DIR/T{T}_{tag}.dump`` + ``.data`` from ``run_series.py``): runs ``iondiff-stream analyze``
as a user would (unless ``--reuse`` and the output exists), reads ``hops.csv`` (closed hops: ``open`` false),
``summary.json`` and ``results.zarr`` (``sites_A``), and the reference (``OUT_DIR/T{T}/reference[_{tag}].json``
/ ``.npz``, computed here when missing), and prints ONE JSON line per run.

Usage::

    python examples/caf2/compare_framework.py OUT_DIR [--temps 1300 1500 1700] [--tags c n] [--reuse]
                                              [--iondiff /path/to/iondiff-stream]

The analysis goes to ``OUT_DIR/T{T}/analysis`` (tag ``c``) or ``OUT_DIR/T{T}/analysis_{tag}``.
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
MD_DT = 0.002


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


def compare_run(out_dir: str, T: int, tag: str, iondiff: str, reuse: bool, tol: float = 0.5) -> dict:
    dump = os.path.join(out_dir, f"T{T}_{tag}.dump")
    data = os.path.join(out_dir, f"T{T}_{tag}.data")
    rdir = os.path.join(out_dir, f"T{T}")
    out = os.path.join(rdir, "analysis" if tag == "c" else f"analysis_{tag}")
    ref_json = os.path.join(rdir, "reference.json" if tag == "c" else f"reference_{tag}.json")
    wall, commit_before, commit_after = None, None, None
    if not (reuse and os.path.exists(os.path.join(out, "summary.json"))):
        cmd = [iondiff, "analyze", dump, "--topology", data, "--mobile", "type 2", "--md-timestep-ps", str(MD_DT),
               "--temperature", str(T), "--out", out, "--overwrite", "--no-progress"]
        commit_before = _commit(iondiff)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        commit_after = _commit(iondiff)
    if not os.path.exists(ref_json):
        sys.path.insert(0, HERE)
        from reference_framework import run_reference

        run_reference(dump, ref_json, md_timestep_ps=MD_DT, T=T)
    ref = json.load(open(ref_json))
    refz = np.load(ref_json[:-5] + ".npz")
    L = np.asarray(ref["box_A"], float)
    summ = json.load(open(os.path.join(out, "summary.json")))

    import zarr

    g = zarr.open_group(os.path.join(out, "results.zarr"), mode="r")
    found = np.asarray(g["sites_A"][:], float).reshape(-1, 3)
    tet, tet_mean, octs = refz["sites_A"], refz["sites_mean_A"], refz["oct_sites_A"]
    d_tet = _near(tet, found, L)
    d_tet_mean = _near(tet_mean, found, L)
    d_found = _near(found, tet, L)
    d_found_oct = _near(found, octs, L)

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
        "run": f"T{T}_{tag}", "T": T, "dump": dump, "out": out, "analyze_wall_s": wall,
        "main_commit": commit_before if commit_before == commit_after else f"{commit_before}..{commit_after}",
        "n_sites_found": int(len(found)), "n_sites_ref": int(len(tet)), "tol_A": tol,
        "ref_sites_with_found_within_tol": int((d_tet < tol).sum()),
        "ref_sites_with_found_within_tol_share": float((d_tet < tol).mean()),
        "ref_mean_sites_with_found_within_tol": int((d_tet_mean < tol).sum()),
        "found_sites_within_tol_of_ref": int((d_found < tol).sum()),
        "found_sites_within_tol_of_ref_share": float((d_found < tol).mean()) if len(found) else None,
        "found_sites_within_tol_of_oct": int((d_found_oct < tol).sum()),
        "found_sites_median_dist_to_ref_A": float(np.median(d_found)) if len(found) else None,
        "hops_found": n_found, "hops_csv_rows": n_rows, "hops_csv_closed": n_closed, "hops_ref": ref["n_hops"],
        "hops_found_over_ref": n_found / ref["n_hops"] if n_found is not None and ref["n_hops"] else None,
        "hops_closed_over_ref": n_closed / ref["n_hops"] if ref["n_hops"] else None,
        "nu_found_per_ps": nu, "nu_ref_per_ps": ref["nu_per_ps"],
        "nu_found_over_ref": nu / ref["nu_per_ps"] if nu is not None and ref["nu_per_ps"] else None,
        "pearson_per_ion_hops": pearson,
        "D_tracer_cm2_s": D, "D_plain_msd_ref_cm2_s": ref["D_tracer_plain_cm2_s"],
        "D_tracer_over_plain": D / ref["D_tracer_plain_cm2_s"] if D else None,
        "hop_msd_fraction": summ.get("hop_msd_fraction"), "hop_msd_check": summ.get("hop_msd_check"),
        "site_model": summ.get("site_model"), "site_check": summ.get("site_check"),
        "ref_share_nn_jumps": ref["share_nn_jumps"], "ref_sites_visited": ref["n_sites_visited"],
        "ref_oct_visits_kept": ref["oct_visits_kept"], "ref_hops_tet_plus_oct": ref["n_hops_tet_plus_oct"],
        "warnings": summ.get("warnings", []),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--temps", type=int, nargs="+", default=[1300, 1500, 1700])
    ap.add_argument("--tags", nargs="+", default=["c"])
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--iondiff", default=os.path.join(os.path.dirname(sys.executable), "iondiff-stream"))
    ap.add_argument("--tol", type=float, default=0.5)
    a = ap.parse_args()
    for T in a.temps:
        for tag in a.tags:
            if not os.path.exists(os.path.join(a.out_dir, f"T{T}_{tag}.dump")):
                continue
            print(json.dumps(compare_run(a.out_dir, T, tag, a.iondiff, a.reuse, a.tol)), flush=True)


if __name__ == "__main__":
    main()
