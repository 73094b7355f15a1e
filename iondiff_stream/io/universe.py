"""Opening a run: one MDAnalysis :class:`~MDAnalysis.core.universe.Universe` for every source, and the mobile ions.

* :func:`load_universe` opens any format of the formats table (:mod:`iondiff_stream.io.formats`), one file
  or several consecutive files (restarts) as one run; LAMMPS text dumps are checked for a cut last frame and read
  by the block-parsing reader ``IONDIFFDUMP`` where it can.
* :func:`select_mobile` picks the mobile ions by element, type, name or any MDAnalysis selection string.
* :func:`elements_of` gives element symbols from elements, names or masses.

Units: Å (``length_scale`` converts other LAMMPS unit styles).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from typing import Any

import MDAnalysis as mda
import numpy as np

from iondiff_stream.core.elements import ELEMENTS, elements_from_masses
from iondiff_stream.core.errors import (
    IonDiffStreamError,
    SelectionError,
    TrajectoryFileNotFoundError,
    TrajectoryFormatError,
)
from iondiff_stream.io import lammps_dump
from iondiff_stream.io import readers  # noqa: F401  (registers XDATCAR / EXTXYZ / ASETRAJ with MDAnalysis)
from iondiff_stream.io.formats import RESULTS_FORMAT, guess_format

logger = logging.getLogger(__name__)

__all__ = ["load_universe", "select_mobile", "elements_of", "check_frame_store", "data_atom_style"]


_ATOM_STYLES = {
    "atomic": "id type x y z",
    "charge": "id type q x y z",
    "molecular": "id resid type x y z",
    "full": "id resid type q x y z",
    "bond": "id resid type x y z",
    "angle": "id resid type x y z",
}


def data_atom_style(path: str) -> str | None:
    """MDAnalysis ``atom_style`` string from the ``Atoms # style`` hint of a LAMMPS data file."""
    with open(path) as fh:
        for line in fh:
            m = re.match(r"\s*Atoms\s*#\s*(\w+)", line)
            if m:
                return _ATOM_STYLES.get(m.group(1))
    return None


def _check_dump_complete(path: str, allow_truncated: bool) -> str | None:
    """Refuse a LAMMPS text dump whose last frame is cut short (killed run).

    Reads the first header and the tail of the file only. A compressed file is
    decompressed once into a temporary plain dump (the run's ``read`` stage advancing with the
    compressed bytes consumed), whose path is returned and read instead. A compressed file cut inside
    its compressed stream (a copy or a compression stopped mid-way) is refused naming the file; with
    ``allow_truncated`` its complete frames are written to a temporary plain dump, whose path is returned.

    Returns
    -------
    str or None
        Path to read instead of ``path`` (a compressed file), else None.
    """
    from MDAnalysis.lib.util import anyopen

    if os.path.getsize(path) == 0:
        raise TrajectoryFormatError(f"{path}: empty file (no frames)")
    try:
        with anyopen(path, "rb") as fb:
            raw = [fb.readline(4096) for _ in range(4)]
        head = [ln.decode("ascii") for ln in raw]
    except (UnicodeDecodeError, OSError, EOFError) as exc:
        raise TrajectoryFormatError(
            f"{path}: not a LAMMPS text dump (binary or corrupt content at the start: {exc})"
        ) from exc
    if not head[0].startswith("ITEM: TIMESTEP") or not head[2].startswith("ITEM: NUMBER OF ATOMS"):
        raise TrajectoryFormatError(f"{path}: not a LAMMPS text dump (no ITEM: TIMESTEP / NUMBER OF ATOMS)")
    try:
        n_atoms = int(head[3])
    except ValueError as exc:
        raise TrajectoryFormatError(f"{path}: not a LAMMPS text dump (bad number of atoms {head[3].strip()!r})") from exc
    plain = None
    if path.endswith((".gz", ".bz2")):
        plain, cut = _decompress_to_temp(path)
        if cut is not None:
            with open(plain, "rb") as fb:
                raw_lines = fb.readlines()
            os.remove(plain)
            return _complete_frames_of_cut_file(path, raw_lines, n_atoms, cut, allow_truncated)
    lines = _tail_lines(plain or path, n_atoms)
    starts = [i for i, ln in enumerate(lines) if ln.startswith("ITEM: TIMESTEP")]
    if not starts:
        raise TrajectoryFormatError(f"{path}: no complete frame header near the end of the file (corrupt dump?)")
    last = max(starts)
    got = len(lines) - last - 9
    if got != n_atoms:
        msg = f"{path}: last frame is incomplete: {max(got, 0)} of {n_atoms} atom lines; the frames before it are complete"
        if not allow_truncated:
            raise TrajectoryFormatError(msg + " (--allow-truncated, allow_truncated=True, keeps them)")
        logger.warning("%s; using those", msg)
    return plain


def _tail_lines(path: str, n_atoms: int) -> list[str]:
    """The lines of a plain text file from (at least) its last ``ITEM: TIMESTEP`` to its end."""
    size = os.path.getsize(path)
    block = min(size, max(4096, 200 * (n_atoms + 10)))
    while True:
        with open(path, "rb") as fb:
            fb.seek(size - block)
            tail = fb.read().decode(errors="replace")
        if "ITEM: TIMESTEP" in tail or block >= size:
            return tail.splitlines()
        block = min(size, 4 * block)


