"""Fast reader for LAMMPS text dumps: whole blocks of frames parsed at once with numpy.

MDAnalysis's :class:`~MDAnalysis.coordinates.LAMMPS.DumpReader` parses a dump
line by line in Python (about 1 ms per frame of 64 atoms). This reader indexes
the frames once (a byte scan for ``ITEM: TIMESTEP``), then parses blocks of
frames with one call of pandas' C table parser per block and caches the block,
so iterating costs a copy per frame. Positions are bit-for-bit those of
MDAnalysis's reader (same float32 rounding, same sorting by atom id, same
origin shift, same scaled-to-Cartesian transform); ``tests/test_fast_readers.py``
checks that, and ``benchmarks/read_speed.py`` prints the speed ratio.

Importing the module registers the format ``IONDIFFDUMP`` with MDAnalysis;
:func:`iondiff_stream.io.load_universe` uses it for ``*.dump``/``*.lammpstrj``
unless MDAnalysis-only options (``lammps_coordinate_convention``,
``unwrap_images``, ``additional_columns``) are given. Dumps whose atom columns
are not all numeric (e.g. ``element``) are refused here and read by MDAnalysis.

Units: as in the file (Å for ``units metal/real``); times are ``step * dt``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from MDAnalysis.coordinates import base
from MDAnalysis.lib import distances, mdamath
from MDAnalysis.lib.util import anyopen

from iondiff_stream.core.errors import TrajectoryFormatError

logger = logging.getLogger(__name__)

__all__ = ["DumpBlockReader", "FastDumpReader", "dump_is_numeric"]

_CONVENTIONS = (("unscaled", ("x", "y", "z")), ("scaled", ("xs", "ys", "zs")),
                ("unwrapped", ("xu", "yu", "zu")), ("scaled_unwrapped", ("xsu", "ysu", "zsu")))
_MARK = b"ITEM: TIMESTEP"


def _frame_offsets(path: str) -> np.ndarray:
    """Byte offset of every ``ITEM: TIMESTEP`` line, then the file size; the file is read in 16 MiB pieces."""
    offsets: list[int] = []
    keep = len(_MARK) - 1  # a mark split between two pieces is found in carry + piece
    with open(path, "rb") as fh:
        pos = 0  # absolute offset of the current piece
        carry = b""
        while data := fh.read(1 << 24):
            buf = carry + data
            start = pos - len(carry)
            i = buf.find(_MARK)
            while i >= 0:
                offsets.append(start + i)
                i = buf.find(_MARK, i + len(_MARK))
            carry = buf[-keep:]
            pos += len(data)
    return np.array(offsets + [pos], dtype=np.int64)


#: below this many numbers in a block, numpy.fromstring (no import) beats importing pandas (~0.3 s)
_PANDAS_MIN_VALUES = 2_000_000


def _parse_table(text: bytes, n_rows: int, n_cols: int, n_file_values: int = 0) -> np.ndarray:
    """Whitespace-separated numbers, ``n_rows`` lines of ``n_cols``, as float64.

    pandas' C parser (~25 ns per number) once pandas is imported or the file
    (``n_file_values`` numbers) is large; otherwise :func:`numpy.fromstring`
    (~150 ns per number, nothing to import).
    """
    import sys

    if "pandas" in sys.modules or max(n_rows * n_cols, n_file_values) >= _PANDAS_MIN_VALUES:
        import io

        import pandas as pd

        return pd.read_csv(io.BytesIO(text), sep=r"\s+", header=None, engine="c", dtype=np.float64).to_numpy()
    import warnings

    with warnings.catch_warnings():  # a non-number ends parsing with a DeprecationWarning; the count check reports it
        warnings.simplefilter("ignore", DeprecationWarning)
        vals = np.fromstring(text, dtype=np.float64, sep=" ")  # text mode: any whitespace separates
    if vals.size != n_rows * n_cols:
        raise ValueError(f"{vals.size} numbers where {n_rows * n_cols} were expected")
    return vals.reshape(n_rows, n_cols)


def dump_is_numeric(header: str) -> bool:
    """True when every column named in an ``ITEM: ATOMS`` line is numeric for this reader."""
    cols = header.split()[2:]
    return not any(c in ("element", "type_name", "name", "mol_name") for c in cols)


class DumpBlockReader:
    """Random access to blocks of frames of an uncompressed LAMMPS text dump.

    Parameters
    ----------
    path : str
        Dump file (``dump atom/custom``, any of x/xs/xu/xsu coordinates,
        orthogonal or triclinic box). A constant number of atoms is required.

    Attributes
    ----------
    n_atoms, n_frames : int
    columns : list of str
        Atom columns of the first frame.
    convention : str
        Coordinate columns used (first found of unscaled, scaled, unwrapped,
        scaled_unwrapped, as MDAnalysis's ``"auto"``).
    """

    def __init__(self, path: str | os.PathLike[str], convention: str = "auto", allow_truncated: bool = False) -> None:
        self.path = os.fspath(path)
        with open(self.path, "rb") as fh:
            head = [fh.readline() for _ in range(9)]
        if not head[0].startswith(_MARK) or not head[2].startswith(b"ITEM: NUMBER OF ATOMS"):
            raise TrajectoryFormatError(f"{self.path}: not a LAMMPS text dump (no ITEM: TIMESTEP / NUMBER OF ATOMS)")
        self.n_atoms = int(head[3])
        self.atom_header = head[8].decode().strip()
        self.columns = self.atom_header.split()[2:]
        if not dump_is_numeric(self.atom_header):
            raise TrajectoryFormatError(f"{self.path}: non-numeric atom columns {self.columns}")
        col = {c: i for i, c in enumerate(self.columns)}
        found = [(name, [col[c] for c in cols]) for name, cols in _CONVENTIONS if all(c in col for c in cols)]
        if not found:
            raise TrajectoryFormatError(f"{self.path}: no coordinate columns (x/xs/xu/xsu) in {self.columns}")
        if convention == "auto":
            self.convention, self._xyz = found[0]
        else:
            match = [f for f in found if f[0] == convention]
            if not match:
                raise TrajectoryFormatError(f"{self.path}: no {convention} coordinates in {self.columns}")
            self.convention, self._xyz = match[0]
        self._id = col.get("id")
        self._ncol = len(self.columns)
        self._lpf = 9 + self.n_atoms
        self._offsets = _frame_offsets(self.path)
        self.n_frames = len(self._offsets) - 1
        self._steps: np.ndarray | None = None
        self._drop_incomplete_last(allow_truncated)

    def _drop_incomplete_last(self, allow_truncated: bool) -> None:
        """Drop a last frame cut short (killed run) when allowed, else raise."""
        if self.n_frames == 0:
            return
        a, b = int(self._offsets[-2]), int(self._offsets[-1])
        with open(self.path, "rb") as fh:
            fh.seek(a)
            tail = fh.read(b - a)
        got = len(tail.rstrip(b"\n").split(b"\n")) - 9
        if got == self.n_atoms:
            return
        msg = (f"{self.path}: last frame is incomplete: {max(got, 0)} of {self.n_atoms} atom lines; "
               f"the {self.n_frames - 1} frames before it are complete")
        if not allow_truncated:
            raise TrajectoryFormatError(msg + " (allow_truncated=True keeps them)")
        logger.info("%s; using those", msg)
        self._offsets = self._offsets[:-1]
        self.n_frames -= 1

    def steps(self) -> np.ndarray:
        """MD step of every frame, from the ``ITEM: TIMESTEP`` lines only (no atom line is parsed).

        Returns
        -------
        ndarray of int64, shape (n_frames,)

        Raises
        ------
        TrajectoryFormatError
            A step line that is not an integer.
        """
        if self._steps is None:
            import mmap

            out = np.empty(self.n_frames, dtype=np.int64)
            if self.n_frames:
                with open(self.path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    for k in range(self.n_frames):
                        a = mm.find(b"\n", int(self._offsets[k])) + 1  # the line after ITEM: TIMESTEP
                        b = mm.find(b"\n", a)
                        line = mm[a : b if b >= 0 else len(mm)]
                        try:
                            out[k] = int(line.split()[0])
                        except (ValueError, IndexError):
                            raise TrajectoryFormatError(
                                f"{self.path}: frame {k} has no step number after ITEM: TIMESTEP ({line[:40]!r})"
                            ) from None
            self._steps = out
        return self._steps

    def frame_bytes(self, i: int) -> int:
        """Size of frame ``i`` in bytes."""
        return int(self._offsets[i + 1] - self._offsets[i])

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Parse frames ``start:stop``.

        Returns
        -------
        dict
            ``positions`` (B, n_atoms, 3) float32 sorted by atom id, Å, exactly
            as MDAnalysis's reader gives them; ``dimensions`` (B, 6) float64
            ``[a, b, c, alpha, beta, gamma]``; ``step`` (B,) int64;
            ``ids`` (B, n_atoms) int64 (sorted).

        Raises
        ------
        TrajectoryFormatError
            A frame with the wrong number of lines, another atom count or
            column layout, or text that is not a number.
        """
        if not 0 <= start < stop <= self.n_frames:
            raise IndexError(f"frames {start}:{stop} out of range (0..{self.n_frames})")
        a, b = int(self._offsets[start]), int(self._offsets[stop])
        with open(self.path, "rb") as fh:
            fh.seek(a)
            buf = fh.read(b - a)
        nf = stop - start
        offs = (self._offsets[start : stop + 1] - a).tolist()
        heads: list[bytes] = []
        pieces: list[bytes] = []
        where = f"{self.path}, frames {start}..{stop - 1}"
        for f in range(nf):
            s, e = offs[f], offs[f + 1]
            h = buf.find(b"ITEM: ATOMS", s, e)
            he = buf.find(b"\n", h, e) if h >= 0 else -1
            if he < 0:
                raise TrajectoryFormatError(f"{where}: frame {start + f} has no complete ITEM: ATOMS header")
            heads.append(buf[s:he])
            piece = buf[he + 1 : e]
            if not piece.endswith(b"\n"):
                piece += b"\n"
            n_lines = piece.count(b"\n")
            if n_lines != self.n_atoms:
                raise TrajectoryFormatError(
                    f"{where}: frame {start + f} has {n_lines} atom lines, expected {self.n_atoms} "
                    "(truncated frame or changing atom count)"
                )
            pieces.append(piece)
        steps = np.empty(nf, dtype=np.int64)
        bounds_rows: list[bytes] = []
        for f, head in enumerate(heads):
            hl = head.split(b"\n")
            try:
                if len(hl) != 9 or int(hl[3]) != self.n_atoms:
                    raise ValueError(f"expected 9 header lines for {self.n_atoms} atoms")
                if hl[8].decode().strip() != self.atom_header:
                    raise ValueError(f"atom columns changed to {hl[8].decode().strip()!r}")
                steps[f] = int(hl[1])
            except ValueError as exc:
                raise TrajectoryFormatError(f"{where}: malformed header of frame {start + f}: {exc}") from exc
            bounds_rows.extend(hl[5:8])
        try:
            bounds = np.array(b" ".join(bounds_rows).split(), dtype=np.float64)
        except ValueError as exc:
            raise TrajectoryFormatError(f"{where}: malformed BOX BOUNDS: {exc}") from exc
        triclinic = bounds.size == nf * 9
        if not triclinic and bounds.size != nf * 6:
            raise TrajectoryFormatError(f"{where}: malformed BOX BOUNDS")
        expect = (nf * self.n_atoms, self._ncol)
        try:
            vals = _parse_table(b"".join(pieces), expect[0], expect[1], self.n_frames * self.n_atoms * self._ncol)
        except ValueError as exc:
            raise TrajectoryFormatError(f"{where}: an atom line is not all numbers: {exc}") from exc
        if vals.shape != expect:
            raise TrajectoryFormatError(
                f"{where}: atom table of shape {vals.shape}, expected {expect} (a short or long atom line)"
            )
        vals = vals.reshape(nf, self.n_atoms, self._ncol)
        if self._id is not None:
            ids = vals[:, :, self._id].astype(np.int64)
            order = np.argsort(ids, axis=1, kind="stable")
            ids = np.take_along_axis(ids, order, axis=1)
        else:
            order = np.broadcast_to(np.arange(self.n_atoms), (nf, self.n_atoms))
            ids = np.broadcast_to(np.arange(1, self.n_atoms + 1), (nf, self.n_atoms))
        xyz = vals[:, :, self._xyz].astype(np.float32)  # MDAnalysis's rounding: text -> double -> float32
        xyz = np.take_along_axis(xyz, order[:, :, None], axis=1)
        dims = np.empty((nf, 6), dtype=np.float64)
        origin = np.empty((nf, 3), dtype=np.float64)
        if triclinic:
            bb = bounds.reshape(nf, 3, 3)
            for f in range(nf):
                (xlo_b, xhi_b, xy), (ylo_b, yhi_b, xz), (zlo, zhi, yz) = bb[f]
                xlo = xlo_b - min(0.0, xy, xz, xy + xz)
                xhi = xhi_b - max(0.0, xy, xz, xy + xz)
                ylo = ylo_b - min(0.0, yz)
                yhi = yhi_b - max(0.0, yz)
                box = np.array([[xhi - xlo, 0.0, 0.0], [xy, yhi - ylo, 0.0], [xz, yz, zhi - zlo]])
                dims[f] = mdamath.triclinic_box(*box)
                origin[f] = (xlo, ylo, zlo)
        else:
            bb = bounds.reshape(nf, 3, 2)
            dims[:, :3] = bb[:, :, 1] - bb[:, :, 0]
            dims[:, 3:] = 90.0
            origin[:] = bb[:, :, 0]
        if self.convention.startswith("scaled"):
            dims32 = dims.astype(np.float32)
            for f in range(nf):
                xyz[f] = distances.transform_StoR(xyz[f], dims32[f])
        xyz -= origin[:, None, :]
        return {"positions": xyz, "dimensions": dims, "step": steps, "ids": ids}


class FastDumpReader(base.ReaderBase):
    """MDAnalysis reader for LAMMPS text dumps (``format="IONDIFFDUMP"``) built on :class:`DumpBlockReader`.

    Same frames, positions (float32, sorted by atom id, Å), boxes and
    ``ts.data["step"]``/``ts.time = step * dt`` as MDAnalysis's ``LAMMPSDUMP``
    reader; blocks of about 8 MiB of text are parsed at once and cached.

    Parameters
    ----------
    filename : str
    dt : float
        Time per MD step, ps (as MDAnalysis's reader: time = step × dt).
    lammps_coordinate_convention : str
        ``"auto"`` (default) or one of unscaled/scaled/unwrapped/scaled_unwrapped.
    allow_truncated : bool
        Drop an incomplete last frame instead of raising :class:`TrajectoryFormatError`.
    """

    format = ["IONDIFFDUMP"]
    units = {"time": "ps", "length": "Angstrom"}

    def __init__(
        self, filename: Any, lammps_coordinate_convention: str = "auto", allow_truncated: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(filename, **kwargs)
        self._blocks = DumpBlockReader(
            self.filename, convention=lammps_coordinate_convention, allow_truncated=allow_truncated
        )
        self.lammps_coordinate_convention = self._blocks.convention
        self._n_atoms = self._blocks.n_atoms
        per = max(1, self._blocks.frame_bytes(0)) if self._blocks.n_frames else 1
        self._block_frames = int(max(1, min(4096, (8 << 20) // per)))
        self._cache: dict[str, np.ndarray] | None = None
        self._first: dict[str, np.ndarray] | None = None
        self._cache_start = -1
        self.ts = self._Timestep(self._n_atoms, **self._ts_kwargs)
        self.ts.frame = -1
        if self._blocks.n_frames == 0:
            raise TrajectoryFormatError(f"{self.filename}: no frames")
        self._read_frame(0)

    @staticmethod
    def parse_n_atoms(filename: Any, **kwargs: Any) -> int:
        with anyopen(filename) as fh:
            for _ in range(3):
                fh.readline()
            return int(fh.readline())

    @property
    def n_atoms(self) -> int:
        return self._n_atoms

    @property
    def n_frames(self) -> int:
        return self._blocks.n_frames

    def steps(self) -> np.ndarray:
        """MD step of every frame (see :meth:`DumpBlockReader.steps`)."""
        return self._blocks.steps()

    def read_block(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Frames ``start:stop`` at once (see :meth:`DumpBlockReader.read`)."""
        return self._blocks.read(start, stop)

    def _read_frame(self, frame: int) -> base.Timestep:
        if frame < 0 or frame >= self.n_frames:
            raise IOError(f"frame {frame} out of range (0..{self.n_frames - 1})")
        s = (frame // self._block_frames) * self._block_frames
        if frame == 0 and self._first is not None and self._cache_start != 0:
            cache, j = self._first, 0  # rewinding after a full pass does not parse block 0 again
        else:
            if s != self._cache_start or self._cache is None:
                self._cache = self._blocks.read(s, min(s + self._block_frames, self.n_frames))
                self._cache_start = s
                if s == 0:
                    self._first = {k: v[:1].copy() for k, v in self._cache.items()}
            cache, j = self._cache, frame - s
        ts = self.ts
        ts.frame = frame
        ts.positions = cache["positions"][j]
        ts.dimensions = cache["dimensions"][j]
        step = int(cache["step"][j])
        ts.data["step"] = step
        ts.data["time"] = step * ts.dt
        return ts

    def _read_next_timestep(self, ts: base.Timestep | None = None) -> base.Timestep:
        nxt = self.ts.frame + 1
        if nxt >= self.n_frames:
            self.rewind()
            raise StopIteration
        return self._read_frame(nxt)

    def _reopen(self) -> None:
        self.ts.frame = -1

    def close(self) -> None:  # noqa: D102
        self._cache = None
        self._first = None
        self._cache_start = -1
