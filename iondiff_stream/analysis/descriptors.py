"""Per-run descriptors: vibrational (from the VDOS), hop, transport and concert.

One run gives one row of numbers whose names carry their units. They are the
inputs of the descriptor database (:mod:`iondiff_stream.database`), in the spirit
of López, Rurali & Cazorla's database of solid-state electrolytes.

Vibrational density of states
-----------------------------
The VDOS of a group of atoms G is the cosine transform of its mass-weighted
velocity autocorrelation function (VACF),

.. math::

    C(\\tau) = \\frac{1}{N_G} \\sum_{i \\in G} m_i \\langle \\mathbf v_i(t) \\cdot \\mathbf v_i(t+\\tau) \\rangle_t ,
    \\qquad
    S(\\nu) = 4 \\int_0^{\\tau_{max}} C(\\tau)\\, w(\\tau) \\cos(2\\pi\\nu\\tau)\\, d\\tau ,

with every time origin averaged (FFT, zero padded, unbiased ``1/(T - lag)``) and
a Hann window ``w(τ) = ½[1 + cos(πτ/τ_max)]``. ``S`` is one-sided
(``∫_0^{ν_N} S dν = C(0)`` = twice the kinetic energy per atom), so it gives the
kinetic temperature ``T_kin = ∫S dν / (3 k_B)``. The VDOS is ``g(ν) = 3 S(ν) / ∫S dν``
(states per THz per atom, ``∫ g dν = 3``: three modes per atom).

Velocities are taken from the trajectory when it has them (LAMMPS dump
``vx vy vz``, extended XYZ ``momenta`` or ``vel``), else from unwrapped positions
by central differences at the mid-points, ``v(t + Δt/2) = [x(t + Δt) − x(t)]/Δt``.
That difference has the exact transfer function ``sin(πνΔt)/(πνΔt)``, which is
divided out of ``S(ν)``, so that a position-only VDOS equals the velocity VDOS
below the Nyquist frequency ``ν_N = 1/(2Δt)`` of the stored frames; spectral
weight above ``ν_N`` folds back (aliasing) and cannot be recovered. Either way a
warning is logged when more than 1 % of the modes lie above ``0.8 ν_N`` (the
frames are too far apart for the spectrum).

Harmonic (quantum) thermodynamics of ``g`` at temperature ``T``, per atom, with
``x = hν / k_B T`` and the ``ν = 0`` bin left out (its ``S`` and ``F`` diverge;
phonopy does the same with its zero cutoff):

* heat capacity ``C_v = k_B ∫ g(ν) x² eˣ / (eˣ − 1)² dν``  (``≤ 3 k_B``, → 3 k_B when ``hν ≪ k_B T``)
* entropy ``S_vib = k_B ∫ g(ν) [x / (eˣ − 1) − ln(1 − e⁻ˣ)] dν``
* free energy ``F_vib = ∫ g(ν) [hν/2 + k_B T ln(1 − e⁻ˣ)] dν``

which are phonopy's mode formulas (``phonopy.phonon.thermal_properties``).
Moments: ``⟨ν⟩ = ∫ν g / 3``; Debye-like temperature from the second moment,
``Θ_D = (h/k_B) √(5⟨ν²⟩/3)`` (exact for a Debye spectrum ``g ∝ ν²``); the low-energy
part below 30 meV (``E = hν``): its weight (modes per atom, of 3) and its mean energy.

Lindemann ratio: ``√⟨|u|²⟩ / d_nn`` with ``u = r(t) − r̄_W(t)`` the displacement
from the running mean over a window ``W`` (default 1 ps: many vibrational
periods, short compared with residences, so hops do not count as vibration),
averaged over the group's atoms and frames; ``d_nn`` is the mean distance from
each atom of the group to its nearest neighbour (any species), from positions
averaged over windows ``W`` spread over the whole run, averaged over those
windows, each neighbour chosen in one window and its distance measured in the
next (near-instantaneous positions bias it low: the minimum over noisy
neighbour distances is smaller than the distance between mean positions).

Groups and names
----------------
Every vibrational descriptor is given for the mobile ions (no suffix), the
diffusive mobile ions (``_d``: ions with at least one completed hop in the hop
detection), the non-diffusive ones (``_nd``), the framework (``_fw``: all other
atoms) and all atoms (``_all``), NaN where a group is empty. ``T_kinetic_K`` of
each group and ``T_kinetic_over_T`` (all atoms, against the run's temperature)
check the sampling: a spectrum cut by the Nyquist frequency or computed from
smoothed coordinates carries less than the thermal kinetic energy (a warning is
logged beyond 25 %). ``nyquist_THz``, ``vdos_weight_near_nyquist`` and
``vdos_source`` (``velocities`` or ``positions``) say how the spectrum was made.

Hop, transport and concert descriptors (from :func:`iondiff_stream.analyze_run`):
hop length Δr (``hop_length_{mean,min,max}_A``), hop duration Δt
(``hop_duration_{mean,min,max}_ps``), hop frequency ν (``hop_frequency_per_ps``:
completed hops per mobile ion per ps; ``hop_frequency_max_ion_per_ps``: the
largest per-ion rate), interstitial residence time γ (``residence_time_{mean,min,max}_ps``:
time between arriving at and leaving a metastable centre, i.e. one farther than
1 Å from every reference site), tracer and collective diffusion
``D_tracer_cm2_s``, ``D_sigma_cm2_s``, Haven ratio, Nernst–Einstein conductivity,
``D_vacf_cm2_s`` (Green–Kubo: the mobile ions' VACF integrated over 2 ps, a cross-check of ``D_tracer_cm2_s``
from the same velocities as the VDOS; NaN when the spectrum reaches the Nyquist frequency, whose aliasing puts
vibrational weight at ν ≈ 0), and the concert measures (mean and spread of the number of correlated ions,
fraction of concerted hops, group-size decay constant ``b`` of
``f(n) = A e^{−b n}``) with their null from the run summary when the analysis
provides one (``concert_p_value``, ``concert_p_value_mean_size``,
``null_fraction_hops_concerted_mean``, ``excess_fraction_hops_concerted``,
``null_mean_correlated_ions``), else NaN; and the site-based concerted modes (A→B with B→C): all pairs,
the excess over their chance baseline and its p-value (``concerted_mode_pairs``,
``concerted_mode_excess_pairs``, ``concerted_mode_p_value``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from iondiff_stream.core.errors import AnalysisError, TimestepError, TrajectoryFormatError
from iondiff_stream.core.units import A2_PER_PS_TO_CM2_PER_S, KB_EV_PER_K
from iondiff_stream.io import collect_positions, elements_of, load_universe
from iondiff_stream.io.formats import velocity_reading

logger = logging.getLogger(__name__)

__all__ = [
    "H_EV_S",
    "THZ_TO_MEV",
    "AMU_A2_PS2_TO_EV",
    "VDOS",
    "vdos_from_velocities",
    "vdos_from_positions",
    "harmonic_thermal_properties",
    "lindemann_ratio",
    "window_mean_positions",
    "green_kubo_diffusion",
    "AllAtomTrajectory",
    "read_all_atoms",
    "vibrational_descriptors",
    "hop_descriptors",
    "RunDescriptors",
    "run_descriptors",
    "GROUP_SUFFIXES",
]

#: Planck constant, eV s
H_EV_S = 4.135667696e-15
#: h × 1 THz in meV
THZ_TO_MEV = H_EV_S * 1e12 * 1e3
#: 1 amu Å² ps⁻² in eV (kinetic energies from masses in amu and velocities in Å/ps)
AMU_A2_PS2_TO_EV = 1.66053906660e-27 * 1e-20 / 1e-24 / 1.602176634e-19
#: threshold (meV) of the low-frequency descriptors
LOW_FREQ_MEV = 30.0
#: group name -> suffix of the descriptor names
GROUP_SUFFIXES = {"mobile": "", "diffusive": "_d", "nondiffusive": "_nd", "framework": "_fw"}


@dataclass
class VDOS:
    """Vibrational density of states of a group of atoms.

    Attributes
    ----------
    freq_THz : ndarray, shape (n_freq,)
        Frequencies from 0 to the Nyquist frequency, THz.
    dos_per_THz : ndarray, shape (n_freq,)
        ``g(ν)``, states per THz per atom; integrates to 3 over ``freq_THz``.
    n_atoms : int
    nyquist_THz : float
        ``1/(2Δt)`` of the frames used.
    source : str
        ``"velocities"`` (from the trajectory) or ``"positions"`` (differences).
    T_kinetic_K : float
        ``∫S dν / 3k_B`` (see the module docstring); NaN without masses.
    vacf_time_ps, vacf : ndarray, shape (n_lag,)
        Normalised mass-weighted VACF ``C(τ)/C(0)`` (before the window).
    """

    freq_THz: np.ndarray
    dos_per_THz: np.ndarray
    n_atoms: int
    nyquist_THz: float
    source: str
    T_kinetic_K: float = float("nan")
    vacf_time_ps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    vacf: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def mode_weights(self) -> np.ndarray:
        """Modes per atom in each frequency bin (trapezoid weights × g), shape (n_freq,); sums to 3."""
        return self.dos_per_THz * _trapezoid_weights(self.freq_THz)

    @property
    def integral(self) -> float:
        """``∫ g dν`` (trapezoid), modes per atom (3 by construction)."""
        return float(np.trapezoid(self.dos_per_THz, self.freq_THz))

    @property
    def weight_near_nyquist(self) -> float:
        """Fraction of the modes above 0.8 ν_N (aliasing / cut spectrum when not small)."""
        w = self.mode_weights
        tot = w.sum()
        return float(w[self.freq_THz > 0.8 * self.nyquist_THz].sum() / tot) if tot > 0 else float("nan")

    def thermal(self, temperature_K: float) -> dict[str, float]:
        """Harmonic quantum thermodynamics per atom at ``temperature_K`` (see :func:`harmonic_thermal_properties`)."""
        return harmonic_thermal_properties(self.freq_THz, self.mode_weights, temperature_K)


def _trapezoid_weights(x: np.ndarray) -> np.ndarray:
    """Weights ``w`` with ``Σ w f = np.trapezoid(f, x)``, shape like x."""
    w = np.zeros(len(x))
    if len(x) < 2:
        return w
    d = np.diff(x)
    w[:-1] += 0.5 * d
    w[1:] += 0.5 * d
    return w


def _mass_weighted_acf(v: np.ndarray, masses: np.ndarray, n_lag: int, chunk: int = 64) -> np.ndarray:
    """Time-origin averaged ``(1/N) Σ m_i ⟨v_i(t)·v_i(t+τ)⟩`` for τ = 0..n_lag-1 frames.

    Parameters
    ----------
    v : ndarray, shape (n_atoms, n_frames, 3)
    masses : ndarray, shape (n_atoms,)
    n_lag : int

    Returns
    -------
    ndarray, shape (n_lag,)
    """
    n, T, _ = v.shape
    nfft = 1 << int(math.ceil(math.log2(2 * T)))
    acc = np.zeros(T)
    for a in range(0, n, chunk):
        x = v[a : a + chunk]
        f = np.fft.rfft(x, n=nfft, axis=1)
        p = (f.real**2 + f.imag**2).sum(axis=2)  # (chunk, nfft//2+1), summed over x, y, z
        acf = np.fft.irfft(p, n=nfft, axis=1)[:, :T]
        acc += (masses[a : a + chunk, None] * acf).sum(axis=0)
    acc /= (T - np.arange(T)) * n
    return acc[:n_lag]


def _spectrum(c: np.ndarray, dt_ps: float, pad: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """One-sided spectrum ``S(ν) = 4 Σ' C(τ) w(τ) cos(2πντ) Δt`` of a windowed ACF.

    Returns
    -------
    freq_THz, S : ndarray, shape (n_freq,)
        Frequencies 0..ν_N (1/ps = THz); ``S`` in units of ``C`` × ps.
    """
    L = len(c)
    w = 0.5 * (1.0 + np.cos(np.pi * np.arange(L) / L))
    cw = c * w
    nfft = max(pad * 2 * L, 16)
    spec = np.fft.rfft(cw, n=nfft).real
    s = 2.0 * dt_ps * (2.0 * spec - cw[0])
    freq = np.fft.rfftfreq(nfft, dt_ps)
    return freq, s


def _finish_vdos(freq: np.ndarray, s: np.ndarray, c: np.ndarray, dt_ps: float, n_atoms: int, source: str,
                 masses_known: bool, label: str) -> VDOS:
    total = float(np.trapezoid(s, freq))  # = C(0) for velocities (Parseval), the sinc-corrected C(0) otherwise
    s = np.clip(s, 0.0, None)  # the window leaves small negative side lobes next to sharp peaks
    norm = float(np.trapezoid(s, freq))
    if not np.isfinite(total) or total <= 0 or norm <= 0:
        raise AnalysisError(f"VDOS of {label}: zero or invalid spectral weight (atoms do not move?)")
    g = 3.0 * s / norm
    t_kin = total * AMU_A2_PS2_TO_EV / (3.0 * KB_EV_PER_K) if masses_known else float("nan")
    out = VDOS(freq, g, n_atoms, 0.5 / dt_ps, source, t_kin, np.arange(len(c)) * dt_ps, c / c[0] if c[0] else c)
    frac = out.weight_near_nyquist
    if frac > 0.01:
        logger.warning(
            "VDOS of %s (%s): %.1f%% of the modes lie above 0.8 x the Nyquist frequency %.2f THz of frames %.4g ps "
            "apart: the spectrum is cut there (weight above it is aliased); vibrational descriptors are biased. "
            "Store frames more often.", label, source, 100 * frac, out.nyquist_THz, dt_ps)
    return out


def _n_lag(n_frames: int, dt_ps: float, max_lag_ps: float | None) -> int:
    n = n_frames // 2
    if max_lag_ps is not None:
        n = min(n, int(round(max_lag_ps / dt_ps)) + 1)
    if n < 4:
        raise AnalysisError(f"too few frames ({n_frames}) for a VDOS (need at least 8)")
    return n


def vdos_from_velocities(
    velocities: np.ndarray,
    dt_ps: float,
    masses: np.ndarray | None = None,
    max_lag_ps: float | None = 10.0,
    label: str = "atoms",
) -> VDOS:
    """VDOS from velocities (see the module docstring for the formulas).

    Parameters
    ----------
    velocities : ndarray, shape (n_atoms, n_frames, 3)
        Å/ps, evenly spaced frames.
    dt_ps : float
        Time between frames, ps.
    masses : ndarray, shape (n_atoms,), optional
        amu; default all 1 (then ``T_kinetic_K`` is NaN).
    max_lag_ps : float, optional
        Longest VACF lag (window length); default 10 ps, at most half the run.
        The frequency resolution is about ``1/max_lag``.
    label : str
        Name of the group in messages.

    Returns
    -------
    VDOS
    """
    v = np.asarray(velocities, dtype=np.float64)
    if v.ndim != 3 or v.shape[2] != 3:
        raise AnalysisError(f"velocities must have shape (n_atoms, n_frames, 3), got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise AnalysisError(f"velocities of {label} contain NaN/inf")
    if dt_ps <= 0:
        raise AnalysisError(f"time between frames must be > 0, got {dt_ps}")
    m = np.ones(v.shape[0]) if masses is None else np.asarray(masses, dtype=np.float64)
    c = _mass_weighted_acf(v, m, _n_lag(v.shape[1], dt_ps, max_lag_ps))
    freq, s = _spectrum(c, dt_ps)
    return _finish_vdos(freq, s, c, dt_ps, v.shape[0], "velocities", masses is not None, label)


def vdos_from_positions(
    positions: np.ndarray,
    dt_ps: float,
    masses: np.ndarray | None = None,
    max_lag_ps: float | None = 10.0,
    label: str = "atoms",
) -> VDOS:
    """VDOS from unwrapped positions by mid-point central differences.

    The transfer function ``sinc(νΔt) = sin(πνΔt)/(πνΔt)`` of the difference is
    divided out (exact below the Nyquist frequency for a band-limited motion).

    Parameters
    ----------
    positions : ndarray, shape (n_atoms, n_frames, 3)
        Unwrapped positions, Å.
    dt_ps, masses, max_lag_ps, label
        As in :func:`vdos_from_velocities`.
    """
    x = np.asarray(positions, dtype=np.float64)
    if x.ndim != 3 or x.shape[2] != 3:
        raise AnalysisError(f"positions must have shape (n_atoms, n_frames, 3), got {x.shape}")
    if dt_ps <= 0:
        raise AnalysisError(f"time between frames must be > 0, got {dt_ps}")
    v = np.diff(x, axis=1) / dt_ps
    m = np.ones(v.shape[0]) if masses is None else np.asarray(masses, dtype=np.float64)
    c = _mass_weighted_acf(v, m, _n_lag(v.shape[1], dt_ps, max_lag_ps))
    freq, s = _spectrum(c, dt_ps)
    s = s / np.sinc(freq * dt_ps) ** 2  # np.sinc(y) = sin(πy)/(πy); ≥ 4/π² at the Nyquist frequency
    return _finish_vdos(freq, s, c, dt_ps, v.shape[0], "positions", masses is not None, label)


def harmonic_thermal_properties(freq_THz: np.ndarray, modes: np.ndarray, temperature_K: float) -> dict[str, float]:
    """Harmonic quantum C_v, S and F of a set of modes, per atom.

    Parameters
    ----------
    freq_THz : ndarray, shape (n,)
        Mode frequencies, THz. Modes at ν ≤ 0 are left out.
    modes : ndarray, shape (n,)
        Number of modes per atom at each frequency (e.g. ``g(ν) Δν``; sums to 3).
    temperature_K : float

    Returns
    -------
    dict
        ``heat_capacity_kB_per_atom``, ``vib_entropy_kB_per_atom``,
        ``vib_free_energy_meV_per_atom``, ``zero_point_energy_meV_per_atom``.
    """
    if not temperature_K or temperature_K <= 0 or not np.isfinite(temperature_K):
        raise AnalysisError(f"temperature must be > 0 K for thermal properties, got {temperature_K}")
    nu = np.asarray(freq_THz, float)
    w = np.asarray(modes, float)
    keep = nu > 0
    nu, w = nu[keep], w[keep]
    e_mev = nu * THZ_TO_MEV
    kt_mev = KB_EV_PER_K * 1e3 * temperature_K
    x = e_mev / kt_mev
    em = np.exp(-x)
    om = -np.expm1(-x)  # 1 - e^-x, accurate for small x
    cv = float(np.dot(w, x**2 * em / om**2))
    s = float(np.dot(w, x * em / om - np.log(om)))
    zpe = float(np.dot(w, e_mev / 2))
    f = float(np.dot(w, e_mev / 2 + kt_mev * np.log(om)))
    return {
        "heat_capacity_kB_per_atom": cv,
        "vib_entropy_kB_per_atom": s,
        "vib_free_energy_meV_per_atom": f,
        "zero_point_energy_meV_per_atom": zpe,
    }


#: most windows over which the nearest-neighbour distance of the Lindemann ratio is averaged
LINDEMANN_MAX_WINDOWS = 16


def window_mean_positions(positions: np.ndarray, dt_ps: float, window_ps: float = 1.0,
                          max_windows: int = LINDEMANN_MAX_WINDOWS) -> np.ndarray:
    """Positions averaged over non-overlapping windows spread evenly over the run.

    Parameters
    ----------
    positions : ndarray, shape (n_atoms, n_frames, 3)
        Unwrapped positions, Å.
    dt_ps : float
        Time between frames, ps.
    window_ps : float
        Window length, ps (at least 3 frames, at most the run).
    max_windows : int
        Most windows returned (evenly spaced over the run).

    Returns
    -------
    ndarray, shape (n_windows, n_atoms, 3)
        Mean position of every atom in each window, Å.
    """
    n_frames = positions.shape[1]
    n_win = min(max(3, int(round(window_ps / dt_ps)) | 1), n_frames)
    n_blocks = max(1, n_frames // n_win)
    picks = np.unique(np.rint(np.linspace(0, n_blocks - 1, min(n_blocks, max_windows))).astype(np.int64))
    return np.stack([positions[:, b * n_win:(b + 1) * n_win].mean(axis=1) for b in picks])


def lindemann_ratio(positions: np.ndarray, dt_ps: float, box: np.ndarray, all_mean_positions: np.ndarray,
                    group_index: np.ndarray, window_ps: float = 1.0) -> float:
    """Lindemann ratio of a group (see the module docstring).

    Parameters
    ----------
    positions : ndarray, shape (n_group, n_frames, 3)
        Unwrapped positions of the group, Å.
    dt_ps : float
        Time between frames, ps.
    box : ndarray, shape (6,)
        Cell lengths (Å) and angles (degrees).
    all_mean_positions : ndarray, shape (n_windows, n_atoms, 3) or (n_atoms, 3)
        Window-averaged positions of all atoms, Å (:func:`window_mean_positions`); the nearest-neighbour
        distance is averaged over the windows.
    group_index : ndarray of int, shape (n_group,)
        Indices of the group's atoms in ``all_mean_positions``.
    window_ps : float
        Running-mean window, ps.

    Returns
    -------
    float
        ``√⟨|u|²⟩ / d_nn`` (dimensionless), NaN for an empty group.
    """
    from MDAnalysis.lib.distances import calc_bonds, distance_array
    from scipy.ndimage import uniform_filter1d

    if len(positions) == 0:
        return float("nan")
    n_win = max(3, int(round(window_ps / dt_ps)) | 1)
    n_win = min(n_win, positions.shape[1])
    mean = uniform_filter1d(positions, size=n_win, axis=1, mode="nearest")
    msd = float(np.mean(np.sum((positions - mean) ** 2, axis=2)))
    means = np.asarray(all_mean_positions, np.float64)
    if means.ndim == 2:
        means = means[None]
    idx = np.asarray(group_index, dtype=np.int64)
    box32 = np.asarray(box, np.float32)
    d_nn_w = []
    for w, frame in enumerate(means):
        d = distance_array(frame[idx], frame, box=box32)
        d[np.arange(len(idx)), idx] = np.inf
        nearest = d.argmin(axis=1)
        # the neighbour is chosen in this window and its distance measured in the next one: the minimum over
        # noisy distances is biased low, a distance measured with independent noise is not
        other = means[(w + 1) % len(means)]
        d_nn_w.append(float(np.mean(calc_bonds(other[idx], other[nearest], box=box32))))
    d_nn = float(np.mean(d_nn_w))
    return math.sqrt(msd) / d_nn if d_nn > 0 else float("nan")


def green_kubo_diffusion(velocities: np.ndarray, dt_ps: float, time_ps: float = 2.0) -> float:
    """Tracer diffusion coefficient from the velocity autocorrelation (Green–Kubo).

    ``D = (1/3) ∫_0^τ ⟨v(0)·v(t)⟩ dt`` averaged over atoms and time origins,
    integrated (trapezoid) up to ``τ = time_ps``: a cross-check of D* from the
    MSD that uses the same velocities as the VDOS (noisy when D is small).

    Parameters
    ----------
    velocities : ndarray, shape (n_atoms, n_frames, 3)
        Å/ps.
    dt_ps : float
    time_ps : float

    Returns
    -------
    float
        cm²/s (NaN when the run is shorter than ``2 time_ps``).
    """
    n = int(round(time_ps / dt_ps)) + 1
    if velocities.shape[1] < 2 * n or len(velocities) == 0:
        return float("nan")
    c = _mass_weighted_acf(np.asarray(velocities, float), np.ones(len(velocities)), n)
    return float(np.trapezoid(c, dx=dt_ps) / 3.0 * A2_PER_PS_TO_CM2_PER_S)


# ---------------------------------------------------------------------------
# reading every atom (positions and velocities)


@dataclass
class AllAtomTrajectory:
    """Unwrapped positions (and velocities when stored) of every atom.

    Attributes
    ----------
    positions : ndarray, shape (n_atoms, n_frames, 3)
        Å, unwrapped (no drift removal).
    velocities : ndarray, shape (n_atoms, n_frames, 3) or None
        Å/ps, from the file.
    times_ps : ndarray, shape (n_frames,)
    masses : ndarray, shape (n_atoms,)
        amu.
    box : ndarray, shape (6,)
    species : ndarray of str, shape (n_atoms,)
    """

    positions: np.ndarray
    velocities: np.ndarray | None
    times_ps: np.ndarray
    masses: np.ndarray
    box: np.ndarray
    species: np.ndarray

    @property
    def timestep_ps(self) -> float:
        return float(self.times_ps[1] - self.times_ps[0])


def read_all_atoms(
    trajectories: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    topology: str | None = None,
    *,
    timestep_ps: float | None = None,
    md_timestep_ps: float | None = None,
    lammps_units: str = "metal",
    reader_kwargs: dict[str, Any] | None = None,
    stop: int | None = None,
    times_ps: np.ndarray | None = None,
) -> AllAtomTrajectory:
    """Read every atom of a run: unwrapped positions and, when the files have them, velocities.

    The frames are read by the analysis' own path (:func:`iondiff_stream.io.collect_positions`: the same
    unwrapping, frame checks and time rules) with every atom selected and no drift removal; velocities come
    with it where the formats table says the file has them (:func:`iondiff_stream.io.formats.velocity_reading`:
    LAMMPS dumps through MDAnalysis's reader, which gives ``vx vy vz``; extended XYZ / ASE ``momenta``).

    Parameters
    ----------
    trajectories, topology, timestep_ps, md_timestep_ps
        As in :func:`iondiff_stream.analyze_run`: frame times are
        ``step × md_timestep_ps`` (LAMMPS dumps), else ``index × timestep_ps``,
        else the times in the file.
    lammps_units : str
        LAMMPS unit style of dump velocities (converted to Å/ps); ignored for
        other formats.
    reader_kwargs : dict, optional
        Passed to :func:`iondiff_stream.io.load_universe` (e.g. ``length_scale``).
    stop : int, optional
        Read frames ``0..stop-1`` only (default: all).
    times_ps : ndarray, optional
        Frame times (e.g. those of the analysis), instead of the rules above.

    Notes
    -----
    Memory: two float64 arrays of ``n_atoms × n_frames × 3`` (positions and
    velocities), e.g. 1.0 GB for 1000 atoms and 20 000 frames.

    Raises
    ------
    TrajectoryFormatError
        NaN/inf coordinates or velocities, no box, atoms without a mass.
    TimestepError
        Frame times unknown or not evenly spaced.
    """
    paths = [os.fspath(trajectories)] if isinstance(trajectories, (str, os.PathLike)) else [os.fspath(t) for t in trajectories]
    kw = dict(reader_kwargs or {})
    vel_format, vel_scale = velocity_reading(paths[0], lammps_units)  # the formats table
    if vel_format is not None:
        kw.setdefault("format", vel_format)  # e.g. MDAnalysis's LAMMPS dump reader: it reads vx vy vz
    u = load_universe(paths, topology, **kw)
    ag = u.atoms
    n = len(ag)
    given = None if times_ps is None else np.asarray(times_ps, float)
    if given is not None:  # the caller's clock (the analysis'): any positive spacing reads the frames
        timestep_ps, md_timestep_ps = (float(given[1] - given[0]) if len(given) > 1 else 1.0), None
    data = collect_positions(u, ag, remove_drift=False, timestep_ps=timestep_ps, md_timestep_ps=md_timestep_ps,
                             stop=stop, out_of_core=False, velocities=True, velocity_scale=vel_scale,
                             force_timestep=given is not None)
    n_frames = data.n_frames
    if given is not None:
        t = given[:n_frames]
        if len(t) != n_frames:
            raise TimestepError(f"{len(t)} frame times given for {n_frames} frames")
    else:
        t = data.times_ps
    t = t - t[0]
    if n_frames > 1:
        dtt = np.diff(t)
        if np.any(dtt <= 0) or not np.allclose(dtt, dtt[0], rtol=1e-4, atol=1e-9):
            raise TimestepError(f"{paths[0]}: frames are not evenly spaced in time (dt {dtt.min():.6g}..{dtt.max():.6g} "
                                "ps): the VDOS needs a uniform time grid")
    pos = np.ascontiguousarray(data.positions.transpose(1, 0, 2))
    vel = None if data.velocities is None else np.ascontiguousarray(data.velocities.transpose(1, 0, 2))
    box0 = data.box
    if vel is not None and not np.all(np.isfinite(vel)):
        raise TrajectoryFormatError(f"{', '.join(paths)}: NaN/inf velocities")
    species = _species_of(ag)
    masses = np.array(ag.masses, dtype=np.float64) if hasattr(ag, "masses") else np.zeros(n)
    bad = ~(masses > 0)
    if bad.any():  # e.g. topologies whose mass guess failed: standard atomic masses of the element symbols (ASE)
        from ase.data import atomic_masses, atomic_numbers

        for i in np.flatnonzero(bad):
            z = atomic_numbers.get(str(species[i]).capitalize())
            if z is not None:
                masses[i] = float(atomic_masses[z])
    if np.any(~(masses > 0)):
        unknown = sorted({str(x) for x in species[~(masses > 0)]})
        raise TrajectoryFormatError(
            f"{paths[0]}{f' (+{len(paths) - 1} files)' if len(paths) > 1 else ''}: no mass for atoms of type/species "
            f"{', '.join(unknown)} (the VDOS is mass weighted): give a topology with masses"
        )
    return AllAtomTrajectory(pos, vel, t, masses, box0, species)


def _species_of(ag: Any) -> np.ndarray:
    """Element symbols (from elements, names or masses as :mod:`iondiff_stream.io` guesses them), else types."""
    el = elements_of(ag)
    if el is not None and not np.any(el == ""):
        return np.array([str(e) for e in el], dtype=object)
    return np.array([str(t) for t in ag.types], dtype=object)


# ---------------------------------------------------------------------------
# descriptors


def _nan_group(suffix: str) -> dict[str, float]:
    keys = ["mean_phonon_freq_THz", "low_freq_weight_below_30meV", "low_freq_mean_below_30meV_meV",
            "heat_capacity_kB_per_atom", "vib_entropy_kB_per_atom", "vib_free_energy_meV_per_atom",
            "debye_temperature_K", "lindemann_ratio", "T_kinetic_K", "n_atoms"]
    out = {k + suffix: float("nan") for k in keys}
    out["n_atoms" + suffix] = 0
    return out


def vdos_descriptors(v: VDOS, temperature_K: float | None, suffix: str = "") -> dict[str, float]:
    """Scalar descriptors of one VDOS (moments, low-frequency part, thermodynamics at ``temperature_K``).

    Returns
    -------
    dict
        ``mean_phonon_freq_THz``, ``low_freq_weight_below_30meV`` (modes per
        atom below 30 meV, of 3), ``low_freq_mean_below_30meV_meV``,
        ``debye_temperature_K``, ``heat_capacity_kB_per_atom``,
        ``vib_entropy_kB_per_atom``, ``vib_free_energy_meV_per_atom``,
        ``T_kinetic_K``, ``n_atoms``, each name + ``suffix``.
    """
    w = v.mode_weights
    tot = w.sum()
    nu = v.freq_THz
    e = nu * THZ_TO_MEV
    low = e < LOW_FREQ_MEV
    out = {
        "mean_phonon_freq_THz": float(np.dot(w, nu) / tot),
        "low_freq_weight_below_30meV": float(3.0 * w[low].sum() / tot),
        "low_freq_mean_below_30meV_meV": float(np.dot(w[low], e[low]) / w[low].sum()) if w[low].sum() > 0 else float("nan"),
        "debye_temperature_K": float(H_EV_S * 1e12 / KB_EV_PER_K * math.sqrt(5.0 / 3.0 * np.dot(w, nu**2) / tot)),
        "T_kinetic_K": v.T_kinetic_K,
        "n_atoms": v.n_atoms,
    }
    if temperature_K:
        th = v.thermal(temperature_K)
        out.update({k: th[k] for k in ("heat_capacity_kB_per_atom", "vib_entropy_kB_per_atom",
                                       "vib_free_energy_meV_per_atom")})
    else:
        out.update({"heat_capacity_kB_per_atom": float("nan"), "vib_entropy_kB_per_atom": float("nan"),
                    "vib_free_energy_meV_per_atom": float("nan")})
    return {k + suffix: val for k, val in out.items()}


def vibrational_descriptors(
    traj: AllAtomTrajectory,
    groups: dict[str, np.ndarray],
    temperature_K: float | None,
    *,
    source: str = "auto",
    max_lag_ps: float | None = 10.0,
    lindemann_window_ps: float = 1.0,
    gk_time_ps: float = 2.0,
) -> tuple[dict[str, float], dict[str, VDOS]]:
    """Vibrational descriptors of several groups of atoms of one run.

    Parameters
    ----------
    traj : AllAtomTrajectory
    groups : dict
        Group name (a key of :data:`GROUP_SUFFIXES`) -> atom indices (into ``traj``).
    temperature_K : float or None
        For C_v, S and F (NaN without it).
    source : {"auto", "velocities", "positions"}
        ``auto``: velocities when the trajectory has them.
    max_lag_ps, lindemann_window_ps : float
    gk_time_ps : float
        Upper limit of the Green–Kubo integral of ``D_vacf_cm2_s``.

    Returns
    -------
    values : dict
        Descriptors with units and group suffixes, plus ``vdos_source``,
        ``nyquist_THz`` and ``vdos_weight_near_nyquist`` (of the whole system).
    vdos : dict
        Group name -> :class:`VDOS` (groups with atoms only).
    """
    if source not in ("auto", "velocities", "positions"):
        raise ValueError(f"source must be auto, velocities or positions, got {source!r}")
    use_v = traj.velocities is not None and source != "positions"
    if source == "velocities" and traj.velocities is None:
        raise AnalysisError("the trajectory has no velocities (source='velocities')")
    dt = traj.timestep_ps
    com = None
    if use_v:
        m = traj.masses
        com = np.einsum("i,itk->tk", m, traj.velocities) / m.sum()  # centre-of-mass velocity per frame
    else:
        m = traj.masses
        com_x = np.einsum("i,itk->tk", m, traj.positions) / m.sum()
    means = window_mean_positions(traj.positions, dt, lindemann_window_ps)  # d_nn of the Lindemann ratio
    values: dict[str, Any] = {}
    spectra: dict[str, VDOS] = {}
    for name, idx in groups.items():
        suffix = GROUP_SUFFIXES[name]
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) == 0:
            values.update(_nan_group(suffix))
            continue
        if use_v:
            v = traj.velocities[idx] - com[None]
            spec = vdos_from_velocities(v, dt, traj.masses[idx], max_lag_ps, label=name)
        else:
            x = traj.positions[idx] - com_x[None]
            spec = vdos_from_positions(x, dt, traj.masses[idx], max_lag_ps, label=name)
        spectra[name] = spec
        values.update(vdos_descriptors(spec, temperature_K, suffix))
        if name == "mobile":
            # aliasing folds vibrations near 2 nu_N onto nu ~ 0 (= D): no Green-Kubo D from a cut spectrum
            vv = v if use_v else np.diff(x, axis=1) / dt
            values["D_vacf_cm2_s"] = (green_kubo_diffusion(vv, dt, gk_time_ps) if spec.weight_near_nyquist <= 0.01
                                      else float("nan"))
        values["lindemann_ratio" + suffix] = lindemann_ratio(traj.positions[idx], dt, traj.box, means, idx,
                                                             lindemann_window_ps)
    all_idx = np.arange(len(traj.masses))
    if use_v:
        whole = vdos_from_velocities(traj.velocities - com[None], dt, traj.masses, max_lag_ps, label="all atoms")
    else:
        whole = vdos_from_positions(traj.positions - com_x[None], dt, traj.masses, max_lag_ps, label="all atoms")
    spectra["all"] = whole
    values.update(vdos_descriptors(whole, temperature_K, "_all"))
    values["n_atoms_all"] = len(all_idx)
    values["T_kinetic_over_T"] = whole.T_kinetic_K / temperature_K if temperature_K else float("nan")
    if temperature_K and abs(values["T_kinetic_over_T"] - 1.0) > 0.25:
        logger.warning(
            "the VDOS carries a kinetic temperature of %.0f K, the run is at %.0f K: frames too far apart (aliasing) "
            "or smoothed/processed coordinates; the vibrational descriptors of this run are unreliable",
            whole.T_kinetic_K, temperature_K)
    values["vdos_source"] = "velocities" if use_v else "positions"
    values["nyquist_THz"] = whole.nyquist_THz
    values["vdos_weight_near_nyquist"] = whole.weight_near_nyquist
    return values, spectra


def _hop_table(run: Any) -> dict[str, np.ndarray]:
    """Completed hops as column arrays (works with HopTable-like objects and mappings)."""
    tab = run.hops.hops if hasattr(run.hops, "hops") else run.hops
    if hasattr(tab, "closed"):
        tab = tab.closed()
        cols = tab.columns if hasattr(tab, "columns") else tab
        return {k: np.asarray(cols[k]) for k in cols}
    cols = {k: np.asarray(tab[k]) for k in tab}
    if "open" in cols:
        keep = ~cols["open"].astype(bool)
        cols = {k: v[keep] for k, v in cols.items()}
    return cols


def _stat(a: np.ndarray, fn: Any) -> float:
    a = np.asarray(a, float)
    a = a[np.isfinite(a)]
    return float(fn(a)) if len(a) else float("nan")


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return float("nan")
    return f if math.isfinite(f) else float("nan")


def _residences(run: Any) -> tuple[np.ndarray, np.ndarray]:
    """Durations (ps) and metastable flags of the complete residences of an analysed run.

    Accepts a residence table with ``duration_ps``/``metastable`` arrays, or a
    list of dicts with ``run.metastable`` alongside.
    """
    res = getattr(run, "residences", None)
    if res is None:
        return np.zeros(0), np.zeros(0, bool)
    if hasattr(res, "duration_ps"):
        dur = np.asarray(res.duration_ps, float)
        meta = np.asarray(getattr(res, "metastable", np.zeros(len(dur), bool)), bool)
        return dur, meta
    res = list(res)
    dur = np.array([r["duration_ps"] for r in res], float)
    meta = np.asarray(getattr(run, "metastable", np.zeros(len(dur), bool)), bool)
    return dur, meta


def hop_descriptors(run: Any) -> dict[str, float]:
    """Hop, transport and concert descriptors of an analysed run.

    Parameters
    ----------
    run : RunAnalysis
        Result of :func:`iondiff_stream.analyze_run` (uses its hop table, with
        column ``ion``, ``length_A``, ``duration_ps``, its summary and residences).

    Returns
    -------
    dict
        See the module docstring; NaN where undefined (e.g. no hops).
    """
    s = run.summary
    cols = _hop_table(run)
    n_mobile = int(s.get("n_mobile") or run.data.n_mobile)
    total = _num(s.get("total_time_ps"))
    ions = cols.get("ion", np.zeros(0, int))
    n_hops = len(ions)
    per_ion = np.bincount(ions.astype(np.int64), minlength=n_mobile) if n_hops else np.zeros(n_mobile)
    out: dict[str, float] = {
        "n_hops": n_hops,
        "fraction_diffusive_ions": float(np.count_nonzero(per_ion) / n_mobile) if n_mobile else float("nan"),
        "hop_length_mean_A": _stat(cols.get("length_A", []), np.mean),
        "hop_length_min_A": _stat(cols.get("length_A", []), np.min),
        "hop_length_max_A": _stat(cols.get("length_A", []), np.max),
        "hop_duration_mean_ps": _stat(cols.get("duration_ps", []), np.mean),
        "hop_duration_min_ps": _stat(cols.get("duration_ps", []), np.min),
        "hop_duration_max_ps": _stat(cols.get("duration_ps", []), np.max),
        "hop_frequency_per_ps": n_hops / (n_mobile * total) if n_mobile and total > 0 else float("nan"),
        "hop_frequency_max_ion_per_ps": float(per_ion.max() / total) if n_hops and total > 0 else float("nan"),
    }
    dur, meta = _residences(run)
    if len(dur) == len(meta) and meta.any():
        inter = dur[meta]
        out.update({"residence_time_mean_ps": float(inter.mean()), "residence_time_min_ps": float(inter.min()),
                    "residence_time_max_ps": float(inter.max())})
    else:
        out.update({"residence_time_mean_ps": _num(s.get("mean_residence_time_ps")),
                    "residence_time_min_ps": float("nan"), "residence_time_max_ps": float("nan")})
    for key in ("D_tracer_cm2_s", "D_sigma_cm2_s", "haven_ratio", "sigma_NE_mS_cm", "mean_correlated_ions",
                "std_correlated_ions", "fraction_hops_concerted", "hop_frequency_ratio_groups_over_events",
                "concert_p_value", "concert_p_value_mean_size", "null_fraction_hops_concerted_mean",
                "excess_fraction_hops_concerted", "null_mean_correlated_ions", "concerted_mode_pairs",
                "concerted_mode_excess_pairs", "concerted_mode_p_value"):
        out[key] = _num(s.get(key))
    # why a transport number is missing (too short, no long-range diffusion, zero charge, not resolved): the
    # database leaves such values out of its statistics and lists them with this status
    for q in ("D_tracer", "D_sigma", "haven_ratio", "sigma_NE"):
        if s.get(f"{q}_status") is not None:
            out[f"{q}_status"] = str(s[f"{q}_status"])  # type: ignore[assignment]
    fit = s.get("group_size_fit") or {}
    out["group_size_decay_b"] = _num(fit.get("b")) if isinstance(fit, dict) else float("nan")
    return out


@dataclass
class RunDescriptors:
    """Descriptors of one run.

    Attributes
    ----------
    values : dict
        Name (units in it) -> number (or a short string for ``vdos_source``).
    vdos : dict
        Group name -> :class:`VDOS`.
    group_size_hist : list of int
        Concerted-group sizes n = 1..20 (counts).
    """

    values: dict[str, Any]
    vdos: dict[str, VDOS]
    group_size_hist: list[int] = field(default_factory=list)

    def save_vdos(self, path: str) -> None:
        """Write the spectra to an ``.npz`` (``freq_THz_GROUP``, ``dos_per_THz_GROUP``, ``vacf_GROUP``, ...)."""
        arrays: dict[str, np.ndarray] = {}
        for name, v in self.vdos.items():
            arrays[f"freq_THz_{name}"] = v.freq_THz
            arrays[f"dos_per_THz_{name}"] = v.dos_per_THz
            arrays[f"vacf_time_ps_{name}"] = v.vacf_time_ps
            arrays[f"vacf_{name}"] = v.vacf
        np.savez_compressed(path, **arrays)


def run_descriptors(
    run: Any,
    trajectories: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    topology: str | None = None,
    *,
    temperature_K: float | None = None,
    timestep_ps: float | None = None,
    md_timestep_ps: float | None = None,
    lammps_units: str = "metal",
    source: str = "auto",
    max_lag_ps: float | None = 10.0,
    lindemann_window_ps: float = 1.0,
    reader_kwargs: dict[str, Any] | None = None,
    max_frames: int | None = 50_000,
) -> RunDescriptors:
    """All descriptors of a run already analysed by :func:`iondiff_stream.analyze_run`.

    Diffusive ions are the mobile ions with at least one completed hop in
    ``run``'s hop table. The trajectory is read again for every atom
    (positions, and velocities when stored).

    Parameters
    ----------
    run : RunAnalysis
    trajectories, topology, timestep_ps, md_timestep_ps, reader_kwargs
        The same as given to ``analyze_run``.
    temperature_K : float, optional
        Default: the run summary's temperature.
    lammps_units, source, max_lag_ps, lindemann_window_ps
        See :func:`read_all_atoms` and :func:`vibrational_descriptors`.
    max_frames : int, optional
        The vibrational descriptors use at most the first ``max_frames``
        frames (memory grows with atoms × frames; the VDOS converges long
        before); None: all. Hop and transport descriptors always use the whole run.
    """
    T = temperature_K if temperature_K is not None else run.summary.get("temperature_K")
    n_use = run.data.n_frames if max_frames is None else min(run.data.n_frames, int(max_frames))
    if n_use < run.data.n_frames:
        logger.info("vibrational descriptors from the first %d of %d frames", n_use, run.data.n_frames)
    traj = read_all_atoms(trajectories, topology, timestep_ps=timestep_ps, md_timestep_ps=md_timestep_ps,
                          lammps_units=lammps_units, reader_kwargs=reader_kwargs, stop=n_use,
                          times_ps=np.asarray(run.data.times_ps)[:n_use])
    mobile_idx = np.asarray(run.data.atom_indices, dtype=np.int64)
    if traj.positions.shape[1] != n_use:
        raise AnalysisError(f"the trajectory gave {traj.positions.shape[1]} frames for the VDOS, the analysis {n_use}")
    cols = _hop_table(run)
    hopped = np.unique(np.asarray(cols.get("ion", []), dtype=np.int64))
    is_d = np.zeros(len(mobile_idx), bool)
    is_d[hopped] = True
    framework = np.setdiff1d(np.arange(len(traj.masses)), mobile_idx)
    groups = {"mobile": mobile_idx, "diffusive": mobile_idx[is_d], "nondiffusive": mobile_idx[~is_d],
              "framework": framework}
    vib, spectra = vibrational_descriptors(traj, groups, T, source=source, max_lag_ps=max_lag_ps,
                                           lindemann_window_ps=lindemann_window_ps)
    values: dict[str, Any] = {
        "temperature_K": _num(T),
        "n_frames": int(run.data.n_frames),
        "n_frames_vibrational": int(n_use),
        "timestep_ps": float(traj.timestep_ps),
        "total_time_ps": float(run.data.times_ps[-1] - run.data.times_ps[0]),
        "n_mobile": int(len(mobile_idx)),
    }
    values.update(hop_descriptors(run))
    values.update(vib)
    hist = list(run.summary.get("group_size_hist") or [])
    return RunDescriptors(values, spectra, [int(h) for h in hist])
