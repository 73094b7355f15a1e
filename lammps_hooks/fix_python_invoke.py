"""Hook for LAMMPS binaries with the PYTHON package (``fix python/invoke``), e.g. Debian's ``lmp``.

Most deep-potential users run an ``lmp`` binary rather than LAMMPS's Python module; this is their
live path. ``iondiff-stream snippet --mobile M --every N --store S`` prints the lines to paste into
an input script (before its first ``run``); they look like::

    variable IONDIFF_STORE  string /abs/path/run.zarr   # where to write
    variable IONDIFF_MOBILE string "type 2"             # element (types' elements from masses) or "type N"
    variable IONDIFF_MODE   string new                  # new | append | overwrite
    # variable IONDIFF_ON_ERROR string continue         # run on without storing if the store cannot be written
    python   iondiff_frame here \"\"\"
    import sys
    sys.path[:0] = [...]                                # this project's venv site-packages and package
    from lammps_hooks.fix_python_invoke import iondiff_frame
    \"\"\"
    fix      iondiff all python/invoke 10 end_of_step iondiff_frame

LAMMPS's own Python module is not used: the one on the path (the PyPI wheel, 2025) may not match the
running binary (Debian's is from 2022, and the wheel's module then fails on a missing symbol). The
few calls the hook needs are made through ``ctypes`` on the running executable's C library
interface, which has been stable since 2020: ``lammps_gather_atoms_concat`` (any atom ids, any
number of MPI ranks; collective, so every rank calls the hook and rank 0 writes),
``lammps_extract_global``/``_box``/``_setting``/``_atom``, ``lammps_get_thermo`` and
``lammps_extract_variable`` (string/index variables).

Every ``run`` is a segment of the store; frames are flushed every 10 s, at every new run, and when
the Python interpreter exits.

DeePMD: with ``variable IONDIFF_MODEL_DEVI string PATH`` (``iondiff-stream snippet --model-devi PATH``, the
``out_file`` of ``pair_style deepmd m0.pb m1.pb ... out_freq N [atomic]``) rank 0 also reads the new lines of
that file at every stored frame and keeps them in ``STORE/model_devi/``, keyed by MD step, per atom for the
stored ions with ``atomic`` (:class:`iondiff_stream.io.model_deviation.ModelDeviationFollower`, the library
code of the ``fix external`` hook's ``follow_model_deviation``). The line of step s is written while the
forces of step s are computed, before ``end_of_step``, so the frame of step s finds it.

A hook that cannot store (the store already holds frames and ``IONDIFF_MODE`` is ``new``, it cannot be
created, a stored ion disappeared, ...) stops LAMMPS with an error (non-zero exit status) naming the store and
the fix, after closing the store with every frame received so far; ``variable IONDIFF_ON_ERROR string
continue`` lets the simulation run on without storing instead. Under MPI (several ranks) the refusal of an
existing store is decided by every rank alike and stops the run the same way; failures only rank 0 can see
(the writer's) are reported and the run goes on without storing, since an error raised on one rank alone
would leave the others waiting in their next collective call. ``fix python/invoke ... end_of_step`` is not called at a run's setup,
so a run's first stored frame is its first multiple of N after its first step.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["iondiff_frame", "CLammps", "snippet", "check_lmp"]

_STATE: dict[str, Any] = {}


class CLammps:
    """The few LAMMPS C-library calls the hook needs, on a LAMMPS instance of this process.

    Parameters
    ----------
    ptr : PyCapsule or int
        The LAMMPS pointer ``fix python/invoke`` passes to its function.
    """

    def __init__(self, ptr: Any) -> None:
        if not isinstance(ptr, int):
            get = ctypes.pythonapi.PyCapsule_GetPointer
            get.restype = ctypes.c_void_p
            get.argtypes = [ctypes.py_object, ctypes.c_char_p]
            ptr = get(ptr, None)
        self.ptr = ctypes.c_void_p(ptr)
        lib = ctypes.CDLL(None)  # the running lmp and its liblammps
        self.lib = lib
        lib.lammps_extract_global.restype = ctypes.c_void_p
        lib.lammps_extract_global.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.lammps_extract_setting.restype = ctypes.c_int
        lib.lammps_extract_setting.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.lammps_extract_atom.restype = ctypes.c_void_p
        lib.lammps_extract_atom.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.lammps_get_thermo.restype = ctypes.c_double
        lib.lammps_get_thermo.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.lammps_get_natoms.restype = ctypes.c_double
        lib.lammps_get_natoms.argtypes = [ctypes.c_void_p]
        lib.lammps_extract_variable.restype = ctypes.c_void_p
        lib.lammps_extract_variable.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
        lib.lammps_gather_atoms_concat.restype = None
        lib.lammps_gather_atoms_concat.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int,
                                                   ctypes.c_void_p]
        lib.lammps_extract_box.restype = None
        lib.lammps_extract_box.argtypes = [ctypes.c_void_p] + [ctypes.c_void_p] * 7
        lib.lammps_version.restype = ctypes.c_int
        lib.lammps_version.argtypes = [ctypes.c_void_p]
        if self.setting("tagint") != 4:
            raise RuntimeError("iondiff_stream's fix python/invoke hook needs 32-bit atom ids (not -DLAMMPS_BIGBIG)")

    def setting(self, name: str) -> int:
        return int(self.lib.lammps_extract_setting(self.ptr, name.encode()))

    def global_double(self, name: str) -> float:
        return float(ctypes.cast(self.lib.lammps_extract_global(self.ptr, name.encode()),
                                 ctypes.POINTER(ctypes.c_double))[0])

    def global_bigint(self, name: str) -> int:
        ct = ctypes.c_int64 if self.setting("bigint") == 8 else ctypes.c_int32
        return int(ctypes.cast(self.lib.lammps_extract_global(self.ptr, name.encode()), ctypes.POINTER(ct))[0])

    def global_int(self, name: str) -> int:
        return int(ctypes.cast(self.lib.lammps_extract_global(self.ptr, name.encode()), ctypes.POINTER(ctypes.c_int))[0])

    def global_string(self, name: str) -> str:
        return ctypes.cast(self.lib.lammps_extract_global(self.ptr, name.encode()), ctypes.c_char_p).value.decode()

    def thermo(self, keyword: str) -> float:
        return float(self.lib.lammps_get_thermo(self.ptr, keyword.encode()))

    def natoms(self) -> int:
        return int(self.lib.lammps_get_natoms(self.ptr))

    def version(self) -> int:
        return int(self.lib.lammps_version(self.ptr))

    def string_variable(self, name: str) -> str | None:
        """Value of a string/index-style variable, None if undefined."""
        p = self.lib.lammps_extract_variable(self.ptr, name.encode(), None)
        return None if not p else ctypes.cast(p, ctypes.c_char_p).value.decode().strip()

    def masses(self) -> np.ndarray:
        """Per-type masses, shape (ntypes,)."""
        n = self.global_int("ntypes")
        p = ctypes.cast(self.lib.lammps_extract_atom(self.ptr, b"mass"), ctypes.POINTER(ctypes.c_double))
        return np.array([p[i] for i in range(1, n + 1)])

    def gather(self, name: str, integer: bool, count: int) -> np.ndarray:
        """``lammps_gather_atoms_concat``: per-atom data of all ranks (rank order, any ids), shape (natoms, count)."""
        n = self.natoms()
        buf = np.zeros(n * count, dtype=np.int32 if integer else np.float64)
        self.lib.lammps_gather_atoms_concat(self.ptr, name.encode(), 0 if integer else 1, count,
                                            buf.ctypes.data_as(ctypes.c_void_p))
        return buf.reshape(n, count) if count > 1 else buf

    def box(self) -> np.ndarray:
        """Lattice vectors (rows), shape (3, 3), LAMMPS length unit."""
        from iondiff_stream.io.sink import box_from_lammps

        lo, hi = (ctypes.c_double * 3)(), (ctypes.c_double * 3)()
        xy, yz, xz = ctypes.c_double(), ctypes.c_double(), ctypes.c_double()
        per, flag = (ctypes.c_int * 3)(), ctypes.c_int()
        self.lib.lammps_extract_box(self.ptr, lo, hi, ctypes.byref(xy), ctypes.byref(yz), ctypes.byref(xz), per,
                                    ctypes.byref(flag))
        return box_from_lammps(list(lo), list(hi), xy.value, yz.value, xz.value)


def _at_exit(fn: Any) -> None:
    """Run ``fn`` when LAMMPS finalizes its Python, before the thread pools zarr writes with are shut down.

    ``atexit`` callbacks run too late for that (``concurrent.futures`` stops its executors at
    threading shutdown); ``threading._register_atexit`` runs first (Python >= 3.9).
    """
    import threading

    reg = getattr(threading, "_register_atexit", None)
    if reg is not None:
        try:
            reg(fn)
            return
        except RuntimeError:  # interpreter already shutting down
            pass
    atexit.register(fn)


def _close() -> None:
    sink = _STATE.get("sink")
    _STATE["sink"] = None
    devi = _STATE.pop("devi", None)
    rep: dict[str, Any] = {}
    try:
        if sink is not None:
            rep = sink.close()
    finally:
        if devi is not None:
            rep.update(devi.close())  # the lines written after the last stored frame
    if sink is not None:
        logger.info("iondiff_stream store closed: %s", rep)


def iondiff_frame(lmpptr: Any) -> None:
    """Called by ``fix python/invoke N end_of_step iondiff_frame`` on every rank: store the current frame.

    Every rank takes part in the gathers (collective) even after the hook failed on rank 0, so a
    failure never hangs a parallel run. A failure stops LAMMPS with an error (see the module's notes)
    unless ``IONDIFF_ON_ERROR`` is ``continue``; the frames stored so far are kept either way.

    SIGINT (Ctrl-C) and SIGTERM: the hook's handlers (installed at its first call) note the signal; at the
    hook's next call the store is closed (every frame so far written, its last segment marked
    interrupted) and LAMMPS stops with an error (non-zero exit status).
    """
    if "signals" not in _STATE:
        _STATE["signals"] = _catch_signals()
    stop = _STATE.get("stop")
    if stop is not None:
        sink = _STATE.get("sink")
        _STATE["sink"], _STATE["failed"] = None, True
        frames = sink.close(interrupted=stop).get("frames", 0) if sink is not None else 0
        store = _STATE["lmp"].string_variable("IONDIFF_STORE") if _STATE.get("lmp") else None
        raise RuntimeError(f"iondiff_stream hook: interrupted ({stop}); the store {store or 'run.zarr'} is "
                           f"closed with {frames} frames, its last segment marked interrupted") from None
    _frame(lmpptr)


def _catch_signals() -> bool:
    """SIGINT/SIGTERM handlers that only note the signal (acted on at the hook's next call); False if not possible.

    Python runs a handler when it next executes Python code: in ``lmp`` that is the hook's next call, so
    the default SIGINT handler would raise ``KeyboardInterrupt`` on the hook's first line, before the
    store could be closed, and SIGTERM would kill ``lmp`` with the frames since the last flush.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return False

    def note(signum: int, frame: Any) -> None:
        if _STATE.get("stop") is None:
            _STATE["stop"] = signal.Signals(signum).name

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, note)
    return True


