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
* **Generalised least squares with the MSD's covariance** (default,
  :func:`fit_diffusion_gls`), the approach of kinisi (McCluskey et al., JCTC
  2024): MSD points at different lags are strongly correlated; their
  covariance is approximated by ``Σ_ij = var(s_i) / n_j`` for lags
  ``i ≤ j``, with ``var(s_i)`` the variance of the squared displacements at lag
  i and ``n_j = N (T - 1) / j`` the number of independent observations at lag
  j; the matrix is brought to the nearest positive semi-definite correlation
  and pseudo-inverted, and the straight line's posterior (flat prior, D ≥ 0)
  is Gaussian with covariance ``(Xᵀ Σ⁺ X)⁻¹``. The fit runs from a start lag to
  the end of the run. The start of the diffusive regime is chosen from the
  data: the earliest start on a geometric grid whose D lies inside the 95 %
  interval of D for every later start (D has stopped drifting with the
  start). The 95 % interval pools the posteriors of the starts from the
  chosen one to twice it (equal weights), so it includes the fit-window
  choice.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.fft import irfft, next_fast_len, rfft

from iondiff_stream.core.errors import AnalysisError
from iondiff_stream.core.units import A2_PER_PS_TO_CM2_PER_S, E_CHARGE_C, KB_J_PER_K

__all__ = [
    "msd_fft",
    "tracer_msd",
    "collective_msd",
    "fit_diffusion",
    "DiffusionFit",
    "nernst_einstein_mS_cm",
    "default_charge",
    "van_hove",
    "pymatgen_window",
    "TransportResult",
    "analyse_transport",
    "arrhenius_fit",
    "GLSFit",
    "squared_displacement_variance",
    "fit_diffusion_gls",
    "ballistic_end_ps",
    "diffusive_regime_status",
    "MIN_RUN_OVER_BALLISTIC",
]

logger = logging.getLogger(__name__)

_CHARGES = {"Li": 1, "Na": 1, "K": 1, "Ag": 1, "Cu": 1, "H": 1, "F": -1, "Cl": -1, "O": -2, "Mg": 2, "Zn": 2}


def _finite(v: Any) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else float(v)


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


