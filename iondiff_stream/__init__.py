"""iondiff_stream: which ions hop, when, where to, and how many hop together.

Offline: :func:`analyze_run` (files or a Zarr store → hops, transport, correlations, outputs).
Live: :mod:`lammps_hooks` streams a running LAMMPS into a :class:`FrameStoreWriter` store while
:class:`OnlineCentres` keeps every ion's vibrational centres current. Units: Å and ps.

The public names are imported lazily (PEP 562): ``import iondiff_stream`` is cheap, so that the
command line starts fast; ``iondiff_stream.analyze_run`` imports :mod:`iondiff_stream.analyze` on
first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> submodule that defines it
_LAZY = {
    "analyze_run": "analyze",
    "FrameStoreReader": "buffer",
    "FrameStoreWriter": "buffer",
    "CorrelationParameters": "correlations",
    "concerted_groups": "correlations",
    "IonDiffStreamError": "errors",
    "HopParameters": "hops",
    "HopResults": "hops",
    "HopTable": "hops",
    "find_hops": "hops",
    "collect_positions": "io",
    "load_universe": "io",
    "select_mobile": "io",
    "PositionStore": "io.positions_store",
    "OnlineCentres": "online",
    "analyse_transport": "transport",
}

__all__ = [*_LAZY, "__version__"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .analyze import analyze_run
    from .buffer import FrameStoreReader, FrameStoreWriter
    from .correlations import CorrelationParameters, concerted_groups
    from .errors import IonDiffStreamError
    from .hops import HopParameters, HopResults, HopTable, find_hops
    from .io import collect_positions, load_universe, select_mobile
    from .io.positions_store import PositionStore
    from .online import OnlineCentres
    from .transport import analyse_transport


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'iondiff_stream' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
