"""Many-ion correlations on ground truth."""

import numpy as np
import pytest

from iondiff_stream.analysis.correlations import CorrelationParameters, concerted_groups, event_signals
from iondiff_stream.analysis.hops import HopParameters, find_hops
from iondiff_stream.synthetic.runs import make_events, make_run, match_hops


def test_signal_is_box_smoothed_by_own_duration():
    S = event_signals(np.array([100]), np.array([104]), 300).toarray()[0]
    assert S.sum() == pytest.approx(5.0, rel=1e-6)  # area of the 5-frame box is kept
    # box [99.5, 104.5] convolved with a Gaussian of FWHM 4 frames, at its centre: erf(2.5 / (sigma sqrt 2))
    import math

    sigma = 4 / (2 * math.sqrt(2 * math.log(2)))
    assert S[102] == pytest.approx(math.erf(2.5 / (sigma * math.sqrt(2))), rel=1e-9)
    assert S[90] < 1e-3 and S[102] == S.max()
    # FWHM of the Gaussian equals the duration: a 1-frame hop is barely smeared, a 20-frame hop a lot
    short = event_signals(np.array([50]), np.array([51]), 200).toarray()[0]
    long_ = event_signals(np.array([50]), np.array([70]), 200).toarray()[0]
    assert np.count_nonzero(short > 1e-3) < np.count_nonzero(long_ > 1e-3) - 15


@pytest.mark.parametrize("jitter,percentile", [(0, 95.0), (1, 85.0)])
def test_isolated_groups_recovered_with_exact_sizes(jitter, percentile):
    # with ±1 frame of timing noise the 95th percentile of chance overlaps is too strict
    # for 2-6 frame hops (a 1-frame offset of a 3-frame hop gives r ~ 0.94); the 85th is not
    cols, truth, T, n_ions = make_events(n_groups=400, b=0.4, jitter_frames=jitter, seed=3)
    res = concerted_groups(cols, T, n_ions, T * 0.01, params=CorrelationParameters(percentile=percentile, n_shuffle=0))
    # the partition into groups is exactly the truth
    for g in np.unique(truth):
        labs = np.unique(res.group_of_event[truth == g])
        assert len(labs) == 1
        assert np.all(truth[res.group_of_event == labs[0]] == g)
    true_sizes = np.bincount(truth)
    assert np.array_equal(np.sort(res.group_sizes), np.sort(true_sizes))


def test_exponential_fit_recovers_decay():
    cols, truth, T, n_ions = make_events(n_groups=5000, b=0.5, seed=4)
    res = concerted_groups(cols, T, n_ions, T * 0.01, params=CorrelationParameters(n_shuffle=0))
    assert res.fit is not None
    assert res.fit["b"] == pytest.approx(0.5, abs=3 * res.fit["b_err"] + 0.02)
    sizes = np.bincount(truth)
    big = sizes[sizes >= 2]
    assert res.mean_correlated == pytest.approx(big.mean(), rel=1e-12)
    assert res.nu_groups_per_ps / res.nu_events_per_ps == pytest.approx(5000 / len(truth))


def test_any_overlap_is_not_enough():
    # two ions hopping 4 frames apart with 6-frame hops overlap but are not concerted
    cols = {"ion": np.array([0, 1]), "start_frame": np.array([100, 104]), "end_frame": np.array([106, 110]),
            "open": np.zeros(2, bool)}
    for k in ("from_x_A", "from_y_A", "from_z_A", "to_x_A", "to_y_A", "to_z_A"):
        cols[k] = np.zeros(2)
    # background of random single hops defines the null
    rng = np.random.default_rng(0)
    bg = np.sort(rng.integers(200, 20000, 300))
    for k, v in (("ion", np.arange(2, 302)), ("start_frame", bg), ("end_frame", bg + 6)):
        cols[k] = np.concatenate([cols[k], v])
    cols["open"] = np.zeros(302, bool)
    for k in ("from_x_A", "from_y_A", "from_z_A", "to_x_A", "to_y_A", "to_z_A"):
        cols[k] = np.zeros(302)
    res = concerted_groups(cols, 20100, 302, 201.0, params=CorrelationParameters(n_shuffle=0))
    assert res.corr[0, 1] > 0.2  # they do overlap
    assert res.group_of_event[0] != res.group_of_event[1]
    assert 0.5 < res.threshold < 1.0


