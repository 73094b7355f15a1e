"""Streaming sites and hops of arrays of frames: the offline site model and hop rule, fed frame by frame.

:class:`OnlineCentres` is a scikit-learn-style streaming estimator (``partial_fit(frames) -> self``,
fitted state in trailing-underscore attributes) for positions handed over in memory (a notebook, a
custom driver). A frame store is followed by :class:`iondiff_stream.live.hops.LiveHops`, which refits from
the stored frames instead; both count hops with the one rule, :class:`~iondiff_stream.model.rule.HopRule`.

* **Warm-up** (first ``warmup`` frames): sites and vibration amplitudes are learnt from these frames by the
  offline procedure (:func:`iondiff_stream.analysis.hops.learn_sites`), then the frames are counted.
* **Mini-batch k-means** of the sites: every in-core frame moves its site by ``(x - c) / n`` (minimum image;
  ``n`` capped at ``max_count`` so the sites follow a slowly changing structure).
* **Re-learning** (:meth:`OnlineCentres.finalize`, every ``relearn`` frames and at the end of a run): the
  sites are learnt again from the pooled density of all frames seen; the hop rule is rewound to its state
  at the previous re-learning (site indices mapped to the nearest new sites) and the frames since then are
  counted again, so hops into sites first occupied after the warm-up get their true frames.

Frame times are frame indices; ``dt_ps`` (time between frames, or the times given during the warm-up)
converts ``min_residence_ps`` and the site averaging window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import chdtri

from iondiff_stream.analysis.hops import HopParameters, learn_sites, residence_frames
from iondiff_stream.model.rule import HopEvents, HopRule
from iondiff_stream.model.sites import SiteDensity, SiteModel, short_time_average

__all__ = ["OnlineCentres", "LiveHop"]


@dataclass
class LiveHop:
    """A hop seen live (frame indices count every frame given to ``partial_fit``)."""

    ion: int
    start_frame: int
    end_frame: int
    from_centre: int
    to_centre: int


class OnlineCentres:
    """Streaming site model and core-to-core hops of every mobile ion.

    Parameters
    ----------
    warmup : int
        Frames used to learn the initial sites and vibration amplitudes.
    dt_ps : float
        Time between the frames given, ps (replaced by the times given during the warm-up).
    params : HopParameters, optional
        The offline method's parameters: keep them equal to the offline ones.
    relearn : int
        Frames between re-learnings of the sites from the pooled density (0: never).
    max_count : int
        Cap of a site's count in the mini-batch update (learning rate ≥ 1/max_count).
    refresh : int
        Frames between rebuilds of the site search tree (sites move slowly).

    Attributes
    ----------
    sites_ : SiteModel or None
        Current sites (after the warm-up).
    site_counts_ : ndarray, shape (n_sites,)
    sigma_ : ndarray, shape (n_ions,)
        Vibration amplitude per axis, Å.
    rule_ : HopRule
        The hop rule's state (current site, candidate, hops per ion).
    hops_ : ndarray, shape (n_ions,)
        Hops so far per ion.
    in_transit_ : ndarray, shape (n_ions,), bool
    hop_log_ : list of LiveHop
    n_frames_seen_ : int
    """

    def __init__(self, warmup: int = 200, dt_ps: float = 0.02, params: HopParameters | None = None,
                 relearn: int = 500, max_count: int = 5000, refresh: int = 100) -> None:
        self.warmup = warmup
        self.dt_ps = dt_ps
        self.params = params
        self.relearn = relearn
        self.max_count = max_count
        self.refresh = refresh

    @property
    def _p(self) -> HopParameters:
        return self.params or HopParameters()

    @property
    def hops_(self) -> np.ndarray:
        return self.rule_.hops_

    @property
    def in_transit_(self) -> np.ndarray:
        return self.rule_.in_transit_

    # ------------------------------------------------------------------
    def partial_fit(self, frames: np.ndarray, box: np.ndarray | None = None,
                    times_ps: np.ndarray | None = None) -> OnlineCentres:
        """Update with a batch of frames.

        Parameters
        ----------
        frames : ndarray, shape (n_frames, n_ions, 3) or (n_ions, 3)
            Unwrapped positions, Å, ions in a fixed order.
        box : ndarray, shape (6,), optional
            Cell ``[a, b, c, alpha, beta, gamma]`` (Å, degrees); taken from the first call that gives one.
        times_ps : ndarray, shape (n_frames,), optional
            Times of the frames, ps: during the warm-up they set ``dt_ps``.

        Returns
        -------
        self
        """
        f = np.asarray(frames, dtype=np.float64)
        if f.ndim == 2:
            f = f[None]
        if f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(f"frames must have shape (n_frames, n_ions, 3), got {f.shape}")
        if not np.all(np.isfinite(f)):
            raise ValueError("frames contain NaN/inf positions")
        if not hasattr(self, "n_frames_seen_"):
            self._init(f.shape[1], box)
        elif f.shape[1] != self.rule_.n_ions:
            raise ValueError(f"frames have {f.shape[1]} ions, the estimator was fitted on {self.rule_.n_ions}")
        if self.box_ is None and box is not None and self.sites_ is None:
            self.box_ = np.asarray(box, dtype=np.float64)
        if self.sites_ is None:
            need = self.warmup - len(self._warm)
            if times_ps is not None:
                self._warm_t.extend(np.atleast_1d(np.asarray(times_ps, float))[:need].tolist())
            self._warm.extend(list(f[:need]))
            f = f[need:]
            if len(self._warm) >= self.warmup:
                self._learn()
        i = 0
        while i < len(f):  # chunks that share one site model (until the next rebuild or re-learning)
            n_same = max(1, self.refresh - self._since_refresh)
            if self.relearn:
                n_same = min(n_same, max(1, self.relearn - len(self._hist)))
            chunk = f[i : i + n_same]
            self._count(chunk, learn=True)
            i += len(chunk)
        return self

    def _init(self, n: int, box: np.ndarray | None) -> None:
        self.box_ = None if box is None else np.asarray(box, dtype=np.float64)
        self.sites_: SiteModel | None = None
        self.site_counts_ = np.zeros(0)
        self.sigma_ = np.zeros(n)
        self.rule_ = HopRule(n, 1)
        self.hop_log_: list[LiveHop] = []
        self.n_frames_seen_ = 0
        self._warm: list[np.ndarray] = []
        self._warm_t: list[float] = []
        self._hist: list[np.ndarray] = []
        self._pending: list[np.ndarray] = []
        self._since_refresh = 0

    def _learn(self) -> None:
        """Sites and σ from the warm-up frames (the offline procedure), then count them."""
        p = self._p
        if len(self._warm_t) == len(self._warm) and len(self._warm_t) > 1:
            dt = float(np.median(np.diff(self._warm_t)))
            if dt > 0:
                self.dt_ps = dt
        X = np.asarray(self._warm)  # (Tw, n, 3)
        self._warm = []
        T = len(X)
        times = np.arange(T) * self.dt_ps
        self.sites_, self.sigma_ = learn_sites(X, times, self.box_, p, layout="frame")
        self.site_counts_ = np.maximum(self.sites_.weight, 1.0)
        m = self.sites_
        # the grid of the offline learning: the cell, or (no cell) the bounding box of the warm-up + 5 Å
        self._density = SiteDensity(m.box, p.site, periodic=m.periodic,
                                    origin=None if m.periodic else X.min(axis=(0, 1)) - 5.0)
        self._w_avg = max(1, int(round(p.site.average_ps / self.dt_ps)))
        self._density.add(short_time_average(X, self._w_avg))
        self._ring = X[-self._w_avg:].copy() if T >= self._w_avg else np.repeat(X[-1:], self._w_avg, axis=0)
        self._r_core = float(np.sqrt(chdtri(3, 1.0 - p.vib_quantile))) * self.sigma_
        self.rule_ = HopRule(X.shape[1], residence_frames(p.min_residence_ps, self.dt_ps))
        self._count(X, learn=False)
        self._snapshot()

    def _count(self, x: np.ndarray, learn: bool) -> None:
        """Cores and the hop rule for frames (T, n, 3); with ``learn`` also the mini-batch site update,
        the pooled density and the frames kept for the next re-learning."""
        if self.sites_ is None:
            return
        m = self.sites_
        t0 = self.n_frames_seen_
        states = m.assign_frames(x, None, self._r_core)
        ev = self.rule_.update(states)
        self.hop_log_.extend(LiveHop(int(i), int(a), int(b), int(f), int(t)) for i, a, b, f, t in
                             zip(ev.ion, ev.start_frame, ev.end_frame, ev.from_site, ev.to_site))
        self.n_frames_seen_ = t0 + len(x)
        if not learn:
            return
        t, i = np.nonzero(states >= 0)
        if len(t):  # mini-batch k-means of the sites, pooled over ions
            k = states[t, i]
            np.add.at(self.site_counts_, k, 1.0)
            np.minimum(self.site_counts_, self.max_count, out=self.site_counts_)
            d = m.minimum_image(x[t, i] - m.sites_A[k])
            np.add.at(m.sites_A, k, d / self.site_counts_[k][:, None])
        for j, frame in enumerate(x):  # pooled short-time averages keep feeding the site density
            self._ring[(t0 + j) % self._w_avg] = frame
            self._pending.append(self._ring.mean(0))
        if len(self._pending) >= 64:
            self._flush_density()
        self._hist.extend(list(x))
        self._since_refresh += len(x)
        if self._since_refresh >= self.refresh:
            m.sites_A = m.wrap(m.sites_A)
            m._build()
            self._since_refresh = 0
        if self.relearn and len(self._hist) >= self.relearn:
            self.finalize()

    def _flush_density(self) -> None:
        if self._pending:
            self._density.add(np.asarray(self._pending))
        self._pending = []

    def _snapshot(self) -> None:
        self._snap = self.rule_.state_dict()
        self._snap_log = len(self.hop_log_)
        self._snap_frames = self.n_frames_seen_
        self._hist = []

    def finalize(self) -> OnlineCentres:
        """Re-learn the sites from everything seen and count the frames since the last re-learning again.

        Returns
        -------
        self
        """
        if getattr(self, "sites_", None) is None or not hasattr(self, "_snap"):
            return self
        self._flush_density()
        try:
            found = self._density.sites()
        except Exception:  # noqa: BLE001 - no peak yet: keep the sites
            return self
        old_to_new, _ = found.nearest(self.sites_.sites_A)
        snap = {k: np.array(v) for k, v in self._snap.items()}
        for key in ("current_", "cand_"):
            a = snap[key]
            ok = a >= 0
            a[ok] = old_to_new[a[ok]]
        snap["cand_"][snap["cand_"] == snap["current_"]] = -1
        self.rule_ = HopRule.from_state_dict(snap)
        del self.hop_log_[self._snap_log:]
        self.site_counts_ = np.minimum(np.maximum(found.weight, 1.0), self.max_count)
        self.sites_ = found
        self._since_refresh = 0
        hist = self._hist
        self.n_frames_seen_ = self._snap_frames
        if hist:
            self._count(np.asarray(hist), learn=False)
        self._snapshot()
        return self

    def predict(self, frames: np.ndarray) -> np.ndarray:
        """Core (site) of every ion in every frame, shape (n_frames, n_ions); -1 in transit."""
        f = np.asarray(frames, dtype=np.float64)
        if f.ndim == 2:
            f = f[None]
        if self.sites_ is None:
            return np.full(f.shape[:2], -1, dtype=np.int64)
        return self.sites_.assign_frames(f, None, self._r_core).astype(np.int64)

    def events(self) -> HopEvents:
        """The hops so far as :class:`~iondiff_stream.model.rule.HopEvents`."""
        return HopEvents.from_lists([(h.ion, h.from_centre, h.to_centre, h.start_frame, h.end_frame)
                                     for h in self.hop_log_])
