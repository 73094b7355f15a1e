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
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from MDAnalysis.lib.mdamath import triclinic_vectors

from .errors import AnalysisError

logger = logging.getLogger(__name__)

__all__ = ["find_sites", "align_reference", "assign_sites", "site_statistics", "site_jumps", "concerted_modes",
           "polyhedral_vertices", "assign_polyhedra", "delaunay_tetrahedra", "label_sites", "analyse_sites",
           "SiteStatistics"]


def _h(box: np.ndarray) -> np.ndarray:
    return triclinic_vectors(np.asarray(box, dtype=np.float32)).astype(np.float64)


def _wrap(x: np.ndarray, box: np.ndarray) -> np.ndarray:
    h = _h(box)
    f = x @ np.linalg.inv(h)
    return (f - np.floor(f)) @ h


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
    h = _h(box)
    out = []
    for k in np.unique(lab):
        members = c[lab == k]
        ref = members[0]
        f = (members - ref) @ np.linalg.inv(h)
        f -= np.rint(f)  # unwrap around the first member
        out.append(ref + np.average(f @ h, axis=0, weights=w[lab == k]))
    return _wrap(np.array(out), box)


def align_reference(
    ref_positions: np.ndarray,
    ref_species: np.ndarray,
    traj_positions: np.ndarray,
    traj_species: np.ndarray,
    box: np.ndarray,
    anchor: str,
    tol_A: float = 1.0,
) -> np.ndarray:
    """Translate reference positions onto the run's frame using an anchor species.

    Tries every translation mapping the first anchor atom of the trajectory onto
    an anchor site of the reference, and keeps the one that maps all anchor
    atoms onto reference anchor sites best (all within ``tol_A``).

    Returns
    -------
    ndarray, shape (n_ref, 3)
        Translated (wrapped) reference positions, Å.
    """
    from MDAnalysis.lib.distances import distance_array

    ra = ref_positions[np.asarray(ref_species) == anchor]
    ta = traj_positions[np.asarray(traj_species) == anchor]
    if len(ra) == 0 or len(ta) == 0:
        raise AnalysisError(f"anchor species {anchor!r} missing from the reference or the trajectory")
    b32 = np.asarray(box, np.float32)
    best, best_err = None, np.inf
    for r in ra:
        shift = ta[0] - r
        moved = _wrap(ra + shift, box)
        err = distance_array(ta, moved, box=b32).min(1).max()
        if err < best_err:
            best, best_err = shift, err
    if best is None or best_err > tol_A:
        raise AnalysisError(f"cannot align the reference: best {anchor} mismatch {best_err:.2f} Å > {tol_A} Å")
    logger.info("reference aligned on %s (max mismatch %.3f Å)", anchor, best_err)
    return _wrap(ref_positions + best, box)


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
    if len(j):
        order = np.argsort(j[:, 1], kind="stable")
        j = j[order]
        frames = j[:, 1]
        # leaver b: B->C ; follower a: A->B, |t_a - t_b| <= w, a != b
        by_from: dict[int, list[int]] = {}
        for k, row in enumerate(j):
            by_from.setdefault(int(row[2]), []).append(k)
        for ka, (ia, ta, A, B) in enumerate(j):
            for kb in by_from.get(int(B), []):
                ib, tb, _, C = j[kb]
                if ib != ia and abs(int(tb) - int(ta)) <= w and C != A:
                    modes[f"{types[A]}->{types[B]}+{types[B]}->{types[C]}"] += 1
        del frames
    per = n * total_ps if total_ps > 0 else float("nan")
    return {
        "jumps_per_type_pair": dict(single),
        "jump_frequency_per_ps": {k: v / per for k, v in single.items()},
        "modes": dict(modes),
        "mode_frequency_per_ps": {k: v / per for k, v in modes.items()},
        "n_concerted_pairs": int(sum(modes.values())),
        "window_ps": window_ps,
    }


def polyhedral_vertices(
    site_positions: np.ndarray, anion_positions: np.ndarray, box: np.ndarray, n_vertices: int = 4
) -> np.ndarray:
    """The ``n_vertices`` anions nearest to each site (the polyhedron's corners).

    Parameters
    ----------
    site_positions : ndarray, shape (s, 3)
    anion_positions : ndarray, shape (m, 3)
        Framework anions in the same frame, Å.

    Returns
    -------
    ndarray, shape (s, n_vertices), int
    """
    from MDAnalysis.lib.distances import distance_array

    d = distance_array(site_positions, anion_positions, box=np.asarray(box, np.float32))
    return np.argsort(d, axis=1)[:, :n_vertices]


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
    h = _h(box)
    hinv = np.linalg.inv(h)
    b32 = np.asarray(box, np.float32)

    def mi(v: np.ndarray) -> np.ndarray:
        f = v @ hinv
        return (f - np.rint(f)) @ h

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


