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

__all__ = ["RunProgress", "Stage", "stage", "track", "open_counted", "CountingReader", "current", "run_weights", "stderr_console", "log_handler"]

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
    listener : callable, optional
        ``listener(stage_name, fraction_done)`` after every advance of the bar (a notebook widget, a
        test, a log line); called whether or not the bar is drawn.

    Notes
    -----
    The weights may be provisional: a run whose frame count is known only once its files are opened
    (a compressed dump is decompressed first) starts with guessed weights and calls :meth:`reweight`
    once the real ones are known; the part of the bar already done stays done.
    """

    def __init__(self, weights: dict[str, float], enabled: bool = True, description: str = "analyze",
                 listener: Any = None) -> None:
        self.weights = self._scaled(weights, 1000.0)
        self.enabled = enabled
        self.description = description
        self.listener = listener
        self.stage_name = ""
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

    @staticmethod
    def _scaled(weights: dict[str, float], units: float) -> dict[str, float]:
        total = sum(weights.values()) or 1.0
        return {k: units * v / total for k, v in weights.items()}

    def reweight(self, weights: dict[str, float]) -> None:
        """Spread what is left of the bar over ``weights`` (stage → relative cost of the rest of the run).

        Stages created before keep their old weight; stages created after use the new ones.
        """
        self.weights = self._scaled(weights, max(1000.0 - self.completed, 0.0))

    @property
    def fraction(self) -> float:
        """Part of the run done, 0 to 1."""
        return self.completed / 1000.0

    def status(self, text: str) -> None:
        """Show ``text`` after the description (e.g. a count whose total is not known in advance)."""
        self._describe(text)

    def _describe(self, name: str) -> None:
        self.stage_name = name
        if self._progress is not None:
            self._progress.update(self._task, description=f"{self.description}: {name}")

    def _advance(self, units: float) -> None:
        self.completed = min(1000.0, self.completed + units)
        if self._progress is not None:
            self._progress.update(self._task, completed=self.completed)
        if self.listener is not None and units > 0:
            self.listener(self.stage_name, self.fraction)


class CountingReader:
    """A binary file object that advances a :class:`Stage` by the bytes read from it.

    Wrap the *compressed* file under a decompressor (``gzip.GzipFile(fileobj=CountingReader(raw, st))``)
    and the stage moves with the bytes of the file consumed, the one size known before decompressing.
    """

    def __init__(self, raw: Any, stage: Stage) -> None:
        self._raw = raw
        self._stage = stage

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if data:
            self._stage.advance(len(data))
        return data

    def readinto(self, b: Any) -> int:
        n = self._raw.readinto(b)
        if n:
            self._stage.advance(n)
        return n

    def __getattr__(self, name: str) -> Any:  # seek, tell, close, readable, ... of the raw file
        return getattr(self._raw, name)


def open_counted(path: str, stage_name: str = "read") -> Any:
    """A binary reader of ``path``, decompressed when it ends in ``.gz``/``.bz2``, that advances
    the active run's stage ``stage_name`` by the bytes of the file (compressed bytes) consumed.

    Outside a :class:`RunProgress` it is an ordinary reader (the stage is a no-op).
    """
    import os

    raw = open(path, "rb")  # noqa: SIM115 - closed with the returned object
    counted = CountingReader(raw, stage(stage_name, os.path.getsize(path) or 1))
    if path.endswith(".gz"):
        import gzip

        return _Closing(gzip.GzipFile(fileobj=counted, mode="rb"), raw)
    if path.endswith(".bz2"):
        import bz2

        return _Closing(bz2.BZ2File(counted, mode="rb"), raw)
    return _Closing(counted, raw)


class _Closing:
    """A file object that also closes the raw file under it."""

    def __init__(self, f: Any, raw: Any) -> None:
        self._f, self._raw = f, raw

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __iter__(self) -> Any:
        return iter(self._f)

    def close(self) -> None:
        try:
            self._f.close()
        finally:
            self._raw.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


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
