"""Start-up time of the command line: ``iondiff-stream --help`` and ``iondiff-stream analyze --help``.

Runs each command 5 times as a whole process and prints the mean and the worst wall time, plus the CPU
time (the wall time depends on machine load; the CPU time much less). Target: under 0.5 s::

    python benchmarks/startup.py
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time


def main() -> None:
    exe = os.path.join(os.path.dirname(sys.executable), "iondiff-stream")
    for args in (["--help"], ["analyze", "--help"]):
        walls, cpus = [], []
        for _ in range(5):
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run([exe, *args], check=True, capture_output=True)
            walls.append(time.perf_counter() - t0)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
        print(f"iondiff-stream {' '.join(args):15s} wall mean {sum(walls) / 5:.2f} s, max {max(walls):.2f} s; "
              f"cpu mean {sum(cpus) / 5:.2f} s  (target < 0.5 s)")


if __name__ == "__main__":
    main()
