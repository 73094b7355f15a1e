"""Command-line conventions: --version, -h, help on every option, one name per concept, quiet third parties,
log records printed outside the progress bar."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import pytest
import typer

import iondiff_stream
from iondiff_stream import cli
from iondiff_stream.core import progress
from iondiff_stream.core.quiet import THIRD_PARTY_MESSAGES, quiet_third_party

ROOT = Path(__file__).resolve().parents[1]
THIRD_PARTY = re.compile(r"netCDF4|pkg_resources|setuptools|distutils|zarr|Zarr|MDAnalysis|FutureWarning|UserWarning")


def commands() -> dict:
    return dict(typer.main.get_command(cli.app).commands)


def run_main(args, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(list(args))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_version_is_the_package_version(capsys):
    code, out, _ = run_main(["--version"], capsys)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert code == 0 and out.strip() == f"iondiff-stream {iondiff_stream.__version__}"
    assert iondiff_stream.__version__ == pyproject


def test_version_as_a_program():
    r = subprocess.run([sys.executable, "-m", "iondiff_stream.cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"iondiff-stream {iondiff_stream.__version__}" and not r.stderr


@pytest.mark.parametrize("name", ["", *sorted(commands())])
def test_h_is_help_everywhere(name, capsys):
    args = [name, "-h"] if name else ["-h"]
    code, out, err = run_main(args, capsys)
    assert code == 0, err
    assert "Usage" in out and "--help" in out and "-h" in out
    _, long_out, _ = run_main([*args[:-1], "--help"], capsys)
    assert long_out == out


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_option_and_argument_has_help(name):
    cmd = commands()[name]
    assert (cmd.help or "").strip(), f"{name}: no description"
    for p in cmd.params:
        if p.param_type_name in ("option", "argument") and not getattr(p, "hidden", False):
            assert (getattr(p, "help", None) or "").strip(), f"{name} {p.opts}: no help text"


def test_verbose_means_the_same_everywhere():
    seen = 0
    for name, cmd in commands().items():
        for p in cmd.params:
            if "--verbose" in p.opts:
                assert p.help.startswith(cli._VERBOSE_HELP), name
                seen += 1
    assert seen >= 5


def test_one_name_per_concept():
    """No visible option is the plural (or singular) of another one; old names live on as hidden aliases."""
    names: dict[str, set[str]] = {}
    for name, cmd in commands().items():
        for p in cmd.params:
            if p.param_type_name == "option" and not p.hidden:
                for o in p.opts:
                    if o.startswith("--"):
                        names.setdefault(o, set()).add(name)
    clashes = [o for o in names if o + "s" in names]
    assert not clashes, {o: (names[o], names[o + "s"]) for o in clashes}
    arr = {p.opts[0]: p for p in commands()["arrhenius"].params}
    assert "--temperature" in arr and arr["--temperatures"].hidden


@pytest.mark.parametrize("args, expected", [
    (["--temperature", "1300,1500"], [1300.0, 1500.0]),
    (["--temperature", "1300", "--temperature", "1500"], [1300.0, 1500.0]),
    (["--temperatures", "1300,1500"], [1300.0, 1500.0]),  # the old name, hidden
    ([], None),
])
def test_arrhenius_temperature_names(args, expected, monkeypatch, capsys, tmp_path):
    seen = {}

    def fake(runs, temps, plot):
        seen["temps"] = temps
        return {"runs": runs}

    monkeypatch.setattr("iondiff_stream.outputs.report.arrhenius_across_runs", fake)
    code, _, err = run_main(["arrhenius", str(tmp_path), str(tmp_path), *args], capsys)
    assert code == 0, err
    assert seen["temps"] == expected


def test_quiet_third_party_is_narrow():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()
        for category, message in THIRD_PARTY_MESSAGES:
            warnings.warn(message.replace("\\(.*\\)", "(|S5)").replace("\\", ""), category, stacklevel=1)
        warnings.warn("a warning of our own", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a warning of our own"]
    # the log filter drops one message of one logger only
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    amber = logging.getLogger("MDAnalysis.coordinates.AMBER")
    amber.addHandler(handler)
    try:
        amber.warning("netCDF4 is not available. Writing AMBER ncdf files will be slow.")
        amber.warning("something else")
    finally:
        amber.removeHandler(handler)
    assert stream.getvalue() == "something else\n"


def test_library_import_keeps_warnings():
    """Importing the package installs no filter: a library user sees every warning."""
    code = ("import warnings, iondiff_stream, iondiff_stream.pipeline.run; "
            "print(any('pkg_resources' in str(f[1]) for f in warnings.filters))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


def test_analyze_and_report_print_no_third_party_warning(tmp_path):
    from iondiff_stream.synthetic.runs import make_run

    make_run(n_frames=600, framework=True, seed=3).write_lammps(str(tmp_path / "run.dump"), str(tmp_path / "run.data"))
    r = subprocess.run([sys.executable, "-m", "iondiff_stream.cli", "analyze", str(tmp_path / "run.dump"),
                        "--topology", str(tmp_path / "run.data"), "--mobile", "Li", "--md-timestep-ps", "0.005",
                        "--out", str(tmp_path / "out"), "--report"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r2 = subprocess.run([sys.executable, "-m", "iondiff_stream.cli", "report", str(tmp_path / "out")],
                        capture_output=True, text=True)
    assert r2.returncode == 0, r2.stderr
    for line in (r.stderr + r2.stderr).splitlines():
        assert line.startswith("WARNING iondiff_stream.") or not line.strip(), line
        assert not THIRD_PARTY.search(line.split(":", 1)[0]), line


@pytest.mark.slow
def test_demo_prints_no_third_party_warning(tmp_path):
    """``make demo`` (its 4 ps version): every stderr line is the package's own."""
    r = subprocess.run([sys.executable, "-m", "iondiff_stream.demo", "--quick", "--out", str(tmp_path / "demo")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    for line in r.stderr.splitlines():
        assert line.startswith("WARNING iondiff_stream.") or not line.strip(), line


@pytest.fixture
def root_logging():
    """The root logger without pytest's capture handlers while the test body sets up logging (restored after)."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level

    class Bare:
        def __enter__(self):
            root.handlers = []
            return root

        def __exit__(self, *exc):
            root.handlers, root.level = saved[0][:], saved[1]

    yield Bare()
    root.handlers, root.level = saved[0], saved[1]


def test_logging_goes_through_rich_on_a_terminal(monkeypatch, root_logging):
    from rich.console import Console
    from rich.logging import RichHandler

    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    monkeypatch.setattr(progress, "_CONSOLE", console)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    with root_logging as root:
        cli._setup_logging(False)
        (handler,) = root.handlers
        assert isinstance(handler, RichHandler) and handler.console is progress.stderr_console()
        with progress.RunProgress({"read": 1.0, "hops": 1.0}, enabled=True) as run:
            progress.stage("read", 10).advance(5)
            logging.getLogger("iondiff_stream.test").warning("a warning during the run")
            progress.stage("hops", 10).finish()
            assert run.completed > 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", console.file.getvalue())
    lines = [ln for ln in text.splitlines() if "a warning during the run" in ln]
    assert lines and all("ETA" not in ln and "━" not in ln for ln in lines)  # its own line, not inside the bar


def test_logging_is_plain_lines_when_not_a_terminal(monkeypatch, root_logging):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    with root_logging as root:
        cli._setup_logging(True)
        (handler,) = root.handlers
        assert type(handler) is logging.StreamHandler and root.level == logging.INFO
