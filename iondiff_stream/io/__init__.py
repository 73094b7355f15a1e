"""Input: one MDAnalysis :class:`~MDAnalysis.core.universe.Universe` for every source.

* :func:`load_universe` opens LAMMPS dumps (with a data file as topology),
  XYZ/extxyz, DCD/XTC, H5MD, VASP XDATCAR (plain or ``.gz``) and iondiff_stream
  Zarr stores, one file or several consecutive files (restarts) as one run.
* :func:`select_mobile` picks the mobile ions by element, type, name or any
  MDAnalysis selection string.
* :class:`UnwrappedPositions` (an MDAnalysis analysis) collects unwrapped,
  optionally drift-corrected positions of the mobile ions as one array.

Units: Å and ps.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import MDAnalysis as mda
import numpy as np
from MDAnalysis.analysis.base import AnalysisBase
from MDAnalysis.lib.mdamath import triclinic_vectors
from MDAnalysis.guesser.tables import masses as _MASS_TABLE

from ..errors import (
    InvalidCoordinatesError,
    SelectionError,
    TimestepError,
    TrajectoryFileNotFoundError,
    TrajectoryFormatError,
)
from . import lammps_dump  # noqa: F401  (registers the fast LAMMPS dump reader IONDIFFDUMP)
from . import readers  # noqa: F401  (registers XDATCAR / EXTXYZ with MDAnalysis)
from .readers import read_xdatcar

logger = logging.getLogger(__name__)

__all__ = [
    "load_universe",
    "select_mobile",
    "UnwrappedPositions",
    "TrajectoryData",
    "collect_positions",
    "read_xdatcar",
    "guess_format",
]

_ELEMENTS = {k.capitalize() for k in _MASS_TABLE if k.isalpha() and len(k) <= 2}


def guess_format(path: str) -> str | None:
    """Format name for MDAnalysis from a file name, or None to let MDAnalysis guess."""
    base = os.path.basename(path)
    stem = base[:-3] if base.endswith(".gz") else base
    if "XDATCAR" in stem.upper():
        return "XDATCAR"
    ext = os.path.splitext(stem)[1].lower()
    if ext == ".extxyz":
        return "EXTXYZ"
    if ext in (".dump", ".lammpstrj") or stem.lower().startswith("dump."):
        return "LAMMPSDUMP"
    if ext == ".zarr" or (os.path.isdir(path) and os.path.exists(os.path.join(path, "zarr.json"))):
        return "IONDIFFZARR"
    if ext in (".data", ".lmp") or stem.lower().endswith("data.txt") or stem.lower().startswith("data."):
        return "DATA"
    return None


_ATOM_STYLES = {
    "atomic": "id type x y z",
    "charge": "id type q x y z",
    "molecular": "id resid type x y z",
    "full": "id resid type q x y z",
    "bond": "id resid type x y z",
    "angle": "id resid type x y z",
}


def _data_atom_style(path: str) -> str | None:
    """MDAnalysis ``atom_style`` string from the ``Atoms # style`` hint of a LAMMPS data file."""
    with open(path) as fh:
        for line in fh:
            m = re.match(r"\s*Atoms\s*#\s*(\w+)", line)
            if m:
                return _ATOM_STYLES.get(m.group(1))
    return None


def _check_dump_complete(path: str, allow_truncated: bool) -> None:
    """Refuse a LAMMPS text dump whose last frame is cut short (killed run).

    Reads the first header and the tail of the file only (a full scan for
    compressed files).
    """
    from MDAnalysis.lib.util import anyopen

    with anyopen(path) as fh:
        head = [fh.readline() for _ in range(4)]
    if not head[0].startswith("ITEM: TIMESTEP") or not head[2].startswith("ITEM: NUMBER OF ATOMS"):
        raise TrajectoryFormatError(f"{path}: not a LAMMPS text dump (no ITEM: TIMESTEP / NUMBER OF ATOMS)")
    n_atoms = int(head[3])
    if path.endswith((".gz", ".bz2")):
        with anyopen(path) as fh:
            lines = fh.read().splitlines()
    else:
        size = os.path.getsize(path)
        block = min(size, max(4096, 200 * (n_atoms + 10)))
        while True:
            with open(path, "rb") as fb:
                fb.seek(size - block)
                tail = fb.read().decode(errors="replace")
            if "ITEM: TIMESTEP" in tail or block >= size:
                break
            block = min(size, 4 * block)
        lines = tail.splitlines()
    last = max(i for i, ln in enumerate(lines) if ln.startswith("ITEM: TIMESTEP"))
    got = len(lines) - last - 9
    if got != n_atoms:
        msg = f"{path}: last frame is incomplete: {max(got, 0)} of {n_atoms} atom lines; the frames before it are complete"
        if not allow_truncated:
            raise TrajectoryFormatError(msg + " (allow_truncated=True keeps them)")
        logger.warning("%s; using those", msg)


