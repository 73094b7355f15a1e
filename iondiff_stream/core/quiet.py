"""Hide third-party messages a user of the command line cannot act on.

Called by the command-line entry point (:func:`iondiff_stream.cli.main`) and by ``make demo``
(:mod:`iondiff_stream.demo`), never on ``import iondiff_stream``: a library user keeps every warning.
Each filter names one message of one library, so any other warning still shows.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["quiet_third_party", "THIRD_PARTY_MESSAGES"]

#: (category, regex of the message start) of warnings filtered by :func:`quiet_third_party`
THIRD_PARTY_MESSAGES: tuple[tuple[type[Warning], str], ...] = (
    # setuptools, when an older dependency imports pkg_resources or distutils
    (UserWarning, r"pkg_resources is deprecated"),
    (UserWarning, r"Setuptools is replacing distutils"),
    # zarr: string/bytes attributes stored in Zarr v3 (read back by this package only)
    (FutureWarning, r"The data type \(.*\) does not have a Zarr V3 specification"),
    # distributed: an in-memory run's ion blocks travel in the task graph (a few tens of MB at most)
    (UserWarning, r"Sending large graph of size"),
)

#: (logger, message start) of log records dropped by :func:`quiet_third_party`
THIRD_PARTY_LOG_RECORDS: tuple[tuple[str, str], ...] = (
    # MDAnalysis logs this at import when the optional netCDF4 is missing; no AMBER file is written here
    ("MDAnalysis.coordinates.AMBER", "netCDF4 is not available"),
)


class _DropMessage(logging.Filter):
    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


def quiet_third_party() -> None:
    """Install the narrow warning filters and log-record filters listed in this module (idempotent)."""
    for category, message in THIRD_PARTY_MESSAGES:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, start in THIRD_PARTY_LOG_RECORDS:
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) and f.start == start for f in log.filters):
            log.addFilter(_DropMessage(start))
