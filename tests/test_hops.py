"""Hop detection: synthetic ground truth (floor), real AIMD runs (judge), layouts, robustness.

The CaF2 LAMMPS series (3 temperatures, reference lattice-site count, Arrhenius) is in
tests/test_hops_lammps.py (short run by default, the full series marked slow).
"""

import json

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from conftest import shared
from iondiff_stream.core.errors import AnalysisError, InvalidCoordinatesError
from iondiff_stream.analysis.hops import (HopParameters, committed_site_changes, find_hops, fit_centres, learn_sites)
from iondiff_stream.synthetic.runs import make_lattice_walk, make_run, match_hops, same_hops
from iondiff_stream.model.rule import HopEvents, HopRule

SIL = dict(method="silhouette")


@pytest.fixture(scope="module")
def noisy_run():
    # correlated vibration of 0.2 Å per axis on 2.5 Å hops, hops of 2-4 frames,
    # back-hops, failed attempts and concerted chains
    return make_run(n_frames=3000, sigma_A=0.2, tau_frames=3.0, back_hop_prob=0.4, fail_prob=1.5e-3,
                    n_chains=5, seed=11)


@pytest.fixture(scope="module")
def noisy_result(noisy_run):
    return find_hops(noisy_run.positions, noisy_run.times_ps, HopParameters(seed=3), box=noisy_run.box)


def test_ground_truth_has_all_event_kinds(noisy_run):
    ev = noisy_run.events
    assert len(ev) > 40
    assert sum(e["back_hop"] for e in ev) >= 5
    assert len(noisy_run.groups()) >= 3
    assert noisy_run.n_failed_attempts >= 50


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_hop_f1_and_strict_f1(seed):
    run = make_run(n_frames=3000, sigma_A=0.2, tau_frames=3.0, back_hop_prob=0.4, fail_prob=1.5e-3, n_chains=5,
                   seed=seed)
    res = find_hops(run.positions, run.times_ps, box=run.box)
    loose = match_hops(run.events, res.hops, tol_frames=10)
    strict = match_hops(run.events, res.hops, tol_frames=2)
    assert loose["f1"] >= 0.97, loose
    assert strict["f1"] >= 0.90, strict


def test_sites_are_the_lattice(noisy_run, noisy_result):
    m = noisy_result.sites
    idx, d = m.nearest(noisy_run.sites)
    assert d.max() < 0.15  # every lattice site learnt (each was occupied at some time)
    assert m.n_sites == len(noisy_run.sites)
    assert np.allclose(m.nn_A, 2.5, atol=0.15)


def test_hop_geometry_and_flags(noisy_run, noisy_result):
    m = match_hops(noisy_run.events, noisy_result.hops, tol_frames=2)
    h = noisy_result.hops.closed()
    for ti, j in m["pairs"]:
        e = noisy_run.events[ti]
        src = np.array([h["from_x_A"][j], h["from_y_A"][j], h["from_z_A"][j]])
        dst = np.array([h["to_x_A"][j], h["to_y_A"][j], h["to_z_A"][j]])
        assert np.linalg.norm(src - e["from_pos"]) < 0.15  # unwrapped image of the shared site
        assert np.linalg.norm(dst - e["to_pos"]) < 0.15
        assert h["length_A"][j] == pytest.approx(2.5, abs=0.15)
        assert h["back_hop"][j] == e["back_hop"]
    assert np.all(h["duration_ps"] > 0)
    per_ion = noisy_result.hops_per_ion
    assert per_ion.sum() == len(h) and per_ion.shape == (noisy_run.n_ions,)


def test_sigma_from_short_time_fluctuations_only():
    """Ions that hop a lot get the vibration amplitude of the generator, not the spread of their path."""
    run = make_lattice_walk(n_frames=10000, n_ions=10, mean_rest_frames=200, sigma_A=0.2, seed=3)
    _, sigma = learn_sites(run.positions, run.times_ps, run.box)
    spread = np.sqrt(run.positions.var(axis=1).sum(1) / 3)
    assert np.all(spread > 2.0)  # the paths spread over several Å
    np.testing.assert_allclose(sigma, 0.2, rtol=0.05)


