"""Hops on the real AIMD runs in ../shared/data, both methods (numbers for the README table).

Prints, per run: frames, frame spacing, mobile ions, sites found, hops, back-hop fraction, mean hop
length, D_hops / D_MSD (the fraction of the MSD the hops explain) and the warnings, for the default
("sites") and the published ("silhouette") method.

Usage: ``python examples/aimd/hops_table.py [DATA_DIR] [--json out.json]`` (default ../shared/data).
"""

from __future__ import annotations

import argparse
import glob
import json
import os

RUNS = {
    "argyrodite Li6PS5Cl 0p (run1-5, 500 K)": ("argyrodite_Li6PS5Cl_morgan2021/data/Li6PS5Cl/0p", "Li"),
    "argyrodite Li6PS5Cl 50p (run1-6, 500 K)": ("argyrodite_Li6PS5Cl_morgan2021/data/Li6PS5Cl/50p", "Li"),
    "argyrodite Li6PS5Cl 100p (run1-6, 500 K)": ("argyrodite_Li6PS5Cl_morgan2021/data/Li6PS5Cl/100p", "Li"),
    "LGPS 600 K": ("LGPS_600K_pmg_diffusion/derived_LGPS_600K_unwrapped.extxyz", "Li"),
    "Na3PS4 800 K": ("Na3PS4_cubic_800K_pmg_diffusion/derived_cNa3PS4_800K_unwrapped.extxyz", "Na"),
}


def files_of(data: str, rel: str) -> tuple[list[str], dict]:
    p = os.path.join(data, rel)
    if os.path.isdir(p):  # argyrodite: the runs of one system concatenated, 100 fs between frames
        fs = sorted(glob.glob(f"{p}/run*/actual_XDATCAR.gz"), key=lambda s: int(s.split("run")[-1].split("/")[0]))
        return fs, {"timestep_ps": 0.1}
    return [p], {}


def main() -> None:
    from iondiff_stream.pipeline.run import analyze_run
    from iondiff_stream.analysis.hops import HopParameters

    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("data", nargs="?", default=os.path.join(here, "..", "..", "..", "shared", "data"))
    ap.add_argument("--json")
    ap.add_argument("--methods", nargs="+", default=["sites", "silhouette"])
    a = ap.parse_args()
    rows = []
    for name, (rel, sp) in RUNS.items():
        fs, kw = files_of(a.data, rel)
        for method in a.methods:
            run = analyze_run(fs, sp, params=HopParameters(method=method), **kw)
            s = run.summary
            row = {"run": name, "method": method, "frames": s["n_frames"], "dt_ps": s["timestep_ps"],
                   "n_mobile": s["n_mobile"], "n_sites": s["n_sites"], "n_hops": s["n_hops"],
                   "back_fraction": s["n_back_hops"] / max(1, s["n_hops"]), "mean_length_A": s["mean_hop_length_A"],
                   "D_MSD_cm2_s": s["D_tracer_cm2_s"], "hop_msd_fraction": s["hop_msd_fraction"],
                   "hop_msd_fraction_ci95": s.get("hop_msd_fraction_ci95"),
                   "f_corr": s.get("hop_correlation_factor"), "f_corr_std": s.get("hop_correlation_factor_std"),
                   "hop_msd_fraction_correlated": s.get("hop_msd_fraction_correlated"),
                   "msd_growth_ratio": s.get("msd_growth_ratio"), "long_range_diffusion": s.get("long_range_diffusion"),
                   "hop_msd_check": s.get("hop_msd_check"), "warnings": s["warnings"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
