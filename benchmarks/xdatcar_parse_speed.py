"""XDATCAR coordinates: :func:`iondiff_stream.io.readers.parse_fixed_columns` vs :func:`numpy.fromstring`.

Writes the coordinate lines of an XDATCAR (``--frames`` frames of ``--atoms`` atoms) in pymatgen's layout
(``%.8f %.8f %.8f``) and in VASP's (``  %10.8f  %10.8f  %10.8f``), parses them with both, checks that the
doubles are identical bit for bit, and prints process CPU times (best of ``--repeat``) and the ratio::

    python benchmarks/xdatcar_parse_speed.py --frames 4000 --atoms 64
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from iondiff_stream.io.readers import parse_fixed_columns


def best_cpu(f, repeat: int) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(repeat):
        c0 = time.process_time()
        out = f()
        best = min(best, time.process_time() - c0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=4000)
    ap.add_argument("--atoms", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    x = np.random.default_rng(0).random((a.frames * a.atoms, 3))
    for name, fmt in (("pymatgen", "%.8f %.8f %.8f"), ("VASP", "  %10.8f  %10.8f  %10.8f")):
        text = "\n".join(fmt % tuple(r) for r in x)
        data = text.encode("ascii")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            t_np, ref = best_cpu(lambda: np.fromstring(text, dtype=np.float64, sep=" ").reshape(-1, 3), a.repeat)
        t_fx, got = best_cpu(lambda: parse_fixed_columns(data, 3), a.repeat)
        same = got is not None and np.array_equal(got.view(np.int64), ref.view(np.int64))
        print(f"{name} layout, {len(x)} lines ({len(data) / 2**20:.1f} MiB): numpy.fromstring {t_np * 1e3:.1f} ms, "
              f"parse_fixed_columns {t_fx * 1e3:.1f} ms (CPU), {t_np / t_fx:.1f}x, identical bits: {same}")


if __name__ == "__main__":
    main()
