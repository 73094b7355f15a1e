"""Library side of the LAMMPS hook: turn plain per-frame arrays into stored frames.

The hook (``lammps_hooks``) only slices LAMMPS's arrays to the local atoms and
copies them (atom ids, positions, image flags, in LAMMPS's own order); it then
calls :meth:`FrameSink.push` with plain NumPy arrays. Matching the atoms to the
stored ions by id (any ids: gaps, ids above the atom count, atoms created or
deleted later), unwrapping and unit conversion happen here, off the simulation
thread when threaded, and whole chunks are compressed and written. Nothing else
runs in the simulation's process: the live hop estimator reads the store in the
monitor's process (:mod:`iondiff_stream.monitor`). Everything here is testable
without LAMMPS.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Any, NamedTuple

import numpy as np

from iondiff_stream.io.store import FrameStoreWriter
from iondiff_stream.core.errors import SelectionError, StoreError, StoreMismatchError
from iondiff_stream.core.units import lammps_factors

logger = logging.getLogger(__name__)

try:  # the block of frames to stored rows in one pass, in C (iondiff_stream/io/_blocks.c); NumPy without it
    from iondiff_stream.io import _blocks
except ImportError:  # pragma: no cover - a machine without a C compiler
    _blocks = None
#: the compiled block kernels (``unwrap_rows``, ``scatter_rows`` of iondiff_stream/io/_blocks.c), None when the
#: extension was not built; the LAMMPS hook's MPI gather uses ``scatter_rows``
compiled_kernels = _blocks

#: steps a store chunk covers at least when the hook picks the chunk size (:func:`chunk_frames_for`)
CHUNK_STEPS = 1000
#: bytes of stored positions a chunk picked by the hook holds at most (a frame every step: ~1000 frames of 214 ions)
CHUNK_BYTES = 5_000_000

__all__ = ["FrameSink", "chunk_frames_for", "box_from_lammps", "unwrap_with_images", "unwrap_block",
           "unpack_images", "box_lengths_angles"]


def chunk_frames_for(every: int, capacity: int | None = None, n_atoms: int | None = None) -> int:
    """Frames per store chunk for a frame every ``every`` steps: enough for :data:`CHUNK_STEPS` steps, at most
    :data:`CHUNK_BYTES` of positions of ``n_atoms`` atoms, at least 100.

    Every chunk written costs the simulation's process file creations and renames (one per stored array and
    the commit record, ~10 ms of CPU together on these machines) whatever its size. A chunk is committed when
    full or after ``flush_seconds``, so the live view lags by up to one chunk's steps: 5000-step chunks cut the
    hook's own time at a frame every 10 steps from 11.3 to 6.2 µs per step, which the whole-run CPU could not
    tell from its spread, and made the live view (and the tests that watch it) wait five times longer, so 1000
    steps it is (``benchmarks/hook_cpu.py``, docs/performance.md). A ring (``capacity``) gets chunks no larger
    than itself.
    """
    n = max(100, -(-CHUNK_STEPS // max(int(every), 1)))
    if n_atoms:
        n = max(100, min(n, CHUNK_BYTES // (24 * int(n_atoms))))
    return min(n, int(capacity)) if capacity else n


def unpack_images(image: np.ndarray, bits: int = 10) -> np.ndarray:
    """Unpack LAMMPS packed image flags (imageint) of any shape ``s`` into integers of shape ``s + (3,)``.

    ``bits`` is 10 for 32-bit imageint (default build), 21 for ``-DLAMMPS_BIGBIG``.
    """
    image = np.asarray(image, dtype=np.int64)
    mask = (1 << bits) - 1
    imgmax = 1 << (bits - 1)
    out = np.empty(image.shape + (3,), dtype=np.int64)
    np.bitwise_and(image, mask, out=out[..., 0])
    np.right_shift(image, bits, out=out[..., 1])
    out[..., 1] &= mask
    np.right_shift(image, 2 * bits, out=out[..., 2])
    out -= imgmax
    return out


def box_from_lammps(boxlo: Any, boxhi: Any, xy: float, yz: float, xz: float) -> np.ndarray:
    """Lattice vectors (rows, LAMMPS length units) of a LAMMPS box; box lengths/angles follow in the sink."""
    lx, ly, lz = (float(hi) - float(lo) for lo, hi in zip(boxlo, boxhi))
    return np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])


def unwrap_with_images(x: np.ndarray, images: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``x + ix a + iy b + iz c`` for positions ``(..., 3)`` and integer image flags of the same shape.

    No matrix product (BLAS, whose threads must not run in the simulation's process): an orthogonal box
    is one element-wise product; a triclinic one an ``einsum`` (NumPy's own loops).
    """
    h = np.asarray(h, dtype=np.float64)
    if not np.any(h - np.diag(np.diagonal(h))):
        return x + images * np.diagonal(h)
    return x + np.einsum("...i,ij->...j", images.astype(np.float64), h)


