"""Sites, occupancies, residence times per site type and site-based concerted modes.

* :func:`find_sites`: sites found without supervision, by clustering the
  vibrational centres of all ions (wrapped into the cell; periodic distances;
  average-linkage with a distance cut, default 1.0 Å).
* :func:`align_reference`: put a user's reference structure (e.g. a CIF with
  labelled sites) into the run's frame by the translation that maps a framework
  species onto the trajectory's first frame.
* :func:`assign_sites`: the site every ion is nearest to in every frame
  (Voronoi assignment, minimum image). This differs systematically from a
  polyhedral assignment (site-analysis): an ion is counted at the nearest site
  centre rather than inside a tetrahedron, so every ion-frame is assigned and
  short returns across a shared face are not filtered.
* :func:`site_statistics`: occupation fraction per site type and residence
  times (consecutive frames at one site), per type.
* :func:`concerted_modes`: jumps between sites and the pairs "ion a moves A→B
  while ion b moves B→C within ``window_ps``" (Fu et al. 2022), with jump
  frequencies per mode.
* :func:`hop_concerted_modes`: the same pairs on the hop detector's own sites and
  hops (:class:`ConcertedModes`, part of every run's analysis).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any

import numpy as np
from MDAnalysis.lib.mdamath import triclinic_vectors

from iondiff_stream.core.errors import AnalysisError
from iondiff_stream.core.pbc import minimum_image, wrap

logger = logging.getLogger(__name__)

__all__ = ["find_sites", "align_reference", "assign_sites", "site_statistics", "site_jumps", "concerted_modes",
           "mode_pairs", "hop_concerted_modes", "ConcertedModes", "pair_geometry", "MIN_MODE_COUNT", "mode_arrhenius",
           "assign_polyhedra", "delaunay_tetrahedra", "analyse_sites",
           "SiteStatistics", "SiteMatch", "match_reference_sites"]


def _h(box: np.ndarray) -> np.ndarray:
    return triclinic_vectors(np.asarray(box, dtype=np.float32)).astype(np.float64)


def _wrap(x: np.ndarray, box: np.ndarray) -> np.ndarray:
    return wrap(x, box)


def find_sites(centres: np.ndarray, box: np.ndarray, cutoff_A: float = 1.0, weights: np.ndarray | None = None) -> np.ndarray:
    """Cluster centres of all ions into sites (periodic boundaries).

    Parameters
    ----------
    centres : ndarray, shape (m, 3)
        Vibrational centres, Å (unwrapped is fine).
    box : ndarray, shape (6,)
    cutoff_A : float
        Average-linkage distance cut.
    weights : ndarray, shape (m,), optional
        Weights for the site positions (e.g. frames spent at each centre).

    Returns
    -------
    ndarray, shape (n_sites, 3)
        Site positions wrapped into the cell, Å.
    """
    from MDAnalysis.lib.distances import self_distance_array
    from scipy.cluster.hierarchy import fcluster, linkage

    c = _wrap(np.asarray(centres, float), box)
    if len(c) == 0:
        raise AnalysisError("no centres to cluster into sites")
    if len(c) == 1:
        return c
    d = self_distance_array(c, box=np.asarray(box, np.float32))
    lab = fcluster(linkage(d, method="average"), t=cutoff_A, criterion="distance")
    w = np.ones(len(c)) if weights is None else np.asarray(weights, float)
    out = []
    for k in np.unique(lab):
        members = c[lab == k]
        ref = members[0]
        d = minimum_image(members - ref, box)  # unwrap around the first member
        out.append(ref + np.average(d, axis=0, weights=w[lab == k]))
    return _wrap(np.array(out), box)


def align_reference(
    ref_positions: np.ndarray,
    ref_species: np.ndarray,
    traj_positions: np.ndarray,
    traj_species: np.ndarray,
    box: np.ndarray,
    anchor: str,
    tol_A: float | None = None,
    n_iter: int = 20,
) -> np.ndarray:
    """Translate reference positions onto the run's frame: least-squares periodic fit of the anchor species.

    Every translation that maps the first anchor atom of the trajectory onto a
    reference anchor site is a starting guess; each is refined by iterating
    "match every anchor atom to its nearest translated reference site (minimum
    image), move by the mean residual" (the least-squares translation for
    that matching), and the guess with the smallest RMS residual wins. A cubic
    (or any) cell needs no rotation: the reference is given in the run's cell.

    Parameters
    ----------
    ref_positions : ndarray, shape (n_ref, 3)
        Reference structure in the run's cell, Å.
    ref_species, traj_species : ndarray of str
    traj_positions : ndarray, shape (n_atoms, 3)
        The frame to align to (e.g. frame 0), Å.
    box : ndarray, shape (6,)
    anchor : str
        Species present in both (e.g. ``"P"``).
    tol_A : float, optional
        Largest residual accepted after the fit. Default (from the data): half
        the shortest distance between two reference anchor sites, beyond which
        an atom could be nearer another site than its own.
    n_iter : int
        Refinement iterations per guess.

    Returns
    -------
    ndarray, shape (n_ref, 3)
        Translated (wrapped) reference positions, Å.

    Raises
    ------
    AnalysisError
        Anchor species missing, or the best fit leaves a residual above ``tol_A``.
    """
    from MDAnalysis.lib.distances import distance_array, self_distance_array

    ra = np.asarray(ref_positions, float)[np.asarray(ref_species) == anchor]
    ta = np.asarray(traj_positions, float)[np.asarray(traj_species) == anchor]
    if len(ra) == 0 or len(ta) == 0:
        raise AnalysisError(f"anchor species {anchor!r} missing from the reference or the trajectory")
    b32 = np.asarray(box, np.float32)
    if tol_A is None:
        tol_A = 0.5 * float(self_distance_array(ra, box=b32).min()) if len(ra) > 1 else 1.0
    def residuals(shift: np.ndarray) -> np.ndarray:
        moved = _wrap(ra + shift, box)
        j = distance_array(ta, moved, box=b32).argmin(1)
        return minimum_image(ta - moved[j], box)

    best, best_rms, best_max = None, np.inf, np.inf
    for r in ra:
        shift = ta[0] - r
        for _ in range(n_iter):
            d = residuals(shift)
            step = d.mean(0)
            shift = shift + step
            if np.linalg.norm(step) < 1e-6:
                break
        d = residuals(shift)
        rms = float(np.sqrt((d**2).sum(1).mean()))
        if rms < best_rms - 1e-9:
            best, best_rms, best_max = shift, rms, float(np.linalg.norm(d, axis=1).max())
    if best is None or best_max > tol_A:
        raise AnalysisError(f"cannot align the reference: after the least-squares fit the largest {anchor} residual "
                            f"is {best_max:.2f} Å > tolerance {tol_A:.2f} Å")
    logger.info("reference aligned on %d %s atoms (RMS %.3f Å, max %.3f Å, tolerance %.2f Å)", len(ta), anchor,
                best_rms, best_max, tol_A)
    return _wrap(np.asarray(ref_positions, float) + best, box)


def assign_sites(positions: np.ndarray, sites: np.ndarray, box: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Nearest site (minimum image) of every ion in every frame.

    Parameters
    ----------
    positions : ndarray, shape (n, T, 3)
    sites : ndarray, shape (s, 3)
    box : ndarray, shape (6,)

    Returns
    -------
    ndarray, shape (n, T), int32
    """
    from MDAnalysis.lib.distances import distance_array

    n, T, _ = positions.shape
    out = np.empty((n, T), dtype=np.int32)
    b32 = np.asarray(box, np.float32)
    flat = positions.transpose(1, 0, 2).reshape(-1, 3)
    res = np.empty(len(flat), dtype=np.int32)
    step = chunk * n
    for s in range(0, len(flat), step):
        res[s : s + step] = distance_array(flat[s : s + step], sites, box=b32).argmin(1)
    out[:] = res.reshape(T, n).T
    return out


