"""Wall time of the CaF2 example with and without the streaming hook, side by side in one run.

For every = 1, 10, 100 the same MD segment is run with the hook off and on, alternating, ``--repeats``
times each on fresh LAMMPS instances (same seed); the minimum times are compared (target: overhead
<= 2 % at every = 10). Also prints the cost of the online update per frame per ion.

Run: ``python benchmarks/hook_overhead.py [--steps 4000] [--repeats 3]``.
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


def one(steps: int, every: int | None, store: str | None, worker: str = "thread") -> tuple[float, float]:
    lmp = load_lammps(["-log", "none", "-screen", "none", "-var", "nsteps", "0", "-var", "T", "1500"])
    lmp.file(CAF2)
    lmp.command("run 200")  # warm up neighbour lists and PPPM
    hook = None
    if every is not None and store is not None:
        hook = attach(lmp, mobile="F", every=every, store=store, chunk_frames=200, worker=worker)
    t0 = time.perf_counter()
    lmp.command(f"run {steps}")
    wall = time.perf_counter() - t0
    t_close = 0.0
    if hook is not None:
        t1 = time.perf_counter()
        hook.close()  # one-off at the end of a run: drain the worker, flush, save the online state
        t_close = time.perf_counter() - t1
    lmp.close()
    return wall, t_close


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp()
    print(f"CaF2 example, 321 atoms, {a.steps} steps per segment; hook off/on alternate, {a.repeats} pairs; "
          "median (min) wall times of the run command")
    cases = [(1, "thread"), (10, "thread"), (100, "thread"), (10, "process"), (10, "inline")]
    for every, worker in cases:
        off, on, closes = [], [], []
        for r in range(a.repeats):
            off.append(one(a.steps, None, None)[0])
            store = os.path.join(tmp, f"e{every}_{worker}_{r}.zarr")
            w, c = one(a.steps, every, store, worker)
            on.append(w)
            closes.append(c)
            shutil.rmtree(store, ignore_errors=True)
        m_off, m_on = float(np.median(off)), float(np.median(on))
        print(f"  every={every:4d} worker={worker:8s}: off {m_off:6.2f} s ({min(off):.2f})  on {m_on:6.2f} s ({min(on):.2f})"
              f"  -> overhead {100 * (m_on / m_off - 1):6.2f} % median, {100 * (min(on) / min(off) - 1):6.2f} % min"
              + ("   (target <= 2 %)" if every == 10 else ""))
        frames = a.steps // every
        print(f"      hook cost per stored frame: {1e3 * (m_on - m_off) / frames:.3f} ms median, "
              f"{1e3 * (min(on) - min(off)) / frames:.3f} ms min")
        spread = 100 * (max(off) - min(off)) / min(off)
        print(f"      run-to-run spread with the hook off: {spread:.1f} %; one-off close at the end of the run "
              f"(drain, flush, save state): {float(np.median(closes)):.2f} s")

    from iondiff_stream.online import OnlineCentres
    from iondiff_stream.synthetic import make_run

    run = make_run(n_frames=3000, n_cells=6, n_vacancies=16, sigma_A=0.2, seed=1)
    X = run.positions.transpose(1, 0, 2)
    est = OnlineCentres()
    t0 = time.perf_counter()
    for x in X:
        est.partial_fit(x[None])
    dt = time.perf_counter() - t0
    print(f"online update: {1e6 * dt / X.shape[0] / X.shape[1]:.2f} µs per frame per ion "
          f"({X.shape[1]} ions, {1e3 * dt / X.shape[0]:.3f} ms per frame)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
