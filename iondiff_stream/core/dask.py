"""The one Dask client helper: every place that runs on Dask (the per-ion work of a run, the runs of a
database) gets its client here, so a scheduler address, an existing client and a local cluster behave alike."""

from __future__ import annotations

import logging
from typing import Any

from iondiff_stream.core.errors import AnalysisError

__all__ = ["dask_client"]


class dask_client:  # noqa: N801 - used as a context manager like a function
    """Context manager giving a ``distributed.Client``; what it started ends with it.

    Parameters
    ----------
    client : Client or str or None
        An existing client (returned as is, left open), a scheduler address (``"tcp://127.0.0.1:8786"``;
        connected, closed on exit), or None for a ``LocalCluster`` of ``n_workers`` single-threaded processes
        (no dashboard, a free port; closed on exit).
    n_workers : int
        Worker processes of the local cluster.

    Raises
    ------
    AnalysisError
        The scheduler at the given address does not answer (within 30 s).
    """

    def __init__(self, client: Any = None, n_workers: int = 1) -> None:
        self.client = client
        self.n_workers = n_workers
        self._own: list[Any] = []

    def __enter__(self) -> Any:
        from distributed import Client, LocalCluster

        if self.client is not None and not isinstance(self.client, str):
            return self.client
        if isinstance(self.client, str):
            try:
                c = Client(self.client, timeout="30s")
            except (OSError, TimeoutError) as exc:
                raise AnalysisError(f"cannot connect to the Dask scheduler at {self.client}: {exc}") from exc
            self._own = [c]
            return c
        cluster = LocalCluster(n_workers=max(1, int(self.n_workers)), threads_per_worker=1, processes=True,
                               dashboard_address=None, scheduler_port=0, silence_logs=logging.WARNING)
        c = Client(cluster)
        self._own = [c, cluster]
        return c

    def __exit__(self, *exc: Any) -> None:
        for obj in self._own:
            obj.close()
        self._own = []
