"""MDAnalysis readers and topology parsers for VASP XDATCAR, extended XYZ and ASE trajectories.

Importing this module registers the formats ``XDATCAR``, ``EXTXYZ`` and ``ASETRAJ`` with
MDAnalysis (through the reader/parser metaclasses), so that::

    mda.Universe("XDATCAR.gz", format="XDATCAR", topology_format="XDATCAR")
    mda.Universe("run.extxyz")

work like any other trajectory (each is a row of :mod:`iondiff_stream.io.formats`). The readers load the whole file into memory on
opening (they subclass :class:`MDAnalysis.coordinates.memory.MemoryReader`):
AIMD trajectories are small (10^3-10^5 frames of a few hundred atoms).

Cells are put into MDAnalysis's canonical orientation (``a`` along x, ``b`` in
the xy plane); Cartesian positions are rebuilt from the fractional ones in that
orientation so that positions and box always agree. Lengths in Å.
"""

from __future__ import annotations

import gzip
import logging
import os
from typing import Any

import numpy as np
from MDAnalysis.coordinates.memory import MemoryReader
from MDAnalysis.core.topology import Topology
from MDAnalysis.core.topologyattrs import (
    Atomids,
    Atomnames,
    Atomtypes,
    Elements,
    Masses,
    Resids,
    Resnums,
    Segids,
)
from MDAnalysis.lib.mdamath import triclinic_box, triclinic_vectors
from MDAnalysis.topology.base import TopologyReaderBase
from iondiff_stream.core.elements import element_masses

from iondiff_stream.core.errors import TrajectoryFileNotFoundError, TrajectoryFormatError

logger = logging.getLogger(__name__)

__all__ = ["XDATCARReader", "XDATCARParser", "ExtXYZReader", "ExtXYZParser", "ASETrajReader", "ASETrajParser",
           "read_xdatcar", "read_structure", "parse_fixed_columns"]


def _read_text(path: str | os.PathLike[str], n_lines: int | None = None) -> Any:
    """A text file (plain or gzip): the whole text, or its first ``n_lines`` lines (the rest not read)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise TrajectoryFileNotFoundError(f"trajectory file not found: {path}")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        if n_lines is None:  # the whole file: the run's read stage advances with the (compressed) bytes consumed
            from iondiff_stream.core.progress import open_counted

            with open_counted(path, "read") as fb:
                text = b"".join(iter(lambda: fb.read(1 << 20), b"")).decode()
            return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text  # as text mode
        with opener(path, "rt") as fh:  # type: ignore[operator]
            return [ln.rstrip("\r\n") for _, ln in zip(range(n_lines), fh)]
    except (OSError, EOFError) as exc:
        raise TrajectoryFormatError(f"cannot read {path}: {exc} (truncated or corrupt file?)") from exc


def _open_text(path: str | os.PathLike[str]) -> str:
    """The whole text of a file (plain or gzip)."""
    return _read_text(path)


def _head_lines(path: str | os.PathLike[str], n: int) -> list[str]:
    """The first ``n`` lines of a text file (plain or gzip), without reading the rest."""
    return _read_text(path, n)


def _canonical(lattice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (box dimensions (6,), canonical lattice matrix (3, 3), rows = vectors)."""
    dims = triclinic_box(*lattice)
    if not np.all(np.isfinite(dims)) or np.any(dims[:3] <= 0):
        raise TrajectoryFormatError(f"degenerate cell {lattice.tolist()}")
    return dims.astype(np.float64), triclinic_vectors(dims).astype(np.float64)


class XDATCARData:
    """Parsed content of an XDATCAR file.

    Attributes
    ----------
    species : list of str, length n_atoms
    frac : ndarray, shape (n_frames, n_atoms, 3)
        Fractional coordinates.
    lattices : ndarray, shape (n_frames, 3, 3)
        Lattice vectors (rows), Å.
    """

    def __init__(self, species: list[str], frac: np.ndarray, lattices: np.ndarray) -> None:
        self.species = species
        self.frac = frac
        self.lattices = lattices


