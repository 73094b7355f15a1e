"""Many simulations at once on Dask (a local cluster by default, or any ``distributed.Client``).

Each run is analysed by :func:`iondiff_stream.analyze.analyze_run` on a worker (the per-ion work inside a
run stays serial there: one task per run keeps the scheduler's load small for hundreds of runs); results
stay on disk in each run's output directory and only the summaries travel back.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["RunSpec", "analyze_many"]


@dataclass
class RunSpec:
    """One run to analyse: files, mobile ions, output directory and keyword arguments of ``analyze_run``."""

    trajectories: Sequence[str]
    mobile: str
    out_dir: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def _one(spec: RunSpec) -> dict[str, Any]:
    from .analyze import analyze_run

    run = analyze_run(list(spec.trajectories), spec.mobile, out_dir=spec.out_dir, **spec.kwargs)
    return {"out_dir": spec.out_dir, **run.summary}


def analyze_many(specs: Sequence[RunSpec], client: Any = None, n_workers: int | None = None) -> list[dict[str, Any]]:
    """Analyse many runs in parallel on Dask.

    Parameters
    ----------
    specs : sequence of RunSpec
    client : distributed.Client, optional
        An existing client (e.g. of a cluster); default: a ``LocalCluster`` of
        ``n_workers`` processes (default: CPU count), closed afterwards.

    Returns
    -------
    list of dict
        The summary of every run (same order as ``specs``); a failed run gives
        ``{"out_dir": ..., "error": "..."}`` instead of stopping the others.
    """
    from distributed import Client, LocalCluster

    own = client is None
    if own:
        cluster = LocalCluster(n_workers=n_workers or os.cpu_count() or 1, threads_per_worker=1, processes=True)
        client = Client(cluster)
    try:
        futures = client.map(_one, list(specs), pure=False)
        out = []
        for spec, fut in zip(specs, futures):
            try:
                out.append(fut.result())
            except Exception as exc:  # noqa: BLE001 - report per run
                logger.error("run %s failed: %s", spec.out_dir, exc)
                out.append({"out_dir": spec.out_dir, "error": f"{type(exc).__name__}: {exc}"})
        return out
    finally:
        if own:
            client.close()
            cluster.close()
