"""Hops of a frame store followed live, in the process that watches it — never in the simulation's.

The LAMMPS hook only copies frames into the store (:mod:`iondiff_stream.io.sink`); whoever watches the
store (``iondiff-stream monitor``, a notebook) runs :class:`LiveHops` on it. It uses the one site model
and the one hop rule of the offline analysis:

* **Refits.** Once ``warmup`` frames are stored, and again each time the stored frames have doubled, the
  sites and vibration amplitudes are learnt from all frames so far and every frame is counted again —
  exactly the offline analysis (:func:`iondiff_stream.pipeline.read_run` + :func:`iondiff_stream.pipeline.hops_of`)
  of the frames so far.
* **Between refits** the new frames are assigned to the current sites (which follow the framework when
  the model is attached to it) and fed to the same :class:`~iondiff_stream.model.rule.HopRule`, whose
  result does not depend on how frames are chunked: the live count is what the offline analysis gives
  for these frames with the current site model.
* **Final.** When the writer has closed the store, the count is the offline analysis of the store (the
  same function ``analyze`` runs), so the live count at the end of a hooked run *is* the offline count.

Nothing is written into the store; a monitor started late catches up from the frames stored.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from iondiff_stream.pipeline.run import hops_of, read_run
from iondiff_stream.io.store import FrameStoreReader, writer_alive
from iondiff_stream.analysis.hops import HopParameters, HopResults, residence_frames
from iondiff_stream.model.rule import HopRule

logger = logging.getLogger(__name__)

__all__ = ["LiveHops", "writer_alive"]


class LiveHops:
    """Live hop count of a frame store (see the module docstring).

    Parameters
    ----------
    store : str
        Path of the frame store.
    params : HopParameters, optional
        The offline analysis' parameters (keep them equal to those ``analyze`` is given).
    warmup : int
        Frames stored before the first fit.
    segment : int, optional
        Segment of the store to follow (default: the last one, as ``analyze``).

    Attributes
    ----------
    n_frames_ : int
        Frames counted so far.
    hops_ : ndarray, shape (n_ions,)
        Closed hops per ion.
    in_transit_ : ndarray, shape (n_ions,), bool
        In no site core in the last frame.
    n_sites_ : int or None
    site_model_ : str or None
        How the sites were found (``"density peaks"``, ``"framework holes (...)"``).
    site_check_ : dict or None
        The self-checks of the last refit (see :mod:`iondiff_stream.model.checks`).
    final_ : bool
        True once the writer has closed the store and the count is the offline one.
    result_ : HopResults or None
        The last refit (the offline analysis of the frames at that time).
    """

    def __init__(self, store: str, params: HopParameters | None = None, warmup: int = 200,
                 segment: int | None = None) -> None:
        self.store = os.fspath(store)
        self.params = params
        self.warmup = warmup
        self.segment = segment

    # ------------------------------------------------------------------
    def _mobile(self, reader: FrameStoreReader) -> str:
        return ",".join(sorted({str(s) for s in reader.species}))

    def _refit(self, reader: FrameStoreReader, stop: int | None) -> None:
        data = read_run(self.store, self._mobile(reader), segment=self.segment, stop=stop)
        res = hops_of(data, self.params)
        self._set(res, data)

    def _set(self, res: HopResults, data: Any) -> None:
        self.result_ = res
        n, T = res.states.shape
        p = res.parameters
        dt = float(np.median(np.diff(res.times_ps))) if T > 1 else 0.0
        self._rule = HopRule(n, residence_frames(p.min_residence_ps, dt))
        self._rule.update(res.states.T)
        self.n_frames_ = T
        self._fitted_at = T
        self.hops_ = np.array(self._rule.hops_)
        self.in_transit_ = np.array(self._rule.in_transit_)
        self.n_sites_ = res.n_sites
        self.site_model_ = res.extra.get("site_model")
        self.site_check_ = res.extra.get("site_check")
        self._r_core = res.r_core_A
        self._x0_centre = None
        self._seg_start = None

    def update(self) -> LiveHops:
        """Count the frames stored since the last call (a refit or a final count when due).

        Returns
        -------
        self
        """
        r = FrameStoreReader(self.store)
        segs = r.segments
        if not segs:
            self._init_empty(r)
            return self
        seg = segs[-1] if self.segment is None else next((s for s in segs if s["index"] == self.segment), segs[-1])
        start, stop = int(seg["start"]), int(seg["stop"])
        n_seg = stop - start
        if getattr(self, "_seg_index", None) != seg["index"]:  # a new LAMMPS run: start over
            self._init_empty(r)
            self._seg_index = seg["index"]
        if getattr(self, "final_", False) and self.n_frames_ == n_seg:
            return self
        if not writer_alive(self.store):
            if n_seg >= 2:
                self._refit(r, None)
            self.final_ = True
            return self
        self.final_ = False
        if n_seg < max(2, self.warmup):
            self.n_frames_ = n_seg
            return self
        if self.result_ is None or n_seg >= 2 * self._fitted_at:
            self._refit(r, n_seg)
            return self
        if n_seg > self.n_frames_:
            self._advance(r, start + self.n_frames_, stop, start)
        return self

    def _init_empty(self, r: FrameStoreReader) -> None:
        n = len(r.ion_ids)
        self.result_ = None
        self.n_frames_ = 0
        self._fitted_at = 0
        self.hops_ = np.zeros(n, dtype=np.int64)
        self.in_transit_ = np.zeros(n, dtype=bool)
        self.n_sites_ = None
        self.site_model_ = None
        self.site_check_ = None
        self.final_ = False

    def _advance(self, r: FrameStoreReader, a: int, b: int, seg_start: int) -> None:
        """Assign frames [a, b) of the store to the current sites and feed the hop rule."""
        res = self.result_
        model = res.sites
        names = ("positions", "framework_centre") + (("framework",) if "framework" in r.group else ())
        if self._x0_centre is None:
            self._x0_centre = r.read(seg_start, seg_start + 1, names=("framework_centre",))["framework_centre"][0]
        f = r.read(a, b, names=names)
        x = f["positions"].astype(np.float64)
        fc = f["framework_centre"]
        if np.all(np.isfinite(fc)) and np.all(np.isfinite(self._x0_centre)):
            x = x - (fc - self._x0_centre)[:, None, :]  # the drift removal of the offline reading
        fw = f.get("framework")
        if model.moving and fw is None:
            return  # sites attached to a framework the store does not hold: wait for the next refit
        if model.moving:
            fw = fw.astype(np.float64) - (fc - self._x0_centre)[:, None, :]
        states = model.assign_frames(x, fw, self._r_core)
        self._rule.update(states)
        self.n_frames_ += len(x)
        self.hops_ = np.array(self._rule.hops_)
        self.in_transit_ = np.array(self._rule.in_transit_)

    def summary(self) -> dict[str, Any]:
        """What a monitor shows: frames counted, hops, ions in transit, sites, the site model and its check."""
        return {"live_frames": int(self.n_frames_), "hops": int(np.sum(self.hops_)),
                "ions_in_transit": int(np.sum(self.in_transit_)), "n_sites": self.n_sites_,
                "site_model": self.site_model_, "site_check": self.site_check_, "live_final": bool(self.final_)}

