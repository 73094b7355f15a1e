"""Speed of the hop methods, side by side with a naive implementation of the published procedure.

Part 1 (4,000 frames): this package's default ("sites") and published ("silhouette") methods vs the naive
published procedure (every frame, ``KMeans(n_init=10)`` for each K = 2..10, ``silhouette_score`` over all
frames) on the same synthetic trajectory; the silhouette variants then assign hops with the same rule, so
the hops can be compared one to one.

Part 2 (300 mobile ions x 50,000 frames): the whole offline analysis (read + unwrap + hops + MSD) of a DCD
file, next to the time MDAnalysis takes just to iterate over the same frames, with peak memory
(each in its own process, so peak RSS is that job's own).

Prints ratios; run with ``python benchmarks/hops_speed.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def naive_centres(x: np.ndarray, k_max: int = 10, thr: float = 0.7, seed: int = 0):
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    best_k, best_s, best_c = 1, -1.0, x.mean(0, keepdims=True)
    for k in range(2, k_max + 1):
        km = KMeans(k, n_init=10, random_state=seed).fit(x)
        s = silhouette_score(x, km.labels_)
        if s > best_s:
            best_k, best_s, best_c = k, s, km.cluster_centers_
    if best_s < thr:
        return 1, x.mean(0, keepdims=True), best_s
    return best_k, best_c, best_s


def part1(n_frames: int, n_ions_naive: int | None) -> None:
    from iondiff_stream.analysis.hops import HopParameters, HopTable, _finish, detect_hops, find_hops
    from iondiff_stream.synthetic.runs import make_run, match_hops

    run = make_run(n_frames=n_frames, sigma_A=0.2, seed=1)
    n = run.n_ions if n_ions_naive is None else min(n_ions_naive, run.n_ions)
    pos = run.positions[:n]
    params = HopParameters(method="silhouette")
    t0 = time.perf_counter()
    ours = find_hops(pos.transpose(1, 0, 2), run.times_ps, params)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    sites = find_hops(pos, run.times_ps, HopParameters(), box=run.box)
    t_sites = time.perf_counter() - t0

    t0 = time.perf_counter()
    rows = []
    for i in range(n):
        k, c, s = naive_centres(pos[i])
        ion = _finish(pos[i], k, c, s, np.full(params.k_max - 1, np.nan), params)
        rows.extend(detect_hops(ion, pos[i], run.times_ps, i, i))
    t_naive = time.perf_counter() - t0
    naive = HopTable.from_rows(rows)
    truth = [e for e in run.events if e["ion"] < n]
    m_ours = match_hops(truth, ours.hops)
    m_naive = match_hops(truth, naive)
    m_sites = match_hops(truth, sites.hops)
    # hops of one against the other, within 1 frame
    same = match_hops(
        [{"ion": int(a), "start_frame": int(b), "end_frame": int(c)} for a, b, c in
         zip(naive.closed()["ion"], naive.closed()["start_frame"], naive.closed()["end_frame"])],
        ours.hops, tol_frames=1)
    print(f"[part 1] {n} ions x {n_frames} frames")
    print(f"  sites method : {t_sites:8.2f} s   ({1000 * t_sites / n:.1f} ms/ion)  hop F1 vs truth {m_sites['f1']:.3f}")
    print(f"  silhouette   : {t_ours:8.2f} s   ({1000 * t_ours / n:.1f} ms/ion)  hop F1 vs truth {m_ours['f1']:.3f}")
    print(f"  naive        : {t_naive:8.2f} s   ({1000 * t_naive / n:.1f} ms/ion)  hop F1 vs truth {m_naive['f1']:.3f}")
    print(f"  speed-up     : {t_naive / t_ours:8.1f} x (silhouette), {t_naive / t_sites:.1f} x (sites)  (target >= 100 x)")
    print(f"  same hops    : {same['tp']} of {len(naive.closed())} naive hops matched within 1 frame "
          f"({same['fp']} extra, {same['fn']} missing)")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _child(mode: str, dcd: str, top: str, jobs: int) -> None:
    t0 = time.perf_counter()
    if mode == "read":
        import MDAnalysis as mda

        u = mda.Universe(top, dcd)
        for _ in u.trajectory:
            pass
        out = {"seconds": time.perf_counter() - t0}
    else:
        from iondiff_stream.pipeline.run import analyze_run

        run = analyze_run([dcd], "Li", topology=top, n_jobs=jobs)
        out = {"seconds": time.perf_counter() - t0, "n_hops": run.summary["n_hops"],
               "method": run.summary.get("method", "silhouette")}
    out["peak_rss_MB"] = _peak_rss_mb()
    print(json.dumps(out))


def part2(n_ions: int, n_frames: int, jobs: int) -> None:
    import MDAnalysis as mda

    from iondiff_stream.synthetic.runs import make_run

    tmp = tempfile.mkdtemp()
    # tile a 3000-frame synthetic run in time to make a long trajectory cheaply: each tile continues
    # from where the previous ended (positions are shifted so the trajectory stays continuous)
    t0 = time.perf_counter()
    cells = int(np.ceil(((n_ions + 32) ** (1 / 3))))
    base = make_run(n_frames=5000, n_cells=cells, n_vacancies=cells**3 - n_ions, sigma_A=0.2,
                    hop_prob=5e-5, n_chains=2, framework=False, seed=3)
    reps = int(np.ceil(n_frames / base.n_frames))
    pieces, offset = [], np.zeros((base.n_ions, 1, 3))
    a = base.box[0] / cells
    for r in range(reps):
        p = base.positions + offset
        pieces.append(p)
        # next tile starts where this one ended, shifted by whole lattice vectors (the sites stay shared)
        offset = offset + np.rint((base.positions[:, -1:, :] - base.positions[:, :1, :]) / a) * a
    pos = np.concatenate(pieces, axis=1)[:, :n_frames]
    n_true = sum(e["end_frame"] + r * base.n_frames < n_frames for r in range(reps) for e in base.events)
    L = base.box[0]
    top = os.path.join(tmp, "top.pdb")
    dcd = os.path.join(tmp, "traj.dcd")
    u = mda.Universe.empty(base.n_ions, trajectory=True)
    u.add_TopologyAttr("names", ["Li"] * base.n_ions)
    u.add_TopologyAttr("elements", ["Li"] * base.n_ions)
    u.dimensions = base.box
    u.atoms.write(top)
    with mda.Writer(dcd, base.n_ions, dt=0.05) as w:
        for t in range(pos.shape[1]):
            u.atoms.positions = np.mod(pos[:, t], L)
            u.dimensions = base.box
            w.write(u.atoms)
    print(f"[part 2] {base.n_ions} mobile ions x {pos.shape[1]} frames, {n_true} true hops within tiles "
          f"(DCD written in {time.perf_counter() - t0:.0f} s)")
    res = {}
    for mode in ("read", "analyze"):
        r = subprocess.run([sys.executable, __file__, "--child", mode, dcd, top, str(jobs)],
                           capture_output=True, text=True, check=True)
        res[mode] = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"  MDAnalysis read only : {res['read']['seconds']:8.1f} s   peak {res['read']['peak_rss_MB']:.0f} MB")
    print(f"  full analysis ({jobs} jobs): {res['analyze']['seconds']:8.1f} s   peak {res['analyze']['peak_rss_MB']:.0f} MB"
          f"   hops {res['analyze']['n_hops']} ({res['analyze'].get('method')})   (targets < 300 s, < 4096 MB)")
    print(f"  analysis / read time : {res['analyze']['seconds'] / res['read']['seconds']:8.1f} x")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        raise SystemExit(0)
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--part", type=int, choices=[1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    if a.part in (None, 1):
        part1(1000 if a.quick else 4000, 8 if a.quick else 24)
    if a.part in (None, 2):
        part2(40 if a.quick else 300, 3000 if a.quick else 50_000, a.jobs)
