"""The one hop rule: core-to-core transitions between committed residences, streaming and vectorised.

Input is the *core state* of every ion in every frame: the index of the site whose core the ion is in,
or -1 in transit (:meth:`iondiff_stream.model.sites.SiteModel.assign`). The rule is a state machine
per ion, fed frames in order in chunks of any size (one frame live, a whole run offline): the result
does not depend on how the frames are chunked, so the live count and the offline count of the same
frames with the same site model are equal by construction.

Per ion it keeps the *current* site (the last committed residence) and at most one *candidate*:

* in the current site's core: the residence goes on; a pending candidate is dropped (A→B→A is no hop);
* in another site's core: that site becomes (or stays) the candidate; transit frames in between do not
  interrupt a visit, so a visit lasts from its first frame in the core to its last;
* a candidate whose visit has lasted ``min_residence`` frames (first to last frame in its core) is
  committed: one hop current → candidate, from the last frame in the old core (``start_frame``) to the
  first frame in the new one (``end_frame``). A passage through a third site on the way (a visit that
  never lasts ``min_residence``) is no residence: A→B→C with a short B is one hop A→C.
* the first core an ion enters is its first residence (no hop);
* at the end of a run (:meth:`HopRule.finish`) a pending candidate, or a last frame in transit nearest
  to another site, gives an ``open`` hop (unfinished: not counted as a hop).

Frames are processed as runs of consecutive in-core frames at one site (transit frames dropped), so the
Python work is per site change, not per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["HopEvents", "HopRule", "visits"]


@dataclass
class HopEvents:
    """Hops found by :class:`HopRule` (frame indices count every frame given to the rule).

    Attributes
    ----------
    ion : ndarray, shape (n_hops,), int64
    from_site, to_site : ndarray, shape (n_hops,), int64
    start_frame : ndarray, shape (n_hops,), int64
        Last frame in the origin site's core.
    end_frame : ndarray, shape (n_hops,), int64
        First frame in the destination site's core (the last frame of the run for an open hop
        that ends in transit).
    open : ndarray, shape (n_hops,), bool
        Unfinished at the end of the run.
    """

    ion: np.ndarray
    from_site: np.ndarray
    to_site: np.ndarray
    start_frame: np.ndarray
    end_frame: np.ndarray
    open: np.ndarray

    @classmethod
    def from_lists(cls, rows: list[tuple[int, int, int, int, int]], is_open: bool = False) -> HopEvents:
        a = np.array(rows, dtype=np.int64).reshape(-1, 5)
        return cls(a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4], np.full(len(a), is_open))

    @classmethod
    def concatenate(cls, parts: list[HopEvents]) -> HopEvents:
        if not parts:
            return cls.from_lists([])
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in
                     ("ion", "from_site", "to_site", "start_frame", "end_frame", "open")))

    def __len__(self) -> int:
        return int(len(self.ion))

    def sorted(self) -> HopEvents:
        """Ordered by ion, then start frame."""
        o = np.lexsort((self.start_frame, self.ion))
        return HopEvents(*(getattr(self, k)[o] for k in
                           ("ion", "from_site", "to_site", "start_frame", "end_frame", "open")))


def visits(states: np.ndarray, t0: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Runs of in-core frames at one site, transit frames dropped, for every ion at once.

    Parameters
    ----------
    states : ndarray, shape (T, n_ions), int
        Core of every ion in every frame, -1 in transit.
    t0 : int
        Frame index of ``states[0]``.

    Returns
    -------
    ion, site, first, last : ndarray, shape (n_runs,), int64
        Ordered by ion, then time; ``first``/``last`` are frame indices (``t0``-based) of the
        run's first and last in-core frame.
    """
    s = np.asarray(states).T  # (n, T)
    ion, fr = np.nonzero(s >= 0)
    if len(ion) == 0:
        e = np.zeros(0, np.int64)
        return e, e, e, e
    val = s[ion, fr]
    new = np.ones(len(ion), dtype=bool)
    new[1:] = (ion[1:] != ion[:-1]) | (val[1:] != val[:-1])
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:] - 1, len(ion) - 1)
    return (ion[starts].astype(np.int64), val[starts].astype(np.int64), fr[starts].astype(np.int64) + t0,
            fr[ends].astype(np.int64) + t0)


