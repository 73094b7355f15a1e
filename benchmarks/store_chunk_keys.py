"""CPU the store's writer spends per chunk with "/" and with "." chunk keys, side by side in one run.

The frame store's arrays were created with Zarr's default chunk keys and "/" as separator (``c/i/0/0``): every
new chunk of a 3-d array also needs two directories. New stores use "." (``c.i.0.0``: files in the array's
directory; :data:`iondiff_stream.io.store.CHUNK_SEPARATOR`). This writes 40 chunks of 100 frames (214 ions,
107 framework atoms: the CaF2 hook's layout at ``every=10``) with each separator, 6 runs alternating, and
prints the CPU per chunk (7 arrays and the commit record) and the ratio. The cost of a file creation or a
``mkdir`` on a shared virtual disk moves with the host (docs/performance.md), so only the ratio of one run
means much. No number here is asserted by a test.

Run: ``python benchmarks/store_chunk_keys.py``
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from iondiff_stream.io import store as store_mod  # noqa: E402


def run(sep: str, chunks: int = 40, m: int = 100, n: int = 214, nf: int = 107) -> float:
    """CPU ms per chunk of ``m`` frames written with chunk-key separator ``sep``."""
    rng = np.random.default_rng(0)
    pos, fw = rng.random((m, n, 3)), rng.random((m, nf, 3)).astype(np.float32)
    box, cen = np.tile([10, 10, 10, 90, 90, 90.0], (m, 1)), rng.random((m, 3))
    old, store_mod.CHUNK_SEPARATOR = store_mod.CHUNK_SEPARATOR, sep
    tmp = tempfile.mkdtemp()
    try:
        w = store_mod.FrameStoreWriter(os.path.join(tmp, "w.zarr"), np.arange(1, n + 1), ["F"] * n, chunk_frames=m,
                                       framework=(np.arange(n + 1, n + nf + 1), ["Ca"] * nf, None))
        c0 = time.process_time()
        for k in range(0, chunks * m, m):
            steps = np.arange(k, k + m) * 10
            w.append_many(steps, steps * 0.001, pos, box, cen, np.zeros(m, bool), np.full(m, time.time()),
                          framework_positions=fw)
        cpu = time.process_time() - c0
        w.close()
    finally:
        store_mod.CHUNK_SEPARATOR = old
        shutil.rmtree(tmp, ignore_errors=True)
    return 1e3 * cpu / chunks


def main() -> None:
    res: dict[str, list[float]] = {"/": [], ".": []}
    for r in range(6):
        for sep in (("/", ".") if r % 2 == 0 else (".", "/")):
            res[sep].append(run(sep))
    for sep, v in res.items():
        print(f"chunk keys with {sep!r}: {np.median(v):.2f} ms of CPU per 100-frame chunk (median of 6; runs "
              + ", ".join(f"{x:.2f}" for x in v) + ")")
    print(f"'.' / '/': {np.median(res['.']) / np.median(res['/']):.2f}")


if __name__ == "__main__":
    main()