def _decompress_to_temp(path: str) -> tuple[str, BaseException | None]:
    """Decompress a ``.gz``/``.bz2`` dump once into a temporary plain file (removed at exit).

    The run's ``read`` stage advances with the compressed bytes consumed (the bar moves while a
    long compressed file is decompressed). The plain copy is then read by the block-parsing reader:
    MDAnalysis's reader on a compressed file seeks in the compressed stream for every frame, which
    decompresses from the start each time (quadratic in the number of frames).

    Returns
    -------
    plain : str
        Path of the plain copy, named as the file without its compression suffix.
    cut : BaseException or None
        The decompressor's error when the compressed stream ends before its end marker
        (``plain`` then holds what was decompressed before the cut).
    """
    import atexit
    import shutil
    import tempfile

    from iondiff_stream.core.progress import open_counted

    tmpdir = tempfile.mkdtemp(prefix="iondiff-plain-")
    atexit.register(shutil.rmtree, tmpdir, True)
    plain = os.path.join(tmpdir, os.path.basename(path).rsplit(".", 1)[0])
    cut: BaseException | None = None
    with open_counted(path, "read") as src, open(plain, "wb") as dst:
        try:
            while data := src.read(1 << 18):
                dst.write(data)
        except (EOFError, OSError, ValueError) as exc:  # gzip/bz2/zlib: stream ends before its end marker
            cut = exc
    if cut is not None:  # the reader drops the piece it was decompressing: all that precedes the cut, again
        import bz2
        import zlib

        dec: Any = bz2.BZ2Decompressor() if path.endswith(".bz2") else zlib.decompressobj(16 + zlib.MAX_WBITS)
        with open(path, "rb") as src, open(plain, "wb") as dst:
            try:
                while (data := src.read(1 << 20)) and not dec.eof:
                    dst.write(dec.decompress(data))
            except (OSError, ValueError, EOFError, zlib.error):
                pass  # corrupt rather than cut: keep what came before
    return plain, cut


def _complete_frames_of_cut_file(path: str, raw_lines: list[bytes], n_atoms: int, cause: BaseException,
                                 allow_truncated: bool) -> str:
    """The complete frames of a compressed dump cut inside its compressed stream, as a temporary plain dump.

    Parameters
    ----------
    path : str
        The compressed dump.
    raw_lines : list of bytes
        Lines decompressed before the cut (the last one possibly partial).
    n_atoms : int
        Atoms per frame (from the first header).
    cause : BaseException
        The decompressor's error.
    allow_truncated : bool
        Keep the complete frames (else refuse).

    Returns
    -------
    str
        Path of the temporary dump (removed at exit).

    Raises
    ------
    TrajectoryFormatError
        Without ``allow_truncated``, or when no frame is complete.
    """
    import atexit
    import tempfile

    if raw_lines and not raw_lines[-1].endswith(b"\n"):
        raw_lines = raw_lines[:-1]  # a line cut in the middle
    per = n_atoms + 9
    starts = [i for i, ln in enumerate(raw_lines) if ln.startswith(b"ITEM: TIMESTEP")]
    complete = [i for i in starts if i + per <= len(raw_lines)]
    n_ok = len(complete)
    msg = (f"{path}: the compressed file is cut short ({type(cause).__name__}: {cause}); "
           f"{n_ok} complete frame(s) before the cut")
    if not allow_truncated:
        raise TrajectoryFormatError(msg + " (--allow-truncated, allow_truncated=True, keeps them)") from cause
    if n_ok == 0:
        raise TrajectoryFormatError(msg + ": nothing to analyse") from cause
    end = complete[-1] + per
    fd, tmp = tempfile.mkstemp(prefix="iondiff-cut-", suffix=".dump")
    with os.fdopen(fd, "wb") as fh:
        fh.writelines(raw_lines[:end])
    atexit.register(lambda: os.path.exists(tmp) and os.remove(tmp))
    logger.warning("%s; using those (--allow-truncated)", msg)
    return tmp


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
        :func:`iondiff_stream.core.units.lammps_factors`). Stored on the Universe as
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
        if os.path.isfile(p) and os.path.getsize(p) == 0:
            raise TrajectoryFormatError(f"{p}: empty file (no frames)")
    fmt = format or guess_format(paths[0])
    if format is None and len(paths) > 1:
        kinds = {p: guess_format(p) or os.path.splitext(p)[1].lower() for p in paths}
        if len(set(kinds.values())) > 1:
            raise TrajectoryFormatError(
                "the files of one run must have one format, got "
                + ", ".join(f"{p} ({k or 'unknown'})" for p, k in kinds.items())
            )
    if fmt == "IONDIFFZARR":
        from iondiff_stream.io.store_reader import universe_from_store

        if len(paths) != 1:
            raise TrajectoryFormatError("a Zarr store is one run: give one store")
        check_frame_store(paths[0])
        try:
            return universe_from_store(paths[0], **kwargs)
        except (ValueError, OSError, EOFError, KeyError, TypeError) as exc:
            cause = _our_cause(exc)  # MDAnalysis wraps our readers' errors in its own ValueError
            if cause is not None and cause is not exc:
                raise type(cause)(str(cause)) from exc
            raise
    allow_truncated = bool(kwargs.pop("allow_truncated", False)) if fmt != "XDATCAR" else kwargs.get("allow_truncated", False)
    if fmt == "LAMMPSDUMP":  # before asking for a data file: is it a dump at all?
        paths = [_check_dump_complete(p, allow_truncated) or p for p in paths]
    top = os.fspath(topology) if topology is not None else paths[0]
    top_fmt = topology_format or (guess_format(top) if topology is not None else fmt)
    if top_fmt == "LAMMPSDUMP":
        raise TrajectoryFormatError(
            "a LAMMPS dump has no element information: give the LAMMPS data file with --topology"
        )
    if top_fmt == "DATA" and "atom_style" not in kwargs:
        style = data_atom_style(top)
        if style is not None:
            kwargs["atom_style"] = style
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
        cause = _our_cause(exc)  # MDAnalysis re-raises our readers' errors without their message
        if cause is not None:
            raise type(cause)(str(cause)) from exc
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


