"""End to end, side by side: ``iondiff-stream analyze`` vs IonDiff (López, Rurali & Cazorla) on one run.

A 4,000-frame, 64-atom trajectory with known hops (32 mobile Li on a 64-site lattice + 32 framework S,
:func:`iondiff_stream.synthetic.long.write_lattice_walk`) is written as a VASP XDATCAR + INCAR (IonDiff
reads only that), and both tools run on the same file as whole processes, timed from launch to exit:

* ours: ``iondiff-stream analyze XDATCAR --mobile Li --timestep-ps DT --out DIR`` (and ``--mobile Li,S``,
  every atom as IonDiff does);
* IonDiff 1.6 from PyPI, installed in its own venv (``--iondiff-python``; its pins clash with ours), run
  through its library entry points with the defaults of its ``cli.py identify_diffusion`` (K-means,
  distance_thd 0.4, silhouette_thd 0.7, n_attempts 10), writing its ``DIFFUSION`` file.

Prints both wall times, the ratio, and the hop counts against the truth. Run once or twice: the ratio
depends on machine load (say so when reporting)::

    python benchmarks/iondiff_compare.py --work /tmp/cmp --iondiff-python /path/to/iondiff-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

_IONDIFF_DRIVER = """
import sys, types, numpy as np
from IonDiff import identify_diffusion as ID
args = types.SimpleNamespace(MD_path=sys.argv[1], classifier="K-means", distance_thd=0.4, silhouette_thd=0.7,
                             make_plot=False, n_attempts=10)
inp = ID.xdatcar(args)
paths = inp.get_diffusion(args)
np.savetxt(sys.argv[1] + "/DIFFUSION", paths)
"""


def write_vasp(walk, out: str, dt_fs: float) -> None:
    """XDATCAR (VASP 5, direct coordinates) + INCAR (POTIM in fs, NBLOCK 1) of a lattice walk."""
    import MDAnalysis as mda

    u = mda.Universe(walk.topology, walk.trajectory)
    L = walk.box_A
    species = [str(e) for e in u.atoms.elements]
    order = ["Li", "S"]
    counts = [species.count(s) for s in order]
    with open(os.path.join(out, "XDATCAR"), "w") as fh:
        fh.write("lattice walk\n1.0\n")
        for row in np.eye(3) * L:
            fh.write(" ".join(f"{v:.6f}" for v in row) + "\n")
        fh.write(" ".join(order) + "\n" + " ".join(map(str, counts)) + "\n")
        for k, ts in enumerate(u.trajectory):
            frac = np.mod(ts.positions / L, 1.0)
            fh.write(f"Direct configuration= {k + 1:6d}\n")
            fh.write("\n".join(f"{x:.8f} {y:.8f} {z:.8f}" for x, y, z in frac) + "\n")
    with open(os.path.join(out, "INCAR"), "w") as fh:
        fh.write(f"POTIM = {dt_fs}\nNBLOCK = 1\n")


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall time, CPU time (user + sys of the process and its children) and the result of ``cmd``."""
    import resource

    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - t0, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/iondiff_compare")
    ap.add_argument("--iondiff-python", default=None, help="python of a venv with IonDiff installed")
    ap.add_argument("--frames", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=3)
    a = ap.parse_args()

    from iondiff_stream.synthetic.long import truth_of, write_lattice_walk

    os.makedirs(a.work, exist_ok=True)
    walk = write_lattice_walk(a.work, a.frames, n_cells=4, n_mobile=32, n_framework_cells=4, n_framework=32,
                              hop_prob=4e-3, dt_ps=0.05, seed=a.seed, block=a.frames)
    write_vasp(walk, a.work, dt_fs=50.0)
    truth = truth_of(walk)
    n_true = int(len(truth["ion"]))
    exe = os.path.join(os.path.dirname(sys.executable), "iondiff-stream")
    xd = os.path.join(a.work, "XDATCAR")
    rows = {}
    for label, mobile in (("ours --mobile Li", "Li"), ("ours --mobile Li,S (all 64 atoms)", "Li,S")):
        out = os.path.join(a.work, "out_" + mobile.replace(",", "_"))
        t, c, p = timed([exe, "analyze", xd, "--mobile", mobile, "--timestep-ps", "0.05", "--out", out, "--no-progress"])
        if p.returncode != 0:
            raise SystemExit(f"{label} failed: {p.stderr}")
        s = json.load(open(os.path.join(out, "summary.json")))
        rows[label] = (t, c)
        print(f"{label:36s} wall {t:7.2f} s  cpu {c:7.2f} s  hops {s['n_hops']} (truth {n_true} Li hops)",
              flush=True)
    if a.iondiff_python:
        d = os.path.join(a.work, "iondiff")
        os.makedirs(d, exist_ok=True)
        for f in ("XDATCAR", "INCAR"):
            os.replace(os.path.join(a.work, f), os.path.join(d, f)) if not os.path.exists(os.path.join(d, f)) else None
        t, c, p = timed([a.iondiff_python, "-c", _IONDIFF_DRIVER, d])
        if p.returncode != 0:
            raise SystemExit(f"IonDiff failed: {p.stderr[-2000:]}")
        paths = np.atleast_2d(np.loadtxt(os.path.join(d, "DIFFUSION")))
        n_li = int(np.sum(paths[:, 0] < 32)) if paths.size else 0
        print(f"{'IonDiff 1.6 (all 64 atoms)':36s} wall {t:7.2f} s  cpu {c:7.2f} s  hops on Li {n_li}, "
              f"on S {len(paths) - n_li} (truth {n_true} Li hops, 0 S)", flush=True)
        for label, (t_ours, c_ours) in rows.items():
            print(f"ratio IonDiff / {label}: wall {t / t_ours:.1f}x, cpu {c / c_ours:.1f}x")


if __name__ == "__main__":
    main()
