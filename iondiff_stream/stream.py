"""Library side of the LAMMPS hook: turn plain per-frame arrays into stored frames and live centres.

The hook (``lammps_hooks``) only slices LAMMPS's arrays to the local atoms and
copies them (atom ids, positions, image flags, in LAMMPS's own order); it then
calls :meth:`FrameSink.push` with plain NumPy arrays. Matching the atoms to the
stored ions by id (any ids: gaps, ids above the atom count, atoms created or
deleted later), unwrapping and unit conversion happen here, off the simulation
thread when threaded. Everything here is testable without LAMMPS.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Any

import numpy as np
from MDAnalysis.lib.mdamath import triclinic_box

from .buffer import FrameStoreWriter
from .errors import SelectionError, StoreError, StoreMismatchError
from .elements import elements_from_masses  # noqa: F401  (public here too)
from .online import OnlineCentres
from .units import lammps_factors

logger = logging.getLogger(__name__)

#: GIL switch interval (s) while a thread worker runs: the simulation thread's callback waits at most this
#: long for the worker to hand over the GIL (forced switches happen only while both want it; restored on close)
SWITCH_INTERVAL_S = 2e-5

#: BLAS threads while a sink is open. OpenBLAS keeps its threads spinning for a while after every call;
#: with the worker's small k-means products those threads take the simulation's core (measured on CaF2,
#: 2 cores: the callback's share of LAMMPS's time fell from ~0.6 ms to ~0.15 ms per stored frame)
SINK_BLAS_THREADS = 1


def _limit_blas() -> Any:
    """Limit BLAS to :data:`SINK_BLAS_THREADS` threads; returns the limiter (``restore_original_limits``)."""
    from .transport import _one_blas_thread

    return _one_blas_thread(SINK_BLAS_THREADS)

__all__ = ["FrameSink", "box_from_lammps", "unwrap_with_images", "unpack_images", "elements_from_masses"]


def unpack_images(image: np.ndarray, bits: int = 10) -> np.ndarray:
    """Unpack LAMMPS packed image flags (imageint) into (n, 3) integers.

    ``bits`` is 10 for 32-bit imageint (default build), 21 for ``-DLAMMPS_BIGBIG``.
    """
    image = np.asarray(image, dtype=np.int64)
    mask = (1 << bits) - 1
    imgmax = 1 << (bits - 1)
    ix = (image & mask) - imgmax
    iy = ((image >> bits) & mask) - imgmax
    iz = (image >> (2 * bits)) - imgmax
    return np.stack([ix, iy, iz], axis=1)


def box_from_lammps(boxlo: Any, boxhi: Any, xy: float, yz: float, xz: float) -> np.ndarray:
    """Lattice vectors (rows, LAMMPS length units) of a LAMMPS box; box lengths/angles follow in the sink."""
    lx, ly, lz = (float(hi) - float(lo) for lo, hi in zip(boxlo, boxhi))
    return np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])


def unwrap_with_images(x: np.ndarray, images: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``x + ix a + iy b + iz c`` for (n, 3) positions and integer image flags."""
    return x + images @ h


