"""How result objects look in a terminal and a notebook: one-screen summaries and pandas tables.

The result classes (:class:`~iondiff_stream.analysis.hops.HopTable`, :class:`~iondiff_stream.analysis.hops.HopResults`,
:class:`~iondiff_stream.analysis.transport.TransportResult`, :class:`~iondiff_stream.pipeline.RunAnalysis`) call
these helpers from their ``__repr__``, ``_repr_html_`` and ``to_pandas``; numbers are shown with at most
4 significant digits, missing values as "not resolved" or "—", never as ``None``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["fmt", "summary_text", "summary_html", "hop_table_frame", "hop_table_rows", "hop_results_rows",
           "transport_rows", "correlation_rows", "run_rows"]

Row = tuple[str, str]


def fmt(value: Any, unit: str = "", digits: int = 4) -> str:
    """A value for people: at most ``digits`` significant digits, intervals as ``[a, b]``, no reprs.

    Parameters
    ----------
    value : number, bool, str, sequence or None
        What to show; ``None`` and NaN become "—".
    unit : str
        Appended after a space when the value is a number or an interval.
    digits : int
        Significant digits of numbers.

    Returns
    -------
    str
    """
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence) or hasattr(value, "__array__") and getattr(value, "ndim", 0) > 0:
        items = [fmt(v, digits=digits) for v in list(value)]
        return f"[{', '.join(items)}]" + (f" {unit}" if unit else "")
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(x):
        return "—"
    if float(x).is_integer() and abs(x) < 10**digits and not isinstance(value, float):
        text = str(int(x))
    else:
        text = f"{x:.{digits}g}"
    return text + (f" {unit}" if unit else "")


def _with_interval(value: Any, interval: Any, unit: str) -> str:
    if value is None:
        return "—"
    text = fmt(value, unit)
    if interval is not None and len(interval) == 2:
        text += f", 95 % interval {fmt(list(interval))}"
    return text


def summary_text(title: str, rows: Sequence[Row], footer: str = "", width: int = 100) -> str:
    """Plain-text summary: a title line, then ``name  value`` rows aligned (values wrapped at ``width``), a footer."""
    import textwrap

    key_width = max((len(k) for k, _ in rows), default=0)
    lines = [title]
    for k, v in rows:
        indent = " " * (key_width + 4)
        lines.append(textwrap.fill(v, width=width, initial_indent=f"  {k:<{key_width}}  ", subsequent_indent=indent,
                                   break_long_words=False, break_on_hyphens=False))
    if footer:
        lines.append(f"  {footer}")
    return "\n".join(lines)


def summary_html(title: str, rows: Sequence[Row], footer: str = "") -> str:
    """The same summary as an HTML table (for Jupyter's ``_repr_html_``)."""
    body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                   f"<td style='text-align:left'>{html.escape(v)}</td></tr>" for k, v in rows)
    foot = f"<p><small>{html.escape(footer)}</small></p>" if footer else ""
    return f"<div><strong>{html.escape(title)}</strong><table>{body}</table>{foot}</div>"


def hop_table_frame(columns: dict[str, Any], names: Sequence[str] | None = None) -> Any:
    """A :class:`pandas.DataFrame` of hop columns (units in the column names), one row per hop.

    Parameters
    ----------
    columns : dict of str to ndarray
        The table's columns.
    names : sequence of str, optional
        Columns to keep, in this order (default: all).
    """
    import pandas as pd

    names = list(columns) if names is None else list(names)
    missing = [n for n in names if n not in columns]
    if missing:
        raise KeyError(f"no hop column {missing[0]!r}; columns: {', '.join(columns)}")
    return pd.DataFrame({n: columns[n] for n in names}, columns=names)


def hop_table_rows(table: Any) -> list[Row]:
    """Summary rows of a :class:`~iondiff_stream.analysis.hops.HopTable`."""
    c = table.columns
    n = len(table)
    rows: list[Row] = [("hops", f"{n} ({int(c['open'].sum())} open, {int(c['back_hop'].sum())} back-hops)")]
    if n:
        rows += [("ions that hop", str(len(set(c["ion"].tolist())))),
                 ("length", f"mean {fmt(c['length_A'].mean())} Å, max {fmt(c['length_A'].max())} Å"),
                 ("duration", f"mean {fmt(c['duration_ps'].mean())} ps"),
                 ("time span", f"{fmt(c['start_time_ps'].min())} – {fmt(c['end_time_ps'].max())} ps")]
    rows.append(("columns", ", ".join(c)))
    return rows


def hop_results_rows(res: Any) -> list[Row]:
    """Summary rows of a :class:`~iondiff_stream.analysis.hops.HopResults`."""
    t = res.times_ps
    span = float(t[-1] - t[0]) if len(t) > 1 else 0.0
    closed = res.hops.closed()
    rows: list[Row] = [
        ("method", str(res.parameters.method)),
        ("frames", f"{res.n_frames} over {fmt(span)} ps"),
        ("mobile ions", str(res.n_mobile)),
    ]
    if res.n_sites is not None:
        rows.append(("sites", str(res.n_sites)))
    rows += [("hops", f"{len(closed)} closed, {len(res.hops) - len(closed)} open"),
             ("ions that hop", str(int((res.hops_per_ion > 0).sum()))),
             ("vibration σ", f"median {fmt(float(_median(res.sigma_A)))} Å per axis")]
    if res.warnings:
        rows.append(("warnings", f"{len(res.warnings)}: {res.warnings[0][:80]}"))
    return rows


