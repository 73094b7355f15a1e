"""iondiff_stream: which ions hop, when, where to, and how many hop together.

Offline: :func:`analyze_run` (files or a Zarr store → hops, transport, correlations, outputs).
Live: :mod:`lammps_hooks` streams a running LAMMPS into a :class:`FrameStoreWriter` store while
:class:`OnlineCentres` keeps every ion's vibrational centres current. Units: Å and ps.

The public names are imported lazily (PEP 562): ``import iondiff_stream`` is cheap, so that the
command line starts fast; ``iondiff_stream.analyze_run`` imports :mod:`iondiff_stream.pipeline.run` on
first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> submodule that defines it
_LAZY = {
    "analyze_run": "pipeline.run",
    "FrameStoreReader": "io.store",
    "FrameStoreWriter": "io.store",
    "CorrelationParameters": "analysis.correlations",
    "concerted_groups": "analysis.correlations",
    "IonDiffStreamError": "core.errors",
    "HopParameters": "analysis.hops",
    "HopResults": "analysis.hops",
    "HopTable": "analysis.hops",
    "find_hops": "analysis.hops",
    "collect_positions": "io",
    "load_universe": "io",
    "select_mobile": "io",
    "PositionStore": "io.positions_store",
    "OnlineCentres": "live.online",
    "analyse_transport": "analysis.transport",
}

__all__ = [*_LAZY, "__version__"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from iondiff_stream.pipeline.run import analyze_run
    from iondiff_stream.io.store import FrameStoreReader, FrameStoreWriter
    from iondiff_stream.analysis.correlations import CorrelationParameters, concerted_groups
    from iondiff_stream.core.errors import IonDiffStreamError
    from iondiff_stream.analysis.hops import HopParameters, HopResults, HopTable, find_hops
    from iondiff_stream.io import collect_positions, load_universe, select_mobile
    from iondiff_stream.io.positions_store import PositionStore
    from iondiff_stream.live.online import OnlineCentres
    from iondiff_stream.analysis.transport import analyse_transport


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'iondiff_stream' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