@dataclass
class SiteStatistics:
    """Occupation and residence statistics per site type.

    Attributes
    ----------
    fraction : dict
        Fraction of ion-frames at each site type.
    mean_residence_frames, mean_residence_ps : dict
        Mean length of uninterrupted stays at one site, per type.
    n_residences : dict
        Number of stays per type.
    occupancy : ndarray, shape (T, n_sites)
        Number of ions at each site in each frame.
    """

    fraction: dict[str, float]
    mean_residence_frames: dict[str, float]
    mean_residence_ps: dict[str, float]
    n_residences: dict[str, int]
    occupancy: np.ndarray


def site_statistics(assigned: np.ndarray, site_types: np.ndarray, n_sites: int, frame_dt_ps: float) -> SiteStatistics:
    """Occupation fractions and residence times per site type.

    Every uninterrupted run of frames of one ion at one site is a stay (runs cut
    by the ends of the trajectory included), as site-analysis does with
    ``filter_length=0``.
    """
    n, T = assigned.shape
    types = np.asarray(site_types)
    occ = np.zeros((T, n_sites), dtype=np.int32)
    for t in range(T):
        occ[t] = np.bincount(assigned[:, t], minlength=n_sites)
    ty = types[assigned]
    names = sorted(set(types.tolist()))
    frac = {k: float(np.mean(ty == k)) for k in names}
    lengths: dict[str, list[int]] = {k: [] for k in names}
    for i in range(n):
        a = assigned[i]
        cut = np.flatnonzero(np.diff(a)) + 1
        starts = np.concatenate([[0], cut])
        ends = np.concatenate([cut, [T]])
        for s, e in zip(starts, ends):
            lengths[str(types[a[s]])].append(int(e - s))
    mean_f = {k: float(np.mean(v)) if v else float("nan") for k, v in lengths.items()}
    return SiteStatistics(
        fraction=frac,
        mean_residence_frames=mean_f,
        mean_residence_ps={k: v * frame_dt_ps for k, v in mean_f.items()},
        n_residences={k: len(v) for k, v in lengths.items()},
        occupancy=occ,
    )


def site_jumps(assigned: np.ndarray) -> np.ndarray:
    """Every change of site: rows ``(ion, frame, from_site, to_site)`` (frame = first frame at the new site)."""
    ion, t = np.nonzero(np.diff(assigned, axis=1))
    return np.column_stack([ion, t + 1, assigned[ion, t], assigned[ion, t + 1]]).astype(np.int64)


