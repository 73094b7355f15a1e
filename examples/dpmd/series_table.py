"""A temperature series side by side: hops, untrusted share, concerted modes, G_d(r≈0, t) times, time scales.

Reads analysis directories written by ``iondiff-stream analyze`` (``run_series.py`` writes ``OUT/T*/analysis``)
and prints the Markdown tables of docs/dpmd.md: per temperature the hops, the share of hops above the trust
levels, every concerted mode's pairs and frequency (per ion per ps), the G_d(r≈0, t) times; the time scales
(hop frequency, mean residence, D*, the G_d long-time value and times); then the Arrhenius fit of each mode's
frequency, of the G_d times, of ν and of D* (``arrhenius_across_runs``, the same numbers as
``iondiff-stream report DIR --series DIR2 --series DIR3``).

    python series_table.py runs/ps40/T1300/analysis runs/ps40/T1500/analysis runs/ps40/T1700/analysis
    python series_table.py agi/runs/T450/analysis agi/runs/T550/analysis agi/runs/T650/analysis
"""

from __future__ import annotations

import argparse
import json
import os

from iondiff_stream.outputs.report import arrhenius_across_runs


def _f(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}g}" if abs(x) < 1e-2 else f"{x:.{digits + 1}g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--json", help="also write the fits and rows here")
    a = ap.parse_args()
    sums = [json.load(open(os.path.join(d, "summary.json"))) for d in a.dirs]
    arr = arrhenius_across_runs(a.dirs)
    modes = sorted({k for s in sums for k in (s.get("concerted_mode_counts") or {})})
    head = ["T (K)", "ps", "hops", "hops > 0.05 / > 0.15 eV/Å"] + \
        [f"{m}: pairs, per ion per ps" for m in modes] + ["all pairs", "G_d: share reached at the longest lag",
                                                          "G_d onset (0.1)", "G_d time (½)"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for s in sums:
        c, fr = s.get("concerted_mode_counts") or {}, s.get("concerted_mode_frequency_per_ps") or {}
        cells = [f"{s['temperature_K']:.0f}", f"{s['total_time_ps']:.0f}", str(s["n_hops"]),
                 "— (no model deviation)" if s.get("hops_above_trust_lo") is None else
                 f"{s.get('hops_above_trust_lo')} ({100 * (s.get('hops_above_trust_lo_fraction') or 0):.0f} %) / "
                 f"{s.get('hops_above_trust_hi')} ({100 * (s.get('hops_above_trust_hi_fraction') or 0):.1f} %)"]
        cells += [f"{c.get(m, 0)}, {_f(fr.get(m))}" for m in modes]
        cells += [str(s.get("concerted_mode_pairs")),
                  f"{s.get('Gd0_ratio_at_longest_lag'):.3f} at {s.get('Gd0_longest_lag_ps'):.0f} ps",
                  "not reached" if s.get("Gd0_onset_time_ps") is None else f"{s['Gd0_onset_time_ps']:.1f} ps",
                  "not reached" if s.get("Gd0_time_ps") is None else f"{s['Gd0_time_ps']:.1f} ps"]
        print("| " + " | ".join(cells) + " |")
    print()
    print("| T (K) | hop frequency ν (per ion per ps) | mean residence (ps) | D* (cm²/s, 95 %) | G_d long-time value "
          "(G/ρ, spread over the late lags) | G_d onset (0.1) | G_d time τ_d (½) | τ_d / mean residence |")
    print("|---|---|---|---|---|---|---|---|")
    for s in sums:
        ci = s.get("D_tracer_ci95_cm2_s") or [None, None]
        res, tau, onset = s.get("mean_residence_time_ps"), s.get("Gd0_time_ps"), s.get("Gd0_onset_time_ps")
        lt, sp = s.get("Gd0_long_time_over_rho"), s.get("Gd0_long_time_spread")
        print(f"| {s['temperature_K']:.0f} | {_f(s.get('hop_frequency_per_ps'))} | {_f(res)} | "
              f"{_f(s.get('D_tracer_cm2_s'))} ({_f(ci[0])}–{_f(ci[1])}) | "
              f"{_f(lt)} ({'—' if sp is None else f'{100 * sp:.0f} %'}) | "
              f"{'—' if onset is None else f'{onset:.2f} ps'} | "
              f"{'—' if tau is None else f'{tau:.2f} ps'} | {'—' if tau is None or not res else f'{tau / res:.1f}'} |")
    print()
    print("| Arrhenius of | Ea (eV) | 95 % interval (eV) | temperatures used | note |")
    print("|---|---|---|---|---|")
    fits = {f"mode {k}": v for k, v in arr["concerted_modes"].items()}
    fits.update({"G_d onset time": arr["Gd0_onset_time"], "G_d time": arr["Gd0_time"]})
    for key, name in (("nu", "hop frequency ν"), ("D_tracer", "D*")):
        f = arr.get(key)
        fits[name] = None if f is None else {"Ea_eV": f.get("Ea_eV"), "Ea_err_eV": f.get("Ea_err_eV"),
                                             "Ea_ci95_eV": f.get("Ea_ci95_eV")}
    for name, f in fits.items():
        if f is None:
            print(f"| {name} | — | — | — | no fit |")
        elif f.get("Ea_eV") is None:
            print(f"| {name} | null | — | {len(f.get('temperatures_K') or [])} | {f.get('reason')} |")
        else:
            ci = f.get("Ea_ci95_eV") or [f["Ea_eV"] - 1.96 * f["Ea_err_eV"], f["Ea_eV"] + 1.96 * f["Ea_err_eV"]]
            used = f.get("temperatures_K") or arr["temperatures_K"]
            print(f"| {name} | {f['Ea_eV']:.3f} ± {f['Ea_err_eV']:.3f} | {ci[0]:.2f} – {ci[1]:.2f} | "
                  f"{', '.join(f'{t:.0f}' for t in used)} | |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(arr, fh, indent=1)


if __name__ == "__main__":
    main()
