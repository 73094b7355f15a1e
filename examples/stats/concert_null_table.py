"""Is the concert real? The time-shuffled null next to the observed concerted groups, on real runs.

Analyses (default hop detector, 300 null draws unless ``--draws``) the argyrodite Li6PS5Cl runs of
``../shared/data`` (0p, 50p, 100p, all restarts, 500 K) and, when given, CaF2 LAMMPS runs (``--caf2 DIR``
holding ``T1300_c.dump``/``.data`` etc., dumps every 0.02 ps with ``--md-timestep-ps 0.002``), and prints one
Markdown row per run: hops, share of hops in groups ≥ 2 observed / null, p-values, b observed / null,
vacancy-following pairs observed / null.

    python examples/stats/concert_null_table.py --caf2 /path/to/caf2_runs [--draws 300]
"""

from __future__ import annotations

import argparse
import glob
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ARGY = os.path.join(HERE, "..", "..", "..", "shared", "data", "argyrodite_Li6PS5Cl_morgan2021", "data", "Li6PS5Cl")


def row(name: str, s: dict) -> str:
    def f(x, fmt="{:.3g}"):
        return "–" if x is None else fmt.format(x)

    fit, fitn = s.get("group_size_fit") or {}, s.get("group_size_fit_null") or {}
    obs = s.get("fraction_hops_concerted")
    pm = s.get("pair_mechanisms") or {}
    pmn = s.get("null_pair_mechanisms_mean") or {}
    return (f"| {name} | {s['n_hops']} | {f(obs and 100 * obs, '{:.1f}')} % / "
            f"{f(s.get('null_fraction_hops_concerted_mean') and 100 * s['null_fraction_hops_concerted_mean'], '{:.1f}')} ± "
            f"{f(s.get('null_fraction_hops_concerted_std') and 100 * s['null_fraction_hops_concerted_std'], '{:.1f}')} % | "
            f"{f(s.get('concert_p_value'))} | {f(s.get('concert_p_value_mean_size'))} | "
            f"{f(fit.get('b'), '{:.2f}')} ± {f(fit.get('b_err'), '{:.2f}')} | {f(fitn.get('b'), '{:.2f}')} | "
            f"{pm.get('vacancy_following', '–')} / {f(pmn.get('vacancy_following'), '{:.2f}')} "
            f"({f((s.get('pair_mechanisms_p_value') or {}).get('vacancy_following'))}) | {f(s.get('hop_msd_fraction'), '{:.2f}')} |")


def main() -> None:
    from iondiff_stream.pipeline.run import analyze_run
    from iondiff_stream.analysis.correlations import CorrelationParameters

    ap = argparse.ArgumentParser()
    ap.add_argument("--caf2", default=None)
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--jobs", type=int, default=1)
    a = ap.parse_args()
    cp = CorrelationParameters(n_shuffle=a.draws, seed=0)
    print("| run | hops | hops in groups: observed / null | p (share) | p (mean size) | b observed | b null "
          "| vacancy-following pairs observed / null (p) | D_hops/D_MSD |")
    print("|---|---|---|---|---|---|---|---|---|")
    for T in (1300, 1500, 1700) if a.caf2 else ():
        d = a.caf2
        run = analyze_run([f"{d}/T{T}_c.dump"], "F", topology=f"{d}/T{T}_c.data", md_timestep_ps=0.002,
                          temperature_K=T, correlation_params=cp, progress=False, n_jobs=a.jobs)
        print(row(f"CaF2 {T} K", run.summary), flush=True)
    for comp in ("0p", "50p", "100p"):
        files = sorted(glob.glob(os.path.join(ARGY, comp, "run*", "actual_XDATCAR.gz")),
                       key=lambda p: int(os.path.basename(os.path.dirname(p))[3:]))
        run = analyze_run(files, "Li", timestep_ps=0.1, temperature_K=500, correlation_params=cp, progress=False,
                          n_jobs=a.jobs)
        print(row(f"Li6PS5Cl {comp}", run.summary), flush=True)


if __name__ == "__main__":
    main()
