"""Self-checks of a site model and its hops that fail when the hops are wrong, even if Σl² is right.

A site model that misses sites (neighbouring sites merged, or never found) still gives hops whose
squared lengths add up to the MSD: an ion that rests in a missing site is "in transit", and several
real hops become one long one. So the hop/MSD ratio cannot see it; these can:

* ``resting_outside_fraction``: share of ion-time spent *resting away from every site* — windows of a
  residence in transit during which the ion stays within ``rest_radius`` of one point that is at least
  ``far_A`` from every site. An ion in transit between two sites moves; one that sits still outside every core sits in a
  site the model lacks.
* ``transit_fraction``: share of ion-time in no core.
* ``hop_length_over_nn``: median of hop length / the distance from the origin site to its nearest
  other site. Hops go to neighbouring sites (≈ 1); hops that skip missing sites are longer.
* ``hop_duration_over_residence``: median hop duration / median residence time. A hop is quick next
  to a residence; a "hop" through a missing site lasts as long as the residence it hides.
* ``sites_visited_fraction``: sites where some ion resided / sites found (over-splitting or
  spurious sites leave many unvisited).

:func:`sample_checks` measures them on stretches of a run and gives one verdict (``"ok"``, ``"warn"``, ``"fail"``) with reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from iondiff_stream.model.rule import HopRule

__all__ = ["SiteChecks", "sample_checks", "resting_windows", "LIMITS"]

#: shortest rest, frames (with fewer, a slowly moving ion in transit looks like one at rest)
MIN_REST_FRAMES = 4

#: (warn, fail) limits of each check; a value beyond ``warn`` warns, beyond ``fail`` fails
LIMITS: dict[str, tuple[float, float]] = {
    "resting_outside_fraction": (0.05, 0.25),
    "hop_length_over_nn": (1.35, 1.6),
    "hop_duration_over_residence": (0.5, 1.0),
}


def resting_windows(states: np.ndarray, x: np.ndarray, min_frames: int, rest_radius_A: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Windows of ``min_frames`` frames in which one ion rests outside every core.

    Parameters
    ----------
    states : ndarray, shape (T,)
        Core of the ion in every frame, -1 in transit.
    x : ndarray, shape (T, 3)
        Its unwrapped positions, Å.
    min_frames : int
        A rest lasts at least this many frames (a residence).
    rest_radius_A : float
        Resting: the window's first, middle and last positions within this distance of its mean, Å.

    Returns
    -------
    start : ndarray, shape (m,), int64
        First frame of each resting window (all of it in transit).
    mean_A : ndarray, shape (m, 3)
        Mean position in the window, Å.
    """
    w = max(1, int(min_frames))
    out_ = states < 0
    d = np.diff(np.concatenate([[0], out_.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    ks, ms = [], []
    for a, b in zip(starts, ends):
        if b - a < w:
            continue
        seg = x[a:b]
        c = np.cumsum(np.concatenate([np.zeros((1, 3)), seg]), axis=0)
        means = (c[w:] - c[:-w]) / w
        idx = np.arange(len(means))
        r = np.max(np.stack([np.linalg.norm(seg[idx] - means, axis=1), np.linalg.norm(seg[idx + w - 1] - means, axis=1),
                             np.linalg.norm(seg[idx + w // 2] - means, axis=1)]), axis=0)
        ok = r <= rest_radius_A
        ks.append(a + idx[ok])
        ms.append(means[ok])
    if not ks:
        return np.zeros(0, np.int64), np.zeros((0, 3))
    return np.concatenate(ks).astype(np.int64), np.concatenate(ms)


def _frames_covered(starts: np.ndarray, w: int) -> int:
    """Frames in the union of windows ``[s, s + w)``."""
    if len(starts) == 0:
        return 0
    s = np.sort(starts)
    covered = np.minimum(np.diff(s), w).sum() + w
    return int(covered)


@dataclass
class SiteChecks:
    """Self-checks of the sites and hops of one run (see the module docstring).

    Attributes
    ----------
    verdict : {"ok", "warn", "fail", "not applicable"}
    reasons : list of str
        What failed or warned, with the likely cause.
    resting_outside_fraction, transit_fraction, hop_length_over_nn, hop_duration_over_residence,
    sites_visited_fraction : float or None
        None where there is nothing to measure (e.g. no hops).
    """

    verdict: str
    reasons: list[str] = field(default_factory=list)
    resting_outside_fraction: float | None = None
    transit_fraction: float | None = None
    hop_length_over_nn: float | None = None
    hop_duration_over_residence: float | None = None
    sites_visited_fraction: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"site_check": self.verdict, "site_check_reasons": list(self.reasons),
                "resting_outside_fraction": self.resting_outside_fraction, "transit_fraction": self.transit_fraction,
                "hop_length_over_nn": self.hop_length_over_nn,
                "hop_duration_over_residence": self.hop_duration_over_residence,
                "sites_visited_fraction": self.sites_visited_fraction}


def _site_distance(model: Any, points: np.ndarray, framework: np.ndarray | None) -> np.ndarray:
    """Distance of each point (m, 3) to the nearest site (at the framework positions (m, M, 3) of its frame)."""
    if not model.moving or framework is None:
        return model.nearest(points)[1]
    return model.nearest_frames(points[:, None, :], framework)[1][:, 0]


def sample_checks(model: Any, chunks: list[tuple[np.ndarray, np.ndarray | None, np.ndarray]], m_res: int,
                  rest_radius_A: float, far_A: float, min_hops: int = 20) -> SiteChecks:
    """The self-checks of a site model on sample stretches of a run (used to choose the site model).

    Parameters
    ----------
    model : SiteModel
    chunks : list of (x, framework, states)
        Contiguous stretches: ion positions (t, n, 3), framework positions (t, M, 3) or None, and
        the states of ``model`` there (t, n).
    m_res : int
        Minimum residence, frames (also the shortest rest).
    rest_radius_A : float
    far_A : float
        A rest counts when its mean position is at least this far from every site, Å (an ion
        vibrating at the edge of its core is not resting elsewhere).

    Returns
    -------
    SiteChecks
        Hop lengths are site-to-site distances (sites at their mean positions); durations and
        residences are in frames.
    """
    w = max(int(m_res), MIN_REST_FRAMES)  # two frames near one point can be a slow transit; a rest is longer
    lengths, origin, dur, resid = [], [], [], []
    rest = tot = 0
    visited = np.zeros(model.n_sites, dtype=bool)
    for x, _fw, st in chunks:
        n = st.shape[1]
        ev = HopRule(n, m_res).update(st).sorted()
        if len(ev):
            d = model.minimum_image(model.sites_A[ev.to_site] - model.sites_A[ev.from_site])
            lengths.append(np.linalg.norm(d, axis=1))
            origin.append(ev.from_site)
            dur.append(ev.end_frame - ev.start_frame)
            same = ev.ion[1:] == ev.ion[:-1]
            r = ev.start_frame[1:][same] - ev.end_frame[:-1][same]
            resid.append(r[r >= 0])
        for i in range(n):
            if (st[:, i] < 0).sum() >= w:
                k, m = resting_windows(st[:, i], x[:, i], w, rest_radius_A)
                if len(k):
                    far = _site_distance(model, m, None if _fw is None else _fw[k + w // 2]) >= far_A
                    rest += _frames_covered(k[far], w)
        tot += st.size
        visited[np.unique(st[st >= 0])] = True
    cat = (lambda v: np.concatenate(v) if v else np.zeros(0))
    L, O, D, R = cat(lengths), cat(origin).astype(np.int64), cat(dur), cat(resid)
    ch = SiteChecks("ok", [], rest / max(tot, 1), None, None, None, float(visited.mean()) if model.n_sites else None)
    if len(L) >= min_hops:
        ch.hop_length_over_nn = float(np.median(L / np.maximum(model.nn_A[O], 1e-9)))
        if len(R):
            ch.hop_duration_over_residence = float(np.median(D) / max(float(np.median(R)), 1e-12))
    return _verdict(ch)


def _verdict(ch: SiteChecks) -> SiteChecks:
    level = 0
    why = {
        "resting_outside_fraction": "ions rest away from every site ({:.1%} of the ion-time): sites are missing "
                                    "(neighbouring sites merged or never found)",
        "hop_length_over_nn": "hops are {:.2f}x the nearest-site distance: they skip sites the model lacks",
        "hop_duration_over_residence": "hops last {:.2f}x a residence: hops pass through sites the model lacks",
    }
    ch.reasons = []
    for key, (warn, fail) in LIMITS.items():
        v = getattr(ch, key)
        if v is None:
            continue
        if v > fail:
            level = max(level, 2)
            ch.reasons.append("fail: " + why[key].format(v))
        elif v > warn:
            level = max(level, 1)
            ch.reasons.append("warn: " + why[key].format(v))
    ch.verdict = ("ok", "warn", "fail")[level]
    return ch
