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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.special import erf

from .errors import AnalysisError

logger = logging.getLogger(__name__)

__all__ = [
    "CorrelationParameters",
    "CorrelationResult",
    "event_signals",
    "event_correlations",
    "null_threshold",
    "concerted_groups",
    "fit_exponential",
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
    """

    percentile: float = 95.0
    n_null: int = 3
    method: str = "components"
    max_size: int = 20
    site_tolerance_A: float = 1.0
    truncate: float = 4.0
    seed: int = 0

    def __post_init__(self) -> None:
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

    def summary(self) -> dict[str, Any]:
        """Scalars for summary.json (units in the names)."""
        n_events = len(self.group_of_event)
        n_groups = len(self.group_sizes)
        return {
            "n_hop_events": n_events,
            "n_concerted_groups": int((self.group_sizes >= 2).sum()),
            "fraction_hops_concerted": float(np.mean(self.group_sizes[self.group_of_event] >= 2)) if n_events else None,
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


def _nan_none(v: float) -> float | None:
    return None if not np.isfinite(v) else float(v)


def event_signals(start: np.ndarray, end: np.ndarray, n_frames: int, truncate: float = 4.0) -> sp.csr_matrix:
    """Sparse matrix of Gaussian-smoothed hop signals.

    Parameters
    ----------
    start, end : ndarray of int, shape (n_events,)
        First and last frame of each hop.
    n_frames : int
    truncate : float

    Returns
    -------
    scipy.sparse.csr_matrix, shape (n_events, n_frames)
    """
    start = np.asarray(start, dtype=np.int64)
    end = np.asarray(end, dtype=np.int64)
    w = np.maximum(end - start, 1).astype(float)
    sigma = w / _FWHM
    pad = np.ceil(truncate * sigma).astype(np.int64) + 1
    lo = np.maximum(start - pad, 0)
    hi = np.minimum(end + pad, n_frames - 1)
    lens = hi - lo + 1
    rows = np.repeat(np.arange(len(start)), lens)
    offs = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
    cols = np.repeat(lo, lens) + offs
    s = np.repeat(sigma * np.sqrt(2.0), lens)
    vals = 0.5 * (erf((cols - np.repeat(start, lens) + 0.5) / s) - erf((cols - np.repeat(end, lens) - 0.5) / s))
    return sp.csr_matrix((vals, (rows, cols)), shape=(len(start), n_frames))


def event_correlations(S: sp.csr_matrix) -> sp.csr_matrix:
    """Pearson correlation over frames of every overlapping pair of signal rows (diagonal removed)."""
    T = S.shape[1]
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


def fit_exponential(size_hist: np.ndarray) -> dict[str, float] | None:
    """Fit ``f(n) = A exp(-b n)`` to a group-size histogram (n = 1..len).

    Normalised frequencies, Poisson errors (empty bins get the error of one
    count), ``scipy.optimize.curve_fit``; errors are 1σ from the covariance.
    """
    from scipy.optimize import curve_fit

    counts = np.asarray(size_hist, float)
    total = counts.sum()
    n = np.arange(1, len(counts) + 1, dtype=float)
    last = int(np.flatnonzero(counts)[-1]) + 1 if total > 0 else 0
    if total <= 0 or np.count_nonzero(counts) < 2:
        return None
    n, counts = n[:last], counts[:last]
    f = counts / total
    err = np.sqrt(np.maximum(counts, 1.0)) / total
    p0 = [f[0] * np.e, 1.0]
    try:
        popt, pcov = curve_fit(lambda x, A, b: A * np.exp(-b * x), n, f, p0=p0, sigma=err, absolute_sigma=True,
                               maxfev=10000)
    except (RuntimeError, ValueError):
        return None
    perr = np.sqrt(np.diag(pcov))
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
    from .pbc import minimum_image

    return minimum_image(d, box)


def _mechanisms(hops: Any, groups: list[np.ndarray], box: np.ndarray | None, tol: float) -> dict[str, int]:
    out = {"vacancy_following": 0, "knock_off": 0, "other": 0}
    fr = np.column_stack([hops["from_x_A"], hops["from_y_A"], hops["from_z_A"]])
    to = np.column_stack([hops["to_x_A"], hops["to_y_A"], hops["to_z_A"]])
    st = hops["start_frame"]
    for g in groups:
        if len(g) != 2:
            continue
        a, b = int(g[0]), int(g[1])
        kind = "other"
        for f_, l_ in ((a, b), (b, a)):  # follower f_ arrives where leader l_ was
            if np.linalg.norm(_min_image(to[f_] - fr[l_], box)) <= tol:
                kind = "vacancy_following" if st[l_] <= st[f_] else "knock_off"
                break
        out[kind] += 1
    return out


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
    return CorrelationResult(
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
