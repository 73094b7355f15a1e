"""CPU the streaming hook costs a LAMMPS run: process CPU time (all threads, child processes), hooked vs plain.

On a node whose cores all run MPI ranks the hook costs what it burns in CPU, not what a spare core hides;
CPU time is also steadier than wall time on a shared machine. Method:

* in-process, slices (default, ``--slices 16``): every pair is two fresh LAMMPS instances of the CaF2 example in
  this process, one plain and one hooked, that run ``--steps`` steps each as ``--slices`` ``run`` commands taken in
  turns (which goes first alternates from pair to pair); the CPU time of every slice is added to its instance's
  total, the hooked one's from before attach to after close. The host's speed drifts by several per cent in
  waves of 5-10 s (1000-step slices of one plain run: +-5 %), so whole runs one after the other (below) differ by
  +-3 % when nothing differs; slices in turns see the same waves (pairs then agree within ~0.3 %). Every slice
  is a LAMMPS ``run``, a segment of the store: more work for the hook than one long run.
* in-process, whole runs (``--slices 1``): the CaF2 example (``examples/caf2/in.caf2``, 321 atoms, 214 F stored) run for
  ``--steps`` steps on a fresh LAMMPS instance, plain and hooked, in alternating pairs (the order flips every
  pair) in this one process. The time counted is ``time.process_time()`` (user + system CPU of every thread
  of the process) plus the CPU of waited-for child processes (``RUSAGE_CHILDREN``, the ``worker="process"``
  sink), from just before the hook is attached (the store created) to after it is closed (the worker
  drained, the last chunk written): the store's whole life is inside the timing. Each instance first runs
  200 untimed steps (neighbour lists, PPPM), then Python's garbage is collected (untimed), so no run pays for
  the garbage of the one before. Extra CPU = hooked / plain - 1, per pair; the median over the
  pairs is printed for ``every`` = 10 and 1 (targets: <= 2 % and <= 5 %). The one-off cost of the first
  attach in a process (importing zarr, numpy's and the package's modules) is measured before the pairs
  and printed separately.
* ``--mpi``: ``mpirun -np 2`` of the same input (frames gathered to rank 0 with mpi4py); by default one mpirun per
  pair with a plain and a hooked instance on both ranks taking slices in turns, the wall of every slice on rank 0
  between barriers (target: <= 3 %). ``--mpi --slices 1``: plain and hooked mpiruns in alternating pairs; the wall time of attach + ``run`` + close on rank 0 between barriers (target: <= 3 %),
  and the CPU of all ranks (``RUSAGE_CHILDREN`` of the mpirun process tree). Each mpirun is a new process:
  the one-off import of the store's writer (zarr, ~0.1 s) is done before the timing and printed apart, as
  the in-process case does with its first attach.

The machine's load average is printed beside every case: on a shared machine the numbers move with it.
No number here is asserted by a test.

Run: ``python benchmarks/hook_cpu.py [--steps 8000] [--pairs 3] [--every 10 1] [--slices 16] [--python] [--mpi]``
(``--python``: the Python-only callback, ``fast=False``, measured in the same pairs)
(the wheel's MPI needs ``LD_LIBRARY_PATH=$VENV/lib``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CAF2 = os.path.join(ROOT, "examples", "caf2", "in.caf2")
sys.path.insert(0, ROOT)


def _load() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def one(steps: int, every: int | None, store: str | None, worker: str = "inline",
        chunk_frames: int | None = None, store_framework: bool = True,
        fast: bool = True) -> tuple[float, float, int, float]:
    """CPU seconds (process + children) and wall seconds of attach + ``run steps`` + close; frames stored;
    CPU seconds of the attach alone (store creation: one-off per run, whatever its length)."""
    from lammps_hooks import attach, load_lammps

    lmp = load_lammps(["-log", "none", "-screen", "none", "-var", "nsteps", "0", "-var", "T", "1500"])
    lmp.file(CAF2)
    lmp.command("run 200")  # untimed warm-up: neighbour lists, PPPM
    gc.collect()  # no garbage of the run before collected inside this one
    c0, k0, w0 = time.process_time(), _children_cpu(), time.perf_counter()
    hook = None
    if every is not None and store is not None:
        hook = attach(lmp, mobile="F", every=every, store=store, chunk_frames=chunk_frames, worker=worker,
                      store_framework=store_framework, fast=fast)
    c_attach = time.process_time() - c0
    lmp.command(f"run {steps}")
    frames = 0
    if hook is not None:
        frames = hook.close()["frames"]  # inside the timing: drain the worker, write the last chunk
    cpu = time.process_time() - c0 + _children_cpu() - k0
    wall = time.perf_counter() - w0
    lmp.close()
    return cpu, wall, frames, c_attach


def _first_attach(tmp: str) -> None:
    """The one-off cost of the first attach in a process (imports of zarr, numpy's and the package's modules),
    measured and printed apart, before any pair."""
    from lammps_hooks import load_lammps

    lmp = load_lammps(["-log", "none", "-screen", "none", "-var", "nsteps", "0", "-var", "T", "1500"])
    lmp.file(CAF2)
    c0, w0 = time.process_time(), time.perf_counter()
    from lammps_hooks import attach

    hook = attach(lmp, mobile="F", every=10, store=os.path.join(tmp, "first.zarr"))
    lmp.command("run 100")
    hook.close()
    print(f"one-off, first attach + close in a process (imports, store creation): {time.process_time() - c0:.3f} s CPU, "
          f"{time.perf_counter() - w0:.3f} s wall")
    lmp.close()


def interleaved(steps: int, slices: int, every: int | None, store: str, worker: str = "inline",
                chunk_frames: int | None = None, store_framework: bool = True, fast: bool = True,
                first: str = "plain") -> tuple[float, float, int, float]:
    """One pair run side by side: two fresh LAMMPS instances in this process, plain and hooked, each running
    ``steps`` steps as ``slices`` ``run`` commands taken in turns (plain, hooked, hooked, plain, ...: the one that
    goes first alternates), the CPU time of every slice added to its instance's total.

    The host's speed drifts by several per cent over seconds (the CPU time of 1000-step slices of one plain run
    moves by +-5 % in waves of 5-10 s); whole runs one after the other each see another part of a wave. Slices
    in turns see the same waves. The hooked instance's total counts its attach (store created) with its first
    slice and its close (last chunk written) with its last, so the store's whole life is inside it; each slice is
    a ``run`` command, so the store holds ``slices`` segments (LAMMPS runs), which costs the hook more than one
    long run. ``every=None``: no hook on either (the method's null result). Returns (plain CPU s, hooked CPU s,
    frames stored, attach CPU s).
    """
    from lammps_hooks import attach, load_lammps

    _inside.clear()
    args = ["-log", "none", "-screen", "none", "-var", "nsteps", "0", "-var", "T", "1500"]
    lmps = {}
    # created in the order they first run (it alternates with the pair): under MPI the instance created second
    # ran ~1 % slower with nothing different (null pairs: +0.4 ... +1.6 % created second, -0.2 ... -2.3 % first)
    for kind in ((first, "hooked") if first == "plain" else (first, "plain")):
        lmps[kind] = load_lammps(args)
        lmps[kind].file(CAF2)
        lmps[kind].command("run 200")  # untimed warm-up: neighbour lists, PPPM
    cpu = {"plain": 0.0, "hooked": 0.0}
    hook, c_attach, frames = None, 0.0, 0
    per = steps // slices
    order = [first, "hooked" if first == "plain" else "plain"]
    for i in range(slices):
        for kind in (order if i % 2 == 0 else order[::-1]):
            gc.collect()  # untimed: no slice pays for the garbage of the one before
            c0, k0 = time.process_time(), _children_cpu()
            if kind == "hooked" and hook is None and every is not None:
                hook = attach(lmps[kind], mobile="F", every=every, store=store, chunk_frames=chunk_frames,
                              worker=worker, store_framework=store_framework, fast=fast)
                c_attach = time.process_time() - c0
            # `pre no` after an instance's first slice: no re-setup of what did not change (its own atoms, fix list)
            lmps[kind].command(f"run {per if i < slices - 1 else steps - per * (slices - 1)} "
                               f"pre {'yes' if i == 0 else 'no'} post no")
            if kind == "hooked" and i == slices - 1 and hook is not None:
                c1 = time.process_time()
                frames = hook.close()["frames"]
                _inside["close"] = time.process_time() - c1
            cpu[kind] += time.process_time() - c0 + _children_cpu() - k0
    _inside["attach"] = c_attach
    for lmp in lmps.values():
        lmp.close()
    return cpu["plain"], cpu["hooked"], frames, c_attach


#: CPU seconds of the hook's own Python in the last pair's hooked instance: the Python callback (every frame the
#: C callback passes on, with the blocks it hands to the sink and the store's writes), attach and close
_inside: dict[str, float] = {}


def _time_python_callback() -> None:
    """Wrap :meth:`Hook.raw_callback` (before any attach takes it) to add its CPU time to ``_inside``: the hook's
    own cost counted inside the hooked instance, which the host's drift does not blur as it blurs the
    difference of two instances (the per-frame copy of the C callback is not in it)."""
    from lammps_hooks.fix_external import Hook

    if getattr(Hook.raw_callback, "_timed", False):
        return
    inner = Hook.raw_callback

    def timed(self, *args):  # noqa: ANN001, ANN202 - the callback's own signature
        c0 = time.process_time()
        try:
            return inner(self, *args)
        finally:
            _inside["callback"] = _inside.get("callback", 0.0) + time.process_time() - c0

    timed._timed = True  # type: ignore[attr-defined]
    Hook.raw_callback = timed


def in_process_interleaved(a: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp()
    print(f"CaF2 example (321 atoms, 214 F stored), {a.steps} steps per run in {a.slices} slices taken in turns by a "
          f"plain and a hooked LAMMPS instance (fresh per pair) in one process, {a.pairs} pairs (the instance that "
          f"goes first alternates), worker={a.worker}; CPU = process_time (all threads) + child processes per slice, "
          "the hooked total from before attach to after close")
    print(f"machine: {os.cpu_count()} cores; load average (1/5/15 min) at start: {_load()}")
    _first_attach(tmp)
    from lammps_hooks.fix_external import _c_callback

    print(f"the C per-step copy (lammps_hooks._stage): {'built, used' if _c_callback() is not None else 'NOT built'}"
          + ("; the Python-only hook (fast=False) measured in pairs of its own, taken in turns with them" if a.python
             else ""))
    _time_python_callback()
    if a.null:  # both instances plain: what the method reports when nothing differs
        x = []
        for p in range(a.pairs):
            cp, ch, _, _ = interleaved(a.steps, a.slices, None, "", first="plain" if p % 2 == 0 else "hooked")
            x.append(100 * (ch / cp - 1))
        print(f"  null (both instances plain): {np.median(x):+.2f} % median; pairs " + ", ".join(f"{v:+.2f}" for v in x)
              + f" %; load {_load()}")
    for every in a.every:
        rows: dict[str, list[float]] = {"hooked": [], "python": []}
        attach_s: list[float] = []
        inside: list[float] = []
        inside_parts: list[dict[str, float]] = []
        load0 = _load()
        for p in range(a.pairs):
            for kind in (("hooked", "python") if a.python else ("hooked",)):
                store = os.path.join(tmp, f"i{every}_{p}_{kind}.zarr")
                cp, ch, n, ca = interleaved(a.steps, a.slices, every, store, a.worker, a.chunk_frames,
                                            not a.no_framework, fast=kind == "hooked",
                                            first="plain" if p % 2 == 0 else "hooked")
                # each slice is a run: its first frame repeats the last one stored, and is skipped
                assert n == a.steps // every + 1, n
                rows[kind].append(100 * (ch / cp - 1))
                if kind == "hooked":
                    attach_s.append(ca)
                    inside.append(100 * sum(_inside.values()) / cp)
                    inside_parts.append(dict(_inside))
                shutil.rmtree(store, ignore_errors=True)
        target = {10: " (target <= 2 %)", 1: " (target <= 5 %)"}.get(every, "")
        x = rows["hooked"]
        print(f"  every={every:3d} ({a.steps // every + 1} frames): extra CPU {np.median(x):+.2f} % median{target}; "
              "pairs " + ", ".join(f"{v:+.2f}" for v in x) + f" %; attach ~{1e3 * np.median(attach_s):.0f} ms CPU")
        parts = {k: 1e3 * float(np.median([d.get(k, 0.0) for d in inside_parts])) for k in ("callback", "attach", "close")}
        print(f"      inside the hooked instance, the hook's Python (callbacks {parts['callback']:.0f} ms, attach "
              f"{parts['attach']:.0f} ms, close {parts['close']:.0f} ms; medians): {np.median(inside):.2f} % of the "
              "plain instance's CPU; pairs " + ", ".join(f"{v:.2f}" for v in inside) + " % (the C callback's "
              "per-frame copy not counted)")
        if rows["python"]:
            print(f"      Python-only hook (fast=False): extra CPU {np.median(rows['python']):+.2f} % median; pairs "
                  + ", ".join(f"{v:+.2f}" for v in rows["python"]) + " %")
        print(f"      load average (1/5/15 min): {load0} before, {_load()} after")
    shutil.rmtree(tmp, ignore_errors=True)


def in_process(a: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp()
    print(f"CaF2 example (321 atoms, 214 F stored), {a.steps} steps per run, fresh LAMMPS instance per run, "
          f"{a.pairs} alternating plain/hooked pairs in one process, worker={a.worker}, "
          f"chunk_frames={a.chunk_frames or 'the hook default'}; "
          "CPU = process_time (all threads) + child processes, from before attach to after close")
    print(f"machine: {os.cpu_count()} cores; load average (1/5/15 min) at start: {_load()}")
    _first_attach(tmp)
    one(200, a.every[0], os.path.join(tmp, "warm.zarr"), a.worker, a.chunk_frames)
    from lammps_hooks.fix_external import _c_callback

    c_built = _c_callback() is not None
    print(f"the C per-step copy (lammps_hooks._stage): {'built, used' if c_built else 'NOT built: Python copies'}"
          + ("; the Python-only callback (fast=False) measured beside it" if a.python else ""))
    for every in a.every:
        extra, extra_wall, plain_cpu, hooked_cpu, extra_run, extra_py = [], [], [], [], [], []
        load0 = _load()
        for p in range(a.pairs):
            store = os.path.join(tmp, f"e{every}_{p}.zarr")
            runs = {}
            kinds = ("plain", "hooked") + (("python",) if a.python else ())
            for kind in (kinds if p % 2 == 0 else kinds[::-1]):
                hooked = kind != "plain"
                runs[kind] = one(a.steps, every if hooked else None, store if hooked else None,
                                 a.worker, a.chunk_frames, not a.no_framework, fast=kind == "hooked")
                shutil.rmtree(store, ignore_errors=True)
            (cp, wp, _, _), (ch, wh, n, ca) = runs["plain"], runs["hooked"]
            if a.python:
                extra_py.append(100 * (runs["python"][0] / cp - 1))
            assert n == a.steps // every + 1, n
            plain_cpu.append(cp)
            hooked_cpu.append(ch)
            extra.append(100 * (ch / cp - 1))
            extra_run.append(100 * ((ch - ca) / cp - 1))
            extra_wall.append(100 * (wh / wp - 1))
            shutil.rmtree(store, ignore_errors=True)
        target = {10: " (target <= 2 %)", 1: " (target <= 5 %)"}.get(every, "")
        print(f"  every={every:3d} ({a.steps // every + 1} frames): extra CPU {np.median(extra):+.2f} % median{target}; "
              f"pairs " + ", ".join(f"{x:+.2f}" for x in extra) + " %")
        print(f"      without the one-off attach (store creation, ~{1e3 * ca:.0f} ms CPU): {np.median(extra_run):+.2f} % "
              f"median; pairs " + ", ".join(f"{x:+.2f}" for x in extra_run) + " %")
        print(f"      CPU plain {np.median(plain_cpu):.2f} s, hooked {np.median(hooked_cpu):.2f} s (medians); "
              f"extra CPU per stored frame {1e6 * (np.median(hooked_cpu) - np.median(plain_cpu)) / (a.steps // every + 1):.0f} µs; "
              f"wall extra (noisier) {np.median(extra_wall):+.1f} % median, pairs "
              + ", ".join(f"{x:+.1f}" for x in extra_wall) + " %")
        if extra_py:
            print(f"      Python-only callback (fast=False), same pairs: extra CPU {np.median(extra_py):+.2f} % median; "
                  "pairs " + ", ".join(f"{x:+.2f}" for x in extra_py) + " %")
        print(f"      load average (1/5/15 min): {load0} before, {_load()} after")
    shutil.rmtree(tmp, ignore_errors=True)


MPI_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from mpi4py import MPI
    sys.path.insert(0, sys.argv[5])
    from lammps_hooks import attach, load_lammps
    comm = MPI.COMM_WORLD
    caf2, steps, every, store = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    lmp = load_lammps(["-log", "none", "-screen", "none", "-var", "nsteps", "0", "-var", "T", "1500"], comm=comm)
    lmp.file(caf2)
    lmp.command("run 200")
    i0 = time.perf_counter()
    if every > 0:  # the one-off imports of the store's writer (zarr), timed apart as in the in-process case
        import zarr  # noqa: F401
    w_import = comm.gather(time.perf_counter() - i0, root=0)
    comm.Barrier()
    c0, w0 = time.process_time(), time.perf_counter()
    hook = attach(lmp, mobile="F", every=every, store=store, comm=comm, worker=sys.argv[6]) if every > 0 else None
    comm.Barrier()
    w_attach = time.perf_counter() - w0
    lmp.command(f"run {steps}")
    if hook is not None:
        hook.close()
    comm.Barrier()
    wall, cpu = time.perf_counter() - w0, comm.gather(time.process_time() - c0, root=0)
    lmp.close()
    if comm.Get_rank() == 0:
        print(json.dumps({"wall": wall, "cpu": sum(cpu), "attach": w_attach, "import": max(w_import)}))
""")


