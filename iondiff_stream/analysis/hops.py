"""Hop detection: which ion hops, from which site to which, when.

Two methods (``HopParameters(method=...)``, CLI ``--method``):

``"sites"`` (default): sites shared by all ions, core-to-core transitions
    1. **Sites** are learnt once for the run from the pooled, short-time-averaged
       positions of all mobile ions (periodic density peaks, see
       :mod:`iondiff_stream.model.sites`); an ion may visit any number of them.
    2. **Vibration amplitude** σ of every ion from *short-time* fluctuations only:
       the deviation of its positions from their running mean over a window of
       a few to a few tens of frames (robust median of d², 2.366 σ² for an
       isotropic 3D Gaussian), never from the spread of the whole path. The
       window is where σ(window) plateaus (:func:`plateau_window`), so it does
       not depend on the frame spacing.
    3. **Cores.** A frame is in the core of a site when within
       ``r_core = sqrt(chi2_3.ppf(vib_quantile)) · σ`` of it, capped at
       ``site.core_cap`` (< 1/2) of the distance from that site to its nearest
       other site, so cores never overlap. Elsewhere the ion is in transit.
    4. **Hops** are core-to-core transitions: consecutive core periods (at least
       ``min_dwell_frames`` long) at *different* sites. ``start_frame`` is the last
       frame in the origin core, ``end_frame`` the first in the destination core.
       Rattling, recrossings and excursions that return to the same core are not
       hops. ``back_hop`` marks a return to the site the ion's previous hop left;
       an ion in transit at the end of the run, nearest to another site, gives a
       hop flagged ``open``.

    Positions are read in ion blocks ``positions[i0:i1]`` (or ``positions[:, i0:i1]``
    of a frame-major (T, N, 3) array such as a Zarr array) in two passes (site
    density and σ; cores and hops), so memory is bounded by a block and the grid.

``"silhouette"``: the published per-ion procedure (López, Rurali & Cazorla)
    For every mobile ion independently: k-means of its unwrapped positions for
    K = 2..``k_max``; K is the one with the largest average silhouette and K = 1
    when that is below ``silhouette_threshold`` (0.7, as in the paper), estimated
    from a cluster-stratified sample (:func:`iondiff_stream.model.kmeans.sampled_silhouette`)
    on positions binned on a ``grid_A`` grid; an optional single-cloud pre-screen.
    σ from the distances to the nearest centre; frames within ``r_vib`` of a
    centre vibrate there; hops between vibrating periods at different centres,
    with the refinement of :func:`_add_settled_centres` (``settle_frames``).
    Known failures on real MD (README): for a diffusing K = 1 ion σ comes from the
    spread of its whole path (1.3-1.5 Å), so its hops are never seen; the most
    mobile ions are the ones reported without hops (hop frequency falling with T).

Everything is deterministic for a given ``seed``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.special import chdtri  # chi2(3).ppf(q) = chdtri(3, 1 - q); scipy.stats costs ~1 s to import

from iondiff_stream.core.errors import AnalysisError, InvalidCoordinatesError
from iondiff_stream.model.kmeans import compress, kmeans_weighted, sampled_silhouette
from iondiff_stream.model.framework import FrameworkFrames, choose_site_model, given_sites_check
from iondiff_stream.model.rule import HopEvents, HopRule
from iondiff_stream.model.sites import SiteDensity, SiteModel, SiteParameters, short_time_average

logger = logging.getLogger(__name__)

__all__ = [
    "HopParameters",
    "IonCentres",
    "HopTable",
    "HopResults",
    "fit_centres",
    "detect_hops",
    "find_hops",
    "HOP_COLUMNS",
    "learn_sites",
    "ResidenceTimes",
    "IonSubset",
    "combine_hop_results",
    "JumpCorrelation",
    "jump_correlation",
    "committed_site_changes",
    "residence_times",
    "short_time_sigma",
    "residence_frames",
    "parameters_dict",
]

_CHI2_3_MEDIAN = float(chdtri(3, 0.5))  # 2.366


@dataclass(frozen=True)
class HopParameters:
    """Settings of the hop method.

    Attributes
    ----------
    method : {"sites", "silhouette"}
        ``"sites"``: shared sites, core-to-core transitions (default).
        ``"silhouette"``: the published per-ion k-means + silhouette procedure.
    site : SiteParameters
        Site learning (``"sites"`` method), see :class:`iondiff_stream.model.sites.SiteParameters`.
    vib_quantile : float
        Core radius / vibrating radius: this quantile of the ion's own thermal
        distance distribution (both methods).
    min_dwell_frames : int
        Core (vibrating) periods shorter than this are treated as transit.
    min_residence_ps : float
        Site visits shorter than this (and than 2 frames) are passages, not
        residences (``"sites"``; see :func:`transitions`), ps; 0 disables.
    k_max : int
        Largest number of centres tried per ion (silhouette; paper: 10).
    silhouette_threshold : float
        K = 1 when the best average silhouette is below this (silhouette; paper: 0.7).
    n_init : int
        k-means++ starts per K (silhouette).
    grid_A : float
        Voxel edge for binning positions before k-means, Å (silhouette; 0: no binning).
    silhouette_samples : int
        Frames sampled per cluster for the silhouette estimate; 0 = exact (O(T²)).
    screen : bool
        Single-cloud pre-screen (silhouette).
    settle_frames : int
        Settled-centre refinement window (silhouette; 0 disables: pure published method).
    seed : int
    """

    method: str = "sites"
    site: SiteParameters = field(default_factory=SiteParameters)
    vib_quantile: float = 0.99
    min_dwell_frames: int = 1
    min_residence_ps: float = 0.1
    k_max: int = 10
    silhouette_threshold: float = 0.7
    n_init: int = 2
    grid_A: float = 0.2
    silhouette_samples: int = 50
    screen: bool = True
    settle_frames: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("sites", "silhouette"):
            raise ValueError(f"method must be 'sites' or 'silhouette', got {self.method!r}")
        if isinstance(self.site, dict):  # from JSON / Zarr attributes
            object.__setattr__(self, "site", SiteParameters(**self.site))
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


_INT_COLUMNS = ("atom_index", "atom_id", "ion", "start_frame", "end_frame", "from_centre", "to_centre")


@dataclass
class HopTable:
    """All hops of a run, one entry per hop (column arrays, sorted by start frame).

    Columns: ``atom_index`` (0-based atom index in the trajectory), ``atom_id``
    (the atom's id in the file, e.g. the LAMMPS tag), ``ion``
    (0-based index among the mobile ions), ``start_frame`` (last frame in the
    origin's core), ``end_frame`` (first frame in the destination's core),
    ``start_time_ps``, ``end_time_ps``, ``duration_ps``, ``length_A`` (distance
    between the two sites/centres), ``from_centre``/``to_centre`` (shared site
    indices for the ``"sites"`` method, per-ion centre indices for
    ``"silhouette"``), ``from_{x,y,z}_A``/``to_{x,y,z}_A`` (unwrapped site
    positions: the image next to the ion), ``open`` (still in transit at the end
    of the run), ``back_hop`` (returns to the site the previous hop of the ion left).
    """

    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(len(self.columns["ion"]))

    def __getitem__(self, key: str | Sequence[str]) -> Any:
        """One column (ndarray) by name, or several as a :class:`pandas.DataFrame` (``table[["ion", "length_A"]]``)."""
        return self.columns[key] if isinstance(key, str) else self.to_pandas(key)

    @classmethod
    def empty(cls) -> HopTable:
        return cls.from_rows([])

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]]) -> HopTable:
        """Table from one dict per hop (keys of :data:`HOP_COLUMNS`)."""
        return cls.from_columns({name: [r[name] for r in rows] for name in HOP_COLUMNS})

    @classmethod
    def from_columns(cls, columns: dict[str, Any]) -> HopTable:
        """Table from column arrays (keys of :data:`HOP_COLUMNS`), sorted by start frame then ion."""
        cols: dict[str, np.ndarray] = {}
        for name in HOP_COLUMNS:
            vals = columns[name]
            if name in ("open", "back_hop"):
                cols[name] = np.asarray(vals, dtype=bool)
            elif name in _INT_COLUMNS:
                cols[name] = np.asarray(vals, dtype=np.int64)
            else:
                cols[name] = np.asarray(vals, dtype=np.float64)
        order = np.lexsort((cols["ion"], cols["start_frame"]))
        return cls({k: v[order] for k, v in cols.items()})

    @classmethod
    def concatenate(cls, tables: Sequence[HopTable]) -> HopTable:
        """One table from several (e.g. ion blocks), re-sorted."""
        if not tables:
            return cls.empty()
        return cls.from_columns({k: np.concatenate([t.columns[k] for t in tables]) for k in HOP_COLUMNS})

    def per_ion(self, n_ions: int, closed_only: bool = True) -> np.ndarray:
        """Hops of every mobile ion, shape (n_ions,)."""
        tab = self.closed() if closed_only else self
        return np.bincount(tab.columns["ion"], minlength=n_ions)[:n_ions]

    def closed(self) -> HopTable:
        """Only the hops that ended within the run."""
        keep = ~self.columns["open"]
        return HopTable({k: v[keep] for k, v in self.columns.items()})

    def to_csv(self, path: str) -> None:
        """Write one row per hop with a header (units in the column names)."""
        import csv

        names = HOP_COLUMNS + [k for k in self.columns if k not in HOP_COLUMNS]  # joined later (e.g. max_devi_f_eV_A)
        with open(path, "w", newline="") as fh:
            wr = csv.writer(fh)
            wr.writerow(names)
            n = len(self)
            for i in range(n):
                row = []
                for name in names:
                    v = self.columns[name][i]
                    if isinstance(v, (np.bool_, bool)):
                        row.append("true" if v else "false")
                    elif isinstance(v, (np.floating, float)):
                        row.append(f"{float(v):.6f}")
                    else:
                        row.append(str(int(v)))
                wr.writerow(row)

    # -- pandas and notebook interop (formatting in iondiff_stream.core.display) --
    def to_pandas(self, columns: Sequence[str] | None = None) -> Any:
        """The hops as a :class:`pandas.DataFrame`, one row per hop, units in the column names.

        Parameters
        ----------
        columns : sequence of str, optional
            Columns to keep, in this order (default: all of :data:`HOP_COLUMNS`).
        """
        from iondiff_stream.core.display import hop_table_frame

        return hop_table_frame(self.columns, columns)

    def __repr__(self) -> str:
        from iondiff_stream.core.display import hop_table_rows, summary_text

        return summary_text("HopTable", hop_table_rows(self), "table.to_pandas() for a DataFrame")

    def _repr_html_(self) -> str:
        from iondiff_stream.core.display import hop_table_rows, summary_html

        return summary_html("HopTable", hop_table_rows(self), "table.to_pandas() for a DataFrame")


@dataclass
class HopResults:
    """Outcome of the hop method on one run (attributes with units, like MDAnalysis ``Results``).

    Attributes
    ----------
    hops : HopTable
        One entry per hop.
    times_ps : ndarray, shape (T,)
        Frame times, ps.
    atom_indices : ndarray, shape (n_mobile,)
        0-based trajectory indices of the mobile ions.
    parameters : HopParameters
    states : ndarray, shape (n_mobile, T), int32
        Core each ion is in at each frame, -1 in transit: a site index of
        :attr:`sites` (``"sites"``) or a per-ion centre index (``"silhouette"``).
    sigma_A : ndarray, shape (n_mobile,)
        Vibration amplitude per axis of every ion, Å.
    r_core_A : ndarray, shape (n_mobile,)
        Core (vibrating) radius of every ion before the per-site cap, Å.
    n_centres : ndarray, shape (n_mobile,)
        Distinct sites visited (``"sites"``) or K (``"silhouette"``).
    sites : SiteModel or None
        The shared sites (``"sites"`` method).
    ions : list of IonCentres
        Per-ion centres (``"silhouette"`` method; empty otherwise).
    warnings : list of str
        Problems found on the way (e.g. frames too far apart to resolve hops).
    """

    hops: HopTable
    times_ps: np.ndarray
    atom_indices: np.ndarray
    parameters: HopParameters
    states: np.ndarray
    sigma_A: np.ndarray
    r_core_A: np.ndarray
    n_centres: np.ndarray
    sites: SiteModel | None = None
    ions: list[IonCentres] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(len(self.times_ps))

    @property
    def n_mobile(self) -> int:
        return int(len(self.atom_indices))

    @property
    def k(self) -> np.ndarray:
        """Distinct sites visited / centres per ion, shape (n_mobile,) (alias of :attr:`n_centres`)."""
        return np.asarray(self.n_centres)

    @property
    def n_sites(self) -> int | None:
        """Number of shared sites (None for the silhouette method)."""
        return None if self.sites is None else self.sites.n_sites

    @property
    def hops_per_ion(self) -> np.ndarray:
        """Closed hops of every mobile ion, shape (n_mobile,)."""
        return self.hops.per_ion(self.n_mobile)

    def d_hops_A2_ps(self) -> float:
        """Diffusion coefficient carried by the hops, ``Σ length² / (6 N t_run)``, Å²/ps (closed hops)."""
        t = float(self.times_ps[-1] - self.times_ps[0]) if self.n_frames > 1 else 0.0
        if t <= 0 or self.n_mobile == 0:
            return float("nan")
        c = self.hops.closed()
        return float((c["length_A"] ** 2).sum()) / (6.0 * self.n_mobile * t)

    def centres_padded(self) -> np.ndarray:
        """Per-ion centres (silhouette), shape (n_mobile, 2 * k_max, 3), NaN-padded, Å; empty for ``"sites"``."""
        out = np.full((len(self.ions), 2 * self.parameters.k_max, 3), np.nan)
        for i, ion in enumerate(self.ions):
            out[i, : ion.k] = ion.centres
        return out

    def __repr__(self) -> str:
        from iondiff_stream.core.display import hop_results_rows, summary_text

        return summary_text("HopResults", hop_results_rows(self), ".hops: the HopTable; .states, .sites, .sigma_A")

    def _repr_html_(self) -> str:
        from iondiff_stream.core.display import hop_results_rows, summary_html

        return summary_html("HopResults", hop_results_rows(self), ".hops: the HopTable; .states, .sites, .sigma_A")


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
    positions: Any, ions: Sequence[int], params: HopParameters, warm: Sequence[Any] | None, layout: str
) -> list[IonCentres]:
    x = _read_block(positions, int(ions[0]), int(ions[-1]) + 1, layout)
    return [
        fit_centres(x[:, j], params, _ion_seed(params.seed, int(i)), None if warm is None else warm[i])
        for j, i in enumerate(ions)
    ]


def _fit_block_task(
    positions: Any, i0: int, i1: int, params: HopParameters, warm: Sequence[Any] | None, layout: str
) -> list[IonCentres]:
    """One Dask task of the silhouette method: centres of ions ``i0:i1``."""
    return _fit_block(positions, list(range(i0, i1)), params, warm, layout)


# ---------------------------------------------------------------------------
# positions in ion blocks (in memory or a Zarr array)


def _shape(positions: Any, layout: str) -> tuple[int, int]:
    """(n_mobile, T) of an ion-major (n, T, 3) or frame-major (T, n, 3) array."""
    sh = tuple(getattr(positions, "shape", ()))
    if len(sh) != 3 or sh[2] != 3:
        want = "(n_mobile, T, 3)" if layout == "ion" else "(T, n_mobile, 3)"
        raise ValueError(f"positions must have shape {want}, got {sh}")
    return (int(sh[0]), int(sh[1])) if layout == "ion" else (int(sh[1]), int(sh[0]))


def _read_block(positions: Any, i0: int, i1: int, layout: str) -> np.ndarray:
    """Positions of ions i0..i1-1, shape (T, i1 - i0, 3), float64 (one read of a Zarr array)."""
    if layout == "ion":
        x = np.asarray(positions[i0:i1], dtype=np.float64).transpose(1, 0, 2)
    else:
        x = np.asarray(positions[:, i0:i1], dtype=np.float64)
    if not np.all(np.isfinite(x)):
        bad = i0 + np.flatnonzero(~np.isfinite(x).all(axis=(0, 2)))
        raise InvalidCoordinatesError(f"NaN/inf positions for mobile ions {bad[:10].tolist()}")
    return x


def _block_size(T: int, budget_bytes: int = 256 * 2**20, ion_block: int | None = None) -> int:
    """Ions per block so that a few float64 copies of a block stay within ``budget_bytes``.

    With ``ion_block`` (the chunk width of an out-of-core store) blocks are whole chunks.
    """
    b = int(max(1, min(4096, budget_bytes // max(1, 8 * 3 * 6 * T))))
    if ion_block:
        b = max(ion_block, (b // ion_block) * ion_block)
    return b


# ---------------------------------------------------------------------------
# the "sites" method


def _frames(ps: float, dt_ps: float) -> int:
    return max(1, int(round(ps / dt_ps))) if dt_ps > 0 else 1


def short_time_sigma(x: np.ndarray, window: int) -> np.ndarray:
    """Vibration amplitude per axis from short-time fluctuations only.

    Parameters
    ----------
    x : ndarray, shape (T, n, 3)
        Unwrapped positions, Å.
    window : int
        Running-mean window, frames (≥ 3).

    Returns
    -------
    ndarray, shape (n,)
        σ, Å: ``sqrt(median_t |x - <x>_window|² / chi2_3.median · w / (w - 1))``.
        The median ignores the few frames of hops inside a window.
    """
    w = int(min(max(3, window), len(x)))
    dev = x - short_time_average(x, w)
    d2 = np.einsum("tnj,tnj->tn", dev, dev)
    return np.sqrt(np.median(d2, axis=0) / _CHI2_3_MEDIAN * w / max(w - 1, 1))


def sigma_windows(n_frames: int) -> np.ndarray:
    """Ladder of running-mean windows (frames) tried for the vibration amplitude: 3, 5, 9, ... ≤ min(T/2, 257)."""
    ws = [3]
    while 2 * ws[-1] - 1 <= min(max(3, n_frames // 2), 257):
        ws.append(2 * ws[-1] - 1)
    return np.array(ws)


def _sigma_sample(x: np.ndarray, max_frames: int = 8000, n_chunks: int = 4) -> np.ndarray:
    """Frames used for σ: all, or ``n_chunks`` evenly spaced contiguous chunks (σ is a local property)."""
    T = len(x)
    if T <= max_frames:
        return x
    c = max_frames // n_chunks
    starts = np.linspace(0, T - c, n_chunks).astype(int)
    return np.concatenate([x[s : s + c] for s in starts], axis=0)


def plateau_window(sigma_by_window: np.ndarray, windows: np.ndarray) -> int:
    """Index of the window where the vibration amplitude plateaus.

    σ(w) (median over ions) rises steeply while the window is shorter than the
    vibrational correlation time, flattens on the thermal amplitude, and rises
    again slowly once hops and confined diffusion enter the window. The plateau is
    the start of the ladder step with the smallest log-slope d ln σ / d ln w, so the
    choice does not depend on the frame spacing.
    """
    med = np.median(sigma_by_window, axis=0)
    if len(windows) < 2 or np.any(med <= 0):
        return int(len(windows) - 1) if np.all(med > 0) else int(np.argmax(med > 0))
    slope = np.diff(np.log(med)) / np.diff(np.log(windows))
    return int(np.argmin(slope))


def residence_frames(min_residence_ps: float, dt_ps: float) -> int:
    """Shortest residence in frames: ``min_residence_ps`` rounded up, and at least 2 frames (a single
    stored frame in a core between two others cannot tell a residence from a passage)."""
    if min_residence_ps <= 0:
        return 1
    return max(2, int(np.ceil(min_residence_ps / dt_ps - 1e-9))) if dt_ps > 0 else 2


def _sites_block_task(
    positions: Any, i0: int, i1: int, layout: str, model: SiteModel, r_core: np.ndarray, times_ps: np.ndarray,
    atom_indices: np.ndarray, atom_ids: np.ndarray, min_dwell: int, min_residence: int,
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """One task of the sites method: read ions ``i0:i1`` (one ion block) and find their hops."""
    x = _read_block(positions, i0, i1, layout)
    return _site_hops_block(x, i0, model, r_core[i0:i1], times_ps, atom_indices, atom_ids, min_dwell, min_residence)


def _chunk_ions(positions: Any, layout: str) -> int | None:
    """Ions per chunk of a chunked (Zarr) array, None for in-memory arrays."""
    chunks = getattr(positions, "chunks", None)
    if chunks is None or isinstance(positions, np.ndarray) or len(chunks) != 3:
        return None
    return int(chunks[1] if layout == "frame" else chunks[0])


def _site_hops_block(
    x: np.ndarray, i0: int, model: SiteModel, r_core: np.ndarray, times_ps: np.ndarray, atom_indices: np.ndarray,
    atom_ids: np.ndarray, min_dwell: int, min_residence: int = 1,
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """States and hops of one ion block (x: (T, nb, 3)): the one hop rule (:class:`HopRule`) fed every frame."""
    T, nb, _ = x.shape
    flat = x.reshape(-1, 3)
    r = np.broadcast_to(r_core[None, :], (T, nb)).reshape(-1)
    states = model.assign(flat, r).reshape(T, nb)
    if min_dwell > 1:
        states = _drop_short_core_runs(states, min_dwell)
    rule = HopRule(nb, min_residence)
    closed = rule.update(states)
    nearest_last, _ = model.nearest(x[T - 1])
    ev = HopEvents.concatenate([closed, rule.finish(nearest_last)]).sorted()
    n_sites = np.zeros(nb, dtype=np.int64)
    for j in range(nb):
        st = states[:, j]
        n_sites[j] = len(np.unique(st[st >= 0]))
    a = model.unwrapped_site(x[ev.start_frame, ev.ion], ev.from_site)
    b = model.unwrapped_site(x[ev.end_frame, ev.ion], ev.to_site)
    return states.T.astype(np.int32), _hop_columns(ev, i0, a, b, times_ps, atom_indices, atom_ids), n_sites


def _hop_columns(ev: HopEvents, i0: int, a: np.ndarray, b: np.ndarray, times_ps: np.ndarray,
                 atom_indices: np.ndarray, atom_ids: np.ndarray) -> dict[str, np.ndarray]:
    """The :data:`HOP_COLUMNS` of hops ``ev`` (ions numbered from ``i0``), with the unwrapped site positions
    ``a`` (origin, at the start frame) and ``b`` (destination, at the end frame), shape (n_hops, 3), Å."""
    j, fr, to, s0, e0 = ev.ion, ev.from_site, ev.to_site, ev.start_frame, ev.end_frame
    back = np.zeros(len(fr), dtype=bool)
    if len(fr) > 1:
        back[1:] = (j[1:] == j[:-1]) & (to[1:] == fr[:-1])
    i = i0 + j
    out: dict[str, np.ndarray] = {
        "atom_index": np.asarray(atom_indices)[i], "atom_id": np.asarray(atom_ids)[i], "ion": i,
        "start_frame": s0, "end_frame": e0, "start_time_ps": times_ps[s0], "end_time_ps": times_ps[e0],
        "duration_ps": times_ps[e0] - times_ps[s0], "length_A": np.linalg.norm(b - a, axis=1),
        "from_centre": fr, "to_centre": to, "open": ev.open, "back_hop": back,
    }
    for k, ax in enumerate("xyz"):
        out[f"from_{ax}_A"] = a[:, k]
        out[f"to_{ax}_A"] = b[:, k]
    return {k: out[k] for k in HOP_COLUMNS}


def _drop_short_core_runs(states: np.ndarray, min_dwell: int) -> np.ndarray:
    """Core periods shorter than ``min_dwell`` frames become transit (states (T, n), a copy)."""
    s = np.array(states)
    for j in range(s.shape[1]):
        c = s[:, j]
        ch = np.flatnonzero(c[1:] != c[:-1]) + 1
        st = np.concatenate([[0], ch])
        en = np.concatenate([ch, [len(c)]])
        for a, b in zip(st, en):
            if c[a] >= 0 and b - a < min_dwell:
                c[a:b] = -1
    return s


def learn_sites(
    positions: Any, times_ps: np.ndarray, box: np.ndarray | None, params: HopParameters | None = None,
    layout: str = "ion", progress: bool = False,
) -> tuple[SiteModel, np.ndarray]:
    """Shared sites of a run and every ion's short-time vibration amplitude (first pass).

    Parameters
    ----------
    positions : array_like, shape (n_mobile, T, 3) (``layout="ion"``) or (T, n_mobile, 3) (``"frame"``)
        Unwrapped positions, Å; an ndarray or a Zarr array (read in ion blocks).
    times_ps : ndarray, shape (T,)
    box : ndarray, shape (6,) or None
        Cell (Å, degrees); None: no periodicity (a bounding box is used).
    params : HopParameters, optional

    Returns
    -------
    sites : SiteModel
    sigma_A : ndarray, shape (n_mobile,)
        Vibration amplitude per axis, Å.
    """
    from iondiff_stream.core.progress import track

    params = params or HopParameters()
    n, T = _shape(positions, layout)
    dt = float(np.median(np.diff(times_ps))) if T > 1 else 0.0
    w_avg = _frames(params.site.average_ps, dt)
    windows = sigma_windows(T)
    bs = _block_size(T)
    periodic = box is not None
    origin = None
    if not periodic:  # bounding box of all positions, with a margin
        lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
        for i0 in range(0, n, bs):
            x = _read_block(positions, i0, min(n, i0 + bs), layout)
            lo = np.minimum(lo, x.min(axis=(0, 1)))
            hi = np.maximum(hi, x.max(axis=(0, 1)))
        origin = lo - 5.0
        box = np.concatenate([hi - lo + 10.0, [90.0, 90.0, 90.0]])
        logger.info("no periodic cell: sites learnt in a bounding box of %s A", np.round(box[:3], 1).tolist())
    dens = SiteDensity(np.asarray(box, float), params.site, periodic=periodic, origin=origin)
    sig_w = np.empty((n, len(windows)))
    stride = max(1, w_avg // 2)  # consecutive averages are correlated: every stride-th, weighted by stride
    for i0 in track(range(0, n, bs), "site density", enabled=progress):
        i1 = min(n, i0 + bs)
        x = _read_block(positions, i0, i1, layout)
        dens.add(short_time_average(x, w_avg)[::stride], weight=float(stride))
        xs = _sigma_sample(x)
        for k, w in enumerate(windows):
            sig_w[i0:i1, k] = short_time_sigma(xs, int(w))
    kw = plateau_window(sig_w, windows)
    sigma = sig_w[:, kw]
    logger.info("vibration amplitude from %d-frame running means (median sigma %.3f A)", windows[kw],
                float(np.median(sigma)))
    return dens.sites(), sigma


def _find_hops_sites(
    positions: Any, times_ps: np.ndarray, params: HopParameters, atom_indices: np.ndarray, atom_ids: np.ndarray,
    box: np.ndarray | None, layout: str, n_jobs: int, progress: bool, sites: SiteModel | None = None,
    client: Any = None, framework: FrameworkFrames | None = None, species: Any = None,
) -> HopResults:
    from iondiff_stream.core.progress import track

    n, T = _shape(positions, layout)
    model, sigma = learn_sites(positions, times_ps, box, params, layout, progress)
    z = float(np.sqrt(chdtri(3, 1.0 - params.vib_quantile)))
    r_core = z * sigma
    dt = float(np.median(np.diff(times_ps)))
    m_res = residence_frames(params.min_residence_ps, dt)
    def read(t0: int, t1: int) -> np.ndarray:
        return _read_frames(positions, t0, t1, layout)

    if sites is not None:
        model = sites
        info: dict[str, Any] = {"site_model": "given", "site_check": given_sites_check(model, read, T, framework,
                                                                                       r_core, m_res)}
    else:
        model, info = choose_site_model(model, read, T, None if params.site.candidates == "density" else framework,
                                        species or [], box, r_core, m_res, params.site.min_site_frames,
                                        params.site.framework_core_cap,
                                        force_framework=params.site.candidates == "framework")
    if model.moving:
        res = _framework_hops(positions, layout, framework, model, r_core, sigma, times_ps, params, atom_indices,
                              atom_ids, m_res)
        res.extra.update(info)
        res.warnings.extend(_resolution_warnings(res))
        return res
    states = np.empty((n, T), dtype=np.int32)
    n_vis = np.zeros(n, dtype=np.int64)
    parts = []
    bs = _block_size(T, ion_block=_chunk_ions(positions, layout))
    blocks = [(i0, min(n, i0 + bs)) for i0 in range(0, n, bs)]
    args = (layout, model, r_core, times_ps, atom_indices, atom_ids, params.min_dwell_frames, m_res)
    if client is not None or n_jobs > 1:
        from iondiff_stream.analysis.parallel import map_ion_blocks

        done = map_ion_blocks(_sites_block_task, positions, blocks, args, client=client, n_workers=n_jobs,
                              stage_name="hops", progress=progress, layout=layout)
    else:
        done = [_sites_block_task(positions, i0, i1, *args) for i0, i1 in track(blocks, "hops", enabled=progress)]
    for (i0, i1), (st, cols, nv) in zip(blocks, done):
        states[i0:i1] = st
        n_vis[i0:i1] = nv
        parts.append(HopTable.from_columns(cols))
    table = HopTable.concatenate(parts)
    res = HopResults(table, times_ps, atom_indices, params, states, sigma, r_core, n_vis, sites=model)
    res.extra.update(info)
    res.warnings.extend(_resolution_warnings(res))
    return res


def _read_frames(positions: Any, t0: int, t1: int, layout: str) -> np.ndarray:
    """Frames ``[t0, t1)`` of all ions, shape (t1 - t0, n, 3), float64."""
    if layout == "frame":
        return np.asarray(positions[t0:t1], dtype=np.float64)
    return np.asarray(positions[:, t0:t1], dtype=np.float64).transpose(1, 0, 2)


def _gather(positions: Any, layout: str, frames: np.ndarray, ions: np.ndarray) -> np.ndarray:
    """Positions of ion ``ions[i]`` at frame ``frames[i]``, shape (m, 3)."""
    if len(frames) == 0:
        return np.zeros((0, 3))
    if isinstance(positions, np.ndarray):
        return positions[frames, ions] if layout == "frame" else positions[ions, frames]
    return np.array([_read_frames(positions, int(t), int(t) + 1, layout)[0, int(i)] for t, i in zip(frames, ions)])


def _framework_hops(
    positions: Any, layout: str, framework: FrameworkFrames, model: SiteModel, r_core: np.ndarray, sigma: np.ndarray,
    times_ps: np.ndarray, params: HopParameters, atom_indices: np.ndarray, atom_ids: np.ndarray, m_res: int,
) -> HopResults:
    """Hops with sites that move with the framework: cores frame block by frame block, then the one hop rule."""
    n, T = _shape(positions, layout)
    k = model.anchors.shape[1]
    tb = int(max(1, min(T, 64e6 // (8 * 3 * (4 * n + model.n_sites * k)))))
    cached = getattr(model, "sample_states_", None)
    if cached is not None and len(cached) == 1 and cached[0].shape == (T, n):
        states = cached[0]  # the sample that chose the sites was the whole run
    else:
        states = np.empty((T, n), dtype=np.int32)
        for t0 in range(0, T, tb):
            t1 = min(T, t0 + tb)
            states[t0:t1] = model.assign_frames(_read_frames(positions, t0, t1, layout), framework.positions[t0:t1],
                                                r_core)
    model.__dict__.pop("sample_states_", None)
    if params.min_dwell_frames > 1:
        states = _drop_short_core_runs(states, params.min_dwell_frames)
    rule = HopRule(n, m_res)
    closed = rule.update(states)
    x_last = _read_frames(positions, T - 1, T, layout)
    near, _ = model.nearest_frames(x_last, framework.positions[T - 1 : T])
    ev = HopEvents.concatenate([closed, rule.finish(near[0])]).sorted()
    j, fr, to, s0, e0 = ev.ion, ev.from_site, ev.to_site, ev.start_frame, ev.end_frame
    fw = framework.positions
    a = model.unwrapped_site_at(_gather(positions, layout, s0, j), fr, fw[s0])
    b = model.unwrapped_site_at(_gather(positions, layout, e0, j), to, fw[e0])
    st = states.T
    n_vis = np.array([len(np.unique(r[r >= 0])) for r in st], dtype=np.int64)
    table = HopTable.from_columns(_hop_columns(ev, 0, a, b, times_ps, atom_indices, atom_ids))
    return HopResults(table, times_ps, atom_indices, params, np.ascontiguousarray(st), sigma, r_core, n_vis,
                      sites=model)


def _resolution_warnings(res: HopResults) -> list[str]:
    """Warn when the stored frames are too far apart to resolve hops."""
    out = []
    c = res.hops.closed()
    if len(c) >= 10:
        frac = float(np.mean(c["end_frame"] - c["start_frame"] <= 1))
        if frac > 0.5:
            dt = float(np.median(np.diff(res.times_ps)))
            out.append(f"frame spacing too coarse to resolve hops: {100 * frac:.0f} % of the hops go from one site's "
                       f"core to another's between two consecutive stored frames ({dt:.3g} ps apart); hops may be "
                       "missed or merged: store frames more often (e.g. every 0.02-0.05 ps)")
    for w in out:
        logger.warning(w)
    return out


def find_hops(
    positions: Any,
    times_ps: np.ndarray,
    params: HopParameters | None = None,
    atom_indices: np.ndarray | None = None,
    n_jobs: int = 1,
    progress: bool = False,
    atom_ids: np.ndarray | None = None,
    warm_centres: Sequence[np.ndarray | None] | None = None,
    box: np.ndarray | None = None,
    layout: str = "ion",
    sites: SiteModel | None = None,
    client: Any = None,
    framework: FrameworkFrames | None = None,
    species: Any = None,
) -> HopResults:
    """Run the hop method on unwrapped positions.

    Parameters
    ----------
    positions : array_like, shape (n_mobile, T, 3), or (T, n_mobile, 3) with ``layout="frame"``
        Unwrapped positions, Å (framework drift already removed if wanted). An
        ndarray or any array with numpy slicing (a Zarr array): it is read in
        ion blocks, never whole.
    times_ps : ndarray, shape (T,)
    params : HopParameters, optional
    atom_indices : ndarray, shape (n_mobile,), optional
        Trajectory indices of the ions (default 0..n_mobile-1).
    n_jobs : int
        Worker processes for the per-ion work of the silhouette method (joblib).
    progress : bool
        Show a progress bar (rich).
    atom_ids : ndarray, shape (n_mobile,), optional
        Ids of the atoms in the file (default ``atom_indices + 1``).
    warm_centres : sequence of ndarray (k_i, 3) or None, optional
        Per-ion centres to warm-start k-means from (silhouette method).
    box : ndarray, shape (6,), optional
        Periodic cell ``[a, b, c, alpha, beta, gamma]`` (Å, degrees) for the
        sites method; without it sites are not periodic.
    layout : {"ion", "frame"}
        ``"ion"``: positions are (n_mobile, T, 3); ``"frame"``: (T, n_mobile, 3).
    sites : SiteModel, optional
        Use these sites instead of learning them (sites method).
    client : distributed.Client or str, optional
        Dask client or scheduler address: one task per ion block, each reading
        its own block (from the Zarr store when the positions are out of core).
        ``n_jobs > 1`` without a client starts a ``LocalCluster`` of ``n_jobs``
        processes.
    framework : FrameworkFrames, optional
        Framework positions of the same frames (``"sites"`` method): candidate sites are then also the
        framework's polyhedral holes, attached to it (:mod:`iondiff_stream.model.framework`).
    species : sequence of str, optional
        Element of the mobile ions (chooses the framework sublattice whose holes they occupy).

    Returns
    -------
    HopResults
    """
    params = params or HopParameters()
    if layout not in ("ion", "frame"):
        raise ValueError(f"layout must be 'ion' or 'frame', got {layout!r}")
    if isinstance(positions, (list, tuple)):
        positions = np.asarray(positions, dtype=np.float64)
    n, T = _shape(positions, layout)
    if n == 0:
        raise AnalysisError("no mobile ions")
    if T < 2:
        raise AnalysisError(f"need at least 2 frames, got {T}")
    times_ps = np.asarray(times_ps, dtype=np.float64)
    if times_ps.shape != (T,):
        raise ValueError(f"times_ps must have shape ({T},), got {times_ps.shape}")
    atom_indices = np.arange(n) if atom_indices is None else np.asarray(atom_indices)
    ids = atom_indices + 1 if atom_ids is None else np.asarray(atom_ids)
    if params.method == "sites":
        res = _find_hops_sites(positions, times_ps, params, atom_indices, ids, box, layout, n_jobs, progress, sites,
                               client, framework, species)
    else:
        res = _find_hops_silhouette(positions, times_ps, params, atom_indices, ids, layout, n_jobs, progress,
                                    warm_centres, client)
    logger.info("%s method, %d ions, %d frames: %d hops (%d open)%s", params.method, n, T, len(res.hops),
                int(res.hops["open"].sum()), "" if res.sites is None else f", {res.sites.n_sites} sites")
    return res


def _find_hops_silhouette(
    positions: Any, times_ps: np.ndarray, params: HopParameters, atom_indices: np.ndarray, atom_ids: np.ndarray,
    layout: str, n_jobs: int, progress: bool, warm_centres: Sequence[Any] | None, client: Any = None,
) -> HopResults:
    n, T = _shape(positions, layout)
    blocks = [list(range(s, min(n, s + 16))) for s in range(0, n, 16)]
    ions: list[IonCentres] = []
    if n_jobs == 1 and client is None:
        from iondiff_stream.core.progress import track

        for blk in track(blocks, "hops", enabled=progress):
            ions.extend(_fit_block(positions, blk, params, warm_centres, layout))
    else:
        from iondiff_stream.analysis.parallel import map_ion_blocks

        out = map_ion_blocks(_fit_block_task, positions, [(b[0], b[-1] + 1) for b in blocks],
                             (params, warm_centres, layout), client=client, n_workers=n_jobs, stage_name="hops",
                             progress=progress, layout=layout)
        for part in out:
            ions.extend(part)
    rows: list[dict[str, Any]] = []
    for blk in blocks:
        x = _read_block(positions, blk[0], blk[-1] + 1, layout)
        for j, i in enumerate(blk):
            rows.extend(detect_hops(ions[i], x[:, j], times_ps, i, int(atom_indices[i]), params.min_dwell_frames,
                                    int(atom_ids[i])))
    table = HopTable.from_rows(rows)
    states = np.stack([ion.states.astype(np.int32) for ion in ions])
    res = HopResults(table, times_ps, atom_indices, params, states, np.array([i.sigma_A for i in ions]),
                     np.array([i.r_vib_A for i in ions]), np.array([i.k for i in ions]), ions=ions)
    res.warnings.extend(_resolution_warnings(res))
    return res


@dataclass
class ResidenceTimes:
    """Complete residences at a site/centre: bounded by a hop in and a hop out.

    Attributes
    ----------
    ion, centre : ndarray, shape (n,), int64
        Mobile-ion index and the site (``"sites"``) or per-ion centre index.
    arrival_frame, departure_frame : ndarray, shape (n,), int64
        First frame in the core after the hop in; last frame before the hop out.
    duration_ps : ndarray, shape (n,)
        ``time[departure] - time[arrival]``, ps.
    position_A : ndarray, shape (n, 3)
        Where the ion resided (the hop-in's destination, unwrapped), Å.
    metastable : ndarray, shape (n,), bool
        At least ``metastable_distance_A`` from every reference site (set by the
        orchestration when reference sites are known; False otherwise).
    """

    ion: np.ndarray
    centre: np.ndarray
    arrival_frame: np.ndarray
    departure_frame: np.ndarray
    duration_ps: np.ndarray
    position_A: np.ndarray
    metastable: np.ndarray

    def __len__(self) -> int:
        return int(len(self.ion))


def residence_times(hops: HopResults) -> ResidenceTimes:
    """Complete residences of every ion (see :class:`ResidenceTimes`)."""
    tab = hops.hops.closed()
    ion = tab["ion"]
    order = np.lexsort((tab["start_frame"], ion))
    ion_s = ion[order]
    same = ion_s[1:] == ion_s[:-1]
    a, b = order[:-1][same], order[1:][same]
    arr, dep = tab["end_frame"][a], tab["start_frame"][b]
    ok = dep >= arr
    a, b, arr, dep = a[ok], b[ok], arr[ok], dep[ok]
    pos = np.column_stack([tab["to_x_A"][a], tab["to_y_A"][a], tab["to_z_A"][a]]) if len(a) else np.zeros((0, 3))
    t = hops.times_ps
    return ResidenceTimes(ion[a].astype(np.int64), tab["to_centre"][a].astype(np.int64), arr.astype(np.int64),
                          dep.astype(np.int64), t[dep] - t[arr], pos, np.zeros(len(a), dtype=bool))


class IonSubset:
    """Some of the ions of a frame-major positions array (T, n, 3), read lazily (a Zarr array stays on disk).

    Slicing ``[:, i0:i1]`` reads only the frames' columns of the chosen ions; picklable when the
    underlying array is (a Zarr array or an ndarray), so Dask tasks can read their own block.

    Parameters
    ----------
    positions : array_like, shape (T, n, 3)
    ions : ndarray of int, shape (m,)
        Columns (mobile-ion indices) of this subset, increasing.
    """

    def __init__(self, positions: Any, ions: np.ndarray) -> None:
        self.positions = positions
        self.ions = np.asarray(ions, dtype=np.int64)
        self.shape = (int(positions.shape[0]), len(self.ions), 3)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not (isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], slice)):
            raise TypeError(f"IonSubset supports [frames, ion_slice] only, got {key!r}")
        cols = self.ions[key[1]]
        if len(cols) == 0:
            return np.zeros((len(range(*key[0].indices(self.shape[0]))) if isinstance(key[0], slice) else 0, 0, 3))
        if np.all(np.diff(cols) == 1):  # one contiguous read
            return np.asarray(self.positions[key[0], int(cols[0]) : int(cols[-1]) + 1])
        lo, hi = int(cols.min()), int(cols.max()) + 1  # one read of the span, then the columns wanted
        return np.asarray(self.positions[key[0], lo:hi])[:, cols - lo]


def combine_hop_results(parts: Sequence[tuple[np.ndarray, HopResults]], n_mobile: int,
                        labels: Sequence[str] | None = None) -> HopResults:
    """One :class:`HopResults` from hop results of disjoint ion subsets, each with its own sites.

    Parameters
    ----------
    parts : sequence of (ndarray of int, HopResults)
        Mobile-ion indices of each subset (in the combined numbering) and its results
        (sites method; ion indices local to the subset).
    n_mobile : int
        Ions in the combined run.
    labels : sequence of str, optional
        A name per part (e.g. the species), kept per site in ``extra["site_label"]``.

    Returns
    -------
    HopResults
        Sites of all parts stacked (site indices offset per part); every core cap is the one its
        part used.
    """
    first = parts[0][1]
    T = first.n_frames
    states = np.full((n_mobile, T), -1, dtype=np.int32)
    sigma = np.zeros(n_mobile)
    r_core = np.zeros(n_mobile)
    n_centres = np.zeros(n_mobile, dtype=np.int64)
    atom_indices = np.zeros(n_mobile, dtype=np.asarray(first.atom_indices).dtype)
    tables, sites, weights, caps, nns, site_label, warnings = [], [], [], [], [], [], []
    offset = 0
    for k, (ions, res) in enumerate(parts):
        ions = np.asarray(ions, dtype=np.int64)
        if res.sites is None:
            raise ValueError("combine_hop_results needs results of the sites method")
        st = np.asarray(res.states)
        states[ions] = np.where(st >= 0, st + offset, -1)
        sigma[ions], r_core[ions], n_centres[ions] = res.sigma_A, res.r_core_A, res.n_centres
        atom_indices[ions] = res.atom_indices
        cols = {c: np.asarray(res.hops[c]).copy() for c in HOP_COLUMNS}
        cols["ion"] = ions[cols["ion"].astype(np.int64)]
        cols["from_centre"] = cols["from_centre"] + offset
        cols["to_centre"] = cols["to_centre"] + offset
        tables.append(HopTable.from_columns(cols))
        m = res.sites
        sites.append(m.sites_A)
        weights.append(m.weight)
        caps.append(m.core_cap_A)
        nns.append(m.nn_A)
        site_label += [labels[k] if labels else str(k)] * m.n_sites
        warnings += list(res.warnings)
        offset += m.n_sites
    m0 = first.sites
    model = SiteModel(np.vstack(sites), m0.box, np.concatenate(weights), core_cap=m0.core_cap, periodic=m0.periodic)
    model.core_cap_A, model.nn_A = np.concatenate(caps), np.concatenate(nns)  # what each part used
    out = HopResults(HopTable.concatenate(tables), first.times_ps, atom_indices, first.parameters, states, sigma,
                     r_core, n_centres, sites=model, warnings=warnings)
    out.extra["site_label"] = np.array(site_label)
    return out


@dataclass
class JumpCorrelation:
    """Correlation between consecutive hops of the same ion, and the correlation factor it implies.

    ``D = f · Σ length² / (6 N t)``: hops that tend to undo the previous one (back-hops next to a vacancy,
    rattling within a cage) carry less transport than their lengths say. With correlations between
    consecutive hops only (each hop remembers the previous one, the Compaan–Haven / Le Claire
    approximation), ``f = (1 + c) / (1 - c)`` with

    ``c = Σ l_k · l_{k+1} / Σ (|l_k|² + |l_{k+1}|²) / 2``

    over consecutive closed hops ``l_k, l_{k+1}`` (vectors, Å) of the same ion: the mean cosine of the angle
    between successive hops, length-weighted (``-1 <= c <= 1``). Exact for a persistent random walk; motion
    confined over many hops (cages) is only partly captured, so ``f`` is then an upper bound.

    Attributes
    ----------
    mean_cos : float
        ``c`` above (NaN with no ion hopping twice).
    factor : float
        ``f`` (0 for strict back-and-forth, 1 for uncorrelated hops, > 1 for persistent ones).
    factor_std : float
        Standard deviation of ``f`` over bootstrap resamples of the ions.
    n_pairs : int
        Consecutive hop pairs used.
    """

    mean_cos: float
    factor: float
    factor_std: float
    n_pairs: int


def jump_correlation(table: HopTable, n_bootstrap: int = 200, seed: int = 0) -> JumpCorrelation:
    """Correlation of consecutive hops of each ion and the correlation factor (see :class:`JumpCorrelation`).

    Parameters
    ----------
    table : HopTable
        Hops; open hops (still in transit at the end of the run) are left out.
    n_bootstrap : int
        Resamples of the ions for ``factor_std``.
    seed : int

    Returns
    -------
    JumpCorrelation
    """
    c = table.closed()
    if len(c) < 2:
        return JumpCorrelation(float("nan"), float("nan"), float("nan"), 0)
    vec = np.column_stack([c[f"to_{a}_A"] - c[f"from_{a}_A"] for a in "xyz"])
    order = np.lexsort((c["start_frame"], c["ion"]))
    ion, vec = c["ion"][order], vec[order]
    pair = ion[1:] == ion[:-1]
    a, b = vec[:-1][pair], vec[1:][pair]
    if len(a) == 0:
        return JumpCorrelation(float("nan"), float("nan"), float("nan"), 0)
    dot = (a * b).sum(1)
    norm = 0.5 * ((a * a).sum(1) + (b * b).sum(1))
    owner = ion[1:][pair]

    def factor(d: np.ndarray, w: np.ndarray) -> tuple[float, float]:
        cc = float(d.sum() / w.sum()) if w.sum() > 0 else float("nan")
        return cc, (1.0 + cc) / (1.0 - cc) if cc < 1.0 else float("inf")

    cos, f = factor(dot, norm)
    ions, inv = np.unique(owner, return_inverse=True)
    d_ion = np.bincount(inv, weights=dot, minlength=len(ions))
    w_ion = np.bincount(inv, weights=norm, minlength=len(ions))
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_bootstrap if len(ions) > 1 else 0):
        pick = rng.integers(0, len(ions), len(ions))
        boots.append(factor(d_ion[pick], w_ion[pick])[1])
    std = float(np.std(boots, ddof=1)) if len(boots) > 1 else float("nan")
    return JumpCorrelation(cos, f, std, int(len(a)))


def committed_site_changes(
    positions: Any, times_ps: np.ndarray, sites_A: np.ndarray, box: np.ndarray, min_stay_ps: float = 0.2,
    layout: str = "ion",
) -> np.ndarray:
    """Changes of nearest known site that stick: an independent hop count where the lattice is known.

    Every frame is assigned to the nearest of ``sites_A`` (minimum image, no core, no
    learning); stays shorter than ``min_stay_ps`` are dropped and a change between
    two consecutive remaining stays at different sites counts once.

    Parameters
    ----------
    positions : array_like, shape (n_mobile, T, 3) or (T, n_mobile, 3) (``layout="frame"``)
        Unwrapped positions, Å.
    times_ps : ndarray, shape (T,)
    sites_A : ndarray, shape (m, 3)
        Known sites (e.g. the ideal F sublattice of fluorite), Å.
    box : ndarray, shape (6,)
    min_stay_ps : float

    Returns
    -------
    ndarray, shape (n_mobile,)
        Committed site changes of every ion.
    """
    model = SiteModel(np.asarray(sites_A, float), np.asarray(box, float), np.ones(len(sites_A)))
    n, T = _shape(positions, layout)
    dt = float(np.median(np.diff(times_ps)))
    m = max(1, int(round(min_stay_ps / dt)))
    out = np.zeros(n, dtype=np.int64)
    bs = _block_size(T)
    for i0 in range(0, n, bs):
        x = _read_block(positions, i0, min(n, i0 + bs), layout)
        idx, _ = model.nearest(x.reshape(-1, 3))
        idx = idx.reshape(x.shape[:2])
        for j in range(x.shape[1]):
            s = idx[:, j]
            ch = np.flatnonzero(s[1:] != s[:-1]) + 1
            st = np.concatenate([[0], ch])
            en = np.concatenate([ch, [T]])
            v = s[st[(en - st) >= m]]
            out[i0 + j] = int(np.count_nonzero(v[1:] != v[:-1]))
    return out


def parameters_dict(params: HopParameters) -> dict[str, Any]:
    """Parameters as a plain dict (for JSON / Zarr attributes)."""
    return asdict(params)