def _frame(lmpptr: Any) -> None:
    """The work of :func:`iondiff_frame`."""
    lmp = _STATE.get("lmp")
    if lmp is None:
        lmp = _STATE["lmp"] = CLammps(lmpptr)
        _STATE["rank"] = lmp.setting("world_rank")
        _STATE["nprocs"] = lmp.setting("world_size")
        _STATE["continue"] = (lmp.string_variable("IONDIFF_ON_ERROR") or "stop").lower() == "continue"
        refusal = _refusal(lmp)  # decided alike on every rank: all stop together
        if refusal is not None:
            _STATE["failed"] = True
            if not _STATE["continue"]:
                raise RuntimeError(refusal)
            if _STATE["rank"] == 0:
                _report(f"{refusal} -- running on without storing (IONDIFF_ON_ERROR continue)")
    ids = lmp.gather("id", True, 1).astype(np.int64)
    x = lmp.gather("x", False, 3)
    img = lmp.gather("image", True, 3).astype(np.int64)
    types = lmp.gather("type", True, 1).astype(np.int64) if "types_done" not in _STATE else None
    _STATE["types_done"] = True
    if _STATE["rank"] != 0 or _STATE.get("failed"):
        return
    try:
        _store(lmp, ids, x, img, types)
    except BaseException as exc:  # noqa: BLE001 - turned into one LAMMPS error (or a message) below
        _STATE["failed"] = True
        store = lmp.string_variable("IONDIFF_STORE") or "run.zarr"
        closing = ""
        try:
            _close()  # keep every frame received so far (LAMMPS's error exit skips Python's own shutdown)
        except BaseException as exc2:  # noqa: BLE001
            closing = f"; closing the store failed too: {exc2}"
        msg = (f"iondiff_stream hook cannot store frames in {store}: {type(exc).__name__}: {exc}{closing} "
               "(frames stored so far are kept)")
        if _STATE["continue"] or _STATE.get("nprocs", 1) > 1:
            _report(msg + (" -- running on without storing" if _STATE["continue"] else
                           " -- running on without storing (an error on rank 0 alone would hang the other ranks)"))
            return
        raise RuntimeError(msg + "; set variable IONDIFF_ON_ERROR string continue to run on without storing") \
            from None


