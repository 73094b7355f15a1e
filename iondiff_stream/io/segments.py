"""Which frames of a run are analysed: segments of LAMMPS dumps and a time window on every input.

**Segments of a dump.** A LAMMPS script with its ``dump`` before the first ``run``, then an equilibration,
``reset_timestep 0`` and the production, leaves one dump whose step goes back to 0 (and whose frame at the
reset usually repeats the previous frame's configuration: the dump writes the setup step of the new run).
As in a frame store (:mod:`iondiff_stream.io.store`), such a dump holds *segments*: a segment starts at every
frame whose step is smaller than the step of the frame before. One file or several files of one run (read
as one chain) are split alike. The analysis takes

* the **last** segment by default (the production), saying so, since earlier segments exist;
* segment ``N`` (``--segment N``, ``segment=N``);
* ``"all"``: the segments joined on one time axis. The steps of a later segment continue from the end of
  the previous one, and its first frame is left out when it repeats the previous frame's configuration
  (the frame at the reset: equal within the dump's text rounding, modulo the box, since the new run's
  setup wraps atoms back into it); else it follows one step interval after the previous end.

A step that goes back to a frame the run already holds (same step, same configuration: the same file given
twice, restarts that overlap) is no reset: those frames stay in one segment, where the checks of
:mod:`iondiff_stream.io.validate` refuse the repeated frames as before.

**Time window.** ``start_ps``/``stop_ps`` (``--start-ps``/``--stop-ps``) keep the frames whose time, measured
from the first frame of the chosen segment (or of the run), lies in ``[start_ps, stop_ps]``. The frame
times are known before any position is read: steps × the MD timestep (dumps), frame count × the time
between frames, or the reader's own times (frame stores, files with times). Frame indices
(``start``/``stop``/``step``) count within the chosen segment too.

Frame stores choose their segment in their reader (:mod:`iondiff_stream.io.store_reader`); here only
their time window is applied.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from iondiff_stream.core.errors import IonDiffStreamError, TimestepError, TrajectoryFormatError
from iondiff_stream.io.formats import times_in_file

logger = logging.getLogger(__name__)

__all__ = ["FrameSelection", "check_time_window", "dump_steps", "select_frames", "step_segments"]


@dataclass
class FrameSelection:
    """The frames of a trajectory to analyse, in order, and how their clock runs.

    Attributes
    ----------
    frames : ndarray of int64, shape (n,)
        Trajectory frame indices to read.
    clock : ndarray of int64, shape (n,)
        Frame counter on the analysed time axis: ``time = clock × timestep_ps`` when the time between
        frames is given (equal to ``frames`` except after a boundary frame left out of joined segments).
    step_offset : ndarray of int64, shape (n,), or None
        Added to each frame's MD step (joined dump segments), so that the steps, and the times
        ``step × md_timestep_ps``, go on increasing.
    summary : dict
        What was chosen, for the run's summary: ``dump_segments``, ``segment_analysed``,
        ``boundary_frames_dropped``, ``time_window_ps``, ``frames_selected``.
    """

    frames: np.ndarray
    clock: np.ndarray
    step_offset: np.ndarray | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def check_time_window(start_ps: float | None, stop_ps: float | None) -> None:
    """Refuse a time window that selects nothing by construction.

    Parameters
    ----------
    start_ps, stop_ps : float or None
        Window, ps from the first frame analysed.

    Raises
    ------
    IonDiffStreamError
        A negative or non-finite time, or ``stop_ps <= start_ps``.
    """
    for name, v in (("start_ps (--start-ps)", start_ps), ("stop_ps (--stop-ps)", stop_ps)):
        try:
            ok = v is None or (math.isfinite(float(v)) and float(v) >= 0)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise IonDiffStreamError(f"{name} must be a time >= 0 ps, got {v!r}")
    if stop_ps is not None and stop_ps <= (start_ps or 0.0):
        raise IonDiffStreamError(f"stop_ps (--stop-ps) {stop_ps:g} ps must be later than start_ps (--start-ps) "
                                 f"{start_ps or 0.0:g} ps")


_STEP_LINE = re.compile(rb"ITEM: TIMESTEP[^\n]*\n([^\n]*)\n")


def _scan_steps(path: str) -> np.ndarray:
    """Steps of a dump read through its decompressed text in large pieces (compressed dumps, read by
    MDAnalysis's reader): one regular-expression pass, no line-by-line parsing."""
    from MDAnalysis.lib.util import anyopen

    steps: list[int] = []
    carry = b""
    with anyopen(path, "rb") as fh:
        while True:
            data = fh.read(1 << 24)
            buf = carry + data
            end = 0
            for m in _STEP_LINE.finditer(buf):
                try:
                    steps.append(int(m.group(1).split()[0]))
                except (ValueError, IndexError):
                    raise TrajectoryFormatError(f"{path}: frame {len(steps)} has no step number after "
                                                "ITEM: TIMESTEP") from None
                end = m.end()
            if not data:
                break
            # keep what may hold a step line cut between two pieces
            tail = buf[end:]
            cut = tail.rfind(b"ITEM: TIMESTEP")
            carry = tail[cut:] if cut >= 0 else tail[-len(b"ITEM: TIMESTEP") :]
    return np.array(steps, dtype=np.int64)


def dump_steps(traj: Any) -> np.ndarray | None:
    """MD step of every frame of a trajectory read from LAMMPS text dumps, without reading positions.

    Parameters
    ----------
    traj : MDAnalysis reader
        One reader, or a ChainReader over the files of one run.

    Returns
    -------
    ndarray of int64, shape (n_frames,), or None
        None when some file is not a LAMMPS text dump (other formats have no steps to split at).
    """
    from MDAnalysis.coordinates.LAMMPS import DumpReader

    from iondiff_stream.io.lammps_dump import FastDumpReader

    out = []
    for r in getattr(traj, "readers", [traj]):
        if isinstance(r, FastDumpReader):
            steps = r.steps()
        elif isinstance(r, DumpReader):
            steps = _scan_steps(os.fspath(r.filename))
        else:
            return None
        out.append(steps[: r.n_frames])
    steps = np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
    if len(steps) != traj.n_frames:  # pragma: no cover - the readers' frames and the step lines disagree
        return None
    return steps


def step_segments(steps: np.ndarray) -> list[dict[str, Any]]:
    """Segments of a run: a new one at every frame whose step is below the step of the frame before.

    Parameters
    ----------
    steps : ndarray of int, shape (n_frames,)

    Returns
    -------
    list of dict
        ``index``, ``start``, ``stop`` (frames ``[start, stop)``), ``n_frames``, ``first_step``,
        ``last_step``, ``started_by`` (``"start"`` or ``"timestep reset"``).
    """
    steps = np.asarray(steps, dtype=np.int64)
    n = len(steps)
    cuts = (np.flatnonzero(np.diff(steps) < 0) + 1).tolist()
    bounds = list(zip([0, *cuts], [*cuts, n]))
    return [{"index": k, "start": int(a), "stop": int(b), "n_frames": int(b - a), "first_step": int(steps[a]),
             "last_step": int(steps[b - 1]), "started_by": "start" if k == 0 else "timestep reset"}
            for k, (a, b) in enumerate(bounds) if b > a]


def choose_segment(segs: list[dict[str, Any]], segment: int | str | None, where: str) -> dict[str, Any] | None:
    """The segment record asked for by ``--segment`` (the one parser of the option, for files and stores).

    Parameters
    ----------
    segs : list of dict
        Segment records with an ``index`` (a ring store may no longer hold the first ones).
    segment : int, str or None
        A segment index, ``"all"`` or None (the last segment).
    where : str
        The file or store, named in the error.

    Returns
    -------
    dict or None
        The record; None for ``"all"``.
    """
    if isinstance(segment, str):
        if segment.strip().lower() == "all":
            return None
        try:
            segment = int(segment)
        except ValueError:
            raise IonDiffStreamError(f"--segment must be a segment number or 'all', got {segment!r}") from None
    if segment is None:
        return segs[-1]
    for s in segs:
        if s["index"] == int(segment):
            return s
    raise IonDiffStreamError(f"{where} has no segment {segment} (segments: "
                             f"{', '.join(str(s['index']) for s in segs)}, or 'all')")


#: largest displacement (Å) of any atom between two frames that are one configuration written twice: the
#: text of a dump rounds coordinates, and LAMMPS wraps atoms back into the box at the setup of a run
SAME_CONFIGURATION_A = 2e-3


def _same_configuration(traj: Any, i: int, j: int) -> bool:
    """True when frames ``i`` and ``j`` hold one configuration (a frame written again at a reset).

    Positions are compared modulo the box (the new run's setup wraps atoms that had left it) within the
    rounding of the dump's text, :data:`SAME_CONFIGURATION_A`.
    """
    from iondiff_stream.core.pbc import minimum_image

    ts = traj[i]
    a, box = ts.positions.astype(np.float64), ts.dimensions
    b = traj[j].positions.astype(np.float64)
    if box is None or not np.all(np.isfinite(box)) or np.any(box[:3] <= 0):
        d = b - a
    else:
        d = minimum_image(b - a, np.asarray(box, dtype=np.float64))
    return bool(np.abs(d).max(initial=0.0) <= SAME_CONFIGURATION_A)


def _replays(traj: Any, steps: np.ndarray, segs: list[dict[str, Any]], k: int) -> bool:
    """True when segment ``k`` starts by replaying an earlier frame (same step, same configuration): the same
    file given twice or overlapping restarts, not a timestep reset (left to the checks of repeated frames)."""
    a = segs[k]["start"]
    earlier = np.flatnonzero(steps[:a] == steps[a])
    return any(_same_configuration(traj, int(i), a) for i in earlier[-2:])


def _merge_replays(traj: Any, steps: np.ndarray, segs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Segments, with those that replay earlier frames joined to the one before (see :func:`_replays`)."""
    out = [dict(segs[0])]
    for k in range(1, len(segs)):
        if _replays(traj, steps, segs, k):
            out[-1]["stop"] = segs[k]["stop"]
            out[-1]["n_frames"] = out[-1]["stop"] - out[-1]["start"]
            out[-1]["last_step"] = segs[k]["last_step"]
        else:
            out.append(dict(segs[k], index=len(out)))
    return out


def _join(traj: Any, steps: np.ndarray, segs: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Frames, step offsets and dropped boundary frames of all segments on one axis of steps."""
    frames: list[np.ndarray] = []
    offsets: list[np.ndarray] = []
    dropped: list[int] = []
    shift = 0
    interval = 0
    prev_last: int | None = None
    for s in segs:
        a, b = s["start"], s["stop"]
        ii = np.arange(a, b)
        if prev_last is not None:
            end = int(steps[prev_last]) + shift  # the previous segment's last step on the joined axis
            if _same_configuration(traj, prev_last, a):
                dropped.append(a)
                ii = ii[1:]
                shift = end - int(steps[a])
            else:
                gap = int(steps[a + 1] - steps[a]) if b - a > 1 else interval
                shift = end + max(gap, 1) - int(steps[a])
        if b - a > 1:
            interval = int(steps[a + 1] - steps[a])
        if len(ii):
            frames.append(ii)
            offsets.append(np.full(len(ii), shift, dtype=np.int64))
        prev_last = b - 1
    return np.concatenate(frames), np.concatenate(offsets), dropped


def _times_before_reading(traj: Any, frames: np.ndarray, clock: np.ndarray, steps: np.ndarray | None,
                          timestep_ps: float | None, md_timestep_ps: float | None) -> np.ndarray:
    """Frame times (ps, from the first given frame) as the analysis will resolve them, before reading.

    Raises
    ------
    TimestepError
        The input has no times and none were given.
    """
    if md_timestep_ps is not None and steps is not None:
        t = steps.astype(np.float64) * float(md_timestep_ps)
    elif timestep_ps is not None:
        t = clock.astype(np.float64) * float(timestep_ps)
    elif hasattr(traj, "frame_times_ps"):
        t = np.asarray(traj.frame_times_ps(), dtype=np.float64)[frames]
    elif steps is not None:
        raise TimestepError(f"--start-ps/--stop-ps need the frame times, which {getattr(traj, 'filename', 'the dump')}"
                            " does not have: give the MD timestep (--md-timestep-ps, md_timestep_ps) or the time "
                            "between stored frames (--timestep-ps, timestep_ps)")
    else:
        if not (times_in_file(traj) or type(traj).__name__ == "MemoryReader"):
            raise TimestepError(f"--start-ps/--stop-ps need the frame times, which "
                                f"{getattr(traj, 'filename', None) or 'this file'} does not have: give the time "
                                "between stored frames (--timestep-ps, timestep_ps)")
        t = clock.astype(np.float64) * float(traj.dt)
    return t - t[0] if len(t) else t


def select_frames(
    u: Any,
    *,
    segment: int | str | None = None,
    start: int | None = None,
    stop: int | None = None,
    step: int | None = None,
    start_ps: float | None = None,
    stop_ps: float | None = None,
    timestep_ps: float | None = None,
    md_timestep_ps: float | None = None,
) -> FrameSelection | None:
    """The frames of a Universe to analyse (see the module docstring).

    Parameters
    ----------
    u : MDAnalysis.Universe
    segment : int, "all" or None
        Segment of a LAMMPS dump (default: the last). Frame stores have chosen theirs when opened;
        other inputs have one segment (only ``0``/``"all"``/None fit them).
    start, stop, step : int, optional
        Frame slice within the chosen segment.
    start_ps, stop_ps : float, optional
        Time window, ps from the first frame of the chosen segment.
    timestep_ps, md_timestep_ps : float, optional
        As given to the analysis (they decide the times the window is applied to).

    Returns
    -------
    FrameSelection or None
        None when every frame of ``u[start:stop:step]`` is analysed as it is (one segment, no window).

    Raises
    ------
    IonDiffStreamError
        A segment that does not exist, a bad window, or a window with fewer than two frames.
    TimestepError
        A window on a dump whose times are unknown.
    """
    check_time_window(start_ps, stop_ps)
    traj = u.trajectory
    where = getattr(traj, "filename", None)
    if where in (None, "CHAIN"):
        where = ", ".join(os.fspath(n) for n in getattr(traj, "filenames", [])) or "the trajectory"
    store = bool(getattr(traj, "iondiff_absolute_times", False))  # a frame store: its reader chose the segment
    steps = None if store else dump_steps(traj)
    n = traj.n_frames
    segs = _merge_replays(traj, steps, step_segments(steps)) if steps is not None else [
        {"index": 0, "start": 0, "stop": n, "n_frames": n, "first_step": None, "last_step": None, "started_by": "start"}]
    rec = None if store else choose_segment(segs, segment, where)
    chosen = None if rec is None else rec["index"]
    window = start_ps is not None or stop_ps is not None
    if len(segs) == 1 and not window:
        return None  # the frames as they are: u.trajectory[start:stop:step]
    summary: dict[str, Any] = {}
    offset: np.ndarray | None = None
    if len(segs) > 1:
        summary["dump_segments"] = [{"index": g["index"], "first_frame": g["start"], "n_frames": g["n_frames"],
                                     "first_step": g["first_step"], "last_step": g["last_step"],
                                     "started_by": g["started_by"]} for g in segs]
        summary["segment_analysed"] = "all" if chosen is None else chosen
    if chosen is None and len(segs) > 1:
        frames, offset, dropped = _join(traj, steps, segs)
        summary["boundary_frames_dropped"] = dropped
        clock = frames - np.searchsorted(np.asarray(dropped, dtype=np.int64), frames)
        logger.info("%s: %d segments (timestep resets) joined on one time axis: %d frames%s", where, len(segs),
                    len(frames), f"; boundary frame(s) {dropped} repeat the frame before and are left out"
                    if dropped else "")
    else:
        seg = segs[-1] if chosen is None else segs[chosen]
        frames = np.arange(seg["start"], seg["stop"], dtype=np.int64)
        clock = frames.copy()
        if len(segs) > 1:
            msg = (f"{where}: the MD step goes back {len(segs) - 1} time(s) (reset_timestep): {len(segs)} segments; "
                   f"analysed: segment {seg['index']} (frames {seg['start']}..{seg['stop'] - 1} of the file(s), steps "
                   f"{seg['first_step']}..{seg['last_step']})")
            if segment is None:
                logger.warning("%s, the last; earlier segments exist (choose with --segment N|all)", msg)
            else:
                logger.info("%s", msg)
    t = None
    if window:
        seg_steps = None if steps is None else steps[frames] + (0 if offset is None else offset)
        t = _times_before_reading(traj, frames, clock, seg_steps, timestep_ps, md_timestep_ps)
    if start is not None or stop is not None or step is not None:
        sl = slice(start, stop, step)
        frames, clock = frames[sl], clock[sl]
        offset = offset[sl] if offset is not None else None
        t = t[sl] if t is not None else None
    if t is not None:
        eps = 1e-6 * (float(np.median(np.abs(np.diff(t)))) if len(t) > 1 else 1.0) + 1e-12
        lo = -np.inf if start_ps is None else start_ps - eps
        hi = np.inf if stop_ps is None else stop_ps + eps
        keep = (t >= lo) & (t <= hi)
        span = f"{start_ps or 0:g}..{'end' if stop_ps is None else f'{stop_ps:g}'} ps"
        if keep.sum() < 2:
            have = f"0..{t[-1]:g} ps" if len(t) else "no frames"
            raise IonDiffStreamError(f"{where}: {int(keep.sum())} frame(s) in the window {span} (--start-ps/--stop-ps, "
                                     f"from the first frame analysed); the frames span {have}")
        frames, clock = frames[keep], clock[keep]
        offset = offset[keep] if offset is not None else None
        summary["time_window_ps"] = [start_ps, stop_ps]
        logger.info("%s: the window %s keeps frames %d..%d (%d frames)", where, span, int(frames[0]),
                    int(frames[-1]), len(frames))
    if not len(frames):
        raise IonDiffStreamError(f"{where}: no frames selected (start={start}, stop={stop}, step={step})")
    summary["frames_selected"] = [int(frames[0]), int(frames[-1])]
    return FrameSelection(frames=frames, clock=clock, step_offset=offset, summary=summary)