class FrameSink:
    """Receives sorted, unwrapped frames of all atoms; stores the mobile ones and updates live centres.

    The stored ions are the selected atoms present when the sink is created; atoms created
    later are not stored (reported once), and a stored ion that disappears stops the sink
    with :class:`~iondiff_stream.errors.StoreMismatchError` naming its ids.

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
    capacity, chunk_frames, flush_seconds : see :class:`~iondiff_stream.buffer.FrameStoreWriter`
    online : bool
        Keep streaming centres (saved into the store at every flush).
    worker : {"thread", "process", "inline"}
        Where the work (unwrapping, unit conversion, online update, chunk writes)
        is done. ``"thread"`` (default): a background thread, which runs while
        LAMMPS computes in C with the GIL released (measured: the lowest
        overhead, benchmarks/hook_overhead.py). ``"process"``: a separate
        process fed through a socket (for large systems, where the per-frame
        Python work would compete for the GIL). ``"inline"``: in the caller.
    batch_frames : int
        Frames collected before they are handed to the worker in one message
        (or after 1 s, for slow simulations); fewer hand-overs.
    mode : {"a", "w"}
        ``"a"``: append to an existing store (new segment, or a restart's continuation);
        ``"w"``: create, refusing a store that holds frames unless ``overwrite``.
    overwrite : bool
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
        online: bool = True,
        metadata: dict[str, Any] | None = None,
        worker: str = "thread",
        batch_frames: int = 20,
        mode: str = "a",
        overwrite: bool = False,
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
        self.seconds_in_push = 0.0
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
        self._old_switch: float | None = None
        self._blas: Any = None
        if worker == "process":
            self._start_process(
                dict(store=store, ids=self.ids, types=self.types, mobile=mobile, type_elements=self.type_elements,
                     units=units, capacity=capacity, chunk_frames=chunk_frames, flush_seconds=flush_seconds,
                     online=online, metadata=metadata, worker="inline", mode=mode, overwrite=overwrite)
            )
            self.writer = None  # type: ignore[assignment]
            self.online = None
            return
        self.writer = FrameStoreWriter(
            store, self.ids[self.mask], species, units=units, capacity=capacity, chunk_frames=chunk_frames,
            flush_seconds=flush_seconds, mode=mode, overwrite=overwrite,
            metadata={"mobile": mobile, **(metadata or {})}, lammps_types=self.types[self.mask],
        )
        self.online = OnlineCentres() if online else None
        if self.online is not None:
            from .buffer import FrameStoreReader

            st = FrameStoreReader(store).online_state()
            if st is not None:  # restart: continue the live centres
                try:
                    self.online = OnlineCentres.load(st)
                except (KeyError, ValueError) as exc:
                    logger.warning("could not restore the online state (%s): starting afresh", exc)
            self.writer.on_flush.append(self._save_online)
        self._blas = _limit_blas()  # restored on close
        if worker == "thread":
            import sys

            # the simulation thread calls back into Python holding no GIL; make the worker hand the GIL
            # over within SWITCH_INTERVAL_S instead of the default 5 ms (restored on close)
            self._old_switch = sys.getswitchinterval()
            sys.setswitchinterval(min(self._old_switch, SWITCH_INTERVAL_S))
            self._queue = queue.Queue(maxsize=10_000)
            self._thread = threading.Thread(target=self._work, name="iondiff-sink", daemon=True)
            self._thread.start()

    def _start_process(self, kwargs: dict[str, Any]) -> None:
        """Start ``python -m iondiff_stream.stream`` connected by a socket pair.

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
        # the worker's BLAS must not spin on the simulation's core (see SINK_BLAS_THREADS)
        env.update({k: str(SINK_BLAS_THREADS) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")})
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "iondiff_stream.stream", str(child.fileno())], pass_fds=(child.fileno(),), env=env
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

    def _save_online(self, writer: FrameStoreWriter) -> None:
        if self.online is not None:
            self.online.save(writer.group)
            writer.commit.online_frames = int(getattr(self.online, "n_frames_seen_", 0))

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
        t0 = time.perf_counter()
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        if ids is None and x_unwrapped.shape != (len(self.ids), 3):
            raise StoreMismatchError(f"frame of {x_unwrapped.shape[0]} atoms, expected {len(self.ids)}")
        item = (step, time_native, x_unwrapped, h, images, image_bits, ids, new_run)
        if self._proc is None and self._queue is None:
            self._process(*item)
        else:
            self._batch.append(item)
            if len(self._batch) >= self.batch_frames or time.monotonic() - self._last_send > 1.0:
                self._send_batch()
        self.n_pushed += 1
        self.seconds_in_push += time.perf_counter() - t0

    def _send_batch(self) -> None:
        """Hand the frames collected so far to the worker in one message."""
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
            self._box_cache = (key, triclinic_box(*(h * self.length)).astype(np.float64))
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

    def _process(
        self, step: int, time_native: float, x_unwrapped: np.ndarray, h: np.ndarray,
        images: np.ndarray | None = None, image_bits: int = 10, ids: np.ndarray | None = None,
        new_run: bool = False,
    ) -> None:
        t0 = time.perf_counter()
        rm, rf = self._rows_of(ids, step) if ids is not None else self._default_rows
        xm, xf = x_unwrapped[rm], x_unwrapped[rf]
        if images is not None:
            img = np.asarray(images)
            im, imf = img[rm], img[rf]
            if img.ndim == 1:
                im, imf = unpack_images(im, image_bits), unpack_images(imf, image_bits)
            xm = unwrap_with_images(xm, im, h)
            xf = unwrap_with_images(xf, imf, h)
        pos = xm * self.length
        fw = xf.mean(0) * self.length if len(xf) else None
        box = self._box(h)
        t_ps = float(time_native) * self.time
        if self.writer.append(int(step), t_ps, pos, box, fw, new_run=bool(new_run)) and self.online is not None:
            self.online.partial_fit(pos[None], box=box, times_ps=np.array([t_ps]))
        self.seconds_in_worker += time.perf_counter() - t0

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
                    for frame in item:
                        self._process(*frame)
            except BaseException as exc:  # reported to the producer at its next push / close
                logger.error("iondiff_stream sink failed: %s", exc)
                self._error = exc
            finally:
                self._queue.task_done()

    def close(self) -> dict[str, Any]:
        """Wait for queued frames, flush frames and the online state; re-raise a worker error.

        Returns
        -------
        dict
            ``frames`` stored by this sink, ``hops_live`` seen by the online estimator.
        """
        self._send_batch()
        if self._proc is not None:
            self._conn.send(None)
            msg = self._conn.recv()
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
            if self._old_switch is not None:
                import sys

                sys.setswitchinterval(self._old_switch)
                self._old_switch = None
        try:
            if self.online is not None and hasattr(self.online, "finalize") and self._error is None:
                self.online.finalize()  # re-learn the sites and recount the last frames before the final save
            self.writer.close()
        finally:
            if self._blas is not None:
                self._blas.restore_original_limits()
                self._blas = None
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        c = self.writer.commit
        self.report = {"frames": c.n_frames, "segments": len(c.segments),
                       "skipped_duplicate_frames": c.n_skipped_duplicates,
                       "run_boundary_repeats": c.n_run_boundary_repeats,
                       "hops_live": int(self.online.hops_.sum()) if self.online is not None and hasattr(self.online, "hops_") else None}
        return self.report


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
        while True:
            item = conn.recv()
            if item is None:
                break
            if item == "FLUSH":
                sink.writer.flush()
                continue
            for frame in item:
                sink._process(*frame)
        conn.send(sink.close())
    except BaseException as exc:  # noqa: BLE001
        try:
            sink.writer.close()  # keep every frame received so far
        except BaseException:  # noqa: BLE001
            pass
        conn.send(exc)


if __name__ == "__main__":  # the worker process of FrameSink(worker="process")
    import sys
    from multiprocessing.connection import Connection

    _process_main(Connection(int(sys.argv[1])))
