"""Many-ion correlations: which hops happen in concert, and how many ions hop together.

Following López, Rurali & Cazorla, every hop is its own event (two hops of one
ion are independent events). Each event's binary hopping signal (1 from its
``start_frame`` to its ``end_frame``) is smoothed by a Gaussian whose FWHM is
that event's own duration, ``w = end - start`` frames:

``s_e(t) = ½ [erf((t - start + ½) / (σ√2)) - erf((t - end - ½) / (σ√2))]``,
``σ = w / (2√(2 ln 2))``.

* **Correlation** of two events: the Pearson coefficient of their smoothed
  signals over the run (only overlapping signals can correlate; the matrix is
  sparse and built as ``S Sᵀ`` from the sparse event-by-frame matrix ``S``).
* **Threshold**: a seeded random null with the same number of events and the
  same durations, placed uniformly in time. Among the null pairs whose signals
  *overlap*, the ``percentile`` (default 95th) of their correlation is the
  threshold. (Taking the percentile over all pairs, most of which do not
  overlap, gives ~0 and makes any overlap "correlated".)
* **Groups of concerted ions**: connected components of the graph of events
  correlated above threshold, with no edge between two hops of the same ion
  (``method="cliques"``: greedy maximal cliques instead). A group's size n is
  its number of distinct ions.
* The distribution of n = 1..20, its exponential fit ``f(n) = A exp(-b n)``
  (least squares on the normalised frequencies with Poisson errors), the mean ±
  std of n over groups of n ≥ 2, and the hop frequency when each group counts as
  one event.
* **Pair mechanisms** (n = 2): *vacancy following*, the leader leaves a centre
  and the follower then enters it; *knock-off*, the arriving ion sets off
  first and the ion at the centre it arrives at is pushed out.
* **Is the concert real?** (:func:`concert_null`) Hops of different ions
  overlap by chance, and chance overlaps above the threshold form "groups"
  too. The null keeps every hop (its ion, duration, path) and each ion's own
  sequence of hops and waiting times, but shifts each ion's whole hop sequence
  in time by its own random circular offset (``n_shuffle`` seeded draws), which
  destroys only the timing *between* ions. The same threshold and grouping
  are applied to every draw. ``concert_p_value`` is the probability under
  this null of a share of hops in groups (n ≥ 2) at least as large as the
  observed one; ``concert_p_value_mean_size`` the same for the mean group
  size; the pair mechanisms get their own p-values. The exponential b is
  fitted to the observed distribution, to the null's mean distribution, and
  to the excess of the observed over the null's expectation (n ≥ 2).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.special import erf

from iondiff_stream.core.errors import AnalysisError

logger = logging.getLogger(__name__)

__all__ = [
    "CorrelationParameters",
    "CorrelationResult",
    "event_signals",
    "event_correlations",
    "null_threshold",
    "concerted_groups",
    "fit_exponential",
    "ConcertNull",
    "concert_null",
]

_FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass(frozen=True)
class CorrelationParameters:
    """Settings of the correlation analysis.

    Attributes
    ----------
    percentile : float
        Percentile of the null's overlapping-pair correlations used as threshold.
    n_null : int
        Random null realisations (more are drawn while fewer than 2000 null
        overlaps were seen, up to 200 realisations).
    method : {"components", "cliques"}
    max_size : int
        Largest group size in the histogram (larger groups go to the last bin).
    site_tolerance_A : float
        Two centres are the same site within this distance (pair mechanisms).
    truncate : float
        Signals are cut at this many σ beyond the box.
    seed : int
    n_shuffle : int
        Draws of the time-shuffled null of :func:`concert_null` (0: no null).
    """

    percentile: float = 95.0
    n_null: int = 3
    method: str = "components"
    max_size: int = 20
    site_tolerance_A: float = 1.0
    truncate: float = 4.0
    seed: int = 0
    n_shuffle: int = 300

    def __post_init__(self) -> None:
        if self.n_shuffle < 0:
            raise ValueError(f"n_shuffle must be >= 0, got {self.n_shuffle}")
        if not 0 < self.percentile < 100:
            raise ValueError(f"percentile must be in (0, 100), got {self.percentile}")
        if self.method not in ("components", "cliques"):
            raise ValueError(f"method must be 'components' or 'cliques', got {self.method!r}")


@dataclass
class CorrelationResult:
    """Outcome of :func:`concerted_groups`.

    Attributes
    ----------
    corr : scipy.sparse.csr_matrix, shape (n_events, n_events)
        Pearson correlation of every overlapping pair of events (0 elsewhere).
    threshold : float
    group_of_event : ndarray, shape (n_events,)
        Group index of every event.
    group_sizes : ndarray, shape (n_groups,)
        Distinct ions per group.
    size_hist : ndarray, shape (max_size,)
        Number of groups of size n = 1..max_size.
    fit : dict or None
        ``A, b, A_err, b_err`` of ``f(n) = A exp(-b n)`` on the normalised
        distribution.
    mean_correlated, std_correlated : float
        Mean and std of n over groups with n ≥ 2 (NaN when none).
    nu_events_per_ps, nu_groups_per_ps : float
        Hop frequency per ion, counting every hop / every group once.
    mechanisms : dict
        ``vacancy_following``, ``knock_off``, ``other`` counts over n = 2 groups.
    null : ConcertNull or None
        The time-shuffled null of the same hops (:func:`concert_null`).
    """

    corr: sp.csr_matrix
    threshold: float
    group_of_event: np.ndarray
    group_sizes: np.ndarray
    size_hist: np.ndarray
    fit: dict[str, float] | None
    mean_correlated: float
    std_correlated: float
    nu_events_per_ps: float
    nu_groups_per_ps: float
    mechanisms: dict[str, int]
    null_values: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    null: ConcertNull | None = field(repr=False, default=None)

    @property
    def fraction_hops_concerted(self) -> float:
        """Share of hop events that belong to a group of n ≥ 2 ions."""
        if len(self.group_of_event) == 0:
            return float("nan")
        return float(np.mean(self.group_sizes[self.group_of_event] >= 2))

    def summary(self) -> dict[str, Any]:
        """Scalars for summary.json (units in the names)."""
        n_events = len(self.group_of_event)
        n_groups = len(self.group_sizes)
        out = self._summary_observed(n_events, n_groups)
        if self.null is not None:
            out.update(self.null.summary())
        elif n_events == 0:
            out["concert_p_value"] = None  # no hops: nothing to compare with a null
        return out

    def _summary_observed(self, n_events: int, n_groups: int) -> dict[str, Any]:
        return {
            "n_hop_events": n_events,
            "n_concerted_groups": int((self.group_sizes >= 2).sum()),
            "fraction_hops_concerted": self.fraction_hops_concerted if n_events else None,
            "correlation_threshold": float(self.threshold),
            "group_size_hist": self.size_hist.tolist(),
            "group_size_fit": self.fit,
            "mean_correlated_ions": _nan_none(self.mean_correlated),
            "std_correlated_ions": _nan_none(self.std_correlated),
            "hop_frequency_groups_per_ps": self.nu_groups_per_ps,
            "hop_frequency_events_per_ps": self.nu_events_per_ps,
            "hop_frequency_ratio_groups_over_events": (n_groups / n_events) if n_events else None,
            "pair_mechanisms": self.mechanisms,
        }

    def __repr__(self) -> str:
        from iondiff_stream.core.display import correlation_rows, summary_text

        return summary_text("CorrelationResult", correlation_rows(self.summary()), ".summary() for every number")

    def _repr_html_(self) -> str:
        from iondiff_stream.core.display import correlation_rows, summary_html

        return summary_html("CorrelationResult", correlation_rows(self.summary()), ".summary() for every number")


def _nan_none(v: float) -> float | None:
    return None if not np.isfinite(v) else float(v)


def event_signals(
    start: np.ndarray, end: np.ndarray, n_frames: int, truncate: float = 4.0, block: np.ndarray | None = None,
    n_blocks: int = 1,
) -> sp.csr_matrix:
    """Sparse matrix of Gaussian-smoothed hop signals.

    Parameters
    ----------
    start, end : ndarray of int, shape (n_events,)
        First and last frame of each hop.
    n_frames : int
    truncate : float
    block : ndarray of int, shape (n_events,), optional
        Put event e's signal into the time block ``block[e]`` (columns
        ``block * n_frames + frame``): independent replicas of the run side by
        side, each signal cut at the ends of its own run (used for the null).
    n_blocks : int
        Number of blocks (columns ``n_blocks * n_frames``).

    Returns
    -------
    scipy.sparse.csr_matrix, shape (n_events, n_blocks * n_frames)
    """
    start = np.asarray(start, dtype=np.int64)
    end = np.asarray(end, dtype=np.int64)
    # a signal depends on its start only through the offset t - start: one kernel per distinct duration
    # (the null's draws share the observed durations), evaluated once and gathered; same values as
    # evaluating every event at every frame
    dur, which = np.unique(end - start, return_inverse=True)
    sigma = np.maximum(dur, 1).astype(float) / _FWHM
    pad_d = np.ceil(truncate * sigma).astype(np.int64) + 1
    klen = dur + 2 * pad_d + 1  # offsets -pad .. dur + pad
    kstart = np.cumsum(klen) - klen
    o = np.arange(klen.sum()) - np.repeat(kstart + pad_d, klen)
    sk = np.repeat(sigma * np.sqrt(2.0), klen)
    kernel = 0.5 * (erf((o + 0.5) / sk) - erf((o - np.repeat(dur, klen) - 0.5) / sk))
    which = which.ravel()
    pad = pad_d[which]
    lo = np.maximum(start - pad, 0)
    hi = np.minimum(end + pad, n_frames - 1)
    lens = np.maximum(hi - lo + 1, 0)
    # rows are the events in order, columns increasing within a row: the CSR arrays are built directly
    ptr = np.zeros(len(start) + 1, dtype=np.int64)
    np.cumsum(lens, out=ptr[1:])
    frame = np.arange(ptr[-1]) + np.repeat(lo - ptr[:-1], lens)  # frame of every stored value
    vals = kernel[frame + np.repeat(kstart[which] + pad - start, lens)]
    if block is not None:
        frame += np.repeat(np.asarray(block, dtype=np.int64) * n_frames, lens)
    return sp.csr_matrix((vals, frame, ptr), shape=(len(start), n_blocks * n_frames))


def event_correlations(S: sp.csr_matrix, n_frames: int | None = None) -> sp.csr_matrix:
    """Pearson correlation over frames of every overlapping pair of signal rows (diagonal removed).

    Parameters
    ----------
    S : scipy.sparse.csr_matrix, shape (n_events, n_cols)
    n_frames : int, optional
        Frames of the run the means and variances are taken over (default
        ``n_cols``; give the run length when ``S`` holds several time blocks).
    """
    T = S.shape[1] if n_frames is None else int(n_frames)
    G = (S @ S.T).tocoo()
    rs = np.asarray(S.sum(1)).ravel()
    rss = np.asarray(S.multiply(S).sum(1)).ravel()
    mean = rs / T
    var = np.maximum(rss / T - mean**2, 1e-300)
    off = G.row != G.col
    r, c = G.row[off], G.col[off]
    cov = G.data[off] / T - mean[r] * mean[c]
    vals = cov / np.sqrt(var[r] * var[c])
    return sp.csr_matrix((vals, (r, c)), shape=G.shape)


def null_threshold(
    start: np.ndarray, end: np.ndarray, n_frames: int, params: CorrelationParameters
) -> tuple[float, np.ndarray]:
    """Threshold from random nulls with the same event count and durations.

    Returns
    -------
    threshold : float
    values : ndarray
        Correlations of the overlapping null pairs.
    """
    rng = np.random.default_rng(params.seed)
    dur = np.maximum(np.asarray(end) - np.asarray(start), 1)
    vals: list[np.ndarray] = []
    n_seen = 0
    for k in range(200):
        if k >= params.n_null and n_seen >= 2000:
            break
        s0 = (rng.random(len(dur)) * np.maximum(n_frames - dur, 1)).astype(np.int64)
        C = event_correlations(event_signals(s0, s0 + dur, n_frames, params.truncate))
        v = C.data[C.data > 0]
        vals.append(v)
        n_seen += len(v)
    allv = np.concatenate(vals) if vals else np.zeros(0)
    if len(allv) < 10:
        logger.warning("random null produced only %d overlapping pairs: threshold set to 0.5", len(allv))
        return 0.5, allv
    return float(np.percentile(allv, params.percentile)), allv


def fit_exponential(size_hist: np.ndarray, n_min: int = 1, errors: np.ndarray | None = None) -> dict[str, float] | None:
    """Fit ``f(n) = A exp(-b n)`` to a group-size histogram (n = 1..len).

    Normalised frequencies, Poisson errors (empty bins get the error of one
    count), ``scipy.optimize.curve_fit``; errors are 1σ from the covariance.

    Parameters
    ----------
    size_hist : ndarray, shape (max_size,)
        Counts (may be non-integer, e.g. a null's mean) for n = 1..max_size.
    n_min : int
        Smallest n fitted (2 for the excess over a null).
    errors : ndarray, shape (max_size,), optional
        1σ of the counts (default Poisson).
    """
    from scipy.optimize import curve_fit

    counts = np.asarray(size_hist, float).copy()
    counts[: max(n_min - 1, 0)] = 0.0
    total = counts.sum()
    n = np.arange(1, len(counts) + 1, dtype=float)
    last = int(np.flatnonzero(counts > 0)[-1]) + 1 if total > 0 else 0
    if total <= 0 or np.count_nonzero(counts > 0) < 2:
        return None
    lo = max(n_min - 1, 0)
    n, counts = n[lo:last], counts[lo:last]
    f = counts / total
    if errors is None:
        err = np.sqrt(np.maximum(counts, 1.0)) / total
    else:
        err = np.maximum(np.asarray(errors, float)[lo:last], 1.0) / total
    p0 = [max(f[0], 1e-12) * np.exp(n[0]), 1.0]
    import warnings

    from scipy.optimize import OptimizeWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            popt, pcov = curve_fit(lambda x, A, b: A * np.exp(-b * x), n, f, p0=p0, sigma=err, absolute_sigma=True,
                                   maxfev=10000)
    except (RuntimeError, ValueError):
        return None
    perr = np.sqrt(np.diag(pcov))
    if not np.all(np.isfinite(perr)) or not np.all(np.isfinite(popt)) or perr[1] > 100.0:
        return None  # too few points or no freedom: b undetermined
    return {"A": float(popt[0]), "b": float(popt[1]), "A_err": float(perr[0]), "b_err": float(perr[1])}


def _components(n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    from scipy.sparse.csgraph import connected_components

    A = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, lab = connected_components(A, directed=False)
    return lab


def _cliques(n: int, rows: np.ndarray, cols: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Greedy partition into maximal cliques (largest first), networkx's Bron–Kerbosch."""
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_weighted_edges_from(zip(rows.tolist(), cols.tolist(), weights.tolist()))
    lab = -np.ones(n, dtype=np.int64)
    cliques = sorted(nx.find_cliques(g), key=len, reverse=True)
    gid = 0
    for c in cliques:
        free = [v for v in c if lab[v] < 0]
        if free:
            lab[free] = gid
            gid += 1
    return lab


def _min_image(d: np.ndarray, box: np.ndarray | None) -> np.ndarray:
    from iondiff_stream.core.pbc import minimum_image

    return minimum_image(d, box)


_MECH = ("vacancy_following", "knock_off", "other")


def _pair_kinds(a: np.ndarray, b: np.ndarray, fr: np.ndarray, to: np.ndarray, st: np.ndarray,
                box: np.ndarray | None, tol: float) -> np.ndarray:
    """Mechanism of pairs of events (a, b): 0 vacancy following, 1 knock-off, 2 other.

    The follower arrives (``to``) where the leader was (``from``) within ``tol``;
    the pair is vacancy following when the leader starts first (or together),
    knock-off when the follower starts first. a following b is tested first.
    """
    return _pair_kinds_flat(a, b, np.arange(len(fr)), fr, to, np.asarray(st), box, tol)


def _positions(hops: Any) -> tuple[np.ndarray, np.ndarray]:
    fr = np.column_stack([hops["from_x_A"], hops["from_y_A"], hops["from_z_A"]]).astype(float)
    to = np.column_stack([hops["to_x_A"], hops["to_y_A"], hops["to_z_A"]]).astype(float)
    return fr, to


def _mechanisms(hops: Any, groups: list[np.ndarray], box: np.ndarray | None, tol: float) -> dict[str, int]:
    fr, to = _positions(hops)
    st = np.asarray(hops["start_frame"])
    pairs = np.array([g[:2] for g in groups if len(g) == 2], dtype=np.int64).reshape(-1, 2)
    kind = _pair_kinds(pairs[:, 0], pairs[:, 1], fr, to, st, box, tol)
    counts = np.bincount(kind, minlength=3)
    return {k: int(c) for k, c in zip(_MECH, counts)}


@dataclass
class ConcertNull:
    """Time-shuffled null of the concerted groups (see :func:`concert_null`).

    Attributes
    ----------
    n_draws : int
    fraction_hops_concerted : ndarray, shape (n_draws,)
        Share of hops in groups of n ≥ 2 ions in every draw.
    mean_correlated : ndarray, shape (n_draws,)
        Mean n over groups of n ≥ 2 (NaN when a draw has none).
    size_hists : ndarray, shape (n_draws, max_size)
        Group-size histogram of every draw.
    mechanisms : ndarray, shape (n_draws, 3)
        Vacancy-following, knock-off, other pair counts per draw.
    observed : dict
        The observed statistics the p-values refer to.
    p_value_fraction, p_value_mean_size : float
        ``(1 + #{null ≥ observed}) / (1 + n_draws)`` for the share of hops in
        groups and for the mean group size.
    p_value_mechanisms : dict
        The same for the vacancy-following and knock-off counts.
    fit_observed, fit_null, fit_excess : dict or None
        Exponential fits (see :func:`fit_exponential`) of the observed
        histogram, the null's mean histogram, and the observed minus the null's
        mean for n ≥ 2 (clipped at 0).
    seed : int
    """

    n_draws: int
    fraction_hops_concerted: np.ndarray
    mean_correlated: np.ndarray
    size_hists: np.ndarray
    mechanisms: np.ndarray
    observed: dict[str, Any]
    p_value_fraction: float
    p_value_mean_size: float
    p_value_mechanisms: dict[str, float]
    fit_observed: dict[str, float] | None
    fit_null: dict[str, float] | None
    fit_excess: dict[str, float] | None
    seed: int

    @property
    def size_hist_mean(self) -> np.ndarray:
        """Mean group-size histogram of the null, shape (max_size,)."""
        return self.size_hists.mean(0)

    def summary(self) -> dict[str, Any]:
        """Null statistics and p-values for summary.json."""
        fr = self.fraction_hops_concerted
        ms = self.mean_correlated[np.isfinite(self.mean_correlated)]
        mech = self.mechanisms.mean(0)
        return {
            "concert_p_value": self.p_value_fraction,
            "concert_p_value_statistic": "fraction_hops_concerted",
            "concert_p_value_mean_size": self.p_value_mean_size,
            "concert_null": "per-ion random circular time shift of each ion's hop sequence",
            "concert_null_draws": self.n_draws,
            "concert_null_seed": self.seed,
            "null_fraction_hops_concerted_mean": float(fr.mean()) if len(fr) else None,
            "null_fraction_hops_concerted_std": float(fr.std(ddof=1)) if len(fr) > 1 else None,
            "excess_fraction_hops_concerted": (float(self.observed["fraction_hops_concerted"] - fr.mean())
                                               if len(fr) else None),
            "null_mean_correlated_ions": float(ms.mean()) if len(ms) else None,
            "null_group_size_hist_mean": self.size_hist_mean.tolist(),
            "null_group_size_hist_std": self.size_hists.std(0, ddof=1).tolist() if self.n_draws > 1 else None,
            "group_size_fit_null": self.fit_null,
            "group_size_fit_excess_over_null": self.fit_excess,
            "null_pair_mechanisms_mean": {k: float(v) for k, v in zip(_MECH, mech)},
            "pair_mechanisms_p_value": self.p_value_mechanisms,
        }


def _groups_stats(lab: np.ndarray, ion: np.ndarray, draw: np.ndarray, n_draws: int, max_size: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-draw statistics of a labelled batch: sizes (distinct ions) per group, histogram, shares."""
    _, lab = np.unique(lab, return_inverse=True)
    lab = lab.ravel()
    n_groups = int(lab.max()) + 1 if len(lab) else 0
    # distinct (group, ion) pairs -> ions per group
    key = np.unique(lab.astype(np.int64) * (int(ion.max()) + 1) + ion)
    sizes = np.bincount(key // (int(ion.max()) + 1), minlength=n_groups)
    gdraw = np.zeros(n_groups, dtype=np.int64)
    gdraw[lab] = draw
    hist = np.zeros((n_draws, max_size), dtype=np.int64)
    np.add.at(hist, (gdraw, np.minimum(sizes, max_size) - 1), 1)
    in_group = sizes[lab] >= 2
    n_ev = np.bincount(draw, minlength=n_draws)
    frac = np.bincount(draw, weights=in_group, minlength=n_draws) / np.maximum(n_ev, 1)
    big = sizes >= 2
    n_big = np.bincount(gdraw[big], minlength=n_draws)
    sum_big = np.bincount(gdraw[big], weights=sizes[big], minlength=n_draws)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_big = np.where(n_big > 0, sum_big / np.maximum(n_big, 1), np.nan)
    return lab, sizes, hist, frac, mean_big


def concert_null(
    hops: Any,
    n_frames: int,
    threshold: float,
    observed: CorrelationResult,
    box: np.ndarray | None = None,
    params: CorrelationParameters | None = None,
    n_draws: int | None = None,
    max_nnz: int = 4_000_000,
) -> ConcertNull:
    """Time-shuffled null of the concerted groups of the same hops.

    Every draw shifts each ion's whole sequence of closed hops by its own
    random offset, uniform in ``[0, n_frames)``, circularly (a hop that would
    run past the last frame is put back so that it ends there). Each ion keeps
    its hop count, durations, paths and waiting times; only the timing between
    ions is lost. The draws are analysed together (one sparse signal matrix
    with one time block per draw), with the observed ``threshold`` and the same
    grouping.

    Parameters
    ----------
    hops : HopTable or dict of columns
        Closed hops (the same rows as the observed analysis).
    n_frames : int
    threshold : float
        The observed analysis' correlation threshold.
    observed : CorrelationResult
        Observed groups (for the p-values and the excess fit).
    box : ndarray, shape (6,), optional
    params : CorrelationParameters, optional
        ``n_shuffle`` draws seeded with ``seed + 1``.
    n_draws : int, optional
        Overrides ``params.n_shuffle``.
    max_nnz : int
        Bound on stored signal values and on correlated pairs per batch of
        draws (memory: ~100 bytes each).

    Returns
    -------
    ConcertNull
    """
    params = params or CorrelationParameters()
    n_draws = params.n_shuffle if n_draws is None else int(n_draws)
    if n_draws < 1:
        raise ValueError(f"the null needs at least one draw, got {n_draws}")
    h = hops.closed() if hasattr(hops, "closed") else hops
    start = np.asarray(h["start_frame"], dtype=np.int64)
    end = np.asarray(h["end_frame"], dtype=np.int64)
    ion = np.asarray(h["ion"], dtype=np.int64)
    fr, to = _positions(h)
    n = len(start)
    T = int(n_frames)
    dur = np.maximum(end - start, 0)
    ms = params.max_size
    rng = np.random.default_rng(params.seed + 1)
    _, ion_idx = np.unique(ion, return_inverse=True)
    ion_idx = ion_idx.ravel()
    n_ion = int(ion_idx.max()) + 1 if n else 0
    sig_len = (dur + 2 * (np.ceil(params.truncate * np.maximum(dur, 1) / _FWHM) + 1)).sum() if n else 0
    # bound both the signal matrix and the pair matrix (about as many pairs per draw as observed) per batch
    n_pairs = int(observed.corr.nnz) if observed.corr is not None else 0
    per_batch = int(max(1, min(n_draws, max_nnz // max(int(sig_len), 1), max_nnz // max(2 * n_pairs, 1))))
    fracs, means, hists, mechs = [], [], [], []
    for b0 in range(0, n_draws, per_batch):
        k = min(per_batch, n_draws - b0)
        offs = rng.integers(0, T, size=(k, n_ion))
        s_new = (start[None, :] + offs[:, ion_idx]) % T
        s_new = np.minimum(s_new, np.maximum(T - 1 - dur, 0)[None, :])
        s_flat = s_new.ravel()
        e_flat = s_flat + np.tile(dur, k)
        draw = np.repeat(np.arange(k), n)
        ev = np.tile(np.arange(n), k)
        S = event_signals(s_flat, e_flat, T, params.truncate, block=draw, n_blocks=k)
        C = event_correlations(S, T).tocoo()
        ions_flat = ion[ev]
        keep = (C.data > threshold) & (ions_flat[C.row] != ions_flat[C.col]) & (C.row < C.col)
        rows, cols = C.row[keep], C.col[keep]
        if params.method == "components":
            lab = _components(k * n, rows, cols)
        else:
            lab = _cliques(k * n, rows, cols, C.data[keep])
        lab, sizes, hist, frac, mean_big = _groups_stats(lab, ions_flat, draw, k, ms)
        # pair mechanisms: groups of exactly two events
        n_ev_g = np.bincount(lab, minlength=len(sizes))
        sel = n_ev_g[lab] == 2
        order = np.argsort(lab[sel], kind="stable")
        idx = np.flatnonzero(sel)[order].reshape(-1, 2)
        a_e, b_e = idx[:, 0], idx[:, 1]
        kind = _pair_kinds_flat(a_e, b_e, ev, fr, to, s_flat, box, params.site_tolerance_A)
        mech = np.zeros((k, 3), dtype=np.int64)
        np.add.at(mech, (draw[a_e], kind), 1)
        fracs.append(frac)
        means.append(mean_big)
        hists.append(hist)
        mechs.append(mech)
    frac_all = np.concatenate(fracs)
    mean_all = np.concatenate(means)
    hist_all = np.concatenate(hists)
    mech_all = np.concatenate(mechs)
    obs_frac = observed.fraction_hops_concerted
    obs_mean = observed.mean_correlated
    m = observed.mechanisms

    def pval(null: np.ndarray, obs: float) -> float:
        if not np.isfinite(obs):
            return 1.0
        null = np.where(np.isfinite(null), null, -np.inf)
        return float((1 + np.count_nonzero(null >= obs - 1e-12)) / (1 + len(null)))

    mean_hist = hist_all.mean(0)
    obs_hist = np.asarray(observed.size_hist, float)
    excess = np.clip(obs_hist - mean_hist, 0.0, None)
    err = np.sqrt(np.maximum(obs_hist, 1.0) + hist_all.var(0))
    return ConcertNull(
        n_draws=n_draws,
        fraction_hops_concerted=frac_all,
        mean_correlated=mean_all,
        size_hists=hist_all,
        mechanisms=mech_all,
        observed={"fraction_hops_concerted": obs_frac, "mean_correlated_ions": obs_mean,
                  "pair_mechanisms": dict(m)},
        p_value_fraction=pval(frac_all, obs_frac),
        p_value_mean_size=pval(mean_all, obs_mean),
        p_value_mechanisms={"vacancy_following": pval(mech_all[:, 0], m.get("vacancy_following", 0)),
                            "knock_off": pval(mech_all[:, 1], m.get("knock_off", 0))},
        fit_observed=observed.fit,
        fit_null=fit_exponential(mean_hist),
        fit_excess=fit_exponential(excess, n_min=2, errors=err),
        seed=params.seed + 1,
    )


def _pair_kinds_flat(a_e: np.ndarray, b_e: np.ndarray, ev: np.ndarray, fr: np.ndarray, to: np.ndarray,
                     st_flat: np.ndarray, box: np.ndarray | None, tol: float) -> np.ndarray:
    """:func:`_pair_kinds` for rows of a batch of null draws (event ``ev[row]``, start ``st_flat[row]``)."""
    kind = np.full(len(a_e), 2, dtype=np.int64)
    if len(a_e) == 0:
        return kind
    a, b = ev[a_e], ev[b_e]
    ab = np.linalg.norm(_min_image(to[a] - fr[b], box), axis=1) <= tol
    ba = np.linalg.norm(_min_image(to[b] - fr[a], box), axis=1) <= tol
    sa, sb = st_flat[a_e], st_flat[b_e]
    kind[ab] = np.where(sb[ab] <= sa[ab], 0, 1)
    rest = ~ab & ba
    kind[rest] = np.where(sa[rest] <= sb[rest], 0, 1)
    return kind


def concerted_groups(
    hops: Any,
    n_frames: int,
    n_ions: int,
    total_time_ps: float,
    box: np.ndarray | None = None,
    params: CorrelationParameters | None = None,
) -> CorrelationResult:
    """Groups of concerted hops and their size distribution.

    Parameters
    ----------
    hops : HopTable
        Closed hops are used (open ones have no known end).
    n_frames : int
    n_ions : int
        Mobile ions (for frequencies per ion).
    total_time_ps : float
    box : ndarray, shape (6,), optional
        For minimum-image site comparisons in the pair mechanisms.
    params : CorrelationParameters, optional
    """
    params = params or CorrelationParameters()
    h = hops.closed() if hasattr(hops, "closed") else hops
    start = np.asarray(h["start_frame"], dtype=np.int64)
    end = np.asarray(h["end_frame"], dtype=np.int64)
    ion = np.asarray(h["ion"], dtype=np.int64)
    n = len(start)
    if n_frames < 2 or total_time_ps <= 0:
        raise AnalysisError("need a run of at least 2 frames for correlations")
    if n == 0:
        empty = np.zeros(params.max_size, dtype=np.int64)
        return CorrelationResult(sp.csr_matrix((0, 0)), float("nan"), np.zeros(0, np.int64), np.zeros(0, np.int64),
                                 empty, None, float("nan"), float("nan"), 0.0, 0.0,
                                 {"vacancy_following": 0, "knock_off": 0, "other": 0})
    C = event_correlations(event_signals(start, end, n_frames, params.truncate)).tocoo()
    thr, null_vals = null_threshold(start, end, n_frames, params)
    keep = (C.data > thr) & (ion[C.row] != ion[C.col]) & (C.row < C.col)
    rows, cols = C.row[keep], C.col[keep]
    lab = _components(n, rows, cols) if params.method == "components" else _cliques(n, rows, cols, C.data[keep])
    _, lab = np.unique(lab, return_inverse=True)
    lab = lab.ravel()
    n_groups = int(lab.max()) + 1
    order = np.argsort(lab, kind="stable")
    bounds = np.flatnonzero(np.diff(lab[order])) + 1
    groups = np.split(order, bounds)
    sizes = np.array([len(np.unique(ion[g])) for g in groups], dtype=np.int64)
    hist = np.bincount(np.minimum(sizes, params.max_size), minlength=params.max_size + 1)[1:]
    big = sizes[sizes >= 2]
    mean_c = float(big.mean()) if len(big) else float("nan")
    std_c = float(big.std()) if len(big) else float("nan")
    mech = _mechanisms(h, groups, box, params.site_tolerance_A)
    res = CorrelationResult(
        corr=C.tocsr(),
        threshold=thr,
        group_of_event=lab,
        group_sizes=sizes,
        size_hist=hist,
        fit=fit_exponential(hist),
        mean_correlated=mean_c,
        std_correlated=std_c,
        nu_events_per_ps=n / (n_ions * total_time_ps),
        nu_groups_per_ps=n_groups / (n_ions * total_time_ps),
        mechanisms=mech,
        null_values=null_vals,
    )
    if params.n_shuffle > 0:
        res.null = concert_null(h, n_frames, thr, res, box, params)
        logger.info("concert: %.1f %% of hops in groups (null %.1f %%), p = %.3g over %d shuffles",
                    100 * res.fraction_hops_concerted, 100 * res.null.fraction_hops_concerted.mean(),
                    res.null.p_value_fraction, res.null.n_draws)
    return res
