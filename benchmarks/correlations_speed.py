"""Speed of the correlation analysis and of the van Hove function, side by side with naive versions.

* correlations of 10^4 hop events (isolated groups with sizes ~ exp(-0.4 n)) — target < 60 s;
  next to a naive dense implementation (every event's signal over all frames, ``np.corrcoef``) on 10^3 events.
* van Hove (self + distinct) of 10^4 frames x 200 ions — target < 60 s;
  next to pymatgen-analysis-diffusion's ``VanHoveAnalysis`` on the Na3PS4 test case (48 ions, 100 frames),
  where ours is timed too (same numbers: see tests/test_transport.py).

Run: ``python benchmarks/correlations_speed.py``.
"""

from __future__ import annotations

import json
import os
import time
import warnings

import numpy as np

from iondiff_stream.analysis.correlations import concerted_groups, event_signals
from iondiff_stream.synthetic.runs import make_events
from iondiff_stream.analysis.transport import van_hove

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "shared", "data", "Na3PS4_cubic_800K_pmg_diffusion")


def naive_correlations(cols: dict, T: int) -> np.ndarray:
    S = event_signals(cols["start_frame"], cols["end_frame"], T).toarray()
    return np.corrcoef(S)


def main() -> None:
    cols, truth, T, n_ions = make_events(n_groups=3500, b=0.4, seed=1)
    n = len(truth)
    t0 = time.perf_counter()
    res = concerted_groups(cols, T, n_ions, T * 0.01)
    t_ours = time.perf_counter() - t0
    print(f"[correlations] {n} events over {T} frames: {t_ours:.2f} s  (target < 60 s); "
          f"{len(res.group_sizes)} groups, b = {res.fit['b']:.3f} ± {res.fit['b_err']:.3f} (true 0.4)")
    small, _, Ts, ni = make_events(n_groups=300, b=0.4, seed=2)
    ns = len(small["ion"])
    t0 = time.perf_counter()
    concerted_groups(small, Ts, ni, Ts * 0.01)
    t_small = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive_correlations(small, Ts)
    t_naive = time.perf_counter() - t0
    print(f"  smaller case, {ns} events over {Ts} frames: ours {t_small:.3f} s (with null), "
          f"naive dense corrcoef {t_naive:.3f} s (matrix only) -> {t_naive / t_small:.1f} x")

    rng = np.random.default_rng(0)
    L = 25.0
    pos = L * rng.random((200, 1, 3)) + np.cumsum(rng.normal(0, 0.05, (200, 10_000, 3)), axis=1)
    h = np.diag([L, L, L])
    lags = np.arange(0, 5000, 100)
    origins = np.arange(0, 5000, 250)
    t0 = time.perf_counter()
    van_hove(pos, h, lags, origins, r_max=10.0, n_grid=101, sigma=0.1)
    t_vh = time.perf_counter() - t0
    print(f"[van Hove] 200 ions x 10^4 frames, {len(lags)} lags x {len(origins)} origins: {t_vh:.2f} s  (target < 60 s)")

    if os.path.exists(SHARED):
        from pymatgen.analysis.diffusion.aimd.van_hove import VanHoveAnalysis
        from pymatgen.analysis.diffusion.analyzer import DiffusionAnalyzer

        from iondiff_stream.io import collect_positions, load_universe
        from MDAnalysis.lib.mdamath import triclinic_vectors

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d = DiffusionAnalyzer.from_dict(json.load(open(os.path.join(SHARED, "cNa3PS4_pda.json"))))
            t0 = time.perf_counter()
            VanHoveAnalysis(d, avg_nsteps=5, ngrid=101, rmax=10, step_skip=5, sigma=0.1, species=["Li", "Na"])
            t_pmg = time.perf_counter() - t0
        data = collect_positions(load_universe(os.path.join(SHARED, "derived_cNa3PS4_800K_unwrapped.extxyz")), "Na")
        nt = data.n_frames - 5
        lg = np.minimum(np.arange(int(nt / 5) + 1) * 5, nt)
        t0 = time.perf_counter()
        van_hove(data.ion_major(), triclinic_vectors(data.box).astype(float), lg, np.arange(5), 10.0, 101, 0.1)
        t_v = time.perf_counter() - t0
        print(f"  Na3PS4 (48 ions, 20 lags x 5 origins): ours {t_v:.3f} s, pymatgen VanHoveAnalysis {t_pmg:.2f} s "
              f"-> {t_pmg / t_v:.0f} x")


if __name__ == "__main__":
    main()
