import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout; IONDIFF_SHARED_DATA points elsewhere (a worktree kept away from it)
SHARED = Path(os.environ.get("IONDIFF_SHARED_DATA") or (ROOT / ".." / "shared" / "data")).resolve()


def shared(*parts: str) -> str:
    """Path of a file in ../shared/data; skipped where it is absent, except in CI (CI=true), where it fails."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"shared data missing in CI: {p}")
        pytest.skip(f"shared data not present: {p}")
    return str(p)


@pytest.fixture(scope="session")
def argyrodite_50p() -> list[str]:
    base = shared("argyrodite_Li6PS5Cl_morgan2021", "data", "Li6PS5Cl", "50p")
    return [os.path.join(base, f"run{i}", "actual_XDATCAR.gz") for i in range(1, 7)]


@pytest.fixture(scope="session", autouse=True)
def _no_lammps_log_litter():
    """LAMMPS instances that tests open without ``-log`` write ``log.lammps`` into the current directory
    (like ``lmp -in``); remove one the tests left in the checkout (never a file that was there before)."""
    import os

    existed = os.path.exists("log.lammps")
    yield
    if not existed and os.path.exists("log.lammps"):
        os.remove("log.lammps")


def example_module(folder: str, name: str):
    """``examples/FOLDER/NAME.py`` loaded as a module (its folder on the path for its own imports)."""
    import importlib.util
    import sys

    d = Path(__file__).resolve().parents[1] / "examples" / folder
    if str(d) not in sys.path:
        sys.path.insert(0, str(d))
    spec = importlib.util.spec_from_file_location(f"{folder}_{name}", d / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
