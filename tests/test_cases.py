"""Validation cases (examples/caf2/reference_framework.py): the independent reference counts known hops.

Marked slow with the other example checks. No assertion on the package's hop detector (it is being rewritten).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import example_module

pytestmark = pytest.mark.slow

CAF2 = Path(__file__).resolve().parents[1] / "examples" / "caf2"


def _module(name: str):
    return example_module("caf2", name)


def test_framework_reference_on_synthetic_fluorite():
    """F parked on ideal tetrahedral holes with known changes, one 0.1 ps excursion and one octahedral visit."""
    ref = _module("reference_framework")
    n, a = 2, 5.477
    L = np.full(3, n * a)
    cells = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3)
    ca = ((cells[:, None] + ref.FCC_FRAC[None]) * a).reshape(-1, 3)[1:]  # one Ca vacancy
    tet = ((cells[:, None] + ref.TET_FRAC[None]) * a).reshape(-1, 3)
    octs = ((cells[:, None] + ref.OCT_FRAC[None]) * a).reshape(-1, 3)
    nf, dt = 100, 0.02
    nn = int(np.argsort(np.linalg.norm(ref._minimg(tet - tet[0], L), axis=1))[1])
    f = np.repeat(tet[None, :4], nf, 0).copy()
    f[40:, 0] = tet[0] + ref._minimg(tet[nn] - tet[0], L)  # ion 0: one nearest-neighbour hop (a / 2)
    f[60:65, 1] = tet[20]  # ion 1: 0.1 ps excursion, not a hop
    f[30:50, 2] = octs[0]  # ion 2: 0.4 ps on an octahedral hole (nearest tetrahedral site may change)
    rng = np.random.default_rng(3)
    xca = np.repeat(ca[None], nf, 0) + rng.normal(0, 0.05, (nf, len(ca), 3)) + np.array([0.3, -0.2, 0.1])
    pos = np.concatenate([xca, f + np.array([0.3, -0.2, 0.1])], 1)
    types = np.r_[np.ones(len(ca), int), np.full(4, 2)]
    r = ref.reference_hops(pos, types, L, dt, n_cells=n)
    assert r["n_ca_vacancies"] == 1
    assert r["hops_per_ion"][0] == 1 and r["hops_per_ion"][1] == 0 and r["hops_per_ion"][3] == 0
    assert r["hops"][0, 0] == 0 and r["hops"][0, 1] == 40 and abs(r["jump_A"][0] - a / 2) < 1e-9
    assert r["oct_visits_kept"] == 1 and r["oct_visit_ions"] == 1
    assert r["n_hops_tet_plus_oct"] == 1 + 2
    assert r["msd_Ca_max_A2"] < 0.1


def test_fcc_iodide_reference_on_synthetic_hops():
    """Ag parked on the holes of an ideal fcc iodide: a tet -> oct -> tet path gives two hops of a sqrt(3)/4."""
    ref = example_module("agi_fcc", "reference")
    n, a = 2, 6.5
    L = np.full(3, n * a)
    cells = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3)
    iod = ((cells[:, None] + ref.FCC_FRAC[None]) * a).reshape(-1, 3)
    tet = ((cells[:, None] + ref.TET_FRAC[None]) * a).reshape(-1, 3)
    octs = ((cells[:, None] + ref.OCT_FRAC[None]) * a).reshape(-1, 3)
    nf, dt = 120, 0.02
    t0 = tet[0]
    o = octs[np.argmin(np.linalg.norm(ref._minimg(octs - t0, L), axis=1))]
    d_o = np.linalg.norm(ref._minimg(tet - o, L), axis=1)
    t1 = tet[[i for i in np.argsort(d_o)[:8] if not np.allclose(tet[i], t0)][0]]  # another tet around o
    ag = np.repeat(tet[None, 10:13], nf, 0).copy()
    ag[:, 0] = t0
    ag[40:80, 0] = o  # 0.8 ps on the octahedral hole
    ag[80:, 0] = t1
    ag[50:54, 1] = octs[5]  # 0.08 ps excursion: dropped
    rng = np.random.default_rng(5)
    xi = np.repeat(iod[None], nf, 0) + rng.normal(0, 0.05, (nf, len(iod), 3))
    pos = np.concatenate([ag, xi], 1)
    types = np.r_[np.ones(3, int), np.full(len(iod), 2)]
    r = ref.reference_hops(pos, types, L, dt, n_cells=n)
    assert list(r["hops_per_ion"]) == [2, 0, 0]
    assert np.allclose(r["jump_A"], a * np.sqrt(3) / 4)
    assert r["share_tet_oct"] == 1.0 and r["n_sites"] == 12 * n ** 3
