"""The distinct van Hove function at the origin, G_d(r≈0, t), and its characteristic time.

G_d(r, t) (:func:`iondiff_stream.analysis.transport.van_hove`) is the density of *other* ions at distance r,
after a time t, from where an ion was at t = 0. At r ≈ 0 it asks: how soon does another ion take the place an
ion left? On a lattice with one ion per site it starts at 0 (the site is the ion's own) and rises to its
long-time value as the ions that started on the sites leave and others arrive; a quick rise means the sites
an ion leaves are refilled at once (concerted or vacancy-chain motion), a slow one that they stay empty or
are refilled by the same ion (back-hops).

Definitions (:func:`distinct_origin`):

* ``G_d(r≈0, t)/ρ``: the mean number of other ions within ``r0_A`` of where an ion was, a time t earlier,
  over ions and time origins, divided by ρ·(4/3)π r0³ (ρ = N / V): G_d/ρ averaged over the sphere r < r0,
  so 1 for an ideal gas, like the ``gd`` of ``van_hove`` (which smears the same counts over shells).
* Its long-time value: when the ions have forgotten where they started, the total (self + distinct) density
  around an ion's old position is the time-independent density of the ion sublattice, of which the ion itself
  is one of N. So ``G_d(r≈0, ∞)/ρ`` is the total ``G(r≈0, t)/ρ`` averaged over the late lags (the second half
  of the lags, and past the vibrations: ``t >= max(vibration_ps, longest lag / 2)``), times (1 − 1/N). This is
  measured, not assumed; its spread over those lags (``long_time_spread``) says whether it is the plateau it
  should be. With one ion per site the total is flat from the vibrations on; with more sites than ions
  (alpha-AgI) it is not: an ion that has not yet left for good keeps its site's density high for many
  residence times, and the late lags are the ones that approach the plateau (from above: a run too short
  for it gives a long-time value too large, so the ratio too small and τ_d too long, never too short).
* The characteristic time τ_d: the first lag at which ``G_d(r≈0, t)/ρ`` reaches ``fraction`` (default 1/2)
  of its long-time value (linear interpolation between lags), ps; None, with the reason, when it does not
  within the longest lag. The onset time is the same at ``onset_fraction`` (default 0.1), which a run too
  short for τ_d may still resolve.

For one ion per site and no vibration memory, the ratio is 1 − P₀(t), P₀ the probability that an ion is at
its starting site at t; for nearest-neighbour exchanges at rate ν per bond on a simple cubic lattice,
P₀ = (e^{-2νt} I₀(2νt))³ (the tests check τ_d against it).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from iondiff_stream.core.errors import AnalysisError

logger = logging.getLogger(__name__)

__all__ = ["DistinctOrigin", "distinct_origin", "origin_counts", "crossing_time", "time_arrhenius"]


@dataclass
class DistinctOrigin:
    """G_d(r≈0, t)/ρ of one run and its characteristic time (see the module docstring).

    Attributes
    ----------
    r0_A : float
        Radius of the sphere "r ≈ 0", Å.
    fraction : float
        Share of the long-time value that defines τ_d.
    vibration_ps : float
        Lags from here on give the long-time value, ps.
    lag_ps : ndarray, shape (L,)
    gd_over_rho : ndarray, shape (L,)
        G_d(r < r0, t)/ρ.
    g_total_over_rho : ndarray, shape (L,)
        Self + distinct, G(r < r0, t)/ρ.
    n_origins : ndarray of int, shape (L,)
        Time origins averaged at each lag.
    long_time_over_rho : float or None
        G_d(r≈0, ∞)/ρ; None when no lag reaches ``vibration_ps``.
    long_time_spread : float or None
        Relative standard deviation of G(r < r0, t)/ρ over the lags that give the long-time value.
    ratio : ndarray, shape (L,)
        gd_over_rho / long_time_over_rho (NaN without a long-time value).
    tau_ps : float or None
        τ_d, ps.
    tau_reason : str or None
        Why ``tau_ps`` is None.
    onset_fraction : float
        A smaller share (default 0.1): the onset of refilling.
    onset_ps : float or None
        First lag at which the ratio reaches ``onset_fraction``, ps.
    onset_reason : str or None
    warnings : list of str
    """

    r0_A: float
    fraction: float
    vibration_ps: float
    lag_ps: np.ndarray
    gd_over_rho: np.ndarray
    g_total_over_rho: np.ndarray
    n_origins: np.ndarray
    long_time_over_rho: float | None
    long_time_spread: float | None
    ratio: np.ndarray
    tau_ps: float | None
    tau_reason: str | None
    onset_fraction: float = 0.1
    onset_ps: float | None = None
    onset_reason: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """``summary.json`` keys (``Gd0_*``), the curve included (a few tens of lags)."""

        def num(x: Any) -> float | None:
            return None if x is None or not math.isfinite(float(x)) else float(x)

        return {
            "Gd0_r0_A": self.r0_A,
            "Gd0_fraction": self.fraction,
            "Gd0_time_ps": num(self.tau_ps),
            "Gd0_time_reason": self.tau_reason,
            "Gd0_onset_fraction": self.onset_fraction,
            "Gd0_onset_time_ps": num(self.onset_ps),
            "Gd0_onset_time_reason": self.onset_reason,
            "Gd0_long_time_over_rho": num(self.long_time_over_rho),
            "Gd0_long_time_spread": num(self.long_time_spread),
            "Gd0_ratio_at_longest_lag": num(self.ratio[-1]) if len(self.ratio) else None,
            "Gd0_longest_lag_ps": float(self.lag_ps[-1]) if len(self.lag_ps) else None,
            "Gd0_lag_ps": [float(x) for x in self.lag_ps],
            "Gd0_over_rho": [float(x) for x in self.gd_over_rho],
        }


def origin_counts(a: np.ndarray, b: np.ndarray, box: np.ndarray, r0_A: float) -> tuple[int, int]:
    """Pairs within ``r0_A`` between positions ``a`` (t0) and ``b`` (t0 + t) of the same ions.

    Parameters
    ----------
    a, b : ndarray, shape (n, 3)
        Positions, Å (unwrapped is fine).
    box : ndarray, shape (6,)
    r0_A : float

    Returns
    -------
    (int, int)
        Pairs with i ≠ j (distinct) and i = j (self): ``|b_j - a_i| < r0_A`` under periodic boundaries.
    """
    from MDAnalysis.lib.distances import capped_distance

    pairs = capped_distance(np.asarray(a, np.float32), np.asarray(b, np.float32), r0_A, box=np.asarray(box, np.float32),
                            return_distances=False)
    same = int(np.count_nonzero(pairs[:, 0] == pairs[:, 1])) if len(pairs) else 0
    return int(len(pairs)) - same, same


def distinct_origin(
    positions: Any,
    times_ps: np.ndarray,
    box: np.ndarray,
    r0_A: float = 0.5,
    fraction: float = 0.5,
    onset_fraction: float = 0.1,
    vibration_ps: float = 0.5,
    max_lag_fraction: float = 0.5,
    n_lags: int = 40,
    n_origins: int = 100,
) -> DistinctOrigin:
    """G_d(r≈0, t)/ρ over lags up to ``max_lag_fraction`` of the run and its characteristic time τ_d.

    Parameters
    ----------
    positions : ndarray or zarr.Array, shape (T, n, 3)
        Positions of the mobile ions, Å, frame major (``TrajectoryData.positions``), frames evenly spaced.
    times_ps : ndarray, shape (T,)
    box : ndarray, shape (6,)
        ``[a, b, c, alpha, beta, gamma]``, Å and degrees.
    r0_A : float
        Radius of "r ≈ 0", Å (well inside the site's vibration cloud and below half the nearest-site distance).
    fraction : float
        τ_d is where G_d reaches this share of its long-time value.
    onset_fraction : float
        The onset time is where it reaches this (smaller) share.
    vibration_ps : float
        Lags of at least this (and at least half the longest lag) give the long-time value, ps.
    max_lag_fraction : float
        Longest lag as a share of the run.
    n_lags : int
        Lags, geometrically spaced from one frame to the longest lag (distinct frame counts).
    n_origins : int
        Time origins per lag, evenly spread over the frames the lag allows.

    Returns
    -------
    DistinctOrigin
    """
    T = int(positions.shape[0])
    n = int(positions.shape[1])
    if T < 3 or n < 2:
        raise AnalysisError(f"G_d(r≈0, t) needs 3 frames and 2 ions, got {T} frames and {n} ions")
    t = np.asarray(times_ps, float)
    dt = float((t[-1] - t[0]) / (T - 1))
    max_lag = max(1, int(max_lag_fraction * (T - 1)))
    lags = np.unique(np.round(np.geomspace(1, max_lag, n_lags)).astype(int))
    from iondiff_stream.core.pbc import cell_matrix

    vol = float(abs(np.linalg.det(cell_matrix(box))))
    v0 = 4.0 / 3.0 * np.pi * r0_A**3
    norm = (n / vol) * v0  # ρ V0
    cache: dict[int, np.ndarray] = {}

    def frame(k: int) -> np.ndarray:
        if k not in cache:
            if len(cache) > 4096:
                cache.clear()
            cache[k] = np.asarray(positions[k], float)
        return cache[k]

    gd = np.zeros(len(lags))
    gt = np.zeros(len(lags))
    n_or = np.zeros(len(lags), dtype=int)
    for j, lag in enumerate(lags):
        starts = np.unique(np.linspace(0, T - 1 - lag, min(n_origins, T - lag)).round().astype(int))
        cd = cs = 0
        for t0 in starts:
            d, s = origin_counts(frame(int(t0)), frame(int(t0 + lag)), box, r0_A)
            cd += d
            cs += s
        n_or[j] = len(starts)
        gd[j] = cd / (len(starts) * n * norm)
        gt[j] = (cd + cs) / (len(starts) * n * norm)
    lag_ps = lags * dt
    late_from = max(vibration_ps, 0.5 * float(lag_ps[-1]))
    late = lag_ps >= late_from - 1e-12
    warnings: list[str] = []
    if lag_ps[-1] >= vibration_ps - 1e-12 and late.any():
        plateau = float(gt[late].mean())
        spread = float(gt[late].std() / plateau) if plateau > 0 else None
        long_time = plateau * (1.0 - 1.0 / n)  # the ion's own share of the sublattice density at long times
        if spread is not None and spread > 0.1:
            warnings.append(f"G(r<{r0_A} Å, t)/ρ varies by {100 * spread:.0f} % over the lags past {late_from:.3g} ps: "
                            "its long-time value (and τ_d) is uncertain")
            logger.warning(warnings[-1])
    else:
        plateau, spread, long_time = None, None, None
    ratio = gd / long_time if long_time and long_time > 0 else np.full(len(lags), np.nan)
    tau, reason = crossing_time(lag_ps, ratio, fraction, long_time, vibration_ps, r0_A)
    onset, onset_reason = crossing_time(lag_ps, ratio, onset_fraction, long_time, vibration_ps, r0_A)
    return DistinctOrigin(float(r0_A), float(fraction), float(vibration_ps), lag_ps, gd, gt, n_or, long_time,
                          spread, ratio, tau, reason, float(onset_fraction), onset, onset_reason, warnings)


def crossing_time(lag_ps: np.ndarray, ratio: np.ndarray, fraction: float, long_time: float | None,
                  vibration_ps: float, r0_A: float) -> tuple[float | None, str | None]:
    """First lag at which ``ratio`` reaches ``fraction`` (linear interpolation between lags), ps, or None and why.

    Parameters
    ----------
    lag_ps, ratio : ndarray, shape (L,)
        Lags (ps) and G_d(r≈0, t) over its long-time value.
    fraction : float
    long_time : float or None
        The long-time value (None: not measured).
    vibration_ps, r0_A : float
        For the reason.
    """
    if long_time is None:
        return None, f"no long-time value: the longest lag ({lag_ps[-1]:.3g} ps) is below {vibration_ps} ps"
    if long_time <= 0:
        return None, f"no ions within {r0_A} Å of the origin at long times (r0 too small?)"
    above = np.flatnonzero(ratio >= fraction)
    if len(above) == 0:
        return None, (f"G_d(r<{r0_A} Å, t)/ρ reaches {ratio[-1]:.2f} of its long-time value at the longest lag "
                      f"({lag_ps[-1]:.3g} ps), below {fraction:g}: the time is longer than the lags this run allows")
    k = int(above[0])
    if k == 0:
        return float(lag_ps[0]), None
    x0, x1, y0, y1 = lag_ps[k - 1], lag_ps[k], ratio[k - 1], ratio[k]
    return float(x0 + (fraction - y0) * (x1 - x0) / (y1 - y0)), None


def time_arrhenius(temperatures_K: Any, times_ps: Any, min_temperatures: int = 3) -> dict[str, Any]:
    """Arrhenius fit of a characteristic time over a temperature series: ``τ = τ0 exp(Ea / k_B T)``.

    Least squares of ln(1/τ) against 1/T (:func:`iondiff_stream.analysis.transport.arrhenius_fit`, its
    uncertainty from the scatter of the points, so at least 3 are needed; the 95 % interval uses Student's t
    with n − 2 degrees of freedom: ±12.7σ for 3 temperatures).

    Parameters
    ----------
    temperatures_K : sequence of float
    times_ps : sequence of float or None
        τ_d (or the onset time) of each run, ps; None where the run did not resolve it.
    min_temperatures : int

    Returns
    -------
    dict
        ``Ea_eV``, ``Ea_err_eV`` (1σ), ``Ea_ci95_eV`` ([low, high]), ``tau0_ps``, ``n_points``, ``temperatures_K`` used,
        ``reason`` (None when fitted; otherwise ``Ea_eV`` is None).
    """
    from iondiff_stream.analysis.transport import arrhenius_fit

    T = np.asarray(temperatures_K, float)
    use = [i for i, t in enumerate(times_ps) if t is not None and math.isfinite(float(t)) and float(t) > 0]
    out: dict[str, Any] = {"Ea_eV": None, "Ea_err_eV": None, "Ea_ci95_eV": None, "tau0_ps": None,
                           "n_points": len(use), "temperatures_K": [float(T[i]) for i in use], "reason": None}
    if len(use) < min_temperatures:
        out["reason"] = (f"{len(use)} of {len(T)} temperatures resolve the time; an activation energy with an "
                         f"interval needs {min_temperatures}")
        return out
    from scipy.stats import t as student_t

    fit = arrhenius_fit(T[use], 1.0 / np.array([float(times_ps[i]) for i in use]))
    ea, err = fit["Ea_eV"], fit["Ea_err_eV"]
    q = float(student_t.ppf(0.975, len(use) - 2))  # the error is from the scatter of len(use) - 2 residuals
    out.update({"Ea_eV": ea, "Ea_err_eV": err, "Ea_ci95_eV": [ea - q * err, ea + q * err],
                "tau0_ps": 1.0 / fit["prefactor"]})
    return out
