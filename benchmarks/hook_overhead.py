"""Wall time of the CaF2 example with and without the streaming hook, side by side in one process.

The same MD segment is run with the hook off and on in alternating pairs (the order flips every pair),
``--repeats`` pairs, on fresh LAMMPS instances (same seed) in this one process. The time with the hook
*includes closing the store* (draining the worker, the last flush); the
overhead is the median over pairs of ``on / off - 1`` (target: <= 2 % at every = 10), and the close
itself is reported. ``--all`` also measures every = 1 and 100 and the process / inline workers.
For the CPU the hook costs (all threads, what counts when every core runs an MPI rank) see
``benchmarks/hook_cpu.py``.

Also prints LAMMPS's own timer for fixes ("Modify") off and on: the time the callback takes on LAMMPS's
thread, a measure that the run-to-run noise of the wall time (5-10 % on a shared machine) does not blur.
The default run (20,000 steps, ~25 s) is short against a production run, so the one-off close still counts.

Run: ``python benchmarks/hook_overhead.py [--steps 20000] [--repeats 5] [--all]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

from lammps_hooks import attach, load_lammps

HERE = os.path.dirname(os.path.abspath(__file__))
CAF2 = os.path.join(HERE, "..", "examples", "caf2", "in.caf2")


def _modify_seconds(log: str) -> float:
    """LAMMPS's own timer for fixes ("Modify" row of the last run's timing breakdown), s."""
    text = open(log).read().split("MPI task timing breakdown")[-1]
    row = next(line for line in text.splitlines() if line.startswith("Modify"))
    return float(row.split("|")[2])


def one(steps: int, every: int | None, store: str | None, worker: str = "thread") -> tuple[float, float, float]:
    """Wall time of ``run steps`` (+ the close), the close alone, and LAMMPS's Modify time, s."""
    log = tempfile.mktemp(suffix=".log")
    lmp = load_lammps(["-log", log, "-screen", "none", "-var", "nsteps", "0", "-var", "T", "1500"])
    lmp.file(CAF2)
    lmp.command("run 200")  # warm up neighbour lists and PPPM
    hook = None
    if every is not None and store is not None:
        hook = attach(lmp, mobile="F", every=every, store=store, chunk_frames=200, worker=worker)
    t0 = time.perf_counter()
    lmp.command(f"run {steps}")
    t_close = 0.0
    if hook is not None:
        t1 = time.perf_counter()
        hook.close()  # inside the timing: drain the worker, write the last chunk
        t_close = time.perf_counter() - t1
    wall = time.perf_counter() - t0
    lmp.close()
    modify = _modify_seconds(log)
    os.remove(log)
    return wall, t_close, modify


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--all", action="store_true", help="also every=1, 100 and the other workers")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp()
    print(f"CaF2 example, 321 atoms, {a.steps} steps per run; hook off/on in {a.repeats} alternating pairs in one "
          "process; the time with the hook includes closing the store")
    cases = [(10, "thread")]
    if a.all:
        cases += [(1, "thread"), (100, "thread"), (10, "process"), (10, "inline")]
    for every, worker in cases:
        off, on, closes, pairs, mod_off, mod_on = [], [], [], [], [], []
        for r in range(a.repeats):
            store = os.path.join(tmp, f"e{every}_{worker}_{r}.zarr")
            if r % 2 == 0:
                t_off, _, m_f = one(a.steps, None, None)
                t_on, c, m_n = one(a.steps, every, store, worker)
            else:
                t_on, c, m_n = one(a.steps, every, store, worker)
                t_off, _, m_f = one(a.steps, None, None)
            mod_off.append(m_f)
            mod_on.append(m_n)
            off.append(t_off)
            on.append(t_on)
            closes.append(c)
            pairs.append(100 * (t_on / t_off - 1))
            shutil.rmtree(store, ignore_errors=True)
        m_off, m_on = float(np.median(off)), float(np.median(on))
        print(f"  every={every:4d} worker={worker:8s}: off {m_off:6.2f} s  on {m_on:6.2f} s (median)"
              f"  -> overhead {float(np.median(pairs)):+6.2f} % median of pairs"
              + ("   (target <= 2 %)" if every == 10 else ""))
        print("      pairs: " + ", ".join(f"{p:+.1f} %" for p in pairs))
        print(f"      close of the store (inside the timing): {float(np.median(closes)):.3f} s median "
              f"({', '.join(f'{c:.3f}' for c in closes)} s)")
        extra = float(np.median(mod_on) - np.median(mod_off))
        print(f"      LAMMPS's own timer for fixes (Modify, includes the hook's callback): off {np.median(mod_off):.3f} s, "
              f"on {np.median(mod_on):.3f} s -> the callback costs LAMMPS's thread {100 * extra / m_off:+.2f} % of the run")
        spread = 100 * (max(off) - min(off)) / min(off)
        print(f"      run-to-run spread with the hook off: {spread:.1f} %; machine load (1/5/15 min) at the end: "
              + "/".join(f"{v:.2f}" for v in os.getloadavg()))

    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
