"""Transport from unwrapped positions: MSD by FFT, diffusion, Haven ratio, conductivity.

Definitions (Å, ps inside; results also in cm²/s and mS/cm):

* tracer MSD per ion and axis, averaged over **all time origins**:
  ``MSD_i,a(m) = < (x_i,a(t+m) - x_i,a(t))² >_t``, computed for all lags at once
  by the FFT autocorrelation (S1 - 2 S2 decomposition), O(T log T) per ion.
* collective (charge) MSD: the same of ``X(t) = Σ_i x_i(t)``, divided by N
  (pymatgen's ``mscd``), so that for uncorrelated ions it equals the tracer MSD.
* D from a least-squares line through the MSD over a lag window (default: the
  second half of the lags evaluated, which themselves go up to half the run),
  ``D = slope / (2 d)`` with d = 3 (or 1 per axis).
* Haven ratio ``H_R = D* / D_σ``; Nernst–Einstein ``σ = N q² D_σ / (V k_B T)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.fft import irfft, next_fast_len, rfft

from .errors import AnalysisError
from .units import A2_PER_PS_TO_CM2_PER_S, E_CHARGE_C, KB_J_PER_K

__all__ = [
    "msd_fft",
    "tracer_msd",
    "collective_msd",
    "fit_diffusion",
    "DiffusionFit",
    "nernst_einstein_mS_cm",
    "default_charge",
    "remove_drift",
    "van_hove",
]

_CHARGES = {"Li": 1, "Na": 1, "K": 1, "Ag": 1, "Cu": 1, "H": 1, "F": -1, "Cl": -1, "O": -2, "Mg": 2, "Zn": 2}


def default_charge(element: str) -> int:
    """Formal charge of common mobile ions (Li, Na, K, Ag, Cu, H: +1; F, Cl: -1; O: -2; Mg, Zn: +2)."""
    try:
        return _CHARGES[element]
    except KeyError:
        raise AnalysisError(f"no default charge for {element!r}: give the ionic charge explicitly") from None


def msd_fft(pos: np.ndarray, max_lag: int | None = None, block: int = 64) -> np.ndarray:
    """Per-particle, per-axis MSD over all time origins.

    Parameters
    ----------
    pos : ndarray, shape (n, T, 3)
        Unwrapped positions, Å.
    max_lag : int, optional
        Largest lag returned (default T - 1).
    block : int
        Particles transformed at once (bounds memory).

    Returns
    -------
    ndarray, shape (n, max_lag + 1, 3)
        MSD in Å² for lags 0..max_lag (frames).
    """
    n, T, dim = pos.shape
    L = T - 1 if max_lag is None else int(min(max_lag, T - 1))
    nfft = next_fast_len(2 * T, real=True)
    m = np.arange(L + 1)
    norm = (T - m)[None, :, None].astype(np.float64)
    out = np.empty((n, L + 1, dim))
    for s in range(0, n, block):
        x = np.asarray(pos[s : s + block], dtype=np.float64)
        x = x - x[:, :1, :]  # displacements: better conditioned, same MSD
        f = rfft(x, n=nfft, axis=1)
        s2 = irfft(f * np.conj(f), n=nfft, axis=1)[:, : L + 1, :] / norm
        sq = x * x
        csum = np.concatenate([np.zeros((x.shape[0], 1, dim)), np.cumsum(sq, axis=1)], axis=1)
        total = csum[:, -1:, :]
        # sum_{t=0}^{T-m-1} x(t)^2 + sum_{t=m}^{T-1} x(t)^2
        s1 = (csum[:, T - m, :] + (total - csum[:, m, :])) / norm
        out[s : s + block] = s1 - 2.0 * s2
    return np.maximum(out, 0.0) if L >= 0 else out


def tracer_msd(pos: np.ndarray, max_lag: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Tracer MSD averaged over ions.

    Returns
    -------
    msd : ndarray, shape (L + 1,)
        Total MSD, Å².
    msd_axes : ndarray, shape (L + 1, 3)
        Per-axis MSD, Å².
    """
    per = msd_fft(pos, max_lag)
    axes = per.mean(0)
    return axes.sum(1), axes


