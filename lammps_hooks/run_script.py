"""Run an unmodified LAMMPS input script with the iondiff_stream hook attached.

The script is executed up to its first top-level ``run`` (or ``minimize``) command, the hook is attached
there (box and atoms exist by then), and the rest of the script follows. Commands inside ``include``
files and ``jump``/``label`` loops that span the attachment point are not supported; put the first
``run`` in the main script.

Like ``lmp -in SCRIPT``: relative paths in the script are relative to the current directory (no
change of directory), LAMMPS's screen output (thermo) is shown, and ``log.lammps`` is written in the
current directory. Every ``run`` becomes a segment of the store.
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
    log: str | None = "log.lammps",
    comm: Any = None,
    quiet: bool = False,
    mode: str = "w",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run ``script`` with the hook; returns a small report (steps/s, frames, segments, hops seen live).

    Parameters
    ----------
    script : str
        LAMMPS input script, unmodified.
    mobile, store, every, capacity, chunk_frames
        See :func:`lammps_hooks.fix_external.attach`.
    variables : dict, optional
        ``-var NAME VALUE`` pairs.
    log : str or None
        LAMMPS log file (``"log.lammps"`` like ``lmp``; None: no log).
    quiet : bool
        Hide LAMMPS's screen output.
    mode, overwrite
        ``"w"`` (default) refuses a store that already holds frames unless ``overwrite``;
        ``"a"`` appends this run as new segment(s) (or continues after a restart).
    """
    if not os.path.exists(script):
        raise TrajectoryFileNotFoundError(f"LAMMPS input script not found: {script}")
    if capacity is not None and capacity < 1:
        raise IonDiffStreamError(f"--capacity must be a positive number of frames, got {capacity}")
    if mode == "w" and not overwrite and os.path.exists(os.path.join(store, "zarr.json")):
        from iondiff_stream.buffer import Commit
        from iondiff_stream.errors import StoreError

        held = Commit.read(store).n_frames
        if held:  # refuse before LAMMPS starts (the writer checks again, under its lock)
            raise StoreError(f"{store} already holds {held} frames from an earlier run; append this run as a new "
                             "segment (--append) or replace the store (--overwrite)")
    with open(script) as fh:
        head, tail = split_at_first_run(fh.read())
    args = ["-log", log or "none"] + (["-screen", "none"] if quiet else [])
    for k, v in (variables or {}).items():
        args += ["-var", k, str(v)]
    lmp = load_lammps(args, comm=comm)
    hook = None
    try:
        _lammps_commands(lmp, head, script)
        hook = attach(lmp, mobile, every=every, store=store, capacity=capacity, chunk_frames=chunk_frames,
                      comm=comm, mode=mode, overwrite=overwrite)
        t0 = time.perf_counter()
        _lammps_commands(lmp, tail, script)
        wall = time.perf_counter() - t0
    except BaseException:
        if hook is not None:
            try:
                hook.close()  # keep every frame received so far
            except BaseException as exc:  # noqa: BLE001 - the first error is the one to report
                logger.error("closing the store after the failure: %s", exc)
        lmp.close()
        raise
    report = hook.close()
    steps = int(lmp.extract_global("ntimestep"))
    out = {"steps": steps, "wall_s": wall, "frames_pushed": hook.n_calls, **report}
    lmp.close()
    return out


class LammpsInputError(IonDiffStreamError, RuntimeError):
    """LAMMPS stopped with an error while running the input script."""


def _lammps_commands(lmp: Any, text: str, script: str) -> None:
    try:
        lmp.commands_string(text)
    except IonDiffStreamError:
        raise
    except Exception as exc:  # the lammps module raises a plain Exception carrying LAMMPS's ERROR line
        msg = " ".join(str(exc).split())
        raise LammpsInputError(f"LAMMPS stopped with an error in {script}: {msg}") from exc