def concerted_modes(
    assigned: np.ndarray, site_types: np.ndarray, frame_dt_ps: float, window_ps: float = 1.0
) -> dict[str, Any]:
    """Site-based concerted modes: ion a jumps A→B while ion b jumps B→C within ``window_ps``.

    Returns
    -------
    dict
        ``jumps_per_type_pair`` (counts of single jumps ``"T5->T2"``),
        ``jump_frequency_per_ps`` (per ion, per type pair), ``modes`` (counts of
        ``"A->B+B->C"`` by site types), ``mode_frequency_per_ps`` (per ion),
        ``n_concerted_pairs``, ``window_ps``.
    """
    n, T = assigned.shape
    types = np.asarray(site_types).astype(str)
    j = site_jumps(assigned)
    total_ps = (T - 1) * frame_dt_ps
    w = max(1, int(round(window_ps / frame_dt_ps)))
    single = Counter(f"{types[a]}->{types[b]}" for a, b in j[:, 2:4])
    modes: Counter[str] = Counter()
    for ka, kb in mode_pairs(j[:, 0], j[:, 1].astype(float), j[:, 2], j[:, 3], float(w)):
        A, B, C = j[ka, 2], j[ka, 3], j[kb, 3]
        modes[f"{types[A]}->{types[B]}+{types[B]}->{types[C]}"] += 1
    per = n * total_ps if total_ps > 0 else float("nan")
    return {
        "jumps_per_type_pair": dict(single),
        "jump_frequency_per_ps": {k: v / per for k, v in single.items()},
        "modes": dict(modes),
        "mode_frequency_per_ps": {k: v / per for k, v in modes.items()},
        "n_concerted_pairs": int(sum(modes.values())),
        "window_ps": window_ps,
    }


def mode_pairs(ion: np.ndarray, time: np.ndarray, from_site: np.ndarray, to_site: np.ndarray,
               window: float) -> np.ndarray:
    """The concerted pairs of a list of site changes: ion a moves A→B and ion b moves B→C, ``|t_a - t_b| <= window``.

    The one counting rule of :func:`concerted_modes` (site assignments) and :func:`hop_concerted_modes` (the
    hop detector's hops). A pair needs two different ions (a ≠ b) and C ≠ A (ion b does not take the site a
    came from: that is an exchange, not a chain); b may move before or after a. Every such combination
    counts once, so a change can be in several pairs.

    Vectorised: the changes out of every site sorted by time, and for every change into a site the range of
    changes out of it within the window found by one sort of both (``O(m log m)`` plus the pairs; the naive
    double loop is the tests' reference).

    Parameters
    ----------
    ion, from_site, to_site : ndarray of int, shape (m,)
        Ion and sites of every change.
    time : ndarray, shape (m,)
        Time of every change (frames or ps; ``window`` in the same unit).
    window : float

    Returns
    -------
    ndarray of int, shape (n_pairs, 2)
        ``(k_a, k_b)``: indices of the change into B (a) and of the change out of B (b), sorted by ``k_a``
        then by the time of ``k_b``.
    """
    ion = np.asarray(ion)
    time = np.asarray(time, float)
    from_site = np.asarray(from_site, np.int64)
    to_site = np.asarray(to_site, np.int64)
    m = len(ion)
    if m == 0:
        return np.zeros((0, 2), np.int64)
    eps = 1e-9 * max(1.0, abs(float(window)))
    order = np.lexsort((time, from_site))  # the changes out of each site, by time
    # one sort of the departures and of every arrival's window ends (kind 0: before an equal departure,
    # kind 2: after one): the departures before a window end are the index of that end in ``order``
    site = np.concatenate([from_site, to_site, to_site])
    t = np.concatenate([time, time - (window + eps), time + (window + eps)])
    kind = np.repeat(np.array([1, 0, 2], np.int8), m)
    pos = np.lexsort((kind, t, site))
    before = np.cumsum(kind[pos] == 1) - (kind[pos] == 1)  # departures strictly before each position
    at = np.empty(3 * m, np.int64)
    at[pos] = before
    lo, hi = at[m : 2 * m], at[2 * m :]
    n = hi - lo
    ka = np.repeat(np.arange(m), n)
    kb = order[np.repeat(lo - np.cumsum(n) + n, n) + np.arange(int(n.sum()))]
    keep = (ion[kb] != ion[ka]) & (to_site[kb] != from_site[ka])
    return np.column_stack([ka[keep], kb[keep]]).astype(np.int64)


#: cos of the angle between a's move (A→B) and b's (B→C) above which a pair is "collinear", below minus which
#: it is "reverse"; between the two it is "bent" (45°: on a simple cubic sublattice the nearest-neighbour pairs
#: are 0°, 90° or 180° apart)
MODE_COS = float(np.cos(np.pi / 4))
#: fewest pairs of a mode at a temperature for its frequency to enter an Arrhenius fit (Poisson error <= 45 %)
MIN_MODE_COUNT = 5


