"""Checks on a run's frames before any analysis: nothing silently wrong.

A run given as several files (restarts) is only one run when its frames follow
each other. These checks catch the inputs that otherwise give wrong numbers
without a word:

* **duplicated or overlapping frames** (the same file given twice, restarts
  that repeat frames): two analysed frames with bit-identical mobile-ion
  coordinates;
* **discontinuities** (files given out of order, a missing piece of the run):
  a frame where most mobile ions jump far more than between the frames around
  it. The measure is the *median over the mobile ions* of the frame-to-frame
  (minimum-image) displacement, so ions hopping (a few ions moving far) do not
  count; the frame must exceed ``ratio`` times the larger of the medians of the
  ``window`` frames on either side, which lets a run change its output
  interval (a step, not a spike). On the real AIMD runs in ../shared/data the
  largest such ratio of a frame to the run's median is 1.2-1.4; two argyrodite
  restarts given twice or swapped give 5.3 and 6.7. Runs with fewer than
  :data:`MIN_IONS_FOR_JUMPS` mobile ions are not checked (concerted hops of a
  few ions would move the median);
* **non-increasing times**;
* **timesteps** that are not finite and positive, or that contradict the
  times the file carries.

Errors name the file and the frame (0-based, within that file and within the
run) and the command-line option that lets the user proceed where proceeding
makes sense. Units: Å and ps.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import numpy as np

from iondiff_stream.core.errors import TimestepError, TrajectoryFormatError

logger = logging.getLogger(__name__)

__all__ = [
    "frame_source",
    "check_timestep",
    "check_duplicates",
    "check_discontinuities",
    "check_times_increase",
    "check_timestep_agrees",
    "ALLOW_DISCONTINUITIES",
    "FORCE_TIMESTEP",
    "MIN_IONS_FOR_JUMPS",
    "median_step",
]

#: below this many mobile ions a few concerted hops can move the median ion: no jump check
MIN_IONS_FOR_JUMPS = 20

#: how the options are named in messages (the CLI flag, then the Python argument)
ALLOW_DISCONTINUITIES = "--allow-discontinuities (allow_discontinuities=True)"
FORCE_TIMESTEP = "--force-timestep (force_timestep=True)"


def frame_source(traj: Any, frame: int) -> str:
    """Human-readable location of trajectory frame ``frame`` (0-based, whole run).

    Parameters
    ----------
    traj : MDAnalysis reader (a ChainReader for several files)
    frame : int

    Returns
    -------
    str
        ``"FILE frame f"`` or, for a chain, ``"FILE frame f (frame k of the run)"``.
    """
    frame = int(frame)
    if hasattr(traj, "_get_local_frame") and hasattr(traj, "filenames"):
        try:
            i, f = traj._get_local_frame(frame)
            name = traj.filenames[i]
            return f"{name} frame {int(f)} (frame {frame} of the run)"
        except (IndexError, ValueError):  # frame past the end: name the last file
            return f"{traj.filenames[-1]} frame past {frame - 1} of the run"
    name = getattr(traj, "filename", None)
    return f"{name} frame {frame}" if name else f"frame {frame}"


def check_timestep(value: float | None, what: str = "timestep (--timestep-ps)") -> float | None:
    """Refuse a timestep that is not a finite number > 0 (ps); None passes.

    Raises
    ------
    TimestepError
    """
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise TimestepError(f"{what} must be a number of ps, got {value!r}") from exc
    if not math.isfinite(v) or v <= 0:
        raise TimestepError(f"{what} must be a finite number > 0 ps, got {value!r}")
    return v


def check_duplicates(hashes: np.ndarray, frames: np.ndarray, traj: Any, allow: bool = False) -> list[tuple[int, int]]:
    """Find analysed frames whose mobile-ion coordinates are bit-identical to an earlier frame.

    Parameters
    ----------
    hashes : ndarray of int64 or uint64, shape (n_frames,)
        A hash of each analysed frame's coordinates.
    frames : ndarray of int, shape (n_frames,)
        Trajectory frame index of each analysed frame.
    traj : MDAnalysis reader
        For the file names in messages.
    allow : bool
        Warn instead of raising.

    Returns
    -------
    list of (int, int)
        (earlier, later) analysed-frame index pairs.

    Raises
    ------
    TrajectoryFormatError
        On the first repeated frame unless ``allow``.
    """
    h = np.asarray(hashes).view(np.uint64) if np.asarray(hashes).dtype == np.int64 else np.asarray(hashes, np.uint64)
    if len(h) < 2:
        return []
    order = np.argsort(h, kind="stable")
    hs = h[order]
    same = np.flatnonzero(hs[1:] == hs[:-1])
    if len(same) == 0:
        return []
    # first occurrence of each repeated hash, then the later copies
    first_of: dict[int, int] = {}
    pairs: list[tuple[int, int]] = []
    for j in same:
        a, b = int(order[j]), int(order[j + 1])
        key = int(hs[j])
        first = first_of.setdefault(key, min(a, b))
        pairs.append((first, max(a, b)))
    pairs.sort(key=lambda p: p[1])
    i, j = pairs[0]
    n = len({p[1] for p in pairs})
    msg = (
        f"{frame_source(traj, frames[j])} repeats {frame_source(traj, frames[i])} exactly "
        f"({n} repeated frame{'s' if n > 1 else ''}): duplicated or overlapping frames "
        "(the same file given twice, or restart files that overlap); remove the repeated frames"
    )
    if not allow:
        raise TrajectoryFormatError(msg + f", or pass {ALLOW_DISCONTINUITIES} to analyse as is")
    logger.warning("%s; analysing as is (allow_discontinuities)", msg)
    return pairs


def median_step(pos: np.ndarray, block: int = 4096) -> np.ndarray:
    """Median over ions of the displacement between consecutive frames.

    Parameters
    ----------
    pos : ndarray, shape (n_frames, n_ions, 3)
        Unwrapped positions, Å.
    block : int
        Frames per vectorised block (bounds the temporary memory).

    Returns
    -------
    ndarray, shape (n_frames,)
        Å; entry 0 is 0.
    """
    T = pos.shape[0]
    out = np.zeros(T)
    for a in range(1, T, block):
        b = min(T, a + block)
        d = pos[a:b] - pos[a - 1 : b - 1]
        out[a:b] = np.median(np.sqrt((d * d).sum(-1)), axis=1)
    return out


def _side_medians(x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Median of the ``window`` values before and after each entry (NaN where none)."""
    n = len(x)
    left = np.full(n, np.nan)
    right = np.full(n, np.nan)
    if n >= 2:
        from numpy.lib.stride_tricks import sliding_window_view

        pad = np.concatenate([np.full(window, np.nan), x, np.full(window, np.nan)])
        win = sliding_window_view(pad, window)  # win[s] = pad[s : s + window]
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows at the ends
                left = np.nanmedian(win[np.arange(n)], axis=1)  # x[k-window : k]
                right = np.nanmedian(win[np.arange(n) + window + 1], axis=1)  # x[k+1 : k+1+window]
    return left, right


