"""Zarr frame store (ring buffer) and streaming centres."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from iondiff_stream.io.store import FrameStoreReader, FrameStoreWriter
from iondiff_stream.core.errors import StoreError, StoreMismatchError
from iondiff_stream.live.online import OnlineCentres
from iondiff_stream.synthetic.runs import make_run, match_hops
from iondiff_stream.analysis.hops import HopTable


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
    with pytest.raises(StoreError, match="already holds 10 frames.*--append.*--overwrite"):
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
    from iondiff_stream.io.store import FrameStoreWriter
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
        deadline = time.time() + 600  # generous: a busy machine is slow, not wrong
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

    from iondiff_stream.analysis.hops import find_hops

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


def test_online_live_hops_equal_the_offline_rule():
    run = make_run(n_frames=2500, sigma_A=0.2, seed=1)
    X = run.positions.transpose(1, 0, 2)
    est = OnlineCentres(dt_ps=0.05)
    for b in range(0, len(X), 137):  # any batching
        est.partial_fit(X[b:b + 137], box=run.box)
    est.finalize()  # end of the run
    rows = [dict(atom_index=h.ion, atom_id=h.ion + 1, ion=h.ion, start_frame=h.start_frame, end_frame=h.end_frame,
                 start_time_ps=0.0, end_time_ps=0.0, duration_ps=0.0, length_A=0.0, from_centre=h.from_centre,
                 to_centre=h.to_centre, from_x_A=0.0, from_y_A=0.0, from_z_A=0.0, to_x_A=0.0, to_y_A=0.0, to_z_A=0.0,
                 open=False, back_hop=False) for h in est.hop_log_]
    m = match_hops(run.events, HopTable.from_rows(rows), tol_frames=2)
    assert m["f1"] >= 0.95
    assert est.hops_.sum() == len(est.hop_log_)
    # the one hop rule: the offline method given the live sites counts the same hops from the same frames
    from iondiff_stream.analysis.hops import find_hops

    off = find_hops(run.positions, run.times_ps, box=run.box, sites=est.sites_)
    on = est.events().sorted()
    assert abs(int(est.hops_.sum()) - len(off.hops.closed())) <= 0.02 * len(off.hops.closed())  # sites moved meanwhile
    with pytest.raises(ValueError, match="ions"):
        est.partial_fit(X[:3, :5])
    assert len(on) == int(est.hops_.sum())


# ---------------------------------------------------------------- segments, one writer, ring, checksums
BOX = np.array([10, 10, 10, 90, 90, 90.0])


def test_every_run_is_a_segment_and_nothing_is_dropped(tmp_path):
    """Equilibration 0..200, a run continuing the steps, reset_timestep 0, production 0..300."""
    X = _frames(21 + 10 + 31)
    w = FrameStoreWriter(str(tmp_path / "g.zarr"), np.arange(1, 6), ["Li"] * 5, chunk_frames=16)
    k = 0
    for s in range(0, 201, 10):  # run 1 (setup frame at step 0)
        assert w.append(s, s * 1e-3, X[k], BOX, new_run=(s == 0))
        k += 1
    # run 2 continues the steps: its setup frame repeats step 200 (same configuration: not stored twice)
    assert not w.append(200, 0.2, X[k - 1], BOX, new_run=True)
    for s in range(210, 301, 10):
        assert w.append(s, s * 1e-3, X[k], BOX)
        k += 1
    # reset_timestep 0 (no run flag: a step going back is a reset by itself), production run
    for s in range(0, 301, 10):
        assert w.append(s, 0.3 + s * 1e-3, X[k], BOX)
        k += 1
    w.close()
    r = FrameStoreReader(str(tmp_path / "g.zarr"))
    segs = r.segments
    assert [(g["first_step"], g["last_step"], g["n_frames"], g["started_by"]) for g in segs] == [
        (0, 200, 21, "start"), (210, 300, 10, "new run"), (0, 300, 31, "timestep reset")]
    assert r.n_frames == k == 62 and r.commit.n_skipped_duplicates == 0 and r.commit.n_run_boundary_repeats == 1
    d = r.read()
    np.testing.assert_array_equal(d["positions"], X[:62])
    np.testing.assert_array_equal(d["step"][segs[2]["start"]:segs[2]["stop"]], np.arange(0, 301, 10))


def test_append_is_a_new_segment_restart_continues(tmp_path):
    X = _frames(40)
    p = str(tmp_path / "a.zarr")
    _write(p, X[:20], chunk_frames=8).close()  # steps 0..190
    w = FrameStoreWriter(p, np.arange(1, 6), ["Li"] * 5, chunk_frames=8, mode="a")  # the same script again
    for t in range(20):
        w.append(10 * t, 0.01 * t, X[20 + t], BOX, new_run=t == 0)
    w.close()
    r = FrameStoreReader(p)
    assert [g["started_by"] for g in r.segments] == ["start", "appended run"] and r.n_frames == 40
    assert r.commit.n_skipped_duplicates == 0
    # a restart from step 150 of the last segment continues it; steps 150..190 already stored are skipped
    w = FrameStoreWriter(p, np.arange(1, 6), ["Li"] * 5, chunk_frames=8, mode="a")
    for t in range(15, 25):
        w.append(10 * t, 0.01 * t, X[20 + min(t, 19)], BOX, new_run=t == 15)
    w.close()
    r = FrameStoreReader(p)
    assert len(r.segments) == 2 and r.segments[1]["restarts"] == 1 and r.segments[1]["last_step"] == 240
    assert r.commit.n_skipped_duplicates == 5 and r.n_frames == 45


def test_one_writer_lock_and_stale_lock(tmp_path):
    from iondiff_stream.core.errors import StoreLockedError

    p = str(tmp_path / "l.zarr")
    w = FrameStoreWriter(p, np.arange(1, 6), ["Li"] * 5)
    with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}.*one writer"):
        FrameStoreWriter(p, np.arange(1, 6), ["Li"] * 5, mode="a")
    w.append(0, 0.0, np.zeros((5, 3)), BOX)
    w.close()
    FrameStoreWriter(p, np.arange(1, 6), ["Li"] * 5, mode="a").close()  # released on close
    # a writer killed with SIGKILL: its lock dies with it, the next writer reports it
    code = ("import sys, os, numpy as np; from iondiff_stream.io.store import FrameStoreWriter; "
            "w = FrameStoreWriter(sys.argv[1], np.arange(1, 6), ['Li'] * 5, mode='a'); "
            "print('open', flush=True); sys.stdin.read()")
    k = subprocess.Popen([sys.executable, "-c", code, p], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert k.stdout.readline().strip() == "open"
    with pytest.raises(StoreLockedError, match=f"pid {k.pid}"):
        FrameStoreWriter(p, np.arange(1, 6), ["Li"] * 5, mode="a")
    k.kill()
    k.wait()
    w = FrameStoreWriter(p, np.arange(1, 6), ["Li"] * 5, mode="a")
    assert w._lock.stale and w._lock.stale["pid"] == k.pid
    w.close()
    assert FrameStoreReader(p).commit.unclean_exits[0]["pid"] == k.pid


def test_capacity_must_be_positive(tmp_path):
    with pytest.raises(StoreError, match="positive"):
        FrameStoreWriter(str(tmp_path / "c.zarr"), np.arange(1, 6), ["Li"] * 5, capacity=0)


def test_corrupt_chunk_is_named(tmp_path):
    from iondiff_stream.core.errors import StoreCorruptError

    p = tmp_path / "z.zarr"
    _write(p, _frames(50), chunk_frames=20).close()
    chunk = p / "positions" / "c.1.0.0"
    assert chunk.exists()
    chunk.write_bytes(b"\0" * chunk.stat().st_size)  # a zero-filled chunk (e.g. a crash of the file system)
    r = FrameStoreReader(str(p))
    r.read(0, 20)  # other chunks still read
    with pytest.raises(StoreCorruptError, match="'positions' in frames 20-39 failed its checksum"):
        r.read(20, 40)
    flip = p / "time_ps" / "c.0"
    b = bytearray(flip.read_bytes())
    b[len(b) // 2] ^= 0xFF  # one flipped byte
    flip.write_bytes(bytes(b))
    with pytest.raises(StoreCorruptError, match="time_ps"):
        r.read(0, 5, names=("time_ps",))


RING_WRITER = textwrap.dedent("""
    import sys, time, numpy as np
    from iondiff_stream.io.store import FrameStoreWriter
    import os
    path, stop, max_seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    w = FrameStoreWriter(path, np.arange(1, 9), ["F"] * 8, capacity=60, chunk_frames=10, flush_frames=3,
                         flush_seconds=None)
    t0, t, pause = time.time(), 0, 0.0005
    # one frame per MD step, each frame's content = its step; until the reader has seen enough (stop file)
    while not os.path.exists(stop) and time.time() - t0 < max_seconds:
        w.append(t, 0.001 * t, np.full((8, 3), float(t)) + np.arange(8)[:, None], np.array([10, 10, 10, 90, 90, 90.0]))
        t += 1
        if t % 50 == 0 and os.path.exists(stop + ".slower"):  # a slow reader asks for more time per frame
            pause = float(open(stop + ".slower").read() or pause)
        time.sleep(pause)
    w.close()
    print(t)