@dataclass
class ConcertedModes:
    """Site-based concerted modes of one run, on the hop detector's sites.

    Definition: every closed hop of the hop table is a site change of one ion, from site ``from_centre`` (A)
    to site ``to_centre`` (B), at the time it reaches B's core (``end_time_ps``; the first frame in the
    destination core, as :func:`site_jumps` dates a change of assigned site). A *concerted pair* is ion a
    moving A→B and another ion b moving B→C (C ≠ A) with arrival times within ``window_ps`` of each other,
    in either order (:func:`mode_pairs`; the seed study's rule, as in :func:`concerted_modes`). The sites are
    the ones the hop analysis learnt (its ``SiteModel``), not a new site model: a run without a reference
    structure gets no site types unless the site model carries labels (several species analysed together),
    so a mode is named by the geometry of the pair, the angle between a's move (B − A, unwrapped site
    positions) and b's (C − B): ``collinear`` (< 45°), ``bent`` (45–135°) or ``reverse`` (> 135°), prefixed
    by ``TA->TB+TB->TC`` when the sites have types. Open hops (still in transit at the end) are left out.

    Attributes
    ----------
    window_ps : float
        Largest time between the two site changes of a pair, ps.
    n_ions : int
    total_time_ps : float
    n_hops : int
        Closed hops (site changes) considered.
    site_types : list of str
        The site types of the site model (``[]``: untyped).
    counts : dict of str to int
        Pairs per mode.
    n_pairs : int
        All pairs.
    frequency_per_ps : dict of str to float
        Pairs per mode per ion per ps (count / (n_ions · total_time_ps)).
    frequency_std_per_ps : dict of str to float
        Poisson standard error, frequency / sqrt(count).
    null_draws : int
        Draws of the independent-timing baseline (0: not computed).
    null_pairs_mean, null_pairs_std : float or None
        Pairs in a run whose ions hop as they did but at times independent of one another: every ion's closed
        hops shifted together by its own random circular offset in time (uniform over the run), so each ion
        keeps its sites, hop count and waiting times and only the timing between ions is lost (the null of
        :func:`~iondiff_stream.analysis.correlations.concert_null`, here on site changes). Mean and standard
        deviation over the draws; None without draws. The baseline knows nothing of site exclusion: two ions
        may sit on one site in a draw.
    null_counts_mean : dict of str to float
        Mean pairs per mode over the draws (every mode seen in the run or in a draw).
    excess_pairs : float or None
        ``n_pairs - null_pairs_mean``. Positive: a site vacated is refilled within the window more often than
        timing alone gives (vacancy chains, knock-offs; CaF2 with two vacancies: 69 pairs against 12.7).
        Negative: less often, the sign of ions that wait for a site to empty (argyrodite cages, where an ion
        rattles between neighbouring sites for picoseconds before another can enter: 634 against 3978). The
        raw count alone grows as the square of the hop rate whether or not ions move together.
    p_value : float or None
        One-sided, more pairs than independent timing: ``(1 + draws with >= n_pairs) / (1 + null_draws)``;
        None without draws or closed hops (``null_reason`` says which).
    p_value_fewer : float or None
        One-sided, fewer: ``(1 + draws with <= n_pairs) / (1 + null_draws)``.
    null_reason : str or None
        Why there is no baseline.
    null_seed : int
    """

    window_ps: float
    n_ions: int
    total_time_ps: float
    n_hops: int
    site_types: list[str]
    counts: dict[str, int]
    n_pairs: int
    frequency_per_ps: dict[str, float]
    frequency_std_per_ps: dict[str, float]
    null_draws: int = 0
    null_pairs_mean: float | None = None
    null_pairs_std: float | None = None
    null_counts_mean: dict[str, float] = field(default_factory=dict)
    excess_pairs: float | None = None
    p_value: float | None = None
    p_value_fewer: float | None = None
    null_reason: str | None = "not computed"
    null_seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """``summary.json`` keys (``concerted_mode_*``)."""
        return {
            "concerted_mode_null_draws": self.null_draws,
            "concerted_mode_null_pairs_mean": self.null_pairs_mean,
            "concerted_mode_null_pairs_std": self.null_pairs_std,
            "concerted_mode_null_counts_mean": dict(self.null_counts_mean),
            "concerted_mode_excess_pairs": self.excess_pairs,
            "concerted_mode_p_value": self.p_value,
            "concerted_mode_p_value_fewer": self.p_value_fewer,
            "concerted_mode_null_reason": self.null_reason,
            "concerted_mode_window_ps": self.window_ps,
            "concerted_mode_hops": self.n_hops,
            "concerted_mode_site_types": list(self.site_types),
            "concerted_mode_pairs": self.n_pairs,
            "concerted_mode_counts": dict(self.counts),
            "concerted_mode_frequency_per_ps": dict(self.frequency_per_ps),
            "concerted_mode_frequency_std_per_ps": dict(self.frequency_std_per_ps),
        }


_GEOMETRIES = ("collinear", "bent", "reverse")


def _geometry_codes(d_a: np.ndarray, d_b: np.ndarray) -> np.ndarray:
    """0 (collinear), 1 (bent) or 2 (reverse) for rows of moves ``d_a``, ``d_b`` (shape (k, 3), Å)."""
    c = np.einsum("ij,ij->i", d_a, d_b) / np.maximum(np.linalg.norm(d_a, axis=1) * np.linalg.norm(d_b, axis=1),
                                                     1e-300)
    return np.where(c >= MODE_COS, 0, np.where(c <= -MODE_COS, 2, 1))


def pair_geometry(d_a: np.ndarray, d_b: np.ndarray) -> str:
    """``collinear``, ``bent`` or ``reverse`` from the angle between two moves (vectors, Å); see :data:`MODE_COS`."""
    return _GEOMETRIES[int(_geometry_codes(np.reshape(d_a, (1, 3)), np.reshape(d_b, (1, 3)))[0])]


