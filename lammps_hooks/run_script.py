"""Run an unmodified LAMMPS input script with the iondiff_stream hook attached.

The script is executed up to its first top-level ``run`` (or ``minimize``) command, the hook is attached
there (box and atoms exist by then), and the rest of the script follows. Commands inside ``include``
files and ``jump``/``label`` loops that span the attachment point are not supported; put the first
``run`` in the main script.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

from iondiff_stream.errors import IonDiffStreamError, TrajectoryFileNotFoundError

from .fix_external import attach, load_lammps

logger = logging.getLogger(__name__)

__all__ = ["run_script", "split_at_first_run"]


def split_at_first_run(text: str) -> tuple[str, str]:
    """Split an input script before its first top-level ``run``/``minimize`` command.

    Continuation lines (``&``) are kept together.
    """
    lines = text.splitlines(keepends=True)
    logical_start = 0
    cont = False
    for i, line in enumerate(lines):
        if not cont:
            logical_start = i
        body = line.split("#", 1)[0].rstrip()
        cont = body.endswith("&")
        if cont:
            continue
        first = lines[logical_start].split("#", 1)[0].strip()
        if re.match(r"^(run|minimize|min_modify\s+\S+\s*;?\s*minimize)\b", first):
            return "".join(lines[:logical_start]), "".join(lines[logical_start:])
    raise IonDiffStreamError("the input script has no top-level 'run' or 'minimize' command to attach before")


def run_script(
    script: str,
    mobile: str,
    store: str,
    every: int = 10,
    variables: dict[str, str] | None = None,
    capacity: int | None = None,
    chunk_frames: int = 100,
    log: str | None = None,
    comm: Any = None,
) -> dict[str, Any]:
    """Run ``script`` with the hook; returns a small report (steps/s, frames, hops seen live)."""
    if not os.path.exists(script):
        raise TrajectoryFileNotFoundError(f"LAMMPS input script not found: {script}")
    with open(script) as fh:
        head, tail = split_at_first_run(fh.read())
    args = ["-log", log or "none", "-screen", "none"]
    for k, v in (variables or {}).items():
        args += ["-var", k, str(v)]
    lmp = load_lammps(args, comm=comm)
    cwd = os.getcwd()
    os.chdir(os.path.dirname(os.path.abspath(script)))  # relative paths in the script
    try:
        lmp.commands_string(head)
        os.chdir(cwd)
        hook = attach(lmp, mobile, every=every, store=os.path.abspath(store) if not os.path.isabs(store) else store,
                      capacity=capacity, chunk_frames=chunk_frames, comm=comm)
        os.chdir(os.path.dirname(os.path.abspath(script)))
        t0 = time.perf_counter()
        lmp.commands_string(tail)
        wall = time.perf_counter() - t0
    finally:
        os.chdir(cwd)
    report = hook.close()
    steps = int(lmp.extract_global("ntimestep"))
    out = {"steps": steps, "wall_s": wall, "frames_pushed": hook.n_calls, **report}
    lmp.close()
    return out