def _config_lines(text: str, lines: list[str], natoms: int) -> list[int]:
    """Indices of the ``Direct configuration=`` lines.

    A fixed-cell file has one every ``natoms + 1`` lines: when the lines at that stride from the first one
    are all of them (counted in the text, at C speed), they are the answer without testing every line.
    """
    def is_config(ln: str) -> bool:
        return "onfiguration" in ln or "ONFIGURATION" in ln

    first = next((i for i in range(min(len(lines), 64)) if is_config(lines[i])), None)
    if first is not None:
        guess = range(first, len(lines), natoms + 1)
        if text.count("onfiguration") + text.count("ONFIGURATION") == len(guess) and all(
                is_config(lines[i]) for i in guess):
            return list(guess)
    return [i for i, ln in enumerate(lines) if is_config(ln)]


def read_xdatcar(path: str | os.PathLike[str], allow_truncated: bool = False) -> XDATCARData:
    """Parse a VASP 5 XDATCAR (plain or gzip), fixed or variable cell.

    Parameters
    ----------
    path : path-like
    allow_truncated : bool
        If True, an incomplete last frame (killed run) is dropped with a
        warning; otherwise it raises :class:`TrajectoryFormatError`.
    """
    path = os.fspath(path)
    text = _open_text(path)
    lines = text.splitlines()
    if len(lines) < 8:
        raise TrajectoryFormatError(f"{path}: too short to be an XDATCAR ({len(lines)} lines)")

    def header(at: int) -> tuple[np.ndarray, list[str], list[int]]:
        try:
            scale = float(lines[at + 1].split()[0])
            lat = np.array([[float(v) for v in lines[at + k].split()[:3]] for k in (2, 3, 4)])
            names = lines[at + 5].split()
            counts = [int(v) for v in lines[at + 6].split()]
        except (ValueError, IndexError) as exc:
            raise TrajectoryFormatError(
                f"{path}: malformed XDATCAR header at line {at + 1}: {exc} "
                "(VASP 5 format with element names on line 6 is required)"
            ) from exc
        if len(names) != len(counts):
            raise TrajectoryFormatError(f"{path}: {len(names)} element names but {len(counts)} counts")
        if scale < 0:  # negative scale = target volume
            scale = (-scale / abs(np.linalg.det(lat))) ** (1.0 / 3.0)
        return lat * scale, names, counts

    lat0, names, counts = header(0)
    species = [n for n, c in zip(names, counts) for _ in range(c)]
    natoms = len(species)
    config_idx = _config_lines(text, lines, natoms)
    del text
    if not config_idx:
        raise TrajectoryFormatError(f"{path}: no 'Direct configuration=' block found")
    if "cartesian" in lines[config_idx[0]].lower():
        raise TrajectoryFormatError(f"{path}: Cartesian XDATCAR blocks are not supported")
    fast = _fixed_cell_frames(lines, config_idx, natoms)
    if fast is not None:
        return XDATCARData(species, fast, np.broadcast_to(lat0, (len(fast), 3, 3)).copy())
    frames: list[np.ndarray] = []
    lattices: list[np.ndarray] = []
    lat = lat0
    for n, ci in enumerate(config_idx):
        if n > 0 and ci - config_idx[n - 1] > natoms + 1:  # variable cell: header repeated
            lat, names_n, counts_n = header(ci - 7)
            if [x for x, c in zip(names_n, counts_n) for _ in range(c)] != species:
                raise TrajectoryFormatError(f"{path}: species change at frame {n}")
        block = lines[ci + 1 : ci + 1 + natoms]
        nxt = config_idx[n + 1] if n + 1 < len(config_idx) else len(lines)
        try:
            if len(block) < natoms or (nxt - ci - 1) < natoms:
                raise ValueError(f"only {min(len(block), nxt - ci - 1)} of {natoms} atom lines")
            arr = np.array(" ".join(ln[:80] for ln in block).split(), dtype=np.float64)
            arr = arr.reshape(natoms, -1)[:, :3]
            if arr.shape[1] != 3 or not np.all(np.isfinite(arr)):
                raise ValueError("non-finite or missing coordinates")
        except ValueError as exc:
            msg = f"{path}: frame {n} (0-based) is incomplete or malformed: {exc}"
            if allow_truncated and n == len(config_idx) - 1 and n > 0:
                logger.warning("%s; dropping it and keeping the %d complete frames", msg, n)
                break
            raise TrajectoryFormatError(
                msg + f"; the {n} frames before it are complete (--allow-truncated, allow_truncated=True, keeps them)"
                if n == len(config_idx) - 1 and n > 0
                else msg
            ) from exc
        frames.append(arr)
        lattices.append(lat)
    return XDATCARData(species, np.stack(frames), np.stack(lattices))