def _mode_codes(ka: np.ndarray, kb: np.ndarray, move: np.ndarray, A: np.ndarray, B: np.ndarray,
                type_idx: np.ndarray | None, n_types: int) -> np.ndarray:
    """Integer code of every pair's mode: geometry (0 collinear, 1 bent, 2 reverse) and, with types, the
    types of A, B and C (:func:`_mode_name` turns a code into the mode's name)."""
    g = _geometry_codes(move[ka], move[kb])
    if type_idx is None:
        return g
    return ((type_idx[A[ka]] * n_types + type_idx[B[ka]]) * n_types + type_idx[B[kb]]) * 3 + g


def _mode_name(code: int, types: np.ndarray | None) -> str:
    geom = _GEOMETRIES[code % 3]
    if types is None:
        return geom
    nt = len(types)
    t = code // 3
    ta, tb, tc = t // (nt * nt), (t // nt) % nt, t % nt
    return f"{types[ta]}->{types[tb]}+{types[tb]}->{types[tc]} {geom}"


def hop_concerted_modes(hops: Any, n_ions: int, total_time_ps: float, window_ps: float = 1.0,
                        site_types: np.ndarray | None = None, n_null: int = 200, seed: int = 0) -> ConcertedModes:
    """Concerted modes (A→B with B→C within ``window_ps``) of a hop table and their chance baseline; see
    :class:`ConcertedModes`.

    Parameters
    ----------
    hops : HopTable
        Hops of the ``"sites"`` method (``from_centre``/``to_centre`` are shared site indices).
    n_ions : int
        Mobile ions (the frequencies are per ion).
    total_time_ps : float
        Length of the run, ps.
    window_ps : float
        Largest time between the two arrivals, ps.
    site_types : ndarray of str, shape (n_sites,), optional
        Type of every site; None or a single type: modes named by geometry only.
    n_null : int
        Draws of the independent-timing baseline (each ion's hops shifted in time by its own random circular
        offset); 0: none. Tables of more than 10^5 closed hops get fewer draws (``2·10^7 / hops``, at least
        20): each draw sorts all hops (200 draws of 15,000 hops: ~2.6 s of CPU).
    seed : int
        Seed of the draws.

    Returns
    -------
    ConcertedModes
    """
    c = hops.columns if hasattr(hops, "columns") else hops
    keep = ~np.asarray(c["open"], bool)
    ion = np.asarray(c["ion"])[keep]
    t = np.asarray(c["end_time_ps"], float)[keep]
    A = np.asarray(c["from_centre"], np.int64)[keep]
    B = np.asarray(c["to_centre"], np.int64)[keep]
    fr = np.column_stack([np.asarray(c[f"from_{x}_A"], float)[keep] for x in "xyz"])
    to = np.column_stack([np.asarray(c[f"to_{x}_A"], float)[keep] for x in "xyz"])
    move = to - fr
    typed = site_types is not None and len(set(np.asarray(site_types).astype(str).tolist())) > 1
    if typed:
        types, type_idx = np.unique(np.asarray(site_types).astype(str), return_inverse=True)
        type_idx = type_idx.ravel()
    else:
        types, type_idx = None, None
    n_t = len(types) if types is not None else 1

    def count(times: np.ndarray) -> np.ndarray:
        pairs = mode_pairs(ion, times, A, B, window_ps)
        return np.bincount(_mode_codes(pairs[:, 0], pairs[:, 1], move, A, B, type_idx, n_t),
                           minlength=3 * n_t**3)

    obs = count(t)
    counts = {_mode_name(int(k), types): int(obs[k]) for k in np.flatnonzero(obs)}
    per = n_ions * total_time_ps
    freq = {k: v / per for k, v in counts.items()} if per > 0 else {k: None for k in counts}
    std = {k: (float(freq[k] / np.sqrt(v)) if freq[k] is not None else None) for k, v in counts.items()}
    out = ConcertedModes(float(window_ps), int(n_ions), float(total_time_ps), int(keep.sum()),
                         [str(x) for x in types] if types is not None else [], dict(sorted(counts.items())),
                         int(obs.sum()), freq, std, null_seed=int(seed))
    if n_null <= 0:
        return out
    if len(ion) < 2 or len(np.unique(ion)) < 2:
        out.null_reason = "fewer than two ions with closed hops: no pairs, by chance or not"
        return out
    if not total_time_ps > 0:
        out.null_reason = "run of zero length"
        return out
    n_null = int(min(n_null, max(20, 20_000_000 // len(ion))))
    rng = np.random.default_rng(seed)
    _, ion_idx = np.unique(ion, return_inverse=True)
    ion_idx = ion_idx.ravel()
    t0 = t - t.min()
    null = np.stack([count((t0 + rng.uniform(0.0, total_time_ps, ion_idx.max() + 1)[ion_idx]) % total_time_ps)
                     for _ in range(n_null)])
    tot = null.sum(1)
    if out.n_pairs == 0 and not tot.any():
        out.null_reason = (f"no pair in the run or in any of {n_null} draws: no two ions' hops share a site, or "
                           "too seldom to tell")
        return out
    mean = null.mean(0)
    out.null_draws = int(n_null)
    out.null_pairs_mean = float(tot.mean())
    out.null_pairs_std = float(tot.std(ddof=1)) if n_null > 1 else None
    out.null_counts_mean = {_mode_name(int(k), types): float(mean[k]) for k in np.flatnonzero(mean + obs)}
    out.null_counts_mean = dict(sorted(out.null_counts_mean.items()))
    out.excess_pairs = float(out.n_pairs - tot.mean())
    out.p_value = float((1 + np.count_nonzero(tot >= out.n_pairs)) / (1 + n_null))
    out.p_value_fewer = float((1 + np.count_nonzero(tot <= out.n_pairs)) / (1 + n_null))
    out.null_reason = None
    return out


def mode_arrhenius(temperatures_K: Sequence[float], counts: Sequence[dict[str, int] | None],
                   frequencies: Sequence[dict[str, float] | None],
                   min_count: int = MIN_MODE_COUNT, min_temperatures: int = 3) -> dict[str, dict[str, Any]]:
    """Arrhenius fit of every concerted mode's frequency over a temperature series, and of all pairs (``"all"``).

    ``ν_mode = ν0 exp(-Ea / k_B T)``, weighted least squares of ln ν against 1/T with the Poisson errors
    ν/sqrt(count) (:func:`iondiff_stream.analysis.transport.arrhenius_fit`). A temperature enters a mode's
    fit when the mode has at least ``min_count`` pairs there; with fewer than ``min_temperatures`` such
    temperatures the mode's ``Ea_eV`` is None with the ``reason``.

    Parameters
    ----------
    temperatures_K : sequence of float
    counts, frequencies : sequence of dict or None
        ``concerted_mode_counts`` and ``concerted_mode_frequency_per_ps`` (per ion per ps) of each run
        (:class:`ConcertedModes`); None for a run without them.
    min_count, min_temperatures : int

    Returns
    -------
    dict
        Mode → ``Ea_eV``, ``Ea_err_eV`` (1σ), ``Ea_ci95_eV`` ([low, high], ±1.96σ), ``prefactor_per_ps``,
        ``n_points``, ``temperatures_K`` and ``counts`` used, ``reason`` (None when fitted).
    """
    from iondiff_stream.analysis.transport import arrhenius_fit

    T = np.asarray(temperatures_K, float)
    c_runs = [dict(c or {}) for c in counts]
    f_runs = [dict(f or {}) for f in frequencies]
    for c, f in zip(c_runs, f_runs):
        total = sum(c.values())
        if total:
            per = next((c[k] / f[k] for k in c if f.get(k)), None)  # ions x time of the run
            c["all"], f["all"] = total, (total / per if per else None)
    names = sorted({k for c in c_runs for k in c if k != "all"}) + ["all"]
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        use = [i for i, (c, f) in enumerate(zip(c_runs, f_runs)) if c.get(name, 0) >= min_count and f.get(name)]
        res: dict[str, Any] = {"Ea_eV": None, "Ea_err_eV": None, "Ea_ci95_eV": None, "prefactor_per_ps": None,
                               "n_points": len(use), "temperatures_K": [float(T[i]) for i in use],
                               "counts": [int(c_runs[i].get(name, 0)) for i in range(len(T))], "reason": None}
        if len(use) < min_temperatures:
            res["reason"] = (f"{len(use)} of {len(T)} temperatures have at least {min_count} pairs of this mode; "
                             f"an activation energy needs {min_temperatures}")
        else:
            y = np.array([f_runs[i][name] for i in use], float)
            n = np.array([c_runs[i][name] for i in use], float)
            fit = arrhenius_fit(T[use], y, y / np.sqrt(n))
            ea, err = fit["Ea_eV"], fit["Ea_err_eV"]
            res.update({"Ea_eV": ea, "Ea_err_eV": err, "Ea_ci95_eV": [ea - 1.96 * err, ea + 1.96 * err],
                        "prefactor_per_ps": fit["prefactor"]})
        out[name] = res
    return out


def assign_polyhedra(
    positions: np.ndarray,
    anions: np.ndarray,
    vertices: np.ndarray,
    box: np.ndarray,
    n_candidates: int = 8,
    tol: float = 1e-9,
) -> np.ndarray:
    """Tetrahedron (given by its anion corners, moving with them) containing each ion in each frame.

    The polyhedral assignment of site-analysis (Morgan): an ion is at a site when
    it lies inside the tetrahedron spanned by the site's four anions in that
    frame; otherwise it is unassigned (-1).

    Parameters
    ----------
    positions : ndarray, shape (n, T, 3)
        Ions, Å.
    anions : ndarray, shape (m, T, 3)
        Framework anions, Å, same frames.
    vertices : ndarray, shape (s, 4), int
    box : ndarray, shape (6,)
    n_candidates : int
        Only the tetrahedra with the nearest centroids are tested.

    Returns
    -------
    ndarray, shape (n, T), int32 (-1 = in no tetrahedron)
    """
    from MDAnalysis.lib.distances import distance_array

    if vertices.shape[1] != 4:
        raise AnalysisError("polyhedral assignment needs tetrahedra (4 vertices)")
    n, T, _ = positions.shape
    b32 = np.asarray(box, np.float32)

    def mi(v: np.ndarray) -> np.ndarray:
        return minimum_image(v, box)

    out = np.full((n, T), -1, dtype=np.int32)
    k = min(n_candidates, len(vertices))
    for t in range(T):
        V = anions[vertices, t, :]  # (s, 4, 3)
        p0 = V[:, 0, :]
        E = mi(V[:, 1:, :] - p0[:, None, :])  # (s, 3, 3) edges as rows
        cen = p0 + E.sum(1) / 4.0
        Einv = np.linalg.inv(E)  # x - p0 = lam @ E  ->  lam = (x - p0) @ Einv
        x = positions[:, t, :]
        cand = np.argsort(distance_array(x, _wrap(cen, box), box=b32), axis=1)[:, :k]  # (n, k)
        d = mi(x[:, None, :] - p0[cand])  # (n, k, 3)
        lam = np.einsum("nki,nkij->nkj", d, Einv[cand])
        inside = (lam >= -tol).all(2) & (lam.sum(2) <= 1 + tol)
        has = inside.any(1)
        first = inside.argmax(1)
        out[has, t] = cand[has, first[has]]
    return out


def delaunay_tetrahedra(anion_positions: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All tetrahedral holes of a periodic anion framework (Delaunay tetrahedralisation).

    Parameters
    ----------
    anion_positions : ndarray, shape (m, 3)
        One frame, Å.
    box : ndarray, shape (6,)

    Returns
    -------
    vertices : ndarray, shape (s, 4), int
        Anion indices of every tetrahedron (each hole once).
    centroids : ndarray, shape (s, 3)
        Wrapped centroids, Å.
    """
    from scipy.spatial import Delaunay

    h = _h(box)
    m = len(anion_positions)
    base = _wrap(np.asarray(anion_positions, float), box)
    shifts = np.stack(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij"), -1).reshape(-1, 3)
    pts = np.concatenate([base + s @ h for s in shifts])
    idx = np.tile(np.arange(m), len(shifts))
    tri = Delaunay(pts)
    simp = tri.simplices
    cen = pts[simp].mean(1)
    f = cen @ np.linalg.inv(h)
    inside = np.all((f >= 0) & (f < 1), axis=1)
    vert = idx[simp[inside]]
    return vert, _wrap(cen[inside], box)


@dataclass
class SiteMatch:
    """Labels of polyhedral holes from a labelled reference (see :func:`match_reference_sites`).

    Attributes
    ----------
    labels : ndarray of str, shape (n_holes,)
    hole_of_reference : ndarray of int, shape (n_ref,)
        Hole each labelled reference site was matched to.
    distance_A : ndarray, shape (n_ref,)
        Reference site to its hole's centre, Å.
    tol_A : float
    unmatched_fraction : float
        Share of reference sites farther than ``tol_A`` from their hole (they
        are still matched, so no type is lost, but the match is doubtful).
    n_conflicts : int
        Reference sites whose nearest hole was taken by another one (resolved
        by an optimal one-to-one assignment).
    """

    labels: np.ndarray
    hole_of_reference: np.ndarray
    distance_A: np.ndarray
    tol_A: float
    unmatched_fraction: float
    n_conflicts: int

    def summary(self) -> dict[str, Any]:
        """Numbers for JSON output."""
        return {
            "reference_match_tolerance_A": self.tol_A,
            "unmatched_reference_fraction": self.unmatched_fraction,
            "reference_match_conflicts": self.n_conflicts,
            "reference_to_hole_distance_median_A": float(np.median(self.distance_A)) if len(self.distance_A) else None,
            "reference_to_hole_distance_max_A": float(self.distance_A.max()) if len(self.distance_A) else None,
        }


def match_reference_sites(
    centres: np.ndarray, ref_positions: np.ndarray, ref_labels: np.ndarray, box: np.ndarray,
    tol_A: float | None = None, default: str = "unlabelled",
) -> SiteMatch:
    """Label polyhedral holes by matching every labelled reference site to its nearest hole centre.

    The match goes from the reference to the holes, so every reference site
    (every site type) is kept even where the run's frame-0 holes are distorted
    away from the ideal positions; holes no reference site picks get
    ``default``. Two reference sites never share a hole: conflicts are resolved
    by a minimum-total-distance one-to-one assignment
    (``scipy.optimize.linear_sum_assignment``).

    Parameters
    ----------
    centres : ndarray, shape (n_holes, 3)
        Hole (polyhedron) centres, Å.
    ref_positions : ndarray, shape (n_ref, 3)
        Aligned labelled reference sites, Å.
    ref_labels : ndarray of str, shape (n_ref,)
    box : ndarray, shape (6,)
    tol_A : float, optional
        Distance beyond which a match counts as unmatched. Default (from the
        data): half the median distance between neighbouring hole centres.
    default : str

    Returns
    -------
    SiteMatch
    """
    from MDAnalysis.lib.distances import distance_array
    from scipy.optimize import linear_sum_assignment

    c = np.asarray(centres, float)
    r = np.asarray(ref_positions, float)
    if len(r) > len(c):
        raise AnalysisError(f"{len(r)} labelled reference sites but only {len(c)} holes to match them to")
    b32 = np.asarray(box, np.float32)
    if tol_A is None:
        dc = distance_array(c, c, box=b32)
        np.fill_diagonal(dc, np.inf)
        tol_A = 0.5 * float(np.median(dc.min(1)))
    d = distance_array(r, c, box=b32)
    near = d.argmin(1)
    counts = np.bincount(near, minlength=len(c))
    n_conf = int((counts[near] > 1).sum())
    if n_conf:
        rows, cols = linear_sum_assignment(d)
        near = np.empty(len(r), dtype=np.int64)
        near[rows] = cols
    dist = d[np.arange(len(r)), near]
    labels = np.full(len(c), default, dtype=object)
    labels[near] = np.asarray(ref_labels)
    return SiteMatch(labels.astype(str), near, dist, float(tol_A), float(np.mean(dist > tol_A)) if len(r) else 0.0,
                     n_conf)


def analyse_sites(
    mob: Any,
    an: Any,
    frame0_positions: np.ndarray,
    frame0_elements: np.ndarray | None,
    *,
    reference_atoms: Any = None,
    labels: dict[str, str] | None = None,
    default_label: str = "other",
    anchor: str | None = None,
    window_ps: float = 1.0,
    align_tol_A: float | None = None,
    match_tol_A: float | None = None,
) -> dict[str, Any]:
    """Tetrahedral-site analysis of a run: site fractions, residence times per type, concerted modes.

    Sites are the tetrahedral holes of the ``framework`` anions (periodic Delaunay of the first frame),
    each moving with its four anions; a mobile ion is at the site whose tetrahedron contains it.

    The frames are read by the orchestrator (:func:`iondiff_stream.pipeline.analyse_sites` reads a run's
    files once and calls this).

    Parameters
    ----------
    mob, an : TrajectoryData
        Unwrapped positions (no drift removal) of the mobile ions and of the framework anions.
    frame0_positions : ndarray, shape (n_atoms, 3)
        Positions of every atom in the first frame, Å (to align the reference).
    frame0_elements : ndarray of str, shape (n_atoms,), or None
    reference_atoms : ase.Atoms, optional
        Structure with labelled sites, aligned on ``anchor`` atoms.
    labels : dict, optional
        Species of the reference → site-type label (e.g. ``{"Li": "T5", "Se": "T4"}``).
    default_label : str
        Type of holes not near a labelled reference site.
    anchor : str, optional
        Framework species present in both the reference and the run (e.g. ``"P"``); the reference is
        put onto frame 0 by a least-squares periodic translation of these atoms (:func:`align_reference`).
    align_tol_A : float, optional
        Largest anchor residual accepted after the alignment (default from the data, see
        :func:`align_reference`).
    match_tol_A : float, optional
        Reference-site-to-hole distance beyond which a match counts as unmatched (default from the
        data, see :func:`match_reference_sites`).

    Returns
    -------
    dict
        ``n_sites``, ``site_types`` (count per type), ``fraction`` (of assigned ion-frames per type),
        ``assigned_fraction``, ``mean_residence_frames``, ``mean_residence_ps``, ``n_residences``,
        ``concerted`` (see :func:`concerted_modes`), and with a reference ``reference_match``
        (:meth:`SiteMatch.summary`: tolerance, unmatched fraction, distances).
    """
    vert, cen = delaunay_tetrahedra(an.positions[0], mob.box)
    types = np.full(len(vert), default_label, dtype=object)
    match = None
    if reference_atoms is not None:
        if anchor is None:
            raise AnalysisError("aligning a reference structure needs an anchor species (e.g. 'P')")
        ref = reference_atoms
        cell = np.asarray(ref.cell[:])
        reps = np.maximum(1, np.rint(np.diag(_h(mob.box)) / np.linalg.norm(cell, axis=1)).astype(int))
        ref = ref.repeat(tuple(int(r) for r in reps))
        al = align_reference(ref.get_scaled_positions() @ _h(mob.box), np.array(ref.get_chemical_symbols()),
                             np.asarray(frame0_positions, float), frame0_elements, mob.box, anchor,
                             tol_A=align_tol_A)
        names = np.array(ref.get_chemical_symbols())
        lab = np.array([(labels or {}).get(s, "") for s in names], dtype=object)
        keep = lab != ""
        if keep.any():
            match = match_reference_sites(cen, al[keep], lab[keep].astype(str), mob.box, tol_A=match_tol_A,
                                          default=default_label)
            types = match.labels.astype(object)
    a = assign_polyhedra(mob.ion_major(), an.ion_major(), vert, mob.box)
    assigned = a >= 0
    types_all = np.append(types.astype(str), "__unassigned__")
    a_full = np.where(assigned, a, len(vert))
    st = site_statistics(a_full, types_all, len(vert) + 1, mob.timestep_ps)
    frac_un = st.fraction.pop("__unassigned__", 0.0)
    for d in (st.mean_residence_frames, st.mean_residence_ps, st.n_residences):
        d.pop("__unassigned__", None)
    norm = 1.0 - frac_un
    return {
        "n_sites": int(len(vert)),
        "site_types": {k: int(v) for k, v in zip(*np.unique(types.astype(str), return_counts=True))},
        "assigned_fraction": float(assigned.mean()),
        "fraction": {k: (v / norm if norm > 0 else float("nan")) for k, v in st.fraction.items()},
        "mean_residence_frames": st.mean_residence_frames,
        "mean_residence_ps": st.mean_residence_ps,
        "n_residences": st.n_residences,
        "concerted": concerted_modes(a_full, types_all, mob.timestep_ps, window_ps),
        "reference_match": match.summary() if match is not None else None,
    }