def load_universe(
    trajectories: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    topology: str | os.PathLike[str] | None = None,
    *,
    format: str | None = None,
    topology_format: str | None = None,
    length_scale: float = 1.0,
    **kwargs: Any,
) -> mda.Universe:
    """Open one run, possibly split over several consecutive files.

    Parameters
    ----------
    trajectories : path or sequence of paths
        Trajectory files in time order. Several files are chained
        (MDAnalysis ``ChainReader``), e.g. the restarts run1..run5 of one AIMD run.
    topology : path, optional
        Topology file (a LAMMPS data file for dumps). Defaults to the first
        trajectory for self-describing formats (XDATCAR, extxyz, XYZ).
    format, topology_format : str, optional
        Force MDAnalysis formats; guessed from the names otherwise.
    length_scale : float
        Factor to Å for LAMMPS unit styles other than metal/real (see
        :func:`iondiff_stream.units.lammps_factors`). Stored on the Universe as
        ``u.iondiff_length_scale`` and applied by :class:`UnwrappedPositions`.
    **kwargs
        Passed to the reader (e.g. ``dt``, ``allow_truncated``).

    Returns
    -------
    MDAnalysis.Universe
    """
    if isinstance(trajectories, (str, os.PathLike)):
        trajectories = [trajectories]
    paths = [os.fspath(p) for p in trajectories]
    if not paths:
        raise TrajectoryFileNotFoundError("no trajectory file given")
    for p in paths + ([os.fspath(topology)] if topology is not None else []):
        if not os.path.exists(p):
            raise TrajectoryFileNotFoundError(f"file not found: {p}")
    fmt = format or guess_format(paths[0])
    if fmt == "IONDIFFZARR":
        from ..buffer import universe_from_store

        if len(paths) != 1:
            raise TrajectoryFormatError("a Zarr store is one run: give one store")
        return universe_from_store(paths[0], **kwargs)
    top = os.fspath(topology) if topology is not None else paths[0]
    top_fmt = topology_format or (guess_format(top) if topology is not None else fmt)
    if top_fmt == "LAMMPSDUMP":
        raise TrajectoryFormatError(
            "a LAMMPS dump has no element information: give the LAMMPS data file with --topology"
        )
    if top_fmt == "DATA" and "atom_style" not in kwargs:
        style = _data_atom_style(top)
        if style is not None:
            kwargs["atom_style"] = style
    allow_truncated = bool(kwargs.pop("allow_truncated", False)) if fmt != "XDATCAR" else kwargs.get("allow_truncated", False)
    if fmt == "LAMMPSDUMP":
        for p in paths:
            _check_dump_complete(p, allow_truncated)
    no_time = fmt in ("LAMMPSDUMP", "XYZ") or (fmt is None and paths[0].lower().endswith((".xyz", ".xyz.gz")))
    if no_time and "dt" not in kwargs:
        kwargs["dt"] = 1.0  # placeholder: frame times are resolved by UnwrappedPositions
    if format is None:  # an explicit format="LAMMPSDUMP" keeps MDAnalysis's reader
        fmt = _fast_reader_format(fmt, paths, kwargs)
    if fmt == "IONDIFFDUMP":
        kwargs["allow_truncated"] = allow_truncated  # checked above; the reader then drops the cut frame
    traj: Any = paths[0] if len(paths) == 1 else paths
    try:
        u = mda.Universe(top, traj, format=fmt, topology_format=top_fmt, **kwargs)
    except (TrajectoryFormatError, TrajectoryFileNotFoundError):
        raise
    except (ValueError, OSError, EOFError, IndexError, KeyError, TypeError) as exc:
        raise TrajectoryFormatError(
            f"cannot open {', '.join(paths)} (format {fmt or 'guessed'}, topology {top}): {exc}"
        ) from exc
    if u.trajectory.n_frames == 0:
        raise TrajectoryFormatError(f"{', '.join(paths)}: no frames")
    u.iondiff_length_scale = float(length_scale)  # type: ignore[attr-defined]
    u.iondiff_box_fallback = None  # type: ignore[attr-defined]
    if u.dimensions is None and topology is not None:
        # e.g. a LAMMPS xyz dump (no cell) with the box in the data file
        try:
            extra = {"atom_style": kwargs["atom_style"]} if "atom_style" in kwargs else {}
            tu = mda.Universe(top, topology_format=top_fmt, format=top_fmt, **extra)
            u.iondiff_box_fallback = None if tu.dimensions is None else np.asarray(tu.dimensions, float)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - best effort, checked later
            pass
    return u