def _report(msg: str) -> None:
    """One line on stderr (Python's last-resort log handler inside ``lmp``, or the embedding program's logging)."""
    logger.error("%s", msg)


def _refusal(lmp: CLammps) -> str | None:
    """Why the store cannot be written as the variables say (the same answer on every rank), or None."""
    import os

    store = lmp.string_variable("IONDIFF_STORE") or "run.zarr"
    mode = (lmp.string_variable("IONDIFF_MODE") or "new").lower()
    if mode not in ("new", "append", "overwrite"):
        return (f"iondiff_stream hook: IONDIFF_MODE must be new, append or overwrite, got {mode!r} "
                f"(store {store})")
    if mode == "new" and os.path.exists(os.path.join(store, "zarr.json")):
        from iondiff_stream.io.store import Commit

        try:
            held = Commit.read(store).n_frames
        except Exception:  # noqa: BLE001 - a damaged record: the writer reports it
            return None
        if held:
            return (f"iondiff_stream hook: the store {store} already holds {held} frames from an earlier run; "
                    "in the input script set variable IONDIFF_MODE string append (add this run as a new "
                    "segment) or variable IONDIFF_MODE string overwrite (replace the store), or "
                    "variable IONDIFF_ON_ERROR string continue to run without storing")
    return None


def _store(lmp: CLammps, ids: np.ndarray, x: np.ndarray, img: np.ndarray, types: np.ndarray | None) -> None:
    """Rank 0: open the store at the first frame, then push every frame."""
    from iondiff_stream.core.elements import elements_from_masses
    from iondiff_stream.io.sink import FrameSink

    step = lmp.global_bigint("ntimestep")
    first = step - int(lmp.thermo("elapsed"))
    new_run = first != _STATE.get("run_first")
    _STATE["run_first"] = first
    if "sink" not in _STATE:
        assert types is not None
        elements = {t + 1: e for t, e in enumerate(elements_from_masses(lmp.masses())) if e}
        mode = (lmp.string_variable("IONDIFF_MODE") or "new").lower()
        mobile = lmp.string_variable("IONDIFF_MOBILE")
        if not mobile:
            raise RuntimeError("define the LAMMPS variable IONDIFF_MOBILE (element or 'type N') for the hook")
        cap = lmp.string_variable("IONDIFF_CAPACITY")
        order = np.argsort(ids)
        _STATE["sink"] = None
        _STATE["sink"] = FrameSink(
            lmp.string_variable("IONDIFF_STORE") or "run.zarr", ids[order], types[order], mobile, elements,
            units=lmp.global_string("units"), capacity=int(cap) if cap else None, worker="inline",
            mode="w" if mode != "append" else "a", overwrite=mode == "overwrite",
            metadata={"source": "fix python/invoke", "lammps_version": lmp.version(), "natoms": len(ids)},
        )
        devi = lmp.string_variable("IONDIFF_MODEL_DEVI")
        if devi:  # DeePMD's model_devi.out, beside the frames (rank 0 reads it: LAMMPS writes it there)
            from iondiff_stream.io.model_deviation import ModelDeviationFollower

            _STATE["devi"] = ModelDeviationFollower(
                devi, lmp.string_variable("IONDIFF_STORE") or "run.zarr", _STATE["sink"].ion_ids,
                mode="a" if mode == "append" else "w", meta={"source": "fix python/invoke"})
        _at_exit(_close)
    sink = _STATE["sink"]
    if sink is None:
        return
    if new_run and sink.n_pushed:
        sink.flush()
    t = lmp.global_double("atime") + (step - lmp.global_bigint("atimestep")) * lmp.global_double("dt")
    sink.push(step, t, x, lmp.box(), images=img, ids=ids, new_run=new_run)
    devi = _STATE.get("devi")
    if devi is not None:
        devi.poll()