def label_sites(
    sites: np.ndarray, ref_positions: np.ndarray, ref_labels: np.ndarray, box: np.ndarray,
    cutoff_A: float = 0.8, default: str = "unlabelled",
) -> np.ndarray:
    """Label each site by the nearest labelled reference site within ``cutoff_A`` (else ``default``)."""
    from MDAnalysis.lib.distances import distance_array

    d = distance_array(np.asarray(sites, float), np.asarray(ref_positions, float), box=np.asarray(box, np.float32))
    near = d.argmin(1)
    return np.where(d[np.arange(len(sites)), near] < cutoff_A, np.asarray(ref_labels)[near], default).astype(str)


def analyse_sites(
    trajectories: Any,
    mobile: str,
    framework: str,
    *,
    topology: str | None = None,
    timestep_ps: float | None = None,
    md_timestep_ps: float | None = None,
    reference: str | None = None,
    labels: dict[str, str] | None = None,
    default_label: str = "other",
    anchor: str | None = None,
    window_ps: float = 1.0,
) -> dict[str, Any]:
    """Tetrahedral-site analysis of a run: site fractions, residence times per type, concerted modes.

    Sites are the tetrahedral holes of the ``framework`` anions (periodic Delaunay of the first frame),
    each moving with its four anions; a mobile ion is at the site whose tetrahedron contains it.

    Parameters
    ----------
    trajectories, topology, timestep_ps, md_timestep_ps
        As for :func:`iondiff_stream.analyze.analyze_run`.
    mobile : str
        Mobile ions (e.g. ``"Li"``).
    framework : str
        Anions spanning the tetrahedra (e.g. ``"S,Cl"``).
    reference : str, optional
        Structure file (any format ASE reads) with labelled sites, aligned on ``anchor`` atoms.
    labels : dict, optional
        Species of the reference → site-type label (e.g. ``{"Li": "T5", "Se": "T4"}``).
    default_label : str
        Type of holes not near a labelled reference site.
    anchor : str, optional
        Framework species present in both the reference and the run (e.g. ``"P"``).

    Returns
    -------
    dict
        ``n_sites``, ``site_types`` (count per type), ``fraction`` (of assigned ion-frames per type),
        ``assigned_fraction``, ``mean_residence_frames``, ``mean_residence_ps``, ``n_residences``,
        ``concerted`` (see :func:`concerted_modes`).
    """
    from .io import collect_positions, load_universe

    u = load_universe(trajectories, topology)
    mob = collect_positions(u, mobile, timestep_ps=timestep_ps, md_timestep_ps=md_timestep_ps, remove_drift=False)
    an = collect_positions(u, framework, timestep_ps=timestep_ps, md_timestep_ps=md_timestep_ps, remove_drift=False)
    vert, cen = delaunay_tetrahedra(an.positions[0], mob.box)
    types = np.full(len(vert), default_label, dtype=object)
    if reference is not None:
        import ase.io

        if anchor is None:
            raise AnalysisError("aligning a reference structure needs an anchor species (e.g. 'P')")
        ref = ase.io.read(reference)
        cell = np.asarray(ref.cell[:])
        reps = np.maximum(1, np.rint(np.diag(_h(mob.box)) / np.linalg.norm(cell, axis=1)).astype(int))
        ref = ref.repeat(tuple(int(r) for r in reps))
        u.trajectory[0]
        from .io import _elements_of

        al = align_reference(ref.get_scaled_positions() @ _h(mob.box), np.array(ref.get_chemical_symbols()),
                             u.atoms.positions.astype(float), _elements_of(u.atoms), mob.box, anchor)
        names = np.array(ref.get_chemical_symbols())
        lab = np.array([(labels or {}).get(s, "") for s in names], dtype=object)
        keep = lab != ""
        if keep.any():
            types = label_sites(cen, al[keep], lab[keep].astype(str), mob.box, default=default_label).astype(object)
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
    }
