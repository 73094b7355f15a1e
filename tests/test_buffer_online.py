"""Zarr frame store (ring buffer) and streaming centres."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from iondiff_stream.buffer import FrameStoreReader, FrameStoreWriter
from iondiff_stream.errors import StoreError, StoreMismatchError
from iondiff_stream.online import OnlineCentres
from iondiff_stream.synthetic import make_run, match_hops
from iondiff_stream.hops import HopTable


def _frames(n_frames=300, n_ions=5, seed=0):
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(0, 0.1, (n_frames, n_ions, 3)), axis=0)


def _write(path, X, start_step=0, every=10, **kw):
    w = FrameStoreWriter(str(path), np.arange(1, X.shape[1] + 1), ["Li"] * X.shape[1], **kw)
    for t, x in enumerate(X):
        w.append(start_step + every * t, (start_step + every * t) * 0.001, x, np.array([10, 10, 10, 90, 90, 90.0]))
    return w


def test_archive_roundtrip_and_chunked_writes(tmp_path):
    X = _frames(250)
    w = _write(tmp_path / "a.zarr", X, chunk_frames=64, flush_seconds=None)
    r = FrameStoreReader(str(tmp_path / "a.zarr"))
    assert r.n_frames == 192  # three whole chunks written, the partial one still in memory
    w.close()
    r.refresh()
    assert r.n_frames == 250
    d = r.read()
    np.testing.assert_array_equal(d["positions"], X)
    np.testing.assert_array_equal(d["step"], np.arange(250) * 10)
    assert d["time_ps"][1] == pytest.approx(0.01)
    assert r.group["positions"].attrs["units"] == "angstrom"


def test_ring_keeps_the_last_capacity_frames(tmp_path):
    X = _frames(500)
    w = _write(tmp_path / "r.zarr", X, capacity=120, chunk_frames=40)
    w.close()
    r = FrameStoreReader(str(tmp_path / "r.zarr"))
    assert r.capacity == 120 and r.n_frames == 120
    d = r.read()
    np.testing.assert_array_equal(d["positions"], X[-120:])
    np.testing.assert_array_equal(d["step"], np.arange(380, 500) * 10)


def test_restart_append_no_duplicates(tmp_path):
    X = _frames(300)
    w = _write(tmp_path / "s.zarr", X[:200], chunk_frames=50)
    w.close()
    # the restarted run begins from a restart file written at step 1500 (frame 150): frames 150..199 repeat
    w2 = FrameStoreWriter(str(tmp_path / "s.zarr"), np.arange(1, 6), ["Li"] * 5, chunk_frames=50, mode="a")
    for t in range(150, 300):
        w2.append(10 * t, 0.01 * t, X[t], np.array([10, 10, 10, 90, 90, 90.0]))
    w2.close()
    r = FrameStoreReader(str(tmp_path / "s.zarr"))
    d = r.read()
    np.testing.assert_array_equal(d["step"], np.arange(300) * 10)
    np.testing.assert_array_equal(d["positions"], X)
    assert r.commit.n_skipped_duplicates == 50 and r.commit.n_step_gaps == 0


def test_refuses_mismatched_appends_and_bad_paths(tmp_path):
    X = _frames(10)
    _write(tmp_path / "m.zarr", X).close()
    with pytest.raises(StoreMismatchError, match="other ions"):
        FrameStoreWriter(str(tmp_path / "m.zarr"), np.arange(2, 7), ["Li"] * 5, mode="a")
    with pytest.raises(StoreMismatchError, match="units 'metal'"):
        FrameStoreWriter(str(tmp_path / "m.zarr"), np.arange(1, 6), ["Li"] * 5, units="real", mode="a")
    with pytest.raises(StoreError, match="already holds frames"):
        FrameStoreWriter(str(tmp_path / "m.zarr"), np.arange(1, 6), ["Li"] * 5, mode="w")
    with pytest.raises(StoreMismatchError, match="empty selection"):
        FrameStoreWriter(str(tmp_path / "e.zarr"), [], [])
    # a path under a regular file cannot be created, whoever runs the test (root included)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create"):
        FrameStoreWriter(str(blocker / "x.zarr"), np.arange(1, 6), ["Li"] * 5)


WRITER = textwrap.dedent("""
    import sys, time, numpy as np
    from iondiff_stream.buffer import FrameStoreWriter
    path, n, sleep = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    w = FrameStoreWriter(path, np.arange(1, 4), ["F"] * 3, chunk_frames=20, flush_seconds=None)
    for t in range(n):
        w.append(t, 0.01 * t, np.full((3, 3), float(t)), np.array([10, 10, 10, 90, 90, 90.0]))
        print(t, flush=True)
        time.sleep(sleep)
    w.close()
