"""The analyze command end to end on a LAMMPS dump with known hops."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import zarr

from iondiff_stream.synthetic.runs import make_run, match_hops
from iondiff_stream.analysis.hops import HopTable

REQUIRED = ["atom_index", "start_frame", "end_frame", "start_time_ps", "end_time_ps", "duration_ps", "length_A",
            "from_x_A", "from_y_A", "from_z_A", "to_x_A", "to_y_A", "to_z_A", "open", "back_hop"]
SUMMARY = ["n_frames", "n_mobile", "timestep_ps", "n_hops", "n_diffusive_ions", "mean_silhouette",
           "mean_hop_length_A", "max_hop_length_A", "mean_hop_duration_ps", "hop_frequency_per_ps",
           "mean_residence_time_ps", "D_tracer_cm2_s"]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "iondiff_stream.cli", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def dump_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    run = make_run(n_frames=1500, sigma_A=0.18, framework=True, drift_A_per_ps=0.5, n_chains=2, seed=21)
    run.write_lammps(str(d / "run.dump"), str(d / "run.data"), columns="x y z", every_step=10)
    return d, run


def test_analyze_outputs(dump_run):
    d, run = dump_run
    out = d / "out"
    r = cli("analyze", str(d / "run.dump"), "--topology", str(d / "run.data"), "--mobile", "Li",
            "--md-timestep-ps", "0.005", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(out / "hops.csv")))
    assert set(REQUIRED) <= set(rows[0])
    s = json.load(open(out / "summary.json"))
    assert set(SUMMARY) <= set(s)
    assert s["n_frames"] == 1500 and s["n_mobile"] == run.n_ions
    assert s["timestep_ps"] == pytest.approx(0.05)
    # atom_index is the 0-based trajectory index; mobile ions are atoms 0..n-1 here
    cols = {k: np.array([float(r[k]) if k not in ("open", "back_hop") else r[k] == "true" for r in rows])
            for k in rows[0]}
    table = HopTable({k: (v.astype(int) if k in ("ion", "atom_index", "start_frame", "end_frame", "from_centre",
                                                  "to_centre") else v) for k, v in cols.items()})
    m = match_hops(run.events, table)
    assert m["f1"] >= 0.97
    assert s["n_hops"] == len(table.closed())
    assert s["mean_hop_length_A"] == pytest.approx(2.5, abs=0.1)
    assert s["hop_frequency_per_ps"] == pytest.approx(len(run.events) / (run.n_ions * 1499 * 0.05), rel=0.05)
    g = zarr.open_group(str(out / "results.zarr"), mode="r")
    assert g["states"].shape == (run.n_ions, 1500)
    assert g["sites_A"].attrs["units"] == "angstrom"  # shared sites (default method)
    assert s["method"] == "sites" and s["n_sites"] >= run.n_ions and 0.5 <= s["hop_msd_fraction"] <= 3
    assert g["hops/start_frame"].shape == (len(rows),)
    assert abs(g["msd/msd_A2"][0]) < 1e-12


def test_analyze_bad_input_messages(dump_run, tmp_path):
    d, _ = dump_run
    r = cli("analyze", str(d / "missing.dump"), "--mobile", "Li", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr
    r = cli("analyze", str(d / "run.dump"), "--topology", str(d / "run.data"), "--mobile", "Na",
            "--md-timestep-ps", "0.005", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "matched no atoms" in r.stderr
