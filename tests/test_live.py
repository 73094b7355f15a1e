"""The live hop count of a store, in the watcher's process: grows while the writer writes; equals the
offline analysis of the store, hop for hop, once the writer has closed it (same functions, same frames)."""

from __future__ import annotations

import numpy as np

from iondiff_stream.pipeline.run import analyze_run
from iondiff_stream.io.store import FrameStoreWriter
from iondiff_stream.live.hops import LiveHops, writer_alive
from iondiff_stream.monitor import status
from iondiff_stream.synthetic.runs import make_run


def test_live_count_grows_and_ends_equal_to_offline(tmp_path):
    run = make_run(n_frames=1500, sigma_A=0.15, hop_prob=2e-3, n_chains=0, seed=3)
    X = run.positions.transpose(1, 0, 2)  # (T, n, 3)
    n = X.shape[1]
    store = str(tmp_path / "live.zarr")
    w = FrameStoreWriter(store, np.arange(1, n + 1), ["Li"] * n, chunk_frames=50, flush_seconds=None)
    live = LiveHops(store)
    seen = []
    dt = float(run.times_ps[1] - run.times_ps[0])
    for t in range(len(X)):
        w.append(t, t * dt, X[t], run.box)
        if (t + 1) % 250 == 0:
            w.flush()
            assert writer_alive(store)
            live.update()
            assert not live.final_
            seen.append((live.n_frames_, int(live.hops_.sum())))
    assert seen[0][0] == 0 or seen[0][0] >= 200  # nothing counted before the warm-up
    frames = [f for f, _ in seen]
    hops = [h for _, h in seen]
    assert frames == sorted(frames) and frames[-1] >= 1000  # counted while written
    assert hops[-1] > hops[1] > 0
    w.close()
    assert not writer_alive(store)
    live.update()
    assert live.final_
    off = analyze_run(store, "Li")
    assert int(live.hops_.sum()) == off.summary["n_hops"]  # exactly: the same analysis of the same frames
    st = status(store)  # a one-shot monitor of the closed store says the same
    assert st["hops"] == off.summary["n_hops"] and st["live_final"]
    assert st["site_check"]["site_check"] == off.summary["site_check"]
