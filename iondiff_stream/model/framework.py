"""Sites from the framework's own geometry, kept where the mobile ions reside, moving with the framework.

On a sublattice where the mobile ions are spread almost continuously (α-AgI: tetrahedral sites
1.8 Å apart joined by shallow channels, the iodide framework vibrating by ~0.5 Å), density peaks of
the pooled positions merge neighbouring sites or never form, and sites fixed in space cannot follow
the cage an ion sits in. Here the candidates are the polyhedral holes of the counter-ion framework
(:func:`~iondiff_stream.model.sites.framework_holes`), each attached to its vertex atoms, so that in every
frame a site sits where its polyhedron is; a candidate is kept when ions *reside* in it (a visit of at
least the minimum residence), and its position is refined to where they reside (an ion off-centre in its
polyhedron moves the site with it).

Which model describes a run is measured, not assumed (:func:`choose_site_model`): the framework model
is used when the ions spend at least as much time in its sites' cores as in those of the density model
(within ``tolerance``); otherwise (ions off the framework's holes, e.g. a lattice unrelated to the
framework) the density peaks are kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from iondiff_stream.model.checks import sample_checks
from iondiff_stream.model.rule import visits
from iondiff_stream.model.sites import SiteModel, anchor_atoms, framework_holes

logger = logging.getLogger(__name__)

__all__ = ["FrameworkFrames", "framework_site_model", "choose_site_model", "given_sites_check", "sample_chunks"]


@dataclass
class FrameworkFrames:
    """Framework positions that go with the mobile ions' frames.

    Attributes
    ----------
    positions : ndarray, shape (T, M, 3)
        Unwrapped framework positions, drift removed like the mobile ions', Å.
    species : ndarray of str, shape (M,)
    """

    positions: np.ndarray
    species: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        """Time-averaged positions, shape (M, 3), Å."""
        if not hasattr(self, "_mean"):
            self._mean = np.asarray(self.positions, dtype=np.float64).mean(axis=0)
        return self._mean


def sample_chunks(n_frames: int, max_frames: int = 4000, n_chunks: int = 4) -> list[tuple[int, int]]:
    """Frame ranges used to choose sites: all frames, or ``n_chunks`` evenly spaced contiguous chunks."""
    if n_frames <= max_frames:
        return [(0, n_frames)]
    c = max_frames // n_chunks
    starts = np.linspace(0, n_frames - c, n_chunks).astype(int)
    return [(int(s), int(s) + c) for s in starts]


def _residence(states: np.ndarray, n_sites: int, m_res: int) -> tuple[np.ndarray, np.ndarray]:
    """Per site: frames in its core, and frames of visits lasting at least ``m_res`` frames."""
    frames = np.bincount(states[states >= 0].ravel(), minlength=n_sites).astype(np.float64)
    ion, site, first, last = visits(states)
    long = (last - first + 1) >= m_res
    resid = np.bincount(site[long], weights=(last - first + 1)[long].astype(float), minlength=n_sites)
    return frames, resid


def framework_site_model(
    read_frames: Any, n_frames: int, framework: FrameworkFrames, mobile_species: Any, box: np.ndarray,
    r_core_A: np.ndarray, m_res: int, min_site_frames: float = 5.0, core_cap: float = 0.45,
) -> SiteModel | None:
    """Holes of the framework kept where the ions reside, attached to the framework.

    Parameters
    ----------
    read_frames : callable
        ``read_frames(t0, t1)`` → mobile positions of frames ``[t0, t1)``, shape (t1 - t0, n, 3), Å.
    n_frames : int
    framework : FrameworkFrames
    mobile_species : sequence of str
    box : ndarray, shape (6,)
    r_core_A : ndarray, shape (n,)
        Core radius of every ion before the per-site cap, Å.
    m_res : int
        Minimum residence, frames.
    min_site_frames : float
        Ion-frames of residence a hole needs to be kept.
    core_cap : float

    Returns
    -------
    SiteModel or None
        ``kind="framework holes"``; None when no hole holds a residence.
    """
    use = anchor_atoms(mobile_species, framework.species)
    idx = np.flatnonzero(use)
    mean = framework.mean
    try:
        centres, anchors, shifts = framework_holes(mean[idx], box)
    except Exception as exc:  # noqa: BLE001 - degenerate frameworks: no holes, use the density model
        logger.info("no framework holes (%s)", exc)
        return None
    anchors = np.where(anchors >= 0, idx[np.maximum(anchors, 0)], -1)
    names = sorted({str(x) for x in np.asarray(framework.species)[idx]})
    chunks = sample_chunks(n_frames)

    def model_of(c: np.ndarray, a: np.ndarray, sh: np.ndarray, w: np.ndarray) -> SiteModel:
        m = SiteModel(c, box, w, core_cap=core_cap, anchors=a, anchor_shift_A=sh,
                      kind=f"framework holes ({'/'.join(names)})")
        m.set_reference(mean)
        return m

    model = model_of(centres, anchors, shifts, np.ones(len(centres)))
    frames = np.zeros(model.n_sites)
    resid = np.zeros(model.n_sites)
    for t0, t1 in chunks:
        st = model.assign_frames(read_frames(t0, t1), framework.positions[t0:t1], r_core_A)
        f, r = _residence(st, model.n_sites, m_res)
        frames += f
        resid += r
    # kept: holes where ions stay (in-core ion-frames of at least a residence and min_site_frames); a hole no
    # ion enters, or only crosses, is no site
    keep = (frames >= max(min_site_frames, float(m_res))) & (resid > 0)
    if not keep.any():
        return None
    model = model_of(centres[keep], anchors[keep], shifts[keep], frames[keep])
    # refine: where the ions reside relative to each kept hole's vertices (off-centre sites move with them)
    dev = np.zeros((model.n_sites, 3))
    dev2 = np.zeros(model.n_sites)
    cnt = np.zeros(model.n_sites)
    nvis = np.zeros(model.n_sites)
    for t0, t1 in chunks:
        x = read_frames(t0, t1)
        fw = framework.positions[t0:t1]
        st = model.assign_frames(x, fw, r_core_A)
        S = model.positions_at(fw)
        t, i = np.nonzero(st >= 0)
        k = st[t, i]
        d = model.minimum_image(x[t, i] - S[t, k])
        np.add.at(dev, k, d)
        np.add.at(dev2, k, np.einsum("ij,ij->i", d, d))
        cnt += np.bincount(k, minlength=model.n_sites)
        nvis += np.bincount(visits(st)[1], minlength=model.n_sites)
    c = np.maximum(cnt, 1)[:, None]
    shift = dev / c
    # the frames of one visit are correlated: the standard error of the shift counts visits, not frames;
    # a shift within three standard errors is noise (a symmetric hole keeps its centre)
    var = np.maximum(dev2 / c[:, 0] - np.einsum("ij,ij->i", shift, shift), 0.0)
    se2 = var / np.maximum(nvis, 1)
    shift[np.einsum("ij,ij->i", shift, shift) <= 9.0 * se2] = 0.0
    refined = model_of(model.sites_A + shift, model.anchors, model.anchor_shift_A, model.weight)
    logger.info("framework holes of %s: %d candidates, %d kept (residences of >= %d frames)", "/".join(names),
                len(centres), refined.n_sites, m_res)
    refined.sample_states_ = [refined.assign_frames(read_frames(t0, t1), framework.positions[t0:t1], r_core_A)
                              for t0, t1 in chunks]
    return refined


def in_core_fraction(model: SiteModel, read_frames: Any, n_frames: int, framework: FrameworkFrames | None,
                     r_core_A: np.ndarray) -> float:
    """Share of ion-frames (in the sample chunks) spent in a site's core."""
    tot = inside = 0
    cached = getattr(model, "sample_states_", None)
    for c, (t0, t1) in enumerate(sample_chunks(n_frames)):
        if cached is not None:
            st = cached[c]
        else:
            st = model.assign_frames(read_frames(t0, t1), None if framework is None else framework.positions[t0:t1],
                                     r_core_A)
        tot += st.size
        inside += int((st >= 0).sum())
    return inside / max(tot, 1)


