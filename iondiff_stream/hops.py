"""Unsupervised hop detection: the k-means method of López, Rurali & Cazorla, done right.

For every mobile ion independently:

1. **Vibrational centres.** k-means of the ion's unwrapped positions for
   K = 2..``k_max``; K is the one with the largest average silhouette
   coefficient, and K = 1 when that best silhouette is below
   ``silhouette_threshold`` (0.7, as in the paper). The silhouette is never
   computed over all T frames (O(T²)): it is estimated from a sample
   stratified by cluster (:func:`iondiff_stream.kmeans.sampled_silhouette`),
   exact when every cluster has at most ``silhouette_samples`` frames.
   k-means runs on positions binned on a 0.2 Å grid, weighted by frame
   counts, so its cost does not grow with the run length. An optional
   pre-screen gives K = 1 at once to ions whose positions are one compact
   cloud (total variance close to the short-time vibrational variance and no
   frame far from the median); it never applies to an ion that visited another
   site even briefly.
2. **Vibrating or in transit.** The ion's vibration amplitude σ is estimated
   robustly from its distances to the nearest centre (the median of d² is
   2.366 σ² for an isotropic 3D Gaussian). A frame is *vibrating* at centre k
   when it lies within ``r_vib = sqrt(chi2_3.ppf(vib_quantile)) · σ`` of it
   (capped at half the smallest centre separation), otherwise *in
   transit*. No fixed Å threshold.
3. **Hops.** Consecutive vibrating periods at different centres make a hop:
   ``start_frame`` is the last frame vibrating at the origin, ``end_frame`` the
   first frame vibrating at the destination. An excursion that returns to the
   same centre is not a hop. Vibrating periods shorter than
   ``min_dwell_frames`` are treated as transit. A hop back to the centre the
   previous hop came from is flagged ``back_hop``. An ion in transit at the end
   of the run, nearest to a centre other than its last one, gives a hop
   flagged ``open`` ending at the last frame.

Everything is deterministic for a given ``seed`` (every ion draws from its own
stream ``SeedSequence(seed, spawn_key=(ion,))``), and ions are independent, so
they run in parallel (``n_jobs``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.special import chdtri  # chi2(3).ppf(q) = chdtri(3, 1 - q); scipy.stats costs ~1 s to import

from .errors import AnalysisError, InvalidCoordinatesError
from .kmeans import compress, kmeans_weighted, sampled_silhouette

logger = logging.getLogger(__name__)

__all__ = [
    "HopParameters",
    "IonCentres",
    "HopTable",
    "HopResults",
    "fit_centres",
    "detect_hops",
    "find_hops",
    "HopAnalysis",
    "HOP_COLUMNS",
]

_CHI2_3_MEDIAN = float(chdtri(3, 0.5))  # 2.366


@dataclass(frozen=True)
class HopParameters:
    """Settings of the hop method (defaults follow the paper where it has one).

    Attributes
    ----------
    k_max : int
        Largest number of centres tried per ion (paper: 10).
    silhouette_threshold : float
        K = 1 when the best average silhouette is below this (paper: 0.7).
    n_init : int
        k-means++ starts per K.
    grid_A : float
        Voxel edge for binning positions before k-means, Å (0: no binning).
    silhouette_samples : int
        Frames sampled per cluster for the silhouette estimate; 0 computes the
        exact silhouette over all frames (O(T²) memory and time: only for
        verification on short runs).
    vib_quantile : float
        A frame vibrates at a centre when its distance is below this quantile
        of the ion's own thermal distance distribution.
    min_dwell_frames : int
        Vibrating periods shorter than this are treated as transit.
    screen : bool
        Use the single-cloud pre-screen (K = 1 without the K sweep).
    settle_frames : int
        An ion that stays this many frames within its vibration amplitude of a
        point away from all centres gets a centre there (0 disables; pure
        silhouette method).
    seed : int
    """

    k_max: int = 10
    silhouette_threshold: float = 0.7
    n_init: int = 2
    grid_A: float = 0.2
    silhouette_samples: int = 50
    vib_quantile: float = 0.99
    min_dwell_frames: int = 1
    screen: bool = True
    settle_frames: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k_max < 2:
            raise ValueError(f"k_max must be >= 2, got {self.k_max}")
        if not 0 < self.vib_quantile < 1:
            raise ValueError(f"vib_quantile must be in (0, 1), got {self.vib_quantile}")
        if self.min_dwell_frames < 1:
            raise ValueError(f"min_dwell_frames must be >= 1, got {self.min_dwell_frames}")
        if self.silhouette_samples == 1 or self.silhouette_samples < 0:
            raise ValueError(f"silhouette_samples must be 0 (exact) or >= 2, got {self.silhouette_samples}")


@dataclass
class IonCentres:
    """Vibrational centres of one ion and its frame-by-frame state.

    Attributes
    ----------
    k : int
        Number of centres.
    centres : ndarray, shape (k, 3)
        Unwrapped positions of the centres, Å.
    silhouette : float
        Best average silhouette (NaN when the pre-screen decided K = 1).
    silhouette_by_k : ndarray, shape (k_max - 1,)
        Average silhouette for K = 2..k_max (NaN where not computed).
    sigma_A : float
        Vibration amplitude (per axis), Å.
    r_vib_A : float
        Vibrating radius around each centre, Å.
    states : ndarray, shape (T,), int16
        Centre index the ion vibrates at in each frame, or -1 in transit.
    screened : bool
        True when the pre-screen set K = 1.
    k_silhouette : int
        K chosen by the silhouette criterion alone (before centres were added
        where the ion settled; see :func:`_add_settled_centres`).
    """

    k: int
    centres: np.ndarray
    silhouette: float
    silhouette_by_k: np.ndarray
    sigma_A: float
    r_vib_A: float
    states: np.ndarray
    screened: bool = False
    k_silhouette: int = 1


HOP_COLUMNS = [
    "atom_index",
    "atom_id",
    "ion",
    "start_frame",
    "end_frame",
    "start_time_ps",
    "end_time_ps",
    "duration_ps",
    "length_A",
    "from_centre",
    "to_centre",
    "from_x_A",
    "from_y_A",
    "from_z_A",
    "to_x_A",
    "to_y_A",
    "to_z_A",
    "open",
    "back_hop",
]


@dataclass
class HopTable:
    """All hops of a run, one entry per hop (column arrays, sorted by start frame).

    Columns: ``atom_index`` (0-based atom index in the trajectory), ``atom_id``
    (the atom's id in the file, e.g. the LAMMPS tag), ``ion``
    (0-based index among the mobile ions), ``start_frame``, ``end_frame``,
    ``start_time_ps``, ``end_time_ps``, ``duration_ps``, ``length_A`` (distance
    between the two centres), ``from_centre``/``to_centre`` (centre indices of
    that ion), ``from_{x,y,z}_A``/``to_{x,y,z}_A`` (unwrapped centre
    positions), ``open`` (still in transit at the end of the run),
    ``back_hop`` (returns to the centre the previous hop of the ion left).
    """

    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(len(self.columns["ion"]))

    def __getitem__(self, key: str) -> np.ndarray:
        return self.columns[key]

    @classmethod
    def empty(cls) -> HopTable:
        return cls.from_rows([])

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]]) -> HopTable:
        cols: dict[str, np.ndarray] = {}
        for name in HOP_COLUMNS:
            vals = [r[name] for r in rows]
            if name in ("open", "back_hop"):
                cols[name] = np.asarray(vals, dtype=bool)
            elif name in ("atom_index", "atom_id", "ion", "start_frame", "end_frame", "from_centre", "to_centre"):
                cols[name] = np.asarray(vals, dtype=np.int64)
            else:
                cols[name] = np.asarray(vals, dtype=np.float64)
        order = np.lexsort((cols["ion"], cols["start_frame"]))
        return cls({k: v[order] for k, v in cols.items()})

    def closed(self) -> HopTable:
        """Only the hops that ended within the run."""
        keep = ~self.columns["open"]
        return HopTable({k: v[keep] for k, v in self.columns.items()})

    def to_csv(self, path: str) -> None:
        """Write one row per hop with a header (units in the column names)."""
        import csv

        with open(path, "w", newline="") as fh:
            wr = csv.writer(fh)
            wr.writerow(HOP_COLUMNS)
            n = len(self)
            for i in range(n):
                row = []
                for name in HOP_COLUMNS:
                    v = self.columns[name][i]
                    if isinstance(v, (np.bool_, bool)):
                        row.append("true" if v else "false")
                    elif isinstance(v, (np.floating, float)):
                        row.append(f"{float(v):.6f}")
                    else:
                        row.append(str(int(v)))
                wr.writerow(row)


@dataclass
class HopResults:
    """Outcome of the method on one run.

    Attributes
    ----------
    ions : list of IonCentres, length n_mobile
    hops : HopTable
    times_ps : ndarray, shape (T,)
    atom_indices : ndarray, shape (n_mobile,)
    parameters : HopParameters
    """

    ions: list[IonCentres]
    hops: HopTable
    times_ps: np.ndarray
    atom_indices: np.ndarray
    parameters: HopParameters
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(len(self.times_ps))

    @property
    def k(self) -> np.ndarray:
        """Number of centres per ion, shape (n_mobile,)."""
        return np.array([ion.k for ion in self.ions])

    def states(self) -> np.ndarray:
        """Frame labels, shape (n_mobile, T), int16 (-1 = in transit)."""
        return np.stack([ion.states for ion in self.ions]) if self.ions else np.zeros((0, self.n_frames), np.int16)

    def centres_padded(self) -> np.ndarray:
        """Centres, shape (n_mobile, 2 * k_max, 3), NaN-padded, Å."""
        out = np.full((len(self.ions), 2 * self.parameters.k_max, 3), np.nan)
        for i, ion in enumerate(self.ions):
            out[i, : ion.k] = ion.centres
        return out


# ---------------------------------------------------------------------------
# one ion


def _single_cloud(x: np.ndarray, window: int = 21, var_ratio: float = 1.5, extent_sigma: float = 7.0) -> bool:
    """True when positions form one compact cloud (certainly K = 1).

    Total variance must be within ``var_ratio`` of the short-time variance
    (deviation from a ``window``-frame running mean) and no frame farther than
    ``extent_sigma`` σ from the median.
    """
    if len(x) < 3 * window:
        return False
    tot = float(((x - x.mean(0)) ** 2).sum(1).mean())
    loc = x - uniform_filter1d(x, size=window, axis=0, mode="nearest")
    loc_var = float((loc**2).sum(1).mean()) / (1.0 - 1.0 / window)
    if loc_var <= 0 or tot > var_ratio * loc_var:
        return False
    sigma = np.sqrt(tot / 3.0)
    ext = float(np.sqrt(((x - np.median(x, axis=0)) ** 2).sum(1).max()))
    return ext <= extent_sigma * sigma


def fit_centres(
    x: np.ndarray, params: HopParameters, rng: np.random.Generator, warm: np.ndarray | None = None
) -> IonCentres:
    """Choose K and the vibrational centres of one ion (see module docstring).

    Parameters
    ----------
    x : ndarray, shape (T, 3)
        Unwrapped positions of one ion, Å.
    params : HopParameters
    rng : numpy Generator
    warm : ndarray, shape (k, 3), optional
        Centres known already (e.g. from the streaming estimator): for K = k an
        extra k-means start from them competes with the k-means++ starts.

    Returns
    -------
    IonCentres
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"positions of one ion must have shape (T, 3), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InvalidCoordinatesError("NaN/inf in ion positions")
    sil = np.full(params.k_max - 1, np.nan)
    T = len(x)
    if params.screen and _single_cloud(x):
        centre = x.mean(0, keepdims=True)
        return _finish(x, 1, centre, float("nan"), sil, params, screened=True)
    pts, w, inv = compress(x, params.grid_A)
    rng_km, rng_sil = rng.spawn(2)  # sampling never changes the k-means starts
    m = params.silhouette_samples if params.silhouette_samples > 0 else T
    fits: dict[int, np.ndarray] = {}
    for k in range(2, params.k_max + 1):
        if k > len(pts) or k > T:
            break
        c, lab_v, inertia = kmeans_weighted(pts, w, k, rng_km, n_init=params.n_init)
        if warm is not None and len(warm) == k:
            cw, lw, iw = kmeans_weighted(pts, w, k, rng_km, init=np.asarray(warm, float))
            if iw < inertia:
                c, lab_v = cw, lw
        labels = lab_v[inv]
        if np.count_nonzero(np.bincount(labels, minlength=k)) < k:
            continue  # duplicate centres: this K is not resolvable
        sil[k - 2] = sampled_silhouette(x, labels, k, m, rng_sil)
        fits[k] = c
    if not fits or np.all(np.isnan(sil)):
        return _finish(x, 1, x.mean(0, keepdims=True), float("nan"), sil, params)
    kbest = int(np.nanargmax(sil)) + 2
    best = float(sil[kbest - 2])
    if best < params.silhouette_threshold:
        return _finish(x, 1, x.mean(0, keepdims=True), best, sil, params)
    return _finish(x, kbest, fits[kbest], best, sil, params)


def _finish(
    x: np.ndarray,
    k: int,
    centres: np.ndarray,
    best: float,
    sil: np.ndarray,
    params: HopParameters,
    screened: bool = False,
) -> IonCentres:
    centres = np.asarray(centres, dtype=np.float64)
    k_sil = k
    d2 = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    nearest = d2.argmin(1)
    dmin2 = d2[np.arange(len(x)), nearest]
    sigma = float(np.sqrt(np.median(dmin2) / _CHI2_3_MEDIAN))
    z = float(np.sqrt(chdtri(3, 1.0 - params.vib_quantile)))
    r_vib = z * sigma
    if params.settle_frames > 0 and sigma > 0:
        centres, d2 = _add_settled_centres(x, centres, d2, sigma, r_vib, params)
        k = len(centres)
        nearest = d2.argmin(1)
        dmin2 = d2[np.arange(len(x)), nearest]
    if k > 1:
        sep = np.sqrt(((centres[:, None, :] - centres[None, :, :]) ** 2).sum(-1))
        sep[np.diag_indices(k)] = np.inf
        r_vib = min(r_vib, 0.5 * float(sep.min()))
    states = np.where(dmin2 <= r_vib * r_vib, nearest, -1).astype(np.int16)
    return IonCentres(k, centres, best, sil, sigma, r_vib, states, screened, k_sil)


def _add_settled_centres(
    x: np.ndarray, centres: np.ndarray, d2: np.ndarray, sigma: float, r_vib: float, params: HopParameters
) -> tuple[np.ndarray, np.ndarray]:
    """Add a centre wherever the ion settled, away from every centre, for a while.

    The silhouette ignores short residences (a 30-frame visit barely moves the
    average over thousands of frames), so the K it picks can merge a briefly
    visited site into a neighbour. A *settled* frame is the centre of a window
    of ``settle_frames`` frames that are all farther than ``r_vib`` from every
    centre (for a thermal cloud that has probability ~0.01**settle_frames),
    whose positions stay within the ion's own vibration (rms about the window
    mean ≤ 1.3·√3·σ) and whose mean is at least ``2 r_vib`` from every centre. Each round adds one centre at the mean of
    the longest contiguous stretch of settled frames; rounds stop when none is
    left (at most ``2 * k_max`` centres).
    """
    w = int(params.settle_frames)
    if len(x) < w:
        return centres, d2
    m = uniform_filter1d(x, size=w, axis=0, mode="nearest")
    m2 = uniform_filter1d((x * x).sum(1), size=w, mode="nearest")
    rms2 = np.maximum(m2 - (m * m).sum(1), 0.0) * w / max(w - 1, 1)
    still = rms2 <= (1.3 * np.sqrt(3.0) * sigma) ** 2
    half = w // 2
    valid = np.zeros(len(x), dtype=bool)
    valid[half : len(x) - (w - 1 - half)] = True
    still &= valid
    r2 = r_vib * r_vib
    dmin2 = d2.min(1)
    # every frame of the window outside r_vib of all centres
    away = uniform_filter1d((dmin2 > r2).astype(np.float64), size=w, mode="nearest") > 1.0 - 0.5 / w
    still &= away
    dm2 = ((m[:, None, :] - centres[None, :, :]) ** 2).sum(-1).min(1)
    while len(centres) < 2 * params.k_max:
        cand = still & (dm2 > 4.0 * r2)
        if not cand.any():
            break
        # longest contiguous stretch of settled frames
        edges = np.diff(np.concatenate([[0], cand.astype(np.int8), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        j = int(np.argmax(ends - starts))
        new = x[starts[j] : ends[j]].mean(0)
        centres = np.vstack([centres, new])
        d2 = np.column_stack([d2, ((x - new) ** 2).sum(1)])
        dm2 = np.minimum(dm2, ((m - new) ** 2).sum(1))
        dm2[starts[j] : ends[j]] = 0.0  # never pick the same stretch twice
    return centres, d2


def _runs(states: np.ndarray, min_dwell: int) -> list[tuple[int, int, int]]:
    """Vibrating periods as (centre, first_frame, last_frame), same-centre periods merged."""
    s = np.asarray(states)
    if len(s) == 0:
        return []
    change = np.flatnonzero(np.diff(s)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change - 1, [len(s) - 1]])
    runs: list[tuple[int, int, int]] = []
    for a, b in zip(starts, ends):
        c = int(s[a])
        if c < 0 or (b - a + 1) < min_dwell:
            continue
        if runs and runs[-1][0] == c:
            runs[-1] = (c, runs[-1][1], int(b))
        else:
            runs.append((c, int(a), int(b)))
    return runs


def detect_hops(
    ion: IonCentres, x: np.ndarray, times_ps: np.ndarray, ion_index: int, atom_index: int, min_dwell: int = 1,
    atom_id: int | None = None,
) -> list[dict[str, Any]]:
    """Hops of one ion from its frame states (see module docstring).

    Returns
    -------
    list of dict
        One dict per hop with the keys of :data:`HOP_COLUMNS`.
    """
    if ion.k < 2:
        return []
    runs = _runs(ion.states, min_dwell)
    rows: list[dict[str, Any]] = []
    T = len(ion.states)

    def row(c_from: int, c_to: int, s: int, e: int, is_open: bool) -> dict[str, Any]:
        a, b = ion.centres[c_from], ion.centres[c_to]
        back = bool(rows) and rows[-1]["from_centre"] == c_to
        return {
            "atom_index": atom_index,
            "atom_id": atom_index + 1 if atom_id is None else atom_id,
            "ion": ion_index,
            "start_frame": s,
            "end_frame": e,
            "start_time_ps": float(times_ps[s]),
            "end_time_ps": float(times_ps[e]),
            "duration_ps": float(times_ps[e] - times_ps[s]),
            "length_A": float(np.linalg.norm(b - a)),
            "from_centre": c_from,
            "to_centre": c_to,
            "from_x_A": float(a[0]),
            "from_y_A": float(a[1]),
            "from_z_A": float(a[2]),
            "to_x_A": float(b[0]),
            "to_y_A": float(b[1]),
            "to_z_A": float(b[2]),
            "open": is_open,
            "back_hop": back,
        }

    for (c0, _, l0), (c1, f1, _) in zip(runs, runs[1:]):
        rows.append(row(c0, c1, l0, f1, False))
    if runs and runs[-1][2] < T - 1:
        c_last = runs[-1][0]
        d2 = ((ion.centres - x[-1]) ** 2).sum(1)
        target = int(d2.argmin())
        if target != c_last:
            rows.append(row(c_last, target, runs[-1][2], T - 1, True))
    return rows


def _ion_seed(seed: int, ion: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(ion,)))


def _fit_block(
    positions: Any,
    i0: int,
    i1: int,
    times_ps: np.ndarray,
    params: HopParameters,
    atom_indices: np.ndarray,
    atom_ids: np.ndarray | None,
    warm: Sequence[Any] | None = None,
) -> tuple[list[IonCentres], list[dict[str, Any]]]:
    """Centres and hops of the ions ``i0:i1``, reading only that ion block of ``positions`` (T, n, 3)."""
    x = np.asarray(positions[:, i0:i1], dtype=np.float64)
    ok = np.isfinite(x).all(axis=(0, 2))
    if not ok.all():
        raise InvalidCoordinatesError(f"NaN/inf positions for mobile ions {(i0 + np.flatnonzero(~ok))[:10].tolist()}")
    ions: list[IonCentres] = []
    rows: list[dict[str, Any]] = []
    for j, i in enumerate(range(i0, i1)):
        xi = np.ascontiguousarray(x[:, j])
        ion = fit_centres(xi, params, _ion_seed(params.seed, int(i)), None if warm is None else warm[i])
        ions.append(ion)
        rows.extend(detect_hops(ion, xi, times_ps, i, int(atom_indices[i]), params.min_dwell_frames,
                                None if atom_ids is None else int(atom_ids[i])))
    return ions, rows


def find_hops(
    positions: Any,
    times_ps: np.ndarray,
    params: HopParameters | None = None,
    atom_indices: np.ndarray | None = None,
    n_jobs: int = 1,
    progress: bool = False,
    atom_ids: np.ndarray | None = None,
    warm_centres: Sequence[np.ndarray | None] | None = None,
    client: Any = None,
    ion_block: int | None = None,
) -> HopResults:
    """Run the hop method on unwrapped positions, one ion block at a time.

    Parameters
    ----------
    positions : array-like, shape (T, n_mobile, 3)
        Unwrapped positions, Å (framework drift already removed if wanted):
        an ndarray or any array-like with ``positions[:, i0:i1]`` (a Zarr
        array from :func:`iondiff_stream.io.collect_positions` out of core).
    times_ps : ndarray, shape (T,)
    params : HopParameters, optional
    atom_indices : ndarray, shape (n_mobile,), optional
        Trajectory indices of the ions (default 0..n_mobile-1).
    n_jobs : int
        Dask worker processes (a ``LocalCluster``) for the ion blocks; 1 runs in-process.
    progress : bool
        Show a progress bar (rich) when no run-wide bar is active.
    atom_ids : ndarray, shape (n_mobile,), optional
        Ids of the atoms in the file (default ``atom_indices + 1``).
    warm_centres : sequence of ndarray (k_i, 3) or None, optional
        Per-ion centres to warm-start k-means from (streaming estimator).
    client : distributed.Client or str, optional
        A Dask client or scheduler address: one task per ion block.
    ion_block : int, optional
        Ions per block (default: the array's chunk width, else at most 16).

    Returns
    -------
    HopResults
    """
    from .io.positions_store import ion_block_of, ion_blocks

    params = params or HopParameters()
    if isinstance(positions, (list, tuple)) or not hasattr(positions, "shape"):
        positions = np.asarray(positions, dtype=np.float64)
    if len(positions.shape) != 3 or positions.shape[2] != 3:
        raise ValueError(f"positions must have shape (T, n_mobile, 3), got {tuple(positions.shape)}")
    T, n, _ = positions.shape
    if n == 0:
        raise AnalysisError("no mobile ions")
    if T < 2:
        raise AnalysisError(f"need at least 2 frames, got {T}")
    times_ps = np.asarray(times_ps, dtype=np.float64)
    if times_ps.shape != (T,):
        raise ValueError(f"times_ps must have shape ({T},), got {times_ps.shape}")
    atom_indices = np.arange(n) if atom_indices is None else np.asarray(atom_indices)
    block = ion_block or ion_block_of(positions, default=16)
    blocks = ion_blocks(n, block)
    args = (times_ps, params, atom_indices, atom_ids, warm_centres)
    ions: list[IonCentres] = []
    rows: list[dict[str, Any]] = []
    if n_jobs == 1 and client is None:
        from .progress import track

        for i0, i1 in track(blocks, "hops", enabled=progress):
            part, r = _fit_block(positions, i0, i1, *args)
            ions.extend(part)
            rows.extend(r)
    else:
        from .parallel import map_ion_blocks

        for part, r in map_ion_blocks(_fit_block, positions, blocks, args, client=client, n_workers=n_jobs,
                                      stage_name="hops", progress=progress):
            ions.extend(part)
            rows.extend(r)
    table = HopTable.from_rows(rows)
    logger.info(
        "%d ions, %d frames: %d hops (%d open), %d ions with K>1",
        n,
        T,
        len(table),
        int(table["open"].sum()),
        int(sum(ion.k > 1 for ion in ions)),
    )
    return HopResults(ions, table, times_ps, atom_indices, params)


class HopAnalysis:
    """MDAnalysis-style front end: read a Universe, run the method, keep ``results``.

    Parameters
    ----------
    mobile : AtomGroup
        The mobile ions.
    params : HopParameters, optional
    remove_drift : bool
        Subtract framework drift before clustering.
    timestep_ps, md_timestep_ps : float, optional
        See :class:`iondiff_stream.io.UnwrappedPositions`.
    n_jobs : int

    Attributes
    ----------
    results.data : TrajectoryData
        Unwrapped positions and times.
    results.hops : HopResults
        Centres, states and the hop table.

    Notes
    -----
    The frame loop is :class:`iondiff_stream.io.UnwrappedPositions` (an
    :class:`MDAnalysis.analysis.base.AnalysisBase`); the per-ion method then
    needs every frame of an ion at once, so it runs in ``run`` after the loop.
    """

    def __init__(
        self,
        mobile: Any,
        params: HopParameters | None = None,
        remove_drift: bool = True,
        timestep_ps: float | None = None,
        md_timestep_ps: float | None = None,
        n_jobs: int = 1,
    ) -> None:
        self.mobile = mobile
        self.params = params
        self.remove_drift = remove_drift
        self.timestep_ps = timestep_ps
        self.md_timestep_ps = md_timestep_ps
        self.n_jobs = n_jobs

    def run(self, start: int | None = None, stop: int | None = None, step: int | None = None, verbose: bool = False) -> HopAnalysis:
        from MDAnalysis.analysis.base import Results

        from .io import collect_positions

        data = collect_positions(
            self.mobile.universe,
            self.mobile,
            remove_drift=self.remove_drift,
            timestep_ps=self.timestep_ps,
            md_timestep_ps=self.md_timestep_ps,
            start=start,
            stop=stop,
            step=step,
            verbose=verbose,
        )
        self.results = Results()
        self.results.data = data
        self.results.hops = find_hops(
            data.positions, data.times_ps, self.params, data.atom_indices, n_jobs=self.n_jobs, progress=verbose
        )  # positions: (T, n_mobile, 3), read per ion block
        return self


def parameters_dict(params: HopParameters) -> dict[str, Any]:
    """Parameters as a plain dict (for JSON / Zarr attributes)."""
    return asdict(params)
