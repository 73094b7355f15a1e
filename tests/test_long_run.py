"""10^5 frames x 100 mobile + 27 framework atoms (DCD) end to end with ``analyze --jobs 2``: bounded memory, known hops.

Slow (a few minutes): the lattice walk is written, then the command runs as a whole process while the
resident memory of its process tree (CLI, Dask scheduler and workers) is sampled.
"""

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _tree_rss(pid):
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p] + p.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    from iondiff_stream.synthetic.long import truth_of, write_lattice_walk

    d = tmp_path_factory.mktemp("long")
    walk = write_lattice_walk(str(d), 100_000, hop_prob=1.5e-3, seed=11)
    out = d / "out"
    exe = os.path.join(os.path.dirname(sys.executable), "iondiff-stream")
    # a 256 MiB budget puts these positions (240 MB as float64) out of core
    cmd = [exe, "analyze", walk.trajectory, "--topology", walk.topology, "--mobile", "Li", "--jobs", "2",
           "--memory-budget", "256MiB", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, err = proc.communicate(timeout=3600)
    done.set()
    th.join()
    assert proc.returncode == 0, err[-3000:]
    return walk, truth_of(walk), json.load(open(out / "summary.json")), peak[0], out


def test_long_run_out_of_core_bounded_memory(long_run):
    walk, truth, s, peak, out = long_run
    assert s["n_frames"] == 100_000 and s["n_mobile"] == 100
    assert os.path.isdir(out / "positions.zarr")  # went out of core
    assert peak < 2e9, f"peak RSS of the process tree {peak / 1e9:.2f} GB"
    # transport from the MSD agrees with the hops that were put in (tracer correlation factor < 1)
    d_hops = len(truth["ion"]) * walk.a_A**2 / (6 * walk.n_mobile * walk.n_frames * walk.dt_ps) * 1e-4
    assert 0.5 < s["D_tracer_cm2_s"] / d_hops < 1.05


def test_long_run_hop_count_within_5_percent(long_run):
    walk, truth, s, peak, out = long_run
    n_true = len(truth["ion"])
    assert abs(s["n_hops"] - n_true) <= 0.05 * n_true, f"{s['n_hops']} hops found, {n_true} true"
    assert np.isfinite(s["D_tracer_cm2_s"])
