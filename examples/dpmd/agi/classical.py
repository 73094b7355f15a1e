"""The classical PRV counterpart of the DeePMD alpha-AgI series: an independent check of its G_d(r≈0, t) times.

The model that labelled the training data (``../../agi``: PRV rigid-ion potential, coul/long + PPPM), the same
cell (5x5x5, a = 5.07 Å, 250 Ag on random tetrahedral sites), the same timestep (4 fs), equilibration (5 ps NVT),
production length and frame spacing (every 10 steps) as ``../run_series.py --system agi``, written as a dump
(``../../agi/run_series.py``) and analysed by the same ``iondiff-stream analyze`` (mobile: type 1 = Ag).

    python classical.py --temperatures 450,550,650 --ps 20 --out runs_prv
    python ../series_table.py runs_prv/T450/analysis runs_prv/T550/analysis runs_prv/T650/analysis

Prints one JSON line per temperature: hops, hop frequency, mean residence time, D*, the G_d onset and ½ times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "agi"))

from run_series import run_one  # noqa: E402  (examples/agi/run_series.py)

KEYS = ("n_frames", "total_time_ps", "n_hops", "hop_frequency_per_ps", "mean_residence_time_ps",
        "mean_residence_time_all_ps", "D_tracer_cm2_s", "D_tracer_ci95_cm2_s", "Gd0_onset_time_ps", "Gd0_time_ps",
        "Gd0_time_reason", "Gd0_ratio_at_longest_lag", "Gd0_longest_lag_ps", "Gd0_long_time_over_rho",
        "Gd0_long_time_spread", "concerted_mode_counts")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--temperatures", default="450,550,650")
    ap.add_argument("--ps", type=float, default=20.0, help="production, ps")
    ap.add_argument("--every", type=int, default=10, help="dump interval, steps (the DeePMD runs' --every)")
    ap.add_argument("--seed", type=int, default=84721, help="Ag sites and velocities (agi/in.dpmd's default)")
    ap.add_argument("--out", default=os.path.join(HERE, "runs_prv"))
    a = ap.parse_args()
    for T in (float(x) for x in a.temperatures.split(",")):
        d = os.path.join(os.path.abspath(a.out), f"T{int(T)}")
        run = run_one(d, T, a.ps, seed=a.seed, dt=0.004, every=a.every, neq_ps=5.0)
        r = subprocess.run([sys.executable, "-m", "iondiff_stream.cli", "analyze", run["dump"], "--topology",
                            run["data"], "--mobile", "type 1", "--md-timestep-ps", "0.004", "--temperature", str(T),
                            "--out", os.path.join(d, "analysis"), "--overwrite", "--no-progress"],
                           capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"analyze failed at {T} K:\n{r.stderr[-3000:]}")
        s = json.load(open(os.path.join(d, "analysis", "summary.json")))
        print(json.dumps({"T_K": T, "msd_I_end_A2": run["msd_I_end_A2"], **{k: s.get(k) for k in KEYS}}), flush=True)


if __name__ == "__main__":
    main()
