"""Figures people want; every function returns a :class:`matplotlib.figure.Figure` (never shows it).

Needs the optional ``matplotlib`` dependency (``pip install iondiff_stream[plots]``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ion_path", "hop_timeline", "correlation_matrix", "group_sizes", "concert_vs_null", "msd", "arrhenius"]


def _figure(**kw: Any) -> Any:
    from matplotlib.figure import Figure

    return Figure(**kw)


def ion_path(positions: np.ndarray, times_ps: np.ndarray, states: np.ndarray, centres: np.ndarray,
             hops: dict[str, np.ndarray] | None = None, title: str = "") -> Any:
    """One ion's trajectory with its vibrational centres and hop frames (cf. the paper's Fig. 2a).

    Parameters
    ----------
    positions : ndarray, shape (T, 3)
        Unwrapped positions, Å.
    times_ps : ndarray, shape (T,)
    states : ndarray, shape (T,)
        Centre index or -1 (transit).
    centres : ndarray, shape (k, 3)
    hops : dict, optional
        ``start_time_ps``/``end_time_ps`` arrays of this ion's hops.
    """
    fig = _figure(figsize=(11, 4.5), layout="constrained")
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    vib = states >= 0
    ax.scatter(*positions[~vib].T, s=2, c="0.6", label="in transit", alpha=0.5)
    ax.scatter(*positions[vib].T, s=2, c=states[vib], cmap="tab10", vmin=0, vmax=9, alpha=0.3)
    ax.scatter(*centres.T, s=250, marker="*", c="red", edgecolors="k", depthshade=False, zorder=10,
               label="centres")
    ax.set_xlabel("x (Å)")
    ax.set_ylabel("y (Å)")
    ax.set_zlabel("z (Å)")
    ax.legend(loc="upper left", fontsize=8)
    ax2 = fig.add_subplot(1, 2, 2)
    d = np.linalg.norm(positions - positions[0], axis=1)
    ax2.plot(times_ps, d, lw=0.7, c="k")
    if hops is not None:
        for s, e in zip(hops["start_time_ps"], hops["end_time_ps"]):
            ax2.axvspan(s, e, color="tab:red", alpha=0.3, lw=0)
    ax2.set_xlabel("time (ps)")
    ax2.set_ylabel("distance from start (Å)")
    ax2.set_title("hops shaded (last vibrating frame → first vibrating frame)", fontsize=9)
    fig.suptitle(title or "ion path")
    return fig


def hop_timeline(ions: np.ndarray, start_ps: np.ndarray, end_ps: np.ndarray, n_ions: int, total_ps: float,
                 group_of_event: np.ndarray | None = None) -> Any:
    """Every hop of every ion on a time line (cf. Fig. 2b); hops of one concerted group share a colour.

    Parameters
    ----------
    ions, start_ps, end_ps : ndarray, shape (n_hops,)
        Mobile-ion index, last frame in the origin site and first frame in the destination (ps) of each hop.
    n_ions : int
        Number of mobile ions (the y range).
    total_ps : float
        Length of the run (the x range), ps.
    group_of_event : ndarray, shape (n_hops,), optional
        Concerted group of each hop: hops whose group has 2 or more hops are drawn in that group's colour,
        single hops in grey; the legend says which is which.

    Returns
    -------
    matplotlib.figure.Figure
        With no hops, a note says so instead of an empty time line.
    """
    from matplotlib.lines import Line2D

    fig = _figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ions = np.asarray(ions)
    ax.set_xlim(0, total_ps if total_ps > 0 else 1.0)
    ax.set_ylim(-1, max(n_ions, 1))
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("mobile ion")
    if not len(ions):
        ax.text(0.5, 0.5, "no hops in this run", transform=ax.transAxes, ha="center", va="center", fontsize=14,
                color="0.3")
        ax.set_title("0 hops")
        return fig
    single = np.ones(len(ions), bool)
    col = np.tile(np.array([0.55, 0.55, 0.55, 1.0]), (len(ions), 1))
    if group_of_event is not None and len(group_of_event) == len(ions):
        g = np.asarray(group_of_event)
        sizes = np.bincount(g)
        single = sizes[g] < 2
        multi = np.unique(g[~single])
        rank = np.searchsorted(multi, g[~single])  # consecutive groups get consecutive colours
        col[~single] = _cmap("tab10")((rank % 10) / 9.999)
    end = np.maximum(end_ps, start_ps + total_ps * 2e-3)
    ax.hlines(ions, start_ps, end, colors=col, lw=3)
    ax.scatter(0.5 * (start_ps + end_ps), ions, marker="|", s=60, c=col)
    handles = [Line2D([], [], color="0.55", lw=3, label=f"single hop ({int(single.sum())})")]
    if (~single).any():
        n_groups = len(np.unique(np.asarray(group_of_event)[~single]))
        handles += [Line2D([], [], color=_cmap("tab10")(k / 9.999), lw=3, label=None if k else
                           f"concerted group ({n_groups}; hops of one group share a colour)")
                    for k in range(min(n_groups, 3))]
    from matplotlib.legend_handler import HandlerTuple

    entries = [handles[0]] + ([tuple(handles[1:])] if len(handles) > 1 else [])
    labels = [handles[0].get_label()] + ([handles[1].get_label()] if len(handles) > 1 else [])
    ax.legend(entries, labels, handler_map={tuple: HandlerTuple(ndivide=None)}, loc="upper right", fontsize=8,
              framealpha=0.9)
    ax.set_title(f"{len(ions)} hops (bar: last frame in the origin site → first frame in the destination)", fontsize=9)
    return fig


def _cmap(name: str) -> Any:
    import matplotlib

    return matplotlib.colormaps[name]


def correlation_matrix(corr: Any, group_of_event: np.ndarray, max_events: int = 400) -> Any:
    """Event–event correlation matrix, events reordered by concerted group (cf. Fig. 3b)."""
    import scipy.sparse as sp

    n = corr.shape[0]
    order = np.argsort(group_of_event, kind="stable")
    if n > max_events:  # keep the largest groups
        sizes = np.bincount(group_of_event)
        order = np.argsort(-sizes[group_of_event], kind="stable")[:max_events]
        order = order[np.argsort(group_of_event[order], kind="stable")]
    m = sp.csr_matrix(corr)[order][:, order].toarray()
    m[np.arange(len(order)), np.arange(len(order))] = 1.0
    fig = _figure(figsize=(5.5, 4.8), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(m, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=ax, label="correlation")
    ax.set_xlabel("hop event (by group)")
    ax.set_ylabel("hop event (by group)")
    return fig


def group_sizes(size_hist: np.ndarray, fit: dict[str, float] | None, null_hist: np.ndarray | None = None,
                null_fit: dict[str, float] | None = None, null_std: np.ndarray | None = None,
                p_value: float | None = None) -> Any:
    """Distribution of the number of ions hopping in concert with its exponential fit (cf. Fig. 4).

    Parameters
    ----------
    size_hist : ndarray, shape (max_size,)
        Observed groups of n = 1..max_size ions.
    fit : dict or None
        ``A, b, b_err`` of the observed distribution.
    null_hist, null_std : ndarray, shape (max_size,), optional
        Mean (and std) group counts of the time-shuffled null of the same hops.
    null_fit : dict, optional
        Exponential fit of the null's mean distribution.
    p_value : float, optional
        ``concert_p_value``, shown in the title.
    """
    fig = _figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    _draw_group_sizes(ax, size_hist, fit, null_hist, null_fit, null_std)
    if p_value is not None:
        ax.set_title(f"P(null ≥ observed share of hops in groups) = {p_value:.3g}", fontsize=9)
    return fig


def _draw_group_sizes(ax: Any, size_hist: np.ndarray, fit: dict[str, float] | None, null_hist: np.ndarray | None,
                      null_fit: dict[str, float] | None, null_std: np.ndarray | None) -> None:
    """Observed and null group-size distributions (fractions of groups, log scale) on ``ax``."""
    n = np.arange(1, len(size_hist) + 1)
    total = max(float(np.sum(size_hist)), 1.0)
    w = 0.4 if null_hist is not None else 0.8
    ax.bar(n - (w / 2 if null_hist is not None else 0), np.asarray(size_hist) / total, width=w, color="tab:blue",
           alpha=0.8, label="observed groups")
    nz = np.flatnonzero(np.asarray(size_hist))
    n_last = int(nz[-1]) + 1 if len(nz) else 1
    if null_hist is not None:
        nh = np.asarray(null_hist, float)
        ntot = max(float(nh.sum()), 1e-12)
        yerr = None if null_std is None else np.asarray(null_std, float) / ntot
        ax.bar(n + w / 2, nh / ntot, width=w, color="0.55", alpha=0.8, yerr=yerr, ecolor="0.3", capsize=2,
               label="time-shuffled null (mean ± std)")
        nzn = np.flatnonzero(nh >= 0.05)
        n_last = max(n_last, int(nzn[-1]) + 1 if len(nzn) else 1)
    if fit:
        x = np.linspace(1, min(len(size_hist), n_last + 1), 200)
        ax.plot(x, fit["A"] * np.exp(-fit["b"] * x), "r-",
                label=f"observed: A exp(-b n), b = {fit['b']:.2f} ± {fit['b_err']:.2f}")
    if null_fit:
        x = np.linspace(1, min(len(size_hist), n_last + 1), 200)
        ax.plot(x, null_fit["A"] * np.exp(-null_fit["b"] * x), "k--",
                label=f"null: b = {null_fit['b']:.2f} ± {null_fit['b_err']:.2f}")
    ax.set_yscale("log")
    ax.set_ylim(0.3 / total, 2.0)
    ax.set_xlim(0.4, n_last + 1.6)
    ax.set_xlabel("ions hopping in concert, n")
    ax.set_ylabel("fraction of groups")
    ax.legend(fontsize=8)


def concert_vs_null(observed_fraction: float | None, null_mean: float | None, null_std: float | None,
                    p_value: float | None, size_hist: np.ndarray, null_hist: np.ndarray | None = None,
                    null_hist_std: np.ndarray | None = None, fit: dict[str, float] | None = None,
                    null_fit: dict[str, float] | None = None, n_draws: int | None = None) -> Any:
    """Concerted hopping observed against the time-shuffled null of the same hops.

    Left: the share of hops that belong to a group of 2 or more ions, observed and under the null (mean ± std
    over the draws), with the p-value. Right: the distribution of group sizes, observed and null.

    Parameters
    ----------
    observed_fraction : float or None
        ``fraction_hops_concerted``.
    null_mean, null_std : float or None
        ``null_fraction_hops_concerted_mean`` / ``_std``.
    p_value : float or None
        ``concert_p_value``: probability under the null of a share at least the observed one.
    size_hist : ndarray, shape (max_size,)
        ``group_size_hist``: observed groups of n = 1..max_size ions.
    null_hist, null_hist_std : ndarray, shape (max_size,), optional
        ``null_group_size_hist_mean`` / ``_std``.
    fit, null_fit : dict, optional
        ``group_size_fit`` / ``group_size_fit_null`` (``A, b, b_err``).
    n_draws : int, optional
        ``concert_null_draws``, for the legend.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = _figure(figsize=(10, 4), layout="constrained")
    ax = fig.add_subplot(1, 2, 1)
    obs = 100 * observed_fraction if observed_fraction is not None else np.nan
    nm = 100 * null_mean if null_mean is not None else np.nan
    ns = 100 * null_std if null_std is not None else None
    ax.bar([0], [obs], color="tab:blue", width=0.6, label="observed")
    draws = f", {n_draws} draws" if n_draws else ""
    ax.bar([1], [nm], color="0.55", width=0.6, yerr=None if ns is None else [ns], ecolor="0.2", capsize=6,
           label=f"time-shuffled null (mean ± std{draws})")
    for x, y in ((0, obs), (1, nm)):
        if np.isfinite(y):
            ax.text(x, y, f"{y:.3g} %", ha="center", va="bottom", fontsize=9)
    ax.set_xticks([0, 1], ["observed", "null"])
    ax.set_ylabel("hops in concerted groups (%)")
    top = np.nanmax([obs, nm + (ns or 0.0), 1.0])
    ax.set_ylim(0, 1.25 * top)
    if p_value is not None:
        ax.set_title(f"p = {p_value:.2g} (null share ≥ observed)", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    ax2 = fig.add_subplot(1, 2, 2)
    _draw_group_sizes(ax2, size_hist, fit, null_hist, null_fit, null_hist_std)
    ax2.set_title("group sizes", fontsize=9)
    return fig


def msd(lag_ps: np.ndarray, msd_A2: np.ndarray, msd_axes_A2: np.ndarray | None = None,
        mscd_A2: np.ndarray | None = None, fit: tuple[float, float, float, float] | None = None,
        band: tuple[float, float] | None = None) -> Any:
    """Tracer MSD (total and per axis), collective MSD/N, the fitted line and its fit window.

    Parameters
    ----------
    lag_ps, msd_A2 : ndarray, shape (L,)
    msd_axes_A2 : ndarray, shape (L, 3), optional
    mscd_A2 : ndarray, shape (L,), optional
    fit : (slope Å²/ps, intercept Å², t0 ps, t1 ps), optional
        The line, drawn over its window ``[t0, t1]`` (shaded).
    band : (slope_lo, slope_hi), optional
        Slopes (Å²/ps) of the 95 % interval of D (``6 D``): the band is the
        line's slope varied within them, pivoting about the window's centre.
    """
    fig = _figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(lag_ps, msd_A2, "k-", label="tracer")
    if msd_axes_A2 is not None:
        for k, c in zip(range(3), ("tab:red", "tab:green", "tab:blue")):
            ax.plot(lag_ps, msd_axes_A2[:, k], c=c, lw=0.8, label="xyz"[k])
    if mscd_A2 is not None:
        ax.plot(lag_ps, mscd_A2, c="tab:purple", lw=1, label="collective / N")
    if fit is not None:
        slope, icpt, t0, t1 = fit
        ax.axvspan(t0, t1, color="0.9", zorder=0, label=f"fit window {t0:.3g}–{t1:.3g} ps")
        t = np.linspace(t0, t1, 50)
        ax.plot(t, slope * t + icpt, "k--", lw=2, label="fit")
        if band is not None:
            tc = 0.5 * (t0 + t1)
            yc = slope * tc + icpt
            lo = yc + band[0] * (t - tc)
            hi = yc + band[1] * (t - tc)
            ax.fill_between(t, np.minimum(lo, hi), np.maximum(lo, hi), color="tab:orange", alpha=0.35,
                            label="95 % interval of D*")
    ax.set_xlabel("lag (ps)")
    ax.set_ylabel("MSD (Å²)")
    ax.legend(fontsize=8)
    return fig


def arrhenius(temperatures_K: np.ndarray, values: dict[str, np.ndarray], fits: dict[str, dict[str, float]],
              ylabel: str = "D (cm²/s)") -> Any:
    """log10 of D (or ν) against 1000/T with the Arrhenius lines and activation energies."""
    fig = _figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    x = 1000.0 / np.asarray(temperatures_K, float)
    xx = np.linspace(x.min() * 0.97, x.max() * 1.03, 50)
    for (name, y), c in zip(values.items(), ("tab:blue", "tab:red", "tab:green", "tab:purple")):
        y = np.asarray(y, float)
        ok = y > 0
        ax.plot(x[ok], np.log10(y[ok]), "o", c=c)
        f = fits.get(name)
        if f:
            ax.plot(xx, np.log10(f["prefactor"]) - f["Ea_eV"] / (8.617333262e-5 * 1000.0 / xx) / np.log(10), "-", c=c,
                    label=f"{name}: Ea = {f['Ea_eV']:.3f} ± {f['Ea_err_eV']:.3f} eV")
    ax.set_xlabel("1000 / T (1/K)")
    ax.set_ylabel(f"log10 {ylabel}")
    ax.legend(fontsize=8)
    return fig