def snippet(mobile: str, every: int, store: str, mode: str = "new", capacity: int | None = None,
            fix_id: str = "iondiff", model_devi: str | None = None) -> str:
    """Input-script lines that make a LAMMPS binary with the PYTHON package fill ``store``.

    The lines put this interpreter's site-packages and the package's own directory on the
    embedded Python's ``sys.path`` (LAMMPS's Python must be the same minor version as this one),
    set the hook's variables and add ``fix ID all python/invoke EVERY end_of_step iondiff_frame``.
    Paste them after the atoms exist and before the first ``run``.

    Parameters
    ----------
    mobile : str
        Element symbol(s) or ``"type N"``.
    every : int
        Steps between stored frames (>= 1).
    store : str
        Store path (relative paths are relative to where ``lmp`` runs).
    mode : {"new", "append", "overwrite"}
    capacity : int, optional
        Ring size in frames.
    fix_id : str
    model_devi : str, optional
        DeePMD's model deviation file (``pair_style deepmd m0.pb m1.pb ... out_file PATH``, default name
        ``model_devi.out``; relative to where ``lmp`` runs): followed at every stored frame and kept in
        ``STORE/model_devi/`` (:class:`iondiff_stream.io.model_deviation.ModelDeviationFollower`).

    Returns
    -------
    str
    """
    import os
    import sys
    import sysconfig

    import iondiff_stream

    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    if mode not in ("new", "append", "overwrite"):
        raise ValueError(f"mode must be new, append or overwrite, got {mode!r}")
    if capacity is not None and capacity < 1:
        raise ValueError(f"--capacity must be a positive number of frames, got {capacity}")
    for name, v in (("--mobile", mobile), ("--store", store), ("--model-devi", model_devi or "")):
        if '"' in v or "\n" in v:
            raise ValueError(f"{name} must not contain double quotes or newlines: {v!r}")
    paths: list[str] = []
    for p in (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
              os.path.dirname(os.path.dirname(os.path.abspath(iondiff_stream.__file__)))):
        if p not in paths:
            paths.append(p)
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    lines = [
        f"# --- iondiff_stream live hook (iondiff-stream snippet); LAMMPS with the PYTHON package, Python {ver} ---",
        f'variable        IONDIFF_STORE  string "{store}"',
        f'variable        IONDIFF_MOBILE string "{mobile}"',
        f"variable        IONDIFF_MODE   string {mode}",
        "# variable      IONDIFF_ON_ERROR string continue   # run on without storing if the store cannot be written",
    ]
    if capacity is not None:
        lines.append(f"variable        IONDIFF_CAPACITY string {int(capacity)}")
    if model_devi:
        lines.append(f'variable        IONDIFF_MODEL_DEVI string "{model_devi}"   # DeePMD model deviation (out_file)')
    lines += [
        'python          iondiff_frame here """',
        "import sys",
        f"sys.path[:0] = [p for p in {paths!r} if p not in sys.path]",
        "from lammps_hooks.fix_python_invoke import iondiff_frame",
        '"""',
        f"fix             {fix_id} all python/invoke {int(every)} end_of_step iondiff_frame",
        "# --- end of iondiff_stream hook ---",
    ]
    return "\n".join(lines) + "\n"