def test_failed_attempts_and_still_ions_give_no_hops():
    run = make_run(n_frames=1500, sigma_A=0.2, hop_prob=0.0, back_hop_prob=0.0, fail_prob=5e-3, n_chains=0, seed=5)
    assert run.events == [] and run.n_failed_attempts > 100
    res = find_hops(run.positions, run.times_ps, box=run.box)
    assert len(res.hops) == 0
    assert np.all(res.k == 1)


def _rule(s, m, chunks=None):
    """Hops of one ion's state sequence through the one hop rule, fed in the given chunk sizes."""
    s = np.asarray(s)[:, None]
    rule = HopRule(1, m)
    parts, i = [], 0
    for c in (chunks or [len(s)]):
        parts.append(rule.update(s[i : i + c]))
        i += c
    ev = HopEvents.concatenate(parts)
    return ev.from_site.tolist(), ev.to_site.tolist(), ev.start_frame.tolist(), ev.end_frame.tolist()


def test_hop_rule():
    A, B, C, X = 0, 1, 2, -1
    # rattling and recrossing at A's core edge, then a committed hop to B
    s = [A] * 5 + [X, A, X, X, A] + [X, X] + [B] * 6
    assert _rule(s, 3) == ([A], [B], [9], [12])
    # an excursion into B's core shorter than a residence, back to A: no hop
    s = [A] * 5 + [X, B, B, X] + [A] * 5
    assert _rule(s, 3) == ([], [], [], [])
    assert _rule(s, 1) == ([A, B], [B, A], [4, 7], [6, 9])  # without the rule: there and back
    # passing through B on the way to C: one hop A -> C from A's last to C's first frame
    s = [A] * 5 + [X, B, X] + [C] * 5
    assert _rule(s, 3) == ([A], [C], [4], [8])
    # a visit interrupted by transit frames is one visit (first to last frame in the core)
    s = [A] * 5 + [B, X, X, B] + [X] * 3
    assert _rule(s, 4) == ([A], [B], [4], [5])
    # the same frames in any chunking give the same hops (live = offline by construction)
    rng = np.random.default_rng(3)
    s = rng.choice([A, B, C, X], p=[0.4, 0.3, 0.1, 0.2], size=400)
    s = np.repeat(s, rng.integers(1, 6, size=400))
    whole = _rule(s, 3)
    assert len(whole[0]) > 5
    cuts = np.sort(rng.choice(np.arange(1, len(s)), size=30, replace=False))
    assert _rule(s, 3, np.diff(np.concatenate([[0], cuts, [len(s)]])).tolist()) == whole
    assert _rule(s, 3, [1] * len(s)) == whole


def test_open_hop_flagged():
    run = make_run(n_frames=400, sigma_A=0.15, hop_prob=0, fail_prob=0, n_chains=0, seed=2)
    pos = run.positions.copy()
    # ion 0 hops at frame 200 onto the empty site at +2.5 Å x (if free) ... use a vacancy neighbour
    occupied = {tuple(np.round(np.mod(p[0], run.box[0]), 1)) for p in pos}
    for d in ([2.5, 0, 0], [-2.5, 0, 0], [0, 2.5, 0], [0, -2.5, 0], [0, 0, 2.5], [0, 0, -2.5]):
        for i in range(run.n_ions):
            tgt = tuple(np.round(np.mod(run.positions[i, 0] + d, run.box[0]), 1))
            if all(np.linalg.norm(np.array(tgt) - np.array(o)) > 1.0 for o in occupied):
                break
        else:
            continue
        break
    pos[i, 200:] += np.array(d)
    pos[i, 399] -= 0.65 * np.array(d)  # the run ends in the middle of the hop back
    res = find_hops(pos, run.times_ps, box=run.box)
    h = res.hops
    assert len(h) == 2 and np.all(h["ion"] == i)
    assert not h["open"][0] and h["open"][1]
    assert h["end_frame"][1] == 399


