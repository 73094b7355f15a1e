"""Concerted modes on the hop detector's sites (A→B with B→C within a window), their Arrhenius over a series,
and G_d(r≈0, t) with its characteristic time (issue 20): known answers and a naive reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from iondiff_stream.analysis.distinct import distinct_origin, origin_counts, time_arrhenius
from iondiff_stream.analysis.hops import HOP_COLUMNS, HopTable
from iondiff_stream.analysis.sites import concerted_modes, hop_concerted_modes, mode_arrhenius, mode_pairs
from iondiff_stream.core.units import KB_EV_PER_K

L, A = 4, 2.7  # a 4x4x4 simple cubic site lattice, spacing 2.7 Å


def _site(x, y, z):
    return (x % L) * L * L + (y % L) * L + (z % L)


def _hop(ion, a, b, t, open_=False):
    """A hop of ``ion`` from grid point a to grid point b (unwrapped, spacings), arriving at ``t`` ps."""
    fa, fb = np.array(a, float) * A, np.array(b, float) * A
    row = {"atom_index": ion, "atom_id": ion + 1, "ion": ion, "start_frame": int(round(t * 10)) - 1,
           "end_frame": int(round(t * 10)), "start_time_ps": t - 0.1, "end_time_ps": t, "duration_ps": 0.1,
           "length_A": float(np.linalg.norm(fb - fa)), "from_centre": _site(*a), "to_centre": _site(*b),
           "open": open_, "back_hop": False}
    for k, x in enumerate("xyz"):
        row[f"from_{x}_A"], row[f"to_{x}_A"] = fa[k], fb[k]
    return row


#: (hops, expected pairs by mode); every case is commented with why it counts or not
HOPS = [
    _hop(1, (1, 0, 0), (2, 0, 0), 1.0), _hop(2, (0, 0, 0), (1, 0, 0), 1.5),  # collinear: 2 fills 1's site 0.5 ps later
    _hop(3, (1, 2, 0), (1, 3, 0), 5.0), _hop(4, (0, 2, 0), (1, 2, 0), 5.8),  # bent (90°)
    _hop(5, (3, 3, 0), (3, 3, 1), 10.0), _hop(6, (2, 3, 0), (3, 3, 0), 11.5),  # 1.5 ps apart: outside the window
    _hop(7, (0, 0, 3), (1, 0, 3), 20.0), _hop(7, (1, 0, 3), (2, 0, 3), 20.3),  # one ion twice: not a pair
    _hop(8, (3, 0, 3), (3, 1, 3), 30.0), _hop(9, (3, 1, 3), (3, 0, 3), 30.2),  # exchange (C = A): not a pair
    _hop(10, (2, 2, 2), (3, 2, 2), 40.0, open_=True), _hop(11, (1, 2, 2), (2, 2, 2), 40.5),  # open hop: left out
    _hop(12, (2, 1, 2), (0, 1, 2), 50.0), _hop(13, (1, 1, 2), (2, 1, 2), 50.5),  # reverse (180°, C two sites back)
    _hop(14, (2, 3, 2), (3, 3, 2), 60.2), _hop(15, (1, 3, 2), (2, 3, 2), 60.0),  # b leaves B after a arrives:
    _hop(16, (2, 2, 3), (2, 3, 2 + 1), 60.4),  # and 16 also arrives in (2, 3, 3): no link to B = (2, 3, 2)
]
EXPECTED = {"collinear": 2, "bent": 1, "reverse": 1}
N_IONS, TOTAL_PS = 20, 100.0


def test_hop_concerted_modes_known_pairs():
    tab = HopTable.from_rows([{k: r[k] for k in HOP_COLUMNS} for r in HOPS])
    m = hop_concerted_modes(tab, N_IONS, TOTAL_PS, window_ps=1.0)
    assert m.counts == EXPECTED
    assert m.n_pairs == 4 and m.n_hops == len(HOPS) - 1
    per = N_IONS * TOTAL_PS
    for k, c in EXPECTED.items():
        assert m.frequency_per_ps[k] == pytest.approx(c / per, rel=1e-12)
        assert m.frequency_std_per_ps[k] == pytest.approx(c / per / math.sqrt(c), rel=1e-12)
    d = m.to_dict()
    assert d["concerted_mode_counts"] == EXPECTED and d["concerted_mode_window_ps"] == 1.0
    # a wider window takes the 1.5 ps pair: (2,3,0)->(3,3,0) with (3,3,0)->(3,3,1), bent (90°)
    assert hop_concerted_modes(tab, N_IONS, TOTAL_PS, window_ps=1.6).counts == {"collinear": 2, "bent": 2,
                                                                                "reverse": 1}
    # typed sites: the mode name gains the types
    types = np.array(["T"] * (L**3))
    types[_site(2, 0, 0)] = "O"
    typed = hop_concerted_modes(tab, N_IONS, TOTAL_PS, site_types=types).counts
    assert typed["T->T+T->O collinear"] == 1 and sum(typed.values()) == 4


def _naive_pairs(ion, t, fs, ts, w):
    """The counting rule as a double loop over every pair of changes (the reference of the vectorised one)."""
    return sorted((a, b) for a in range(len(ion)) for b in range(len(ion))
                  if fs[b] == ts[a] and ion[a] != ion[b] and abs(t[a] - t[b]) <= w + 1e-9 and ts[b] != fs[a])


def test_mode_pairs_equals_naive_loop():
    """Random changes on small site sets (many ties of time and site, windows of 0 to 3): the same pairs."""
    rng = np.random.default_rng(1)
    for _ in range(100):
        m, n_sites = int(rng.integers(0, 60)), int(rng.integers(2, 8))
        ion, fs = rng.integers(0, 6, m), rng.integers(0, n_sites, m)
        ts = (fs + rng.integers(1, n_sites, m)) % n_sites
        t, w = np.round(rng.random(m) * 20, 1), float(rng.choice([0.0, 0.5, 1.0, 3.0]))
        got = sorted(map(tuple, mode_pairs(ion, t, fs, ts, w).tolist()))
        assert got == _naive_pairs(ion, t, fs, ts, w)


def _walkers(rng, n_ions, n_hops, total_ps, chain_ps=None):
    """Rows of ``n_ions`` independent random walkers on the L³ lattice (``n_hops`` hops each, uniform times);
    with ``chain_ps``, every hop of an ion into a site is followed after ``chain_ps`` by the hop of another ion
    out of it (a chain of two, the rest independent)."""
    steps = np.array([(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)])
    rows, ion = [], 0
    for _ in range(n_ions):
        x = rng.integers(0, L, 3)
        for t in np.sort(rng.uniform(1.0, total_ps - 2.0, n_hops)):
            y = x + steps[rng.integers(6)]
            rows.append(_hop(ion, tuple(x), tuple(y), round(float(t), 3)))
            if chain_ps is not None:  # ion + 1000 leaves the site ion just reached, one step further on
                z = y + (y - x)
                rows.append(_hop(ion + 1000, tuple(y), tuple(z), round(float(t) + chain_ps, 3)))
            x = y
        ion += 1
    return HopTable.from_rows([{k: r[k] for k in HOP_COLUMNS} for r in rows])


def test_concerted_modes_chance_baseline():
    """Independent walkers: the baseline's mean is the analytic chance count (every combination A→B, B→C of two
    ions coincides with probability 2w/T - (w/T)² when each ion's times are shifted uniformly on the circle),
    and the observed pairs are chance (p not small). Walkers with planted chains: the excess is the chains."""
    rng = np.random.default_rng(7)
    total, w, n_null = 200.0, 1.0, 300
    tab = _walkers(rng, 30, 12, total)
    m = hop_concerted_modes(tab, 30, total, window_ps=w, n_null=n_null, seed=3)
    c = tab.columns
    combos = len(_naive_pairs(c["ion"], np.zeros(len(c["ion"])), c["from_centre"], c["to_centre"], 0.0))
    p = 2 * w / total - (w / total) ** 2
    assert combos > 1000
    assert m.null_pairs_mean == pytest.approx(combos * p, abs=4 * m.null_pairs_std / np.sqrt(n_null))
    assert m.null_draws == n_null and m.null_reason is None
    assert m.p_value > 0.01 and m.p_value_fewer > 0.01 and abs(m.excess_pairs) < 4 * m.null_pairs_std
    assert sum(m.null_counts_mean.values()) == pytest.approx(m.null_pairs_mean, rel=1e-12)
    # 20 ions whose every hop is followed 0.3 ps later by another ion leaving the site it reached (collinear)
    chained = _walkers(np.random.default_rng(8), 20, 10, total, chain_ps=0.3)
    mc = hop_concerted_modes(chained, 40, total, window_ps=w, n_null=n_null, seed=3)
    assert mc.counts["collinear"] >= 200 and mc.p_value == pytest.approx(1 / (n_null + 1))
    assert mc.excess_pairs == pytest.approx(200, abs=4 * mc.null_pairs_std + 0.1 * 200)
    assert mc.p_value_fewer == pytest.approx(1.0)
    # exclusion: ions 0..9 take turns (20 ps each) going round the square of sites (0,0,0) (1,0,0) (1,1,0)
    # (0,1,0), coming from and leaving to sites of their own: only the hand-overs can pair, independent timing
    # pairs them all the time
    square = [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0)]
    rows = []
    for i in range(10):
        t0 = 20.0 * i
        rows.append(_hop(i, (0, 0, 3), square[0], t0 + 0.5))
        for k in range(1, 19):
            rows.append(_hop(i, square[(k - 1) % 4], square[k % 4], t0 + 0.5 + k))
        rows.append(_hop(i, square[18 % 4], (1, 1, 1), t0 + 19.6))
    wait = hop_concerted_modes(HopTable.from_rows([{k: r[k] for k in HOP_COLUMNS} for r in rows]), 10, total,
                               window_ps=w, n_null=n_null, seed=3)
    assert wait.n_pairs <= 20 and wait.null_pairs_mean > 5 * wait.n_pairs
    assert wait.p_value_fewer == pytest.approx(1 / (n_null + 1)) and wait.excess_pairs < 0
    d = mc.to_dict()
    assert d["concerted_mode_p_value"] == mc.p_value and d["concerted_mode_null_draws"] == n_null
    # no baseline where the data cannot give one
    one = hop_concerted_modes(HopTable.from_rows([{k: r[k] for k in HOP_COLUMNS} for r in HOPS[6:8]]), N_IONS,
                              TOTAL_PS)
    assert one.p_value is None and "fewer than two ions" in one.null_reason
    apart = hop_concerted_modes(HopTable.from_rows([{k: r[k] for k in HOP_COLUMNS} for r in (HOPS[0], HOPS[4])]),
                                N_IONS, TOTAL_PS)  # (1,0,0)->(2,0,0) and (3,3,0)->(3,3,1): no site in common
    assert apart.p_value is None and "no two ions' hops share a site" in apart.null_reason


def test_same_rule_as_site_assignment_modes():
    """The hops as site assignments (one frame per 0.1 ps) give concerted_modes the same number of pairs."""
    dt, T = 0.1, 1001
    assigned = np.full((N_IONS, T), L**3 - 1, dtype=np.int64)  # ions without hops sit still
    closed = [r for r in HOPS if not r["open"]]
    for ion in range(N_IONS):
        mine = sorted((r for r in closed if r["ion"] == ion), key=lambda r: r["end_time_ps"])
        if mine:
            assigned[ion, :] = mine[0]["from_centre"]
            for r in mine:
                assigned[ion, int(round(r["end_time_ps"] / dt)):] = r["to_centre"]
    cm = concerted_modes(assigned, np.array(["s"] * L**3), dt, window_ps=1.0)
    assert cm["n_concerted_pairs"] == sum(EXPECTED.values())


def test_mode_arrhenius_known_slope():
    """Frequencies built on ν = ν0 exp(-Ea/kT) exactly: the fit returns Ea, ν0, and the Poisson-weighted error."""
    ea, nu0, n_ions = 0.3, 2.0, 100
    T = np.array([1000.0, 1250.0, 1500.0])
    c = np.array([8, 20, 40])
    nu = nu0 * np.exp(-ea / (KB_EV_PER_K * T))
    t_run = c / (n_ions * nu)  # the run lengths that give these counts exactly
    counts = [{"bent": int(k), "collinear": int(j)} for k, j in zip(c, [3, 6, 9])]
    freqs = [{"bent": k / (n_ions * t), "collinear": j / (n_ions * t)} for k, j, t in zip(c, [3, 6, 9], t_run)]
    res = mode_arrhenius(T, counts, freqs)
    b = res["bent"]
    assert b["Ea_eV"] == pytest.approx(ea, rel=1e-9)
    assert b["prefactor_per_ps"] == pytest.approx(nu0, rel=1e-9)
    x = 1 / (KB_EV_PER_K * T)
    w = c.astype(float)  # (ν / σ)² = count
    xm = (w * x).sum() / w.sum()
    assert b["Ea_err_eV"] == pytest.approx(1 / math.sqrt((w * (x - xm) ** 2).sum()), rel=1e-9)
    assert b["Ea_ci95_eV"][0] < ea < b["Ea_ci95_eV"][1]
    # collinear: 3 pairs at 1000 K is below 5, so 2 temperatures remain: no activation energy, and why
    assert res["collinear"]["Ea_eV"] is None and "2 of 3 temperatures" in res["collinear"]["reason"]
    assert res["all"]["counts"] == [11, 26, 49] and res["all"]["Ea_eV"] is not None


def test_series_report_shows_modes_and_gd(monkeypatch):
    from iondiff_stream.outputs import report

    ea, nu0 = 0.25, 1.0
    T = [1300.0, 1500.0, 1700.0]
    sums = {}
    for t, c in zip(T, [10, 20, 30]):
        nu = nu0 * math.exp(-ea / (KB_EV_PER_K * t))
        tau = 5.0 * math.exp(0.4 / (KB_EV_PER_K * t)) / math.exp(0.4 / (KB_EV_PER_K * 1500))
        sums[f"run{int(t)}"] = {"temperature_K": t, "n_hops": 3 * c, "hops_above_trust_hi_fraction": 0.01,
                                "concerted_mode_counts": {"bent": c}, "concerted_mode_frequency_per_ps": {"bent": nu},
                                "Gd0_time_ps": tau, "Gd0_onset_time_ps": None, "Gd0_onset_time_reason": "x"}
    monkeypatch.setattr(report, "_load", lambda d: (sums[d], None))
    out = report.arrhenius_across_runs(list(sums))
    assert out["concerted_modes"]["bent"]["Ea_eV"] == pytest.approx(ea, rel=1e-9)
    assert out["Gd0_time"]["Ea_eV"] == pytest.approx(0.4, rel=1e-9)
    assert out["Gd0_time"]["tau0_ps"] == pytest.approx(5.0 / math.exp(0.4 / (KB_EV_PER_K * 1500)), rel=1e-9)
    assert out["Gd0_onset_time"]["Ea_eV"] is None and "0 of 3" in out["Gd0_onset_time"]["reason"]
    assert [r["n_hops"] for r in out["series"]] == [30, 60, 90]
    page = report.render_report(sums["run1500"], [], arrhenius=out)
    assert "Temperature series: concerted modes" in page and "Ea of mode bent" in page and "0.25 eV" in page


def test_time_arrhenius_needs_three():
    r = time_arrhenius([1000, 1200], [3.0, 2.0])
    assert r["Ea_eV"] is None and "2 of 2" in r["reason"]


# --- G_d(r≈0, t) ------------------------------------------------------------------------------------------

def _exchange_lattice(n_side=5, a=2.0, nu_bond=0.5, dt=0.02, n_frames=600, sigma=0.08, seed=3):
    """Ions on every site of a simple cubic lattice swapping with a neighbour at ``nu_bond`` per bond per ps.

    Each ion then walks the lattice at rate ``nu_bond`` towards each of its 6 neighbours, and its site is
    always held by exactly one ion: G_d(r≈0, t) / its long-time value = 1 - P0(t),
    P0 = (exp(-2 ν t) I0(2 ν t))³.
    """
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    n = len(g)
    index = {tuple(p): k for k, p in enumerate(g)}
    bonds = np.array([(index[tuple(p)], index[tuple((p + e) % n_side)]) for p in g for e in np.eye(3, dtype=int)])
    occ = np.arange(n)  # ion on each site
    disp = np.zeros((n, 3))  # unwrapped displacement of each ion, lattice units
    site_of = np.arange(n)
    pos = np.empty((n_frames, n, 3))
    for t in range(n_frames):
        pos[t] = (g[site_of] + disp) * a + rng.normal(0, sigma, (n, 3))
        chosen = np.flatnonzero(rng.random(len(bonds)) < nu_bond * dt)
        for b in rng.permutation(chosen):
            s0, s1 = bonds[b]
            i, j = occ[s0], occ[s1]
            step = (g[s1] - g[s0] + n_side // 2) % n_side - n_side // 2  # the bond's direction, periodic
            disp[i] += step - (g[s1] - g[s0])  # unwrapped: the ion moves by `step`, its site index by g[s1]-g[s0]
            disp[j] -= step - (g[s1] - g[s0])
            occ[s0], occ[s1] = j, i
            site_of[i], site_of[j] = s1, s0
    box = np.array([n_side * a] * 3 + [90.0] * 3)
    return pos, np.arange(n_frames) * dt, box


def _p0_time(nu_bond, share):
    from scipy.optimize import brentq
    from scipy.special import ive

    return brentq(lambda t: ive(0, 2 * nu_bond * t) ** 3 - share, 1e-6, 100.0)


@pytest.fixture(scope="module")
def lattice():
    return _exchange_lattice()


def test_gd_time_of_a_lattice_exchange_walk(lattice):
    pos, times, box = lattice
    r = distinct_origin(pos, times, box, r0_A=0.5)
    assert r.long_time_spread < 0.02  # the total density around an ion's old spot does not change
    # one ion per site: the long-time value is the site peak, 1/(rho V0), less the ion's own share 1/N of it
    n, vol = pos.shape[1], box[0] ** 3
    v0 = 4 / 3 * np.pi * 0.5**3
    assert r.long_time_over_rho == pytest.approx(1 / (n / vol * v0) * (1 - 1 / n), rel=0.01)
    assert r.tau_ps == pytest.approx(_p0_time(0.5, 0.5), rel=0.06)  # 0.245 ps
    assert r.onset_ps == pytest.approx(_p0_time(0.5, 0.9), rel=0.08)
    assert r.to_dict()["Gd0_time_ps"] == r.tau_ps and r.tau_reason is None


def _naive_counts(a, b, box, r0):
    """Pairs |b_j - a_i| < r0 over all 27 neighbouring images, by loops over i (no neighbour search)."""
    h = np.diag(box[:3])
    shifts = np.stack(np.meshgrid(*[[-1, 0, 1]] * 3, indexing="ij"), -1).reshape(-1, 3) @ h
    aw = a - np.floor(a / box[:3]) * box[:3]
    bw = b - np.floor(b / box[:3]) * box[:3]
    dist, self_ = 0, 0
    for i in range(len(a)):
        d = np.linalg.norm(bw[None, :, :] + shifts[:, None, :] - aw[i], axis=2).min(0)
        close = d < r0
        self_ += int(close[i])
        dist += int(close.sum() - close[i])
    return dist, self_


def test_gd_against_a_naive_count(lattice):
    pos, times, box = lattice
    n = pos.shape[1]
    r = distinct_origin(pos, times, box, r0_A=0.5, n_lags=6, n_origins=5)
    rho_v0 = n / box[0] ** 3 * 4 / 3 * np.pi * 0.5**3
    lags = np.rint(r.lag_ps / 0.02).astype(int)
    for j, lag in enumerate(lags):
        starts = np.unique(np.linspace(0, len(times) - 1 - lag, 5).round().astype(int))
        c = np.array([_naive_counts(pos[t0], pos[t0 + lag], box, 0.5) for t0 in starts]).sum(0)
        assert r.gd_over_rho[j] == pytest.approx(c[0] / (len(starts) * n * rho_v0), rel=1e-12)
        assert r.g_total_over_rho[j] == pytest.approx(c.sum() / (len(starts) * n * rho_v0), rel=1e-12)
    assert origin_counts(pos[0], pos[0], box, 0.5) == (0, n)


def test_gd_time_not_reached_is_null_with_reason():
    pos, times, box = _exchange_lattice(nu_bond=0.02, n_frames=300)
    r = distinct_origin(pos, times, box)
    assert r.tau_ps is None and "longest lag" in r.tau_reason and r.to_dict()["Gd0_time_ps"] is None
    # the share reached is 1 - P0 at the longest lag (3 ps): 0.29
    assert r.ratio[-1] == pytest.approx(1 - _p0_share(0.02, r.lag_ps[-1]), abs=0.06)


def _p0_share(nu_bond, t):
    from scipy.special import ive

    return ive(0, 2 * nu_bond * t) ** 3


def _exclusion_lattice(n_side=6, n_ions=36, a=2.0, nu=0.5, dt=0.05, n_frames=1200, sigma=0.08, seed=5):
    """A partially occupied site lattice (like Ag in alpha-AgI: more sites than ions): ``n_ions`` on the
    ``n_side``³ simple cubic sites, each trying a hop to each neighbour at ``nu`` per ps, done when it is empty.

    At long times every site is held with probability n_ions / n_sites by any ion, so the total
    G(r≈0, ∞)/ρ is a³ P(|Δ| < r0) / V0 (Δ the difference of two vibration displacements) and its distinct part
    that times (1 − 1/N); at short times the ion's own memory of its site makes G(r≈0, t) much larger.
    """
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    sites = rng.choice(len(g), n_ions, replace=False)
    occupied = np.zeros(len(g), bool)
    occupied[sites] = True
    cell = g[sites].copy()  # unwrapped lattice position of each ion
    moves = np.concatenate([np.eye(3, dtype=int), -np.eye(3, dtype=int)])
    pos = np.empty((n_frames, n_ions, 3))
    for t in range(n_frames):
        pos[t] = cell * a + rng.normal(0, sigma, (n_ions, 3))
        for i in rng.permutation(n_ions):
            for e in moves[rng.random(6) < nu * dt]:
                s0 = np.ravel_multi_index(tuple(cell[i] % n_side), (n_side,) * 3)
                s1 = np.ravel_multi_index(tuple((cell[i] + e) % n_side), (n_side,) * 3)
                if not occupied[s1]:
                    occupied[s0], occupied[s1] = False, True
                    cell[i] += e
    box = np.array([n_side * a] * 3 + [90.0] * 3)
    return pos, np.arange(n_frames) * dt, box


def test_gd_long_time_value_of_a_partially_occupied_lattice():
    """More sites than ions: the total G(r≈0, t) still carries the ion's memory of its own site well past the
    vibrations; the long-time value is that of the late lags, not the mean over all lags past the vibrations."""
    from scipy.stats import chi2

    pos, times, box = _exclusion_lattice()
    n, a, r0, sigma = pos.shape[1], 2.0, 0.5, 0.08
    r = distinct_origin(pos, times, box, r0_A=r0)
    expected = a**3 * chi2.cdf((r0 / (sigma * math.sqrt(2))) ** 2, 3) / (4 / 3 * math.pi * r0**3) * (1 - 1 / n)
    assert r.g_total_over_rho[0] > 3 * expected  # the self memory at short lags
    assert r.long_time_over_rho == pytest.approx(expected, rel=0.1)
    assert r.tau_ps is not None and r.tau_ps < r.lag_ps[-1]
