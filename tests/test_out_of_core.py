"""Out-of-core positions: same numbers as in memory, ion-block reads, bounded memory, Dask on a real cluster."""

import json
import os
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

from iondiff_stream.analysis.hops import HopParameters, find_hops
from iondiff_stream.io import collect_positions
from iondiff_stream.io.positions_store import IonMajorView, MemoryBudget, parse_bytes, plan_chunks
from iondiff_stream.synthetic.runs import make_run
from iondiff_stream.analysis.transport import analyse_transport, msd_fft, msd_ion_blocks


@pytest.fixture(scope="module")
def synth():
    return make_run(n_frames=3000, n_cells=4, n_vacancies=8, hop_prob=3e-3, n_chains=0, framework=True,
                    drift_A_per_ps=0.5, seed=5)


@pytest.fixture(scope="module")
def both(synth, tmp_path_factory):
    u = synth.to_universe(wrapped=True)
    mem = collect_positions(u, "Li", out_of_core=False)
    path = str(tmp_path_factory.mktemp("ooc") / "positions.zarr")
    ooc = collect_positions(u, "Li", out_of_core=True, store_path=path, memory_budget=MemoryBudget(16 << 20))
    return mem, ooc


def test_store_layout_and_values(both, synth):
    mem, ooc = both
    assert isinstance(mem.positions, np.ndarray) and mem.positions.shape == (3000, synth.n_ions, 3)
    assert ooc.out_of_core and ooc.positions.shape == mem.positions.shape and ooc.positions.dtype == np.float32
    t_chunk, i_chunk, _ = ooc.positions.chunks
    assert t_chunk < 3000  # several slabs were unwrapped and written one after the other
    assert i_chunk < synth.n_ions  # chunks are ion blocks
    # float32 storage of a float64 accumulation: rounding only, no drift along the run
    err = np.abs(np.asarray(ooc.positions[:], dtype=np.float64) - mem.positions)
    assert err.max() < 5e-6
    assert err[-100:].max() < 5e-6
    # drift was removed in the slabs exactly as in memory
    assert np.allclose(ooc.framework_drift, mem.framework_drift, atol=1e-12)
    assert np.array_equal(ooc.times_ps, mem.times_ps)
    truth = (synth.positions - synth.drift[None]).transpose(1, 0, 2)
    d = mem.positions - mem.positions[:1] - (truth - truth[:1])
    assert np.abs(d).max() < 0.05


def test_hops_from_ion_blocks(both):
    mem, ooc = both
    params = HopParameters(seed=2)
    a = find_hops(ooc.positions, ooc.times_ps, params, layout="frame", box=ooc.box)  # reads [:, i0:i1] blocks
    b = find_hops(np.asarray(ooc.positions[:], dtype=np.float64), ooc.times_ps, params, layout="frame", box=ooc.box)
    assert np.array_equal(a.hops["start_frame"], b.hops["start_frame"]) and np.array_equal(a.states, b.states)
    c = find_hops(mem.positions, mem.times_ps, params, layout="frame", box=mem.box)
    assert abs(len(c.hops) - len(a.hops)) <= 1 and len(a.hops) > 20


def test_transport_per_ion_block(both):
    mem, ooc = both
    view = ooc.ion_major()
    assert isinstance(view, IonMajorView) and view.shape == (ooc.n_mobile, 3000, 3)
    x = np.asarray(ooc.positions[:], dtype=np.float64).transpose(1, 0, 2)
    assert np.allclose(view.sum(0), x.sum(0), rtol=0, atol=1e-9)
    assert np.array_equal(view[3:7], x[3:7]) and np.array_equal(view[:, 100:200][2:4], x[2:4, 100:200])
    a = analyse_transport(view, ooc.timestep_ps, ooc.volume_A3, n_bootstrap=20)
    b = analyse_transport(x, ooc.timestep_ps, ooc.volume_A3, n_bootstrap=20)
    assert a.tracer.D_cm2_s == pytest.approx(b.tracer.D_cm2_s, rel=1e-9)
    assert a.collective.D_cm2_s == pytest.approx(b.collective.D_cm2_s, rel=1e-9)


def test_msd_by_ion_blocks_matches_full_msd(synth):
    x = synth.positions[:10]
    lags = np.arange(0, 1500, 7)
    assert np.allclose(msd_ion_blocks(x, 1499, lags, ion_block=3), msd_fft(x, 1499)[:, lags], rtol=1e-12, atol=1e-12)
    assert np.allclose(msd_ion_blocks(x, 1499, ion_block=4), msd_fft(x, 1499), rtol=1e-12, atol=1e-12)


def test_memory_bounded_by_budget(synth):
    """Out of core, reading holds one slab, not the run: peak allocation well below the positions' size."""
    u = synth.to_universe(wrapped=True)  # the in-memory reader's own frames are allocated before tracing
    budget = MemoryBudget(16 << 20)
    tracemalloc.start()
    data = collect_positions(u, "Li", out_of_core=True, memory_budget=budget)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    full64 = data.n_frames * data.n_mobile * 3 * 8
    assert peak < 0.5 * budget.bytes + (1 << 20)
    assert data.positions.nbytes == full64 // 2  # float32 on disk


