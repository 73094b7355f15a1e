"""The house's direction (issue 18): layers import downward only, and no module import circle.

Layers, bottom up: ``core`` → ``synthetic`` → ``io`` → ``model`` → ``analysis`` → ``pipeline`` → ``outputs`` →
``live`` → the interfaces (``cli``, ``monitor``, ``live_page``, ``database``, ``demo``, ``lammps_hooks``). Every
``import`` of the package is read from the source (module level and inside functions alike: a lazy import for
start-up time is fine, but only downward).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RANK = {"core": 0, "synthetic": 1, "io": 2, "model": 3, "analysis": 4, "pipeline": 5, "outputs": 6, "live": 7}
TOP = 8  # cli, monitor, live_page, database, demo, the package's own __init__, lammps_hooks


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in ("iondiff_stream", "lammps_hooks"):
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _rank(module: str) -> int:
    parts = module.split(".")
    if parts[0] == "lammps_hooks" or len(parts) == 1:
        return TOP
    return RANK.get(parts[1], TOP)


def _imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a TYPE_CHECKING block) of every package import in a file."""
    tree = ast.parse(path.read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in ast.walk(node):
                typing_only.add(id(sub))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from pkg import submodule" imports the submodule
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                     for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in ("iondiff_stream", "lammps_hooks"):
                out.append((name, node.lineno, id(node) in typing_only))
    return out


def test_imports_go_downward_only():
    modules = _modules()
    upward = []
    for mod, path in modules.items():
        for target, line, typing_only in _imports(path, modules):
            if _rank(target) > _rank(mod) and not typing_only:
                upward.append(f"{path.relative_to(ROOT)}:{line} {mod} -> {target}")
    assert not upward, "imports going up a layer:\n" + "\n".join(upward)


def test_no_import_circle():
    modules = _modules()
    graph = {m: sorted({t for t, _, typing_only in _imports(p, modules) if t in modules and t != m and not typing_only})
             for m, p in modules.items()}
    # a package's __init__ re-exporting its submodules is not a circle through them
    for m in graph:
        graph[m] = [t for t in graph[m] if not (m.startswith(t + ".") and modules[t].name == "__init__.py")]
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in graph[m]:
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_layer_folders_exist():
    for layer in RANK:
        assert os.path.isfile(ROOT / "iondiff_stream" / layer / "__init__.py"), layer
