"""Dask: the per-ion work of one run (many runs at once: :mod:`iondiff_stream.database`).

* :func:`map_ion_blocks` runs one task per ion block of one run; each task reads its own slice
  ``positions[:, i0:i1]`` (from the run's Zarr store when the positions are out of core, so only the
  store's path travels; in-memory positions are sliced and shipped per block). A scheduler address
  (``iondiff-stream analyze --scheduler tcp://host:8786``, e.g. a dask-jobqueue Slurm/PBS cluster) or
  a ``LocalCluster`` of ``--jobs`` processes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from iondiff_stream.core.dask import dask_client

logger = logging.getLogger(__name__)

__all__ = ["map_ion_blocks"]


class _Shifted:
    """An in-memory ion block that answers ``[:, i0:i1]`` (frame layout) or ``[i0:i1]`` (ion layout) like the full array."""

    def __init__(self, block: Any, i0: int, n: int, layout: str = "frame") -> None:
        self.block = block
        self.i0 = i0
        self.layout = layout
        self.shape = (block.shape[0], n, 3) if layout == "frame" else (n, block.shape[1], 3)

    def __getitem__(self, key: Any) -> Any:
        if self.layout == "frame":
            t, ions = key
            return self.block[t, ions.start - self.i0 : ions.stop - self.i0]
        return self.block[key.start - self.i0 : key.stop - self.i0]


def map_ion_blocks(
    func: Any,
    positions: Any,
    blocks: Sequence[tuple[int, int]],
    args: Sequence[Any] = (),
    client: Any = None,
    n_workers: int = 1,
    stage_name: str = "per-ion",
    progress: bool = False,
    layout: str = "frame",
) -> list[Any]:
    """``[func(positions, i0, i1, *args) for (i0, i1) in blocks]`` on Dask, one task per ion block.

    Parameters
    ----------
    func : callable
        A module-level function (pickled to the workers).
    positions : array-like, shape (T, n, 3), or (n, T, 3) with ``layout="ion"``
        A Zarr array (each task opens it and reads its block) or an ndarray
        (each task gets its block).
    blocks : sequence of (int, int)
    args : sequence
        Further arguments, sent to the cluster once.
    client : distributed.Client or str, optional
        Client or scheduler address; default a ``LocalCluster`` of ``n_workers``.
    stage_name : str
        Stage of the run-wide progress bar advanced as blocks finish.

    Returns
    -------
    list
        Results in the order of ``blocks``.
    """
    from distributed import as_completed

    from iondiff_stream.core.progress import RunProgress, current, stage

    own_bar = RunProgress({stage_name: 1.0}, description=stage_name) if (progress and current() is None) else None
    with dask_client(client, n_workers) as c:
        if own_bar is not None:
            own_bar.__enter__()
        try:
            st = stage(stage_name, len(blocks))
            shared = c.scatter(list(args), broadcast=True) if args else []
            in_memory = isinstance(positions, np.ndarray)
            futures = []
            for i0, i1 in blocks:
                if not in_memory:
                    arr = positions
                elif layout == "frame":
                    arr = _Shifted(positions[:, i0:i1], i0, positions.shape[1], layout)
                else:
                    arr = _Shifted(positions[i0:i1], i0, positions.shape[0], layout)
                futures.append(c.submit(func, arr, i0, i1, *shared, pure=False))
            index = {f.key: k for k, f in enumerate(futures)}
            out: list[Any] = [None] * len(futures)
            for fut in as_completed(futures):
                out[index[fut.key]] = fut.result()
                st.advance(1)
                fut.release()
            return out
        finally:
            if own_bar is not None:
                own_bar.__exit__(None, None, None)
