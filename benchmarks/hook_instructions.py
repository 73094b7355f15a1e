"""Instructions the streaming hook adds to a LAMMPS run, counted by valgrind (callgrind): hooked vs plain.

CPU time on these shared virtual machines drifts by several per cent in waves of seconds, so the pairs of
``hook_cpu.py`` scatter by +-3 % (its null result) around a hook that costs ~1 %. Instructions executed do not
drift: ``valgrind --tool=callgrind`` gives the same count for the same binary and input whatever else the
machine does. This runs the CaF2 example (321 atoms, 214 F stored) in three processes under callgrind, with
the same imports in each:

* ``plain 0``: start-up, the input, 200 steps of warm-up (what every run below also does);
* ``plain N``: the same and ``run N``;
* ``hooked N`` for each ``--every``: the same with ``attach`` before the run and ``close`` after it
  (the store created, every frame copied, the last chunk written).

The run's own instructions are ``plain N - plain 0``; the hook's are ``hooked N - plain N``, printed as a share
of the run's (the one-off attach and close are in it, as in ``hook_cpu.py``). What instructions do not show:
the cost of the memory the hook touches (the caches it evicts, the page cache it fills), and the system's
time in ``write()`` beyond the instructions valgrind sees (it counts user-space instructions only). The
processes run two at a time, ~50x slower than natively (a few minutes at N = 2000). No number here is
asserted by a test.

Run: ``python benchmarks/hook_instructions.py [--steps 2000] [--every 10 1]`` (needs valgrind; the wheel's
MPI needs ``LD_LIBRARY_PATH=$VENV/lib``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CAF2 = os.path.join(ROOT, "examples", "caf2", "in.caf2")

CHILD = textwrap.dedent(f"""
    import os, sys
    sys.path.insert(0, {ROOT!r})
    import numpy, zarr, google_crc32c, numcodecs.zstd  # noqa: F401 - the same imports in every process
    import lammps_hooks.fix_external, iondiff_stream.io.sink, iondiff_stream.io.store  # noqa: F401
    from lammps_hooks import attach, load_lammps
    steps, mode, tmp = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    lmp = load_lammps(["-log", "none", "-screen", "none", "-var", "nsteps", "0", "-var", "T", "1500"])
    lmp.file({CAF2!r})
    lmp.command("run 200")
    hook = attach(lmp, mobile="F", every=int(mode), store=os.path.join(tmp, f"s{{mode}}.zarr")) if mode != "plain" else None
    if steps:
        lmp.command(f"run {{steps}}")
    if hook is not None:
        hook.close()
    lmp.close()
""")


def instructions(script: str, steps: int, mode: str, tmp: str) -> int:
    """Instructions (callgrind's ``I refs``) of one process running ``script steps mode``."""
    out = os.path.join(tmp, f"cg.{mode}.{steps}.out")
    r = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, script,
                        str(steps), mode, tmp], capture_output=True, text=True, timeout=7200)
    m = re.search(r"I\s+refs:\s+([\d,]+)", r.stderr)
    if r.returncode != 0 or m is None:
        raise RuntimeError(f"valgrind {mode} {steps} failed ({r.returncode}): {r.stderr[-1500:]}")
    return int(m.group(1).replace(",", ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--every", type=int, nargs="+", default=[10, 1])
    a = ap.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    tmp = tempfile.mkdtemp()
    try:
        script = os.path.join(tmp, "child.py")
        with open(script, "w") as fh:
            fh.write(CHILD)
        jobs = [(0, "plain"), (a.steps, "plain")] + [(a.steps, str(e)) for e in a.every]
        with ThreadPoolExecutor(2) as pool:
            counts = dict(zip(jobs, pool.map(lambda j: instructions(script, j[0], j[1], tmp), jobs)))
        run = counts[(a.steps, "plain")] - counts[(0, "plain")]
        print(f"CaF2 example (321 atoms, 214 F stored), {a.steps} steps, instructions counted by valgrind "
              f"(callgrind), user space")
        print(f"  start-up, input and 200 warm-up steps: {counts[(0, 'plain')] / 1e9:.3f} G; the run: "
              f"{run / 1e9:.3f} G ({run / a.steps / 1e6:.2f} M per step)")
        for e in a.every:
            hook = counts[(a.steps, str(e))] - counts[(a.steps, "plain")]
            frames = a.steps // e + 1
            print(f"  every={e:3d} ({frames} frames): the hook {hook / 1e6:.1f} M instructions = "
                  f"{100 * hook / run:.2f} % of the run's (attach and close included); "
                  f"{hook / frames / 1e3:.0f} k per stored frame")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