def test_plan_and_budget_parsing():
    assert parse_bytes("2GB") == 2 * 10**9 and parse_bytes("1.5GiB") == int(1.5 * 2**30) and parse_bytes("512M") == 512 * 2**20
    with pytest.raises(ValueError, match="memory size"):
        parse_bytes("lots")
    small = plan_chunks(1000, 50, 20)
    assert small.in_memory
    big = plan_chunks(1_000_000, 100, 27, MemoryBudget(2**30), n_workers=2)
    assert not big.in_memory and big.ion_block >= 1
    # an ion block's per-ion work fits the worker's share of the budget
    assert big.ion_block * 320 * 1_000_000 <= 2**30 // 3


def test_analyze_run_out_of_core_matches_in_memory(synth, tmp_path):
    from iondiff_stream.pipeline.run import analyze_run

    dump, data = str(tmp_path / "run.dump"), str(tmp_path / "run.data")
    synth.write_lammps(dump, data)
    kw = dict(topology=data, md_timestep_ps=0.005, params=HopParameters(seed=1))
    a = analyze_run(dump, "Li", out_dir=str(tmp_path / "mem"), out_of_core=False, **kw)
    b = analyze_run(dump, "Li", out_dir=str(tmp_path / "ooc"), out_of_core=True, **kw)
    assert os.path.isdir(tmp_path / "ooc" / "positions.zarr") and not os.path.exists(tmp_path / "mem" / "positions.zarr")
    assert abs(a.summary["n_hops"] - b.summary["n_hops"]) <= 1
    assert b.summary["D_tracer_cm2_s"] == pytest.approx(a.summary["D_tracer_cm2_s"], rel=1e-4)


def _start_cluster(tmp_path):
    bindir = os.path.dirname(sys.executable)
    sched_file = str(tmp_path / "scheduler.json")
    env = dict(os.environ)
    procs = [subprocess.Popen([os.path.join(bindir, "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", sched_file],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]
    t0 = time.time()
    while not os.path.exists(sched_file) and time.time() - t0 < 600:
        time.sleep(0.2)
    address = json.load(open(sched_file))["address"]
    procs.append(subprocess.Popen([os.path.join(bindir, "dask"), "worker", address, "--nworkers", "2", "--nthreads", "1",
                                   "--no-dashboard", "--host", "127.0.0.1", "--memory-limit", "2GB"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
    from distributed import Client

    with Client(address, timeout="300s") as c:
        c.wait_for_workers(2, timeout=600)
    return address, procs


def test_ion_blocks_on_a_real_dask_cluster(both, synth, tmp_path):
    """One task per ion block on `dask scheduler` + `dask worker` processes on loopback."""
    mem, ooc = both
    address, procs = _start_cluster(tmp_path)
    try:
        params = HopParameters(seed=2)
        kw = dict(layout="frame", box=ooc.box)
        serial = find_hops(ooc.positions, ooc.times_ps, params, **kw)
        dist = find_hops(ooc.positions, ooc.times_ps, params, client=address, **kw)  # workers read the Zarr store
        assert np.array_equal(dist.hops["start_frame"], serial.hops["start_frame"])
        assert np.array_equal(dist.states, serial.states)
        shipped = find_hops(mem.positions, mem.times_ps, params, client=address, **kw)  # in-memory blocks shipped
        ref = find_hops(mem.positions, mem.times_ps, params, **kw)
        assert np.array_equal(shipped.hops["end_frame"], ref.hops["end_frame"])
        # the command line, scheduler address given
        dump, data = str(tmp_path / "run.dump"), str(tmp_path / "run.data")
        synth.write_lammps(dump, data)
        exe = os.path.join(os.path.dirname(sys.executable), "iondiff-stream")
        out = tmp_path / "out"
        p = subprocess.run([exe, "analyze", dump, "--topology", data, "--mobile", "Li", "--md-timestep-ps", "0.005",
                            "--scheduler", address, "--out-of-core", "--out", str(out), "--no-progress"],
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr
        s = json.load(open(out / "summary.json"))
        assert s["n_frames"] == 3000 and s["n_hops"] > 20
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def test_hook_store_is_rechunked_per_ion_block(tmp_path):
    """A store written by the hook (per-frame chunks) becomes an ion-block store in one pass, same positions."""
    from iondiff_stream.io.store import FrameStoreWriter
    from iondiff_stream.io import load_universe

    rng = np.random.default_rng(3)
    X = 5.0 + np.cumsum(rng.normal(0, 0.1, (900, 12, 3)), axis=0)
    src = str(tmp_path / "hook.zarr")
    w = FrameStoreWriter(src, np.arange(1, 13), ["Li"] * 12, chunk_frames=50, flush_seconds=None)
    for t, x in enumerate(X):
        w.append(10 * t, 0.01 * t, x, np.array([30.0, 30.0, 30.0, 90, 90, 90]))
    w.close()
    u = load_universe(src)
    data = collect_positions(u, "Li", remove_drift=False, out_of_core=True, store_path=str(tmp_path / "p.zarr"),
                             memory_budget=MemoryBudget(16 << 20), n_workers=2)
    assert data.positions.shape == (900, 12, 3)
    assert data.positions.chunks[0] > 50  # time-contiguous chunks, not the hook's 50-frame chunks
    assert np.allclose(np.asarray(data.positions[:], float), X, atol=2e-5)
    assert data.timestep_ps == pytest.approx(0.01)
