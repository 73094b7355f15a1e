"""``iondiff-stream report DIR``: PNG figures and one HTML page from an analysis directory,
and ``iondiff-stream arrhenius``: activation energies across runs."""

from __future__ import annotations

import html
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import AnalysisError, SelectionError

logger = logging.getLogger(__name__)

__all__ = ["make_report", "arrhenius_across_runs"]


def _load(out_dir: str) -> tuple[dict[str, Any], Any]:
    from .results import read_outputs

    return read_outputs(out_dir)


def make_report(out_dir: str, ion: int | None = None) -> list[str]:
    """Write the figures (PNG) and ``report.html`` into ``out_dir``.

    Parameters
    ----------
    out_dir : str
        A directory written by ``analyze``.
    ion : int, optional
        Mobile-ion index for the path figure (default: the ion with most hops).

    Returns
    -------
    list of str
        Paths written.
    """
    import scipy.sparse as sp

    from . import plots

    summary, g = _load(out_dir)
    hops = {k: g["hops"][k][:] for k in g["hops"].array_keys()}
    times = g["times_ps"][:]
    states = g["states"]
    n_ions = states.shape[0]
    written: list[str] = []

    def save(fig: Any, name: str) -> None:
        p = os.path.join(out_dir, name)
        fig.savefig(p, dpi=110)
        written.append(p)

    closed = ~hops["open"] if len(hops["ion"]) else np.zeros(0, bool)
    if ion is None:
        ion = int(np.bincount(hops["ion"], minlength=n_ions).argmax()) if len(hops["ion"]) else 0
    elif not 0 <= ion < n_ions:
        raise SelectionError(f"ion (--ion) {ion} is not a mobile-ion index of {out_dir}: use 0..{n_ions - 1}")
    if "positions_A" in g:
        from .results import ion_centres

        centres, ion_states = ion_centres(g, ion)
        k = len(centres)
        sel = hops["ion"] == ion
        save(plots.ion_path(g["positions_A"][ion].astype(float), times, ion_states, centres,
                            {"start_time_ps": hops["start_time_ps"][sel], "end_time_ps": hops["end_time_ps"][sel]},
                            title=f"mobile ion {ion} (atom {int(g['atom_indices'][ion])}), K = {k}"), "ion_path.png")
    goe = g["correlations/group_of_event"][:] if "correlations" in g else None
    save(plots.hop_timeline(hops["ion"][closed], hops["start_time_ps"][closed], hops["end_time_ps"][closed], n_ions,
                            float(times[-1]), goe), "hop_timeline.png")
    if "correlations" in g and len(goe):
        c = g["correlations"]
        n = len(goe)
        corr = sp.csr_matrix((c["corr_value"][:], (c["corr_row"][:], c["corr_col"][:])), shape=(n, n))
        save(plots.correlation_matrix(corr, goe), "correlation_matrix.png")
        nh, ns = summary.get("null_group_size_hist_mean"), summary.get("null_group_size_hist_std")
        save(plots.group_sizes(c["size_hist"][:], summary.get("group_size_fit"),
                               np.asarray(nh, float) if nh is not None else None, summary.get("group_size_fit_null"),
                               np.asarray(ns, float) if ns is not None else None, summary.get("concert_p_value")),
             "group_sizes.png")
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
    page = os.path.join(out_dir, "report.html")
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt_value(summary, k, v))}</td></tr>"
        for k, v in summary.items() if not isinstance(v, (dict, list)) or k in ("group_size_fit", "pair_mechanisms", "group_size_fit_null",
                                                    "group_size_fit_excess_over_null", "pair_mechanisms_p_value",
                                                    "null_pair_mechanisms_mean", "D_tracer_ci95_cm2_s",
                                                    "D_sigma_ci95_cm2_s", "sigma_NE_ci95_mS_cm", "hop_msd_fraction_ci95")
        or "_interval_" in k
    )
    imgs = "".join(f'<figure><img src="{os.path.basename(p)}" style="max-width:100%"><figcaption>'
                   f"{os.path.basename(p)}</figcaption></figure>" for p in written)
    with open(page, "w") as fh:
        fh.write(
            "<!doctype html><html><head><meta charset='utf-8'><title>iondiff_stream report</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}td{padding:2px 8px}"
            "tr:nth-child(even){background:#eee}</style></head><body>"
            f"<h1>iondiff_stream report</h1><p>{html.escape(', '.join(map(str, summary.get('inputs', []))))}</p>"
            f"<h2>Summary</h2><table>{rows}</table><h2>Figures</h2>{imgs}</body></html>"
        )
    written.append(page)
    logger.info("report written to %s", page)
    return written


def _fmt_value(summary: dict[str, Any], key: str, v: Any) -> str:
    """A summary value for the page; a transport number the run cannot support says why it is missing."""
    if v is None and not key.endswith(("_status", "_reason")):
        from .results import TRANSPORT_QUANTITIES

        for q in sorted(TRANSPORT_QUANTITIES, key=len, reverse=True):
            st = summary.get(f"{q}_status")
            if key.startswith(q) and st not in (None, "resolved"):
                return f"not reported ({st})"
    return _fmt(v)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return json.dumps(v) if isinstance(v, (dict, list)) else str(v)


def arrhenius_across_runs(
    out_dirs: Sequence[str], temperatures_K: Sequence[float] | None = None, plot_path: str | None = None
) -> dict[str, Any]:
    """Activation energies and prefactors from D*, D_σ, ν and f·ν over several analysed runs.

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
    """
    from .transport import arrhenius_fit

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
    if plot_path:
        from . import plots  # Figure objects, no pyplot: no backend is set for the process

        fits = {k: v for k, v in out.items() if k in values and v}
        fig = plots.arrhenius(T, {k: values[k] for k in ("D_tracer", "D_sigma")}, fits)
        fig.savefig(plot_path, dpi=110)
        out["plot"] = plot_path
    return out
