"""Small, fast k-means and silhouette kernels for one ion's positions.

Why not :class:`sklearn.cluster.KMeans` directly: the method fits K = 2..10
for every ion of a run, i.e. thousands of tiny fits; sklearn's per-call
overhead (validation, thread pools) dominates at that size and
``benchmarks/hops_speed.py`` shows the difference. The algorithms are the
textbook ones (k-means++ seeding, Lloyd iterations) on *weighted* points, and
``tests/test_kmeans.py`` checks them against scikit-learn.

Two reductions keep every ion's cost bounded whatever the run length:

* :func:`compress` bins positions on a fine grid (default 0.2 Å) and clusters
  the occupied voxels weighted by their frame counts. The quantisation error
  (≤ half a voxel) is far below any vibration amplitude; a 10^6-frame ion that
  visits a few sites occupies a few thousand voxels.
* :func:`sampled_silhouette` estimates the average silhouette from a sample
  *stratified by cluster*: up to ``m`` frames of every cluster, each cluster's
  mean silhouette weighted by its true size. Short residences (small clusters)
  are always fully represented; when every cluster has ≤ ``m`` frames the
  value is exact.
"""

from __future__ import annotations

import numpy as np

__all__ = ["compress", "kmeans_weighted", "sampled_silhouette", "kmeans_pp"]