MPI_SLICES_SCRIPT = textwrap.dedent("""
    import gc, json, sys, time
    from mpi4py import MPI
    sys.path.insert(0, sys.argv[5])
    from lammps_hooks import attach, load_lammps
    comm = MPI.COMM_WORLD
    caf2, steps, every, store, slices, first = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4],
                                                int(sys.argv[7]), sys.argv[8])
    args = ["-log", "none", "-screen", "none", "-var", "nsteps", "0", "-var", "T", "1500"]
    lmps = {}
    for kind in ((first, "hooked") if first == "plain" else (first, "plain")):  # created in the order they first run
        lmps[kind] = load_lammps(args, comm=comm)
        lmps[kind].file(caf2)
        lmps[kind].command("run 200")
    import zarr  # noqa: F401  the one-off import of the store's writer, before the timing
    wall, cpu, hook, w_attach = {"plain": 0.0, "hooked": 0.0}, {"plain": 0.0, "hooked": 0.0}, None, 0.0
    per = steps // slices
    order = [first, "hooked" if first == "plain" else "plain"]
    for i in range(slices):
        for kind in (order if i % 2 == 0 else order[::-1]):
            gc.collect()
            comm.Barrier()
            c0, w0 = time.process_time(), time.perf_counter()
            if kind == "hooked" and hook is None and every > 0:
                hook = attach(lmps[kind], mobile="F", every=every, store=store, comm=comm, worker=sys.argv[6])
                comm.Barrier()
                w_attach = time.perf_counter() - w0
            lmps[kind].command(f"run {per if i < slices - 1 else steps - per * (slices - 1)} "
                               f"pre {'yes' if i == 0 else 'no'} post no")
            if kind == "hooked" and i == slices - 1 and hook is not None:
                hook.close()
            comm.Barrier()
            wall[kind] += time.perf_counter() - w0
            cpu[kind] += time.process_time() - c0
    cpus = {k: comm.gather(v, root=0) for k, v in cpu.items()}
    for lmp in lmps.values():
        lmp.close()
    if comm.Get_rank() == 0:
        print(json.dumps({"wall": wall, "cpu": {k: sum(v) for k, v in cpus.items()}, "attach": w_attach}))
""")