def test_deterministic_and_layouts(noisy_run, noisy_result):
    zarr = pytest.importorskip("zarr")
    again = find_hops(noisy_run.positions, noisy_run.times_ps, HopParameters(seed=3), box=noisy_run.box)
    frame_major = noisy_run.positions.transpose(1, 0, 2).copy()
    fm = find_hops(frame_major, noisy_run.times_ps, box=noisy_run.box, layout="frame")
    z = zarr.create_array(store=zarr.storage.MemoryStore(), shape=frame_major.shape, chunks=(500, 7, 3),
                          dtype="f8")
    z[:] = frame_major
    zz = find_hops(z, noisy_run.times_ps, box=noisy_run.box, layout="frame")
    for other in (again, fm, zz):
        for name in ("ion", "start_frame", "end_frame", "length_A"):
            assert np.array_equal(other.hops[name], noisy_result.hops[name])


def test_noise_of_1e3_A_keeps_the_hops(noisy_run, noisy_result):
    rng = np.random.default_rng(0)
    noisy = noisy_run.positions + rng.normal(0, 1e-3, noisy_run.positions.shape)
    res = find_hops(noisy, noisy_run.times_ps, box=noisy_run.box)
    assert same_hops(noisy_result.hops, res.hops, tol_frames=1)["fraction"] >= 0.97


def test_coarse_frames_warning(noisy_run):
    sub = noisy_run.positions[:, ::5]
    res = find_hops(sub, noisy_run.times_ps[::5], box=noisy_run.box)
    assert any("too coarse" in w for w in res.warnings)
    fine = find_hops(noisy_run.positions, noisy_run.times_ps, box=noisy_run.box)
    assert not fine.warnings


def test_committed_site_changes_count_the_truth(noisy_run):
    ref = committed_site_changes(noisy_run.positions, noisy_run.times_ps, noisy_run.sites, noisy_run.box, 0.2)
    assert abs(int(ref.sum()) - len(noisy_run.events)) <= 0.05 * len(noisy_run.events)


@pytest.mark.slow
def test_long_lattice_walk_counts_every_hop():
    """10^5 frames, every ion visits hundreds of (unwrapped) sites: the published per-ion method finds
    nothing here; the shared-site method must find the true count within 5 %."""
    run = make_lattice_walk(n_frames=100_000, n_ions=40, seed=1)
    visited = [len({tuple(np.round(e["to_pos"], 2)) for e in run.events if e["ion"] == i}) for i in range(run.n_ions)]
    assert min(visited) >= 200
    res = find_hops(run.positions, run.times_ps, box=run.box)
    n = len(res.hops.closed())
    assert abs(n - len(run.events)) <= 0.05 * len(run.events)
    assert match_hops(run.events, res.hops, tol_frames=2)["f1"] >= 0.97


# --- real AIMD runs: the hops must carry the measured transport -------------------------------------------

def _real(name):
    from iondiff_stream.io import collect_positions, load_universe

    if name.startswith("argyrodite"):
        conc = name.split("_")[1]
        base = shared("argyrodite_Li6PS5Cl_morgan2021", "data", "Li6PS5Cl", conc)
        import glob

        files = sorted(glob.glob(f"{base}/run*/actual_XDATCAR.gz"), key=lambda p: int(p.split("run")[-1].split("/")[0]))
        return collect_positions(load_universe(files), "Li", timestep_ps=0.1)
    if name == "LGPS":
        return collect_positions(load_universe(shared("LGPS_600K_pmg_diffusion", "derived_LGPS_600K_unwrapped.extxyz")), "Li")
    return collect_positions(load_universe(shared("Na3PS4_cubic_800K_pmg_diffusion",
                                                  "derived_cNa3PS4_800K_unwrapped.extxyz")), "Na")


@pytest.mark.parametrize("name", [
    pytest.param("LGPS", marks=pytest.mark.xfail(
        reason="on the edge: 6 hops of 20 Li; D_hops/D_MSD 0.49 (95 % interval over ions 0.12-1.9; "
               "test_hop_msd_fraction_interval_on_real_runs checks it reaches into 0.5-3); "
               "three ions move ~2 A into regions whose density peak is absorbed by a neighbour", strict=False)),
    "Na3PS4", "argyrodite_50p"])