_MDA_ONLY_DUMP_OPTIONS = ("unwrap_images", "additional_columns")


def _fast_reader_format(fmt: str | None, paths: list[str], kwargs: dict[str, Any]) -> str | None:
    """``IONDIFFDUMP`` (the block-parsing reader) for plain LAMMPS text dumps it can read, else ``fmt``.

    MDAnalysis's own reader stays in use for compressed dumps, dumps with
    non-numeric atom columns and the reader options only it has.
    """
    if fmt != "LAMMPSDUMP" or any(k in kwargs for k in _MDA_ONLY_DUMP_OPTIONS):
        return fmt
    for p in paths:
        if p.endswith((".gz", ".bz2")):
            return fmt
        with open(p, "rb") as fh:
            head = [fh.readline() for _ in range(9)]
        if not lammps_dump.dump_is_numeric(head[-1].decode(errors="replace")):
            return fmt
    return "IONDIFFDUMP"


def _elements_of(ag: mda.AtomGroup) -> np.ndarray | None:
    """Element symbols of atoms: from elements, else names, else guessed from masses ("" if unknown)."""
    n = len(ag)
    out = np.full(n, "", dtype=object)
    for attr in ("elements", "names"):
        if hasattr(ag, attr):
            vals = np.array([str(e).capitalize() for e in getattr(ag, attr)], dtype=object)
            ok = np.array([v in _ELEMENTS for v in vals], dtype=bool) & (out == "")
            out[ok] = vals[ok]
    if np.any(out == "") and hasattr(ag, "masses"):
        table = {k.capitalize(): v for k, v in _MASS_TABLE.items() if k.capitalize() in _ELEMENTS}
        syms, ms = np.array(list(table)), np.array(list(table.values()))
        for i in np.flatnonzero(out == ""):
            m = float(ag.masses[i])
            j = int(np.argmin(np.abs(ms - m)))
            if m > 0 and abs(ms[j] - m) <= 0.1:
                out[i] = syms[j]
    if np.all(out == ""):
        return None
    return out


def select_mobile(u: mda.Universe, spec: str) -> mda.AtomGroup:
    """Select the mobile ions.

    Parameters
    ----------
    u : Universe
    spec : str
        An element symbol (``"Li"``; from elements, names or masses), a
        comma-separated list of them (``"Li,Na"``), ``"type 1"``, or any
        MDAnalysis selection string (``"name F and prop x < 10"``).

    Raises
    ------
    SelectionError
        If nothing is selected; the message lists the species present.
    """
    spec = spec.strip()
    words = [w.strip() for w in spec.split(",")]
    if all(re.fullmatch(r"[A-Z][a-z]?", w) for w in words):
        el = _elements_of(u.atoms)
        if el is None:
            raise SelectionError(
                f"cannot tell elements in this system to select {spec!r}: use 'type N' or an MDAnalysis selection"
            )
        ag = u.atoms[np.isin(el, words)]
        present = sorted(set(el) - {""})
    else:
        try:
            ag = u.select_atoms(spec)
        except Exception as exc:  # MDAnalysis raises SelectionError/ValueError
            raise SelectionError(f"invalid selection {spec!r}: {exc}") from exc
        present = sorted(set(getattr(u.atoms, "types", [])))
    if len(ag) == 0:
        raise SelectionError(f"selection {spec!r} matched no atoms; species/types present: {', '.join(map(str, present))}")
    return ag


@dataclass
class TrajectoryData:
    """Unwrapped positions of the mobile ions and what goes with them.

    Attributes
    ----------
    positions : ndarray, shape (n_mobile, n_frames, 3), float64
        Unwrapped Cartesian positions, Å (drift removed if requested).
    times_ps : ndarray, shape (n_frames,)
    box : ndarray, shape (6,)
        Box of the first frame ``[a, b, c, alpha, beta, gamma]`` (Å, degrees).
    atom_indices : ndarray, shape (n_mobile,)
        0-based indices of the mobile atoms in the trajectory.
    atom_ids : ndarray, shape (n_mobile,)
        Atom ids as the file gives them (LAMMPS tags; 1-based serials otherwise).
    species : ndarray of str, shape (n_mobile,)
    framework_drift : ndarray, shape (n_frames, 3) or None
        Mean framework displacement that was subtracted, Å.
    steps : ndarray, shape (n_frames,) or None
        MD step numbers where the file has them.
    volume_A3 : float
    """

    positions: np.ndarray
    times_ps: np.ndarray
    box: np.ndarray
    atom_indices: np.ndarray
    species: np.ndarray
    framework_drift: np.ndarray | None = None
    steps: np.ndarray | None = None
    volume_A3: float = float("nan")
    meta: dict[str, Any] = field(default_factory=dict)
    atom_ids: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return int(self.positions.shape[1])

    @property
    def n_mobile(self) -> int:
        return int(self.positions.shape[0])

    @property
    def timestep_ps(self) -> float:
        return float(self.times_ps[1] - self.times_ps[0]) if self.n_frames > 1 else float("nan")