def check_discontinuities(
    spread_A: np.ndarray,
    frames: np.ndarray,
    traj: Any,
    allow: bool = False,
    ratio: float = 2.5,
    n_mad: float = 10.0,
    window: int = 8,
) -> np.ndarray:
    """Find frames where the whole system jumps (runs out of order, missing pieces).

    Parameters
    ----------
    spread_A : ndarray, shape (n_frames,)
        Median over the mobile ions of the (minimum-image) displacement from
        the previous analysed frame, Å (entry 0 is ignored; see :func:`median_step`).
    frames : ndarray of int, shape (n_frames,)
        Trajectory frame index of each analysed frame.
    traj : MDAnalysis reader
    allow : bool
        Warn instead of raising.
    ratio : float
        A frame is a jump when its spread exceeds ``ratio`` times the larger of
        the median spreads of the ``window`` frames before and after it ...
    n_mad : float
        ... and that excess ratio is more than ``n_mad`` robust standard
        deviations (1.4826 MAD) of the run's excess ratios above 1.
    window : int

    Returns
    -------
    ndarray of int
        Analysed-frame indices of the jumps.

    Raises
    ------
    TrajectoryFormatError
        On the first jump unless ``allow``.
    """
    s = np.asarray(spread_A, dtype=np.float64)[1:]
    if len(s) < 2 * window or not np.all(np.isfinite(s)):
        return np.zeros(0, dtype=np.int64)
    left, right = _side_medians(s, window)
    ref = np.fmax(left, right)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(ref > 0, s / ref, np.nan)
    ok = np.isfinite(q)
    if ok.sum() < 2 * window:
        return np.zeros(0, dtype=np.int64)
    med = float(np.median(q[ok]))
    mad = 1.4826 * float(np.median(np.abs(q[ok] - med)))
    bad = np.flatnonzero(ok & (q > ratio) & (q - med > n_mad * max(mad, 1e-3)))
    jumps = bad + 1
    if len(jumps) == 0:
        return jumps.astype(np.int64)
    k = int(jumps[0])
    msg = (
        f"{frame_source(traj, frames[k])}: the mobile ions jump {s[k - 1]:.3g} Å (median) from the frame "
        f"before, {q[k - 1]:.1f}x the {ref[k - 1]:.3g} Å between the neighbouring frames"
        f"{f' ({len(jumps)} such jumps)' if len(jumps) > 1 else ''}: files out of order, not consecutive, "
        "or a piece of the run missing; give the files of one run in time order"
    )
    if not allow:
        raise TrajectoryFormatError(msg + f", or pass {ALLOW_DISCONTINUITIES} to analyse as is")
    logger.warning("%s; analysing as is (allow_discontinuities)", msg)
    return jumps.astype(np.int64)