def collective_msd(pos: np.ndarray, max_lag: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Collective MSD ``MSD(Σ_i x_i) / N``.

    Returns
    -------
    msd : ndarray, shape (L + 1,)
    msd_axes : ndarray, shape (L + 1, 3)
    """
    n = pos.shape[0]
    com = pos.sum(0, keepdims=True)
    axes = msd_fft(com, max_lag)[0] / n
    return axes.sum(1), axes


@dataclass
class DiffusionFit:
    """Least-squares line through an MSD.

    Attributes
    ----------
    D_cm2_s : float
    D_A2_ps : float
    slope_A2_ps, intercept_A2 : float
    stderr_cm2_s : float
        Standard error of D from the regression (correlated MSD points make
        this an underestimate; see block/bootstrap estimates in reports).
    fit_start_ps, fit_end_ps : float
    """

    D_cm2_s: float
    D_A2_ps: float
    slope_A2_ps: float
    intercept_A2: float
    stderr_cm2_s: float
    fit_start_ps: float
    fit_end_ps: float


def fit_diffusion(
    lag_ps: np.ndarray, msd: np.ndarray, dim: int = 3, start: int | None = None, stop: int | None = None
) -> DiffusionFit:
    """Fit ``msd = 2 dim D t + b`` over lags ``[start, stop)`` (default: second half).

    Parameters
    ----------
    lag_ps : ndarray, shape (L,)
    msd : ndarray, shape (L,)
        Å².
    dim : int
        Dimensionality of the MSD (3 total, 1 per axis, 2 in-plane).
    """
    L = len(lag_ps)
    a = L // 2 if start is None else start
    b = L if stop is None else stop
    if b - a < 2:
        raise AnalysisError(f"too few lags ({b - a}) to fit a diffusion coefficient")
    t = np.asarray(lag_ps[a:b], float)
    y = np.asarray(msd[a:b], float)
    A = np.vstack([t, np.ones_like(t)]).T
    coef, res, *_ = np.linalg.lstsq(A, y, rcond=None)
    slope, icpt = float(coef[0]), float(coef[1])
    dof = max(len(t) - 2, 1)
    resid = y - A @ coef
    s2 = float(resid @ resid) / dof
    var_slope = s2 / float(((t - t.mean()) ** 2).sum()) if len(t) > 2 else float("nan")
    D = slope / (2 * dim)
    return DiffusionFit(
        D_cm2_s=D * A2_PER_PS_TO_CM2_PER_S,
        D_A2_ps=D,
        slope_A2_ps=slope,
        intercept_A2=icpt,
        stderr_cm2_s=float(np.sqrt(var_slope)) / (2 * dim) * A2_PER_PS_TO_CM2_PER_S,
        fit_start_ps=float(t[0]),
        fit_end_ps=float(t[-1]),
    )


def nernst_einstein_mS_cm(D_cm2_s: float, n_ions: int, volume_A3: float, temperature_K: float, charge: float) -> float:
    """Nernst–Einstein conductivity ``σ = N q² D / (V k_B T)`` in mS/cm.

    Parameters
    ----------
    D_cm2_s : float
        Diffusion coefficient (use D_σ for the collective conductivity).
    n_ions : int
        Number of mobile ions in ``volume_A3``.
    volume_A3 : float
    temperature_K : float
    charge : float
        Ionic charge in units of e.
    """
    if temperature_K <= 0:
        raise AnalysisError(f"temperature must be > 0 K, got {temperature_K}")
    n_per_m3 = n_ions / (volume_A3 * 1e-30)
    D_m2_s = D_cm2_s * 1e-4
    sigma_S_m = n_per_m3 * (charge * E_CHARGE_C) ** 2 * D_m2_s / (KB_J_PER_K * temperature_K)
    return float(sigma_S_m * 10.0)  # 1 S/m = 10 mS/cm


def remove_drift(mobile: np.ndarray, framework: np.ndarray) -> np.ndarray:
    """Subtract the mean framework displacement (pymatgen's convention, unweighted).

    Parameters
    ----------
    mobile : ndarray, shape (n, T, 3)
    framework : ndarray, shape (m, T, 3)
        Unwrapped framework positions.
    """
    drift = (framework - framework[:, :1, :]).mean(0)
    return mobile - drift[None, :, :]


def van_hove(
    pos: np.ndarray,
    box_matrix: np.ndarray,
    lags: np.ndarray,
    r_max: float = 10.0,
    n_bins: int = 101,
    origins: int | np.ndarray = 20,
    sigma: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Self and distinct parts of the van Hove correlation function.

    Parameters
    ----------
    pos : ndarray, shape (n, T, 3)
        Unwrapped positions, Å.
    box_matrix : ndarray, shape (3, 3)
        Lattice vectors (rows), Å, for minimum-image distinct distances.
    lags : ndarray of int, shape (L,)
        Lags in frames.
    r_max : float
    n_bins : int
        Radial grid ``linspace(0, r_max, n_bins)``.
    origins : int or ndarray
        Number of (evenly spaced) or explicit time origins.
    sigma : float
        Gaussian smearing of the histograms, Å (0: plain histogram).

    Returns
    -------
    r : ndarray, shape (n_bins,)
    gs : ndarray, shape (L, n_bins)
        Self part: probability density (per Å) of the displacement length,
        ``∫ gs dr = 1``.
    gd : ndarray, shape (L, n_bins)
        Distinct part ``G_d(r, t) / ρ`` (→ 1 at large r).
    """
    n, T, _ = pos.shape
    r = np.linspace(0, r_max, n_bins)
    dr = r[1] - r[0]
    lags = np.asarray(lags, dtype=int)
    if isinstance(origins, (int, np.integer)):
        t0 = np.linspace(0, T - 1 - lags.max(), int(origins)).astype(int)
    else:
        t0 = np.asarray(origins, int)
    inv = np.linalg.inv(box_matrix)
    vol = abs(np.linalg.det(box_matrix))
    rho = n / vol
    gs = np.zeros((len(lags), n_bins))
    gd = np.zeros((len(lags), n_bins))
    edges = np.concatenate([r - dr / 2, [r[-1] + dr / 2]])

    def hist(d: np.ndarray) -> np.ndarray:
        if sigma > 0:
            w = np.exp(-0.5 * ((r[None, :] - d[:, None]) / sigma) ** 2) / (np.sqrt(2 * np.pi) * sigma)
            return w.sum(0) * dr
        h, _ = np.histogram(d, bins=edges)
        return h.astype(float)

    for j, lag in enumerate(lags):
        for t in t0:
            a = pos[:, t, :]
            b = pos[:, t + lag, :]
            ds = np.linalg.norm(b - a, axis=1)
            gs[j] += hist(ds[ds <= r_max + 4 * max(sigma, dr)])
            v = b[None, :, :] - a[:, None, :]
            f = v @ inv
            v = (f - np.rint(f)) @ box_matrix
            dd = np.linalg.norm(v, axis=2)
            dd = dd[~np.eye(n, dtype=bool)]
            gd[j] += hist(dd[dd <= r_max + 4 * max(sigma, dr)])
    gs /= len(t0) * n * dr
    shell = 4 * np.pi * np.maximum(r, dr / 2) ** 2 * dr
    gd /= len(t0) * n * rho * shell[None, :]
    return r, gs, gd