_FAST_MIN_LINES = 1_000_000

_POW10 = 10.0 ** np.arange(16)


def parse_fixed_columns(text: bytes, n_fields: int = 3) -> np.ndarray | None:
    """Lines of ``n_fields`` aligned fixed-point decimals, parsed column-wise; None if the text is not such.

    Applies when every line has the same length and every field its decimal point in the same column,
    right-aligned as printf's ``%W.Pf`` / Fortran's ``FW.P`` write them (``[spaces][-]digits.digits``,
    at most 15 digits, fields separated by spaces): the layout of VASP's and pymatgen's XDATCAR.
    Each value is the integer of its digits divided by ``10**P``, both exact in float64, so the IEEE
    quotient is the correctly rounded decimal: bit for bit what ``strtod`` (:func:`numpy.fromstring`)
    gives, ~10x faster (``benchmarks/xdatcar_parse_speed.py``). Anything else (exponents, tabs,
    ragged columns, a stray character) returns None, for the general parsers.

    Parameters
    ----------
    text : bytes
        The lines (ASCII), ``\\n``-separated.
    n_fields : int
        Numbers per line.

    Returns
    -------
    ndarray, shape (n_lines, n_fields), or None
    """
    if not text.endswith(b"\n"):
        text += b"\n"
    width = text.index(b"\n")  # characters per line
    raw = np.frombuffer(text, dtype=np.uint8)
    if width < 1 or raw.size % (width + 1):
        return None
    lines = raw.reshape(-1, width + 1)
    if not np.all(lines[:, -1] == 10):
        return None
    cols = np.ascontiguousarray(lines[:, :width].T)  # one row per character column: contiguous passes
    first = cols[:, 0]
    dots = np.flatnonzero(first == 46)
    if len(dots) != n_fields:
        return None
    n = cols.shape[1]
    out = np.empty((n, n_fields))
    start = 0
    for k, p in enumerate(dots):
        q = p + 1
        while q < width and first[q] != 32:
            q += 1
        f = q - p - 1  # fraction digits; columns [start, p) hold spaces, an optional '-' and the integer digits
        if f < 1 or p - start < 1 or p - start + f > 15 or not np.all(cols[p] == 46):
            return None
        if q < width and not np.all(cols[q] == 32):
            return None
        acc = np.zeros(n)
        for j in range(p + 1, q):
            dj = cols[j] - 48  # uint8: characters below '0' wrap above 9
            if not np.all(dj < 10):
                return None
            acc += dj * _POW10[q - 1 - j]
        is_digit = (cols[p - 1] - 48) < 10
        if not np.all(is_digit):
            return None
        acc += (cols[p - 1] - 48) * _POW10[f]
        neg = np.zeros(n, dtype=bool)
        for j in range(p - 2, start - 1, -1):  # leftwards: digits, then at most one '-', then spaces
            c = cols[j]
            dj = (c - 48) < 10
            mj = c == 45
            if np.any((dj | mj) & ~is_digit) or not np.all(dj | mj | (c == 32)):
                return None
            acc += np.where(dj, c - 48.0, 0.0) * _POW10[f + p - 1 - j]
            neg |= mj
            is_digit = dj
        acc /= _POW10[f]
        out[:, k] = np.where(neg, -acc, acc)
        start = q
    if start < width and not np.all(cols[start:] == 32):
        return None
    return out


