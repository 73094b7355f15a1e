"""The hop detector on real LAMMPS runs of CaF2 (the lattice gives an independent count).

Default: one short hooked run at 1700 K (store + LAMMPS dump). Slow: the 1300/1500/1700 K series of
``examples/caf2/run_series.py`` checked by ``examples/caf2/check_hops.py`` (the README table).
"""

import os
import sys

import numpy as np
import pytest

pytest.importorskip("lammps")

from iondiff_stream.pipeline.run import analyze_run  # noqa: E402
from iondiff_stream.io.store import FrameStoreReader  # noqa: E402
from iondiff_stream.analysis.hops import HopParameters, committed_site_changes, find_hops  # noqa: E402
from iondiff_stream.synthetic.runs import same_hops  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples", "caf2"))

from check_hops import check_temperature, f_sublattice  # noqa: E402
from run_series import run_one  # noqa: E402


@pytest.fixture(scope="module")
def hot_run(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("caf2"))
    info = run_one(d, 1700, 12.0, 10, compress=True, seed=2024)
    return d, info


def test_hops_follow_the_lattice_count_and_carry_the_transport(hot_run):
    d, _ = hot_run
    run = analyze_run(f"{d}/T1700_c.zarr", "F")
    s = run.summary
    ref = committed_site_changes(run.data.positions, run.data.times_ps, f_sublattice(run.data.box), run.data.box, 0.2,
                                 layout="frame")
    assert ref.sum() >= 50
    assert abs(s["n_hops"] - ref.sum()) <= 0.25 * ref.sum()
    assert s["n_sites"] >= 216  # the F sublattice (and a few interstitial sites)
    assert 0.5 <= s["hop_msd_fraction"] <= 3.0
    # with the back-hops accounted for (correlation factor of consecutive hops) the hops carry about D*
    assert s["long_range_diffusion"] and 0.2 < s["hop_correlation_factor"] < 1.2
    assert 0.4 <= s["hop_msd_fraction_correlated"] <= 2.0
    # per-ion counts follow the reference ion by ion
    per = run.hops.hops_per_ion
    assert np.corrcoef(per, ref)[0, 1] > 0.8


def test_store_dump_and_noise_agree(hot_run):
    d, _ = hot_run
    st = analyze_run(f"{d}/T1700_c.zarr", "F")
    du = analyze_run([f"{d}/T1700_c.dump"], "F", topology=f"{d}/T1700_c.data", md_timestep_ps=0.002)
    assert same_hops(st.hops.hops, du.hops.hops, 1)["fraction"] >= 0.97
    rng = np.random.default_rng(1)
    noisy = du.data.positions + rng.normal(0, 1e-3, du.data.positions.shape)
    hn = find_hops(noisy, du.data.times_ps, HopParameters(), du.data.atom_indices, atom_ids=du.data.atom_ids,
                   box=du.data.box, layout="frame")
    assert same_hops(du.hops.hops, hn.hops, 1)["fraction"] >= 0.97
    # the hook's store is complete and readable (the live count is the monitor's, computed from the store)
    r = FrameStoreReader(f"{d}/T1700_c.zarr")
    assert r.verify() == r.n_frames == st.data.n_frames and r.commit.n_step_gaps == 0


@pytest.mark.slow
def test_caf2_temperature_series(tmp_path):
    """1300/1500/1700 K, 40 ps each, vacancies with and without id compression: the README's CaF2 rows."""
    from check_hops import arrhenius

    rows = []
    for T in (1300, 1500, 1700):
        for compress in (True, False):
            run_one(str(tmp_path), T, 40.0, 10, compress=compress, seed=1000 + T + (0 if compress else 7))
        r = check_temperature(str(tmp_path), T, silhouette=False)
        rows.append(r)
        assert abs(r["hops_over_ref"] - 1) <= 0.25
        assert abs(r["gaps_hops"] - r["gaps_ref"]) <= 0.25 * r["gaps_ref"]
        assert r["store_vs_dump"] >= 0.97 and r["dump_vs_noisy"] >= 0.97
        assert abs(r["live_over_offline"] - 1) <= 0.10
    nu = [r["nu_per_ps"] for r in rows]
    assert nu[0] < nu[1] < nu[2]
    fits = arrhenius(rows)
    assert fits["nu_per_ps"]["Ea_eV"] > 0
    # back-hops are more common when colder (vacancies bound to their Schottky partner): f rises with T, so
    # Ea(nu) < Ea(D*); f from consecutive hops only misses longer return sequences (a shuttling pair), which
    # over-corrects when cold: Ea(f*nu) > Ea(D*). The two bracket the activation energy of D*.
    f = [r["f_corr"] for r in rows]
    assert f[0] < f[2]
    assert fits["nu_per_ps"]["Ea_eV"] < fits["D_tracer_cm2_s"]["Ea_eV"] < fits["nu_eff_per_ps"]["Ea_eV"]