def _species(ag: mda.AtomGroup) -> np.ndarray:
    el = _elements_of(ag)
    if el is None or np.any(el == ""):
        return np.array([str(t) for t in ag.types], dtype=object)
    return np.array([str(e) for e in el], dtype=object)


def _box_volume(box: np.ndarray) -> float:
    from MDAnalysis.lib.mdamath import box_volume

    return float(box_volume(box))


class UnwrappedPositions(AnalysisBase):
    """Collect unwrapped positions of mobile ions, frame by frame.

    Positions are unwrapped by minimum-image frame-to-frame differences
    (orthorhombic and triclinic boxes), which is exact whether the file holds
    wrapped or unwrapped coordinates, provided no atom moves more than half a
    box length between stored frames (checked). Framework drift (the mean
    displacement of all non-mobile atoms, as in pymatgen's DiffusionAnalyzer)
    can be subtracted.

    Parameters
    ----------
    mobile : AtomGroup
    remove_drift : bool
        Subtract the mean unwrapped displacement of the framework atoms.
    timestep_ps : float, optional
        Time between stored frames, ps; required when the file has no times.
    md_timestep_ps : float, optional
        MD integration timestep, ps; with LAMMPS dumps the frame times are
        ``step * md_timestep_ps``.

    Results
    -------
    results.data : TrajectoryData
    """

    def __init__(
        self,
        mobile: mda.AtomGroup,
        remove_drift: bool = True,
        timestep_ps: float | None = None,
        md_timestep_ps: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(mobile.universe.trajectory, **kwargs)
        self.mobile = mobile
        self.remove_drift = remove_drift
        self.timestep_ps = timestep_ps
        self.md_timestep_ps = md_timestep_ps

    def _prepare(self) -> None:
        u = self.mobile.universe
        if len(self.mobile) == 0:
            raise SelectionError("empty mobile selection")
        self._framework = u.atoms - self.mobile
        self._scale = float(getattr(u, "iondiff_length_scale", 1.0))
        self._fallback_box = getattr(u, "iondiff_box_fallback", None)
        n = self.n_frames
        self._pos = np.empty((n, len(self.mobile), 3), dtype=np.float64)
        self._drift = np.zeros((n, 3))
        self._times = np.empty(n)
        self._steps = np.full(n, -1, dtype=np.int64)
        self._box0: np.ndarray | None = None
        self._prev_m: np.ndarray | None = None
        self._prev_f: np.ndarray | None = None
        self._max_jump = 0.0

    def _box(self) -> np.ndarray:
        dims = self._ts.dimensions
        if dims is None:
            dims = self._fallback_box
        if dims is None or not np.all(np.isfinite(dims)) or np.any(np.asarray(dims)[:3] <= 0):
            raise InvalidCoordinatesError(
                f"frame {self._ts.frame}: no valid periodic box ({dims}); give a topology/data file with the box"
            )
        out = np.asarray(dims, dtype=np.float64).copy()
        out[:3] *= self._scale
        return out

    def _single_frame(self) -> None:
        i = self._frame_index
        box = self._box()
        if self._box0 is None:
            self._box0 = box
        xm = self.mobile.positions.astype(np.float64) * self._scale
        if not np.all(np.isfinite(xm)):
            bad = np.where(~np.all(np.isfinite(xm), axis=1))[0]
            raise InvalidCoordinatesError(
                f"frame {self._ts.frame}: NaN/inf coordinates for mobile atom indices {self.mobile.indices[bad][:10].tolist()}"
            )
        if self._prev_m is None:
            self._pos[i] = xm
        else:
            d = self._min_image(xm - self._prev_m, box)
            self._max_jump = max(self._max_jump, float(np.max(np.abs(d))) if d.size else 0.0)
            self._pos[i] = self._pos[i - 1] + d
        self._prev_m = xm
        if self.remove_drift and len(self._framework):
            xf = self._framework.positions.astype(np.float64) * self._scale
            if not np.all(np.isfinite(xf)):
                raise InvalidCoordinatesError(f"frame {self._ts.frame}: NaN/inf coordinates in framework atoms")
            if self._prev_f is not None:
                self._drift[i] = self._drift[i - 1] + self._min_image(xf - self._prev_f, box).mean(axis=0)
            self._prev_f = xf
        self._times[i] = self._ts.time
        step = self._ts.data.get("step")
        if step is not None:
            self._steps[i] = int(step)

    @staticmethod
    def _min_image(raw: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Frame-to-frame displacements (n, 3) with whole lattice translations removed.

        Rounds fractional components, which is exact (in float64) whenever the
        true displacement is shorter than half of every cell height.
        """
        h = triclinic_vectors(box).astype(np.float64)  # rows are lattice vectors
        frac = np.linalg.solve(h.T, raw.T).T
        return raw - np.rint(frac) @ h

    def _conclude(self) -> None:
        if self._box0 is None:
            raise TrajectoryFormatError("no frames were read")
        half = 0.5 * float(np.min(self._box0[:3]))
        if self._max_jump > 0.8 * half:
            logger.warning(
                "an atom moved %.2f Å between two stored frames (half box %.2f Å): "
                "frames may be too far apart to unwrap reliably",
                self._max_jump,
                half,
            )
        times = self._resolve_times()
        pos = self._pos
        if self.remove_drift and len(self._framework):
            pos = pos - self._drift[:, None, :]
        data = TrajectoryData(
            positions=np.ascontiguousarray(pos.transpose(1, 0, 2)),
            times_ps=times,
            box=self._box0,
            atom_indices=self.mobile.indices.copy(),
            species=_species(self.mobile),
            framework_drift=self._drift if (self.remove_drift and len(self._framework)) else None,
            steps=self._steps if np.all(self._steps >= 0) else None,
            volume_A3=_box_volume(self._box0),
            atom_ids=np.asarray(self.mobile.ids).astype(np.int64) if hasattr(self.mobile, "ids") else None,
        )
        del self._pos
        self.results.data = data

    def _resolve_times(self) -> np.ndarray:
        n = self.n_frames
        traj = self._trajectory
        if self.md_timestep_ps is not None and np.all(self._steps >= 0):
            t = self._steps * float(self.md_timestep_ps)
        elif self.timestep_ps is not None:
            if self.timestep_ps <= 0:
                raise TimestepError(f"timestep_ps must be > 0, got {self.timestep_ps}")
            t = np.asarray(self.frames, dtype=float) * float(self.timestep_ps)
        elif _times_from_file(traj):
            t = self._times.copy()
        elif type(traj).__name__ in ("DCDReader", "XTCReader", "TRRReader", "H5MDReader", "MemoryReader") and n > 1:
            t = self._times.copy()
            logger.info("frame times taken from the %s file", type(traj).__name__)
        else:
            raise TimestepError(
                "the time between frames is not in this file: pass timestep_ps (time between stored frames) "
                "or, for LAMMPS dumps, md_timestep_ps (the MD timestep)"
            )
        t = t - t[0]
        if n > 1:
            dtt = np.diff(t)
            if np.any(dtt <= 0):
                k = int(np.argmax(dtt <= 0))
                raise TimestepError(
                    f"frame times do not increase at frame {k + 1} ({t[k]:.6g} -> {t[k + 1]:.6g} ps): "
                    "duplicate or out-of-order frames (e.g. overlapping restart files)"
                )
            if not np.allclose(dtt, dtt[0], rtol=1e-4, atol=1e-9):
                logger.warning("frames are not evenly spaced in time (dt %.6g..%.6g ps)", dtt.min(), dtt.max())
        return t


def _times_from_file(traj: Any) -> bool:
    subs = getattr(traj, "readers", [traj])  # a ChainReader's parts, or the reader itself
    return all(getattr(r, "dt_from_file", None) is not None or getattr(r, "iondiff_times_from_file", False) for r in subs)


def collect_positions(
    u: mda.Universe,
    mobile: str | mda.AtomGroup,
    *,
    remove_drift: bool = True,
    timestep_ps: float | None = None,
    md_timestep_ps: float | None = None,
    start: int | None = None,
    stop: int | None = None,
    step: int | None = None,
    verbose: bool = False,
) -> TrajectoryData:
    """Unwrapped positions of the mobile ions (see :class:`UnwrappedPositions`)."""
    ag = select_mobile(u, mobile) if isinstance(mobile, str) else mobile
    run = UnwrappedPositions(ag, remove_drift=remove_drift, timestep_ps=timestep_ps, md_timestep_ps=md_timestep_ps)
    run.run(start=start, stop=stop, step=step, verbose=verbose)
    return run.results.data