def compress(x: np.ndarray, grid_A: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin points on a cubic grid.

    Parameters
    ----------
    x : ndarray, shape (T, 3)
        Positions, Å.
    grid_A : float
        Voxel edge, Å. ``0`` disables binning.

    Returns
    -------
    points : ndarray, shape (M, 3)
        Mean position of the frames in each occupied voxel.
    weights : ndarray, shape (M,)
        Number of frames in each voxel.
    inverse : ndarray, shape (T,)
        Voxel index of every frame.
    """
    if grid_A <= 0:
        return x, np.ones(len(x)), np.arange(len(x))
    q = np.floor((x - x.min(axis=0)) / grid_A).astype(np.int64)
    dims = q.max(axis=0) + 1
    key = (q[:, 0] * dims[1] + q[:, 1]) * dims[2] + q[:, 2]
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    pts = np.zeros((len(counts), 3))
    np.add.at(pts, inverse, x)
    pts /= counts[:, None]
    return pts, counts.astype(np.float64), inverse


def _sqdist(x: np.ndarray, c: np.ndarray, xx: np.ndarray | None = None) -> np.ndarray:
    """Squared distances, shape (len(x), len(c)); ``xx`` = precomputed squared norms of x."""
    if xx is None:
        xx = np.einsum("ij,ij->i", x, x)
    d = x @ (-2.0 * c.T)
    d += xx[:, None]
    d += np.einsum("ij,ij->i", c, c)[None, :]
    np.maximum(d, 0.0, out=d)
    return d


def kmeans_pp(x: np.ndarray, w: np.ndarray, k: int, rng: np.random.Generator, n_trials: int | None = None) -> np.ndarray:
    """Greedy k-means++ seeding on weighted points (as in Arthur & Vassilvitskii 2007).

    Returns
    -------
    centres : ndarray, shape (k, 3)
    """
    n = len(x)
    n_trials = n_trials or 2 + int(np.log(k))
    p = w / w.sum()
    centres = np.empty((k, x.shape[1]))
    first = rng.choice(n, p=p)
    centres[0] = x[first]
    xx = np.einsum("ij,ij->i", x, x)
    closest = _sqdist(x, centres[:1], xx)[:, 0]
    pot = float((w * closest).sum())
    for c in range(1, k):
        if pot <= 0:
            centres[c:] = x[rng.choice(n, size=k - c, p=p)]
            break
        cand = np.searchsorted(np.cumsum(w * closest), rng.random(n_trials) * pot)
        cand = np.minimum(cand, n - 1)
        d_cand = np.minimum(closest[None, :], _sqdist(x, x[cand], xx).T)
        pots = (d_cand * w[None, :]).sum(1)
        best = int(np.argmin(pots))
        centres[c] = x[cand[best]]
        closest = d_cand[best]
        pot = float(pots[best])
    return centres


def kmeans_weighted(
    x: np.ndarray,
    w: np.ndarray,
    k: int,
    rng: np.random.Generator,
    n_init: int = 3,
    max_iter: int = 100,
    tol: float = 1e-8,
    init: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Weighted Lloyd k-means, best of ``n_init`` k-means++ starts.

    Parameters
    ----------
    x : ndarray, shape (M, 3)
    w : ndarray, shape (M,)
        Non-negative weights (frame counts).
    k : int
    rng : numpy Generator
    n_init : int
        Starts tried; the lowest inertia wins. Ignored when ``init`` is given.
    tol : float
        Stop when no centre moves more than ``tol`` Å² (or when no assignment
        changes, whichever comes first).
    init : ndarray, shape (k, 3), optional
        Initial centres (warm start).

    Returns
    -------
    centres : ndarray, shape (k, 3)
    labels : ndarray, shape (M,)
    inertia : float
        Weighted sum of squared distances, Å².
    """
    best: tuple[np.ndarray, np.ndarray, float] | None = None
    starts = [init] if init is not None else [None] * n_init
    wsum_all = w.sum()
    xx = np.einsum("ij,ij->i", x, x)
    rows = np.arange(len(x))
    for s in starts:
        c = kmeans_pp(x, w, k, rng) if s is None else np.array(s, dtype=np.float64)
        prev = None
        for _ in range(max_iter):
            d = _sqdist(x, c, xx)
            lab = d.argmin(1)
            if prev is not None and np.array_equal(lab, prev):
                break  # assignments stable: Lloyd has converged
            prev = lab
            wsum = np.bincount(lab, weights=w, minlength=k)
            new = np.empty_like(c)
            for j in range(3):
                new[:, j] = np.bincount(lab, weights=w * x[:, j], minlength=k)
            empty = wsum <= 0
            new[~empty] /= wsum[~empty, None]
            if np.any(empty):  # reseed empty clusters at the farthest points
                far = np.argsort(d[rows, lab] * w)[::-1][: int(empty.sum())]
                new[empty] = x[far]
                prev = None
            shift = float(((new - c) ** 2).sum(1).max())
            c = new
            if shift <= tol:
                break
        d = _sqdist(x, c, xx)
        lab = d.argmin(1)
        inertia = float((d[rows, lab] * w).sum())
        if best is None or inertia < best[2] - 1e-12 * wsum_all:
            best = (c, lab, inertia)
    assert best is not None
    return best


def sampled_silhouette(
    x: np.ndarray, labels: np.ndarray, k: int, m: int, rng: np.random.Generator
) -> float:
    """Average silhouette coefficient estimated from a cluster-stratified sample.

    Parameters
    ----------
    x : ndarray, shape (T, 3)
        All frames of one ion, Å.
    labels : ndarray, shape (T,)
        Cluster of every frame, in ``0..k-1``.
    k : int
    m : int
        Frames sampled per cluster (all of a cluster that has ≤ m frames).
    rng : numpy Generator

    Returns
    -------
    float
        Estimate of the mean over all T frames of ``(b - a) / max(a, b)``
        (Rousseeuw 1987; scikit-learn's definition: 0 for singleton clusters).
        Exact when no cluster has more than ``m`` frames.
    """
    counts = np.bincount(labels, minlength=k)
    present = np.flatnonzero(counts)
    if len(present) < 2:
        return 0.0
    if counts.max() <= m:
        idx = np.arange(len(labels))
    else:
        # stratified: a random subset of m frames from every cluster larger than m
        order = np.argsort(labels, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        idx_list = []
        for c in present:
            members = order[starts[c] : starts[c] + counts[c]]
            if counts[c] > m:
                members = members[rng.choice(counts[c], size=m, replace=False)]
            idx_list.append(members)
        idx = np.concatenate(idx_list)
    _, lab = np.unique(labels[idx], return_inverse=True)  # 0..P-1
    lab = lab.ravel()
    P = len(present)
    xs = x[idx]
    dist = np.sqrt(_sqdist(xs, xs))
    onehot = np.zeros((len(idx), P))
    onehot[np.arange(len(idx)), lab] = 1.0
    sums = dist @ onehot  # (S, P): summed distance of every sample to every cluster's samples
    ns = onehot.sum(0)
    rows = np.arange(len(idx))
    own = ns[lab]
    a = sums[rows, lab] / np.maximum(own - 1, 1)
    mean_other = sums / ns[None, :]
    mean_other[rows, lab] = np.inf
    b = mean_other.min(1)
    denom = np.maximum(a, b)
    s = np.where((own > 1) & (denom > 0), (b - a) / np.where(denom > 0, denom, 1.0), 0.0)
    # each cluster contributes its true share of frames
    per_cluster = (onehot * s[:, None]).sum(0) / ns
    return float((counts[present] * per_cluster).sum() / counts.sum())