def _median(x: Any) -> float:
    import numpy as np

    x = np.asarray(x, float)
    return float(np.median(x)) if x.size else float("nan")


def transport_rows(summary: dict[str, Any]) -> list[Row]:
    """Summary rows of transport results (keys of :meth:`TransportResult.summary`)."""
    s = summary
    rows: list[Row] = [("D* (tracer)", _with_interval(s.get("D_tracer_cm2_s"), s.get("D_tracer_ci95_cm2_s"), "cm²/s"))]
    if s.get("D_sigma_status") == "not resolved" or s.get("D_sigma_cm2_s") is None:
        iv = s.get("D_sigma_interval_cm2_s") or s.get("D_sigma_ci95_cm2_s")
        rows.append(("D_σ (collective)", "not resolved" + (f" (95 % interval {fmt(iv)} cm²/s)" if iv else "")))
    else:
        rows.append(("D_σ (collective)", _with_interval(s.get("D_sigma_cm2_s"), s.get("D_sigma_ci95_cm2_s"), "cm²/s")))
    rows.append(("Haven ratio", fmt(s.get("haven_ratio")) if s.get("haven_ratio") is not None else "not resolved"))
    if s.get("sigma_NE_mS_cm") is not None:
        rows.append(("σ (Nernst–Einstein)", _with_interval(s["sigma_NE_mS_cm"], s.get("sigma_NE_ci95_mS_cm"), "mS/cm")))
    else:
        rows.append(("σ (Nernst–Einstein)", "not computed (needs the temperature)"))
    if s.get("D_fit_window_ps") is not None:
        rows.append(("D fit window", fmt(s["D_fit_window_ps"], "ps")))
    return rows


def correlation_rows(summary: dict[str, Any]) -> list[Row]:
    """Summary rows of concerted-hop results (keys of :meth:`CorrelationResult.summary`)."""
    s = summary
    frac = s.get("fraction_hops_concerted")
    rows: list[Row] = [
        ("hops", str(s.get("n_hop_events"))),
        ("concerted groups", f"{s.get('n_concerted_groups')} (groups of 2 or more ions)"),
        ("hops in groups", "—" if frac is None else f"{fmt(100 * frac, digits=3)} %"),
        ("mean ions per group", fmt(s.get("mean_correlated_ions"))),
        ("pair mechanisms", ", ".join(f"{k.replace('_', '-')} {v}" for k, v in (s.get("pair_mechanisms") or {}).items())),
    ]
    if s.get("concert_p_value") is not None:
        rows.append(("p vs the null", f"{fmt(s['concert_p_value'], digits=2)} (share of hops in groups; "
                                      f"{s.get('concert_null_draws')} time-shifted draws)"))
    return rows


def run_rows(run: Any) -> list[Row]:
    """Summary rows of a :class:`~iondiff_stream.pipeline.RunAnalysis` (from its ``summary``)."""
    s = run.summary
    species = ",".join(s.get("mobile_species") or []) or str(s.get("mobile", "mobile ions"))
    rows: list[Row] = [
        ("run", f"{s.get('n_mobile')} {species} ions, {s.get('n_frames')} frames every {fmt(s.get('timestep_ps'))} ps "
                f"({fmt(s.get('total_time_ps'))} ps)"
                + (f", {fmt(s['temperature_K'])} K" if s.get("temperature_K") is not None else "")),
        ("hops", f"{s.get('n_hops')} ({s.get('n_back_hops', 0)} back-hops), "
                 f"ν = {fmt(s.get('hop_frequency_per_ps'))} per ps per ion"
                 + (f", {s['n_sites']} sites" if s.get("n_sites") is not None else "")),
    ]
    rows += transport_rows(s)
    check = s.get("hop_msd_check")
    if check is not None:
        rows.append(("hops vs MSD", f"D_hops/D_MSD = {fmt(s.get('hop_msd_fraction'))} ({check})"))
    if s.get("long_range_diffusion") is not None:
        rows.append(("long-range diffusion", fmt(s["long_range_diffusion"])))
    if s.get("n_concerted_groups") is not None:
        frac = s.get("fraction_hops_concerted")
        rows.append(("concerted hops", f"{fmt(None if frac is None else 100 * frac, digits=3)} % of hops in "
                                       f"{s['n_concerted_groups']} groups, p = {fmt(s.get('concert_p_value'), digits=2)} "
                                       f"vs the null"))
    warns = s.get("warnings") or []
    rows.append(("warnings", f"{len(warns)}" + (f": {warns[0][:80]}" if warns else "")))
    return rows
