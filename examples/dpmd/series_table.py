"""The DeePMD temperature series side by side: hops, untrusted share, concerted modes, G_d(r≈0, t) times.

Reads analysis directories written by ``iondiff-stream analyze`` (``run_series.py`` writes ``OUT/T*/analysis``)
and prints the Markdown tables of docs/dpmd.md: per temperature the hops, the share of hops above the trust
levels, every concerted mode's pairs and frequency (per ion per ps), the G_d(r≈0, t) times; then the Arrhenius
fit of each mode's frequency and of the G_d times (``arrhenius_across_runs``, the same numbers as
``iondiff-stream report DIR --series DIR2 --series DIR3``).

    python series_table.py runs/ps40/T1300/analysis runs/ps40/T1500/analysis runs/ps40/T1700/analysis
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
                 f"{s.get('hops_above_trust_lo')} ({100 * (s.get('hops_above_trust_lo_fraction') or 0):.0f} %) / "
                 f"{s.get('hops_above_trust_hi')} ({100 * (s.get('hops_above_trust_hi_fraction') or 0):.1f} %)"]
        cells += [f"{c.get(m, 0)}, {_f(fr.get(m))}" for m in modes]
        cells += [str(s.get("concerted_mode_pairs")),
                  f"{s.get('Gd0_ratio_at_longest_lag'):.3f} at {s.get('Gd0_longest_lag_ps'):.0f} ps",
                  "not reached" if s.get("Gd0_onset_time_ps") is None else f"{s['Gd0_onset_time_ps']:.1f} ps",
                  "not reached" if s.get("Gd0_time_ps") is None else f"{s['Gd0_time_ps']:.1f} ps"]
        print("| " + " | ".join(cells) + " |")
    print()
    print("| Arrhenius of | Ea (eV) | 95 % interval (eV) | temperatures used | note |")
    print("|---|---|---|---|---|")
    fits = {f"mode {k}": v for k, v in arr["concerted_modes"].items()}
    fits.update({"G_d onset time": arr["Gd0_onset_time"], "G_d time": arr["Gd0_time"]})
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