def _fixed_cell_frames(lines: list[str], config_idx: list[int], natoms: int) -> np.ndarray | None:
    """All frames of a fixed-cell XDATCAR parsed at once, or None to parse frame by frame.

    Applies when every block is one ``Direct configuration=`` line plus ``natoms``
    lines of three finite numbers (no repeated headers, complete last frame).
    Lines of aligned fixed-point numbers (what VASP and pymatgen write) go through
    :func:`parse_fixed_columns`; other layouts through pandas' C parser (large files) or
    :func:`numpy.fromstring` (small ones, no import).
    """
    nf = len(config_idx)
    if nf == 0 or len(lines) - config_idx[0] < nf * (natoms + 1):
        return None
    if config_idx[-1] - config_idx[0] != (nf - 1) * (natoms + 1):
        return None
    end = config_idx[0] + nf * (natoms + 1)
    if any(ln.strip() for ln in lines[end:]):
        return None
    idx = np.asarray(config_idx)
    if np.any(np.diff(idx) != natoms + 1):
        return None
    import sys

    block = lines[config_idx[0] : end]
    del block[:: natoms + 1]  # the "Direct configuration=" lines
    try:
        vals = parse_fixed_columns("\n".join(block).encode("ascii"), 3)
    except UnicodeEncodeError:
        vals = None
    if vals is None and nf * natoms < _FAST_MIN_LINES and "pandas" not in sys.modules:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            vals = np.fromstring("\n".join(block), dtype=np.float64, sep=" ")
        if vals.size != nf * natoms * 3:
            return None  # extra columns (selective dynamics flags) or text: frame by frame
        vals = vals.reshape(nf * natoms, 3)
    elif vals is None:
        import io

        import pandas as pd

        text = "\n".join(lines[config_idx[0] : end])
        try:
            vals = pd.read_csv(io.StringIO(text), sep=r"\s+", header=None, comment="D", usecols=[0, 1, 2],
                               dtype=np.float64, engine="c").to_numpy()
        except (ValueError, pd.errors.ParserError):
            return None
    if vals.shape != (nf * natoms, 3) or not np.all(np.isfinite(vals)):
        return None
    return vals.reshape(nf, natoms, 3)


