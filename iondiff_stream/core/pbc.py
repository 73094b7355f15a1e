"""Periodic cells: the one place that knows lattice vectors, wrapping and the minimum image.

A cell is given as MDAnalysis does, ``box = [a, b, c, alpha, beta, gamma]`` (Å, degrees). Lattice
vectors are the rows of :func:`cell_matrix` (a along x, b in the xy plane), so Cartesian
``x = s @ H`` for fractional ``s``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cell_matrix", "wrap", "minimum_image", "cell_heights"]


def cell_matrix(box: np.ndarray) -> np.ndarray:
    """Lattice vectors as rows, shape (3, 3), Å.

    Parameters
    ----------
    box : array_like, shape (6,)
        ``[a, b, c, alpha, beta, gamma]`` (Å, degrees).
    """
    from MDAnalysis.lib.mdamath import triclinic_vectors

    b = np.asarray(box, dtype=np.float64)
    if b.shape != (6,) or not np.all(np.isfinite(b)) or np.any(b[:3] <= 0):
        from iondiff_stream.core.errors import InvalidCoordinatesError

        raise InvalidCoordinatesError(f"invalid periodic box {b.tolist()}: need [a, b, c, alpha, beta, gamma] with a, b, c > 0")
    return np.asarray(triclinic_vectors(b), dtype=np.float64)


def cell_heights(box: np.ndarray) -> np.ndarray:
    """Distances between opposite faces of the cell, shape (3,), Å (minimum image is exact below half of these)."""
    h = cell_matrix(box)
    vol = abs(float(np.linalg.det(h)))
    return np.array([vol / np.linalg.norm(np.cross(h[(i + 1) % 3], h[(i + 2) % 3])) for i in range(3)])


def wrap(x: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Positions (..., 3) translated into the cell (fractional coordinates in [0, 1)), Å."""
    h = cell_matrix(box)
    f = np.asarray(x, dtype=np.float64) @ np.linalg.inv(h)
    f -= np.floor(f)
    return f @ h


def minimum_image(d: np.ndarray, box: np.ndarray | None) -> np.ndarray:
    """Minimum-image form of displacement vectors.

    Parameters
    ----------
    d : ndarray, shape (..., 3)
        Displacements, Å.
    box : array_like, shape (6,), or None
        The cell; None returns ``d`` unchanged (no periodicity).

    Returns
    -------
    ndarray, shape (..., 3)
        ``d`` minus the lattice translation that rounds its fractional
        components to [-0.5, 0.5). Exact whenever the true vector is shorter than
        half of every cell height (:func:`cell_heights`), for orthorhombic and
        triclinic cells alike.
    """
    d = np.asarray(d, dtype=np.float64)
    if box is None:
        return d
    h = cell_matrix(box)
    f = d @ np.linalg.inv(h)
    return d - np.rint(f) @ h