def test_real_runs_hops_carry_the_transport(name):
    from iondiff_stream.pipeline.run import summarise

    data = _real(name)
    run = summarise(data, find_hops(data.positions, data.times_ps, box=data.box, atom_ids=data.atom_ids, layout="frame"),
                    correlations=False)
    s = run.summary
    assert s["n_hops"] >= 5 and s["n_sites"] >= data.n_mobile * 0.9
    assert 0.5 <= s["hop_msd_fraction"] <= 3.0, s["hop_msd_fraction"]
    # no two ions in one site's core at once (the sites are sites, not merged clouds)
    st = run.hops.states
    double = sum(int(((c := st[:, t][st[:, t] >= 0]).size - np.unique(c).size)) for t in range(0, st.shape[1], 7))
    assert double <= 0.002 * st.shape[0] * (st.shape[1] // 7 + 1)


def test_confined_motion_is_flagged_on_ordered_argyrodite():
    """Li6PS5Cl 0p at 500 K: Li hops within the Li6 cages but rarely between them (Morgan 2021); the
    hops are real but do not carry the long-range transport, and the summary says so."""
    from iondiff_stream.pipeline.run import summarise

    data = _real("argyrodite_0p")
    s = summarise(data, find_hops(data.positions, data.times_ps, box=data.box, layout="frame"), correlations=False).summary
    assert any("confined" in w for w in s["warnings"])
    # D* of a plateau is no diffusion coefficient: null, with the reason (and so is D_hops/D_MSD)
    assert s["D_tracer_cm2_s"] is None and s["D_tracer_status"] == "no long-range diffusion"
    assert s["hop_msd_fraction"] is None and s["sigma_NE_mS_cm"] is None and s["haven_ratio"] is None
    # the MSD saturates (a cage plateau), so D* is not a diffusion coefficient and the check does not apply;
    # independent evidence from the positions: no Li gets further than ~6 A (one cage) from where it started
    assert s["long_range_diffusion"] is False and s["msd_growth_ratio"] < 1.5
    assert s["hop_msd_check"].startswith("not applicable")
    x = np.asarray(data.positions)
    assert np.linalg.norm(x - x[:1], axis=-1).max() < 6.5
    # hops mostly undo each other (rattling in the cage): the correlation factor is small
    assert s["hop_correlation_factor"] < 0.4


def test_diffusing_argyrodite_is_not_flagged_confined():
    from iondiff_stream.pipeline.run import summarise

    data = _real("argyrodite_50p")
    s = summarise(data, find_hops(data.positions, data.times_ps, box=data.box, layout="frame"), correlations=False).summary
    assert s["long_range_diffusion"] is True and s["msd_growth_ratio"] > 1.5
    assert s["hop_msd_check"] == "ok"
    x = np.asarray(data.positions)
    assert np.percentile(np.linalg.norm(x - x[:1], axis=-1).max(0), 90) > 10.0  # ions leave their cage


@pytest.mark.parametrize("p_back", [0.0, 0.3, 0.6])
def test_jump_correlation_factor_of_a_persistent_walk(p_back):
    """Cubic-lattice walk whose next hop reverses the last one with probability p_back, else takes any of the
    other five directions: <cos> = -p + (1 - p)/5 and f = (1 + c)/(1 - c) exactly; f * sum(l^2) must equal the
    mean squared end-to-end displacement."""
    from iondiff_stream.analysis.hops import HOP_COLUMNS, HopTable, jump_correlation

    rng = np.random.default_rng(7)
    dirs = np.vstack([np.eye(3), -np.eye(3)]) * 2.5
    n_ion, n_hop = 400, 300
    cols = {k: [] for k in HOP_COLUMNS}
    r2 = []
    for i in range(n_ion):
        d = np.empty(n_hop, dtype=int)
        d[0] = rng.integers(6)
        for k in range(1, n_hop):
            if rng.random() < p_back:
                d[k] = (d[k - 1] + 3) % 6
            else:
                others = [j for j in range(6) if j != (d[k - 1] + 3) % 6]
                d[k] = others[rng.integers(5)]
        v = dirs[d]
        path = np.vstack([np.zeros(3), np.cumsum(v, 0)])
        r2.append((path[-1] ** 2).sum())
        frames = np.arange(n_hop) * 10
        cols["ion"].append(np.full(n_hop, i))
        cols["atom_index"].append(np.full(n_hop, i))
        cols["atom_id"].append(np.full(n_hop, i + 1))
        for key, val in (("start_frame", frames), ("end_frame", frames + 1), ("start_time_ps", frames * 0.1),
                         ("end_time_ps", frames * 0.1 + 0.1), ("duration_ps", np.full(n_hop, 0.1)),
                         ("length_A", np.full(n_hop, 2.5)), ("from_centre", np.zeros(n_hop)),
                         ("to_centre", np.ones(n_hop)), ("open", np.zeros(n_hop, bool)),
                         ("back_hop", np.zeros(n_hop, bool))):
            cols[key].append(val)
        for k, ax in enumerate("xyz"):
            cols[f"from_{ax}_A"].append(path[:-1, k])
            cols[f"to_{ax}_A"].append(path[1:, k])
    table = HopTable.from_columns({k: np.concatenate(v) for k, v in cols.items()})
    jc = jump_correlation(table)
    c_true = -p_back + (1 - p_back) / 5
    f_true = (1 + c_true) / (1 - c_true)
    assert jc.n_pairs == n_ion * (n_hop - 1)
    assert abs(jc.mean_cos - c_true) < 0.01
    assert abs(jc.factor - f_true) < 4 * jc.factor_std + 0.01
    # the transport: <R^2> = f * n * a^2 (up to the finite-walk correction and sampling noise)
    ratio = np.mean(r2) / (n_hop * 2.5**2)
    assert abs(ratio / jc.factor - 1) < 0.12, (ratio, jc.factor)


# --- the published method (explicit option) ----------------------------------------------------------------

@pytest.fixture(scope="module")
def sil_result(noisy_run):
    return find_hops(noisy_run.positions, noisy_run.times_ps, HopParameters(seed=3, **SIL))


def test_silhouette_method_on_synthetic(noisy_run, sil_result):
    m = match_hops(noisy_run.events, sil_result.hops, tol_frames=2)
    assert m["f1"] >= 0.97, m
    assert sil_result.sites is None and len(sil_result.ions) == noisy_run.n_ions


def test_silhouette_parallel_equals_serial(noisy_run):
    par = find_hops(noisy_run.positions[:20], noisy_run.times_ps, HopParameters(seed=3, **SIL), n_jobs=2)
    ser = find_hops(noisy_run.positions[:20], noisy_run.times_ps, HopParameters(seed=3, **SIL))
    assert np.array_equal(par.hops["start_frame"], ser.hops["start_frame"])
    assert np.array_equal(par.k, ser.k)


def _exact_k(x, k_max=10, thr=0.7):
    sil = []
    for k in range(2, k_max + 1):
        lab = KMeans(k, n_init=10, random_state=0).fit_predict(x)
        sil.append(silhouette_score(x, lab))
    sil = np.array(sil)
    best = int(np.argmax(sil)) + 2
    margin = np.sort(sil)[-1] - np.sort(sil)[-2]
    return (best if sil.max() >= thr else 1), margin, sil.max()


@pytest.mark.slow  # sklearn KMeans(n_init=10) for K = 2..10 on every ion: minutes
def test_k_agrees_with_exact_silhouette():
    """K from the sampled silhouette equals the exact O(T²) procedure (sklearn
    KMeans n_init=10 + silhouette_score over all frames) on a small case."""
    run = make_run(n_frames=1200, n_cells=3, n_vacancies=6, sigma_A=0.2, hop_prob=4e-3, n_chains=1, seed=7)
    params = HopParameters(seed=0, screen=False, silhouette_samples=60, **SIL)
    agree, decided, k_hoppers = 0, 0, 0
    for i in range(run.n_ions):
        x = run.positions[i]
        ion = fit_centres(x, params, np.random.default_rng(i))
        k_ref, margin, best = _exact_k(x)
        if abs(best - 0.7) < 0.02 or (best > 0.7 and margin < 0.02):
            continue  # a near tie: either answer is right
        decided += 1
        k_hoppers += k_ref > 1
        agree += ion.k_silhouette == k_ref
    assert decided >= 15 and k_hoppers >= 5
    assert agree == decided


def test_screen_does_not_change_silhouette_hops(noisy_run, sil_result):
    res = find_hops(noisy_run.positions, noisy_run.times_ps, HopParameters(seed=3, screen=False, **SIL))
    assert np.array_equal(res.hops["start_frame"], sil_result.hops["start_frame"])


def test_bad_inputs():
    run = make_run(n_frames=100, n_chains=0, seed=1)
    pos = run.positions.copy()
    pos[3, 50, 1] = np.nan
    for method in ("sites", "silhouette"):
        with pytest.raises(InvalidCoordinatesError, match="NaN"):
            find_hops(pos, run.times_ps, HopParameters(method=method), box=run.box)
    with pytest.raises(AnalysisError, match="no mobile ions"):
        find_hops(pos[:0], run.times_ps)
    with pytest.raises(ValueError, match="shape"):
        find_hops(pos[0], run.times_ps)
    with pytest.raises(ValueError, match="k_max"):
        HopParameters(k_max=1)
    with pytest.raises(ValueError, match="method"):
        HopParameters(method="kmeans")
    with pytest.raises(ValueError, match="layout"):
        find_hops(run.positions, run.times_ps, layout="ions")


def test_msd_growth_ratio_analytic():
    from iondiff_stream.analysis.transport import msd_growth_ratio

    t = np.linspace(0, 100, 1001)
    assert msd_growth_ratio(t, 6 * 0.01 * t, 100.0) == pytest.approx(2.0, abs=0.03)
    assert msd_growth_ratio(t, 12.0 * (1 - np.exp(-t / 5.0)), 100.0) == pytest.approx(1.0, abs=0.01)  # a cage
    # a vibrational plateau (reached by 0.5 ps) is subtracted: a short run with mostly vibration is not "confined"
    vib = 0.5 * (1 - np.exp(-t / 0.05))
    assert msd_growth_ratio(t, vib + 6 * 0.01 * t, 100.0) == pytest.approx(2.0, abs=0.03)
    assert msd_growth_ratio(t, vib + 12.0 * (1 - np.exp(-t / 5.0)), 100.0) < 1.1
    assert msd_growth_ratio(t, vib, 100.0) is None  # no growth beyond the vibrations
    assert msd_growth_ratio(t[:300], 6 * 0.01 * t[:300], 100.0) is None  # MSD not reaching t/2


def test_two_mobile_species_get_their_own_sites(tmp_path):
    """--mobile Li,S (every atom, as IonDiff analyses): Li and S sites are learnt separately, so an S site never
    absorbs a Li site; the Li hops are those of --mobile Li, and the vibrating S make none."""
    from iondiff_stream.pipeline.run import analyze_run
    from iondiff_stream.synthetic.runs import same_hops
    from iondiff_stream.synthetic.long import truth_of, write_lattice_walk

    walk = write_lattice_walk(str(tmp_path), 2000, n_cells=4, n_mobile=32, n_framework_cells=4, n_framework=32,
                              hop_prob=4e-3, dt_ps=0.05, seed=3, block=2000)
    n_true = len(truth_of(walk)["ion"])
    li = analyze_run(walk.trajectory, "Li", topology=walk.topology)
    both = analyze_run(walk.trajectory, "Li,S", topology=walk.topology)
    assert n_true >= 50 and abs(li.summary["n_hops"] - n_true) <= 0.03 * n_true
    assert both.summary["n_hops"] == li.summary["n_hops"]
    assert same_hops(li.hops.hops, both.hops.hops, 1)["fraction"] >= 0.99
    species = np.asarray([str(x) for x in both.data.species])
    assert not np.isin(both.hops.hops["ion"], np.flatnonzero(species == "S")).any()
    labels = both.hops.extra["site_label"]
    assert (labels == "Li").sum() == li.summary["n_sites"] and (labels == "S").sum() >= 32
    assert any("sites learnt per species" in w for w in both.summary["warnings"])


def test_ion_subset_reads_like_fancy_indexing(tmp_path):
    import zarr

    from iondiff_stream.analysis.hops import IonSubset

    x = np.random.default_rng(0).random((50, 12, 3))
    z = zarr.open_array(str(tmp_path / "p.zarr"), mode="w", shape=x.shape, chunks=(10, 4, 3), dtype="f8")
    z[:] = x
    for ions in (np.array([2, 3, 4, 5]), np.array([0, 5, 7, 11])):
        sub = IonSubset(z, ions)
        assert sub.shape == (50, len(ions), 3)
        np.testing.assert_array_equal(sub[:, 1:3], x[:, ions[1:3]])
        np.testing.assert_array_equal(sub[5:9, :], x[5:9][:, ions])


def test_transport_in_a_thread_equals_the_serial_analysis():
    """analyse_positions runs the transport in a thread while the hops are found: the summary is the
    same, number for number, as the serial summarise on the same positions (Na3PS4 800 K)."""
    from iondiff_stream.pipeline.run import analyse_positions, hops_of, summarise

    data = _real("Na3PS4")
    threaded = analyse_positions(data, temperature_K=800.0).summary
    serial = summarise(data, hops_of(data), temperature_K=800.0).summary
    assert threaded["D_tracer_cm2_s"] > 0 and threaded["n_hops"] > 0
    dump = lambda s: json.dumps(s, sort_keys=True, default=lambda o: np.asarray(o).tolist())  # noqa: E731
    assert dump(threaded) == dump(serial)


def test_hop_msd_fraction_interval_resamples_the_same_ions():
    """Analytic: only ion 0 hops; a resample holding ion 0 m times has m times its D_hops, divided by
    that resample's D*/D* (given); the interval is the percentiles of those ratios."""
    from types import SimpleNamespace

    from iondiff_stream.pipeline.run import hop_msd_fraction_interval
    from iondiff_stream.analysis.hops import HopTable

    table = HopTable({"ion": np.array([0, 0]), "length_A": np.array([3.0, 4.0])})
    m = np.arange(40) % 3  # ion 0 drawn 0, 1 or 2 times out of 2 ions
    picks = np.where(np.arange(2)[None, :] < m[:, None], 0, 1)
    rel_d = np.where(m == 2, 2.0, 1.0)
    tr = SimpleNamespace(bootstrap_ions=picks, bootstrap_D_tracer_relative=rel_d)
    lo, hi = hop_msd_fraction_interval(0.8, table, 2, tr, level=0.9)
    r = 0.8 * m / rel_d  # 0, 0.8, 0.8
    assert (lo, hi) == pytest.approx(tuple(np.percentile(r, [5, 95])))
    assert hop_msd_fraction_interval(None, table, 2, tr) is None


def test_hop_msd_fraction_interval_on_real_runs():
    """A 20-ion, 20 ps run with 6 hops (LGPS) gets a wide interval that reaches into 0.5-3; a run with
    thousands of hops (argyrodite 50p) a narrow one; both hold their point estimate."""
    from iondiff_stream.pipeline.run import summarise

    out = {}
    for name in ("LGPS", "argyrodite_50p"):
        data = _real(name)
        s = summarise(data, find_hops(data.positions, data.times_ps, box=data.box, layout="frame"),
                      correlations=False).summary
        lo, hi = s["hop_msd_fraction_ci95"]
        assert lo < s["hop_msd_fraction"] < hi
        out[name] = (lo, hi, s["hop_msd_fraction"])
    lo, hi, f = out["LGPS"]
    assert lo < 0.5 < hi < 3.0 and (hi - lo) / f > 2.0
    lo, hi, f = out["argyrodite_50p"]
    assert 0.5 < lo and hi < 3.0 and (hi - lo) / f < 0.5
