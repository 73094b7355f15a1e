"""Sites shared by all mobile ions, learnt from where the ions spend their time (no lattice needed).

The site model of the default hop method (:mod:`iondiff_stream.analysis.hops`) and of the live estimator
(:mod:`iondiff_stream.live.online`):

1. **Pooled short-time averages.** Every mobile ion's unwrapped positions are averaged over a short
   running window (``average_ps``, ~0.2 ps: vibrations average out, residences of a few tenths of a
   ps survive), wrapped into the cell and pooled over all ions.
2. **Periodic density.** The pooled points are histogrammed on a grid in fractional coordinates
   (voxels of about ``grid_A``), accumulated block by block (memory bounded by the grid, so it works
   out of core), and smoothed with a Gaussian of ``smooth_A`` with periodic boundaries.
3. **Peaks.** Local maxima of the smoothed density holding at least ``min_site_frames`` ion-frames
   are site candidates; each is refined to the density-weighted centroid of its neighbourhood.
4. **Merging.** Two candidates are one site when closer than ``merge_A``, or when the density on the
   straight path between them dips by less than ``1 - saddle_ratio`` of the lower peak or by less
   than ``noise_sigmas`` standard deviations of its counting noise (one broad basin or a noise ripple,
   not two sites); union-find over all pairs, minimum image throughout.

Each site's *core cap* is ``core_cap`` times the distance to its nearest other site (minimum image),
so cores never overlap; an ion's core radius is its own vibration radius, capped by that.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from iondiff_stream.core.errors import AnalysisError
from iondiff_stream.core.pbc import cell_matrix, minimum_image, wrap

logger = logging.getLogger(__name__)

__all__ = ["SiteParameters", "SiteModel", "SiteDensity", "short_time_average", "ANIONS", "anchor_atoms",
           "framework_holes"]


@dataclass(frozen=True)
class SiteParameters:
    """Settings of site learning.

    Attributes
    ----------
    average_ps : float
        Running-average window for the pooled positions, ps.
    grid_A : float
        Voxel edge of the density grid, Å (rounded so the cell holds whole voxels).
    smooth_A : float
        Gaussian smoothing of the density, Å.
    min_site_frames : float
        A density peak must hold at least this many ion-frames to be a site.
    merge_A : float
        Candidates closer than this are one site, Å.
    saddle_ratio : float
        Candidates joined by density never below this fraction of the lower peak are one site.
    noise_sigmas : float
        ... or whose dip between them is within this many standard deviations of the
        counting noise of the smoothed density (Poisson counts): a dip that more data
        would resolve separates two sites, a noise ripple does not.
    core_cap : float
        Core radius cap as a fraction of the distance to the nearest other site (< 0.5).
    framework_core_cap : float
        Core radius cap of framework holes, as a fraction of the distance to the nearest other hole (< 0.5):
        the holes tile the framework, so their cores nearly fill it (a thin gap against recrossing noise;
        ions sit off-centre in large holes). On α-AgI and fcc-AgI 0.49 instead of 0.45 finds 0.98 / 0.92
        of the reference hops instead of 0.90 / 0.78 (per-ion r 0.86 / 0.90 instead of 0.84 / 0.80).
    candidates : {"auto", "density", "framework"}
        ``"auto"``: density peaks, or the framework's polyhedral holes (attached to the framework)
        when the ions spend at least as much time in their cores
        (:func:`iondiff_stream.model.framework.choose_site_model`); ``"density"``: density peaks only;
        ``"framework"``: holes whenever a framework is given.
    """

    average_ps: float = 0.2
    grid_A: float = 0.2
    smooth_A: float = 0.3
    min_site_frames: float = 5.0
    merge_A: float = 0.9
    saddle_ratio: float = 0.9
    noise_sigmas: float = 5.0
    core_cap: float = 0.45
    framework_core_cap: float = 0.49
    candidates: str = "auto"

    def __post_init__(self) -> None:
        if self.candidates not in ("auto", "density", "framework"):
            raise ValueError(f"candidates must be 'auto', 'density' or 'framework', got {self.candidates!r}")
        if not 0 < self.framework_core_cap < 0.5:
            raise ValueError(f"framework_core_cap must be in (0, 0.5) so cores never overlap, got {self.framework_core_cap}")
        if not 0 < self.core_cap < 0.5:
            raise ValueError(f"core_cap must be in (0, 0.5) so cores never overlap, got {self.core_cap}")
        if self.grid_A <= 0 or self.smooth_A <= 0:
            raise ValueError(f"grid_A and smooth_A must be > 0, got {self.grid_A}, {self.smooth_A}")
        if not 0 < self.saddle_ratio <= 1:
            raise ValueError(f"saddle_ratio must be in (0, 1], got {self.saddle_ratio}")


def short_time_average(x: np.ndarray, window: int) -> np.ndarray:
    """Centred running mean along axis 0 (time), ``window`` frames (edges: shorter windows).

    Parameters
    ----------
    x : ndarray, shape (T, ...)
    window : int

    Returns
    -------
    ndarray, same shape as ``x``
    """
    if window <= 1:
        return np.asarray(x, dtype=np.float64)
    return ndimage.uniform_filter1d(np.asarray(x, dtype=np.float64), size=int(window), axis=0, mode="nearest")


@dataclass
class SiteModel:
    """Sites in a periodic cell and the geometry of their cores.

    Attributes
    ----------
    sites_A : ndarray, shape (n_sites, 3)
        Site positions wrapped into the cell, Å.
    box : ndarray, shape (6,)
        Cell ``[a, b, c, alpha, beta, gamma]`` (Å, degrees).
    weight : ndarray, shape (n_sites,)
        Ion-frames of pooled density in each site's peak (relative occupancy).
    nn_A : ndarray, shape (n_sites,)
        Distance to the nearest other site (minimum image), Å.
    core_cap_A : ndarray, shape (n_sites,)
        Largest core radius of each site, Å.
    periodic : bool
        False when the run had no cell (the box is then only a bounding box).
    anchors : ndarray, shape (n_sites, k), int, or None
        Framework atoms (indices into the framework positions, -1 padded) each site is attached to:
        in every frame a site is at the mean of its anchors' positions (each shifted by
        ``anchor_shift_A``) plus ``sites_A - mean``, so sites follow the framework's vibrations.
        None: sites fixed at ``sites_A``.
    anchor_shift_A : ndarray, shape (n_sites, k, 3) or None
        Lattice translation of each anchor that puts it next to its site, Å.
    kind : str
        How the sites were found (``"density peaks"``, ``"framework holes"``).
    """

    sites_A: np.ndarray
    box: np.ndarray
    weight: np.ndarray
    core_cap: float = 0.45
    periodic: bool = True
    anchors: np.ndarray | None = None
    anchor_shift_A: np.ndarray | None = None
    kind: str = "density peaks"
    nn_A: np.ndarray = field(init=False)
    core_cap_A: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.sites_A = np.asarray(self.sites_A, dtype=np.float64).reshape(-1, 3)
        self.box = np.asarray(self.box, dtype=np.float64)
        self.weight = np.asarray(self.weight, dtype=np.float64)
        if self.anchors is not None:
            self.anchors = np.asarray(self.anchors, dtype=np.int64).reshape(len(self.sites_A), -1)
            self.anchor_shift_A = np.asarray(self.anchor_shift_A, dtype=np.float64).reshape(*self.anchors.shape, 3)
            valid = self.anchors >= 0
            self._aw = valid / np.maximum(valid.sum(1, keepdims=True), 1)  # (s, k) weights of the anchors
            self._aidx = np.where(valid, self.anchors, 0)
            from scipy.sparse import csr_matrix

            m = int(self._aidx.max()) + 1 if self._aidx.size else 1
            rows = np.repeat(np.arange(len(self.sites_A)), self._aidx.shape[1])
            # centre of the anchors = W @ framework + mean shift (one sparse product for a whole frame block)
            self._W = csr_matrix((self._aw.ravel(), (rows, self._aidx.ravel())), shape=(len(self.sites_A), m))
            self._wshift = np.einsum("skj,sk->sj", self.anchor_shift_A, self._aw)
        self._h = cell_matrix(self.box)
        self._hinv = np.linalg.inv(self._h)
        self._ortho = np.diag(self._h).copy() if np.allclose(self._h, np.diag(np.diag(self._h))) else None
        self._build()

    @property
    def n_sites(self) -> int:
        return int(len(self.sites_A))

    def _images(self) -> np.ndarray:
        if not self.periodic:
            return np.zeros((1, 3))
        r = np.array([-1, 0, 1])
        return np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3) @ self._h

    def _build(self) -> None:
        self.__dict__.pop("_ptree", None)
        img = self._images()
        s = len(self.sites_A)
        pts = (self.sites_A[None, :, :] + img[:, None, :]).reshape(-1, 3)
        self._tree = cKDTree(pts) if s else None
        self._n_img = len(img)
        if s >= 2:
            d, j = self._tree.query(self.sites_A, k=2)
            self.nn_A = d[:, 1]
        else:
            hh = np.abs(np.linalg.det(self._h)) ** (1 / 3)
            self.nn_A = np.full(s, hh)
        self.core_cap_A = self.core_cap * self.nn_A

    def wrap(self, x: np.ndarray) -> np.ndarray:
        """Positions (..., 3) translated into the cell, Å."""
        x = np.asarray(x, dtype=np.float64)
        if not self.periodic:
            return x
        if self._ortho is not None:  # orthorhombic: per axis (3x faster than the matrix products)
            return x - np.floor(x / self._ortho) * self._ortho
        f = x @ self._hinv
        f -= np.floor(f)
        return f @ self._h

    def minimum_image(self, d: np.ndarray) -> np.ndarray:
        """Minimum-image displacements (..., 3), Å."""
        return minimum_image(d, self.box) if self.periodic else np.asarray(d, dtype=np.float64)

    def nearest(self, x: np.ndarray, max_distance_A: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
        """Nearest site of every position.

        Parameters
        ----------
        x : ndarray, shape (M, 3)
            Positions (unwrapped is fine), Å.
        max_distance_A : float
            Positions farther than this from every site get index -1 and distance inf (faster).

        Returns
        -------
        index : ndarray, shape (M,), int32
        distance_A : ndarray, shape (M,)
        """
        x = np.asarray(x, dtype=np.float64).reshape(-1, 3)
        if self._tree is None or len(x) == 0:
            return np.full(len(x), -1, np.int32), np.full(len(x), np.inf)
        d, j = self._tree.query(self.wrap(x), k=1, distance_upper_bound=max_distance_A)
        ok = np.isfinite(d)
        idx = np.where(ok, j % max(len(self.sites_A), 1), -1).astype(np.int32)
        return idx, d

    def assign(self, x: np.ndarray, r_core_A: np.ndarray | float) -> np.ndarray:
        """Core of every position, or -1 (outside every core).

        Parameters
        ----------
        x : ndarray, shape (M, 3)
            Positions, Å.
        r_core_A : float or ndarray, shape (M,)
            Core radius wanted for each position (the ion's vibration radius), Å;
            capped by each site's :attr:`core_cap_A`.

        Returns
        -------
        ndarray, shape (M,), int32
        """
        rmax = float(np.max(r_core_A)) if np.size(r_core_A) else 0.0
        idx, d = self.nearest(x, max_distance_A=min(rmax, float(self.core_cap_A.max(initial=0.0))) + 1e-9)
        ok = idx >= 0
        r = np.broadcast_to(np.asarray(r_core_A, dtype=np.float64), idx.shape)
        inside = np.zeros(len(idx), dtype=bool)
        inside[ok] = d[ok] <= np.minimum(r[ok], self.core_cap_A[idx[ok]])
        return np.where(inside, idx, -1).astype(np.int32)

    def unwrapped_site(self, x: np.ndarray, site: np.ndarray) -> np.ndarray:
        """Image of ``site`` nearest to each position ``x`` (both (M, 3)/(M,)), Å."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, 3)
        return x - self.minimum_image(x - self.sites_A[np.asarray(site)])

    def to_dict(self) -> dict[str, np.ndarray]:
        d = {"sites_A": self.sites_A, "box": self.box, "weight": self.weight,
             "core_cap": np.array(self.core_cap), "periodic": np.array(self.periodic)}
        if self.anchors is not None:
            d.update({"anchors": self.anchors, "anchor_shift_A": self.anchor_shift_A})
        return d

    # -- sites attached to the framework ------------------------------------------------------
    @property
    def moving(self) -> bool:
        """True when the sites follow the framework (:attr:`anchors`)."""
        return self.anchors is not None

    def anchor_centres(self, framework: np.ndarray) -> np.ndarray:
        """Mean position of every site's anchors (shifted next to the site).

        Parameters
        ----------
        framework : ndarray, shape (T, M, 3) or (M, 3)
            Unwrapped framework positions, Å.

        Returns
        -------
        ndarray, shape (T, n_sites, 3) or (n_sites, 3), Å
        """
        fw = np.asarray(framework)
        one = fw.ndim == 2
        fw = fw[None] if one else fw
        T, M, _ = fw.shape
        m = self._W.shape[1]
        flat = np.ascontiguousarray(fw[:, :m].transpose(1, 0, 2), dtype=np.float64).reshape(m, T * 3)
        out = (self._W @ flat).reshape(-1, T, 3).transpose(1, 0, 2) + self._wshift[None]
        return out[0] if one else out

    def positions_at(self, framework: np.ndarray) -> np.ndarray:
        """Site positions in frames with these framework positions, shape (T, n_sites, 3) (or (n_sites, 3)), Å."""
        c = self.anchor_centres(framework)
        return c + self._offset

    def set_reference(self, framework_mean: np.ndarray) -> None:
        """Fix the offset of each site from its anchors' centre, from the framework's mean positions (M, 3)."""
        self._offset = self.sites_A - self.anchor_centres(framework_mean)

    def nearest_frames(self, x: np.ndarray, framework: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest moving site of every ion in every frame.

        The site nearest at the sites' mean positions tells how the framework around the ion has moved
        (that site's displacement); the ion, moved back by it, is matched to the sites' mean positions
        again, and the distance is measured to that site where it is in the frame.

        Parameters
        ----------
        x : ndarray, shape (T, n, 3)
            Ion positions, Å.
        framework : ndarray, shape (T, M, 3)
            Framework positions of the same frames, Å.

        Returns
        -------
        index : ndarray, shape (T, n), int32
        distance_A : ndarray, shape (T, n)
        """
        x = np.asarray(x, dtype=np.float64)
        T, n, _ = x.shape
        S = self.positions_at(framework)  # (T, s, 3)
        rows = np.arange(T)[:, None]
        j = self._query1(x.reshape(-1, 3)).reshape(T, n)
        u = S[rows, j] - self.sites_A[j]  # displacement of the framework around each ion
        y = x - u
        # within half the nearest-site distance of site j (mean positions): j is the nearest, no new search
        far = np.linalg.norm(self.minimum_image(y - self.sites_A[j]), axis=-1) >= 0.5 * self.nn_A[j]
        if far.any():
            j[far] = self._query1(y[far])
        d = np.linalg.norm(self.minimum_image(x - S[rows, j]), axis=-1)
        return j.astype(np.int32), d

    def _query1(self, x: np.ndarray) -> np.ndarray:
        """Index of the nearest site (mean positions) of each position (m, 3)."""
        if self._ortho is not None and self.periodic:
            if not hasattr(self, "_ptree"):
                L = self._ortho
                self._ptree = cKDTree(np.mod(self.sites_A, L) % L, boxsize=L)
            return np.asarray(self._ptree.query(np.mod(x, self._ortho) % self._ortho, k=1)[1], dtype=np.int64)
        return np.asarray(self._tree.query(self.wrap(x), k=1)[1], dtype=np.int64) % self.n_sites

    def assign_frames(self, x: np.ndarray, framework: np.ndarray | None, r_core_A: np.ndarray) -> np.ndarray:
        """Core of every ion in every frame (-1 in transit), sites moving with the framework when attached.

        Parameters
        ----------
        x : ndarray, shape (T, n, 3)
            Ion positions, Å.
        framework : ndarray, shape (T, M, 3) or None
            Framework positions of the same frames (needed when :attr:`moving`), Å.
        r_core_A : ndarray, shape (n,)
            Core radius wanted for each ion, Å (capped by :attr:`core_cap_A`).

        Returns
        -------
        ndarray, shape (T, n), int32
        """
        x = np.asarray(x, dtype=np.float64)
        T, n, _ = x.shape
        if not self.moving:
            r = np.broadcast_to(np.asarray(r_core_A, float)[None, :], (T, n)).reshape(-1)
            return self.assign(x.reshape(-1, 3), r).reshape(T, n)
        idx, d = self.nearest_frames(x, framework)
        r = np.minimum(np.asarray(r_core_A, float)[None, :], self.core_cap_A[idx])
        return np.where(d <= r, idx, -1).astype(np.int32)

    def unwrapped_site_at(self, x: np.ndarray, site: np.ndarray, framework: np.ndarray | None) -> np.ndarray:
        """Image of ``site`` nearest to each position ``x`` ((M, 3), (M,)), at the frames whose framework
        positions are ``framework`` ((M, n_fw, 3); None: fixed sites), Å."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, 3)
        site = np.asarray(site)
        if not self.moving or framework is None:
            return self.unwrapped_site(x, site)
        fw = np.asarray(framework, dtype=np.float64)
        g = fw[np.arange(len(x))[:, None], self._aidx[site]] + self.anchor_shift_A[site]  # (M, k, 3)
        p = np.einsum("mkj,mk->mj", g, self._aw[site]) + self._offset[site]
        return x - self.minimum_image(x - p)


class SiteDensity:
    """Pooled density of short-time-averaged positions on a periodic grid (accumulated in blocks).

    Parameters
    ----------
    box : array_like, shape (6,)
        The cell (Å, degrees).
    params : SiteParameters, optional
    periodic : bool
        False when there is no cell (``box`` is then a bounding box).

    Attributes
    ----------
    counts_ : ndarray, shape (na, nb, nc)
        Ion-frames per voxel.
    n_points_ : int
    """

    def __init__(self, box: np.ndarray, params: SiteParameters | None = None, periodic: bool = True,
                 origin: np.ndarray | None = None) -> None:
        self.box = np.asarray(box, dtype=np.float64)
        self.params = params or SiteParameters()
        self.periodic = periodic
        self.origin = np.zeros(3) if origin is None else np.asarray(origin, float)
        self._h = cell_matrix(self.box)
        self._hinv = np.linalg.inv(self._h)
        lengths = np.linalg.norm(self._h, axis=1)
        self.shape = tuple(int(max(4, np.ceil(L / self.params.grid_A))) for L in lengths)
        self.counts_ = np.zeros(self.shape, dtype=np.float64)
        self.n_points_ = 0

    def add(self, x: np.ndarray, weight: float = 1.0) -> SiteDensity:
        """Add points (..., 3) (Å, unwrapped is fine), each counting ``weight`` ion-frames."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, 3)
        if len(x) == 0:
            return self
        n = np.array(self.shape)
        if np.allclose(self._h, np.diag(np.diag(self._h))):
            f = (x - self.origin) / np.diag(self._h)
        else:
            f = (x - self.origin) @ self._hinv
        f -= np.floor(f)
        q = np.minimum((f * n).astype(np.int64), n - 1)
        key = (q[:, 0] * n[1] + q[:, 1]) * n[2] + q[:, 2]
        c = np.bincount(key, minlength=int(n.prod())).reshape(self.shape)
        self.counts_ += c if weight == 1.0 else weight * c
        self.n_points_ += len(x)
        return self

    def smoothed(self) -> np.ndarray:
        """Density smoothed with a Gaussian of ``smooth_A`` (periodic), ion-frames per voxel."""
        vox = np.linalg.norm(self._h, axis=1) / np.array(self.shape)
        sig = self.params.smooth_A / vox
        return ndimage.gaussian_filter(self.counts_, sigma=sig, mode="wrap" if self.periodic else "constant",
                                       truncate=3.0)

    def sites(self) -> SiteModel:
        """Density peaks merged into sites (see module docstring)."""
        p = self.params
        if self.n_points_ == 0:
            raise AnalysisError("no positions to learn sites from")
        rho = self.smoothed()
        mode = "wrap" if self.periodic else "constant"
        n = np.array(self.shape)
        vox = np.linalg.norm(self._h, axis=1) / n
        # a delta of one ion-frame smoothed: its peak height
        delta = np.zeros((7, 7, 7))
        delta[3, 3, 3] = 1.0
        k0 = float(ndimage.gaussian_filter(delta, sigma=p.smooth_A / vox, mode="constant", truncate=3.0)[3, 3, 3])
        # a site of m ion-frames spread like a thermal cloud of ~smooth_A: about m * k0 / 2.8 at its centre
        thr = p.min_site_frames * k0 / 2.8
        mx = ndimage.maximum_filter(rho, size=3, mode=mode)
        peaks = np.argwhere((rho >= mx) & (rho > thr))
        if len(peaks) == 0:
            raise AnalysisError("no density peak holds enough frames to be a site (too few frames?)")
        heights = rho[tuple(peaks.T)]
        # sub-voxel peak position: parabola through log density along each axis (exact for a Gaussian peak)
        shift = np.zeros(peaks.shape, dtype=np.float64)
        l0 = np.log(np.maximum(heights, 1e-300))
        for ax in range(3):
            e = np.zeros(3, dtype=np.int64)
            e[ax] = 1
            lo, hi = peaks - e, peaks + e
            if self.periodic:
                lo, hi = lo % n, hi % n
            else:
                lo, hi = np.clip(lo, 0, n - 1), np.clip(hi, 0, n - 1)
            lm = np.log(np.maximum(rho[tuple(lo.T)], 1e-300))
            lp = np.log(np.maximum(rho[tuple(hi.T)], 1e-300))
            curv = lm - 2.0 * l0 + lp
            ok = curv < 0
            shift[ok, ax] = np.clip(0.5 * (lm[ok] - lp[ok]) / curv[ok], -0.5, 0.5)
        frac = (peaks + 0.5 + shift) / n
        cart = frac @ self._h + self.origin
        # merge
        order = np.argsort(-heights)
        cart, heights, frac = cart[order], heights[order], frac[order]
        parent = np.arange(len(cart))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        img = np.zeros((1, 3))
        if self.periodic:
            r = np.array([-1, 0, 1])
            img = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3) @ self._h
        tree = cKDTree((cart[None] + img[:, None]).reshape(-1, 3))
        reach = max(p.merge_A, 3.0)
        pairs = tree.query_ball_point(cart, r=reach)
        ts = np.linspace(0.0, 1.0, 13)[1:-1]
        ncart = len(cart)

        def saddle(a: int, jj: int) -> tuple[float, float]:
            dvec = (cart[jj % ncart] + img[jj // ncart]) - cart[a]
            line = cart[a] + ts[:, None] * dvec[None, :]
            g = ((line - self.origin) @ self._hinv) * n - 0.5
            vals = ndimage.map_coordinates(rho, g.T, order=1, mode="grid-wrap" if self.periodic else "nearest")
            return float(np.linalg.norm(dvec)), float(vals.min())

        # 1. insignificant peaks (a dip within the counting noise, or closer than merge_A) are absorbed by
        #    the higher neighbour they are best connected to; never used to join two others (no chaining)
        absorbed = np.zeros(ncart, dtype=bool)
        for a in range(ncart - 1, -1, -1):  # lowest first
            best, best_s = -1, -np.inf
            for jj in pairs[a]:
                b = jj % ncart
                if b == a or heights[b] < heights[a] or absorbed[b]:
                    continue
                dist, sad = saddle(a, jj)
                noisy = heights[a] - sad <= p.noise_sigmas * np.sqrt(heights[a] * k0 / 2.83)  # Poisson, Gaussian kernel
                if (dist < p.merge_A or noisy) and sad > best_s:
                    best, best_s = b, sad
            if best >= 0:
                absorbed[a] = True
                parent[a] = best
        # 2. significant peaks joined by a barely dipping ridge are one broad site
        for a in range(ncart):
            if absorbed[a]:
                continue
            for jj in pairs[a]:
                b = jj % ncart
                if b <= a or absorbed[b]:
                    continue
                ra, rb = find(a), find(b)
                if ra == rb:
                    continue
                dist, sad = saddle(a, jj)
                if sad >= p.saddle_ratio * min(heights[a], heights[b]):
                    parent[rb] = ra
        roots = np.array([find(i) for i in range(ncart)])
        out, wt = [], []
        for r in np.unique(roots):
            mem = np.flatnonzero(roots == r)
            wt.append(heights[mem].sum() / k0)
            mem = mem[~absorbed[mem]]
            # significant members in the minimum image of the root, height-weighted
            d = minimum_image(cart[mem] - cart[r], self.box) if self.periodic else cart[mem] - cart[r]
            out.append(cart[r] + (heights[mem, None] * d).sum(0) / heights[mem].sum())
        sites = np.array(out)
        if self.periodic:
            sites = wrap(sites, self.box)
        model = SiteModel(sites, self.box, np.array(wt), core_cap=p.core_cap, periodic=self.periodic)
        logger.info("%d density peaks -> %d sites (median nearest-site distance %.2f A)", ncart, model.n_sites,
                    float(np.median(model.nn_A)) if model.n_sites else float("nan"))
        return model


# ---------------------------------------------------------------------------------------------
# sites attached to the framework: the polyhedral holes of the immobile sublattice

#: elements taken as anions when choosing the sublattice whose holes the mobile ions occupy
ANIONS = frozenset({"N", "O", "S", "Se", "Te", "F", "Cl", "Br", "I"})


def anchor_atoms(mobile_species: Any, framework_species: Any) -> np.ndarray:
    """Framework atoms whose holes the mobile ions occupy: the counter-ion sublattice.

    Mobile cations (Li, Na, Ag, Cu, ...) sit in holes of the anions (:data:`ANIONS`), mobile anions
    (F, O, ...) in holes of the cations; when the species do not tell (unknown names, mixed mobile
    species) or fewer than 4 such atoms exist, every framework atom is used.

    Parameters
    ----------
    mobile_species : sequence of str
    framework_species : sequence of str, length M

    Returns
    -------
    ndarray, shape (M,), bool
    """
    fw = np.array([str(x).strip().capitalize() for x in framework_species])
    mob = {str(x).strip().capitalize() for x in mobile_species}
    is_anion = np.isin(fw, sorted(ANIONS))
    if mob and mob <= ANIONS:
        mask = ~is_anion
    elif mob and not (mob & ANIONS):
        mask = is_anion
    else:
        mask = np.ones(len(fw), dtype=bool)
    if mask.sum() < 4:
        mask = np.ones(len(fw), dtype=bool)
    return mask


def _circumcentres(p: np.ndarray) -> np.ndarray:
    """Circumcentres of tetrahedra p (s, 4, 3) (least squares for flat ones)."""
    a = p[:, 1:] - p[:, :1]  # (s, 3, 3)
    rhs = 0.5 * np.einsum("sij,sij->si", a, a)
    out = np.empty((len(p), 3))
    det = np.abs(np.linalg.det(a))
    ok = det > 1e-9
    out[ok] = np.linalg.solve(a[ok], rhs[ok][..., None])[..., 0]
    if (~ok).any():
        out[~ok] = np.array([np.linalg.lstsq(m, r, rcond=None)[0] for m, r in zip(a[~ok], rhs[~ok])])
    return out + p[:, 0]


def framework_holes(framework_mean_A: np.ndarray, box: np.ndarray, group_A: float = 0.6
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Polyhedral holes of a periodic framework: Delaunay tetrahedra grouped by common circumcentre.

    Tetrahedra whose circumcentres (the Voronoi vertices of the framework) lie within ``group_A`` of
    each other are one hole (in fcc, the four tetrahedra of an octahedral hole; in a cube of 8 atoms,
    the tetrahedra of the cube). A hole's position is the mean of its vertices; in bcc it is the
    tetrahedral 12d site, in fcc the tetrahedral 8c and octahedral 4b sites.

    Parameters
    ----------
    framework_mean_A : ndarray, shape (M, 3)
        Time-averaged framework positions, Å.
    box : ndarray, shape (6,)
    group_A : float
        Circumcentres closer than this are one hole, Å. Thermal averaging distorts the mean framework:
        at 0.3 Å the octahedral holes of a hot fcc iodide framework (a = 6.5 Å) split into pieces between
        octahedral and tetrahedral holes; distinct holes are > 1.7 Å apart in the frameworks checked.

    Returns
    -------
    centres : ndarray, shape (s, 3)
        Wrapped hole positions, Å.
    anchors : ndarray, shape (s, k), int64
        Framework atom indices of each hole's vertices, -1 padded.
    shifts : ndarray, shape (s, k, 3)
        Lattice translation that puts each vertex (as given in ``framework_mean_A``, unwrapped or not)
        next to its hole, Å.
    """
    from scipy.spatial import Delaunay

    h = cell_matrix(box)
    hinv = np.linalg.inv(h)
    given = np.asarray(framework_mean_A, dtype=np.float64)
    base = wrap(given, box)
    m = len(base)
    if m < 4:
        raise AnalysisError(f"a framework of {m} atoms has no polyhedral holes")
    r = np.array([-1, 0, 1])
    img = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3) @ h
    pts = (base[None] + img[:, None]).reshape(-1, 3)
    atom = np.tile(np.arange(m), len(img))
    simp = Delaunay(pts).simplices
    cc = _circumcentres(pts[simp])
    f = cc @ hinv
    home = np.all((f >= 0) & (f < 1), axis=1)
    # a tetrahedron reaching beyond the 27 images (circumcentre in the home cell, vertex outside) is an artefact
    simp, cc = simp[home], cc[home]
    n = len(simp)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    tree = cKDTree((cc[None] + img[:, None]).reshape(-1, 3))
    for a, jj in enumerate(tree.query_ball_point(cc, r=group_A)):
        for j in jj:
            b = j % n
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(n)])
    groups: dict[int, list[tuple[int, tuple[float, float, float]]]] = {}
    for g in np.unique(roots):
        mem = np.flatnonzero(roots == g)
        c0 = cc[mem[0]]
        verts: dict[tuple[int, tuple[float, float, float]], None] = {}
        for t in mem:
            lat = (cc[t] - c0) - minimum_image(cc[t] - c0, box)  # member seen from another image
            for v in simp[t]:
                shift = pts[v] - base[atom[v]] - lat
                verts[(int(atom[v]), tuple(np.round(shift, 6)))] = None
        groups[int(g)] = list(verts)
    k = max(len(v) for v in groups.values())
    centres = np.empty((len(groups), 3))
    anchors = np.full((len(groups), k), -1, dtype=np.int64)
    shifts = np.zeros((len(groups), k, 3))
    for i, verts in enumerate(groups.values()):
        a = np.array([v[0] for v in verts])
        sh = np.array([v[1] for v in verts])
        c = (base[a] + sh).mean(0)
        w = wrap(c, box)
        sh = sh + (w - c) + (base[a] - given[a])  # hole wrapped into the cell; shifts of the given positions
        centres[i], anchors[i, : len(a)], shifts[i, : len(a)] = w, a, sh
    return centres, anchors, shifts
