"""The one minimum-image helper and the one element-from-mass helper."""

import numpy as np
import pytest

from iondiff_stream.core.elements import elements_from_masses
from iondiff_stream.core.errors import InvalidCoordinatesError
from iondiff_stream.core.pbc import cell_heights, cell_matrix, minimum_image, wrap


@pytest.mark.parametrize("box", [[10.0, 12.0, 14.0, 90, 90, 90], [14.08, 14.18, 14.10, 90, 92.95, 90],
                                 [8.73, 8.73, 12.74, 90, 90, 89.76], [10.0, 11.0, 12.0, 80, 95, 105]])
def test_minimum_image_equals_brute_force(box):
    rng = np.random.default_rng(0)
    h = cell_matrix(box)
    d = rng.uniform(-30, 30, (500, 3))
    got = minimum_image(d, box)
    imgs = np.stack(np.meshgrid(*[np.arange(-4, 5)] * 3, indexing="ij"), -1).reshape(-1, 3) @ h
    cand = d[:, None, :] + imgs[None]
    best = cand[np.arange(len(d)), np.linalg.norm(cand, axis=2).argmin(1)]
    # exact wherever the shortest vector is shorter than half of every cell height
    ok = np.linalg.norm(best, axis=1) < 0.5 * cell_heights(box).min()
    assert ok.sum() > 100
    np.testing.assert_allclose(got[ok], best[ok], atol=1e-9)
    # always a lattice translation of the input
    f = np.linalg.solve(h.T, (got - d).T).T
    np.testing.assert_allclose(f, np.rint(f), atol=1e-9)


def test_wrap_into_cell_and_no_box():
    box = [10.0, 11.0, 12.0, 80, 95, 105]
    x = np.random.default_rng(1).uniform(-50, 50, (200, 3))
    w = wrap(x, box)
    f = np.linalg.solve(cell_matrix(box).T, w.T).T
    assert np.all((f >= 0) & (f < 1))
    np.testing.assert_array_equal(minimum_image(x, None), x)
    with pytest.raises(InvalidCoordinatesError, match="invalid periodic box"):
        cell_matrix([0, 1, 1, 90, 90, 90])


def test_elements_from_masses():
    assert elements_from_masses([6.941, 22.99, 18.998, 40.078, 114.818, 35.453, 3.3, 0.0]) == \
        ["Li", "Na", "F", "Ca", "In", "Cl", "", ""]