def unwrap_block(x: np.ndarray, images: np.ndarray, h: np.ndarray, bits: int = 10, *,
                 in_place: bool = False) -> np.ndarray:
    """Unwrapped positions of a block of frames: ``x + n·h`` with the image flags ``n`` of every frame.

    Image flags change only when an atom crosses the box: the shift of every atom is computed once from
    the block's first frame and corrected only for the atoms whose flags change within the block. Same
    result as :func:`unwrap_with_images` frame by frame, in one pass over the positions.

    Parameters
    ----------
    x : ndarray, shape (m, r, 3)
        Wrapped positions.
    images : ndarray, shape (m, r) (packed LAMMPS flags, ``bits`` per dimension) or (m, r, 3)
    h : ndarray, shape (3, 3)
        Lattice vectors (rows), unit of ``x``.
    bits : int
    in_place : bool
        Unwrap ``x`` itself (a float64 array the caller owns) instead of a copy.

    Returns
    -------
    ndarray, shape (m, r, 3), float64
    """
    if len(x) == 0 or x.shape[1] == 0:
        return x if in_place else np.array(x, dtype=np.float64)
    first = images[0]
    moved = (images != first).reshape(len(images), images.shape[1], -1).any(axis=(0, 2))
    cols = np.flatnonzero(moved)
    wrapped = x[:, cols]  # the atoms that cross the box in the block, as they were
    n0 = unpack_images(first, bits) if images.ndim == 2 else np.asarray(first, dtype=np.int64)
    shift = unwrap_with_images(np.zeros(n0.shape), n0, h)
    out = np.add(x, shift, out=x) if in_place else x + shift
    if len(cols):
        sub = images[:, cols]
        n = unpack_images(sub, bits) if images.ndim == 2 else np.asarray(sub, dtype=np.int64)
        out[:, cols] = unwrap_with_images(wrapped, n, h)
    return out


def box_lengths_angles(h: np.ndarray) -> np.ndarray:
    """``[a, b, c, alpha, beta, gamma]`` (lengths in the unit of ``h``, angles in degrees) of lattice vectors (rows)."""
    h = np.asarray(h, dtype=np.float64)
    lengths = np.sqrt((h * h).sum(1))

    def angle(i: int, j: int) -> float:
        c = float((h[i] * h[j]).sum()) / (lengths[i] * lengths[j])
        return float(np.degrees(np.arccos(min(1.0, max(-1.0, c)))))

    return np.array([*lengths, angle(1, 2), angle(0, 2), angle(0, 1)])


class _Block(NamedTuple):
    """Consecutive frames of one layout (atom order, box, image-flag form): what the sink processes at once."""

    steps: np.ndarray  # (m,) int64
    times: np.ndarray  # (m,) LAMMPS time unit
    x: np.ndarray  # (m, r, 3) LAMMPS length unit, rows in the order of ``ids``
    h: np.ndarray  # (3, 3) lattice vectors (rows)
    images: np.ndarray | None  # (m, r) packed or (m, r, 3)
    image_bits: int
    ids: np.ndarray | None  # (r,) atom ids of the rows, None: all atoms sorted by id
    new_run: np.ndarray  # (m,) bool
    wall_s: np.ndarray  # (m,) Unix s