def check_lmp(lmp: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
    """Which ``lmp`` the pasted snippet will meet, and whether it can run it.

    Parameters
    ----------
    lmp : str, optional
        The binary (default: the first ``lmp`` on PATH — with this package's venv active, that is the PyPI
        wheel's, which has no PYTHON package).
    timeout : float
        Seconds allowed for ``lmp -h``.

    Returns
    -------
    dict
        ``path`` (None when there is none), ``version`` (the date line of ``lmp -h``), ``python`` (the
        PYTHON package is installed: ``fix python/invoke`` works), ``imd_v3`` (LAMMPS of 2024 or later:
        ``fix imd ... version 3``), ``message`` (one line for the user).
    """
    import re
    import shutil
    import subprocess

    path = lmp if lmp and os.path.sep in lmp else shutil.which(lmp or "lmp")
    if path is None:
        return {"path": None, "version": None, "python": False, "imd_v3": False,
                "message": "no 'lmp' on PATH: install one with the PYTHON package (Debian: apt-get install lammps), "
                           "or use 'iondiff-stream run' (the PyPI wheel, fix external)"}
    try:
        out = subprocess.run([path, "-h"], capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return {"path": path, "version": None, "python": False, "imd_v3": False,
                "message": f"{path}: could not run 'lmp -h' ({exc})"}
    m = re.search(r"Large-scale Atomic/Molecular Massively Parallel Simulator - (.+)", out)
    version = m.group(1).strip() if m else None
    pk = out.split("Installed packages:", 1)[1].split("\n\n", 2) if "Installed packages:" in out else ["", ""]
    packages = set((pk[1] if len(pk) > 1 else pk[0]).split())
    python = "PYTHON" in packages
    year = re.search(r"(19|20)\d\d", version or "")
    imd_v3 = bool(year) and int(year.group(0)) >= 2024
    msg = (f"{path} ({version or 'unknown version'}): "
           + ("has the PYTHON package: the snippet works" if python else
              "has NO PYTHON package: the snippet fails there ('LAMMPS is not built with Python embedded'); use "
              "Debian's lmp (apt-get install lammps; /usr/bin/lmp, ahead of this venv on PATH) or "
              "'iondiff-stream run' (fix external)")
           + ("" if imd_v3 else "; no 'fix imd ... version 3' (LAMMPS before 2024): 'iondiff-stream listen' needs a newer lmp"))
    return {"path": path, "version": version, "python": python, "imd_v3": imd_v3, "message": msg}
