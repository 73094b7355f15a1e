"""Live hops: the offline site model and hop rule, updated frame by frame (mini-batch k-means of the sites).

:class:`OnlineCentres` is a scikit-learn-style streaming estimator (``partial_fit(frames) -> self``;
fitted state in trailing-underscore attributes), vectorised over all ions. It uses the *same* site
model and hop rule as the offline ``"sites"`` method (:mod:`iondiff_stream.hops`), so that the live
hop count converges to the offline finalisation of the same store:

* **Warm-up** (first ``warmup`` frames): the sites are learnt from these frames exactly as offline
  (pooled short-time averages → periodic density peaks, :class:`~iondiff_stream.model.sites.SiteDensity`)
  and every ion's vibration amplitude σ from its short-time fluctuations (the plateau window of
  :func:`~iondiff_stream.hops.plateau_window`); the warm-up frames are then replayed through the hop
  rule, so no hop is lost.
* **Cores and hops**: a frame is in a site's core within ``r_core = sqrt(chi2_3.ppf(vib_quantile))·σ``
  (capped at ``core_cap`` of the distance to the site's nearest other site); a hop is a core-to-core
  transition to another site whose visit lasts at least ``min_residence_ps`` (shorter visits are
  passages: A→B→A is no hop, A→B→C one hop A→C), as :func:`iondiff_stream.hops.transitions`.
* **Mini-batch k-means** of the sites over the pooled positions of all ions: every in-core frame moves
  its site by ``(x - c) / n`` (minimum image; the count n capped at ``max_count`` so the sites can
  follow a slowly changing structure).
* **Re-learning** (:meth:`OnlineCentres.finalize`): every ``relearn`` frames, and at the end of a run,
  the sites are learnt again from the pooled density of all frames seen so far (the offline procedure
  on the data so far) and the frames since the previous re-learning are recounted with them. Sites first
  occupied after the warm-up (a vacancy, an interstitial) appear then, hops into them get their true
  frames, and at the end of a run the live site model is the offline one.

Frame times are frame indices here; ``dt_ps`` (time between the frames given) converts
``min_residence_ps`` and the site averaging window.
"""

from __future__ import annotations

from dataclasses import asdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import chi2

from .hops import HopParameters, plateau_window, residence_frames, short_time_sigma, sigma_windows
from .model.sites import SiteDensity, SiteModel, short_time_average

__all__ = ["OnlineCentres", "OnlineSites", "LiveHop"]


@dataclass
class LiveHop:
    """A hop seen live (frame indices count every frame given to ``partial_fit``)."""

    ion: int
    start_frame: int
    end_frame: int
    from_centre: int
    to_centre: int


