"""``iondiff-stream report DIR``: PNG figures and one HTML page from an analysis directory,
and ``iondiff-stream arrhenius``: activation energies across runs."""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from iondiff_stream.core.display import fmt
from iondiff_stream.core.errors import AnalysisError, SelectionError
from iondiff_stream.core.progress import stage

logger = logging.getLogger(__name__)

__all__ = ["make_report", "render_report", "trust_checks", "check_verdict", "summary_sections", "arrhenius_across_runs", "series_rows",
           "CAPTIONS"]


def _load(out_dir: str) -> tuple[dict[str, Any], Any]:
    from iondiff_stream.pipeline.files import read_outputs

    return read_outputs(out_dir)


#: figure file name -> caption under it in report.html
CAPTIONS = {
    "ion_path.png": "Path of the mobile ion with most hops: its positions coloured by the site it vibrates in (grey: "
                    "in transit), the sites' centres (stars), and its distance from the start with each hop shaded.",
    "hop_timeline.png": "Every closed hop of every mobile ion against time; a bar runs from the last frame in the "
                        "origin site to the first frame in the destination. Hops of one concerted group share a "
                        "colour; single hops are grey.",
    "correlation_matrix.png": "Correlation between hop events (1: same ions' displacements move together in time), "
                              "events ordered by concerted group; blocks on the diagonal are groups.",
    "group_sizes.png": "Concerted hopping observed against a null of the same hops with each ion's hop sequence "
                       "shifted in time at random. Left: share of hops in groups of 2 or more ions; right: the "
                       "distribution of group sizes. A p-value well below 0.05 means the hops are more concerted "
                       "than chance coincidence.",
    "msd.png": "Tracer mean squared displacement (total and per axis) and the collective one per ion, with the "
               "straight-line fit, its window (grey) and the 95 % interval of D* (orange band).",
}

_BADGE = {"pass": "pass", "warn": "warn", "fail": "fail", "n/a": "not available"}


def check_verdict(value: Any) -> str:
    """A check's state from a summary value: ``pass``, ``warn``, ``fail`` or ``n/a``."""
    if value is None:
        return "n/a"
    v = str(value).strip().lower()
    if v in ("ok", "pass", "passed", "resolved", "true"):
        return "pass"
    if v in ("warn", "warning", "high", "low"):
        return "warn"
    if v in ("fail", "failed", "false"):
        return "fail"
    return "n/a"


