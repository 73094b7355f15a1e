"""Run an unmodified LAMMPS input script with the iondiff_stream hook attached.

The script is executed up to its first top-level ``run`` (or ``minimize``) command, the hook is attached
there (box and atoms exist by then), and the rest of the script follows. Commands inside ``include``
files and ``jump``/``label`` loops that span the attachment point are not supported; put the first
``run`` in the main script.

Like ``lmp -in SCRIPT``: relative paths in the script are relative to the current directory (no
change of directory), LAMMPS's screen output (thermo) is shown, and ``log.lammps`` is written in the
current directory. Every ``run`` becomes a segment of the store.

SIGINT (Ctrl-C) and SIGTERM stop the simulation cleanly: LAMMPS halts at the step of the next stored frame
(``fix halt`` on a variable the signal sets), the rest of the script is not run, every frame so far is
written and the store closed with its last segment marked ``interrupted``; the report says
``"interrupted": "SIGINT"`` (the command line then exits with status 130).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from typing import Any

import numpy as np

from iondiff_stream.core.errors import IonDiffStreamError, TrajectoryFileNotFoundError

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
    chunk_frames: int | None = None,
    log: str | None = "log.lammps",
    comm: Any = None,
    quiet: bool = False,
    mode: str = "w",
    overwrite: bool = False,
    model_devi: str | None = "auto",
) -> dict[str, Any]:
    """Run ``script`` with the hook; returns a small report (steps, wall time, frames, segments).

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
    model_devi : str or None
        DeePMD model deviation to store beside the frames: ``"auto"`` (default) follows the ``out_file`` of a
        ``pair_style deepmd`` with two or more models before the first ``run``; a path follows that file;
        None stores none.
    """
    if not os.path.exists(script):
        raise TrajectoryFileNotFoundError(f"LAMMPS input script not found: {script}")
    if capacity is not None and capacity < 1:
        raise IonDiffStreamError(f"--capacity must be a positive number of frames, got {capacity}")
    if mode == "w" and not overwrite and os.path.exists(os.path.join(store, "zarr.json")):
        from iondiff_stream.io.store import Commit
        from iondiff_stream.core.errors import StoreError

        held = Commit.read(store).n_frames
        if held:  # refuse before LAMMPS starts (the writer checks again, under its lock)
            raise StoreError(f"{store} already holds {held} frames from an earlier run; append this run as a new "
                             "segment (--append) or replace the store (--overwrite)")
    with open(script) as fh:
        head, tail = split_at_first_run(fh.read())
    args = ["-log", log or "none"] + (["-screen", "none"] if quiet else [])
    for k, v in (variables or {}).items():
        args += ["-var", k, str(v)]
    with _StopOnSignals() as stop:
        lmp = load_lammps(args, comm=comm)
        hook = None
        wall = 0.0
        try:
            _lammps_commands(lmp, head, script)
            if stop.reason is None:
                devi = _model_devi_of(lmp, head, every) if model_devi == "auto" else (
                    {"out_file": model_devi} if model_devi else None)
                hook = attach(lmp, mobile, every=every, store=store, capacity=capacity, chunk_frames=chunk_frames,
                              comm=comm, mode=mode, overwrite=overwrite,
                              model_devi=devi["out_file"] if devi else None, model_devi_meta=devi)
                hook.enable_stop()
                stop.hook = hook
                t0 = time.perf_counter()
                try:
                    _lammps_commands(lmp, tail, script)
                except LammpsInputError:
                    if hook.stop_reason is None:
                        raise  # a real error of the input; else LAMMPS stopped because we asked it to
                wall = time.perf_counter() - t0
        except BaseException:
            if hook is not None:
                try:
                    hook.close(interrupted=stop.reason)  # keep every frame received so far
                except BaseException as exc:  # noqa: BLE001 - the first error is the one to report
                    logger.error("closing the store after the failure: %s", exc)
            lmp.close()
            raise
        reason = stop.reason
        report = hook.close(interrupted=reason) if hook is not None else {}
        steps = int(lmp.extract_global("ntimestep"))
        out = {"steps": steps, "wall_s": wall, "frames_pushed": hook.n_calls if hook is not None else 0, **report}
        if reason is not None:
            out["interrupted"] = reason
            logger.warning("%s: LAMMPS stopped at step %d; %s frames are in %s (its last segment is marked "
                           "interrupted)", reason, steps, report.get("frames", 0), store)
        lmp.close()
    return out


def _model_devi_of(lmp: Any, head: str, every: int) -> dict[str, Any] | None:
    """The model deviation the last ``pair_style deepmd`` of ``head`` writes (variables substituted), or None."""
    from iondiff_stream.io.model_deviation import pair_style_model_devi

    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        try:
            v = lmp.extract_variable(name)
        except Exception:  # noqa: BLE001 - an unknown variable: leave the text as it is
            return m.group(0)
        return m.group(0) if v is None else str(v)

    found = None
    for line in re.sub(r"&[ \t]*\n", " ", head).splitlines():
        if line.split("#", 1)[0].split()[:1] == ["pair_style"]:
            found = pair_style_model_devi(re.sub(r"\$\{(\w+)\}|\$(\w)", value, line))
    if found is not None:
        if found["out_freq"] % every and every % found["out_freq"]:
            logger.warning("model deviation every %d steps, frames every %d: they meet every %d steps only",
                           found["out_freq"], every, int(np.lcm(found["out_freq"], every)))
        logger.info("following the model deviation in %s (every %d steps%s)", found["out_file"], found["out_freq"],
                    ", per atom" if found["atomic"] else "")
    return found


class _StopOnSignals:
    """SIGINT/SIGTERM handlers for the length of a run: they ask the hook to halt LAMMPS instead of killing it.

    Python runs a handler in the main thread when it next executes Python code: inside the hook's callback
    while LAMMPS runs (every stored frame), or between LAMMPS commands. The previous handlers are restored
    on exit. Outside the main thread (no handlers can be set there) nothing changes.
    """

    def __init__(self) -> None:
        self.reason: str | None = None
        self.hook: Any = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.reason is None:
            self.reason = name
            logger.warning("%s: stopping LAMMPS at the next stored frame and closing the store", name)
        else:
            logger.warning("%s: already stopping (at the next stored frame)", name)
        if self.hook is not None:
            self.hook.request_stop(self.reason)

    def __enter__(self) -> _StopOnSignals:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


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