class OnlineCentres:
    """Streaming site model and live core-to-core hops of every mobile ion.

    Parameters
    ----------
    warmup : int
        Frames used to learn the initial sites and vibration amplitudes.
    dt_ps : float
        Time between the frames given, ps (for ``min_residence_ps`` and the
        short-time averaging of the site model).
    params : HopParameters, optional
        The offline method's parameters (site model, ``vib_quantile``,
        ``min_residence_ps``): keep them equal to the offline ones.
    relearn : int
        Frames between searches for new sites in the pooled density of all frames
        seen (0: never).
    max_count : int
        Cap of a site's count in the mini-batch update (learning rate ≥ 1/max_count).
    refresh : int
        Frames between rebuilds of the site search tree (sites move slowly).

    Attributes
    ----------
    sites_ : SiteModel
        Current sites (after the warm-up).
    site_counts_ : ndarray, shape (n_sites,)
    sigma_ : ndarray, shape (n_ions,)
        Vibration amplitude per axis, Å.
    current_ : ndarray, shape (n_ions,)
        Site of the ion's current residence (-1 before any).
    in_transit_ : ndarray, shape (n_ions,), bool
    hops_ : ndarray, shape (n_ions,)
        Hops so far per ion.
    n_centres_ : ndarray, shape (n_ions,)
        Distinct sites each ion has resided at.
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

    # ------------------------------------------------------------------
    @property
    def _p(self) -> HopParameters:
        return self.params or HopParameters()

    def partial_fit(self, frames: np.ndarray, box: np.ndarray | None = None,
                    times_ps: np.ndarray | None = None) -> OnlineCentres:
        """Update with a batch of frames.

        Parameters
        ----------
        frames : ndarray, shape (n_frames, n_ions, 3) or (n_ions, 3)
            Unwrapped positions, Å, ions in a fixed order.
        box : ndarray, shape (6,), optional
            Cell ``[a, b, c, alpha, beta, gamma]`` (Å, degrees); taken from the first
            call that gives one (sites are periodic then).
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
        elif f.shape[1] != len(self.hops_):
            raise ValueError(f"frames have {f.shape[1]} ions, the estimator was fitted on {len(self.hops_)}")
        if self.box_ is None and box is not None and self.sites_ is None:
            self.box_ = np.asarray(box, dtype=np.float64)
        if self.sites_ is None:
            need = self.warmup - len(self._warm)
            if times_ps is not None:
                self._warm_t.extend(np.atleast_1d(np.asarray(times_ps, float))[:need].tolist())
            self._warm.extend(list(f[:need]))
            self.n_frames_seen_ += min(need, len(f))
            f = f[need:]
            if len(self._warm) >= self.warmup:
                self._learn()
        self._steps(f)
        return self

    def _steps(self, f: np.ndarray) -> None:
        """:meth:`_step` over frames (T, n, 3); the cores of a run of frames that share one site model
        (until the next rebuild or re-learning) are assigned in one query."""
        i = 0
        while i < len(f):
            m = self.sites_
            if m is None:
                self._step(f[i])
                i += 1
                continue
            n_same = max(1, self.refresh - self._since_refresh)  # a rebuild comes after the n_same-th frame
            if self.relearn:
                n_same = min(n_same, max(1, self.relearn - len(self._hist)))
            chunk = f[i : i + n_same]
            r_core = np.broadcast_to(self._z * self.sigma_[None, :], chunk.shape[:2]).reshape(-1)
            ks = m.assign(chunk.reshape(-1, 3), r_core).reshape(chunk.shape[:2]).astype(np.int64)
            for x, k in zip(chunk, ks):
                self._step(x, k)
            i += len(chunk)

    def _init(self, n: int, box: np.ndarray | None) -> None:
        self.box_ = None if box is None else np.asarray(box, dtype=np.float64)
        self.sites_: SiteModel | None = None
        self.site_counts_ = np.zeros(0)
        self.sigma_ = np.zeros(n)
        self.current_ = np.full(n, -1, dtype=np.int64)
        self._cur_last = np.zeros(n, dtype=np.int64)
        self._cand = np.full(n, -1, dtype=np.int64)
        self._cand_first = np.zeros(n, dtype=np.int64)
        self._cand_last = np.zeros(n, dtype=np.int64)
        self.in_transit_ = np.zeros(n, dtype=bool)
        self.hops_ = np.zeros(n, dtype=np.int64)
        self.n_centres_ = np.zeros(n, dtype=np.int64)
        self._visited: set[tuple[int, int]] = set()
        self.hop_log_: list[LiveHop] = []
        self.n_frames_seen_ = 0
        self._warm: list[np.ndarray] = []
        self._warm_t: list[float] = []
        self._hist: list[np.ndarray] = []
        self._pending: list[np.ndarray] = []
        self._since_refresh = 0

    # ------------------------------------------------------------------
    def _learn(self) -> None:
        """Sites and σ from the warm-up frames (the offline procedure), then replay them."""
        p = self._p
        if len(self._warm_t) == len(self._warm) and len(self._warm_t) > 1:
            dt = float(np.median(np.diff(self._warm_t)))
            if dt > 0:
                self.dt_ps = dt
        X = np.asarray(self._warm)  # (Tw, n, 3)
        T = len(X)
        periodic = self.box_ is not None
        box, origin = self.box_, None
        if not periodic:
            lo, hi = X.min(axis=(0, 1)), X.max(axis=(0, 1))
            origin = lo - 5.0
            box = np.concatenate([hi - lo + 10.0, [90.0, 90.0, 90.0]])
        w_avg = max(1, int(round(p.site.average_ps / self.dt_ps)))
        dens = SiteDensity(box, p.site, periodic=periodic, origin=origin)
        dens.add(short_time_average(X, w_avg))
        windows = sigma_windows(T)
        sw = np.stack([short_time_sigma(X, int(w)) for w in windows], axis=1)
        self.sigma_ = sw[:, plateau_window(sw, windows)]
        self.sites_ = dens.sites()
        self.site_counts_ = np.maximum(self.sites_.weight, 1.0)
        self._density = dens
        self._w_avg = w_avg
        self._ring = X[-w_avg:].copy() if T >= w_avg else np.repeat(X[-1:], w_avg, axis=0)
        self._z = float(np.sqrt(chi2.ppf(p.vib_quantile, 3)))
        self._m_res = residence_frames(p.min_residence_ps, self.dt_ps)
        self._warm = []
        t0 = self.n_frames_seen_ - T
        self.n_frames_seen_ = t0
        self._replaying = True
        for x in X:
            self._step(x)
        self._replaying = False
        self._snapshot()

    def _step(self, x: np.ndarray, k: np.ndarray | None = None) -> None:
        t = self.n_frames_seen_
        self.n_frames_seen_ = t + 1
        if self.sites_ is None:
            self._warm.append(x.copy())
            return
        m = self.sites_
        if k is None:
            k = m.assign(x, self._z * self.sigma_).astype(np.int64)
        inc = k >= 0
        self.in_transit_ = ~inc
        # mini-batch k-means of the sites (pooled over ions); not again when frames are replayed
        if inc.any() and not getattr(self, "_replaying", False):
            ki = k[inc]
            cnt = np.minimum(self.site_counts_[ki] + 1.0, self.max_count)
            np.add.at(self.site_counts_, ki, 1.0)
            np.minimum(self.site_counts_, self.max_count, out=self.site_counts_)
            d = m.minimum_image(x[inc] - m.sites_A[ki])
            np.add.at(m.sites_A, ki, d / cnt[:, None])
        self._since_refresh += 1
        if self._since_refresh >= self.refresh:
            self._rebuild()
        # pooled short-time averages keep feeding the site density; sites are re-learnt from it now and then
        if not getattr(self, "_replaying", False):  # warm-up frames are in the density already
            self._ring[t % self._w_avg] = x
            self._pending.append(self._ring.mean(0))
            if len(self._pending) >= 64:  # one histogram update per batch of frames (cheaper)
                self._flush_density()
            self._hist.append(x.copy())
        self._enter(np.flatnonzero(inc), k[inc], t)
        if self.relearn and not getattr(self, "_replaying", False) and len(self._hist) >= self.relearn:
            self.finalize()

    def _enter(self, idx: np.ndarray, k: np.ndarray, t: int) -> None:
        """Hop rule for ions ``idx`` in the cores ``k`` at frame ``t`` (the offline :func:`transitions`)."""
        if len(idx) == 0:
            return
        cur = self.current_[idx]
        first = cur < 0
        if first.any():
            i = idx[first]
            self.current_[i] = k[first]
            self._cur_last[i] = t
            for a, b in zip(i, k[first]):
                self._visit(int(a), int(b))
        at_cur = ~first & (k == cur)
        i = idx[at_cur]
        self._cur_last[i] = t
        self._cand[i] = -1  # a short visit elsewhere, then back: no hop
        cand = self._cand[idx]
        at_cand = ~first & ~at_cur & (k == cand)
        self._cand_last[idx[at_cand]] = t
        other = ~first & ~at_cur & ~at_cand
        i = idx[other]
        self._cand[i] = k[other]
        self._cand_first[i] = t
        self._cand_last[i] = t
        c = idx[(self._cand[idx] >= 0) & (self._cand_last[idx] - self._cand_first[idx] + 1 >= self._m_res)]
        for i in c:
            i = int(i)
            frm, to = int(self.current_[i]), int(self._cand[i])
            self.hop_log_.append(LiveHop(i, int(self._cur_last[i]), int(self._cand_first[i]), frm, to))
            self.hops_[i] += 1
            self.current_[i] = to
            self._cur_last[i] = self._cand_last[i]
            self._cand[i] = -1
            self._visit(i, to)

    def _visit(self, i: int, s: int) -> None:
        if (i, s) not in self._visited:
            self._visited.add((i, s))
            self.n_centres_[i] += 1

    _SNAP = ("current_", "_cur_last", "_cand", "_cand_first", "_cand_last", "hops_", "n_centres_", "in_transit_")

    def _flush_density(self) -> None:
        if getattr(self, "_pending", None):
            self._density.add(np.asarray(self._pending))
        self._pending = []

    def _snapshot(self) -> None:
        self._snap = {k: np.array(getattr(self, k)) for k in self._SNAP}
        self._snap_log = len(self.hop_log_)
        self._snap_visited = set(self._visited)
        self._hist = []

    def finalize(self) -> OnlineCentres:
        """Re-learn the sites from everything seen and recount the frames since the last re-learning.

        The sites are learnt again from the pooled density of all frames seen (the offline
        procedure on the data so far); the hop rule is rewound to its state at the previous
        re-learning (site indices mapped to the nearest re-learnt sites) and the frames since then
        are replayed with the new sites, so hops into sites first occupied after the warm-up get
        their true frames. Runs every ``relearn`` frames and should be called at the end of a run
        (the live hook does); the hop counts of the last ``relearn`` frames are provisional until then.

        Returns
        -------
        self
        """
        if getattr(self, "sites_", None) is None or not hasattr(self, "_snap"):  # nothing fitted yet
            return self
        m = self.sites_
        self._flush_density()
        try:
            found = self._density.sites()
        except Exception:  # noqa: BLE001 - no peak yet: keep the sites
            return self
        old_to_new, _ = found.nearest(m.sites_A)
        for k, v in self._snap.items():
            setattr(self, k, np.array(v))
        for arr in (self.current_, self._cand):
            ok = arr >= 0
            arr[ok] = old_to_new[arr[ok]]
        self._cand[self._cand == self.current_] = -1
        del self.hop_log_[self._snap_log:]
        self._visited = {(i, int(old_to_new[s])) for i, s in self._snap_visited}
        self.n_centres_ = np.bincount(np.array([i for i, _ in self._visited], dtype=np.int64),
                                      minlength=len(self.n_centres_))
        self.site_counts_ = np.minimum(np.maximum(found.weight, 1.0), self.max_count)
        self.sites_ = found
        self._since_refresh = 0
        hist = self._hist
        t_end = self.n_frames_seen_
        self.n_frames_seen_ = t_end - len(hist)
        self._replaying = True
        for x in hist:
            self._step(x)
        self._replaying = False
        self._snapshot()
        return self

    def _rebuild(self) -> None:
        m = self.sites_
        assert m is not None
        m.sites_A = m.wrap(m.sites_A)
        m._build()
        self._since_refresh = 0

    def predict(self, frames: np.ndarray) -> np.ndarray:
        """Core (site) of every ion in every frame, shape (n_frames, n_ions); -1 in transit."""
        f = np.asarray(frames, dtype=np.float64)
        if f.ndim == 2:
            f = f[None]
        if self.sites_ is None:
            return np.full(f.shape[:2], -1, dtype=np.int64)
        r = np.broadcast_to(self._z * self.sigma_[None, :], f.shape[:2]).reshape(-1)
        return self.sites_.assign(f.reshape(-1, 3), r).reshape(f.shape[:2]).astype(np.int64)

    # ------------------------------------------------------------------
    _ARRAYS = ("sigma_", "current_", "in_transit_", "hops_", "n_centres_", "site_counts_", "_cur_last", "_cand",
               "_cand_first", "_cand_last")

    def state_dict(self) -> dict[str, Any]:
        """Arrays and scalars that restore the estimator exactly (for the store)."""
        if not hasattr(self, "n_frames_seen_"):
            return {}
        st: dict[str, Any] = {k: np.asarray(getattr(self, k)) for k in self._ARRAYS}
        st["n_frames_seen_"] = self.n_frames_seen_
        st["hop_log"] = np.array([[h.ion, h.start_frame, h.end_frame, h.from_centre, h.to_centre]
                                  for h in self.hop_log_], dtype=np.int64).reshape(-1, 5)
        st["visited"] = np.array(sorted(self._visited), dtype=np.int64).reshape(-1, 2)
        st["warm"] = np.asarray(self._warm, dtype=np.float64).reshape(-1, len(self.hops_), 3)
        st["box"] = np.zeros(0) if self.box_ is None else self.box_
        st["hist"] = np.asarray(self._hist, dtype=np.float64).reshape(-1, len(self.hops_), 3)
        if hasattr(self, "_snap"):
            for k, v in self._snap.items():
                st["snap" + k.rstrip("_")] = v
            st["snap_log"] = np.array([self._snap_log])
            st["snap_visited"] = np.array(sorted(self._snap_visited), dtype=np.int64).reshape(-1, 2)
        if self.sites_ is not None:
            self._flush_density()
            st["sites"] = self.sites_.sites_A
            st["site_weight"] = self.sites_.weight
            st["site_box"] = self.sites_.box
            st["density"] = self._density.counts_
            st["density_origin"] = self._density.origin
            st["ring"] = self._ring
        st["params"] = {"warmup": self.warmup, "dt_ps": self.dt_ps, "relearn": self.relearn,
                        "max_count": self.max_count, "refresh": self.refresh,
                        "hop_params": _jsonable(asdict(self._p)),
                        "periodic": bool(self.sites_.periodic) if self.sites_ is not None else None}
        return st

    @classmethod
    def from_state_dict(cls, st: dict[str, Any]) -> OnlineCentres:
        """Rebuild an estimator saved with :meth:`state_dict`."""
        pr = dict(st["params"])
        hp = pr.pop("hop_params", None)
        periodic = pr.pop("periodic", None)
        est = cls(params=HopParameters(**hp) if hp else None, **pr)
        if "sigma_" not in st:
            return est
        n = len(np.asarray(st["hops_"]))
        box = np.asarray(st.get("box", np.zeros(0)), float)
        est._init(n, box if box.size == 6 else None)
        for k in cls._ARRAYS:
            setattr(est, k, np.array(st[k]))
        est.n_frames_seen_ = int(st["n_frames_seen_"])
        est.hop_log_ = [LiveHop(*map(int, row)) for row in np.asarray(st["hop_log"]).reshape(-1, 5)]
        est._visited = {(int(a), int(b)) for a, b in np.asarray(st.get("visited", np.zeros((0, 2)))).reshape(-1, 2)}
        est._warm = list(np.asarray(st.get("warm", np.zeros((0, n, 3)))).reshape(-1, n, 3))
        est._hist = list(np.asarray(st.get("hist", np.zeros((0, n, 3)))).reshape(-1, n, 3))
        if "snap_log" in st:
            est._snap = {k: np.array(st["snap" + k.rstrip("_")]) for k in cls._SNAP}
            est._snap_log = int(np.asarray(st["snap_log"])[0])
            est._snap_visited = {(int(a), int(b)) for a, b in np.asarray(st["snap_visited"]).reshape(-1, 2)}
        p = est._p
        est._z = float(np.sqrt(chi2.ppf(p.vib_quantile, 3)))
        est._m_res = residence_frames(p.min_residence_ps, est.dt_ps)
        if "sites" in st and np.asarray(st["sites"]).size:
            per = bool(periodic) if periodic is not None else est.box_ is not None
            est.sites_ = SiteModel(np.asarray(st["sites"], float), np.asarray(st["site_box"], float),
                                   np.asarray(st["site_weight"], float), core_cap=p.site.core_cap, periodic=per)
            est._density = SiteDensity(np.asarray(st["site_box"], float), p.site, periodic=per,
                                       origin=_origin(st.get("density_origin")))
            est._density.counts_ = np.array(st["density"], dtype=np.float64)
            est._density.n_points_ = int(est._density.counts_.sum())
            est._ring = np.array(st["ring"], dtype=np.float64)
            est._w_avg = len(est._ring)
        return est

    def save(self, group: Any) -> None:
        """Write the state into a Zarr group (``online/`` of a frame store).

        The whole state is one uncompressed array ``online/state_npz`` (an ``.npz`` archive of the arrays
        of :meth:`state_dict`, with a CRC32C checksum): one write per flush, replaced whole, so a reader or a
        restart never mixes arrays of two saves. Scalars and a summary go to the group's attributes.
        """
        import io

        from zarr.codecs import Crc32cCodec

        st = self.state_dict()
        if not st:
            return
        buf = io.BytesIO()
        arrays = {}
        for k, v in st.items():
            if k in ("params", "n_frames_seen_"):
                continue
            a = np.zeros(0) if v is None else np.asarray(v)
            if a.dtype == object:  # no pickles in the store: None entries become empty float arrays
                a = np.array([np.nan if x is None else x for x in a.ravel()], dtype=np.float64).reshape(a.shape)
            arrays[k.strip("_")] = a
        np.savez(buf, **arrays)
        blob = np.frombuffer(buf.getbuffer(), dtype=np.uint8)
        og = group.require_group("online")
        if "state_npz" in og and og["state_npz"].shape == blob.shape:
            og["state_npz"][...] = blob
        else:
            og.create_array("state_npz", data=blob, overwrite=True, chunks=(max(1, blob.size),),
                            compressors=(Crc32cCodec(),))
        og.attrs.update({"params": st["params"], "n_frames_seen": int(st["n_frames_seen_"]),
                         "hops_total": int(np.asarray(st["hops_"]).sum()),
                         "n_sites": int(len(st["sites"])) if "sites" in st else 0,
                         "description": "state of iondiff_stream.online.OnlineCentres (shared sites, live "
                                        "core-to-core hops): npz archive in state_npz; sites in Å, times in frames"})

    @staticmethod
    def read_state(group: Any) -> dict[str, Any]:
        """The arrays and attributes saved by :meth:`save` in ``group`` (the ``online/`` group of a store).

        Returns
        -------
        dict
            Array name -> ndarray, plus ``"attrs"`` (the group's attributes); input of :meth:`load`.
        """
        import io

        if "state_npz" in group:
            with np.load(io.BytesIO(group["state_npz"][:].tobytes()), allow_pickle=False) as z:
                st: dict[str, Any] = {k: z[k] for k in z.files}
        else:  # one array per entry (stores written before the single-archive layout)
            st = {k: group[k][:] for k in group.array_keys()}
        st["attrs"] = dict(group.attrs)
        return st

    @classmethod
    def load(cls, state: dict[str, Any]) -> OnlineCentres:
        """Rebuild from :meth:`iondiff_stream.buffer.FrameStoreReader.online_state`."""
        attrs = state["attrs"]
        if "hop_params" not in attrs.get("params", {}):
            from .errors import StoreError

            raise StoreError("the store's online state was written by an older version (per-ion centres); "
                             "it cannot be continued")
        st: dict[str, Any] = {"params": attrs["params"], "n_frames_seen_": attrs["n_frames_seen"]}
        for k, v in state.items():
            if k == "attrs":
                continue
            st[k] = v
        for k in cls._ARRAYS:
            st[k] = state[k.strip("_")]
        return cls.from_state_dict(st)


#: the estimator under the name of what it now is
OnlineSites = OnlineCentres


def _origin(v: Any) -> np.ndarray | None:
    """A saved density origin: None when not set (saved as an empty or NaN array)."""
    if v is None:
        return None
    a = np.asarray(v, dtype=np.float64)
    return a if a.size == 3 and np.all(np.isfinite(a)) else None


def _jsonable(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _jsonable(v) for k, v in d.items()}
    if isinstance(d, (np.floating, np.integer)):
        return d.item()
    return d
