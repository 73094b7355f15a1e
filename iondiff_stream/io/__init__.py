"""Input: one MDAnalysis :class:`~MDAnalysis.core.universe.Universe` for every source, and the frames read once.

* :mod:`iondiff_stream.io.formats`: the formats table (format → reader, has times, has velocities, has elements)
  and :func:`guess_format`.
* :mod:`iondiff_stream.io.universe`: :func:`load_universe` (LAMMPS dumps with a data file as topology,
  XYZ/extxyz, ASE .traj, DCD/XTC, H5MD, VASP XDATCAR plain or ``.gz``, iondiff_stream Zarr stores; one file or
  several consecutive files as one run) and :func:`select_mobile`.
* :mod:`iondiff_stream.io.positions`: :class:`UnwrappedPositions` / :func:`collect_positions`, the one
  frame-reading path (unwrapped, drift-corrected positions, optionally velocities; in memory or out of core).
* :mod:`iondiff_stream.io.store` / :mod:`~iondiff_stream.io.sink`: the Zarr frame store and the writer the
  LAMMPS hooks feed.

Units: Å and ps.
"""

from __future__ import annotations

from iondiff_stream.io.formats import FORMATS, RESULTS_FORMAT, TrajectoryFormat, guess_format
from iondiff_stream.io.positions import TrajectoryData, UnwrappedPositions, collect_positions
from iondiff_stream.io.readers import read_xdatcar
from iondiff_stream.io.universe import check_frame_store, elements_of, load_universe, select_mobile

__all__ = [
    "load_universe",
    "select_mobile",
    "elements_of",
    "check_frame_store",
    "UnwrappedPositions",
    "TrajectoryData",
    "collect_positions",
    "read_xdatcar",
    "guess_format",
    "FORMATS",
    "TrajectoryFormat",
    "RESULTS_FORMAT",
]