def test_chains_in_a_trajectory_and_pair_mechanism():
    run = make_run(n_frames=3000, sigma_A=0.18, hop_prob=5e-4, back_hop_prob=0.0, n_chains=6, chain_sizes=(2, 4),
                   seed=8)
    hops = find_hops(run.positions, run.times_ps, HopParameters(seed=0))
    m = match_hops(run.events, hops.hops)
    assert m["f1"] >= 0.97
    # detected hop frames carry ±1 frame of noise: see test_isolated_groups_recovered_with_exact_sizes
    res = concerted_groups(hops.hops, run.n_frames, run.n_ions, float(run.times_ps[-1]), run.box,
                           CorrelationParameters(percentile=85.0, n_shuffle=0))
    det = dict((ti, j) for ti, j in m["pairs"])
    checked = 0
    for members in run.groups():
        frames = [run.events[k]["start_frame"] for k in members]
        others = [e for k, e in enumerate(run.events) if k not in members
                  and abs(e["start_frame"] - frames[0]) < 15]
        if others or not all(k in det for k in members):
            continue  # not isolated
        labs = {res.group_of_event[det[k]] for k in members}
        assert len(labs) == 1
        lab = labs.pop()
        assert res.group_sizes[lab] == len(members)
        assert np.sum(res.group_of_event == lab) == len(members)
        checked += 1
    assert checked >= 4
    two = [g for g in run.groups() if len(g) == 2]
    assert len(two) >= 2
    # in a chain the second ion enters the site the first one leaves, both starting together
    assert res.mechanisms["vacancy_following"] >= 2


@pytest.mark.parametrize("a_first,kind", [(True, "knock_off"), (False, "vacancy_following")])
def test_pair_mechanism_classification(a_first, kind):
    # ion 0 moves A -> B while ion 1 moves B -> C (positions unwrapped, B seen through a periodic image)
    L = 10.0
    A, B, C = np.array([1.0, 1, 1]), np.array([3.5, 1, 1]), np.array([6.0, 1, 1])
    s0, s1 = (100, 101) if a_first else (101, 100)
    cols = {"ion": np.array([0, 1]), "start_frame": np.array([s0, s1]), "end_frame": np.array([s0 + 3, s1 + 3]),
            "open": np.zeros(2, bool)}
    frm = np.array([A, B + [L, 0, 0]])
    to = np.array([B, C + [L, 0, 0]])
    for j, ax in enumerate("xyz"):
        cols[f"from_{ax}_A"] = frm[:, j]
        cols[f"to_{ax}_A"] = to[:, j]
    box = np.array([L, L, L, 90, 90, 90.0])
    res = concerted_groups(cols, 400, 2, 40.0, box, CorrelationParameters(percentile=50.0, n_shuffle=0))
    assert res.group_sizes.tolist() == [2]
    assert res.mechanisms[kind] == 1 and sum(res.mechanisms.values()) == 1


def test_cliques_option_on_isolated_groups():
    cols, truth, T, n_ions = make_events(n_groups=150, b=0.4, seed=9)
    comp = concerted_groups(cols, T, n_ions, T * 0.01, params=CorrelationParameters(n_shuffle=0))
    cliq = concerted_groups(cols, T, n_ions, T * 0.01, params=CorrelationParameters(method="cliques", n_shuffle=0))
    # isolated, fully correlated groups are cliques: both partitions equal the truth
    assert np.array_equal(np.sort(cliq.group_sizes), np.sort(np.bincount(truth)))
    assert np.array_equal(np.sort(comp.group_sizes), np.sort(cliq.group_sizes))
    with pytest.raises(ValueError, match="method"):
        CorrelationParameters(method="bogus")


# ---- time-shuffled null of the concert (issue 9) ----