""")


def _poll_ring(tmp_path, min_written, min_good, max_seconds=600.0):
    """A reader polls a 60-frame ring written every step until it has made ``min_good`` consistent reads and
    the writer is past step ``min_written`` (the ring wrapped many times), then stops the writer; returns
    (consistent reads, retries, frames written). No assumption on speed: a busy machine only takes longer."""
    from iondiff_stream.core.errors import StoreOverwrittenError

    path = str(tmp_path / "ring.zarr")
    stop = str(tmp_path / "stop")
    p = subprocess.Popen([sys.executable, "-c", RING_WRITER, path, stop, str(max_seconds)], stdout=subprocess.PIPE,
                         text=True)
    good = retries = in_a_row = 0
    last_step = -1
    pause = 0.0005
    try:
        while p.poll() is None:
            if in_a_row >= 20:  # this reader is slower than the ring's turnover (a busy machine): slow the writer
                pause, in_a_row = min(2 * pause, 0.05), 0
                with open(stop + ".slower", "w") as fh:
                    fh.write(str(pause))
            if good >= min_good and last_step > min_written and not os.path.exists(stop):
                open(stop, "w").close()
            if not os.path.exists(os.path.join(path, "commit.json")):
                time.sleep(0.01)
                continue
            r = FrameStoreReader(path)
            if r.n_frames == 0:
                continue
            try:
                d = r.read(names=("positions", "step", "time_ps"))
            except StoreOverwrittenError:
                retries += 1
                in_a_row += 1
                continue
            in_a_row = 0
            steps = d["step"]
            # no torn frame: every frame's rows are its own step, steps consecutive, times match
            np.testing.assert_array_equal(d["positions"][:, :, 0] - np.arange(8)[None, :], np.repeat(steps[:, None], 8, 1))
            np.testing.assert_array_equal(np.diff(steps), 1)
            np.testing.assert_allclose(d["time_ps"], 0.001 * steps)
            good += 1
            last_step = max(last_step, int(steps[-1]))
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
    assert p.returncode == 0
    return good, retries, int(p.stdout.read())


def test_ring_reader_never_sees_a_torn_frame_short(tmp_path):
    good, retries, written = _poll_ring(tmp_path, 600, 5)
    assert written > 600 and good >= 5, (written, good)  # the ring wrapped many times while it was read


@pytest.mark.slow
def test_ring_reader_never_sees_a_torn_frame_one_minute(tmp_path):
    good, retries, written = _poll_ring(tmp_path, 20 * 60, 50, max_seconds=1800.0)
    assert written > 20 * 60 and good >= 50, (written, good)  # the 60-frame ring wrapped 20+ times


def test_online_finalize_before_any_frame_is_a_no_op():
    """A hook closed before it stored a frame (e.g. the run failed at once) must close cleanly."""
    from iondiff_stream.live.online import OnlineCentres

    est = OnlineCentres()
    assert est.finalize() is est


@pytest.mark.parametrize("worker", ["thread", "inline", "process"])
def test_sink_has_no_process_wide_side_effects(tmp_path, worker):
    """The sink changes neither the BLAS thread pools nor the interpreter's switch interval; as a context
    manager it closes itself (worker stopped, every frame written), also when the block raised."""
    import threading

    from threadpoolctl import threadpool_info

    from iondiff_stream.io.sink import FrameSink

    def blas_threads():
        return sorted(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")

    def threads():  # ours; zarr starts its own I/O loop and executor threads on first use and keeps them
        return {t for t in threading.enumerate() if t.name != "zarr_io" and not t.name.startswith("asyncio_")}

    before, switch, n_threads = blas_threads(), sys.getswitchinterval(), threads()
    rng = np.random.default_rng(0)
    with FrameSink(str(tmp_path / "s.zarr"), np.arange(1, 5), np.array([1, 1, 2, 2]), "type 1", {1: "Li", 2: "S"},
                   worker=worker, chunk_frames=8) as sink:
        for k in range(30):
            sink.push(k, 0.001 * k, rng.random((4, 3)), np.eye(3) * 10.0, images=np.zeros((4, 3), int))
        assert blas_threads() == before and sys.getswitchinterval() == switch
    assert sink.report["frames"] == 30 and threads() == n_threads
    assert FrameStoreReader(str(tmp_path / "s.zarr")).verify() == 30
    with pytest.raises(KeyboardInterrupt):
        with FrameSink(str(tmp_path / "k.zarr"), np.arange(1, 5), np.array([1, 1, 2, 2]), "type 1",
                       {1: "Li", 2: "S"}, worker=worker) as sink:
            for k in range(12):
                sink.push(k, 0.001 * k, rng.random((4, 3)), np.eye(3) * 10.0)
            raise KeyboardInterrupt
    r = FrameStoreReader(str(tmp_path / "k.zarr"))
    assert r.n_frames == 12 and r.segments[-1]["interrupted"] == "KeyboardInterrupt"
    assert sys.getswitchinterval() == switch and threads() == n_threads


def test_sink_matches_ids_unwraps_and_converts_in_batches(tmp_path):
    """Frames in LAMMPS's local order (ids shuffled, order changing mid-batch), packed image flags, a triclinic
    box, real units: stored sorted by id, unwrapped, in Å and ps, the framework centre their unwrapped mean."""
    from iondiff_stream.io.sink import FrameSink, unpack_images

    rng = np.random.default_rng(3)
    ids = np.array([3, 9, 4, 12, 7, 1])
    types = np.array([2, 1, 2, 1, 2, 1])  # sorted ids 1 3 4 7 9 12 -> types 1 2 2 2 1 1
    h = np.array([[10.0, 0, 0], [1.5, 11.0, 0], [0.5, 0.7, 12.0]])
    imax = 512
    frames = []
    with FrameSink(str(tmp_path / "b.zarr"), ids, types, "type 2", {1: "O", 2: "Li"}, units="real",
                   worker="inline", batch_frames=7) as sink:
        for k in range(25):
            if k % 6 == 0:  # LAMMPS re-sorts its atoms now and then
                order = rng.permutation(6)
            x = rng.random((6, 3)) * 10
            img = rng.integers(-3, 4, (6, 3))
            packed = (img[:, 0] + imax) | ((img[:, 1] + imax) << 10) | ((img[:, 2] + imax) << 20)
            np.testing.assert_array_equal(unpack_images(packed), img)
            frames.append((x, img))
            sink.push(10 * k, 10.0 * k, x[order], h, images=packed[order].astype(np.int32), ids=ids[order],
                      new_run=k == 0)
    r = FrameStoreReader(str(tmp_path / "b.zarr"))
    d = r.read()
    np.testing.assert_array_equal(r.ion_ids, [3, 4, 7])
    by_id = {int(i): n for n, i in enumerate(ids)}
    for k, (x, img) in enumerate(frames):
        unwrapped = x + img @ h
        np.testing.assert_allclose(d["positions"][k], unwrapped[[by_id[3], by_id[4], by_id[7]]], rtol=1e-12)
        np.testing.assert_allclose(d["framework_centre"][k], unwrapped[[by_id[1], by_id[9], by_id[12]]].mean(0),
                                   rtol=1e-12)
    np.testing.assert_allclose(d["time_ps"], 0.01 * np.arange(25))  # real units: fs -> ps
    a, b, c = (np.linalg.norm(v) for v in h)
    np.testing.assert_allclose(d["box"][0, :3], [a, b, c])
    np.testing.assert_allclose(d["box"][0, 5], np.degrees(np.arccos(h[0] @ h[1] / (a * b))))


def test_direct_chunk_writes_are_zarr_chunks(tmp_path):
    """The writer's own chunk files read back through Zarr, bit for bit, also for a ring that wraps inside a
    chunk and a store appended to in the middle of a chunk; a store of another layout is written by Zarr."""
    import zarr

    from iondiff_stream.io.store import _ChunkFiles

    X = _frames(130)
    _write(tmp_path / "r.zarr", X[:57], capacity=40, chunk_frames=16, flush_frames=5).close()
    w = FrameStoreWriter(str(tmp_path / "r.zarr"), np.arange(1, 6), ["Li"] * 5, capacity=40, chunk_frames=16,
                         mode="a")
    assert all(f is not None for f in w._files.values())
    for t in range(57, 130):
        w.append(10 * t, 0.01 * t, X[t], BOX)
    w.close()
    r = FrameStoreReader(str(tmp_path / "r.zarr"))
    np.testing.assert_array_equal(r.read()["positions"], X[130 - r.n_frames:])
    g = zarr.open_group(str(tmp_path / "r.zarr"), mode="r")
    assert g["positions"].shape[0] == 48
    slots = np.arange(130 - 48, 130) % 48
    np.testing.assert_array_equal(g["positions"][:][slots], X[130 - 48:])
    other = zarr.open_group(str(tmp_path / "o.zarr"), mode="w").create_array("p", shape=(10, 3), chunks=(5, 3),
                                                                           dtype="float64")
    assert _ChunkFiles.for_array(str(tmp_path / "o.zarr"), "p", other) is None


def test_append_many_stores_the_frames_before_a_bad_one(tmp_path):
    from iondiff_stream.core.errors import TrajectoryFormatError

    X = _frames(10)
    X[6, 2, 1] = np.nan
    w = FrameStoreWriter(str(tmp_path / "n.zarr"), np.arange(1, 6), ["Li"] * 5)
    with pytest.raises(TrajectoryFormatError, match="step 60"):
        w.append_many(np.arange(10) * 10, np.arange(10) * 0.01, X, np.broadcast_to(BOX, (10, 6)))
    w.close()
    np.testing.assert_array_equal(FrameStoreReader(str(tmp_path / "n.zarr")).read()["positions"], X[:6])


def test_missing_chunk_file_is_named_as_damage(tmp_path):
    """A deleted chunk file reads as NaN in zarr: named as store damage (file and frames), not as bad coordinates."""
    from iondiff_stream.core.errors import StoreCorruptError

    p = tmp_path / "z.zarr"
    _write(p, _frames(50), chunk_frames=20).close()
    (p / "positions" / "c.1.0.0").unlink()
    r = FrameStoreReader(str(p))
    r.read(0, 20)  # other chunks still read
    with pytest.raises(StoreCorruptError, match=r"store damaged: missing chunk positions/c\.1\.0\.0 \(frames 20-39\)"):
        r.read(0, 50)
    with pytest.raises(StoreCorruptError, match="missing chunk"):
        r.verify()


def _store_contents(path):
    r = FrameStoreReader(str(path))
    d = r.read(names=("positions", "framework_centre", "step", "time_ps", "box", "wall_s")
               + (("framework",) if "framework" in r.group else ()))
    c = r.commit
    return d, [dict(s) for s in r.segments], (c.n_frames, c.first_frame, c.n_skipped_duplicates,
                                             c.n_run_boundary_repeats, c.n_step_gaps)


@pytest.mark.parametrize("capacity", [None, 45])
def test_block_appends_equal_frame_by_frame(tmp_path, capacity):
    """append_many's block path (runs of regular frames at once, split at chunk ends) writes the same store as
    frame-by-frame appends: through chunk ends, a new run repeating its first step, a timestep reset, a gap
    in the steps, a restart that repeats stored steps, and a ring that wraps."""
    X = _frames(160)
    steps = np.concatenate([np.arange(0, 700, 10), np.arange(690, 900, 10), np.arange(0, 100, 10),
                            np.arange(130, 720, 10)])
    new_run = np.zeros(160, bool)
    new_run[70] = True  # `run` after `run`: its first frame repeats step 690
    box = np.broadcast_to(np.array([10, 10, 10, 90, 90, 90.0]), (160, 6))
    fw = X.mean(1) + 1.0
    kw = dict(capacity=capacity, chunk_frames=16, flush_frames=None)

    def one(path, blocks):
        for session in (slice(0, 120), slice(110, 160)):  # the second session repeats 10 stored frames
            w = FrameStoreWriter(str(path), np.arange(1, 6), ["Li"] * 5, mode="a", **kw)
            k = session.start
            while k < session.stop:
                m = min(blocks(k), session.stop - k)
                sl = slice(k, k + m)
                if m == 1:
                    w.append(int(steps[k]), steps[k] * 0.001, X[k], box[k], fw[k], new_run=bool(new_run[k]))
                else:
                    w.append_many(steps[sl], steps[sl] * 0.001, X[sl], box[sl], fw[sl], new_run[sl],
                                  wall_s=np.zeros(m))
                k += m
            w.close()
        return _store_contents(path)

    rng = np.random.default_rng(5)
    d1, s1, c1 = one(tmp_path / "frames.zarr", lambda k: 1)
    d2, s2, c2 = one(tmp_path / "blocks.zarr", lambda k: int(rng.integers(2, 40)))
    assert c1 == c2 and s1 == s2
    assert c1[2] == 10 and c1[3] == 1 and c1[4] >= 1  # duplicates skipped, run repeat, the step gap
    if capacity is None:  # (a ring keeps the segments of the frames it still holds)
        assert [s["started_by"] for s in s1] == ["start", "new run", "timestep reset"]
    for k in ("positions", "framework_centre", "step", "time_ps", "box"):
        np.testing.assert_array_equal(d1[k], d2[k])


def test_unwrap_block_equals_frame_by_frame():
    """unwrap_block (shifts from the block's first frame, corrected where flags change) = x + n·h per frame."""
    from iondiff_stream.io.sink import unpack_images, unwrap_block, unwrap_with_images

    rng = np.random.default_rng(8)
    m, r = 30, 40
    x = rng.random((m, r, 3)) * 10
    img = np.repeat(rng.integers(-4, 5, (1, r, 3)), m, axis=0)
    for _ in range(12):  # some atoms cross the box mid-block
        img[rng.integers(1, m):, rng.integers(r), rng.integers(3)] += rng.choice([-1, 1])
    packed = ((img[..., 0] + 512) | ((img[..., 1] + 512) << 10) | ((img[..., 2] + 512) << 20)).astype(np.int32)
    for h in (np.diag([10.0, 11.0, 12.0]), np.array([[10.0, 0, 0], [1.5, 11.0, 0], [0.5, -0.7, 12.0]])):
        naive = np.stack([x[k] + img[k] @ h for k in range(m)])
        np.testing.assert_allclose(unwrap_block(x, packed, h), naive, rtol=0, atol=1e-12)
        np.testing.assert_allclose(unwrap_block(x, img, h), naive, rtol=0, atol=1e-12)
        np.testing.assert_allclose(unwrap_with_images(x, unpack_images(packed), h), naive, rtol=0, atol=1e-12)
    y = x.copy()
    assert unwrap_block(y, packed, h, in_place=True) is y
    np.testing.assert_allclose(y, naive, rtol=0, atol=1e-12)
    same = np.repeat(packed[:1], m, axis=0)  # no atom crosses: one shift per atom
    np.testing.assert_allclose(unwrap_block(x, same, h), x + unpack_images(packed[0]) @ h, rtol=0, atol=1e-12)


@pytest.mark.parametrize("worker", ["inline", "thread", "process"])
def test_sink_blocks_equal_frames(tmp_path, worker):
    """Frames handed over in blocks (the hook's path: one atom order per block, reused arrays) are stored as
    the same frames pushed one at a time, by every worker."""
    from iondiff_stream.io.sink import FrameSink

    rng = np.random.default_rng(4)
    ids = np.array([3, 9, 4, 12, 7, 1])
    types = np.array([2, 1, 2, 1, 2, 1])
    h = np.array([[10.0, 0, 0], [1.5, 11.0, 0], [0.5, 0.7, 12.0]])
    X = rng.random((40, 6, 3)) * 10
    img = rng.integers(-2, 3, (40, 6, 3))
    packed = ((img[..., 0] + 512) | ((img[..., 1] + 512) << 10) | ((img[..., 2] + 512) << 20)).astype(np.int32)
    orders = [rng.permutation(6) for _ in range(4)]
    kw = dict(units="real", worker=worker, batch_frames=6)
    with FrameSink(str(tmp_path / "f.zarr"), ids, types, "type 2", {1: "O", 2: "Li"}, **kw) as sink:
        for k in range(40):
            o = orders[k // 10]
            sink.push(10 * k, 10.0 * k, X[k][o], h, images=packed[k][o], ids=ids[o], new_run=k == 0)
    buf_x, buf_i = np.empty((10, 6, 3)), np.empty((10, 6), np.int32)
    with FrameSink(str(tmp_path / "b.zarr"), ids, types, "type 2", {1: "O", 2: "Li"}, **kw) as sink:
        for b in range(4):
            o = orders[b]
            xs, ims = (buf_x, buf_i) if worker == "inline" else (np.empty((10, 6, 3)), np.empty((10, 6), np.int32))
            xs[:] = X[10 * b:10 * b + 10][:, o]
            ims[:] = packed[10 * b:10 * b + 10][:, o]
            k = np.arange(10 * b, 10 * b + 10)
            sink.push_block(10 * k, 10.0 * k, xs, h, images=ims, ids=ids[o], new_run=k == 0)
    d1, s1, c1 = _store_contents(tmp_path / "f.zarr")
    d2, s2, c2 = _store_contents(tmp_path / "b.zarr")
    assert c1 == c2 and c1[0] == 40 and len(s1) == len(s2) == 1
    for k in ("positions", "framework_centre", "framework", "step", "time_ps", "box"):
        np.testing.assert_array_equal(d1[k], d2[k])


@pytest.mark.parametrize("bits,img_dtype,triclinic", [(10, np.int32, True), (10, np.int32, False),
                                                       (21, np.int64, True)])
def test_block_kernel_equals_naive_unwrap_and_numpy_sink(tmp_path, bits, img_dtype, triclinic):
    """The C block kernel (``iondiff_stream.io._blocks``): rows picked from LAMMPS's order, unwrapped with packed
    image flags and scaled equal a naive per-atom loop; a sink using it stores what the NumPy sink stores
    (positions to 1e-12, framework float32 positions bit for bit, the framework centre)."""
    from iondiff_stream.io import sink as sink_mod
    from iondiff_stream.io.sink import FrameSink

    if sink_mod._blocks is None:
        pytest.skip("iondiff_stream.io._blocks was not built (no C compiler)")
    rng = np.random.default_rng(11)
    m, n = 9, 13
    h = np.array([[10.0, 0, 0], [1.5, 11.0, 0], [0.5, -0.7, 12.0]]) if triclinic else np.diag([10.0, 11.0, 12.0])
    imax = 1 << (bits - 1)
    x = rng.random((m, n, 3)) * 10
    img = rng.integers(-40, 41, (m, n, 3))
    packed = ((img[..., 0] + imax) | ((img[..., 1] + imax) << bits) | ((img[..., 2] + imax) << (2 * bits))).astype(img_dtype)
    rows = np.array([7, 2, 11, 0, 5], np.int64)
    out = np.empty((m, len(rows), 3))
    out32 = np.empty((m, len(rows), 3), np.float32)
    centre = np.empty((m, 3))
    sink_mod._blocks.unwrap_rows(x, packed, rows, h, bits, 0.5, out, centre)
    sink_mod._blocks.unwrap_rows(x, packed, rows, h, bits, 0.5, out32, None)
    naive = np.empty_like(out)
    for k in range(m):
        for j, a in enumerate(rows):
            naive[k, j] = 0.5 * (x[k, a] + sum(img[k, a, d] * h[d] for d in range(3)))
    np.testing.assert_allclose(out, naive, rtol=1e-13, atol=1e-12)
    np.testing.assert_array_equal(out32, out.astype(np.float32))
    np.testing.assert_allclose(centre, naive.mean(1), rtol=1e-13, atol=1e-12)
    with pytest.raises(IndexError, match="row 13 out of range"):
        sink_mod._blocks.unwrap_rows(x, packed, np.array([13]), h, bits, 1.0, None, None)
    with pytest.raises(TypeError, match="images must be int32 or int64"):
        sink_mod._blocks.unwrap_rows(x, packed.astype(np.float64), rows, h, bits, 1.0, None, None)
    # the sink with and without it: same store
    ids = np.array([3, 9, 4, 12, 7, 1, 20, 15, 8, 30, 2, 6, 11])
    types = np.array([2, 1, 2, 1, 2, 1, 2, 1, 1, 2, 1, 2, 1])
    order = rng.permutation(n)
    stores = {}
    for compiled in (True, False):
        path = tmp_path / f"{compiled}.zarr"
        with FrameSink(str(path), ids, types, "type 2", {1: "O", 2: "Li"}, units="real", worker="inline",
                       compiled=compiled) as sink:
            assert sink.compiled is compiled
            k = np.arange(m)
            sink.push_block(10 * k, 10.0 * k, np.ascontiguousarray(x[:, order]), h,
                            images=np.ascontiguousarray(packed[:, order]), image_bits=bits, ids=ids[order],
                            new_run=k == 0)
        stores[compiled] = _store_contents(path)
    (d1, s1, c1), (d2, s2, c2) = stores[True], stores[False]
    assert c1 == c2 and c1[0] == m and s1 == s2
    np.testing.assert_allclose(d1["positions"], d2["positions"], rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(d1["framework_centre"], d2["framework_centre"], rtol=1e-13, atol=1e-12)
    np.testing.assert_array_equal(d1["framework"], d2["framework"])
    by_id = {int(i): c for c, i in enumerate(ids)}
    li = sorted(int(i) for i, t in zip(ids, types) if t == 2)
    want = np.stack([x[:, by_id[i]] + img[:, by_id[i]] @ h for i in li], axis=1)
    np.testing.assert_allclose(d1["positions"], want, rtol=1e-12)  # real units: Å already


def test_scatter_rows_equals_numpy_scatter():
    """An MPI rank's atoms of a batch of frames into rows sorted by id, in C (``_blocks.scatter_rows``), equal the
    NumPy scatter; ids not among the rows (atoms created later) are counted and left out; two ranks' halves sum to
    the whole frames with every atom present once."""
    from iondiff_stream.io import sink as sink_mod

    if sink_mod._blocks is None or not hasattr(sink_mod._blocks, "scatter_rows"):
        pytest.skip("iondiff_stream.io._blocks was not built (no C compiler)")
    rng = np.random.default_rng(5)
    all_ids = np.array([2, 5, 6, 9, 14, 15, 21, 30], np.int64)
    m, N = 4, len(all_ids)
    X = rng.random((m, N, 3))
    IMG = rng.integers(1, 2**30, (m, N))
    owner = rng.integers(0, 2, (m, N))  # which rank holds each atom in each frame
    outs = []
    for rank in range(2):
        ids, pos, img, counts = [], [], [], []
        for k in range(m):
            sel = rng.permutation(np.flatnonzero(owner[k] == rank))  # in LAMMPS's local order
            extra = [99] if k == 1 and rank == 1 else []  # an atom created after attach
            ids.append(np.concatenate([all_ids[sel], extra]).astype(np.int32))
            pos.append(np.concatenate([X[k, sel], rng.random((len(extra), 3))]))
            img.append(np.concatenate([IMG[k, sel], np.full(len(extra), 7, np.int64)]))
            counts.append(len(sel) + len(extra))
        ids, pos, img = np.concatenate(ids), np.concatenate(pos), np.concatenate(img)
        out_x, out_aux = np.zeros((m + 2, N, 3)), np.zeros((2, m + 2, N), np.int64)
        unknown = sink_mod._blocks.scatter_rows(ids, pos, img, np.array(counts, np.int64), all_ids, out_x, out_aux)
        assert unknown == (1 if rank == 1 else 0)
        # the NumPy scatter of the hook's fallback
        ref_x, ref_aux = np.zeros_like(out_x), np.zeros_like(out_aux)
        frame = np.repeat(np.arange(m), counts)
        rows = np.minimum(np.searchsorted(all_ids, ids), N - 1)
        known = all_ids[rows] == ids
        ref_x[frame[known], rows[known]] = pos[known]
        ref_aux[0, frame[known], rows[known]], ref_aux[1, frame[known], rows[known]] = img[known], 1
        np.testing.assert_array_equal(out_x, ref_x)
        np.testing.assert_array_equal(out_aux, ref_aux)
        outs.append((out_x, out_aux))
    total_x, total_aux = outs[0][0] + outs[1][0], outs[0][1] + outs[1][1]
    np.testing.assert_array_equal(total_x[:m], X)
    np.testing.assert_array_equal(total_aux[0, :m], IMG)
    assert (total_aux[1, :m] == 1).all() and not total_aux[:, m:].any()
    with pytest.raises(ValueError, match="add up to"):
        sink_mod._blocks.scatter_rows(ids, pos, img, np.array([1], np.int64), all_ids, out_x, out_aux)


def test_store_with_slash_chunk_keys_reads_and_appends(tmp_path, monkeypatch):
    """A store written with "/" chunk keys (``c/i/0/0``, before :data:`CHUNK_SEPARATOR` became ".") is read and
    appended to in its own layout; a new store gets ``c.i.0.0`` files and no chunk directories."""
    from iondiff_stream.io import store as store_mod

    X = _frames(70)
    monkeypatch.setattr(store_mod, "CHUNK_SEPARATOR", "/")
    _write(tmp_path / "old.zarr", X[:33], chunk_frames=16).close()
    monkeypatch.undo()
    assert (tmp_path / "old.zarr" / "positions" / "c" / "1" / "0" / "0").is_file()
    w = FrameStoreWriter(str(tmp_path / "old.zarr"), np.arange(1, 6), ["Li"] * 5, chunk_frames=16, mode="a")
    assert all(f is not None and f.sep == "/" for f in w._files.values())
    for t in range(33, 70):
        w.append(10 * t, 0.01 * t, X[t], BOX)
    w.close()
    r = FrameStoreReader(str(tmp_path / "old.zarr"))
    np.testing.assert_array_equal(r.read()["positions"], X)
    assert r.verify() == 70 and not list((tmp_path / "old.zarr" / "positions").glob("c.*"))
    _write(tmp_path / "new.zarr", X, chunk_frames=16).close()
    names = sorted(p.name for p in (tmp_path / "new.zarr" / "positions").iterdir())
    assert names == ["c.0.0.0", "c.1.0.0", "c.2.0.0", "c.3.0.0", "c.4.0.0", "zarr.json"]
    np.testing.assert_array_equal(FrameStoreReader(str(tmp_path / "new.zarr")).read()["positions"], X)