class FrameSink:
    """Receives frames of all atoms; stores the mobile ones (sorted by id, unwrapped, in Å and ps).

    The stored ions are the selected atoms present when the sink is created; atoms created
    later are not stored (reported once), and a stored ion that disappears stops the sink
    with :class:`~iondiff_stream.core.errors.StoreMismatchError` naming its ids.

    A context manager: leaving the ``with`` block closes the sink (every frame pushed is written, a
    worker thread or process stopped), also when the block raised. Nothing process-wide is changed (no
    BLAS limits, no GIL switch interval): the sink does no BLAS work, and its default worker is inline.

    Parameters
    ----------
    store : str
        Path of the Zarr store.
    ids : ndarray, shape (n_atoms,)
        Atom ids of every atom, sorted (the row order of frames pushed without ``ids``).
    types : ndarray, shape (n_atoms,)
        Atom types.
    mobile : str
        ``"type 2"``, ``"type 2 3"`` or element symbol(s) (``"F"``, ``"Li,Na"``) resolved with
        ``type_elements``.
    type_elements : dict, optional
        Element of every atom type (default: guessed from masses by the hook).
    units : str
        LAMMPS unit style of the frames pushed.
    capacity, chunk_frames, flush_seconds : see :class:`~iondiff_stream.io.store.FrameStoreWriter`
    metadata : dict, optional
        Run metadata kept in the store.
    worker : {"inline", "thread", "process"}
        Where the work (matching ids, unwrapping, unit conversion, checksums and writing chunks) is done,
        a block of frames at a time. ``"inline"`` (default): in the caller (the simulation's callback).
        ``"thread"``: a background thread; the hook hands it whole blocks (:meth:`push_block`), so the
        simulation's thread takes the GIL back once per block, not per frame. Side by side on the CaF2
        example (``benchmarks/hook_cpu.py --worker``) the two cost the same within the run-to-run spread;
        beside MPI ranks on every core a third runnable thread makes the ranks wait, hence inline by
        default. ``"process"``: a separate process fed through
        a socket.
    batch_frames : int
        Frames collected before they are handed to the worker in one message
        (or after 1 s, for slow simulations) and processed together, vectorised over
        the frames: fewer hand-overs, fewer NumPy calls per frame.
    mode : {"a", "w"}
        ``"a"``: append to an existing store (new segment, or a restart's continuation);
        ``"w"``: create, refusing a store that holds frames unless ``overwrite``.
    overwrite : bool
    store_framework : bool
        Also store the framework atoms' positions (float32), so that the analysis of the store can attach
        sites to the framework (:mod:`iondiff_stream.model.framework`) as it does for a full trajectory.
    compiled : bool
        Pick rows, unwrap and convert units of a block of frames with packed image flags in one pass in C
        (``iondiff_stream.io._blocks``, when it was built); ``False``: NumPy (the same numbers, more passes over
        memory: ``benchmarks/hook_cpu.py --python``).
    """

    def __init__(
        self,
        store: str,
        ids: np.ndarray,
        types: np.ndarray,
        mobile: str,
        type_elements: dict[int, str] | None = None,
        units: str = "metal",
        capacity: int | None = None,
        chunk_frames: int = 100,
        flush_seconds: float | None = 10.0,
        metadata: dict[str, Any] | None = None,
        worker: str = "inline",
        batch_frames: int = 100,
        mode: str = "a",
        overwrite: bool = False,
        store_framework: bool = True,
        compiled: bool = True,
    ) -> None:
        if worker not in ("process", "thread", "inline"):
            raise ValueError(f"worker must be 'process', 'thread' or 'inline', got {worker!r}")
        self.worker = worker
        self.ids = np.asarray(ids, dtype=np.int64)
        self.types = np.asarray(types, dtype=np.int64)
        if len(self.ids) != len(self.types):
            raise StoreMismatchError(f"{len(self.ids)} atom ids but {len(self.types)} atom types")
        if len(self.ids) > 1 and np.any(np.diff(self.ids) <= 0):
            order = np.argsort(self.ids, kind="stable")
            self.ids, self.types = self.ids[order], self.types[order]
            if np.any(np.diff(self.ids) == 0):
                raise StoreMismatchError("duplicate atom ids: every atom needs its own id to be followed")
        self.type_elements = dict(type_elements or {})
        self.mask = self._select(mobile)
        if not self.mask.any():
            present = sorted({f"type {t} ({self.type_elements.get(int(t), '?')})" for t in np.unique(self.types)})
            raise SelectionError(f"mobile selection {mobile!r} matched no atoms; present: {', '.join(present)}")
        self.length, self.time = lammps_factors(units)
        species = [self.type_elements.get(int(t), f"type{int(t)}") for t in self.types[self.mask]]
        self.ion_ids = self.ids[self.mask]
        self.framework_ids = self.ids[~self.mask]
        self._default_rows = (np.flatnonzero(self.mask), np.flatnonzero(~self.mask))
        self._rows: tuple[np.ndarray, np.ndarray] = self._default_rows
        self._rows_ids: np.ndarray | None = None
        self._warned_new = False
        self.n_pushed = 0
        self.report: dict[str, Any] = {}
        self.batch_frames = int(batch_frames)
        self._batch: list[Any] = []
        self._last_send = time.monotonic()
        self.seconds_in_worker = 0.0
        self._box_cache: tuple[bytes, np.ndarray] | None = None
        self._error: BaseException | None = None
        self._queue: queue.Queue[Any] | None = None
        self._thread: threading.Thread | None = None
        self._proc: Any = None
        self._closed = False
        if worker == "process":
            self._start_process(
                dict(store=store, ids=self.ids, types=self.types, mobile=mobile, type_elements=self.type_elements,
                     units=units, capacity=capacity, chunk_frames=chunk_frames, flush_seconds=flush_seconds,
                     metadata=metadata, worker="inline", mode=mode, overwrite=overwrite,
                     store_framework=store_framework, compiled=compiled)
            )
            self.writer = None  # type: ignore[assignment]
            return
        self.store_framework = bool(store_framework)
        self.compiled = bool(compiled) and _blocks is not None
        self._scratch_bufs: dict[str, np.ndarray] = {}
        fw_types = self.types[~self.mask]
        framework = ((self.framework_ids, [self.type_elements.get(int(t), f"type{int(t)}") for t in fw_types],
                      fw_types) if self.store_framework else None)
        self.writer = FrameStoreWriter(
            store, self.ids[self.mask], species, units=units, capacity=capacity, chunk_frames=chunk_frames,
            flush_seconds=flush_seconds, mode=mode, overwrite=overwrite,
            metadata={"mobile": mobile, **(metadata or {})}, lammps_types=self.types[self.mask],
            framework=framework,
        )
        if worker == "thread":
            self._queue = queue.Queue(maxsize=10_000)
            self._thread = threading.Thread(target=self._work, name="iondiff-sink", daemon=True)
            self._thread.start()

    def _start_process(self, kwargs: dict[str, Any]) -> None:
        """Start ``python -m iondiff_stream.io.sink`` connected by a socket pair.

        A plain subprocess (not multiprocessing): it works from any user script
        (no ``if __name__ == "__main__"`` guard needed) and never forks a
        process that holds MPI or LAMMPS state.
        """
        import socket
        import subprocess
        import sys
        from multiprocessing.connection import Connection

        parent, child = socket.socketpair()
        mpi_vars = ("PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPI")  # the worker must not think it is an MPI rank
        env = {k: v for k, v in os.environ.items() if not k.startswith(mpi_vars)}
        # nothing in the worker needs BLAS threads; none may spin on the simulation's cores
        env.update({k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")})
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "iondiff_stream.io.sink", str(child.fileno())], pass_fds=(child.fileno(),), env=env
        )
        child.close()
        self._conn = Connection(parent.detach())
        self._conn.send(kwargs)
        ok = self._conn.recv()  # the child reports whether it could open the store
        if isinstance(ok, BaseException):
            self._proc.wait()
            raise ok

    def _select(self, spec: str) -> np.ndarray:
        spec = spec.strip()
        if spec.startswith("type"):
            try:
                wanted = [int(v) for v in spec.split()[1:]]
            except ValueError as exc:
                raise SelectionError(f"bad type selection {spec!r}: {exc}") from exc
            return np.isin(self.types, wanted)
        words = [w.strip() for w in spec.split(",")]
        wanted_types = [t for t, e in self.type_elements.items() if e in words]
        return np.isin(self.types, wanted_types)

    def push(
        self, step: int, time_native: float, x_unwrapped: np.ndarray, h: np.ndarray,
        images: np.ndarray | None = None, image_bits: int = 10, ids: np.ndarray | None = None,
        new_run: bool = False,
    ) -> None:
        """Store one frame.

        Parameters
        ----------
        step : int
        time_native : float
            Simulation time in the LAMMPS time unit.
        x_unwrapped : ndarray, shape (m, 3)
            Positions of the atoms, LAMMPS length unit: unwrapped, or wrapped together
            with ``images`` (the sink keeps a reference: pass a fresh array). Rows
            follow ``ids``; without ``ids`` they are all atoms sorted by id.
        h : ndarray, shape (3, 3)
            Lattice vectors (rows), LAMMPS length unit.
        images : ndarray, shape (m,) or (m, 3), optional
            LAMMPS image flags (packed, or unpacked (m, 3)), rows like the positions:
            the positions are unwrapped with them (in the worker thread when threaded).
        image_bits : int
            10 for 32-bit imageint, 21 for 64-bit (packed flags).
        ids : ndarray of int, shape (m,), optional
            Atom ids of the rows, in any order (e.g. LAMMPS's local order, or ranks
            concatenated); the stored ions are looked up by id.
        new_run : bool
            First frame of a new LAMMPS ``run`` (starts a new store segment).
        """
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        if ids is None and x_unwrapped.shape != (len(self.ids), 3):
            raise StoreMismatchError(f"frame of {x_unwrapped.shape[0]} atoms, expected {len(self.ids)}")
        self._batch.append((step, time_native, x_unwrapped, h, images, image_bits, ids, new_run, time.time()))
        self.n_pushed += 1
        if len(self._batch) >= self.batch_frames or time.monotonic() - self._last_send > 1.0:
            self._send_batch()

    def push_block(
        self, steps: np.ndarray, times_native: np.ndarray, x: np.ndarray, h: np.ndarray,
        images: np.ndarray | None = None, image_bits: int = 10, ids: np.ndarray | None = None,
        new_run: np.ndarray | None = None, wall_s: np.ndarray | None = None,
    ) -> None:
        """Store consecutive frames that share one atom order and box, handed over at once.

        What the LAMMPS hook uses: it copies each frame into a block and hands the block over, so
        the work per frame is one vectorised pass over the block instead of Python calls per frame.
        The arrays are processed (inline) or handed to the worker at once; an inline sink keeps no
        reference to them after the call returns.

        Parameters
        ----------
        steps : ndarray of int, shape (m,)
        times_native : ndarray, shape (m,)
            Simulation times, LAMMPS time unit.
        x : ndarray, shape (m, r, 3)
            Positions, LAMMPS length unit: unwrapped, or wrapped together with ``images``; rows follow ``ids``.
        h : ndarray, shape (3, 3)
            Lattice vectors (rows) of every frame of the block, LAMMPS length unit.
        images : ndarray, shape (m, r) (packed) or (m, r, 3), optional
        image_bits : int
        ids : ndarray of int, shape (r,), optional
            Atom ids of the rows (every frame of the block); without them all atoms sorted by id.
        new_run : ndarray of bool, shape (m,), optional
            Frames that start a new LAMMPS ``run``.
        wall_s : ndarray, shape (m,), optional
            When each frame was taken (Unix s; default now).
        """
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        m = len(steps)
        if m == 0:
            return
        if x.shape[0] != m or (ids is None and x.shape[1:] != (len(self.ids), 3)):
            raise StoreMismatchError(f"block of {x.shape} positions for {m} steps and {len(self.ids)} atoms")
        block = _Block(np.asarray(steps, dtype=np.int64), np.asarray(times_native, dtype=np.float64), x,
                       np.asarray(h, dtype=np.float64), images, int(image_bits), ids,
                       np.zeros(m, bool) if new_run is None else np.asarray(new_run, dtype=bool),
                       np.full(m, time.time()) if wall_s is None else np.asarray(wall_s, dtype=np.float64))
        self._batch.append(block)
        self.n_pushed += m
        self._send_batch()

    def _send_batch(self) -> None:
        """Hand the frames collected so far to the worker in one message (or process them, inline)."""
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        self._last_send = time.monotonic()
        if self._proc is not None:
            if self._conn.poll():  # the child failed
                msg = self._conn.recv()
                raise msg if isinstance(msg, BaseException) else StoreError(str(msg))
            self._conn.send(batch)
        elif self._queue is not None:
            self._queue.put(batch)
        else:
            self._process_batch(batch)

    def flush(self) -> None:
        """Commit every frame pushed so far (asynchronously when a worker does the writing)."""
        self._send_batch()
        if self._proc is not None:
            self._conn.send("FLUSH")
        elif self._queue is not None:
            self._queue.put("FLUSH")
        else:
            self.writer.flush()

    def _box(self, h: np.ndarray) -> np.ndarray:
        key = h.tobytes()
        if self._box_cache is None or self._box_cache[0] != key:
            self._box_cache = (key, box_lengths_angles(h * self.length))
        return self._box_cache[1]

    def _rows_of(self, ids: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the stored ions and of the framework atoms in a frame whose rows have ``ids``."""
        ids = np.asarray(ids, dtype=np.int64)
        if self._rows_ids is not None and len(ids) == len(self._rows_ids) and np.array_equal(ids, self._rows_ids):
            return self._rows  # LAMMPS keeps its atom order between sorts / re-neighbourings
        order = np.argsort(ids, kind="stable")
        sid = ids[order]

        def lookup(want: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            loc = np.minimum(np.searchsorted(sid, want), max(len(sid) - 1, 0))
            ok = sid[loc] == want if len(sid) else np.zeros(len(want), bool)
            return order[loc], ok

        rows_m, ok = lookup(self.ion_ids)
        if not ok.all():
            gone = self.ion_ids[~ok]
            raise StoreMismatchError(
                f"step {step}: {len(gone)} stored ions are gone from the simulation (deleted or lost), ids "
                f"{gone[:10].tolist()}{'...' if len(gone) > 10 else ''}; start a new store for the changed system"
            )
        rows_f, okf = lookup(self.framework_ids)
        n_new = len(ids) - len(self.ion_ids) - int(okf.sum())
        if (not okf.all() or n_new > 0) and not self._warned_new:
            logger.warning("step %d: %d framework atoms are gone and %d atoms were created since the store was "
                           "started; the store keeps the ions present at its start, the framework centre uses "
                           "the framework atoms still present", step, int((~okf).sum()), n_new)
            self._warned_new = True
        rows_f = rows_f[okf]
        self._rows, self._rows_ids = (rows_m, rows_f), ids.copy()
        return self._rows

    def _process_batch(self, frames: list[Any]) -> None:
        """Store frames (per-frame tuples of :meth:`push` and blocks of :meth:`push_block`), a block of
        frames with the same atom order, box and image-flag layout at a time."""
        i = 0
        while i < len(frames):
            f0 = frames[i]
            if isinstance(f0, _Block):
                self._process_block(f0)
                i += 1
                continue
            j = i + 1
            while j < len(frames) and not isinstance(frames[j], _Block) and self._same_layout(f0, frames[j]):
                j += 1
            self._process_block(self._as_block(frames[i:j]))
            i = j

    @staticmethod
    def _same_layout(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
        """Whether frames ``a`` and ``b`` can be processed as one block (same rows, box and flags)."""
        (_, _, xa, ha, ia, ba, da, _, _), (_, _, xb, hb, ib, bb, db, _, _) = a, b
        if xa.shape != xb.shape or ba != bb or (ia is None) != (ib is None):
            return False
        if ia is not None and np.ndim(ia) != np.ndim(ib):
            return False
        if not (ha is hb or np.array_equal(ha, hb)):
            return False
        return da is db or (da is not None and db is not None and da.shape == db.shape
                            and da.dtype == db.dtype and da.tobytes() == db.tobytes())

    @staticmethod
    def _as_block(frames: list[tuple[Any, ...]]) -> _Block:
        """Per-frame tuples of one layout (:meth:`_same_layout`) as one block."""
        _, _, _, h, images, bits, ids, _, _ = frames[0]
        one = len(frames) == 1
        x = np.asarray(frames[0][2])[None] if one else np.stack([f[2] for f in frames])
        img = None if images is None else (np.asarray(images)[None] if one else np.stack([f[4] for f in frames]))
        return _Block(np.array([f[0] for f in frames], dtype=np.int64), np.array([f[1] for f in frames], float), x,
                      np.asarray(h, dtype=np.float64), img, bits, ids, np.array([f[7] for f in frames], bool),
                      np.array([f[8] for f in frames], float))

    def _scratch(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A C-contiguous array of ``shape`` over memory reused from block to block (the writer copies what it
        keeps): a fresh array per block is fresh pages, and page faults, every block."""
        need = int(np.prod(shape))
        buf = self._scratch_bufs.get(name)
        if buf is None or buf.size < need:
            buf = self._scratch_bufs[name] = np.empty(max(need, 1), dtype)
        return buf[:need].reshape(shape)

    def _process_block(self, b: _Block) -> None:
        """Match ids, unwrap, convert units and hand a block of frames of one layout to the writer.

        Vectorised over the frames; keeps no view of the block's arrays (the hook reuses them).
        """
        h, images, bits, ids = b.h, b.images, b.image_bits, b.ids
        rm, rf = self._rows_of(ids, int(b.steps[0])) if ids is not None else self._default_rows
        x = b.x if b.x.dtype == np.float64 else b.x.astype(np.float64)
        m = len(b.steps)
        if self.compiled and images is not None and images.ndim == 2 and images.dtype in (np.int32, np.int64):
            # one pass in C: rows picked, unwrapped, in Å; the framework's mean and its float32 positions
            x, images = np.ascontiguousarray(x), np.ascontiguousarray(images)
            h = np.ascontiguousarray(h, dtype=np.float64)
            pos = self._scratch("pos", (m, len(rm), 3), np.float64)
            _blocks.unwrap_rows(x, images, rm, h, bits, self.length, pos, None)
            fwp = fw = None
            if len(rf):
                keep = self.store_framework and len(rf) == self.writer.n_framework
                fwp = self._scratch("fwp", (m, len(rf), 3), np.float32) if keep else None
                fw = self._scratch("fw", (m, 3), np.float64)
                _blocks.unwrap_rows(x, images, rf, h, bits, self.length, fwp, fw)
        else:
            pos, fw, fwp = self._unwrapped_numpy(x, images, h, bits, rm, rf)
        self.writer.append_many(b.steps, b.times * self.time, pos, np.broadcast_to(self._box(h), (m, 6)), fw,
                                b.new_run, b.wall_s, framework_positions=fwp)

    def _unwrapped_numpy(self, x: np.ndarray, images: np.ndarray | None, h: np.ndarray, bits: int, rm: np.ndarray,
                         rf: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """:meth:`_process_block` with NumPy (no ``_blocks``, ``compiled=False``, or unpacked image flags): the
        ions' unwrapped positions (m, r, 3), the framework centre (m, 3) and positions (m, q, 3), in Å."""
        xm, xf = x[:, rm], x[:, rf]
        if images is not None:
            pos = unwrap_block(xm, images[:, rm], h, bits, in_place=True)  # xm, xf: copies (fancy indexing)
            if self.store_framework and len(rf):
                fwp = unwrap_block(xf, images[:, rf], h, bits, in_place=True)
                fw = fwp.mean(1)
            else:
                fwp = None
                # the framework centre is linear in the flags: the mean of the unwrapped framework positions
                imf = images[:, rf]
                fw = (unwrap_with_images(xf.mean(1), (unpack_images(imf, bits) if imf.ndim == 2 else imf).mean(1), h)
                      if len(rf) else None)
        else:
            pos = np.array(xm, dtype=np.float64)
            fwp = np.array(xf, dtype=np.float64) if (self.store_framework and len(rf)) else None
            fw = xf.mean(1) if len(rf) else None
        if self.length != 1.0:
            pos *= self.length
            if fw is not None:
                fw *= self.length
            if fwp is not None:
                fwp *= self.length
        if fwp is not None and fwp.shape[1] != self.writer.n_framework:
            fwp = None  # framework atoms gone or created since the store began: no framework positions
        return pos, fw, fwp

    def _work(self) -> None:
        assert self._queue is not None
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if item == "FLUSH":
                    if self._error is None:
                        self.writer.flush()
                    continue
                if self._error is None:
                    t0 = time.thread_time()
                    self._process_batch(item)
                    self.seconds_in_worker += time.thread_time() - t0
            except BaseException as exc:  # reported to the producer at its next push / close
                logger.error("iondiff_stream sink failed: %s", exc)
                self._error = exc
            finally:
                self._queue.task_done()

    def close(self, interrupted: str | None = None) -> dict[str, Any]:
        """Write every frame pushed so far, close the store and end the sink's side effects; idempotent.

        Parameters
        ----------
        interrupted : str, optional
            Why the simulation stopped early (e.g. ``"SIGINT"``): recorded in the last segment of the
            store (``interrupted``), which tells readers that the run did not reach its end.

        Returns
        -------
        dict
            ``frames`` in the store, ``segments``, ``skipped_duplicate_frames``, ``run_boundary_repeats``.

        Raises
        ------
        BaseException
            The error the worker met (the frames before it are kept).
        """
        if self._closed:
            return self.report
        self._closed = True
        try:
            self._send_batch()
        except BaseException as exc:  # noqa: BLE001 - the worker's error is re-raised after the cleanup
            self._error = self._error or exc
        if self._proc is not None:
            try:
                self._conn.send(("CLOSE", interrupted))
                msg = self._conn.recv()
            finally:
                self._proc.wait(timeout=120)
                self._proc = None
                self._conn.close()
            if isinstance(msg, BaseException):
                raise msg
            self.report = msg
            return self.report
        if self._thread is not None and self._queue is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if interrupted is not None:
            self.writer.mark_interrupted(interrupted)
        self.writer.close()
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        c = self.writer.commit
        self.report = {"frames": c.n_frames, "segments": len(c.segments),
                       "skipped_duplicate_frames": c.n_skipped_duplicates,
                       "run_boundary_repeats": c.n_run_boundary_repeats}
        if interrupted is not None:
            self.report["interrupted"] = interrupted
        return self.report

    def __enter__(self) -> FrameSink:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is None:
            self.close()
            return
        try:  # keep the frames stored so far; the block's own error is the one that propagates
            self.close(interrupted=type(exc).__name__ if isinstance(exc, KeyboardInterrupt) else None)
        except BaseException as close_exc:  # noqa: BLE001
            logger.error("closing the store after %s: %s", type(exc).__name__, close_exc)


def _process_main(conn: Any, kwargs: dict[str, Any] | None = None) -> None:
    """Child process of a ``worker="process"`` sink: receive frames, store them, report at the end."""
    try:
        if kwargs is None:
            kwargs = conn.recv()
        sink = FrameSink(**kwargs)
    except BaseException as exc:  # noqa: BLE001 - sent to the parent
        conn.send(exc)
        return
    conn.send(True)
    try:
        interrupted = None
        while True:
            item = conn.recv()
            if item is None:
                break
            if isinstance(item, tuple) and item[0] == "CLOSE":
                interrupted = item[1]
                break
            if item == "FLUSH":
                sink.writer.flush()
                continue
            sink._process_batch(item)
        conn.send(sink.close(interrupted=interrupted))
    except BaseException as exc:  # noqa: BLE001
        try:
            sink.writer.close()  # keep every frame received so far
        except BaseException:  # noqa: BLE001
            pass
        conn.send(exc)


if __name__ == "__main__":  # the worker process of FrameSink(worker="process")
    import sys
    from multiprocessing.connection import Connection

    from iondiff_stream.io import sink as _package_module  # the package's classes (blocks are pickled by name)

    _package_module._process_main(Connection(int(sys.argv[1])))