def _poisson_hops(n_ions=60, n_frames=6000, rate=1.5e-3, n_groups=0, seed=0):
    """Independent hops (per-ion Poisson starts, 2-6 frame durations, >= 25 frames apart), optionally with
    ``n_groups`` injected concerted groups of 2-4 ions starting within one frame of each other."""
    rng = np.random.default_rng(seed)
    ion, st, du = [], [], []
    for i in range(n_ions):
        t = int(rng.integers(0, 200))
        while True:
            t += 25 + int(rng.exponential(1.0 / rate))
            if t >= n_frames - 10:
                break
            ion.append(i)
            st.append(t)
            du.append(int(rng.integers(2, 7)))
    for t in rng.integers(50, n_frames - 50, n_groups):
        d = int(rng.integers(2, 7))
        for i in rng.choice(n_ions, int(rng.integers(2, 5)), replace=False):
            ion.append(int(i))
            st.append(int(t) + int(rng.integers(0, 2)))
            du.append(d)
    st, du = np.array(st), np.array(du)
    m = len(st)
    cols = {"ion": np.array(ion), "start_frame": st, "end_frame": st + du, "open": np.zeros(m, bool)}
    for k in ("from_x_A", "from_y_A", "from_z_A", "to_x_A", "to_y_A", "to_z_A"):
        cols[k] = rng.normal(0, 50, m)  # far apart: no pair is a chain
    return cols, n_frames, n_ions


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_null_separates_independent_from_concerted_hops(seed):
    cols, T, n = _poisson_hops(seed=seed)
    res = concerted_groups(cols, T, n, T * 0.01, params=CorrelationParameters(n_shuffle=300, seed=seed))
    s = res.summary()
    assert s["fraction_hops_concerted"] > 0  # chance overlaps do form "groups"
    assert s["concert_p_value"] > 0.01
    assert s["null_fraction_hops_concerted_mean"] == pytest.approx(s["fraction_hops_concerted"], abs=0.06)
    cols, T, n = _poisson_hops(n_groups=25, seed=seed)
    res = concerted_groups(cols, T, n, T * 0.01, params=CorrelationParameters(n_shuffle=300, seed=seed))
    s = res.summary()
    assert s["concert_p_value"] < 0.01
    assert s["concert_p_value_mean_size"] <= 1.0
    assert s["excess_fraction_hops_concerted"] > 0.05
    assert len(s["null_group_size_hist_mean"]) == 20
    assert sum(s["null_group_size_hist_mean"]) > 0
    # the null keeps the hops: same count, same durations, and every draw partitions all events
    assert res.null.size_hists.shape == (300, 20)
    assert np.all((res.null.size_hists * np.arange(1, 21)).sum(1) <= len(cols["ion"]))


def test_null_p_values_are_calibrated_on_independent_hops():
    # under independence the p-value is (close to) uniform: few small ones over many seeds
    ps = []
    for seed in range(30):
        cols, T, n = _poisson_hops(n_ions=40, n_frames=4000, seed=100 + seed)
        res = concerted_groups(cols, T, n, T * 0.01, params=CorrelationParameters(n_shuffle=200, seed=seed))
        ps.append(res.null.p_value_fraction)
    ps = np.array(ps)
    assert np.mean(ps < 0.1) <= 0.25
    assert np.mean(ps > 0.5) >= 0.25


def test_null_shift_keeps_each_ions_hops_and_is_seeded():
    cols, T, n = _poisson_hops(n_groups=5, seed=7)
    p = CorrelationParameters(n_shuffle=50, seed=3)
    a = concerted_groups(cols, T, n, T * 0.01, params=p)
    b = concerted_groups(cols, T, n, T * 0.01, params=p)
    np.testing.assert_array_equal(a.null.size_hists, b.null.size_hists)
    c = concerted_groups(cols, T, n, T * 0.01, params=CorrelationParameters(n_shuffle=50, seed=4))
    assert not np.array_equal(a.null.size_hists, c.null.size_hists)
    off = concerted_groups(cols, T, n, T * 0.01, params=CorrelationParameters(n_shuffle=0))
    assert off.null is None and "concert_p_value" not in off.summary()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_null_on_detected_hops_with_and_without_chains(seed):
    # real detector on synthetic trajectories: independent hops only vs the same generator with chains
    p = CorrelationParameters(percentile=85.0, n_shuffle=300)
    out = {}
    for chains in (0, 10):
        run = make_run(n_frames=3000, sigma_A=0.18, hop_prob=3e-3, back_hop_prob=0.0, n_chains=chains,
                       chain_sizes=(2, 4), n_vacancies=12, seed=seed)
        hops = find_hops(run.positions, run.times_ps, HopParameters(seed=0))
        res = concerted_groups(hops.hops, run.n_frames, run.n_ions, float(run.times_ps[-1]), run.box, p)
        out[chains] = res.summary()
    assert out[0]["concert_p_value"] > 0.01
    assert out[10]["concert_p_value"] < 0.01
    # chains are vacancy-following pairs: far more than chance
    assert out[10]["pair_mechanisms_p_value"]["vacancy_following"] < 0.01
    null_vf = out[0]["null_pair_mechanisms_mean"]["vacancy_following"]
    assert out[0]["pair_mechanisms"]["vacancy_following"] <= null_vf + 2
