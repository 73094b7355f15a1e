"""Transport against pymatgen-analysis-diffusion on real AIMD data, and analytic cases."""

import json
import warnings

import numpy as np
import pytest

from conftest import shared
from iondiff_stream.io import collect_positions, load_universe
from iondiff_stream.transport import collective_msd, fit_diffusion, msd_fft, nernst_einstein_mS_cm, tracer_msd


def _pmg(json_path):
    from pymatgen.analysis.diffusion.analyzer import DiffusionAnalyzer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = DiffusionAnalyzer.from_dict(json.load(open(json_path)))
        return DiffusionAnalyzer(d.structure, d.disp, str(d.specie), d.temperature, d.time_step, d.step_skip, smoothed="max")


@pytest.mark.parametrize(
    "folder,xyz,js,species",
    [
        ("LGPS_600K_pmg_diffusion", "derived_LGPS_600K_unwrapped.extxyz", "DiffusionAnalyzer.json", "Li"),
        ("Na3PS4_cubic_800K_pmg_diffusion", "derived_cNa3PS4_800K_unwrapped.extxyz", "cNa3PS4_pda.json", "Na"),
    ],
)
def test_tracer_and_collective_msd_match_pymatgen(folder, xyz, js, species):
    da = _pmg(shared(folder, js))
    data = collect_positions(load_universe(shared(folder, xyz)), species, remove_drift=True)
    msd, axes = tracer_msd(data.positions)
    mscd, _ = collective_msd(data.positions)
    lags = np.rint(da.dt / (da.time_step * da.step_skip)).astype(int)
    assert len(lags) > 40
    np.testing.assert_allclose(msd[lags], da.msd, rtol=1e-6)
    # per-axis MSDs are in the canonical cell orientation (a along x), which differs from
    # pymatgen's for these slightly non-orthogonal cells; they add up to the same total
    np.testing.assert_allclose(axes[lags].sum(1), da.msd, rtol=1e-6)
    np.testing.assert_allclose(mscd[lags], da.mscd, rtol=1e-6)


def test_msd_fft_equals_direct_average():
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(size=(3, 257, 3)), axis=1)
    fast = msd_fft(x)
    for m in (0, 1, 7, 100, 256):
        direct = ((x[:, m:] - x[:, : x.shape[1] - m]) ** 2).mean(1)
        np.testing.assert_allclose(fast[:, m], direct, rtol=1e-10, atol=1e-10)


def test_random_walk_diffusion_coefficient():
    # 3D random walk with per-axis step variance s2 per frame: D = s2 / (2 dt)
    rng = np.random.default_rng(1)
    dt, s2 = 0.01, 0.02
    x = np.cumsum(rng.normal(0, np.sqrt(s2), size=(400, 2000, 3)), axis=1)
    msd, _ = tracer_msd(x, max_lag=200)
    fit = fit_diffusion(np.arange(len(msd)) * dt, msd)
    assert fit.D_A2_ps == pytest.approx(s2 / (2 * dt), rel=0.03)
    assert fit.D_cm2_s == pytest.approx(fit.D_A2_ps * 1e-4)


def test_collective_equals_tracer_for_independent_ions():
    rng = np.random.default_rng(2)
    x = np.cumsum(rng.normal(size=(200, 500, 3)), axis=1)
    t, _ = tracer_msd(x, 100)
    c, _ = collective_msd(x, 100)
    assert c[100] == pytest.approx(t[100], rel=0.25)
    # perfectly correlated ions: collective MSD is N times the tracer MSD
    y = np.repeat(x[:1], 10, axis=0)
    t1, _ = tracer_msd(y, 50)
    c1, _ = collective_msd(y, 50)
    np.testing.assert_allclose(c1, 10 * t1, rtol=1e-9, atol=1e-9)


def test_nernst_einstein_matches_pymatgen_lgps():
    da = _pmg(shared("LGPS_600K_pmg_diffusion", "DiffusionAnalyzer.json"))
    vol = da.structure.volume
    sigma = nernst_einstein_mS_cm(da.diffusivity, 20, vol, 600.0, 1)
    assert sigma == pytest.approx(da.conductivity, rel=1e-6)
