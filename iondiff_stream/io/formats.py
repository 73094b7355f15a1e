"""The formats table: every trajectory format the package reads, in one place.

One row per format: the MDAnalysis format key, which file names it claims, whether the file stores the time
between frames, velocities, element names, and (for LAMMPS dumps) the reader that gives velocities. Everything
that used to special-case a format by name asks this table: :func:`guess_format` (file name → format),
:func:`times_in_file` (does a reader know its frame times?), :func:`format_of_reader` and
:func:`velocity_reading` (how the descriptors read velocities). Adding a format is one row here plus its reader
(an MDAnalysis reader registered by importing its module, e.g. :mod:`iondiff_stream.io.readers`).

Units: Å and ps inside; ``velocity_to_A_ps`` converts the file's velocities.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["TrajectoryFormat", "FORMATS", "RESULTS_FORMAT", "guess_format", "format_named", "format_of_reader",
           "times_in_file", "velocity_reading"]

#: ``format`` attribute of the results.zarr an analysis writes (a data format name, not a trajectory format)
RESULTS_FORMAT = "iondiff_stream.results"


@dataclass(frozen=True)
class TrajectoryFormat:
    """One row of the formats table.

    Attributes
    ----------
    name : str
        MDAnalysis format key (``format=`` of :class:`MDAnalysis.Universe`).
    description : str
    suffixes : tuple of str
        Lower-case file suffixes claimed (after an optional ``.gz``).
    claims : callable, optional
        ``claims(path, stem)`` for names a suffix does not decide (``XDATCAR``, ``dump.*``, a Zarr directory).
    has_times : bool
        The file stores the time of each frame (else: ``--timestep-ps`` or ``--md-timestep-ps``).
    has_velocities : bool
        The file can hold velocities.
    has_elements : bool
        The file names the elements (it is its own topology).
    topology_only : bool
        A topology, not a trajectory (LAMMPS data files).
    velocity_format : str, optional
        Reader that gives the velocities when another one is used for positions (LAMMPS dumps: MDAnalysis's
        ``LAMMPSDUMP`` reads ``vx vy vz``; the faster ``IONDIFFDUMP`` reads positions only).
    velocity_unit : str
        ``"A/ps"``, or ``"lammps"`` (the run's LAMMPS unit style, :func:`iondiff_stream.core.units.lammps_factors`).
    readers : tuple of str
        Names of reader classes of this format beyond ``name`` (MDAnalysis keys them by class ``format``).
    """

    name: str
    description: str
    suffixes: tuple[str, ...] = ()
    claims: Callable[[str, str], bool] | None = None
    has_times: bool = False
    has_velocities: bool = False
    has_elements: bool = False
    topology_only: bool = False
    velocity_format: str | None = None
    velocity_unit: str = "A/ps"
    readers: tuple[str, ...] = ()

    def matches(self, path: str) -> bool:
        """True when this format claims the file name ``path``."""
        base = os.path.basename(path)
        stem = base[:-3] if base.endswith(".gz") else base
        if self.claims is not None and self.claims(path, stem):
            return True
        return os.path.splitext(stem)[1].lower() in self.suffixes


def _is_zarr_dir(path: str, stem: str) -> bool:
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "zarr.json"))


#: The formats table, in the order names are matched.
FORMATS: tuple[TrajectoryFormat, ...] = (
    TrajectoryFormat("XDATCAR", "VASP XDATCAR (plain or .gz)", claims=lambda p, s: "XDATCAR" in s.upper(),
                     has_elements=True),
    TrajectoryFormat("EXTXYZ", "extended XYZ (cell from Lattice=, times from time_fs/time_ps, velocities "
                     "from momenta or vel)", suffixes=(".extxyz",), has_elements=True, has_velocities=True),
    TrajectoryFormat("ASETRAJ", "ASE trajectory (.traj, ase.io.Trajectory)", suffixes=(".traj",), has_elements=True,
                     has_velocities=True),
    TrajectoryFormat("LAMMPSDUMP", "LAMMPS text dump (with a data file as topology)", suffixes=(".dump", ".lammpstrj"),
                     claims=lambda p, s: s.lower().startswith("dump."), has_velocities=True,
                     velocity_format="LAMMPSDUMP", velocity_unit="lammps", readers=("IONDIFFDUMP",)),
    TrajectoryFormat("IONDIFFZARR", "iondiff_stream Zarr frame store", suffixes=(".zarr",), claims=_is_zarr_dir,
                     has_times=True, has_elements=True),
    TrajectoryFormat("DATA", "LAMMPS data file (topology)", suffixes=(".data", ".lmp"),
                     claims=lambda p, s: s.lower().endswith("data.txt") or s.lower().startswith("data."),
                     topology_only=True),
    TrajectoryFormat("XYZ", "plain XYZ (no cell, no times)", suffixes=(".xyz",), has_elements=True),
    TrajectoryFormat("DCD", "CHARMM/LAMMPS DCD", suffixes=(".dcd",), has_times=True),
    TrajectoryFormat("XTC", "GROMACS XTC", suffixes=(".xtc",), has_times=True),
    TrajectoryFormat("TRR", "GROMACS TRR", suffixes=(".trr",), has_times=True, has_velocities=True),
    TrajectoryFormat("H5MD", "H5MD", suffixes=(".h5md",), has_times=True, has_velocities=True),
)

_BY_NAME = {f.name: f for f in FORMATS} | {r: f for f in FORMATS for r in f.readers}
# formats named here only so that guess_format leaves them to MDAnalysis (it knows them by suffix itself)
_LEFT_TO_MDANALYSIS = {"XYZ", "DCD", "XTC", "TRR", "H5MD"}


def format_named(name: str | None) -> TrajectoryFormat | None:
    """The table row of an MDAnalysis format key (or one of its reader keys, e.g. ``IONDIFFDUMP``), or None."""
    return None if name is None else _BY_NAME.get(str(name).upper())


def guess_format(path: str | os.PathLike[str]) -> str | None:
    """MDAnalysis format key of a file from its name (the formats table), or None to let MDAnalysis guess.

    Parameters
    ----------
    path : str or path-like
    """
    p = os.fspath(path)
    for f in FORMATS:
        if f.matches(p):
            return None if f.name in _LEFT_TO_MDANALYSIS else f.name
    return None


def format_of_reader(reader: Any) -> TrajectoryFormat | None:
    """The table row of an open MDAnalysis reader (its class's ``format`` key), or None when not in the table."""
    keys = getattr(type(reader), "format", None)
    for k in [keys] if isinstance(keys, str) else list(keys or []):
        f = format_named(k)
        if f is not None:
            return f
    return None


def times_in_file(reader: Any) -> bool:
    """True when every file of ``reader`` (a ChainReader's parts, or the reader) gives its frame times.

    A reader that read times from its file says so (``dt_from_file``, ``iondiff_times_from_file``); otherwise
    its format's row decides.
    """
    subs = getattr(reader, "readers", [reader])
    for r in subs:
        if getattr(r, "dt_from_file", None) is not None or getattr(r, "iondiff_times_from_file", False):
            continue
        f = format_of_reader(r)
        if f is None or not f.has_times or getattr(r, "dt_from_file", 0) is None:
            return False
    return True


def velocity_reading(path: str, lammps_units: str = "metal") -> tuple[str | None, float]:
    """How to read velocities of a file: the reader to force (or None) and the factor to Å/ps.

    Parameters
    ----------
    path : str
    lammps_units : str
        LAMMPS unit style of dump velocities.
    """
    f = format_named(guess_format(path))
    if f is None or not f.has_velocities:
        return None, 1.0
    scale = 1.0
    if f.velocity_unit == "lammps":
        from iondiff_stream.core.units import lammps_factors

        length, time = lammps_factors(lammps_units)
        scale = length / time
    return f.velocity_format, scale
