"""iondiff_stream: which ions hop, when, where to, and how many hop together.

Offline: :func:`analyze_run` (files or a Zarr store → hops, transport, correlations, outputs).
Live: :mod:`lammps_hooks` streams a running LAMMPS into a :class:`FrameStoreWriter` store while
:class:`OnlineCentres` keeps every ion's vibrational centres current. Units: Å and ps.
"""

from .analyze import analyze_run
from .buffer import FrameStoreReader, FrameStoreWriter
from .correlations import CorrelationParameters, concerted_groups
from .errors import IonDiffStreamError
from .hops import HopParameters, HopResults, HopTable, find_hops
from .io import collect_positions, load_universe, select_mobile
from .online import OnlineCentres
from .transport import analyse_transport

__version__ = "0.1.0"

__all__ = [
    "analyze_run",
    "FrameStoreReader",
    "FrameStoreWriter",
    "CorrelationParameters",
    "concerted_groups",
    "IonDiffStreamError",
    "HopParameters",
    "HopResults",
    "HopTable",
    "find_hops",
    "collect_positions",
    "load_universe",
    "select_mobile",
    "OnlineCentres",
    "analyse_transport",
    "__version__",
]