def _mpirun_setup(script_text: str, name: str) -> tuple[str, str, str, dict[str, str]]:
    """The wheel's mpirun (else the one on PATH), a temporary directory holding ``script_text`` as ``name``,
    and the environment its MPI library needs."""
    mpirun = os.path.join(os.path.dirname(sys.executable), "mpirun")
    if not os.path.exists(mpirun):
        mpirun = shutil.which("mpirun") or "mpirun"
    tmp = tempfile.mkdtemp()
    script = os.path.join(tmp, name)
    with open(script, "w") as fh:
        fh.write(script_text)
    return mpirun, tmp, script, dict(os.environ, LD_LIBRARY_PATH=os.path.join(sys.prefix, "lib"))


def with_mpirun_interleaved(a: argparse.Namespace) -> None:
    mpirun, tmp, script, env = _mpirun_setup(MPI_SLICES_SCRIPT, "mpi_slices.py")
    every = a.every[0]
    print(f"mpirun -np 2, CaF2 example, {a.mpi_steps} steps, every={every}, frames gathered to rank 0 (mpi4py), "
          f"worker={a.worker}; {a.pairs} pairs, each one mpirun with a plain and a hooked LAMMPS instance on both "
          f"ranks taking {a.slices} slices in turns (the one that goes first alternates); wall of every slice on "
          "rank 0 between barriers, the hooked total from before attach to after close")
    print(f"machine: {os.cpu_count()} cores; load average (1/5/15 min) at start: {_load()}")
    def launch(p: int, every: int) -> dict:
        store = os.path.join(tmp, f"mpi{p}.zarr")
        r = subprocess.run([mpirun, "-np", "2", sys.executable, script, CAF2, str(a.mpi_steps), str(every), store,
                            ROOT, a.worker, str(a.slices), "plain" if p % 2 == 0 else "hooked"],
                           capture_output=True, text=True, env=env, timeout=3600)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-2000:])
        shutil.rmtree(store, ignore_errors=True)
        return json.loads(r.stdout.strip().splitlines()[-1])

    if a.null:  # both instances plain: what the method reports when nothing differs
        x = [100 * (o["wall"]["hooked"] / o["wall"]["plain"] - 1) for o in (launch(p, 0) for p in range(a.pairs))]
        print(f"  null (both instances plain): {np.median(x):+.2f} % median; pairs " + ", ".join(f"{v:+.2f}" for v in x)
              + f" %; load {_load()}")
    walls, cpus = [], []
    for p in range(a.pairs):
        out = launch(p, every)
        walls.append(100 * (out["wall"]["hooked"] / out["wall"]["plain"] - 1))
        cpus.append(100 * (out["cpu"]["hooked"] / out["cpu"]["plain"] - 1))
        print(f"  pair {p + 1}: plain {out['wall']['plain']:.2f} s, hooked {out['wall']['hooked']:.2f} s wall "
              f"(attach {out['attach']:.3f} s); load {_load()}")
    print(f"  wall overhead {np.median(walls):+.2f} % median (target <= 3 %); pairs "
          + ", ".join(f"{x:+.2f}" for x in walls) + " %")
    print(f"  CPU of both ranks {np.median(cpus):+.2f} % median, pairs " + ", ".join(f"{x:+.2f}" for x in cpus) + " %")
    print(f"  load average (1/5/15 min) at the end: {_load()}")
    shutil.rmtree(tmp, ignore_errors=True)


