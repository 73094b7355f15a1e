"""A long run end to end: ``iondiff-stream analyze --jobs 2`` on 10^5-10^6 frames, time and peak memory.

Writes (once) a lattice walk with known hops (100 mobile Li + 27 framework S, DCD;
:func:`iondiff_stream.synthetic.long.write_lattice_walk`), runs the command as a whole process and samples
the resident memory of its whole process tree (the CLI, the Dask scheduler and workers) every 0.2 s.
Prints wall and CPU time, the peak of the summed RSS and of the largest process, and the hop count
against the truth::

    python benchmarks/long_run.py --frames 1000000 --work /tmp/long --jobs 2 --memory-budget 1GiB
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np


def tree_rss(pid: int) -> tuple[int, int]:
    """(sum, max) resident bytes of a process and its descendants."""
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p] + p.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0, 0
    rss = []
    for q in procs:
        try:
            rss.append(q.memory_info().rss)
        except psutil.NoSuchProcess:
            pass
    return sum(rss), max(rss, default=0)


def run_sampled(cmd: list[str]) -> dict[str, float]:
    """Run ``cmd``; wall time, children CPU time, peak summed and single-process RSS."""
    import resource

    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0, 0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            s, m = tree_rss(proc.pid)
            peak[0], peak[1] = max(peak[0], s), max(peak[1], m)
            time.sleep(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = proc.communicate()
    done.set()
    th.join()
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}):\n{err[-3000:]}")
    return {"wall_s": wall, "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
            "peak_rss_sum_GB": peak[0] / 1e9, "peak_rss_max_GB": peak[1] / 1e9, "stdout": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--work", default="/tmp/iondiff_long")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--memory-budget", default="1GiB")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()

    from iondiff_stream.synthetic.long import truth_of, write_lattice_walk

    walk_dir = os.path.join(a.work, f"walk_{a.frames}")
    meta = os.path.join(walk_dir, "walk.json")
    if not os.path.exists(meta):
        t0 = time.perf_counter()
        w = write_lattice_walk(walk_dir, a.frames, hop_prob=1.5e-3, seed=a.seed)
        json.dump(w.__dict__, open(meta, "w"))
        print(f"wrote {w.trajectory}: {a.frames} frames, {w.n_hops} true hops ({time.perf_counter() - t0:.0f} s)")
    w = json.load(open(meta))
    n_true = len(truth_of(w["truth"])["ion"])
    out = os.path.join(a.work, f"out_{a.frames}")
    exe = os.path.join(os.path.dirname(sys.executable), "iondiff-stream")
    cmd = [exe, "analyze", w["trajectory"], "--topology", w["topology"], "--mobile", "Li", "--jobs", str(a.jobs),
           "--memory-budget", a.memory_budget, "--out", out, "--no-progress"]
    print(" ".join(cmd), flush=True)
    r = run_sampled(cmd)
    s = json.load(open(os.path.join(out, "summary.json")))
    n = s["n_hops"]
    print(f"frames {s['n_frames']}  mobile {s['n_mobile']}  wall {r['wall_s']:.0f} s  cpu {r['cpu_s']:.0f} s  "
          f"peak RSS (tree sum) {r['peak_rss_sum_GB']:.2f} GB  (largest process {r['peak_rss_max_GB']:.2f} GB)")
    print(f"hops found {n} / true {n_true}  ratio {n / max(n_true, 1):.3f}  "
          f"D* {s.get('D_tracer_cm2_s')} cm2/s")
    a_A, dt = w["a_A"], w["dt_ps"]
    d_true = n_true * a_A**2 / (6 * w["n_mobile"] * a.frames * dt) * 1e-4  # hop-count D (uncorrelated walk), cm2/s
    print(f"D from the true hops {d_true:.3e} cm2/s; D*/D_hops {s.get('D_tracer_cm2_s', np.nan) / d_true:.2f}")


if __name__ == "__main__":
    main()
