"""Out-of-core unwrapped positions: a chunked Zarr array laid out per ion block, time-contiguous.

One pass over a trajectory (:func:`iondiff_stream.io.collect_positions`) writes
the mobile ions' unwrapped positions into an array of shape
``(n_frames, n_mobile, 3)`` with chunks ``(frame_chunk, ion_block, 3)``: a
slab of ``frame_chunk`` frames fills whole chunks when it is written, and an
ion block ``positions[:, i0:i1]`` is read back as ``n_frames / frame_chunk``
contiguous chunks. The per-ion work (hops, MSD) then holds one ion block at a
time, so memory is bounded by :class:`MemoryBudget` whatever the run length.

Positions are stored as float32 (Å). The running unwrapped position is
accumulated in float64 and only the stored value is rounded, so rounding never
accumulates; float32 keeps 7 significant digits, i.e. better than 1e-4 Å up to
1,000 Å of unwrapped travel, below the precision of the inputs (DCD/XTC are
float32, text dumps carry 6-7 digits) and far below vibration amplitudes
(~0.1 Å). Float32 halves disk, I/O and the memory of each ion block.

Units: Å. Layout attribute ``layout = "frame, ion, xyz"``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["MemoryBudget", "ChunkPlan", "plan_chunks", "PositionStore", "IonMajorView", "parse_bytes"]

#: bytes of working memory per frame and ion in the per-ion work (hop fit and FFT MSD of one ion:
#: float64 copies, the zero-padded FFT and its spectrum, cumulative sums, frame labels)
PER_ION_FRAME_BYTES = 320
#: bytes per frame and atom while reading (float64 frame buffers of mobile and framework atoms, unwrapping)
READ_FRAME_ATOM_BYTES = 96


def parse_bytes(text: str | int | float) -> int:
    """``"2GB"``, ``"1.5 GiB"``, ``"500MB"`` or a number of bytes → bytes."""
    if isinstance(text, (int, float)):
        return int(text)
    s = text.strip().upper().replace(" ", "")
    units = {"TIB": 2**40, "GIB": 2**30, "MIB": 2**20, "KIB": 2**10, "TB": 10**12, "GB": 10**9, "MB": 10**6,
             "KB": 10**3, "T": 2**40, "G": 2**30, "M": 2**20, "K": 2**10, "B": 1}
    for u, f in units.items():
        if s.endswith(u):
            try:
                return int(float(s[: -len(u)]) * f)
            except ValueError:
                break
    try:
        return int(float(s))
    except ValueError:
        raise ValueError(f"cannot read a memory size from {text!r} (e.g. '2GB', '1.5GiB', '500MB')") from None


@dataclass(frozen=True)
class MemoryBudget:
    """Working memory the analysis of one run may use, in bytes (default 1 GiB).

    The budget is spent on: the frame slab being unwrapped while reading, the
    ion block being analysed (per worker), and the positions themselves when
    they are small enough to stay in memory (at most a quarter of the budget as
    float64; otherwise they go to a Zarr store on disk). Per-run arrays that
    grow with the run length but not with the atom count (times, frame labels
    of the ions: 2 bytes per ion and frame) are outside the budget.
    """

    bytes: int = 1 << 30

    def __post_init__(self) -> None:
        if self.bytes < 16 << 20:
            raise ValueError(f"memory budget must be at least 16 MiB, got {self.bytes} bytes")


@dataclass(frozen=True)
class ChunkPlan:
    """How one run's positions are held and processed.

    Attributes
    ----------
    in_memory : bool
        Positions stay an in-memory float64 array.
    frame_chunk : int
        Frames unwrapped (and written) per slab; also the chunk length in time.
    ion_block : int
        Ions analysed per task; also the chunk width in ions.
    """

    in_memory: bool
    frame_chunk: int
    ion_block: int


def plan_chunks(n_frames: int, n_mobile: int, n_other: int, budget: MemoryBudget | None = None,
                n_workers: int = 1, out_of_core: bool | None = None) -> ChunkPlan:
    """Choose in-memory vs Zarr, the frame slab and the ion block from the memory budget.

    Parameters
    ----------
    n_frames, n_mobile, n_other : int
        Frames, mobile ions, other atoms read each frame (framework, for drift).
    budget : MemoryBudget, optional
    n_workers : int
        Ion blocks analysed at once (each gets ``budget / (n_workers + 1)``).
    out_of_core : bool, optional
        Force the choice (default: in memory when float64 positions take at
        most a quarter of the budget).
    """
    budget = budget or MemoryBudget()
    pos_bytes = n_frames * n_mobile * 3 * 8
    in_memory = pos_bytes <= budget.bytes // 4 if out_of_core is None else not out_of_core
    per_task = budget.bytes // (max(1, n_workers) + 1)
    ion_block = int(max(1, min(n_mobile, 16, per_task // max(1, PER_ION_FRAME_BYTES * n_frames))))
    slab = budget.bytes // 8
    frame_chunk = int(max(16, min(n_frames, 1 << 16, slab // max(1, READ_FRAME_ATOM_BYTES * (n_mobile + n_other)))))
    if not in_memory and frame_chunk * ion_block * 12 < (1 << 20):  # aim at chunks of >= 1 MiB for the file system
        frame_chunk = int(min(n_frames, max(frame_chunk, (1 << 20) // (12 * ion_block)),
                              max(16, slab // max(1, READ_FRAME_ATOM_BYTES * (n_mobile + n_other)))))
    return ChunkPlan(in_memory, max(1, frame_chunk), ion_block)


class PositionStore:
    """A Zarr array ``(n_frames, n_mobile, 3)`` float32 of unwrapped positions, Å, chunked per ion block.

    Parameters
    ----------
    path : str or None
        Directory of the store (created; an existing one is replaced). None: a
        temporary directory removed when this object is garbage-collected.
    n_frames, n_mobile : int
    plan : ChunkPlan

    Attributes
    ----------
    array : zarr.Array
        The positions; ``array[:, i0:i1]`` reads one ion block.
    """

    def __init__(self, path: str | None, n_frames: int, n_mobile: int, plan: ChunkPlan) -> None:
        import zarr

        self._tmp = path is None
        if path is None:
            path = tempfile.mkdtemp(prefix="iondiff_positions_", suffix=".zarr")
            self._finalizer = weakref.finalize(self, shutil.rmtree, path, True)
        elif os.path.exists(path):
            shutil.rmtree(path)
        self.path = path
        self.plan = plan
        self.array = zarr.create_array(
            path, shape=(n_frames, n_mobile, 3), chunks=(plan.frame_chunk, plan.ion_block, 3), dtype="float32",
            compressors=None, fill_value=np.nan, overwrite=True,
        )
        self.array.update_attributes({
            "units": "angstrom", "layout": "frame, ion, xyz",
            "description": "unwrapped (drift-corrected) positions of the mobile ions, float32",
        })
        logger.info("positions out of core in %s: (%d, %d, 3) float32, chunks (%d, %d, 3)",
                    path, n_frames, n_mobile, plan.frame_chunk, plan.ion_block)

    def write(self, t0: int, block: np.ndarray) -> None:
        """Write frames ``t0 : t0 + len(block)`` (block shape (B, n_mobile, 3), Å)."""
        self.array[t0 : t0 + len(block)] = block.astype(np.float32, copy=False)


class IonMajorView:
    """Read-only ``(n_ions, n_frames, 3)`` view of a ``(n_frames, n_ions, 3)`` array-like, read per ion block.

    For functions written for ion-major arrays (:func:`iondiff_stream.analysis.transport.msd_fft`
    reads ``pos[s:e]``; ``pos.sum(0)`` and time windows ``pos[:, a:b]`` are
    supported too) on an out-of-core :class:`PositionStore` array. Values are float64.
    """

    def __init__(self, positions: Any, frames: slice = slice(None), ion_block: int = 16) -> None:
        self._a = positions
        self._frames = frames
        self.ion_block = max(1, int(ion_block))
        T = len(range(*frames.indices(positions.shape[0])))
        self.shape = (positions.shape[1], T, 3)
        self.ndim = 3
        self.dtype = np.dtype(np.float64)

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, ions: slice | int) -> np.ndarray:
        x = np.asarray(self._a[self._frames, ions], dtype=np.float64)
        return x if x.ndim == 2 else np.ascontiguousarray(x.transpose(1, 0, 2))

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, tuple):
            if len(key) == 2 and key[0] == slice(None) and isinstance(key[1], slice):
                r = range(*self._frames.indices(self._a.shape[0]))[key[1]]
                return IonMajorView(self._a, slice(r.start, r.stop, r.step), self.ion_block)
            raise IndexError(f"IonMajorView supports [i], [a:b] and [:, a:b], not {key!r}")
        if isinstance(key, (int, np.integer, slice)):
            return self._read(key)
        raise IndexError(f"IonMajorView supports [i], [a:b] and [:, a:b], not {key!r}")

    def sum(self, axis: int = 0, keepdims: bool = False) -> np.ndarray:
        """Sum over ions (``axis=0`` only), read one ion block at a time."""
        if axis != 0:
            raise ValueError("IonMajorView.sum supports axis=0 (over ions) only")
        out = np.zeros(self.shape[1:])
        for s in range(0, self.shape[0], self.ion_block):
            out += self._read(slice(s, min(self.shape[0], s + self.ion_block))).sum(0)
        return out[None] if keepdims else out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self._read(slice(None))
        return out if dtype is None else out.astype(dtype)


def ion_block_of(positions: Any, default: int = 16) -> int:
    """The ion block of a chunked array (its chunk width in ions), else ``default``."""
    chunks = getattr(positions, "chunks", None)
    if chunks is not None and len(chunks) == 3 and chunks[1] < positions.shape[1]:
        return int(chunks[1])
    return default


def block_for_frames(n_frames: int, budget: MemoryBudget | None = None, n_workers: int = 1, cap: int = 16) -> int:
    """Ions per block so that one block's per-ion work fits ``budget / (n_workers + 1)``."""
    budget = budget or MemoryBudget()
    per_task = budget.bytes // (max(1, n_workers) + 1)
    return int(max(1, min(cap, per_task // max(1, PER_ION_FRAME_BYTES * n_frames))))