class HopRule:
    """Streaming core-to-core hop rule for ``n_ions`` ions (see the module docstring).

    Parameters
    ----------
    n_ions : int
    min_residence : int
        Frames a visit must last (first to last frame in the core) to be a residence (≥ 1).

    Attributes
    ----------
    current_ : ndarray, shape (n_ions,), int64
        Site of every ion's current residence (-1 before its first).
    in_transit_ : ndarray, shape (n_ions,), bool
        In no core in the last frame given.
    hops_ : ndarray, shape (n_ions,), int64
        Committed hops so far.
    n_frames_ : int
        Frames given so far.
    """

    def __init__(self, n_ions: int, min_residence: int = 1) -> None:
        self.n_ions = int(n_ions)
        self.min_residence = max(1, int(min_residence))
        self.current_ = np.full(self.n_ions, -1, dtype=np.int64)
        self.cur_last_ = np.zeros(self.n_ions, dtype=np.int64)
        self.cand_ = np.full(self.n_ions, -1, dtype=np.int64)
        self.cand_first_ = np.zeros(self.n_ions, dtype=np.int64)
        self.cand_last_ = np.zeros(self.n_ions, dtype=np.int64)
        self.in_transit_ = np.ones(self.n_ions, dtype=bool)
        self.hops_ = np.zeros(self.n_ions, dtype=np.int64)
        self.n_frames_ = 0

    def update(self, states: np.ndarray) -> HopEvents:
        """Feed the next frames.

        Parameters
        ----------
        states : ndarray, shape (T, n_ions) or (n_ions,), int
            Core of every ion in each frame, -1 in transit.

        Returns
        -------
        HopEvents
            The hops committed in these frames.
        """
        st = np.asarray(states)
        if st.ndim == 1:
            st = st[None]
        if st.ndim != 2 or st.shape[1] != self.n_ions:
            raise ValueError(f"states must have shape (n_frames, {self.n_ions}), got {st.shape}")
        if len(st) == 0:
            return HopEvents.from_lists([])
        t0 = self.n_frames_
        ion, site, first, last = visits(st, t0)
        m = self.min_residence
        cur, cur_last = self.current_, self.cur_last_
        cand, cand_first, cand_last = self.cand_, self.cand_first_, self.cand_last_
        rows: list[tuple[int, int, int, int, int]] = []
        for i, s, f, la in zip(ion.tolist(), site.tolist(), first.tolist(), last.tolist()):
            c = cur[i]
            if c < 0:
                cur[i] = s
                cur_last[i] = la
                continue
            if s == c:
                cur_last[i] = la
                cand[i] = -1
                continue
            if s == cand[i]:
                cand_last[i] = la
            else:
                cand[i] = s
                cand_first[i] = f
                cand_last[i] = la
            if cand_last[i] - cand_first[i] + 1 >= m:
                rows.append((i, c, s, int(cur_last[i]), int(cand_first[i])))
                cur[i] = s
                cur_last[i] = cand_last[i]
                cand[i] = -1
        self.in_transit_ = st[-1] < 0
        self.n_frames_ = t0 + len(st)
        ev = HopEvents.from_lists(rows)
        if len(ev):
            np.add.at(self.hops_, ev.ion, 1)
        return ev

    def finish(self, nearest_last: np.ndarray | None = None) -> HopEvents:
        """Open hops at the end of the run (the rule's state is not changed).

        Parameters
        ----------
        nearest_last : ndarray, shape (n_ions,), optional
            Nearest site of every ion in the last frame (-1: none). An ion in transit in the
            last frame, with no pending candidate, nearest to a site other than its current
            one, is on its way there.

        Returns
        -------
        HopEvents
            ``open`` hops: a pending candidate (from the last frame in the current core to the
            candidate's first frame), or a last frame in transit towards another site (ending at
            the last frame).
        """
        rows: list[tuple[int, int, int, int, int]] = []
        last = self.n_frames_ - 1
        for i in np.flatnonzero(self.current_ >= 0).tolist():
            c = int(self.current_[i])
            if self.cand_[i] >= 0:
                rows.append((i, c, int(self.cand_[i]), int(self.cur_last_[i]), int(self.cand_first_[i])))
            elif nearest_last is not None and self.in_transit_[i]:
                k = int(nearest_last[i])
                if k >= 0 and k != c:
                    rows.append((i, c, k, int(self.cur_last_[i]), last))
        return HopEvents.from_lists(rows, is_open=True)

    # -- state (for a live estimator that is saved and resumed) ---------------------------------
    _STATE = ("current_", "cur_last_", "cand_", "cand_first_", "cand_last_", "in_transit_", "hops_")

    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays and counters that resume the rule exactly (:meth:`from_state_dict`)."""
        d = {k: np.array(getattr(self, k)) for k in self._STATE}
        d["n_frames_"] = np.array(self.n_frames_)
        d["min_residence"] = np.array(self.min_residence)
        return d

    @classmethod
    def from_state_dict(cls, d: dict[str, np.ndarray]) -> HopRule:
        rule = cls(len(d["current_"]), int(d["min_residence"]))
        for k in cls._STATE:
            setattr(rule, k, np.array(d[k]))
        rule.n_frames_ = int(d["n_frames_"])
        return rule