def _sample(model: SiteModel, read_frames: Any, n_frames: int, framework: FrameworkFrames | None,
            r_core_A: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None, np.ndarray]]:
    """(positions, framework, states) of the sample chunks under ``model``."""
    cached = getattr(model, "sample_states_", None)
    out = []
    for c, (t0, t1) in enumerate(sample_chunks(n_frames)):
        x = read_frames(t0, t1)
        fw = None if (framework is None or not model.moving) else framework.positions[t0:t1]
        st = cached[c] if cached is not None else model.assign_frames(x, fw, r_core_A)
        out.append((x, fw, st))
    return out


def _far(rest_r: float, model: SiteModel) -> float:
    """How far from every site a rest must be to count: 1.5 core radii, and at least 0.6 of the typical
    nearest-site distance (an ion at the edge of a small core, e.g. when σ is underestimated on a short run,
    is not resting in a missing site; one in a missing site is a whole site spacing away)."""
    nn = float(np.median(model.nn_A)) if model.n_sites else 0.0
    return max(1.5 * rest_r, 0.6 * nn)


def _check_dict(chk: Any, samp: list[tuple[np.ndarray, np.ndarray | None, np.ndarray]]) -> dict[str, Any]:
    d = chk.to_dict()
    d["transit_fraction"] = 1.0 - sum(int((st >= 0).sum()) for _, _, st in samp) / max(sum(st.size for _, _, st in samp), 1)
    return d


