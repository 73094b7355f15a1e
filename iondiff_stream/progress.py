"""One progress system (rich): a single bar with ETA over a whole analysis.

:class:`RunProgress` shows one bar for a run whose stages (reading, per-ion
hops, transport, correlations, writing) carry weights proportional to their
expected cost; code deep in the library reports through :func:`stage` and
:func:`track`, which advance the active bar (a :class:`contextvars.ContextVar`,
set only inside ``with RunProgress(...)``) or do nothing. Outside a run,
:func:`track` with ``enabled=True`` shows a rich bar of its own. MDAnalysis's
tqdm bars are never used (``verbose=False`` is passed to its analyses).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["RunProgress", "Stage", "stage", "track", "current", "run_weights", "stderr_console", "log_handler"]

_CURRENT: ContextVar[RunProgress | None] = ContextVar("iondiff_progress", default=None)


_CONSOLE: Any = None


def stderr_console() -> Any:
    """The one rich Console on stderr shared by the progress bars and the log handler.

    Log records written through it while a bar is live are printed above the bar, not into it.
    """
    global _CONSOLE
    if _CONSOLE is None:
        from rich.console import Console

        _CONSOLE = Console(stderr=True)
    return _CONSOLE


def log_handler(fmt: str = "%(name)s: %(message)s") -> Any:
    """A :class:`rich.logging.RichHandler` on :func:`stderr_console` (level column, no time or path)."""
    import logging

    from rich.logging import RichHandler

    handler = RichHandler(console=stderr_console(), show_time=False, show_path=False, markup=False,
                          rich_tracebacks=False)
    handler.setFormatter(logging.Formatter(fmt))
    return handler


def current() -> RunProgress | None:
    """The active :class:`RunProgress`, or None."""
    return _CURRENT.get()


class Stage:
    """One stage of a run: ``advance(n)`` moves the run's bar by ``n / total`` of the stage's weight."""

    def __init__(self, run: RunProgress | None, name: str, total: float) -> None:
        self._run = run
        self.name = name
        self.total = max(float(total), 1e-12)
        self.done = 0.0
        if run is not None:
            self._weight = run.weights.get(name, 0.0)
            run._describe(name)

    def advance(self, n: float = 1.0) -> None:
        if self._run is None:
            return
        n = min(float(n), self.total - self.done)
        self.done += n
        self._run._advance(self._weight * n / self.total)

    def __call__(self, n: float = 1.0) -> None:
        self.advance(n)

    def finish(self) -> None:
        """Count the rest of the stage as done."""
        self.advance(self.total - self.done)


def stage(name: str, total: float) -> Stage:
    """A stage of the active run (a no-op stage when no run is active)."""
    return Stage(current(), name, total)


def run_weights(n_frames: int, n_mobile: int, n_other: int) -> dict[str, float]:
    """Relative cost of the stages of ``analyze`` (measured on 10^4-10^6-frame runs, rounded)."""
    tn = float(n_frames) * max(n_mobile, 1)
    return {
        "read": float(n_frames) * (n_mobile + n_other) * 1.0,
        "hops": tn * 4.0,
        "transport": tn * 1.0,
        "correlations": tn * 0.2,
        "write": tn * 0.3,
    }


class RunProgress:
    """A single rich progress bar (with ETA) over the stages of one analysis.

    Parameters
    ----------
    weights : dict of str to float
        Stage name → expected relative cost (see :func:`run_weights`).
    enabled : bool
        Draw the bar on stderr; when False the object only tracks fractions.
    description : str
        Text before the stage name.
    """

    def __init__(self, weights: dict[str, float], enabled: bool = True, description: str = "analyze") -> None:
        total = sum(weights.values()) or 1.0
        self.weights = {k: 1000.0 * v / total for k, v in weights.items()}
        self.enabled = enabled
        self.description = description
        self.completed = 0.0
        self._progress: Any = None
        self._task: Any = None
        self._token: Any = None

    def __enter__(self) -> RunProgress:
        if self.enabled:
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                TextColumn("ETA"), TimeRemainingColumn(), console=stderr_console(), transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=1000.0)
        self._token = _CURRENT.set(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None
        if self._progress is not None:
            if exc[0] is None:
                self._progress.update(self._task, completed=1000.0, description=f"{self.description}: done")
            self._progress.stop()
            self._progress = None

    def _describe(self, name: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=f"{self.description}: {name}")

    def _advance(self, units: float) -> None:
        self.completed = min(1000.0, self.completed + units)
        if self._progress is not None:
            self._progress.update(self._task, completed=self.completed)


def track(items: Iterable[T], description: str, enabled: bool = False, stage_name: str | None = None) -> Iterator[T]:
    """Iterate over ``items`` reporting progress.

    Inside an active :class:`RunProgress` the items advance its stage
    ``stage_name`` (default ``description``); otherwise a rich bar of its own
    is shown on stderr when ``enabled``.
    """
    run = current()
    if run is not None:
        seq = list(items)
        st = Stage(run, stage_name or description, len(seq))
        for x in seq:
            yield x
            st.advance(1)
        return
    if not enabled:
        yield from items
        return
    from rich.progress import track as rich_track

    yield from rich_track(list(items), description=description, console=stderr_console())
