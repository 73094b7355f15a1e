"""README and docs/: the README stays a front door, the docs build strictly, every example runs as written.

* every fenced ```python block of README.md and docs/*.md runs (blocks of one file in order, one
  namespace, in a temporary directory), on the synthetic data the examples make themselves;
* every ``iondiff-stream ...`` command in a fenced shell block or an inline code span names an existing
  subcommand and only options that subcommand lists in its ``--help`` (no hidden aliases);
* ``make X`` in the docs names a Makefile target;
* ``mkdocs build --strict`` (warnings are errors: broken links and anchors, API reference pages that
  fail to render) succeeds.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from iondiff_stream import cli

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```", re.S | re.M)
SHELL = {"sh", "bash", "shell", "console"}


def blocks(path: Path, langs: set[str]) -> list[str]:
    return [body for lang, body in FENCE.findall(path.read_text()) if lang in langs]


def python_files() -> list[Path]:
    return [p for p in DOC_FILES if blocks(p, {"python"})]


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    # the two set-up commands, exactly
    setup = [b for b in blocks(ROOT / "README.md", SHELL) if "make " in b][0]
    assert [ln.split()[1] for ln in setup.splitlines() if ln.startswith("make ")] == ["demo", "test"]
    for heading in ("Quick start 1", "Quick start 2", "Quick start 3", "What comes out", "Where to read more"):
        assert f"## {heading}" in text
    # no history notes or raw validation tables in the front door
    assert "Was 6.8 s" not in text and "| hops/ref |" not in text
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / link).exists(), link


def test_validation_tables_moved_verbatim():
    """Every validation table of the old README is in docs/validation.md (kept whole, for easy merges)."""
    v = (ROOT / "docs" / "validation.md").read_text()
    for header in ("| run | ions, frames, Δt | sites | hops (default) |", "| T (K) | sites | hops | ref | hops/ref |",
                   "| CaF2 | hops | hops in groups: observed / null (± std) |", "| Li6PS5Cl 500 K | ours: D*, 95 % interval",
                   "| Li6PS5Cl run1 | T5 / T4 / T2 % (ours) |", "| run | T (K) | VDOS from | T_kin (K) |",
                   "| check (script) | result |"):
        assert header in v, header


@pytest.mark.parametrize("path", python_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python_examples_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for i, code in enumerate(blocks(path, {"python"})):
        exec(compile(code, f"{path.name} (python block {i + 1})", "exec"), namespace)  # noqa: S102


def _commands() -> dict:
    group = typer.main.get_command(cli.app)
    return dict(group.commands)  # type: ignore[attr-defined]


def _visible_flags(cmd) -> set[str]:
    out = set()
    for p in cmd.params:
        if p.param_type_name == "option" and not p.hidden:  # typer vendors click: no isinstance
            out.update(p.opts)
            out.update(p.secondary_opts)
    return out | {"-h", "--help"}


def _shell_commands() -> list[tuple[str, str]]:
    found = []
    for path in DOC_FILES:
        text = path.read_text()
        for body in blocks(path, SHELL):
            for line in body.splitlines():
                line = line.split(" #", 1)[0].strip()
                if line.startswith(("iondiff-stream", "make ")):
                    found.append((path.name, line))
        for span in re.findall(r"`(iondiff-stream [^`]+)`", text):
            found.append((path.name, span))
    return found


def test_shell_examples_use_existing_commands_and_flags():
    commands = _commands()
    makefile = (ROOT / "Makefile").read_text()
    root_flags = {"--version", "--debug", "-h", "--help"}
    checked = 0
    for where, line in _shell_commands():
        words = shlex.split(line.replace(">>", " ").replace(">", " "), comments=True)
        if words[0] == "make":
            for target in words[1:]:
                assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"{where}: make {target}: no such target"
            continue
        args = words[1:]
        if not args or args[0].startswith("-"):
            assert set(args) <= root_flags, f"{where}: {line}"
            continue
        sub = args[0]
        if sub.isupper() or sub.startswith("..."):  # a placeholder such as COMMAND
            continue
        assert sub in commands, f"{where}: {line}: no command {sub!r}"
        flags = _visible_flags(commands[sub])
        for a in args[1:]:
            if a.startswith("-") and not re.fullmatch(r"-\d.*", a):
                name = a.split("=", 1)[0]
                if sub == "run" and name in ("-var", "-v"):  # LAMMPS's own -var NAME VALUE
                    continue
                assert name in flags, f"{where}: {line}: {sub} has no option {name} (see: iondiff-stream {sub} -h)"
        checked += 1
    assert checked >= 15


def test_docs_build_strictly(tmp_path):
    for mod in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} is not installed (it is in the 'test' extra: pip install -e '.[test]')")
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                        "-d", str(site)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "WARNING" not in r.stderr, r.stderr[-4000:]
    api = (site / "api" / "index.html").read_text()
    for name in ("analyze_run", "RunAnalysis", "HopTable", "to_pandas", "HopResults", "analyse_transport",
                 "TransportResult", "concerted_groups", "FrameStoreWriter", "FrameStoreReader", "OnlineCentres"):
        assert name in api, name
    assert "Analyse one run" in api  # docstrings rendered, not just names
    assert (site / "validation" / "index.html").exists()