def with_mpirun(a: argparse.Namespace) -> None:
    mpirun, tmp, script, env = _mpirun_setup(MPI_SCRIPT, "mpi_run.py")
    every = a.every[0]
    print(f"mpirun -np 2, CaF2 example, {a.mpi_steps} steps, every={every}, frames gathered to rank 0 (mpi4py), "
          f"worker={a.worker}; "
          f"{a.pairs} alternating plain/hooked pairs; wall of attach + run + close on rank 0 between barriers")
    print(f"machine: {os.cpu_count()} cores; load average (1/5/15 min) at start: {_load()}")

    def launch(hooked: bool, k: int) -> dict:
        store = os.path.join(tmp, f"mpi{k}.zarr")
        k0 = _children_cpu()
        r = subprocess.run([mpirun, "-np", "2", sys.executable, script, CAF2, str(a.mpi_steps),
                            str(every if hooked else 0), store, ROOT, a.worker], capture_output=True, text=True,
                           env=env,
                           timeout=3600)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-2000:])
        out = json.loads(r.stdout.strip().splitlines()[-1])
        out["tree_cpu"] = _children_cpu() - k0
        shutil.rmtree(store, ignore_errors=True)
        return out

    walls, cpus, trees, runs_only = [], [], [], []
    for p in range(a.pairs):
        res = {}
        for kind in (("plain", "hooked") if p % 2 == 0 else ("hooked", "plain")):
            res[kind] = launch(kind == "hooked", p)
        walls.append(100 * (res["hooked"]["wall"] / res["plain"]["wall"] - 1))
        runs_only.append(100 * ((res["hooked"]["wall"] - res["hooked"]["attach"])
                                / (res["plain"]["wall"] - res["plain"]["attach"]) - 1))
        cpus.append(100 * (res["hooked"]["cpu"] / res["plain"]["cpu"] - 1))
        trees.append(100 * (res["hooked"]["tree_cpu"] / res["plain"]["tree_cpu"] - 1))
        print(f"  pair {p + 1}: plain {res['plain']['wall']:.2f} s, hooked {res['hooked']['wall']:.2f} s wall "
              f"(attach {res['hooked']['attach']:.3f} s; one-off import of zarr before it {res['hooked']['import']:.3f} s); "
              f"load {_load()}")
    print(f"  wall overhead {np.median(walls):+.2f} % median (target <= 3 %); pairs "
          + ", ".join(f"{x:+.2f}" for x in walls) + " %")
    print(f"  without the one-off attach (store creation, gathers of ids and types): {np.median(runs_only):+.2f} % "
          "median; pairs " + ", ".join(f"{x:+.2f}" for x in runs_only) + " %")
    print(f"  CPU of both ranks (attach..close) {np.median(cpus):+.2f} % median, pairs "
          + ", ".join(f"{x:+.2f}" for x in cpus) + " %; whole mpirun process tree (incl. start-up, imports) "
          f"{np.median(trees):+.2f} % median")
    print(f"  load average (1/5/15 min) at the end: {_load()}")
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--every", type=int, nargs="+", default=[10, 1])
    ap.add_argument("--worker", default="inline", choices=["inline", "thread", "process"],
                    help="the sink's worker (default: inline, the hook's default)")
    ap.add_argument("--chunk-frames", type=int, default=None, help="default: the hook's (100, or 1000 steps' worth)")
    ap.add_argument("--no-framework", action="store_true", help="store the mobile ions only (no framework positions)")
    ap.add_argument("--python", action="store_true",
                    help="also run the hook with its Python-only callback (fast=False) in every pair")
    ap.add_argument("--null", action="store_true",
                    help="also measure pairs of two plain instances (slices in turns): the method's null result")
    ap.add_argument("--mpi", action="store_true", help="mpirun -np 2 hooked vs plain (wall), instead of in-process")
    ap.add_argument("--mpi-steps", type=int, default=8000)
    ap.add_argument("--slices", type=int, default=16,
                    help="run each pair as this many slices taken in turns by a plain and a hooked instance "
                         "(default 16); 1: whole runs one after the other (a fresh instance or mpirun per run)")
    a = ap.parse_args()
    if a.mpi:
        with_mpirun_interleaved(a) if a.slices > 1 else with_mpirun(a)
    elif a.slices > 1:
        in_process_interleaved(a)
    else:
        in_process(a)


if __name__ == "__main__":
    main()
