"""alpha-AgI validation case (examples/agi): the LAMMPS input runs and the independent reference is consistent.

Slow (LAMMPS run of a few seconds). No assertion on the hop detector (it is being rewritten) nor on wall time.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import example_module

pytestmark = pytest.mark.slow

AGI = Path(__file__).resolve().parents[1] / "examples" / "agi"


def _module(name: str):
    return example_module("agi", name)


def test_reference_on_synthetic_tetrahedral_hops():
    """Ions parked on ideal sites with known site changes (and one 0.1 ps excursion) give exactly those hops."""
    ref = _module("reference")
    n, a = 2, 5.07
    L = np.full(3, n * a)
    cells = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3)
    iod = ((cells[:, None] + ref.BCC_FRAC[None]) * a).reshape(-1, 3)
    tet = ((cells[:, None] + ref.TET_FRAC[None]) * a).reshape(-1, 3)
    nf, dt = 100, 0.02
    # ion 0: site 0 -> its nearest neighbour at frame 40; ion 1: stays at site 50 except frames 60-64 (0.1 ps)
    nn = int(np.argsort(np.linalg.norm(ref._minimg(tet - tet[0], L), axis=1))[1])
    ag = np.empty((nf, 2, 3))
    ag[:, 0] = tet[0]
    ag[40:, 0] = tet[0] + ref._minimg(tet[nn] - tet[0], L)
    ag[:, 1] = tet[50]
    ag[60:65, 1] = tet[51]
    rng = np.random.default_rng(0)
    pos = np.concatenate([ag, np.broadcast_to(iod, (nf,) + iod.shape)], axis=1) + rng.normal(0, 0.02, (nf, 2 + len(iod), 3))
    pos += np.linspace(0, 1.0, nf)[:, None, None]  # common drift, removed by the reference
    types = np.r_[[1, 1], np.full(len(iod), 2)]
    r = ref.reference_hops(pos, types, L, dt)
    assert r["n_hops"] == 1
    assert r["raw_changes"] == 3
    j, frame, s0, s1 = r["hops"][0]
    assert (j, frame, s0, s1) == (0, 40, 0, nn)
    assert r["jump_A"][0] == pytest.approx(a * np.sqrt(2) / 4, abs=1e-6)


def test_agi_lammps_short_run_reference_consistent(tmp_path):
    run_series = _module("run_series")
    ref = _module("reference")
    meta = run_series.run_one(str(tmp_path), 600.0, ps=2.0, neq_ps=1.0)
    assert os.path.exists(meta["dump"]) and os.path.exists(meta["data"])
    summ = ref.run_reference(str(tmp_path))
    r = np.load(tmp_path / "reference.npz")
    # iodide sublattice stays bcc: bounded MSD, every site has its 4 I
    assert summ["msd_I_max_A2"] < 1.5  # ~0.6-0.8 A^2 of vibration at 600 K; melting grows without bound
    assert summ["iodide_rms_from_ideal_A"] < 1.0
    assert summ["n_mobile"] == 250 and summ["n_sites"] == 1500
    # Ag is mobile: hops happen, mostly between nearest tetrahedral sites (1.79 A)
    assert summ["n_hops"] > 50
    assert summ["share_tet_tet_1p79"] >= 0.8
    # internal consistency of the hop list
    hops = r["hops"]
    assert r["hops_per_ion"].sum() == len(hops) == summ["n_hops"]
    assert np.all(hops[:, 2] != hops[:, 3])
    sof = r["site_of_frame"]
    assert np.all(sof[hops[:, 1], hops[:, 0]] == hops[:, 3])
    for j in np.unique(hops[:, 0]):
        h = hops[hops[:, 0] == j]
        assert np.all(np.diff(h[:, 1]) > 0)
        assert np.all(h[1:, 2] == h[:-1, 3])  # each hop leaves the site the previous one arrived at
    assert summ["raw_changes"] >= summ["n_hops"]
    assert 0.0 < summ["D_tracer_plain_cm2_s"] < 1e-3
