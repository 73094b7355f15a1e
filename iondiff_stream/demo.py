"""``make demo``: the main job on an embedded default.

Analyses the real argyrodite Li6PS5Cl AIMD run (50 % anion disorder, 500 K,
runs 1-6 concatenated, ``../shared/data``) when it is present, else a synthetic
run with known hops made on the spot, and writes the outputs to ``--out``.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys

from .analyze import analyze_run

logger = logging.getLogger(__name__)

ARGYRODITE = os.path.join("..", "shared", "data", "argyrodite_Li6PS5Cl_morgan2021", "data", "Li6PS5Cl", "50p")


def run_demo(out: str) -> dict:
    """Run the demo analysis; returns the summary."""
    files = sorted(glob.glob(os.path.join(ARGYRODITE, "run*", "actual_XDATCAR.gz")))
    if files:
        logger.warning("analysing %d argyrodite Li6PS5Cl restarts as one run (0.1 ps between frames)", len(files))
        run = analyze_run(files, "Li", out_dir=out, timestep_ps=0.1, n_jobs=2)
    else:
        from .synthetic import make_run

        logger.warning("%s not found: analysing a synthetic run with known hops", ARGYRODITE)
        syn = make_run(n_frames=3000, sigma_A=0.2, framework=True, seed=1)
        os.makedirs(out, exist_ok=True)
        dump, data = os.path.join(out, "synthetic.dump"), os.path.join(out, "synthetic.data")
        syn.write_lammps(dump, data)
        run = analyze_run([dump], "Li", topology=data, out_dir=out, timestep_ps=0.05)
    return run.summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="demo_out")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    summary = run_demo(args.out)
    keep = ["n_frames", "n_mobile", "timestep_ps", "n_hops", "n_diffusive_ions", "mean_hop_length_A",
            "mean_hop_duration_ps", "hop_frequency_per_ps", "mean_residence_time_ps", "D_tracer_cm2_s"]
    sys.stdout.write(json.dumps({k: summary.get(k) for k in keep}, indent=2) + "\n")
    sys.stdout.write(f"outputs: {args.out}/hops.csv, summary.json, results.zarr\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