def choose_site_model(density: SiteModel, read_frames: Any, n_frames: int, framework: FrameworkFrames | None,
                      mobile_species: Any, box: np.ndarray | None, r_core_A: np.ndarray, m_res: int,
                      min_site_frames: float = 5.0, core_cap: float = 0.45, force_framework: bool = False,
                      ) -> tuple[SiteModel, dict[str, Any]]:
    """The site model whose self-checks pass: density peaks, or the framework's holes when those fail.

    Density peaks need no lattice and are kept whenever their self-checks
    (:func:`iondiff_stream.model.checks.sample_checks` on sample stretches of the run) do not fail.
    When they warn or fail — ions resting away from every site, hops skipping sites or lasting as long
    as residences: sites merged or never found, as on liquid-like sublattices — the framework's holes
    are tried, and used when their verdict is better.

    Returns
    -------
    model : SiteModel
    info : dict
        ``site_model`` (kind), ``site_model_checks`` (verdict and reasons of each model tried),
        ``in_core_fraction_density`` / ``_framework``, ``n_framework_holes_kept``.
    """
    rank = {"ok": 0, "warn": 1, "fail": 2, "not applicable": 0}
    cap = float(np.median(density.core_cap_A)) if density.n_sites else 1.0
    rest_r = float(np.median(np.minimum(r_core_A, cap)))
    far = _far(rest_r, density)
    info: dict[str, Any] = {"site_model": density.kind, "in_core_fraction_framework": None}
    samp_d = _sample(density, read_frames, n_frames, None, r_core_A)
    chk_d = sample_checks(density, samp_d, m_res, rest_r, far)
    fd = sum(int((st >= 0).sum()) for _, _, st in samp_d) / max(sum(st.size for _, _, st in samp_d), 1)
    info["in_core_fraction_density"] = fd
    info["site_model_checks"] = {"density peaks": {"verdict": chk_d.verdict, "reasons": chk_d.reasons,
                                                   **{k: v for k, v in chk_d.to_dict().items() if k.endswith(("fraction", "_nn", "residence"))}}}
    info["site_check"] = _check_dict(chk_d, samp_d)
    if framework is None or box is None or framework.positions.shape[1] < 4:
        return density, info
    if chk_d.verdict == "ok" and not force_framework:
        return density, info
    fm = framework_site_model(read_frames, n_frames, framework, mobile_species, box, r_core_A, m_res,
                              min_site_frames, core_cap)
    if fm is None:
        return density, info
    samp_f = _sample(fm, read_frames, n_frames, framework, r_core_A)
    chk_f = sample_checks(fm, samp_f, m_res, rest_r, far)
    ff = sum(int((st >= 0).sum()) for _, _, st in samp_f) / max(sum(st.size for _, _, st in samp_f), 1)
    info["in_core_fraction_framework"] = ff
    info["n_framework_holes_kept"] = fm.n_sites
    info["site_model_checks"][fm.kind] = {"verdict": chk_f.verdict, "reasons": chk_f.reasons,
                                          **{k: v for k, v in chk_f.to_dict().items() if k.endswith(("fraction", "_nn", "residence"))}}
    # the framework's holes replace the density peaks only when their verdict is better (on a run where
    # both warn, the model that needs no lattice is kept)
    better = rank[chk_f.verdict] < rank[chk_d.verdict]
    if better or force_framework:
        info["site_model"] = fm.kind
        info["site_check"] = _check_dict(chk_f, samp_f)
        logger.info("sites: %s (self-check %s; density peaks: %s)", fm.kind, chk_f.verdict, "; ".join(chk_d.reasons))
        return fm, info
    logger.info("sites: density peaks kept (self-check %s; framework holes %s)", chk_d.verdict, chk_f.verdict)
    return density, info


def given_sites_check(model: SiteModel, read_frames: Any, n_frames: int, framework: FrameworkFrames | None,
                      r_core_A: np.ndarray, m_res: int) -> dict[str, Any]:
    """The self-checks of a site model given by the caller (e.g. a known lattice), as a summary dict."""
    cap = float(np.median(model.core_cap_A)) if model.n_sites else 1.0
    rest_r = float(np.median(np.minimum(r_core_A, cap)))
    samp = _sample(model, read_frames, n_frames, framework, r_core_A)
    return _check_dict(sample_checks(model, samp, m_res, rest_r, _far(rest_r, model)), samp)