""")


def test_reader_reads_while_writer_writes_and_survives_kill9(tmp_path):
    path = str(tmp_path / "k.zarr")
    p = subprocess.Popen([sys.executable, "-c", WRITER, path, "100000", "0.002"], stdout=subprocess.PIPE, text=True)
    seen = []
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(seen) < 4:
            if os.path.exists(os.path.join(path, "commit.json")):
                r = FrameStoreReader(path)
                if r.n_frames:
                    d = r.read()
                    # every committed frame is complete and consistent
                    assert np.all(d["positions"][:, 0, 0] == d["step"])
                    assert np.array_equal(d["step"], np.arange(len(d["step"])))
                    if not seen or r.n_frames > seen[-1]:
                        seen.append(r.n_frames)
            time.sleep(0.05)
        assert len(seen) >= 4 and seen == sorted(seen)  # grows while written
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        printed = [int(x) for x in p.stdout.read().split()] if p.stdout else []
    finally:
        if p.poll() is None:
            p.kill()
    r = FrameStoreReader(path)
    d = r.read()
    n = r.n_frames
    assert n % 20 == 0 and n >= seen[-1]  # every whole chunk up to the last flush
    np.testing.assert_array_equal(d["step"], np.arange(n))
    np.testing.assert_array_equal(d["positions"][:, 2, 1], np.arange(n, dtype=float))
    last_printed = max(printed) if printed else n
    assert last_printed + 1 - n <= 20 + 1  # lost at most one chunk (the documented bound)


def test_online_sites_match_minibatch_kmeans_and_offline():
    """The live sites are a mini-batch k-means of the pooled positions: on stationary data they agree with
    scikit-learn's MiniBatchKMeans (initialised at the same sites, fed the in-core frames) and with the
    offline site model to within 0.05 Å."""
    from sklearn.cluster import MiniBatchKMeans

    from iondiff_stream.hops import find_hops

    run = make_run(n_frames=3000, n_cells=4, n_vacancies=8, sigma_A=0.15, hop_prob=2e-3, n_chains=0, seed=5)
    X = run.positions.transpose(1, 0, 2)
    est = OnlineCentres(dt_ps=0.05)
    for b in range(0, len(X), 100):
        assert est.partial_fit(X[b:b + 100], box=run.box) is est
    off = find_hops(run.positions, run.times_ps, box=run.box)
    _, d_off = off.sites.nearest(est.sites_.sites_A)
    assert est.sites_.n_sites == off.n_sites == len(run.sites)
    assert d_off.max() < 0.05
    # scikit-learn's streaming k-means on the same pooled in-core positions (wrapped around each site)
    m = est.sites_
    st = est.predict(X)
    near = np.concatenate([m.sites_A[st[t][st[t] >= 0]] + m.minimum_image(X[t][st[t] >= 0] - m.sites_A[st[t][st[t] >= 0]])
                           for t in range(len(X))])
    km = MiniBatchKMeans(m.n_sites, init=m.sites_A, n_init=1, batch_size=4096, random_state=0, reassignment_ratio=0.0)
    for b in range(0, len(near), 4096):
        km.partial_fit(near[b:b + 4096])
    d = np.linalg.norm(km.cluster_centers_ - m.sites_A, axis=1)
    assert np.median(d) < 0.02 and d.max() < 0.05


def test_online_live_hops_and_state_roundtrip(tmp_path):
    run = make_run(n_frames=2500, sigma_A=0.2, seed=1)
    X = run.positions.transpose(1, 0, 2)
    est = OnlineCentres(dt_ps=0.05).partial_fit(X[:1200], box=run.box)
    import zarr

    g = zarr.open_group(str(tmp_path / "st.zarr"), mode="w")
    est.save(g)
    st = {k: g["online"][k][:] for k in g["online"].array_keys()}
    st["attrs"] = dict(g["online"].attrs)
    est2 = OnlineCentres.load(st)
    est.partial_fit(X[1200:], box=run.box)
    est2.partial_fit(X[1200:], box=run.box)
    np.testing.assert_array_equal(est.sites_.sites_A, est2.sites_.sites_A)
    np.testing.assert_array_equal(est.hops_, est2.hops_)
    rows = [dict(atom_index=h.ion, atom_id=h.ion + 1, ion=h.ion, start_frame=h.start_frame, end_frame=h.end_frame, start_time_ps=0.0,
                 end_time_ps=0.0, duration_ps=0.0, length_A=0.0, from_centre=h.from_centre, to_centre=h.to_centre,
                 from_x_A=0.0, from_y_A=0.0, from_z_A=0.0, to_x_A=0.0, to_y_A=0.0, to_z_A=0.0, open=False,
                 back_hop=False) for h in est2.hop_log_]
    m = match_hops(run.events, HopTable.from_rows(rows), tol_frames=2)
    assert m["f1"] >= 0.95
    assert est.hops_.sum() == len(est.hop_log_)
    # live = offline (same site model and hop rule)
    from iondiff_stream.hops import find_hops

    off = find_hops(run.positions, run.times_ps, box=run.box)
    assert abs(int(est.hops_.sum()) - len(off.hops.closed())) <= 0.03 * len(off.hops.closed())
    with pytest.raises(ValueError, match="ions"):
        est.partial_fit(X[:3, :5])
