"""Streaming vibrational centres: every mobile ion's centres kept current, frame by frame.

:class:`OnlineCentres` is a scikit-learn-style streaming estimator
(``partial_fit(frames) -> self``; fitted state in trailing-underscore
attributes). All ions are updated together in array operations (no estimator
object per ion).

Per ion and frame:

* **vibration amplitude** σ: from the first ``warmup`` frames (variance about
  the running mean), then a running average of ``d²/3`` over frames within
  ``2 r_vib`` of the centre the ion is at;
* **vibrating or in transit**: within ``r_vib = sqrt(chi2_3.ppf(vib_quantile))·σ``
  of the nearest centre, capped at half the distance to the ion's nearest other
  centre (the same criterion as the offline method);
* **mini-batch k-means update** of the centre the ion vibrates at:
  ``c ← c + (x - c) / n`` with the centre's count n (capped at ``max_count``,
  so centres can follow a slowly drifting framework);
* **new centres** when the ion *settles somewhere new*: the last ``window``
  frames were all in transit, their rms about their mean is within the ion's
  own vibration (≤ 1.3·√3·σ) and that mean is farther than ``2 r_vib`` from
  every centre (the rule of the offline refinement);
* **hops**: vibrating at a centre other than the last one; the hop runs from the
  last frame vibrating at the old centre to the first at the new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import chi2

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
    """Incremental (mini-batch) k-means of every ion's positions, with live hop detection.

    Parameters
    ----------
    max_centres : int
        Centres kept per ion (the least visited one is replaced when full).
    window : int
        Frames an ion must stay put away from all centres to create a new centre.
    warmup : int
        Frames used to estimate the vibration amplitude before anything else.
    vib_quantile : float
        Quantile of the thermal distance distribution that bounds "vibrating".
    max_count : int
        Cap of a centre's count in the update rule (learning rate ≥ 1/max_count).

    Attributes
    ----------
    centres_ : ndarray, shape (n_ions, max_centres, 3)
        Centres, Å (NaN where unused).
    counts_ : ndarray, shape (n_ions, max_centres)
    n_centres_ : ndarray, shape (n_ions,)
    sigma2_ : ndarray, shape (n_ions,)
        Vibration variance per axis, Å².
    current_ : ndarray, shape (n_ions,)
        Centre last vibrated at (-1 before any).
    in_transit_ : ndarray, shape (n_ions,), bool
    hops_ : ndarray, shape (n_ions,)
        Hops so far per ion.
    hop_log_ : list of LiveHop
    n_frames_seen_ : int
    """

    def __init__(
        self, max_centres: int = 16, window: int = 10, warmup: int = 20, vib_quantile: float = 0.99, max_count: int = 5000
    ) -> None:
        self.max_centres = max_centres
        self.window = window
        self.warmup = warmup
        self.vib_quantile = vib_quantile
        self.max_count = max_count

    # ------------------------------------------------------------------
    def _init(self, x: np.ndarray) -> None:
        n = len(x)
        K = self.max_centres
        self.centres_ = np.full((n, K, 3), np.nan)
        self.centres_[:, 0] = x
        self.counts_ = np.zeros((n, K))
        self.counts_[:, 0] = 1
        self.n_centres_ = np.ones(n, dtype=np.int64)
        self.sigma2_ = np.zeros(n)
        self._m2 = np.zeros(n)  # Welford accumulator during warm-up
        self.current_ = np.full(n, -1, dtype=np.int64)
        self.in_transit_ = np.zeros(n, dtype=bool)
        self.hops_ = np.zeros(n, dtype=np.int64)
        self.hop_log_: list[LiveHop] = []
        self.n_frames_seen_ = 0
        self._last_vib = np.zeros(n, dtype=np.int64)
        self._transit_run = np.zeros(n, dtype=np.int64)
        self._win = np.repeat(x[:, None, :], self.window, axis=1)
        self._z2 = float(chi2.ppf(self.vib_quantile, 3))
        self._half_sep2 = np.full(n, np.inf)

    def partial_fit(self, frames: np.ndarray) -> OnlineCentres:
        """Update with a batch of frames.

        Parameters
        ----------
        frames : ndarray, shape (n_frames, n_ions, 3) or (n_ions, 3)
            Unwrapped positions, Å, ions in a fixed order.

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
        if not hasattr(self, "centres_"):
            self._init(f[0])
            f = f[1:]
        elif f.shape[1] != self.centres_.shape[0]:
            raise ValueError(f"frames have {f.shape[1]} ions, the estimator was fitted on {self.centres_.shape[0]}")
        for x in f:
            self._step(x)
        return self

    def _step(self, x: np.ndarray) -> None:
        t = self.n_frames_seen_ = self.n_frames_seen_ + 1
        n = len(x)
        rows = np.arange(n)
        self._win[:, t % self.window] = x  # ring of the last `window` frames
        if t < self.warmup:  # running mean of centre 0 and variance
            c = self.centres_[:, 0]
            d = x - c
            c += d / (t + 1)
            self._m2 += (d * (x - c)).sum(1)
            self.counts_[:, 0] = t + 1
            self.sigma2_ = self._m2 / max(t, 1) / 3.0
            self._last_vib[:] = t
            self.current_[:] = 0
            return
        ka = int(self.n_centres_.max())
        diff = self.centres_[:, :ka] - x[:, None, :]
        d2 = np.einsum("nkj,nkj->nk", diff, diff)
        d2[np.isnan(d2)] = np.inf
        k = d2.argmin(1)
        dmin2 = d2[rows, k]
        r2 = np.minimum(self._z2 * self.sigma2_, self._half_sep2)  # never more than half-way to a neighbour
        vib = dmin2 <= r2
        # settle somewhere new?
        self._transit_run = np.where(vib, 0, self._transit_run + 1)
        cand = (~vib) & (self._transit_run >= self.window)
        if cand.any():
            w = self._win[cand]
            m = w.mean(1)
            rms2 = ((w - m[:, None, :]) ** 2).sum(2).mean(1) * self.window / max(self.window - 1, 1)
            dm2 = ((self.centres_[cand] - m[:, None, :]) ** 2).sum(2)
            dm2 = np.where(np.isnan(dm2), np.inf, dm2).min(1)
            ok = (rms2 <= (1.3**2) * 3.0 * self.sigma2_[cand]) & (dm2 > 4.0 * r2[cand])
            for i, mean in zip(np.flatnonzero(cand)[ok], m[ok]):
                slot = int(self.n_centres_[i])
                if slot >= self.max_centres:  # replace the least visited centre (not the current one)
                    cnt = self.counts_[i].copy()
                    if self.current_[i] >= 0:
                        cnt[self.current_[i]] = np.inf
                    slot = int(cnt.argmin())
                else:
                    self.n_centres_[i] += 1
                self.centres_[i, slot] = mean
                self.counts_[i, slot] = self.window
                self._update_sep(i)
                k[i] = slot
                vib[i] = True
                self._transit_run[i] = 0
                self._new_hop(i, slot, t - self.window + 1)
        # mini-batch k-means update of the centres the ions vibrate at
        iv = np.flatnonzero(vib)
        kv = k[iv]
        cnt = np.minimum(self.counts_[iv, kv] + 1, self.max_count)
        self.counts_[iv, kv] = cnt
        self.centres_[iv, kv] += (x[iv] - self.centres_[iv, kv]) / cnt[:, None]
        # vibration amplitude from frames within twice the vibrating radius of the centre they are at, so that
        # an underestimate (e.g. from a cold start) cannot sustain itself by truncating the distribution
        near = np.flatnonzero((dmin2 <= 4.0 * r2) & (self.current_ >= 0) & (k == self.current_))
        cn = np.minimum(self.counts_[near, k[near]], 1000.0)
        self.sigma2_[near] += (dmin2[near] / 3.0 - self.sigma2_[near]) / np.maximum(cn, 1.0)
        # hops
        moved = iv[(self.current_[iv] >= 0) & (kv != self.current_[iv])]
        for i in moved:
            self._new_hop(int(i), int(k[i]), t)
        self._last_vib[iv] = t
        self.current_[iv] = kv
        self.in_transit_ = ~vib

    def _update_sep(self, i: int) -> None:
        c = self.centres_[i, : int(self.n_centres_[i])]
        if len(c) < 2:
            self._half_sep2[i] = np.inf
            return
        d2 = ((c[:, None, :] - c[None, :, :]) ** 2).sum(2)
        d2[np.diag_indices(len(c))] = np.inf
        self._half_sep2[i] = 0.25 * float(d2.min())

    def _new_hop(self, i: int, to: int, end: int) -> None:
        frm = int(self.current_[i])
        if frm == to or frm < 0:
            self.current_[i] = to
            return
        self.hop_log_.append(LiveHop(i, int(self._last_vib[i]), int(end), frm, to))
        self.hops_[i] += 1
        self.current_[i] = to
        self._last_vib[i] = end

    def predict(self, frames: np.ndarray) -> np.ndarray:
        """Nearest centre of every ion in every frame, shape (n_frames, n_ions); -1 in transit."""
        f = np.asarray(frames, dtype=np.float64)
        if f.ndim == 2:
            f = f[None]
        d2 = ((self.centres_[None] - f[:, :, None, :]) ** 2).sum(3)
        d2 = np.where(np.isnan(d2), np.inf, d2)
        k = d2.argmin(2)
        dmin2 = np.take_along_axis(d2, k[..., None], 2)[..., 0]
        return np.where(dmin2 <= self._z2 * self.sigma2_[None], k, -1)

    # ------------------------------------------------------------------
    _STATE = ("centres_", "counts_", "n_centres_", "sigma2_", "current_", "in_transit_", "hops_", "_m2", "_last_vib",
              "_transit_run", "_win", "_half_sep2")

    def state_dict(self) -> dict[str, Any]:
        """Arrays and scalars that restore the estimator exactly (for the store)."""
        if not hasattr(self, "centres_"):
            return {}
        st: dict[str, Any] = {k: np.asarray(getattr(self, k)) for k in self._STATE}
        st["n_frames_seen_"] = self.n_frames_seen_
        st["hop_log"] = np.array([[h.ion, h.start_frame, h.end_frame, h.from_centre, h.to_centre] for h in self.hop_log_],
                                 dtype=np.int64).reshape(-1, 5)
        st["params"] = {"max_centres": self.max_centres, "window": self.window, "warmup": self.warmup,
                        "vib_quantile": self.vib_quantile, "max_count": self.max_count}
        return st

    @classmethod
    def from_state_dict(cls, st: dict[str, Any]) -> OnlineCentres:
        """Rebuild an estimator saved with :meth:`state_dict`."""
        est = cls(**st["params"])
        if "centres_" not in st:
            return est
        for k in cls._STATE:
            setattr(est, k, np.array(st[k]))
        est.n_frames_seen_ = int(st["n_frames_seen_"])
        est.hop_log_ = [LiveHop(*map(int, row)) for row in np.asarray(st["hop_log"]).reshape(-1, 5)]
        est._z2 = float(chi2.ppf(est.vib_quantile, 3))
        return est

    def save(self, group: Any) -> None:
        """Write the state into a Zarr group (``online/`` of a frame store)."""
        st = self.state_dict()
        if not st:
            return
        og = group.require_group("online")
        for k, v in st.items():
            if k in ("params", "n_frames_seen_"):
                continue
            name = k.strip("_")
            arr = np.asarray(v)
            if name in og and og[name].shape == arr.shape and og[name].dtype == arr.dtype:
                og[name][...] = arr
            else:
                og.create_array(name, data=arr, overwrite=True)
        og.attrs.update({"params": st["params"], "n_frames_seen": int(st["n_frames_seen_"]),
                         "description": "state of iondiff_stream.online.OnlineCentres; centres in Å"})

    @classmethod
    def load(cls, state: dict[str, Any]) -> OnlineCentres:
        """Rebuild from :meth:`iondiff_stream.buffer.FrameStoreReader.online_state`."""
        attrs = state["attrs"]
        st: dict[str, Any] = {"params": attrs["params"], "n_frames_seen_": attrs["n_frames_seen"]}
        for k in cls._STATE:
            st[k] = state[k.strip("_")]
        st["hop_log"] = state["hop_log"]
        return cls.from_state_dict(st)