def check_times_increase(times_ps: np.ndarray, frames: np.ndarray, traj: Any) -> None:
    """Refuse frame times that do not increase (duplicated or overlapping frames).

    Raises
    ------
    TimestepError
        Naming the file and frame where the time stops increasing.
    """
    t = np.asarray(times_ps, dtype=np.float64)
    if len(t) < 2:
        return
    dtt = np.diff(t)
    if np.any(dtt <= 0):
        k = int(np.argmax(dtt <= 0))
        raise TimestepError(
            f"{frame_source(traj, frames[k + 1])}: frame times do not increase ({t[k]:.6g} -> {t[k + 1]:.6g} ps "
            f"from {frame_source(traj, frames[k])}): duplicated or out-of-order frames "
            "(e.g. overlapping restart files); remove the repeated frames or give the files in time order"
        )


def check_timestep_agrees(
    timestep_ps: float,
    file_times_ps: np.ndarray,
    frames: np.ndarray,
    traj: Any,
    force: bool = False,
    rtol: float = 1e-3,
    source: str | None = None,
) -> bool:
    """Compare an explicit timestep with the times a file carries.

    Parameters
    ----------
    timestep_ps : float
        Time between stored frames given by the user, ps.
    file_times_ps : ndarray, shape (n_frames,)
        The file's own time of each analysed frame, ps.
    frames : ndarray of int, shape (n_frames,)
        Trajectory frame index of each analysed frame (a stride multiplies the spacing).
    traj : MDAnalysis reader
    force : bool
        Use ``timestep_ps`` anyway (with a warning).
    rtol : float
    source : str, optional
        What the other times come from, for the message (default: the file's name).

    Returns
    -------
    bool
        True when they agree (or the file has fewer than 2 frames).

    Raises
    ------
    TimestepError
        When they disagree and ``force`` is False.
    """
    t = np.asarray(file_times_ps, dtype=np.float64)
    f = np.asarray(frames, dtype=np.float64)
    if len(t) < 2:
        return True
    per_frame = np.diff(t) / np.diff(f)
    file_dt = float(np.median(per_frame))
    if math.isclose(file_dt, timestep_ps, rel_tol=rtol):
        return True
    if source is None:
        name = getattr(traj, "filename", None)
        if name in (None, "CHAIN"):
            names = getattr(traj, "filenames", None)
            name = ", ".join(os.fspath(n) for n in names) if names is not None else "the trajectory"
        source = f"the times in {name}"
    msg = f"timestep (--timestep-ps) {timestep_ps:g} ps contradicts {source} ({file_dt:.6g} ps between stored frames)"
    if not force:
        raise TimestepError(msg + f": drop --timestep-ps to use those times, or pass {FORCE_TIMESTEP}")
    logger.warning("%s; using %g ps as forced", msg, timestep_ps)
    return False