def check_frame_store(path: str) -> None:
    """Refuse a directory that is not an iondiff_stream frame store, saying what it is.

    Parameters
    ----------
    path : str
        A ``*.zarr`` directory given as a trajectory.

    Raises
    ------
    TrajectoryFileNotFoundError
        Nothing there.
    TrajectoryFormatError
        An analysis' own ``results.zarr``, another tool's Zarr store (v2 or v3), or a directory that is not
        a Zarr store.
    """
    import json

    from iondiff_stream.io.store import FORMAT  # lazy: the store module pulls in zarr

    if not os.path.exists(path):
        raise TrajectoryFileNotFoundError(f"file not found: {path}")
    meta = os.path.join(path, "zarr.json")
    if not os.path.isfile(meta):
        if any(os.path.exists(os.path.join(path, n)) for n in (".zgroup", ".zarray", ".zattrs")):
            raise TrajectoryFormatError(f"{path} is a Zarr (v2) store written by another tool, not an iondiff_stream "
                                        "frame store: give a trajectory file or a store written by iondiff-stream")
        raise TrajectoryFormatError(f"{path} is not a Zarr store (no zarr.json): give a trajectory file or a frame "
                                    "store written by iondiff-stream")
    try:
        with open(meta) as fh:
            attrs = json.load(fh).get("attributes") or {}
    except (OSError, ValueError, AttributeError) as exc:
        raise TrajectoryFormatError(f"{path}: its zarr.json cannot be read ({exc}): not a frame store, or a damaged one") from exc
    if attrs.get("format") == FORMAT:
        return
    if attrs.get("format") == RESULTS_FORMAT or ("summary" in attrs and "length_unit" in attrs):
        raise TrajectoryFormatError(f"{path} holds the results of an analysis (results.zarr), not frames: analyse "
                                    "the trajectory or frame store it was made from")
    raise TrajectoryFormatError(f"{path} is a Zarr store but not an iondiff_stream frame store (written by another "
                                "tool?): give a trajectory file or a store written by iondiff-stream")


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


def _our_cause(exc: BaseException) -> IonDiffStreamError | None:
    """The first iondiff_stream error in the chain of causes of ``exc``, if any."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, IonDiffStreamError):
            return e
        e = e.__cause__ or e.__context__
    return None


def elements_of(ag: mda.AtomGroup) -> np.ndarray | None:
    """Element symbols of atoms: from elements, else names, else guessed from masses ("" if unknown)."""
    n = len(ag)
    out = np.full(n, "", dtype=object)
    for attr in ("elements", "names"):
        if hasattr(ag, attr):
            vals = np.array([str(e).capitalize() for e in getattr(ag, attr)], dtype=object)
            ok = np.array([v in ELEMENTS for v in vals], dtype=bool) & (out == "")
            out[ok] = vals[ok]
    if np.any(out == "") and hasattr(ag, "masses"):
        todo = np.flatnonzero(out == "")
        out[todo] = elements_from_masses(np.asarray(ag.masses, float)[todo])
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
        el = elements_of(u.atoms)
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
            raise SelectionError(f"invalid selection {spec!r}: {exc}{_case_hint(words)}") from exc
        present = sorted(set(getattr(u.atoms, "types", [])))
    if len(ag) == 0:
        raise SelectionError(f"selection {spec!r} matched no atoms; species/types present: {', '.join(map(str, present))}"
                             f"{_case_hint(words)}")
    return ag


def _case_hint(words: list[str]) -> str:
    """``"; element symbols are case-sensitive: did you mean 'Li'?"`` for words that are elements in another case."""
    from iondiff_stream.core.elements import ELEMENTS

    fixed = [w[:1].upper() + w[1:].lower() for w in words]
    if words and fixed != words and all(f in ELEMENTS for f in fixed):
        return f"; element symbols are case-sensitive: did you mean {','.join(fixed)!r}?"
    return ""