def msd_ion_blocks(pos: Any, max_lag: int, lags: np.ndarray | None = None, ion_block: int | None = None) -> np.ndarray:
    """Per-ion, per-axis MSD (by FFT), computed one ion block at a time.

    Parameters
    ----------
    pos : array-like, shape (n, T, 3)
        Unwrapped positions, Å, read as ``pos[s:e]`` per block (an ndarray or
        :class:`iondiff_stream.io.positions_store.IonMajorView` of an out-of-core store).
    max_lag : int
        Largest lag (frames).
    lags : ndarray of int, optional
        Lags kept (default all ``0..max_lag``).
    ion_block : int, optional
        Ions per FFT (default: as many as fit in 256 MiB of FFT work).

    Returns
    -------
    ndarray, shape (n, len(lags), 3)
        MSD in Å².
    """
    n, T, _ = pos.shape
    keep = np.arange(min(max_lag, T - 1) + 1) if lags is None else np.asarray(lags)
    block = ion_block or int(max(1, min(64, (256 << 20) // max(1, 320 * T))))
    out = np.empty((n, len(keep), 3))
    for s in range(0, n, block):
        e = min(n, s + block)
        m = msd_fft(pos[s:e], max_lag, block=block)
        out[s:e] = m if lags is None else m[:, keep]
    return out


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


def pymatgen_window(n_frames: int, n_ions: int, frame_dt_ps: float, min_obs: int = 30) -> np.ndarray:
    """Lags (frames) of pymatgen's ``smoothed="max"`` MSD fit.

    From 1 ps up to ``n_ions * n_frames // min_obs`` frames (at most the run),
    at most ~200 evenly spaced lags. Use with ``fit_diffusion(...,
    indices=..., inverse_time_weights=True)`` to reproduce
    pymatgen-analysis-diffusion's D.
    """
    min_dt = int(1.0 / frame_dt_ps + 1e-9)
    max_dt = min(n_ions * n_frames // min_obs, n_frames)
    if min_dt >= max_dt:
        raise AnalysisError("run too short for the pymatgen lag window (needs more than 1 ps of lags)")
    return np.arange(min_dt, max_dt, max(int((max_dt - min_dt) / 200), 1))


def fit_diffusion(
    lag_ps: np.ndarray,
    msd: np.ndarray,
    dim: int = 3,
    start: int | None = None,
    stop: int | None = None,
    indices: np.ndarray | None = None,
    inverse_time_weights: bool = False,
) -> DiffusionFit:
    """Fit ``msd = 2 dim D t + b`` over lags ``[start, stop)`` (default: second half).

    Parameters
    ----------
    lag_ps : ndarray, shape (L,)
    msd : ndarray, shape (L,)
        Å².
    dim : int
        Dimensionality of the MSD (3 total, 1 per axis, 2 in-plane).
    start, stop : int, optional
        Lag index window (default: the second half of the lags given).
    indices : ndarray of int, optional
        Explicit lag indices to fit (overrides start/stop).
    inverse_time_weights : bool
        Weight points by 1/t (variance of an all-origins MSD grows ~ t);
        pymatgen's ``smoothed="max"`` choice.
    """
    L = len(lag_ps)
    if indices is None:
        a = L // 2 if start is None else start
        b = L if stop is None else stop
        indices = np.arange(a, b)
    indices = np.asarray(indices)
    if len(indices) < 2:
        raise AnalysisError(f"too few lags ({len(indices)}) to fit a diffusion coefficient")
    t = np.asarray(lag_ps, float)[indices]
    y = np.asarray(msd, float)[indices]
    A = np.vstack([t, np.ones_like(t)]).T
    if inverse_time_weights:
        wr = 1.0 / np.sqrt(np.where(t > 0, t, np.inf))
        coef, *_ = np.linalg.lstsq(A * wr[:, None], y * wr, rcond=None)
    else:
        coef, *_ = np.linalg.lstsq(A, y, rcond=None)
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


def squared_displacement_variance(pos: np.ndarray, lags: np.ndarray, max_values: float = 5e7) -> np.ndarray:
    """Variance of the squared displacements ``s = |x(t + m) - x(t)|²`` over ions and origins, per lag.

    Parameters
    ----------
    pos : ndarray, shape (n, T, d)
        Unwrapped positions, Å (one row for a collective displacement).
    lags : ndarray of int, shape (L,)
        Lags m ≥ 1, frames.
    max_values : float
        Bound on squared displacements evaluated per lag; beyond it the time
        origins are taken with a stride (an unbiased estimate, less work).

    Returns
    -------
    ndarray, shape (L,)
        ``var(s)``, Å⁴ (ddof = 1).
    """
    n, T, _ = pos.shape
    lags = np.asarray(lags, dtype=np.int64)
    # one read per ion block (pos may be an out-of-core IonMajorView); per-block count, mean and sum of
    # squared deviations combined exactly (Chan et al.), so the result is the variance over all ions.
    # Per lag and block: s in a reused buffer (no allocation), its mean, then the squared deviations from it
    # (two passes, as exact as before); axes-major copy of the block so each axis is one contiguous run.
    cnt = np.zeros(len(lags))
    mean = np.zeros(len(lags))
    m2 = np.zeros(len(lags))
    block = int(max(1, min(n, (64 << 20) // max(1, 56 * T))))  # positions, displacements, s: 56 B per ion-frame
    for s0 in range(0, n, block):
        x = np.asarray(pos[s0 : s0 + block], dtype=np.float64)
        nb, _, dim = x.shape
        xt = np.ascontiguousarray(x.transpose(0, 2, 1))  # (nb, dim, T)
        del x
        dbuf = np.empty(nb * dim * T)
        sbuf = np.empty(nb * T)
        for k, m in enumerate(lags):
            n_org = T - int(m)
            stride = max(1, int(np.ceil(n * n_org / max_values)))
            c = len(range(0, n_org, stride))
            if c == 0:
                continue
            d = dbuf[: nb * dim * c].reshape(nb, dim, c)
            np.subtract(xt[:, :, int(m) : int(m) + (c - 1) * stride + 1 : stride], xt[:, :, 0:n_org:stride], out=d)
            np.multiply(d, d, out=d)
            sq = sbuf[: nb * c]
            s2d = sq.reshape(nb, c)
            if dim > 1:
                np.add(d[:, 0], d[:, 1], out=s2d)
            else:
                np.copyto(s2d, d[:, 0])
            for a in range(2, dim):
                s2d += d[:, a]
            mb = float(sq.sum()) / sq.size
            sq -= mb
            np.multiply(sq, sq, out=sq)  # not a BLAS dot: its idle threads would spin on the other core
            m2b = float(sq.sum())
            tot = cnt[k] + sq.size
            delta = mb - mean[k]
            m2[k] += m2b + delta**2 * cnt[k] * sq.size / tot
            mean[k] += delta * sq.size / tot
            cnt[k] = tot
    return np.where(cnt > 1, m2 / np.maximum(cnt - 1, 1), 0.0)


@dataclass
class GLSFit:
    """Generalised-least-squares diffusion fit with a data-chosen start (see :func:`fit_diffusion_gls`).

    Attributes
    ----------
    D_cm2_s, D_std_cm2_s : float
        Posterior mean and standard deviation of D at the chosen start.
    ci95_cm2_s : tuple of float
        2.5 and 97.5 percentiles of D pooled over the starts in ``starts_pooled_ps``.
    slope_A2_ps, intercept_A2 : float
        The line at the chosen start.
    start_ps, end_ps : float
        Fit window (start of the diffusive regime, last lag).
    grid_start_ps, grid_D_cm2_s, grid_std_cm2_s : ndarray, shape (g,)
        D and its posterior standard deviation for every start tried.
    starts_pooled_ps : ndarray
        Starts whose posteriors make the 95 % interval.
    regime_found : bool
        False when D kept drifting with the start up to the last start tried
        (the diffusive regime is not established in this run).
    """

    D_cm2_s: float
    D_std_cm2_s: float
    ci95_cm2_s: tuple[float, float]
    slope_A2_ps: float
    intercept_A2: float
    start_ps: float
    end_ps: float
    grid_start_ps: np.ndarray
    grid_D_cm2_s: np.ndarray
    grid_std_cm2_s: np.ndarray
    starts_pooled_ps: np.ndarray
    regime_found: bool

    def as_diffusion_fit(self) -> DiffusionFit:
        """The chosen line as a :class:`DiffusionFit` (stderr = posterior std)."""
        return DiffusionFit(self.D_cm2_s, self.D_cm2_s / A2_PER_PS_TO_CM2_PER_S, self.slope_A2_ps, self.intercept_A2,
                            self.D_std_cm2_s, self.start_ps, self.end_ps)


_BLAS_CONTROLLER: Any = None


def _one_blas_thread(limits: int = 1) -> Any:
    """Limiter of BLAS (OpenBLAS, MKL, ...) to ``limits`` threads (one by default), via :mod:`threadpoolctl`.

    A context manager; or call its ``restore_original_limits()`` (the live sink keeps it while open).

    The GLS fit is a sequence of dense eigendecompositions of a few hundred lags. A second BLAS thread gains
    little on them when a core is free, and when it is not (another process, Dask workers) the threads wait
    on each other: on 2 busy cores a 400x400 ``eigh`` took 140 ms with 2 threads against 23 ms with one
    (20x at 1000x1000), and an idle OpenBLAS thread spins afterwards, burning CPU.
    """
    global _BLAS_CONTROLLER
    from threadpoolctl import ThreadpoolController

    if _BLAS_CONTROLLER is None:
        _BLAS_CONTROLLER = ThreadpoolController()
    return _BLAS_CONTROLLER.limit(limits=limits, user_api="blas")


def _gls_line(t: np.ndarray, y: np.ndarray, var_s: np.ndarray, n_obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Straight line through correlated MSD points; returns (slope, intercept) and their covariance.

    The covariance model ``Σ_ij = var(s_min(i,j)) / n_max(i,j)`` is not positive semi-definite in general.
    kinisi (and earlier versions of this function) repairs it in three steps, each an eigendecomposition:
    clip its eigenvalues to at least ``1e-16`` of the largest (minimum-eigenvalue method), take the nearest
    correlation matrix with eigenvalues ``>= 1e-15`` (a no-op, up to rounding, on a matrix already positive
    definite), then pseudo-invert with :func:`scipy.linalg.pinvh`, which drops eigenvalues below ``L·eps``
    of the largest, i.e. every clipped one. The result is the pseudo-inverse of ``Σ`` restricted to its
    eigenvalues above ``L·eps·max``; it is computed here from one eigendecomposition (LAPACK ``syevd``),
    and only the 2x2 and 2-vector products the line needs are formed. Same numbers up to rounding: D moves
    by ~1e-6 (relative) on 400 strongly correlated lags, as much as the three-step way itself moves
    when its input is perturbed by 1e-15 (``benchmarks/gls_speed.py``).
    """
    i = np.arange(len(t))
    S = var_s[np.minimum.outer(i, i)] / n_obs[np.maximum.outer(i, i)]
    w, V = np.linalg.eigh(S)
    keep = w > max(float(w[-1]), 0.0) * len(t) * np.finfo(np.float64).eps  # pinvh's cutoff (w ascending)
    X = np.column_stack([t, np.ones_like(t), y])
    Z = V[:, keep].T @ X  # (k, 3): [t, 1, y] in the kept eigenbasis
    G = Z[:, :2].T @ (Z / w[keep, None])  # (2, 3): Xᵀ Σ⁺ [X y]
    cov = np.linalg.pinv(G[:, :2])
    beta = cov @ G[:, 2]
    return beta, cov


def fit_diffusion_gls(
    lag_ps: np.ndarray,
    msd: np.ndarray,
    var_s: np.ndarray,
    n_particles: int,
    n_frames: int,
    frame_dt_ps: float,
    dim: int = 3,
    start_ps: float | None = None,
    n_starts: int = 12,
    min_points: int = 8,
    seed: int = 0,
) -> GLSFit:
    """Diffusion coefficient by GLS with the MSD covariance, start of the diffusive regime from the data.

    Parameters
    ----------
    lag_ps : ndarray, shape (L,)
        Lags of the points given (> 0), ps, increasing; the last one ends the fit.
    msd : ndarray, shape (L,)
        MSD at those lags, Å².
    var_s : ndarray, shape (L,)
        Variance of the squared displacements at those lags, Å⁴
        (:func:`squared_displacement_variance`).
    n_particles : int
        Independent particles averaged (ions for the tracer MSD, 1 for the
        collective one).
    n_frames : int
        Frames of the run (``n_j = n_particles (n_frames - 1) / lag_j`` in frames).
    frame_dt_ps : float
        Time between frames, ps.
    dim : int
    start_ps : float, optional
        Fixed start (no choice from the data; the interval is then that start's).
    n_starts : int
        Starts tried, geometric from the second lag to half the last lag.
    min_points : int
        Fewest lags a fit may use.
    seed : int
        For the sampled quantiles of the pooled interval.

    Returns
    -------
    GLSFit
    """
    t_all = np.asarray(lag_ps, float)
    y_all = np.asarray(msd, float)
    v_all = np.asarray(var_s, float)
    if len(t_all) < min_points + 1:
        raise AnalysisError(f"too few lags ({len(t_all)}) for a GLS diffusion fit (need {min_points + 1})")
    if frame_dt_ps <= 0:
        raise AnalysisError(f"frame_dt_ps must be > 0, got {frame_dt_ps}")
    frames = np.maximum(np.rint(t_all / frame_dt_ps), 1.0)
    n_obs = n_particles * (n_frames - 1) / frames
    conv = A2_PER_PS_TO_CM2_PER_S / (2 * dim)

    def fit_from(k0: int) -> tuple[float, float, np.ndarray]:
        beta, cov = _gls_line(t_all[k0:], y_all[k0:], v_all[k0:], n_obs[k0:])
        return float(beta[0]), float(np.sqrt(max(cov[0, 0], 0.0))), beta

    last_k = len(t_all) - min_points
    if start_ps is not None:
        k0 = int(np.searchsorted(t_all, start_ps - 1e-9))
        if k0 > last_k:
            raise AnalysisError(f"start {start_ps} ps leaves fewer than {min_points} lags to fit")
        ks = np.array([k0])
    else:
        hi_t = max(t_all[-1] / 2, t_all[min(1, last_k)])
        cand = np.geomspace(t_all[min(1, last_k)], hi_t, n_starts)
        ks = np.unique(np.minimum(np.searchsorted(t_all, cand - 1e-9), last_k))
    with _one_blas_thread():
        fits = [fit_from(int(k)) for k in ks]
    Dg = np.array([f[0] for f in fits]) * conv
    Sg = np.array([f[1] for f in fits]) * conv
    found = True
    if start_ps is not None:
        choice = 0
    else:
        # earliest start whose D is inside every later start's 95 % interval (the last one trivially is)
        choice = next(i for i in range(len(ks)) if np.all(np.abs(Dg[i] - Dg[i + 1:]) <= 1.96 * Sg[i + 1:]))
        found = choice < len(ks) - 1 or len(ks) == 1
        if not found:
            logger.warning("D keeps drifting with the fit start up to %.3g ps: the diffusive regime is not "
                           "established in this run; D and its interval are from the last start tried",
                           t_all[ks[choice]])
    t0 = t_all[ks[choice]]
    pool = [i for i in range(choice, len(ks)) if t_all[ks[i]] <= 2 * t0 + 1e-9]
    rng = np.random.default_rng(seed)
    draws = np.concatenate([rng.normal(Dg[i], Sg[i], 20000) for i in pool])
    draws = draws[draws >= 0] if np.any(draws >= 0) else np.zeros(1)  # D >= 0 prior (kinisi's)
    lo, hi = np.percentile(draws, [2.5, 97.5])
    beta = fits[choice][2]
    return GLSFit(
        D_cm2_s=float(Dg[choice]),
        D_std_cm2_s=float(Sg[choice]),
        ci95_cm2_s=(float(lo), float(hi)),
        slope_A2_ps=float(beta[0]),
        intercept_A2=float(beta[1]),
        start_ps=float(t0),
        end_ps=float(t_all[-1]),
        grid_start_ps=t_all[ks],
        grid_D_cm2_s=Dg,
        grid_std_cm2_s=Sg,
        starts_pooled_ps=t_all[ks[pool]],
        regime_found=bool(found),
    )


#: a run supports a diffusion coefficient only if it lasts this many times the end of the ballistic regime
#: (:func:`ballistic_end_ps`): the vibrations level off within ~2-3 times that lag, and the MSD growth from
#: t/4 to t/2 of the run (``msd_growth_ratio``) must lie beyond them, so t/4 >= 3 x the ballistic end
MIN_RUN_OVER_BALLISTIC = 12.0
#: local slope d ln MSD / d ln t below which the MSD is no longer ballistic (2 while ballistic, 1 when diffusive)
BALLISTIC_SLOPE = 1.2


def ballistic_end_ps(lag_ps: np.ndarray, msd_A2: np.ndarray, slope: float = BALLISTIC_SLOPE) -> float | None:
    """End of the ballistic regime: the first lag where the MSD's log-log slope falls below ``slope``.

    Ballistic motion gives ``MSD ∝ t²`` (slope 2); vibrations make the MSD level off (slope → 0) and
    diffusion gives slope 1. Positions sampled too sparsely to see the ballistic part (or a random walk)
    give the first lag.

    Parameters
    ----------
    lag_ps : ndarray, shape (L,)
        Lags, ps, increasing (a lag 0 is ignored).
    msd_A2 : ndarray, shape (L,)
        Tracer MSD at those lags, Å².
    slope : float
        Log-log slope that ends the ballistic regime.

    Returns
    -------
    float or None
        The lag, ps; None when the MSD is still ballistic at every lag given (the run ends inside the
        ballistic regime).
    """
    t = np.asarray(lag_ps, float)
    m = np.asarray(msd_A2, float)
    ok = (t > 0) & (m > 0) & np.isfinite(m)
    t, m = t[ok], m[ok]
    if len(t) < 2:
        return None
    local = np.diff(np.log(m)) / np.diff(np.log(t))
    below = np.flatnonzero(local < slope)
    return float(t[below[0]]) if len(below) else None


#: MSD growth beyond the vibrations from t_run / 4 to t_run / 2 (:func:`msd_growth_ratio`) below this: the MSD
#: saturates, no long-range diffusion in the run (linear diffusion gives 2; a cage plateau gives ~1; below 1.5 the
#: MSD is closer to a plateau than to diffusion)
MSD_GROWTH_MIN = 1.5


def msd_growth_ratio(lag_ps: np.ndarray, msd_A2: np.ndarray, total_ps: float, vibration_ps: float = 0.5) -> float | None:
    """How the MSD grows beyond the vibrations: ``(MSD(t/2) - MSD(τ)) / (MSD(t/4) - MSD(τ))``.

    About 2 when the ions diffuse, about 1 when the MSD saturates (a cage plateau). ``τ`` =
    ``min(vibration_ps, t_run / 20)``: the vibrational plateau is subtracted, so a short run whose
    MSD is mostly vibration is not mistaken for a confined one.

    Parameters
    ----------
    lag_ps : ndarray, shape (L,)
        Lags of the MSD, ps.
    msd_A2 : ndarray, shape (L,)
        Tracer MSD, Å².
    total_ps : float
        Length of the run, ps.
    vibration_ps : float
        Lag by which the vibrational MSD has levelled off, ps.

    Returns
    -------
    float or None
        None when the run is too short, the MSD does not reach ``t_run / 2``, or it has not
        grown beyond the vibrations by ``t_run / 4`` (by less than 10 % of the vibrational MSD).
    """
    lag = np.asarray(lag_ps, float)
    msd = np.asarray(msd_A2, float)
    if total_ps <= 0 or len(lag) < 8 or lag[-1] < 0.45 * total_ps:  # the MSD must reach t_run / 2
        return None
    m0 = float(np.interp(min(vibration_ps, total_ps / 20), lag, msd))
    m4 = float(np.interp(total_ps / 4, lag, msd)) - m0
    m2 = float(np.interp(total_ps / 2, lag, msd)) - m0
    return m2 / m4 if m4 > 0.1 * max(m0, 0.0) and m4 > 0 else None  # growth must stand out of the vibrations


def diffusive_regime_status(lag_ps: np.ndarray, msd_A2: np.ndarray, total_ps: float,
                            growth_ratio: float | None, growth_min: float = MSD_GROWTH_MIN) -> tuple[str, str | None]:
    """Can this run's MSD give a diffusion coefficient at all? (status, reason).

    Parameters
    ----------
    lag_ps : ndarray, shape (L,)
        Lags of the tracer MSD, ps.
    msd_A2 : ndarray, shape (L,)
        Tracer MSD, Å².
    total_ps : float
        Length of the run, ps.
    growth_ratio : float or None
        MSD growth beyond the vibrations from t/4 to t/2 of the run (``msd_growth_ratio``; None when
        the MSD has not grown beyond them).
    growth_min : float
        Growth below which the MSD saturates (no long-range diffusion).

    Returns
    -------
    status : str
        ``"resolved"`` (a diffusive regime may be fitted), ``"too short"`` (the run ends before the MSD
        has left its ballistic/vibrational part), ``"no diffusion beyond vibrations"`` (the MSD does not grow
        beyond its vibrational plateau: no hops that carry transport, or a run too short to tell), or
        ``"no long-range diffusion"`` (the MSD saturates: confined motion).
    reason : str or None
        One sentence with the numbers, None when resolved.
    """
    tb = ballistic_end_ps(lag_ps, msd_A2)
    need = None if tb is None else MIN_RUN_OVER_BALLISTIC * tb
    if tb is None or total_ps < need:
        where = ("the MSD is still ballistic at every lag" if tb is None
                 else f"the ballistic regime ends at {tb:.3g} ps, so at least {need:.3g} ps are needed")
        return "too short", (f"run too short for a diffusion coefficient: {total_ps:.3g} ps, and {where} "
                             "(the fit would measure vibrations, not diffusion)")
    if growth_ratio is None:
        return "no diffusion beyond vibrations", (
            "the MSD does not grow beyond its vibrational plateau within the run (no hops that carry "
            "transport, or a run too short to tell)")
    if growth_ratio < growth_min:
        return "no long-range diffusion", (
            f"no long-range diffusion: the MSD saturates (its growth beyond the vibrations from t/4 to t/2 is "
            f"x{growth_ratio:.2f}, about 2 for diffusion), so the slope is that of a plateau")
    return "resolved", None


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


def van_hove(
    pos: np.ndarray,
    box_matrix: np.ndarray,
    lags: np.ndarray,
    origins: np.ndarray,
    r_max: float = 10.0,
    n_grid: int = 101,
    sigma: float = 0.1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Self and distinct parts of the van Hove correlation function.

    Distances are binned on ``r_i = i·dr`` (``dr = r_max / (n_grid - 1)``,
    bin i holds ``r_i <= d < r_{i+1}``) and every count is smeared by a
    normalised Gaussian of width ``sigma`` centred on ``r_i``; this is the
    definition of pymatgen-analysis-diffusion's ``VanHoveAnalysis``, which the
    tests reproduce.

    Parameters
    ----------
    pos : ndarray, shape (n, T, 3)
        Unwrapped (drift-corrected) positions, Å.
    box_matrix : ndarray, shape (3, 3)
        Lattice vectors (rows), Å.
    lags : ndarray of int, shape (L,)
        Lags in frames.
    origins : ndarray of int, shape (M,)
        Time origins t0 (frames); the pair (t0, t0 + lag) must be in the run.
    r_max, n_grid, sigma : float, int, float
        Radial grid and smearing, Å.

    Returns
    -------
    r : ndarray, shape (n_grid,)
    gs : ndarray, shape (L, n_grid)
        Self part: density (1/Å) of the displacement length over ``lag``.
    gd : ndarray, shape (L, n_grid)
        Distinct part ``G_d(r, t) / ρ`` (1 for an ideal gas), summed over every
        periodic image within ``r_max`` (from the minimum image outwards).
    """
    from scipy.stats import norm

    n, T, _ = pos.shape
    lags = np.asarray(lags, dtype=int)
    origins = np.asarray(origins, dtype=int)
    if origins.size == 0 or lags.size == 0:
        raise AnalysisError("van Hove needs at least one lag and one origin")
    if origins.max() + lags.max() >= T or origins.min() < 0:
        raise AnalysisError(f"origins + lags exceed the run ({T} frames)")
    h = np.asarray(box_matrix, float)
    inv = np.linalg.inv(h)
    vol = abs(np.linalg.det(h))
    rho = n / vol
    r = np.linspace(0.0, r_max, n_grid)
    dr = r[1] - r[0]
    gauss = norm.pdf(r[None, :], r[:, None], sigma)  # row i: Gaussian centred on r_i
    area = 4.0 * np.pi * r**2
    area[0] = np.pi * dr**2
    heights = vol / np.linalg.norm(np.cross(h[[1, 2, 0]], h[[2, 0, 1]]), axis=1)
    c = int(np.ceil(r_max / heights.min()))
    rng_img = np.arange(-c, c + 1)
    images = np.stack(np.meshgrid(rng_img, rng_img, rng_img, indexing="ij"), -1).reshape(-1, 3).astype(float)
    offdiag = ~np.eye(n, dtype=bool)
    gs = np.zeros((len(lags), n_grid))
    gd = np.zeros((len(lags), n_grid))
    for j, lag in enumerate(lags):
        cs = np.zeros(n_grid)
        cd = np.zeros(n_grid)
        for t0 in origins:
            a = pos[:, t0, :]
            b = pos[:, t0 + lag, :]
            ds = np.linalg.norm(b - a, axis=1)
            cs += np.bincount((ds[ds < r_max] / dr).astype(int), minlength=n_grid)[:n_grid]
            f = (b[:, None, :] - a[None, :, :]) @ inv  # (n, n, 3) fractional
            f -= np.rint(f)
            for img in images:
                d = np.linalg.norm((f + img) @ h, axis=2)
                keep = d < r_max
                if not img.any():
                    keep &= offdiag
                cd += np.bincount((d[keep] / dr).astype(int), minlength=n_grid)[:n_grid]
        gs[j] = cs @ gauss / (len(origins) * n)
        gd[j] = (cd / area) @ gauss / (len(origins) * n * rho)
    return r, gs, gd


@dataclass
class TransportResult:
    """Transport of one run (see :func:`analyse_transport`).

    Attributes
    ----------
    lag_ps : ndarray, shape (L,)
    msd_A2, mscd_A2 : ndarray, shape (L,)
        Tracer and collective (/N) MSD, Å².
    msd_axes_A2 : ndarray, shape (L, 3)
    tracer, collective : DiffusionFit
    D_axes_cm2_s : ndarray, shape (3,)
        From the per-axis MSDs (x, y, z of the canonical cell orientation).
    D_tracer_std_cm2_s : float
        Bootstrap over ions of D*.
    bootstrap_ions : ndarray, shape (n_bootstrap, n), int, optional
        The ions drawn (with replacement) in each bootstrap resample, so that a statistic of the
        same ions (e.g. D from their hops) can be resampled jointly with D*.
    bootstrap_D_tracer_relative : ndarray, shape (n_bootstrap,), optional
        D* of each resample over D* of all ions by the same (unweighted line) fit.
    D_sigma_std_cm2_s : float
        Standard error of D_σ over ``n_blocks`` time blocks.
    haven_ratio : float or None
        D* / D_σ; None unless both are resolved (see ``status``).
    sigma_NE_mS_cm, sigma_collective_mS_cm : float or None
        Nernst–Einstein conductivity from D* and from D_σ, mS/cm (need T and charge); None when the run
        does not support them (see ``status``).

    After :meth:`assess` (which :func:`analyse_transport` calls), the numbers the run cannot support are
    None on this object and in :meth:`to_dict` alike:

    D_tracer_cm2_s, D_sigma_cm2_s : float or None
        The reported D* and D_σ, cm²/s (the fits themselves stay in ``tracer`` and ``collective``).
    msd_growth_ratio : float or None
        MSD growth beyond the vibrations from t/4 to t/2 (:func:`msd_growth_ratio`; ~2 diffusion, ~1 plateau).
    long_range_diffusion : bool or None
    status, reason : dict
        Per quantity (``D_tracer``, ``D_sigma``, ``haven_ratio``, ``sigma_NE``, ``sigma_collective``):
        ``"resolved"`` or why not, and one sentence (None when resolved).
    fits : dict
        Every fitted number before those rules (units in the keys), for diagnostics.
    warnings : list of str
    """

    lag_ps: np.ndarray
    msd_A2: np.ndarray
    msd_axes_A2: np.ndarray
    mscd_A2: np.ndarray
    tracer: DiffusionFit
    collective: DiffusionFit
    D_axes_cm2_s: np.ndarray
    D_tracer_std_cm2_s: float
    D_sigma_std_cm2_s: float
    haven_ratio: float
    sigma_NE_mS_cm: float | None
    sigma_collective_mS_cm: float | None
    sigma_NE_std_mS_cm: float | None
    tracer_gls: GLSFit | None = field(default=None, repr=False)
    collective_gls: GLSFit | None = field(default=None, repr=False)
    sigma_NE_ci95_mS_cm: tuple[float, float] | None = None
    sigma_collective_ci95_mS_cm: tuple[float, float] | None = None
    bootstrap_ions: np.ndarray | None = field(default=None, repr=False)
    bootstrap_D_tracer_relative: np.ndarray | None = field(default=None, repr=False)
    D_tracer_cm2_s: float | None = None
    D_sigma_cm2_s: float | None = None
    msd_growth_ratio: float | None = None
    long_range_diffusion: bool | None = None
    status: dict[str, str] = field(default_factory=dict)
    reason: dict[str, str | None] = field(default_factory=dict)
    fits: dict[str, Any] = field(default_factory=dict, repr=False)
    warnings: list[str] = field(default_factory=list)
    _reported: dict[str, Any] = field(default_factory=dict, repr=False)

    def assess(self, total_time_ps: float, temperature_K: float | None = None, charge: float | None = None,
               n_blocks: int = 5) -> TransportResult:
        """Decide which numbers the run supports (:func:`mark_transport`); null the others here. Returns self.

        Parameters
        ----------
        total_time_ps : float
            Length of the run, ps.
        temperature_K, charge : float, optional
            Conductivities need both.
        n_blocks : int
            Time blocks of the D_σ standard error.
        """
        self.fits = {k: (_finite(v) if isinstance(v, float) else v) for k, v in self._fit_numbers().items()}
        self.fits["D_tracer_stderr_cm2_s"] = _finite(self.tracer.stderr_cm2_s)
        growth = msd_growth_ratio(self.lag_ps, self.msd_A2, total_time_ps)
        s: dict[str, Any] = dict(self.fits)
        s.update(total_time_ps=total_time_ps, temperature_K=temperature_K, charge_e=charge, warnings=[],
                 msd_growth_ratio=_finite(growth),
                 long_range_diffusion=None if growth is None else bool(growth >= MSD_GROWTH_MIN))
        mark_transport(s, self.lag_ps, self.msd_A2, n_blocks)
        self.warnings = s.pop("warnings")
        for k in ("total_time_ps", "temperature_K", "charge_e"):
            s.pop(k)
        self._reported = s
        self.status = {q: s[f"{q}_status"] for q in TRANSPORT_QUANTITIES}
        self.reason = {q: s[f"{q}_reason"] for q in TRANSPORT_QUANTITIES}
        self.D_tracer_cm2_s, self.D_sigma_cm2_s = s["D_tracer_cm2_s"], s["D_sigma_cm2_s"]
        self.haven_ratio = s["haven_ratio"]
        self.sigma_NE_mS_cm, self.sigma_collective_mS_cm = s["sigma_NE_mS_cm"], s["sigma_collective_mS_cm"]
        self.msd_growth_ratio, self.long_range_diffusion = s["msd_growth_ratio"], s["long_range_diffusion"]
        return self

    def to_dict(self) -> dict[str, Any]:
        """The reported transport numbers (units in the names) with ``<quantity>_status`` and ``_reason``:
        the keys of ``summary.json``. Unsupported numbers are None (:meth:`assess`)."""
        if not self._reported:
            raise AnalysisError("TransportResult.to_dict() before assess(): which numbers the run supports "
                                "is not decided yet")
        return dict(self._reported)

    def _fit_numbers(self) -> dict[str, Any]:
        """Every fitted number, before the rules of what the run supports."""
        out = self._summary_point()
        if self.tracer_gls is not None:
            g, c = self.tracer_gls, self.collective_gls
            out.update({
                "D_fit_method": "gls_msd_covariance",
                "D_fit_intercept_A2": g.intercept_A2,
                "D_tracer_ci95_cm2_s": list(g.ci95_cm2_s),
                "D_tracer_posterior_std_cm2_s": g.D_std_cm2_s,
                "D_sigma_ci95_cm2_s": list(c.ci95_cm2_s) if c is not None else None,
                "sigma_NE_ci95_mS_cm": list(self.sigma_NE_ci95_mS_cm) if self.sigma_NE_ci95_mS_cm else None,
                "sigma_collective_ci95_mS_cm": (list(self.sigma_collective_ci95_mS_cm)
                                                if self.sigma_collective_ci95_mS_cm else None),
                "diffusive_regime_start_ps": g.start_ps,
                "diffusive_regime_found": g.regime_found,
                "D_ci95_pooled_starts_ps": g.starts_pooled_ps.tolist(),
                "D_tracer_by_start": {"start_ps": g.grid_start_ps.tolist(), "D_cm2_s": g.grid_D_cm2_s.tolist(),
                                      "std_cm2_s": g.grid_std_cm2_s.tolist()},
            })
        return out

    def _summary_point(self) -> dict[str, float | None]:
        dx, dy, dz = (float(v) for v in self.D_axes_cm2_s)
        return {
            "D_tracer_cm2_s": self.tracer.D_cm2_s,
            "D_tracer_std_cm2_s": self.D_tracer_std_cm2_s,
            "D_sigma_cm2_s": self.collective.D_cm2_s,
            "D_sigma_std_cm2_s": self.D_sigma_std_cm2_s,
            "haven_ratio": self.haven_ratio,
            "D_x_cm2_s": dx,
            "D_y_cm2_s": dy,
            "D_z_cm2_s": dz,
            "D_xy_cm2_s": 0.5 * (dx + dy),
            "anisotropy_Dz_over_Dxy": dz / (0.5 * (dx + dy)) if dx + dy > 0 else None,
            "sigma_NE_mS_cm": self.sigma_NE_mS_cm,
            "sigma_NE_std_mS_cm": self.sigma_NE_std_mS_cm,
            "sigma_collective_mS_cm": self.sigma_collective_mS_cm,
            "D_fit_window_ps": [self.tracer.fit_start_ps, self.tracer.fit_end_ps],
        }

    def __repr__(self) -> str:
        from iondiff_stream.core.display import summary_text, transport_rows

        return summary_text("TransportResult", transport_rows(self.to_dict()), ".to_dict() for every number")

    def _repr_html_(self) -> str:
        from iondiff_stream.core.display import summary_html, transport_rows

        return summary_html("TransportResult", transport_rows(self.to_dict()), ".to_dict() for every number")


def analyse_transport(
    pos: np.ndarray,
    frame_dt_ps: float,
    volume_A3: float,
    temperature_K: float | None = None,
    charge: float | None = None,
    window: str = "gls",
    max_lag_fraction: float = 0.5,
    n_bootstrap: int = 200,
    n_blocks: int = 5,
    seed: int = 0,
    gls_points: int = 400,
    max_lag_points: int = 20000,
) -> TransportResult:
    """Tracer and collective diffusion, Haven ratio, conductivity, with uncertainties.

    Parameters
    ----------
    pos : ndarray, shape (n, T, 3)
        Unwrapped, drift-corrected positions of one mobile species, Å.
    frame_dt_ps : float
    volume_A3 : float
    temperature_K, charge : float, optional
        Needed for conductivities.
    window : {"gls", "half", "pymatgen"}
        ``"gls"`` (default): :func:`fit_diffusion_gls` on the tracer and the
        collective MSD up to the end of the run, the start of the diffusive
        regime chosen from the tracer MSD (the collective fit uses the same
        start), 95 % intervals including the start choice. ``"half"``: lags up
        to ``max_lag_fraction`` of the run, unweighted line over the second
        half of them. ``"pymatgen"``: pymatgen's ``smoothed="max"`` window
        with 1/t weights (:func:`pymatgen_window`).
    gls_points : int
        Most lags used by the GLS fit (all lags up to this many, else evenly spaced; the covariance is dense,
        O(gls_points³) per start). Where the MSD is not linear the GLS result depends on the lag sampling
        (as kinisi's does on its start): with all lags (``gls_points >= n_frames - 1``) it is kinisi's.
    max_lag_points : int
        Most lags at which the MSDs are kept: all lags up to this many, else evenly spaced ones (plus every
        lag a fit uses). Bounds memory on long runs: the per-ion MSDs take ``n * max_lag_points * 24`` bytes.
    n_bootstrap : int
        Resamples of the ions for the D* uncertainty.
    n_blocks : int
        Time blocks for the D_σ uncertainty (each block analysed alone).
    """
    n, T, _ = pos.shape
    if T < 8:
        raise AnalysisError(f"need at least 8 frames for transport, got {T}")
    if window == "gls" and T < 24:
        logger.info("%d frames: too short for the GLS fit, using the second half of the lags", T)
        window = "half"
    if window == "pymatgen":
        idx = pymatgen_window(T, n, frame_dt_ps)
        max_lag = int(idx.max())
    elif window == "half":
        max_lag = max(4, int(T * max_lag_fraction))
        idx = np.arange((max_lag + 1) // 2, max_lag + 1)
    elif window == "gls":
        max_lag = T - 1
    else:
        raise ValueError(f"window must be 'gls', 'half' or 'pymatgen', got {window!r}")
    weighted = window == "pymatgen"
    sel = None
    if window == "gls":
        sel = np.unique(np.rint(np.linspace(1, max_lag, min(gls_points, max_lag))).astype(np.int64))
    # lags evaluated: all up to max_lag_points, else an even grid (plus the lags a fit needs), so that the
    # per-ion MSDs stay small on long runs (n x 20,000 x 3 values, not n x 10^6 x 3)
    if max_lag + 1 <= max_lag_points:
        grid = np.arange(max_lag + 1)
    else:
        extra = [idx] if window == "pymatgen" else []
        if sel is not None:
            extra.append(sel)
        grid = np.unique(np.concatenate([np.rint(np.linspace(0, max_lag, max_lag_points)).astype(np.int64)] + extra))
        if window == "half":
            idx = np.nonzero(grid >= idx[0])[0]
        elif window == "pymatgen":
            idx = np.searchsorted(grid, idx)
    per_ion = msd_ion_blocks(pos, max_lag, lags=None if len(grid) == max_lag + 1 else grid)  # per ion block
    axes = per_ion.mean(0)
    msd = axes.sum(1)
    mscd = collective_msd(pos, max_lag)[0][grid]
    lag_ps = grid * frame_dt_ps
    g_tr = g_co = None
    if window == "gls":
        v_tr = squared_displacement_variance(pos, sel)
        com = pos.sum(0, keepdims=True)
        v_co = squared_displacement_variance(com, sel) / n**2
        sel_lags = sel
        sel = np.searchsorted(grid, sel_lags)  # positions of the fitted lags in the evaluated grid
        g_tr = fit_diffusion_gls(lag_ps[sel], msd[sel], v_tr, n, T, frame_dt_ps, seed=seed)
        g_co = fit_diffusion_gls(lag_ps[sel], mscd[sel], v_co, 1, T, frame_dt_ps, start_ps=g_tr.start_ps, seed=seed)
        # the collective interval pools the same starts as the tracer one
        if len(g_tr.starts_pooled_ps) > 1:
            pooled = [g_co if t0 == g_tr.start_ps else  # the chosen start's fit is g_co itself
                      fit_diffusion_gls(lag_ps[sel], mscd[sel], v_co, 1, T, frame_dt_ps, start_ps=float(t0), seed=seed)
                      for t0 in g_tr.starts_pooled_ps]
            rng = np.random.default_rng(seed)
            draws = np.concatenate([rng.normal(f.D_cm2_s, f.D_std_cm2_s, 20000) for f in pooled])
            draws = draws[draws >= 0] if np.any(draws >= 0) else np.zeros(1)
            g_co.ci95_cm2_s = tuple(float(x) for x in np.percentile(draws, [2.5, 97.5]))
            g_co.starts_pooled_ps = g_tr.starts_pooled_ps
        tr = g_tr.as_diffusion_fit()
        co = g_co.as_diffusion_fit()
        idx = np.arange(int(np.searchsorted(lag_ps, g_tr.start_ps - 1e-9)), len(grid))
    else:
        tr = fit_diffusion(lag_ps, msd, indices=idx, inverse_time_weights=weighted)
        co = fit_diffusion(lag_ps, mscd, indices=idx, inverse_time_weights=weighted)
    d_axes = np.array([fit_diffusion(lag_ps, axes[:, k], dim=1, indices=idx, inverse_time_weights=weighted).D_cm2_s
                       for k in range(3)])
    rng = np.random.default_rng(seed)
    tot = per_ion.sum(2)
    boots, picks = [], []
    for _ in range(n_bootstrap if n > 1 else 0):
        pick = rng.integers(0, n, n)
        picks.append(pick)
        boots.append(fit_diffusion(lag_ps, tot[pick].mean(0), indices=idx, inverse_time_weights=weighted).D_cm2_s)
    d_std = float(np.std(boots, ddof=1)) if len(boots) > 1 else float("nan")
    d_all = fit_diffusion(lag_ps, tot.mean(0), indices=idx, inverse_time_weights=weighted).D_cm2_s if boots else 0.0
    blocks = []
    bl = T // n_blocks
    if n_blocks >= 2 and bl >= 8:
        for b in range(n_blocks):
            seg = pos[:, b * bl : (b + 1) * bl]
            ml = max(4, int(bl * max_lag_fraction))
            m_b, _ = collective_msd(seg, ml)
            blocks.append(fit_diffusion(np.arange(ml + 1) * frame_dt_ps, m_b).D_cm2_s)
    ds_std = float(np.std(blocks, ddof=1) / np.sqrt(len(blocks))) if len(blocks) > 1 else float("nan")
    hr = tr.D_cm2_s / co.D_cm2_s if co.D_cm2_s > 0 else float("nan")
    s_ne = s_co = s_ne_std = None
    if charge is not None and charge == 0:
        logger.warning("ionic charge 0: no conductivity (reported as null)")
    charged = charge is not None and charge != 0
    if temperature_K is not None and charged:
        s_ne = nernst_einstein_mS_cm(tr.D_cm2_s, n, volume_A3, temperature_K, charge)
        s_co = nernst_einstein_mS_cm(co.D_cm2_s, n, volume_A3, temperature_K, charge)
        s_ne_std = nernst_einstein_mS_cm(d_std, n, volume_A3, temperature_K, charge) if np.isfinite(d_std) else None
    ci_ne = ci_co = None
    if g_tr is not None and temperature_K is not None and charged:
        ci_ne = tuple(nernst_einstein_mS_cm(d, n, volume_A3, temperature_K, charge) for d in g_tr.ci95_cm2_s)
        ci_co = tuple(nernst_einstein_mS_cm(d, n, volume_A3, temperature_K, charge) for d in g_co.ci95_cm2_s)
    result = TransportResult(lag_ps, msd, axes, mscd, tr, co, d_axes, d_std, ds_std, hr, s_ne, s_co, s_ne_std,
                             g_tr, g_co, ci_ne, ci_co, np.array(picks, dtype=np.int64).reshape(len(picks), n),
                             np.array(boots, dtype=np.float64) / d_all if d_all > 0 else None)
    return result.assess((T - 1) * frame_dt_ps, temperature_K, charge, n_blocks)


def arrhenius_fit(temperatures_K: np.ndarray, values: np.ndarray, errors: np.ndarray | None = None) -> dict[str, float]:
    """Fit ``y = y0 exp(-Ea / (k_B T))`` by weighted least squares of ln y against 1/T.

    Parameters
    ----------
    temperatures_K : ndarray, shape (m,)
    values : ndarray, shape (m,)
        Positive D (cm²/s) or frequencies (1/ps); non-positive values are skipped.
    errors : ndarray, shape (m,), optional
        1σ of ``values``; weights ``(y/σ)²`` on ln y. Without them the scatter
        of the points sets the uncertainties.

    Returns
    -------
    dict
        ``Ea_eV, Ea_err_eV, prefactor, prefactor_err`` (prefactor in the units of
        ``values``), ``n_points``.
    """
    from iondiff_stream.core.units import KB_EV_PER_K

    T = np.asarray(temperatures_K, float)
    y = np.asarray(values, float)
    ok = np.isfinite(y) & (y > 0) & (T > 0)
    if errors is not None:
        e = np.asarray(errors, float)
        ok &= np.isfinite(e) & (e > 0)
    if ok.sum() < 2:
        raise AnalysisError(f"an Arrhenius fit needs at least 2 temperatures with positive values, got {int(ok.sum())}")
    x = 1.0 / (KB_EV_PER_K * T[ok])
    ly = np.log(y[ok])
    w = (y[ok] / e[ok]) ** 2 if errors is not None else np.ones(ok.sum())
    A = np.vstack([np.ones_like(x), -x]).T
    W = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(A * W[:, None], ly * W, rcond=None)
    cov = np.linalg.inv((A * w[:, None]).T @ A)
    if errors is None and ok.sum() > 2:
        resid = ly - A @ coef
        cov *= float(resid @ resid) / (ok.sum() - 2)
    elif errors is None:
        cov *= np.nan
    lny0, ea = coef
    return {
        "Ea_eV": float(ea),
        "Ea_err_eV": float(np.sqrt(cov[1, 1])),
        "prefactor": float(np.exp(lny0)),
        "prefactor_err": float(np.exp(lny0) * np.sqrt(cov[0, 0])),
        "n_points": int(ok.sum()),
    }


def resolved_from_zero(
    value: float | None,
    std: float | None = None,
    ci95: Any = None,
    dof: int | None = None,
) -> tuple[bool, list[float] | None]:
    """Is a quantity that must be positive (a diffusion coefficient, a conductivity) resolved from zero?

    Parameters
    ----------
    value : float or None
    std : float, optional
        Standard error of ``value``; the 95 % interval is ``value ± t std``
        (Student t with ``dof`` degrees of freedom, normal when ``dof`` is None).
    ci95 : (float, float), optional
        A 95 % interval computed elsewhere (e.g. the GLS fit's). With ``std`` as
        well, both intervals must stay above zero, and the one reaching lower is
        reported (a model-based interval can exclude zero for ions that do not
        diffuse at all; the block standard error does not).
    dof : int, optional

    Returns
    -------
    resolved : bool
        False when the value is missing, not finite, <= 0, or its 95 % interval
        reaches zero.
    interval : [low, high] or None
        The 95 % interval (same units as ``value``) when one is known.
    """
    if value is None or not math.isfinite(value):
        return False, None
    intervals: list[list[float]] = []
    if ci95 is not None and len(ci95) == 2 and all(c is not None and math.isfinite(c) for c in ci95):
        intervals.append([float(ci95[0]), float(ci95[1])])
    if std is not None and math.isfinite(std) and std >= 0:
        from scipy.special import ndtri, stdtrit  # quantiles without importing scipy.stats (0.5 s)

        z = float(stdtrit(dof, 0.975)) if dof else float(ndtri(0.975))
        intervals.append([float(value) - z * float(std), float(value) + z * float(std)])
    # resolved only if every estimate of the uncertainty keeps the interval above 0; report the deciding one
    interval = min(intervals, key=lambda iv: iv[0]) if intervals else None
    resolved = value > 0 and (interval is None or interval[0] > 0)
    return bool(resolved), interval


#: summary keys that are D* or computed from it (null together when D* has no meaning)
TRACER_KEYS = ("D_tracer_cm2_s", "D_tracer_std_cm2_s", "D_tracer_stderr_cm2_s", "D_tracer_ci95_cm2_s",
               "D_tracer_posterior_std_cm2_s", "D_tracer_by_start", "D_x_cm2_s", "D_y_cm2_s", "D_z_cm2_s",
               "D_xy_cm2_s", "anisotropy_Dz_over_Dxy", "nu0_dilute_limit_per_ps", "nu_over_nu0", "hop_msd_fraction",
               "hop_msd_fraction_ci95", "hop_msd_fraction_correlated")
#: the conductivity from D* and its uncertainties
SIGMA_NE_KEYS = ("sigma_NE_mS_cm", "sigma_NE_std_mS_cm", "sigma_NE_ci95_mS_cm")
#: D_sigma and what is computed from it
COLLECTIVE_KEYS = ("D_sigma_cm2_s", "D_sigma_std_cm2_s", "D_sigma_ci95_cm2_s")
SIGMA_COLLECTIVE_KEYS = ("sigma_collective_mS_cm", "sigma_collective_ci95_mS_cm")
#: the quantities that carry a ``<name>_status`` and ``<name>_reason`` in the summary
TRANSPORT_QUANTITIES = ("D_tracer", "D_sigma", "haven_ratio", "sigma_NE", "sigma_collective")


def _set_status(summary: dict[str, Any], name: str, status: str, reason: str | None) -> None:
    summary[f"{name}_status"] = status
    summary[f"{name}_reason"] = reason


def _null(summary: dict[str, Any], keys: Sequence[str]) -> None:
    for k in keys:
        if k in summary:
            summary[k] = None


def mark_transport(summary: dict[str, Any], lag_ps: Any = None, msd_A2: Any = None, n_blocks: int = 5) -> None:
    """Replace every transport number the data cannot support by None, with a status and a reason.

    In place, on the flat summary of one run. Each of D*, D_σ, the Haven ratio and the two conductivities
    gets ``<name>_status`` (``"resolved"`` when the number is given) and ``<name>_reason`` (None when
    resolved, else one sentence):

    * D* and everything computed from it: null when the run is too short to leave the ballistic and
      vibrational part of the MSD, when the MSD does not grow beyond the vibrations, or when it saturates
      (``long_range_diffusion: false``) — :func:`iondiff_stream.analysis.transport.diffusive_regime_status`;
    * D_σ: null in the same cases, and when it (or its 95 % interval) does not exceed zero
      (:func:`resolved_from_zero`); one interval, ``D_sigma_ci95_cm2_s``, the one that decided;
    * the Haven ratio: null unless D* and D_σ are both resolved;
    * conductivities: null with their D, or with a zero charge, or without a temperature.

    Parameters
    ----------
    summary : dict
        Keys of ``summary.json`` (``D_tracer_cm2_s``, ``total_time_ps``, ``msd_growth_ratio``, ...).
    lag_ps, msd_A2 : ndarray, optional
        Lags (ps) and tracer MSD (Å²) of the run; without them the length of the run is not checked.
    n_blocks : int
        Time blocks of the D_σ standard error (its Student-t degrees of freedom + 1).
    """
    status, reason = "resolved", None
    growth = summary.get("msd_growth_ratio")
    if summary.get("D_tracer_cm2_s") is None:
        status, reason = "not computed", "no transport: too few frames"
    elif lag_ps is not None and msd_A2 is not None and len(lag_ps) > 1:
        status, reason = diffusive_regime_status(lag_ps, msd_A2, float(summary.get("total_time_ps") or 0.0), growth)
    elif summary.get("long_range_diffusion") is False:
        status, reason = "no long-range diffusion", "no long-range diffusion: the MSD saturates"
    if status == "too short":
        # the growth ratio was measured inside the ballistic/vibrational part: it says nothing either way
        summary["msd_growth_ratio"] = None
        summary["long_range_diffusion"] = None
    if status != "resolved" and summary.get("D_tracer_cm2_s") is not None:
        logger.warning("D*, D_sigma, conductivities and Haven ratio reported as null: %s", reason)
        if isinstance(summary.get("warnings"), list):
            summary["warnings"].append(f"transport not reported: {reason}")
        if "hop_msd_check" in summary and not str(summary["hop_msd_check"]).startswith("not applicable"):
            summary["hop_msd_check"] = f"not applicable: {status}"
    _set_status(summary, "D_tracer", status, reason)
    if status != "resolved":
        _null(summary, TRACER_KEYS + SIGMA_NE_KEYS + COLLECTIVE_KEYS + SIGMA_COLLECTIVE_KEYS + ("haven_ratio",))
        for name in TRANSPORT_QUANTITIES[1:]:
            _set_status(summary, name, status, reason)
        return
    _mark_collective(summary, n_blocks)
    d_sigma_ok = summary.get("D_sigma_status") == "resolved"
    if d_sigma_ok:
        _set_status(summary, "haven_ratio", "resolved", None)
    else:
        _set_status(summary, "haven_ratio", "not resolved", "D_sigma is not resolved from zero")
    charge, temp = summary.get("charge_e"), summary.get("temperature_K")
    for name, keys, ok in (("sigma_NE", SIGMA_NE_KEYS, True), ("sigma_collective", SIGMA_COLLECTIVE_KEYS, d_sigma_ok)):
        if charge is not None and charge == 0:
            _null(summary, keys)
            _set_status(summary, name, "zero charge", "ionic charge 0 (--charge 0): a neutral species carries no current")
        elif temp is None or charge is None:
            _null(summary, keys)
            _set_status(summary, name, "not computed", "needs the temperature (--temperature) and the ionic charge")
        elif not ok:
            _set_status(summary, name, "not resolved", "D_sigma is not resolved from zero")
        else:
            _set_status(summary, name, "resolved", None)


def _mark_collective(summary: dict[str, Any], n_blocks: int = 5) -> None:
    """Replace an unresolved D_sigma (and what is computed from it) by None, its status and interval.

    D_sigma comes from the centre-of-mass MSD of the mobile ions (one sample of
    the run); its standard error is over ``n_blocks`` time blocks. The one 95 %
    interval kept (``D_sigma_ci95_cm2_s``) is the one that decided (the lower one
    of the GLS posterior and the block standard error).
    """
    D = summary.get("D_sigma_cm2_s")
    ok, interval = resolved_from_zero(D, summary.get("D_sigma_std_cm2_s"), summary.get("D_sigma_ci95_cm2_s"),
                                      dof=n_blocks - 1)
    summary["D_sigma_status"] = "resolved" if ok else "not resolved"
    summary["D_sigma_reason"] = None if ok else "D_sigma or its 95 % interval does not exceed zero"
    summary["D_sigma_ci95_cm2_s"] = interval
    s_co = summary.get("sigma_collective_mS_cm")
    per_D = s_co / D if (s_co is not None and D is not None and D != 0) else None  # conductivity is linear in D
    if interval is not None and per_D is not None:  # the same interval in conductivity units
        summary["sigma_collective_ci95_mS_cm"] = [interval[0] * per_D, interval[1] * per_D]
    if ok:
        return
    if D is not None:
        logger.warning("collective diffusion not resolved: D_sigma = %.3g cm2/s, 95%% interval %s; reported as null",
                       D, "unknown" if interval is None else f"[{interval[0]:.3g}, {interval[1]:.3g}]")
    summary["D_sigma_cm2_s"] = None
    if "haven_ratio" in summary:
        summary["haven_ratio"] = None
        summary["haven_ratio_status"] = "not resolved"
    if s_co is not None:
        summary["sigma_collective_mS_cm"] = None
        summary["sigma_collective_status"] = "not resolved"