def _fixed_or_first_dims(lattices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame canonical dims (n_frames, 6) and matrices (n_frames, 3, 3)."""
    dims = np.empty((len(lattices), 6))
    mats = np.empty((len(lattices), 3, 3))
    same = np.allclose(lattices, lattices[0])
    d0, m0 = _canonical(lattices[0])
    for i, lat in enumerate(lattices):
        if same:
            dims[i], mats[i] = d0, m0
        else:
            dims[i], mats[i] = _canonical(lat)
    return dims, mats


class _FileMemoryReader(MemoryReader):
    """A MemoryReader filled from a file; copies are plain MemoryReaders."""

    def copy(self) -> MemoryReader:  # noqa: D102
        new = MemoryReader(
            self.coordinate_array.copy(),
            order=self.stored_order,
            dimensions=self.dimensions_array.copy(),
            dt=self.ts.dt,
            filename=self.filename,
            velocities=None if self.velocity_array is None else self.velocity_array.copy(),
        )
        new[self.ts.frame]
        return new

    @staticmethod
    def parse_n_atoms(filename: Any, **kwargs: Any) -> int:  # pragma: no cover - MDA hook
        raise NotImplementedError


class XDATCARReader(_FileMemoryReader):
    """MDAnalysis reader for VASP XDATCAR files (``format="XDATCAR"``).

    The file has no times: pass ``dt`` (ps between frames) to the Universe,
    otherwise MDAnalysis's default of 1 ps applies (the
    :func:`iondiff_stream.io.load_universe` front end refuses that).
    """

    format = ["XDATCAR"]

    def __init__(self, filename: Any, dt: float = 1.0, allow_truncated: bool = False, **kwargs: Any) -> None:
        data = read_xdatcar(filename, allow_truncated=allow_truncated)
        dims, mats = _fixed_or_first_dims(data.lattices)
        coords = np.einsum("fai,fij->faj", data.frac, mats).astype(np.float32)
        super().__init__(coords, order="fac", dimensions=dims, dt=dt, filename=os.fspath(filename))


class XDATCARParser(TopologyReaderBase):
    """Topology (element names and masses) from an XDATCAR header."""

    format = ["XDATCAR"]

    def parse(self, **kwargs: Any) -> Topology:  # noqa: D102
        lines = _head_lines(self.filename, 8)  # the header only (the reader parses the whole file)
        try:
            names = lines[5].split()
            counts = [int(v) for v in lines[6].split()]
        except (IndexError, ValueError) as exc:
            raise TrajectoryFormatError(f"{self.filename}: not a VASP 5 XDATCAR header: {exc}") from exc
        species = np.array([n for n, c in zip(names, counts) for _ in range(c)], dtype=object)
        return _element_topology(species)


def _element_topology(species: np.ndarray) -> Topology:
    n = len(species)
    masses = element_masses(species)
    attrs = [
        Atomnames(species),
        Atomtypes(species.copy()),
        Elements(species.copy()),
        Masses(masses),
        Atomids(np.arange(1, n + 1)),
        Resids(np.array([1])),
        Resnums(np.array([1])),
        Segids(np.array(["SYSTEM"], dtype=object)),
    ]
    return Topology(n, 1, 1, attrs=attrs)


def _read_ase(path: str, fmt: str, what: str) -> tuple[list[str], np.ndarray, np.ndarray, float | None,
                                                       np.ndarray | None]:
    """Frames of a file ASE reads: species, fractional positions (n_frames, n_atoms, 3), lattices
    (n_frames, 3, 3), Å, the time between frames from ``info`` (ps, or None) and velocities (Å/ps, Cartesian
    in the file's orientation, or None when the file has none)."""
    import ase.io
    import ase.units

    if not os.path.exists(path):
        raise TrajectoryFileNotFoundError(f"trajectory file not found: {path}")
    try:
        frames = ase.io.read(path, index=":", format=fmt)
    except Exception as exc:  # noqa: BLE001 - ase raises many kinds
        raise TrajectoryFormatError(f"{path}: cannot parse as {what}: {exc}") from exc
    if not frames:
        raise TrajectoryFormatError(f"{path}: no frames")
    species = frames[0].get_chemical_symbols()
    n = len(species)
    for i, f in enumerate(frames):
        if len(f) != n:
            raise TrajectoryFormatError(f"{path}: frame {i} has {len(f)} atoms, frame 0 has {n}")
        if f.cell.rank != 3:
            raise TrajectoryFormatError(f"{path}: frame {i} has no 3D cell")
    lattices = np.stack([np.asarray(f.cell[:]) for f in frames])
    frac = np.stack([np.linalg.solve(lat.T, f.positions.T).T for f, lat in zip(frames, lattices)])
    dt: float | None = None
    for key, to_ps in (("time_fs", 1e-3), ("time_ps", 1.0)):
        if all(key in f.info for f in frames) and len(frames) > 1:
            t = np.array([float(f.info[key]) for f in frames]) * to_ps
            steps = np.diff(t)
            if np.any(steps <= 0) or not np.allclose(steps, steps[0], rtol=1e-6):
                raise TrajectoryFormatError(f"{path}: times in info[{key!r}] are not evenly spaced")
            dt = float(steps[0])
            break
    vel: np.ndarray | None = None
    if all("momenta" in f.arrays for f in frames):
        vel = np.stack([f.get_velocities() * 1000.0 * ase.units.fs for f in frames])  # Å/(ASE time) -> Å/ps
    elif all("vel" in f.arrays for f in frames):
        vel = np.stack([np.asarray(f.arrays["vel"], float) * 1000.0 for f in frames])  # Å/fs -> Å/ps
    return species, frac, lattices, dt, vel


class _ASEReader(_FileMemoryReader):
    """A trajectory ASE reads, held in memory: positions in MDAnalysis's cell orientation, times from
    ``time_fs``/``time_ps`` in ``info`` when every frame has them, velocities (Å/ps) when the file has them."""

    _ase_format = ""
    _what = ""

    def __init__(self, filename: Any, dt: float | None = None, **kwargs: Any) -> None:
        species, frac, lattices, file_dt, vel = _read_ase(os.fspath(filename), self._ase_format, self._what)
        dims, mats = _fixed_or_first_dims(lattices)
        coords = np.einsum("fai,fij->faj", frac, mats).astype(np.float32)
        if vel is not None:  # the same rotation as the positions: v_frac = v inv(L), v' = v_frac M
            vel = np.einsum("faj,fjk->fak", vel, np.linalg.solve(lattices, mats)).astype(np.float32)
        self.dt_from_file = file_dt
        use_dt = file_dt if dt is None else dt
        super().__init__(
            coords, order="fac", dimensions=dims, dt=1.0 if use_dt is None else use_dt, filename=os.fspath(filename),
            velocities=vel,
        )


class ExtXYZReader(_ASEReader):
    """MDAnalysis reader for extended XYZ (cell from ``Lattice=``; ``format="EXTXYZ"``).

    Times come from ``time_fs``/``time_ps`` in the comment line when present; velocities from ``momenta``
    or ``vel`` (Å/fs) columns.
    """

    format = ["EXTXYZ"]
    _ase_format = "extxyz"
    _what = "extended XYZ"


class ASETrajReader(_ASEReader):
    """MDAnalysis reader for ASE trajectory files (``*.traj``, ``format="ASETRAJ"``); times from
    ``time_fs``/``time_ps`` in each frame's ``info`` when present, velocities from the momenta."""

    format = ["ASETRAJ"]
    _ase_format = "traj"
    _what = "an ASE trajectory"


class ASETrajParser(TopologyReaderBase):
    """Topology (elements) from the first frame of an ASE trajectory."""

    format = ["ASETRAJ"]

    def parse(self, **kwargs: Any) -> Topology:  # noqa: D102
        import ase.io

        path = os.fspath(self.filename)
        if not os.path.exists(path):
            raise TrajectoryFileNotFoundError(f"topology file not found: {path}")
        try:
            first = ase.io.read(path, index=0, format="traj")
        except Exception as exc:  # noqa: BLE001 - ase raises many kinds
            raise TrajectoryFormatError(f"{path}: cannot parse as an ASE trajectory: {exc}") from exc
        return _element_topology(np.array(first.get_chemical_symbols(), dtype=object))


class ExtXYZParser(TopologyReaderBase):
    """Topology (elements) from the first frame of an extended XYZ file."""

    format = ["EXTXYZ"]

    def parse(self, **kwargs: Any) -> Topology:  # noqa: D102
        path = os.fspath(self.filename)
        if not os.path.exists(path):
            raise TrajectoryFileNotFoundError(f"topology file not found: {path}")
        with open(path) as fh:
            try:
                n = int(fh.readline().split()[0])
            except (ValueError, IndexError) as exc:
                raise TrajectoryFormatError(f"{path}: first line is not an atom count") from exc
            fh.readline()
            rows = [fh.readline().split() for _ in range(n)]
        got = sum(1 for r in rows if r)
        if got < n:
            raise TrajectoryFormatError(f"{path}: frame 0 has {got} of {n} atom lines (truncated or not extended XYZ)")
        species = np.array([r[0] for r in rows], dtype=object)
        return _element_topology(species)


def read_structure(path: str | os.PathLike[str], what: str = "reference structure (--reference)") -> Any:
    """One structure (any format ASE reads) as ``ase.Atoms``; unreadable files raise naming ``what``.

    Raises
    ------
    TrajectoryFileNotFoundError, TrajectoryFormatError
    """
    import ase.io

    path = os.fspath(path)
    if not os.path.exists(path):
        raise TrajectoryFileNotFoundError(f"{what} not found: {path}")
    try:
        atoms = ase.io.read(path)
    except Exception as exc:  # noqa: BLE001 - ASE raises many kinds (StopIteration for non-structures)
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise TrajectoryFormatError(f"{what} {path}: not a structure ASE can read ({detail})") from exc
    if isinstance(atoms, list):
        atoms = atoms[0]
    if len(atoms) == 0:
        raise TrajectoryFormatError(f"{what} {path}: no atoms")
    return atoms
