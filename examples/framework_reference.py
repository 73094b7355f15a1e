"""Helpers shared by the independent hop references of the examples (``agi``, ``agi_fcc``, ``caf2``).

Deliberately free of ``iondiff_stream``: a reference that used the package's code could not check it. Each
example's ``reference.py`` defines its lattice and framework sites; reading dumps, minimum images, the MSD and
committed visits are here.
"""

from __future__ import annotations

import numpy as np

__all__ = ["read_dump", "minimg", "wrap", "msd_fft", "plain_msd_diffusion", "committed_visits"]


def read_dump(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read a LAMMPS text dump with columns ``id type xu yu zu`` (fixed atom count, orthogonal box).

    Parameters
    ----------
    path : str
        Dump file.

    Returns
    -------
    steps : ndarray, shape (n_frames,)
        MD step of every frame.
    ids : ndarray, shape (n_atoms,)
        Atom ids (order of the rows, sorted by id).
    types : ndarray, shape (n_atoms,)
        Atom types.
    box : ndarray, shape (3,)
        Box lengths of the first frame, A.
    xyz : ndarray, shape (n_frames, n_atoms, 3)
        Unwrapped positions, A (rows sorted by atom id in every frame).
    """
    with open(path) as fh:
        lines = fh.read().splitlines()
    n = int(lines[3])
    per = 9 + n
    nf = len(lines) // per
    if nf * per != len(lines):
        log.warning("%s: %d trailing lines ignored (incomplete last frame)", path, len(lines) - nf * per)
    cols = lines[8].split()[2:]
    want = ["id", "type", "xu", "yu", "zu"]
    idx = [cols.index(c) for c in want]
    steps = np.array([int(lines[f * per + 1]) for f in range(nf)])
    box = np.array([[float(v) for v in lines[5 + k].split()[:2]] for k in range(3)])
    body = [ln for f in range(nf) for ln in lines[f * per + 9:(f + 1) * per]]
    arr = np.array(" ".join(body).split(), dtype=float).reshape(nf, n, len(cols))[:, :, idx]
    order = np.argsort(arr[0, :, 0], kind="stable")
    arr = arr[:, order]
    if not np.all(arr[:, :, 0] == arr[0:1, :, 0]):
        for f in range(nf):  # rows not sorted consistently (no dump_modify sort): sort every frame
            arr[f] = arr[f, np.argsort(arr[f, :, 0], kind="stable")]
    return steps, arr[0, :, 0].astype(int), arr[0, :, 1].astype(int), box[:, 1] - box[:, 0], arr[:, :, 2:5]


def minimg(d: np.ndarray, L: np.ndarray) -> np.ndarray:
    return d - L * np.round(d / L)


def wrap(x: np.ndarray, L: np.ndarray) -> np.ndarray:
    y = x - L * np.floor(x / L)
    return np.where(y >= L, 0.0, y)


def msd_fft(x: np.ndarray) -> np.ndarray:
    """MSD over all time origins for every lag (FFT-based), A^2.

    Parameters
    ----------
    x : ndarray, shape (n_frames, n_ions, 3)
        Unwrapped positions, A.

    Returns
    -------
    ndarray, shape (n_frames,)
        Mean over ions and origins of |x(t + lag) - x(t)|^2 for lag = 0 .. n_frames - 1.
    """
    nf = x.shape[0]
    sq = (x ** 2).sum(-1)  # (nf, n)
    s_sq = 2.0 * sq.sum(0)  # running sums of the squares (from both ends)
    s1 = np.empty(nf)
    q = s_sq.copy()
    s1[0] = q.sum() / nf
    cum_lo = np.cumsum(sq, 0)
    cum_hi = np.cumsum(sq[::-1], 0)
    for m in range(1, nf):
        q = s_sq - cum_lo[m - 1] - cum_hi[m - 1]
        s1[m] = q.sum() / (nf - m)
    f = np.fft.rfft(x, n=2 * nf, axis=0)
    ac = np.fft.irfft(f * f.conj(), axis=0)[:nf].sum(-1).sum(-1)  # sum over ions and xyz
    s2 = ac / (nf - np.arange(nf))
    return (s1 - 2.0 * s2) / x.shape[1]


def plain_msd_diffusion(x: np.ndarray, dt_ps: float, lo: float = 0.1, hi: float = 0.5) -> tuple[float, np.ndarray]:
    """D* from a least-squares line MSD = 6 D t + c over lags ``lo``-``hi`` of the run.

    Parameters
    ----------
    x : ndarray, shape (n_frames, n_ions, 3)
        Unwrapped, drift-corrected positions, A.
    dt_ps : float
        Time between frames, ps.
    lo, hi : float
        Fit window as fractions of the run length.

    Returns
    -------
    D : float
        Tracer diffusion coefficient, cm^2/s.
    msd : ndarray, shape (n_frames,)
        MSD per lag, A^2.
    """
    msd = msd_fft(x)
    nf = len(msd)
    lags = np.arange(nf)
    sel = (lags >= int(np.ceil(lo * (nf - 1)))) & (lags <= int(np.floor(hi * (nf - 1))))
    slope = np.polyfit(lags[sel] * dt_ps, msd[sel], 1)[0]  # A^2 / ps
    return float(slope / 6.0 * 1e-4), msd


def committed_visits(seq: np.ndarray, min_frames: float) -> list[list[int]]:
    """Kept visits [site, start, end) of one ion: runs >= min_frames, neighbours at the same site merged."""
    nf = len(seq)
    change = np.flatnonzero(seq[1:] != seq[:-1]) + 1
    starts = np.r_[0, change]
    ends = np.r_[change, nf]
    keep = (ends - starts) >= min_frames
    merged: list[list[int]] = []
    for s0, e0 in zip(starts[keep], ends[keep]):
        v = int(seq[s0])
        if merged and merged[-1][0] == v:
            merged[-1][2] = int(e0)
        else:
            merged.append([v, int(s0), int(e0)])
    return merged