def trust_checks(summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The self-checks of an analysed run, each with a verdict and the reason for it.

    Parameters
    ----------
    summary : dict
        ``summary.json`` of an analysed run. Keys that are absent (older runs, checks a run does not
        record) give the verdict ``"n/a"`` and say "not available".

    Returns
    -------
    list of (name, verdict, reason)
        ``verdict`` is one of ``"pass"``, ``"warn"``, ``"fail"``, ``"n/a"``; ``reason`` is plain text.
    """
    s = summary
    out: list[tuple[str, str, str]] = []
    warnings = [str(w) for w in (s.get("warnings") or [])]

    # long-range diffusion: does the MSD keep growing (x2 from t/4 to t/2) or saturate?
    lrd, growth = s.get("long_range_diffusion"), s.get("msd_growth_ratio")
    g = f"the MSD beyond the vibrations grows ×{fmt(growth, digits=3)} from t/4 to t/2 (≈ 2 for diffusion)" \
        if growth is not None else ""
    if lrd is True:
        out.append(("Long-range diffusion", "pass", g or "the MSD keeps growing"))
    elif lrd is False:
        out.append(("Long-range diffusion", "fail", (g + ": " if g else "") + "the MSD saturates, so D* would fit a "
                    "plateau (confined motion, e.g. within cages, or a run too short)"))
    else:
        out.append(("Long-range diffusion", "n/a", "not available: the run is too short to measure the MSD growth"))

    # hops vs MSD: do the hops carry the measured transport?
    check, frac, ci = s.get("hop_msd_check"), s.get("hop_msd_fraction"), s.get("hop_msd_fraction_ci95")
    if check is None:
        out.append(("Hops vs MSD", "n/a", "not available"))
    else:
        v = check_verdict(check)
        text = f"D_hops / D_MSD = {fmt(frac, digits=3)}" if frac is not None else ""
        if frac is not None and ci and len(ci) == 2 and None not in ci:
            text += f" (95 % interval {fmt(ci[0], digits=3)} – {fmt(ci[1], digits=3)})"
        if v == "pass":
            text += ": the hops carry the diffusion measured from the MSD"
        elif v == "warn":
            text += (": hops are back-and-forth or confined motion" if str(check) == "high"
                     else ": hops are missed, or the ions move without hopping between sites")
        else:
            text = str(check) if not text else f"{text} ({check})"
        out.append(("Hops vs MSD", v, text))

    # site model self-checks (resting outside every site, hop length, hop duration)
    sc = s.get("site_check")
    if sc is None:
        out.append(("Site model", "n/a", "not available (this analysis did not record the site-model self-checks)"))
    else:
        reasons = [str(r) for r in (s.get("site_check_reasons") or [])]
        parts = []
        if s.get("site_model") is not None:
            parts.append(f"model: {s['site_model']}")
        for key, label in (("resting_outside_fraction", "resting away from every site"),
                           ("hop_length_over_nn", "hop length / nearest-site distance"),
                           ("hop_duration_over_residence", "hop duration / residence")):
            if s.get(key) is not None:
                val = fmt(100 * s[key], digits=3) + " % of ion-time" if key == "resting_outside_fraction" \
                    else fmt(s[key], digits=3)
                parts.append(f"{label} {val}")
        text = "; ".join(reasons) if reasons else ("sites and hops consistent" if check_verdict(sc) == "pass" else str(sc))
        if parts:
            text += " (" + ", ".join(parts) + ")"
        out.append(("Site model", check_verdict(sc), text))

    # frame spacing: fine enough to resolve a hop?
    spacing = [w for w in warnings if "frame spacing" in w.lower()]
    dt = s.get("timestep_ps")
    if spacing:
        out.append(("Frame spacing", "warn", "; ".join(spacing)))
    elif not s.get("n_hops"):
        out.append(("Frame spacing", "n/a", "no hops to judge it by" + (f" (frames every {fmt(dt)} ps)" if dt else "")))
    else:
        dur = s.get("mean_hop_duration_ps")
        text = f"frames every {fmt(dt)} ps" if dt is not None else "no warning"
        if dur is not None and dt:
            text += f"; a hop lasts {fmt(dur, digits=3)} ps on average ({fmt(dur / dt, digits=2)} frames)"
        out.append(("Frame spacing", "pass", text))

    # run length: long enough to resolve D* from zero?
    st = s.get("D_tracer_status")
    total = s.get("total_time_ps")
    run = f"{fmt(total)} ps" if total is not None else "the run"
    if st is None:
        out.append(("Run length", "n/a", "not available"))
    elif st == "resolved":
        out.append(("Run length", "pass", f"{run}: D* is resolved from zero"))
    elif st in ("too short", "not computed"):
        out.append(("Run length", "fail", f"{run}: " + _status_text(st, s.get("D_tracer_reason"))))
    else:  # the run may be long enough; the motion itself does not give a D (see long-range diffusion)
        out.append(("Run length", "warn", f"{run}: D* {st}: a longer run may show long-range diffusion"))

    # model deviation of an ML potential, where the run recorded it
    md = {k: v for k, v in s.items() if k.startswith("model_deviation")}
    if not md:
        out.append(("Model deviation", "n/a", "not recorded for this run"))
    else:
        verdict_key = next((k for k in ("model_deviation_check", "model_deviation_status") if k in md), None)
        reasons = md.get("model_deviation_reasons") or md.get("model_deviation_reason")
        shown = [f"{k.removeprefix('model_deviation').strip('_').replace('_', ' ') or 'value'} {fmt(v)}"
                 for k, v in md.items() if k != verdict_key and not k.startswith("model_deviation_reason")
                 and not isinstance(v, (dict, list))]
        text = "; ".join(reasons) if isinstance(reasons, list) else (str(reasons) if reasons else "")
        text = ", ".join(x for x in (text, ", ".join(shown)) if x) or "recorded"
        out.append(("Model deviation", check_verdict(md.get(verdict_key)) if verdict_key else "n/a", text))
    return out


def _transport(s: dict[str, Any], name: str, key: str, unit: str, ci_key: str | None = None) -> str:
    """A transport number with its interval, or its status and reason when the run cannot support it."""
    v = s.get(key)
    if v is not None:
        text = fmt(v, unit)
        ci = s.get(ci_key) if ci_key else None
        if ci and len(ci) == 2 and None not in ci:
            text += f" (95 % interval {fmt(ci[0])} – {fmt(ci[1])})"
        return text
    st = s.get(f"{name}_status")
    reason = s.get(f"{name}_reason")
    if st is None or st == "resolved":
        return "not available"
    if name != "D_tracer" and (st, reason) == (s.get("D_tracer_status"), s.get("D_tracer_reason")):
        return f"{st} (as D*)"
    return _status_text(st, reason)


def _status_text(status: str, reason: str | None) -> str:
    """``status: reason``, without repeating a reason that starts with the status."""
    if not reason:
        return status
    if reason.lower().startswith(status.lower()):
        return reason
    return f"{status}: {reason}"


def summary_sections(summary: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    """The summary as grouped tables of (quantity, value with unit), every value formatted for people.

    Parameters
    ----------
    summary : dict
        ``summary.json`` of an analysed run.

    Returns
    -------
    list of (title, rows)
    """
    s = summary
    no_hops = not s.get("n_hops")

    def n(value: Any, unit: str = "", digits: int = 4) -> str:
        if value is None:
            return "none (no hops)" if no_hops else "not available"
        return fmt(value, unit, digits=digits)

    species = ", ".join(s.get("mobile_species") or []) or str(s.get("mobile") or "")
    run = [
        ("mobile ions", f"{n(s.get('n_mobile'))} {species}".strip()),
        ("frames", f"{n(s.get('n_frames'))}, every {n(s.get('timestep_ps'), 'ps')}"),
        ("simulated time", n(s.get("total_time_ps"), "ps")),
        ("temperature", n(s.get("temperature_K"), "K") if s.get("temperature_K") is not None else "not given"),
        ("ionic charge", n(s.get("charge_e"), "e") if s.get("charge_e") is not None else "not given"),
        ("volume", n(s.get("volume_A3"), "Å³") if s.get("volume_A3") is not None else "not available"),
        ("framework drift removed", n(s.get("drift_removed"))),
    ]
    hops = [
        ("hop detection", str(s.get("method") or "not available")),
        ("sites found", n(s.get("n_sites")) if s.get("n_sites") is not None else "not available"),
        ("hops (closed)", n(s.get("n_hops"))),
        ("open hops at the end", n(s.get("n_open_hops"))),
        ("back-hops", n(s.get("n_back_hops"))),
        ("ions that hop", n(s.get("n_diffusive_ions"))),
        ("hop frequency ν", n(s.get("hop_frequency_per_ps"), "per ion per ps")),
        ("mean residence time", n(s.get("mean_residence_time_ps"), "ps")),
        ("mean hop length", n(s.get("mean_hop_length_A"), "Å")),
        ("longest hop", n(s.get("max_hop_length_A"), "Å")),
        ("mean hop duration", n(s.get("mean_hop_duration_ps"), "ps")),
        ("vibration amplitude σ (median)", n(s.get("median_sigma_A"), "Å")),
        ("D from hops", n(s.get("D_hops_cm2_s"), "cm²/s") if s.get("D_hops_cm2_s") is not None else "not available"),
        ("correlation factor f", n(s.get("hop_correlation_factor"))
         if s.get("hop_correlation_factor") is not None else "not resolved (too few consecutive hop pairs)"),
    ]
    transport = [
        ("D* (tracer)", _transport(s, "D_tracer", "D_tracer_cm2_s", "cm²/s", "D_tracer_ci95_cm2_s")),
        ("D_σ (collective)", _transport(s, "D_sigma", "D_sigma_cm2_s", "cm²/s", "D_sigma_ci95_cm2_s")),
        ("Haven ratio D*/D_σ", _transport(s, "haven_ratio", "haven_ratio", "")),
        ("σ (Nernst–Einstein)", _transport(s, "sigma_NE", "sigma_NE_mS_cm", "mS/cm", "sigma_NE_ci95_mS_cm")),
        ("σ (collective)", _transport(s, "sigma_collective", "sigma_collective_mS_cm", "mS/cm",
                                      "sigma_collective_ci95_mS_cm")),
    ]
    if s.get("D_x_cm2_s") is not None:
        transport.append(("D* along x, y, z", fmt([s.get("D_x_cm2_s"), s.get("D_y_cm2_s"), s.get("D_z_cm2_s")],
                                                   "cm²/s")))
    if s.get("anisotropy_Dz_over_Dxy") is not None:
        transport.append(("anisotropy D_z / D_xy", n(s["anisotropy_Dz_over_Dxy"])))
    if s.get("D_fit_window_ps"):
        w = s["D_fit_window_ps"]
        transport.append(("MSD fit window", f"{n(w[0])} – {n(w[1])} ps"))
    sections = [("Run", run), ("Hops and sites", hops), ("Transport", transport)]
    if s.get("n_hop_events") is not None:
        frac = s.get("fraction_hops_concerted")
        nm, ns = s.get("null_fraction_hops_concerted_mean"), s.get("null_fraction_hops_concerted_std")
        mech = s.get("pair_mechanisms") or {}
        conc = [
            ("hop events", n(s.get("n_hop_events"))),
            ("concerted groups (2 or more ions)", n(s.get("n_concerted_groups"))),
            ("hops in concerted groups", f"{n(100 * frac, digits=3)} %" if frac is not None else "not available"),
            ("same under the null", f"{n(100 * nm, digits=3)} ± {n(100 * (ns or 0.0), digits=2)} %"
             if nm is not None else "not available"),
            ("p-value (null ≥ observed)", n(s.get("concert_p_value"), digits=2)
             if s.get("concert_p_value") is not None else "not available"),
            ("null draws", n(s.get("concert_null_draws")) if s.get("concert_null_draws") is not None
             else "not available"),
            ("mean ions per group", n(s.get("mean_correlated_ions"), digits=3)
             if s.get("mean_correlated_ions") is not None else "no groups"),
        ]
        if mech:
            conc.append(("pair mechanisms", ", ".join(f"{k.replace('_', ' ')} {n(v)}" for k, v in mech.items())))
        sections.append(("Concerted hops", conc))
    if s.get("concerted_mode_window_ps") is not None or s.get("Gd0_r0_A") is not None:
        sections.append(("Concerted modes and G_d(r≈0, t)", _mode_rows(s)))
    checks = [(k, lbl) for k, lbl in (("site_model", "site model"), ("site_check", "verdict"),
                                      ("resting_outside_fraction", "resting away from every site (share of time)"),
                                      ("transit_fraction", "in transit (share of time)"),
                                      ("hop_length_over_nn", "hop length / nearest-site distance"),
                                      ("hop_duration_over_residence", "hop duration / residence time"),
                                      ("sites_visited_fraction", "sites visited (share)")) if k in s]
    if checks:
        sections.append(("Site-model self-checks", [(lbl, n(s[k], digits=3) if s[k] is not None else "not available")
                                                     for k, lbl in checks]))
    return sections


def _mode_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows of the concerted modes (A→B with B→C) and of G_d(r≈0, t) of one run's summary."""
    rows: list[tuple[str, str]] = []
    if s.get("concerted_mode_window_ps") is not None:
        w = s["concerted_mode_window_ps"]
        rows.append((f"pairs A→B + B→C within {fmt(w, 'ps')}",
                     f"{fmt(s.get('concerted_mode_pairs'))} from {fmt(s.get('concerted_mode_hops'))} hops"))
        if s.get("concerted_mode_null_pairs_mean") is not None:
            rows.append((f"if the ions hopped at independent times (each ion's hops shifted, "
                         f"{fmt(s.get('concerted_mode_null_draws'))} draws; no site exclusion)",
                         f"{fmt(s['concerted_mode_null_pairs_mean'], digits=3)} ± "
                         f"{fmt(s.get('concerted_mode_null_pairs_std'), digits=2)} pairs; excess "
                         f"{fmt(s.get('concerted_mode_excess_pairs'), digits=3)} (p more "
                         f"{fmt(s.get('concerted_mode_p_value'), digits=2)}, p fewer "
                         f"{fmt(s.get('concerted_mode_p_value_fewer'), digits=2)})"))
        elif s.get("concerted_mode_null_reason"):
            rows.append(("independent-timing baseline", f"not available: {s['concerted_mode_null_reason']}"))
        freq = s.get("concerted_mode_frequency_per_ps") or {}
        std = s.get("concerted_mode_frequency_std_per_ps") or {}
        for k, c in (s.get("concerted_mode_counts") or {}).items():
            f = freq.get(k)
            rows.append((f"mode {k}", f"{fmt(c)} pairs, {fmt(f, digits=3)} ± {fmt(std.get(k), digits=2)} per ion per ps"
                         if f is not None else f"{fmt(c)} pairs"))
    if s.get("Gd0_r0_A") is not None:
        r0 = s["Gd0_r0_A"]
        for key, fr in (("Gd0_time", "Gd0_fraction"), ("Gd0_onset_time", "Gd0_onset_fraction")):
            label = f"G_d(r<{fmt(r0, 'Å')}, t) reaches {fmt(s.get(fr))} of its long-time value at"
            v = s.get(f"{key}_ps")
            rows.append((label, fmt(v, "ps") if v is not None else f"not resolved: {s.get(key + '_reason')}"))
        if s.get("Gd0_long_time_over_rho") is not None:
            rows.append(("G_d(r≈0, ∞)/ρ (long-time value)", fmt(s["Gd0_long_time_over_rho"], digits=3)))
        if s.get("Gd0_ratio_at_longest_lag") is not None:
            rows.append(("share of it reached at the longest lag",
                         f"{fmt(s['Gd0_ratio_at_longest_lag'], digits=3)} at {fmt(s.get('Gd0_longest_lag_ps'), 'ps')}"))
    return rows


def series_rows(sums: Sequence[dict[str, Any]], temperatures_K: Sequence[float]) -> list[dict[str, Any]]:
    """One row per temperature of a series: hops, untrusted share, concerted modes, G_d(r≈0, t) times.

    Parameters
    ----------
    sums : sequence of dict
        ``summary.json`` of each run.
    temperatures_K : sequence of float

    Returns
    -------
    list of dict
        ``T_K``, ``n_hops``, ``hops_above_trust_hi_fraction`` (None without model deviation),
        ``mode_counts``, ``mode_frequency_per_ps``, ``Gd0_time_ps``, ``Gd0_onset_time_ps`` and their reasons.
    """
    return [{"T_K": float(t), "n_hops": s.get("n_hops"),
             "hops_above_trust_hi_fraction": s.get("hops_above_trust_hi_fraction"),
             "mode_counts": s.get("concerted_mode_counts"), "mode_frequency_per_ps": s.get("concerted_mode_frequency_per_ps"),
             "Gd0_time_ps": s.get("Gd0_time_ps"), "Gd0_time_reason": s.get("Gd0_time_reason"),
             "Gd0_onset_time_ps": s.get("Gd0_onset_time_ps"), "Gd0_onset_time_reason": s.get("Gd0_onset_time_reason"),
             "Gd0_ratio_at_longest_lag": s.get("Gd0_ratio_at_longest_lag"), "Gd0_longest_lag_ps": s.get("Gd0_longest_lag_ps")}
            for s, t in zip(sums, temperatures_K)]


def _ea_text(f: dict[str, Any] | None) -> str:
    if not f:
        return "not available"
    if f.get("Ea_eV") is None:
        return f"not resolved: {f.get('reason')}"
    ci = f.get("Ea_ci95_eV")
    return f"{fmt(f['Ea_eV'], 'eV', digits=3)}" + (f" (95 %: {fmt(ci[0], digits=3)} – {fmt(ci[1], digits=3)})" if ci else "")


def _series_html(arrh: dict[str, Any]) -> str:
    """The temperature series: per-temperature table and the activation energies of the modes and of G_d."""
    rows = sorted(arrh.get("series") or [], key=lambda r: r["T_K"])
    if not rows:
        return ""
    modes = sorted({k for r in rows for k in (r.get("mode_counts") or {})})
    head = ["T (K)", "hops", "hops > trust hi"] + [f"{m}: pairs (per ion per ps)" for m in modes] + \
        ["G_d time", "G_d onset time"]
    body = []
    for r in rows:
        u = r.get("hops_above_trust_hi_fraction")
        cells = [fmt(r["T_K"]), fmt(r.get("n_hops")), f"{fmt(100 * u, digits=2)} %" if u is not None else "n/a"]
        for m in modes:
            c = (r.get("mode_counts") or {}).get(m, 0)
            f = (r.get("mode_frequency_per_ps") or {}).get(m)
            cells.append(f"{c} ({fmt(f, digits=2)})" if f is not None else str(c))
        for key in ("Gd0_time", "Gd0_onset_time"):
            v = r.get(f"{key}_ps")
            cells.append(fmt(v, "ps") if v is not None else "not reached")
        body.append("<tr>" + "".join(f"<td>{_html_text(c)}</td>" for c in cells) + "</tr>")
    fits = [(f"Ea of mode {k}", _ea_text(v)) for k, v in (arrh.get("concerted_modes") or {}).items()]
    fits += [("Ea of the G_d time", _ea_text(arrh.get("Gd0_time"))),
             ("Ea of the G_d onset time", _ea_text(arrh.get("Gd0_onset_time")))]
    return ("<h2>Temperature series: concerted modes and G_d(r≈0, t)</h2><table><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + "".join(body) + "</table><table>"
            + "".join(f"<tr><th>{html.escape(a)}</th><td>{_html_text(b)}</td></tr>" for a, b in fits) + "</table>")


def _html_text(text: str) -> str:
    """Escape ``text`` for HTML and show ``1.2e-07`` as 1.2 × 10⁻⁷."""
    import re

    esc = html.escape(text)
    return re.sub(r"(\d(?:\.\d+)?)e([+-])0*(\d+)",
                  lambda m: f"{m.group(1)}&thinsp;×&thinsp;10<sup>{'−' if m.group(2) == '-' else ''}{m.group(3)}</sup>",
                  esc)


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:auto;padding:0 16px;color:#222}
h1{margin-bottom:4px} .sub{color:#555;margin-top:0} .inputs{color:#777;font-size:85%;word-break:break-all}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{border:1px solid #ccd;border-radius:8px;padding:8px 14px;min-width:150px;background:#f7f8fc}
.card .label{font-size:80%;color:#555} .card .value{font-size:130%;font-weight:600}
.card .note{font-size:75%;color:#555;max-width:320px}
table{border-collapse:collapse;margin-bottom:16px;width:100%} td,th{padding:3px 8px;text-align:left;vertical-align:top}
tr:nth-child(even){background:#f1f2f6} th{background:#e4e6ee}
.badge{display:inline-block;min-width:92px;text-align:center;border-radius:4px;padding:1px 6px;font-weight:600;
font-size:85%;color:#fff}
.pass{background:#2e7d32} .warn{background:#ef8f00} .fail{background:#c62828} .na{background:#8a8f98}
figure{margin:18px 0} figcaption{color:#444;font-size:90%;max-width:900px} .note{color:#555}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:0 24px}
"""


def _headline(s: dict[str, Any], arrh: dict[str, Any] | None, arrh_error: str | None) -> str:
    cards: list[tuple[str, str, str]] = []
    d = s.get("D_tracer_cm2_s")
    ci = s.get("D_tracer_ci95_cm2_s")
    if d is not None:
        note = f"95 % interval {fmt(ci[0])} – {fmt(ci[1])}" if ci and len(ci) == 2 and None not in ci else ""
        cards.append(("D* (tracer diffusion)", fmt(d, "cm²/s"), note))
    else:
        st, reason = s.get("D_tracer_status") or "not available", s.get("D_tracer_reason") or ""
        cards.append(("D* (tracer diffusion)", st, reason.removeprefix(st).lstrip(": ")))
    sig = s.get("sigma_NE_mS_cm")
    if sig is not None:
        sci = s.get("sigma_NE_ci95_mS_cm")
        note = f"95 % interval {fmt(sci[0])} – {fmt(sci[1])}" if sci and len(sci) == 2 and None not in sci else ""
        cards.append(("σ (Nernst–Einstein)", fmt(sig, "mS/cm"), note))
    elif s.get("sigma_NE_status") not in (None, "resolved"):
        same = (s["sigma_NE_status"], s.get("sigma_NE_reason")) == (s.get("D_tracer_status"), s.get("D_tracer_reason"))
        cards.append(("σ (Nernst–Einstein)", str(s["sigma_NE_status"]),
                      "as D*" if same else str(s.get("sigma_NE_reason") or "")))
    nu = s.get("hop_frequency_per_ps")
    cards.append(("hop frequency ν", fmt(nu, "/ps") if nu is not None else "not available", "per ion"))
    cards.append(("hops", fmt(s.get("n_hops")), f"by {fmt(s.get('n_diffusive_ions'))} of {fmt(s.get('n_mobile'))} ions"))
    cards.append(("sites", fmt(s.get("n_sites")) if s.get("n_sites") is not None else "not available",
                  f"model: {s['site_model']}" if s.get("site_model") else ""))
    if arrh is not None:
        for key, label in (("D_tracer", "Ea from D*"), ("nu", "Ea from ν")):
            f = arrh.get(key)
            if f:
                n_t = len(arrh["temperatures_K"])
                err = f.get("Ea_err_eV")
                note = (f"± {fmt(err, digits=2)} eV over {n_t} temperatures"
                        if err is not None and np.isfinite(err) and err > 0
                        else f"from {n_t} temperatures (no uncertainty from {n_t} points)")
                cards.append((label, fmt(f["Ea_eV"], "eV", digits=3), note))
            else:
                cards.append((label, "not resolved", "the fit failed (see the log)"))
    elif arrh_error:
        cards.append(("Ea", "not available", arrh_error))
    return "<div class='cards'>" + "".join(
        f"<div class='card'><div class='label'>{html.escape(lbl)}</div><div class='value'>{_html_text(v)}</div>"
        + (f"<div class='note'>{_html_text(nt)}</div>" if nt else "") + "</div>" for lbl, v, nt in cards) + "</div>"


def _story(s: dict[str, Any], checks: list[tuple[str, str, str]]) -> str:
    """One paragraph: what the run shows and how far to trust it."""
    species = ", ".join(s.get("mobile_species") or []) or str(s.get("mobile") or "mobile")
    parts = []
    if s.get("long_range_diffusion") is True and s.get("D_tracer_cm2_s") is not None:
        parts.append(f"The {species} ions diffuse over long range: D* = {fmt(s['D_tracer_cm2_s'], 'cm²/s')}.")
    elif s.get("long_range_diffusion") is False:
        parts.append(f"The {species} ions do not diffuse over long range in this run: the MSD saturates.")
    else:
        parts.append(f"Long-range diffusion of the {species} ions is not established by this run.")
    if s.get("n_hops") is not None:
        parts.append(f"{fmt(s['n_hops'])} hops between {fmt(s.get('n_sites')) if s.get('n_sites') is not None else 'the'}"
                     f" sites" + (f", ν = {fmt(s['hop_frequency_per_ps'])} per ion per ps."
                                  if s.get("hop_frequency_per_ps") else "."))
    frac, p = s.get("fraction_hops_concerted"), s.get("concert_p_value")
    if frac is not None and p is not None:
        more = "more than" if p < 0.05 else "not more than"
        parts.append(f"{fmt(100 * frac, digits=3)} % of the hops are in concerted groups, {more} chance coincidence "
                     f"(p = {fmt(p, digits=2)}).")
    counts = {v: sum(1 for _, x, _ in checks if x == v) for v in ("pass", "warn", "fail", "n/a")}
    parts.append(f"Self-checks: {counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail, "
                 f"{counts['n/a']} not available.")
    return "<p>" + _html_text(" ".join(parts)) + "</p>"


def render_report(summary: dict[str, Any], figures: Sequence[str], notes: dict[str, str] | None = None,
                  arrhenius: dict[str, Any] | None = None, arrhenius_error: str | None = None) -> str:
    """The report page (HTML) of an analysed run.

    Parameters
    ----------
    summary : dict
        ``summary.json`` of the run.
    figures : sequence of str
        File names of the figures, relative to the page; captions from :data:`CAPTIONS`.
    notes : dict of str to str, optional
        Figure name → a note shown in place of a figure that was not drawn (e.g. no hops).
    arrhenius : dict, optional
        Result of :func:`arrhenius_across_runs` over a temperature series that includes this run.
    arrhenius_error : str, optional
        Why an Arrhenius fit asked for could not be made.

    Returns
    -------
    str
    """
    s = summary
    checks = trust_checks(s)
    species = ", ".join(s.get("mobile_species") or []) or str(s.get("mobile") or "")
    sub = f"{fmt(s.get('n_mobile'))} mobile {species} ions, {fmt(s.get('total_time_ps'), 'ps')}"
    if s.get("temperature_K") is not None:
        sub += f" at {fmt(s['temperature_K'], 'K')}"
    inputs = ", ".join(os.path.basename(str(x)) for x in (s.get("inputs") or []))
    trust = "".join(
        f"<tr><td><span class='badge {'na' if v == 'n/a' else v}'>{_BADGE[v]}</span></td><th>{html.escape(name)}</th>"
        f"<td>{_html_text(reason)}</td></tr>" for name, v, reason in checks)
    tables = "".join(
        f"<div><h3>{html.escape(title)}</h3><table>"
        + "".join(f"<tr><th>{html.escape(k)}</th><td>{_html_text(v)}</td></tr>" for k, v in rows)
        + "</table></div>" for title, rows in summary_sections(s))
    warns = [str(w) for w in (s.get("warnings") or [])]
    warn_html = ("<h2>Warnings</h2><ul>" + "".join(f"<li>{_html_text(w)}</li>" for w in warns) + "</ul>") if warns \
        else ""
    figs = []
    for name in figures:
        figs.append(f"<figure><img src='{html.escape(name)}' alt='{html.escape(name)}' style='max-width:100%'>"
                    f"<figcaption>{html.escape(CAPTIONS.get(name, name))}</figcaption></figure>")
    for name, note in (notes or {}).items():
        figs.append(f"<p class='note'><strong>{html.escape(name.replace('_', ' ').removesuffix('.png'))}:</strong> "
                    f"{_html_text(note)}</p>")
    concert = [f for f in figs if "group_sizes.png" in f]
    rest = [f for f in figs if f not in concert]
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>iondiff_stream report</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<h1>iondiff_stream report</h1><p class='sub'>{_html_text(sub)}</p>"
        + (f"<p class='inputs'>from {html.escape(inputs)}</p>" if inputs else "")
        + _headline(s, arrhenius, arrhenius_error) + _story(s, checks)
        + f"<h2>Can these numbers be trusted?</h2><table class='trust'>{trust}</table>"
        + (f"<h2>Concerted hopping against chance</h2>{''.join(concert)}" if concert else "")
        + (_series_html(arrhenius) if arrhenius else "")
        + f"<h2>Numbers</h2><div class='grid'>{tables}</div>{warn_html}"
        + f"<h2>Figures</h2>{''.join(rest)}</body></html>"
    )


def make_report(out_dir: str, ion: int | None = None, series: Sequence[str] | None = None) -> list[str]:
    """Write the figures (PNG) and ``report.html`` into ``out_dir``.

    Parameters
    ----------
    out_dir : str
        A directory written by ``analyze``.
    ion : int, optional
        Mobile-ion index for the path figure (default: the ion with most hops).
    series : sequence of str, optional
        Directories of the same system analysed at other temperatures: the headline then shows the
        activation energies (:func:`arrhenius_across_runs` over this run and these).

    Returns
    -------
    list of str
        Paths written.
    """
    import scipy.sparse as sp

    from iondiff_stream.outputs import plots

    summary, g = _load(out_dir)
    hops = {k: g["hops"][k][:] for k in g["hops"].array_keys()}
    times = g["times_ps"][:]
    states = g["states"]
    n_ions = states.shape[0]
    written: list[str] = []
    notes: dict[str, str] = {}

    figures = stage("figures", 6)  # the report's progress (when a RunProgress is active, e.g. the CLI's)

    def save(fig: Any, name: str) -> None:
        p = os.path.join(out_dir, name)
        fig.savefig(p, dpi=110)
        written.append(p)
        figures.advance()

    closed = ~hops["open"] if len(hops["ion"]) else np.zeros(0, bool)
    if ion is None:
        ion = int(np.bincount(hops["ion"], minlength=n_ions).argmax()) if len(hops["ion"]) else 0
    elif not 0 <= ion < n_ions:
        raise SelectionError(f"ion (--ion) {ion} is not a mobile-ion index of {out_dir}: use 0..{n_ions - 1}")
    if "positions_A" in g:
        from iondiff_stream.pipeline.files import ion_centres

        centres, ion_states = ion_centres(g, ion)
        k = len(centres)
        sel = hops["ion"] == ion
        save(plots.ion_path(g["positions_A"][ion].astype(float), times, ion_states, centres,
                            {"start_time_ps": hops["start_time_ps"][sel], "end_time_ps": hops["end_time_ps"][sel]},
                            title=f"mobile ion {ion} (atom {int(g['atom_indices'][ion])}), K = {k}"), "ion_path.png")
    goe = g["correlations/group_of_event"][:] if "correlations" in g else None
    if closed.any():
        save(plots.hop_timeline(hops["ion"][closed], hops["start_time_ps"][closed], hops["end_time_ps"][closed],
                                n_ions, float(times[-1]), goe), "hop_timeline.png")
    else:
        _remove_stale(out_dir, "hop_timeline.png")
        notes["hop_timeline.png"] = "no hops in this run, so no hop timeline"
    if "correlations" in g and goe is not None and len(goe):
        c = g["correlations"]
        n = len(goe)
        corr = sp.csr_matrix((c["corr_value"][:], (c["corr_row"][:], c["corr_col"][:])), shape=(n, n))
        save(plots.correlation_matrix(corr, goe), "correlation_matrix.png")
        nh, ns = summary.get("null_group_size_hist_mean"), summary.get("null_group_size_hist_std")
        save(plots.concert_vs_null(summary.get("fraction_hops_concerted"),
                                   summary.get("null_fraction_hops_concerted_mean"),
                                   summary.get("null_fraction_hops_concerted_std"), summary.get("concert_p_value"),
                                   c["size_hist"][:], np.asarray(nh, float) if nh is not None else None,
                                   np.asarray(ns, float) if ns is not None else None, summary.get("group_size_fit"),
                                   summary.get("group_size_fit_null"), summary.get("concert_null_draws")),
             "group_sizes.png")
    else:
        for name in ("correlation_matrix.png", "group_sizes.png"):
            _remove_stale(out_dir, name)
        notes["group_sizes.png"] = "no hop events, so nothing to compare with the null of concerted hopping"
    m = g["msd"]
    fit = None
    band = None
    if summary.get("D_tracer_cm2_s") and summary.get("D_fit_window_ps"):
        slope = 6 * summary["D_tracer_cm2_s"] / 1e-4
        t0, t1 = summary["D_fit_window_ps"]
        lag, y = m["lag_ps"][:], m["msd_A2"][:]
        sel = (lag >= t0) & (lag <= t1)
        icpt = summary.get("D_fit_intercept_A2")
        if icpt is None:
            icpt = float(np.mean(y[sel] - slope * lag[sel])) if sel.any() else 0.0
        fit = (slope, icpt, t0, t1)
        ci = summary.get("D_tracer_ci95_cm2_s")
        if ci and all(v is not None for v in ci):
            band = (6 * ci[0] / 1e-4, 6 * ci[1] / 1e-4)
    save(plots.msd(m["lag_ps"][:], m["msd_A2"][:], m["msd_axes_A2"][:], m["mscd_A2"][:] if "mscd_A2" in m else None,
                   fit, band), "msd.png")
    arrh, arrh_error = None, None
    if series:
        dirs = [out_dir] + [d for d in series if os.path.abspath(d) != os.path.abspath(out_dir)]
        try:
            arrh = arrhenius_across_runs(dirs)
        except (AnalysisError, OSError, ValueError) as exc:
            arrh_error = str(exc)
            logger.warning("no activation energy in the report: %s", exc)
    page = os.path.join(out_dir, "report.html")
    order = ["group_sizes.png", "hop_timeline.png", "msd.png", "ion_path.png", "correlation_matrix.png"]
    names = sorted((os.path.basename(p) for p in written), key=lambda x: order.index(x) if x in order else 99)
    text = render_report(summary, names, notes, arrh, arrh_error)
    tmp = page + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, page)
    written.append(page)
    logger.info("report written to %s", page)
    return written


def _remove_stale(out_dir: str, name: str) -> None:
    """Remove a figure an earlier report of this directory left, which this run does not draw."""
    p = os.path.join(out_dir, name)
    if os.path.exists(p):
        os.remove(p)


def arrhenius_across_runs(
    out_dirs: Sequence[str], temperatures_K: Sequence[float] | None = None, plot_path: str | None = None
) -> dict[str, Any]:
    """Activation energies and prefactors from D*, D_σ, ν and f·ν over several analysed runs, and of the
    concerted modes' frequencies and the G_d(r≈0, t) times.

    ``nu`` is the hop frequency (every hop); ``nu_eff`` is ``f ν`` with f the correlation factor of
    consecutive hops (the frequency of hops that carry transport): when back-hops are more common at
    low T (bound vacancies, cages), ``Ea(ν) < Ea(D*)`` and ``Ea(f ν)`` is the one to compare with D*.

    Parameters
    ----------
    out_dirs : sequence of str
        Directories written by ``analyze`` (one per temperature).
    temperatures_K : sequence of float, optional
        Default: ``temperature_K`` of each summary.json.
    plot_path : str, optional
        Write the Arrhenius plot there (PNG).

    Returns
    -------
    dict
        ``temperatures_K``, ``runs``; ``D_tracer``, ``D_sigma``, ``nu``, ``nu_eff`` (:func:`arrhenius_fit` results
        or None); ``concerted_modes`` (mode → :func:`~iondiff_stream.analysis.sites.mode_arrhenius` result, Ea
        None with a reason when fewer than 3 temperatures have enough pairs); ``Gd0_time`` and
        ``Gd0_onset_time`` (:func:`~iondiff_stream.analysis.distinct.time_arrhenius`); ``series`` (one row per
        run, :func:`series_rows`).
    """
    from iondiff_stream.analysis.transport import arrhenius_fit

    if len(out_dirs) < 2:
        raise AnalysisError(f"an Arrhenius fit needs runs at 2 or more temperatures, got {len(out_dirs)} run(s)")
    sums = [_load(d)[0] for d in out_dirs]
    if temperatures_K is None:
        temperatures_K = [s.get("temperature_K") for s in sums]
        if any(t is None for t in temperatures_K):
            raise AnalysisError("temperatures are not in every summary.json: pass --temperature")
    if len(temperatures_K) != len(out_dirs):
        raise AnalysisError(f"{len(out_dirs)} runs but {len(temperatures_K)} temperatures")
    T = np.asarray(temperatures_K, float)
    out: dict[str, Any] = {"temperatures_K": T.tolist(), "runs": list(out_dirs)}
    values: dict[str, np.ndarray] = {}
    for key, err_key, name in (("D_tracer_cm2_s", "D_tracer_std_cm2_s", "D_tracer"),
                               ("D_sigma_cm2_s", "D_sigma_std_cm2_s", "D_sigma"),
                               ("hop_frequency_per_ps", None, "nu"),
                               ("hop_frequency_effective_per_ps", None, "nu_eff")):
        y = np.array([s.get(key) if s.get(key) is not None else np.nan for s in sums], float)
        e = np.array([s.get(err_key) if err_key and s.get(err_key) is not None else np.nan for s in sums], float)
        values[name] = y
        try:
            use_err = e if np.all(np.isfinite(e) & (e > 0)) else None
            out[name] = arrhenius_fit(T, y, use_err)
        except AnalysisError as exc:
            out[name] = None
            logger.warning("no Arrhenius fit for %s: %s", name, exc)
    from iondiff_stream.analysis.distinct import time_arrhenius
    from iondiff_stream.analysis.sites import mode_arrhenius

    out["concerted_modes"] = mode_arrhenius(T, [s.get("concerted_mode_counts") for s in sums],
                                            [s.get("concerted_mode_frequency_per_ps") for s in sums])
    out["Gd0_time"] = time_arrhenius(T, [s.get("Gd0_time_ps") for s in sums])
    out["Gd0_onset_time"] = time_arrhenius(T, [s.get("Gd0_onset_time_ps") for s in sums])
    out["series"] = series_rows(sums, T.tolist())
    if plot_path:
        from iondiff_stream.outputs import plots  # Figure objects, no pyplot: no backend is set for the process

        fits = {k: v for k, v in out.items() if k in values and v}
        fig = plots.arrhenius(T, {k: values[k] for k in ("D_tracer", "D_sigma")}, fits)
        fig.savefig(plot_path, dpi=110)
        out["plot"] = plot_path
    return out
