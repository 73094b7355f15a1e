"""One error hierarchy for the whole package.

Every error raised on purpose by :mod:`iondiff_stream` derives from
:class:`IonDiffStreamError`; each subclass also inherits the builtin exception
that describes the same kind of problem, so ``except ValueError`` keeps working
for callers that do not know this package.
"""

from __future__ import annotations

__all__ = [
    "IonDiffStreamError",
    "TrajectoryFormatError",
    "TrajectoryFileNotFoundError",
    "SelectionError",
    "InvalidCoordinatesError",
    "TimestepError",
    "StoreError",
    "StoreMismatchError",
    "StoreLockedError",
    "StoreCorruptError",
    "StoreOverwrittenError",
    "AnalysisError",
]


class IonDiffStreamError(Exception):
    """Base class of every error raised by iondiff_stream."""


class TrajectoryFileNotFoundError(IonDiffStreamError, FileNotFoundError):
    """A trajectory, topology or store path does not exist."""


class TrajectoryFormatError(IonDiffStreamError, ValueError):
    """A file is truncated, inconsistent or not in the format expected."""


class SelectionError(IonDiffStreamError, ValueError):
    """A mobile-ion selection is empty or names species absent from the system."""


class InvalidCoordinatesError(IonDiffStreamError, ValueError):
    """Coordinates contain NaN/inf or the box is missing or degenerate."""


class TimestepError(IonDiffStreamError, ValueError):
    """The time between frames is unknown, non-positive or inconsistent."""


class StoreError(IonDiffStreamError, OSError):
    """A Zarr store cannot be created, opened or written."""


class StoreMismatchError(IonDiffStreamError, ValueError):
    """Frames appended to a store do not match it (other ions, units, steps)."""


class StoreLockedError(StoreError):
    """Another writer has the store open (a store has one writer)."""


class StoreCorruptError(StoreError):
    """A store's chunk failed its checksum or its metadata cannot be decoded."""


class StoreOverwrittenError(StoreError):
    """A ring store overwrote the frames being read (read again, more recent frames)."""


class AnalysisError(IonDiffStreamError, RuntimeError):
    """An analysis cannot be carried out on the data given."""
