"""Hop method on ground-truth synthetic trajectories."""

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from iondiff_stream.errors import AnalysisError, InvalidCoordinatesError
from iondiff_stream.hops import HopParameters, fit_centres, find_hops
from iondiff_stream.synthetic import make_run, match_hops


@pytest.fixture(scope="module")
def noisy_run():
    # correlated vibration of 0.2 Å per axis on 2.5 Å hops, hops of 2-4 frames,
    # back-hops, failed attempts and concerted chains
    return make_run(n_frames=3000, sigma_A=0.2, tau_frames=3.0, back_hop_prob=0.4, fail_prob=1.5e-3,
                    n_chains=5, seed=11)


@pytest.fixture(scope="module")
def noisy_result(noisy_run):
    return find_hops(noisy_run.positions.transpose(1, 0, 2), noisy_run.times_ps, HopParameters(seed=3))


def test_ground_truth_has_all_event_kinds(noisy_run):
    ev = noisy_run.events
    assert len(ev) > 40
    assert sum(e["back_hop"] for e in ev) >= 5
    assert len(noisy_run.groups()) >= 3
    assert noisy_run.n_failed_attempts >= 50


def test_hop_f1_and_frames(noisy_run, noisy_result):
    m = match_hops(noisy_run.events, noisy_result.hops, tol_frames=2)
    assert m["f1"] >= 0.97, m
    assert m["max_start_error"] <= 2 and m["max_end_error"] <= 2


def test_hop_geometry_and_flags(noisy_run, noisy_result):
    m = match_hops(noisy_run.events, noisy_result.hops, tol_frames=2)
    h = noisy_result.hops.closed()
    for ti, j in m["pairs"]:
        e = noisy_run.events[ti]
        src = np.array([h["from_x_A"][j], h["from_y_A"][j], h["from_z_A"][j]])
        dst = np.array([h["to_x_A"][j], h["to_y_A"][j], h["to_z_A"][j]])
        assert np.linalg.norm(src - e["from_pos"]) < 0.4  # mean of >= 25 correlated frames
        assert np.linalg.norm(dst - e["to_pos"]) < 0.4
        assert h["length_A"][j] == pytest.approx(2.5, abs=0.3)
        assert h["back_hop"][j] == e["back_hop"]
    assert np.all(np.isfinite(noisy_result.hops["length_A"]))
    assert np.all(h["duration_ps"] > 0)


def test_failed_attempts_and_still_ions_give_no_hops():
    run = make_run(n_frames=1500, sigma_A=0.2, hop_prob=0.0, back_hop_prob=0.0, fail_prob=5e-3, n_chains=0, seed=5)
    assert run.events == [] and run.n_failed_attempts > 100
    res = find_hops(run.positions.transpose(1, 0, 2), run.times_ps)
    assert len(res.hops) == 0
    assert np.all(res.k == 1)


def test_deterministic_for_seed(noisy_run, noisy_result):
    again = find_hops(noisy_run.positions.transpose(1, 0, 2), noisy_run.times_ps, HopParameters(seed=3))
    for name in ("ion", "start_frame", "end_frame", "length_A"):
        assert np.array_equal(again.hops[name], noisy_result.hops[name])


def test_parallel_equals_serial(noisy_run, noisy_result):
    par = find_hops(noisy_run.positions[:20].transpose(1, 0, 2), noisy_run.times_ps, HopParameters(seed=3), n_jobs=2)
    ser = find_hops(noisy_run.positions[:20].transpose(1, 0, 2), noisy_run.times_ps, HopParameters(seed=3))
    assert np.array_equal(par.hops["start_frame"], ser.hops["start_frame"])
    assert np.array_equal(par.k, ser.k)


def test_open_hop_flagged():
    run = make_run(n_frames=400, sigma_A=0.15, hop_prob=0, fail_prob=0, n_chains=0, seed=2)
    pos = run.positions[:1].copy()
    # the ion hops at frame 200 to +2.5 Å x; the run ends in the middle of its hop back
    pos[0, 200:] += np.array([2.5, 0, 0])
    pos[0, 399] -= np.array([1.6, 0, 0])
    res = find_hops(pos.transpose(1, 0, 2), run.times_ps)
    h = res.hops
    assert len(h) == 2
    assert not h["open"][0] and h["open"][1]
    assert h["end_frame"][1] == 399


def _exact_k(x, k_max=10, thr=0.7):
    sil = []
    for k in range(2, k_max + 1):
        lab = KMeans(k, n_init=10, random_state=0).fit_predict(x)
        sil.append(silhouette_score(x, lab))
    sil = np.array(sil)
    best = int(np.argmax(sil)) + 2
    margin = np.sort(sil)[-1] - np.sort(sil)[-2]
    return (best if sil.max() >= thr else 1), margin, sil.max()


def test_k_agrees_with_exact_silhouette():
    """K from the sampled silhouette equals the exact O(T²) procedure (sklearn
    KMeans n_init=10 + silhouette_score over all frames) on a small case."""
    run = make_run(n_frames=1200, n_cells=3, n_vacancies=6, sigma_A=0.2, hop_prob=4e-3, n_chains=1, seed=7)
    params = HopParameters(seed=0, screen=False, silhouette_samples=60)
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


def test_sampled_equals_exact_silhouette_choice(noisy_run):
    sampled = find_hops(noisy_run.positions[:25, :1500].transpose(1, 0, 2), noisy_run.times_ps[:1500], HopParameters(seed=1))
    exact = find_hops(noisy_run.positions[:25, :1500].transpose(1, 0, 2), noisy_run.times_ps[:1500], HopParameters(seed=1, silhouette_samples=0))
    ks, ke = sampled.k, exact.k
    sil_e = np.array([i.silhouette_by_k for i in exact.ions])
    for i in range(25):
        s = np.sort(sil_e[i][np.isfinite(sil_e[i])])
        if len(s) >= 2 and s[-1] - s[-2] < 0.02:
            continue
        assert ks[i] == ke[i]


def test_screen_does_not_change_hops(noisy_run, noisy_result):
    res = find_hops(noisy_run.positions.transpose(1, 0, 2), noisy_run.times_ps, HopParameters(seed=3, screen=False))
    assert np.array_equal(res.hops["start_frame"], noisy_result.hops["start_frame"])


def test_bad_inputs():
    run = make_run(n_frames=100, n_chains=0, seed=1)
    pos = run.positions.copy()
    pos[3, 50, 1] = np.nan
    with pytest.raises(InvalidCoordinatesError, match="NaN"):
        find_hops(pos.transpose(1, 0, 2), run.times_ps)
    with pytest.raises(AnalysisError, match="no mobile ions"):
        find_hops(pos[:0].transpose(1, 0, 2), run.times_ps)
    with pytest.raises(ValueError, match="shape"):
        find_hops(pos[0], run.times_ps)
    with pytest.raises(ValueError, match="k_max"):
        HopParameters(k_max=1)
