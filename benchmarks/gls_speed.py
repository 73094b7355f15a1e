"""The GLS diffusion fit: one eigendecomposition per start vs the three-step repair + pinvh it replaces.

On a random walk with vibrations (``--ions`` ions, ``--frames`` frames, 400 lags as ``analyse_transport``
uses), times :func:`iondiff_stream.analysis.transport.fit_diffusion_gls` (all starts) and the same fit with the
previous ``_gls_line`` (eigenvalue clipping, nearest correlation matrix by a second eigendecomposition,
``scipy.linalg.pinvh``: three per start), both with one BLAS thread, and prints the process CPU times, the
ratio and the largest relative difference of D and of its standard deviation over the starts tried::

    python benchmarks/gls_speed.py --ions 32 --frames 4000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import iondiff_stream.analysis.transport as tr


def three_step_line(t: np.ndarray, y: np.ndarray, var_s: np.ndarray, n_obs: np.ndarray):
    """The line as computed before: minimum-eigenvalue clipping, nearest correlation, pinvh."""
    from scipy.linalg import pinvh

    i = np.arange(len(t))
    lo, hi = np.minimum.outer(i, i), np.maximum.outer(i, i)
    S = var_s[lo] / n_obs[hi]
    w, V = np.linalg.eigh(S)
    S = (V * np.maximum(w, w.max() * 1e-16)) @ V.T
    sd = np.sqrt(np.maximum(np.diag(S), 1e-300))
    w, V = np.linalg.eigh(S / np.outer(sd, sd))
    R = (V * np.maximum(w, 1e-15)) @ V.T
    d = np.sqrt(np.diag(R))
    S = R / np.outer(d, d) * np.outer(sd, sd)
    P = pinvh(S)
    X = np.column_stack([t, np.ones_like(t)])
    cov = np.linalg.pinv(X.T @ P @ X)
    return cov @ (X.T @ P @ y), cov


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ions", type=int, default=32)
    ap.add_argument("--frames", type=int, default=4000)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(0, 0.05, (a.ions, a.frames, 3)), axis=1) + rng.normal(0, 0.3, (a.ions, a.frames, 3))
    dt = 0.05
    lags = np.unique(np.rint(np.linspace(1, a.frames - 1, 400)).astype(np.int64))
    msd = tr.msd_fft(x).sum(2).mean(0)[lags]
    v = tr.squared_displacement_variance(x, lags)
    fits, cpus = {}, {}
    for name, line in (("one eigh", tr._gls_line), ("three-step", three_step_line)):
        orig = tr._gls_line
        tr._gls_line = line
        try:
            c0 = time.process_time()
            fits[name] = tr.fit_diffusion_gls(lags * dt, msd, v, a.ions, a.frames, dt)
            cpus[name] = cpu = time.process_time() - c0
        finally:
            tr._gls_line = orig
        f = fits[name]
        print(f"{name}: {cpu * 1e3:.0f} ms CPU, {len(f.grid_start_ps)} starts, D = {f.D_cm2_s:.6e} cm2/s")
    new, old = fits["one eigh"], fits["three-step"]
    print(f"three-step / one eigh: {cpus['three-step'] / cpus['one eigh']:.1f}x CPU")
    print(f"max relative difference over the starts: D {np.max(np.abs(new.grid_D_cm2_s / old.grid_D_cm2_s - 1)):.1e}, "
          f"std {np.max(np.abs(new.grid_std_cm2_s / old.grid_std_cm2_s - 1)):.1e}")


if __name__ == "__main__":
    main()
