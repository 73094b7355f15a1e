"""Run the CaF2 example at several temperatures for the hop-detector checks (README table).

For every temperature two runs of ``in.caf2`` with two Schottky defects (4 F vacancies, 212 F):

* ``T{T}_c``: ``delete_atoms ... compress yes``, streamed by the hook into ``T{T}_c.zarr`` (with the live
  centres) and dumped by LAMMPS (``T{T}_c.dump``, unwrapped ``xu yu zu``, LAMMPS's default 6-digit format);
* ``T{T}_n``: ``compress no`` (atom ids with gaps), dump only.

Usage::

    python examples/caf2/run_series.py OUT_DIR [--ps 40] [--temps 1300 1500 1700] [--every 10]

Then ``python examples/caf2/check_hops.py OUT_DIR`` analyses them.
"""

from __future__ import annotations

import argparse
import json
import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CAF2 = os.path.join(HERE, "in.caf2")
DEFECTS = ["-var", "cadel", "1 157", "-var", "fdel", "300 320 150 250"]


def run_one(out: str, T: int, ps: float, every: int, compress: bool, seed: int) -> dict:
    from lammps_hooks import attach, load_lammps

    tag = f"T{T}_{'c' if compress else 'n'}"
    lmp = load_lammps(["-log", "none", "-screen", "none", "-var", "nsteps", "0", "-var", "T", str(T),
                       "-var", "seed", str(seed), "-var", "compress", "yes" if compress else "no",
                       "-var", "vloop", "all" if compress else "geom", *DEFECTS])
    lmp.file(CAF2)
    lmp.command(f"write_data {out}/{tag}.data")
    lmp.command(f"dump dd all custom {every} {out}/{tag}.dump id type xu yu zu")
    lmp.command("dump_modify dd sort id")
    hook = attach(lmp, mobile="F", every=every, store=f"{out}/{tag}.zarr") if compress else None
    nsteps = int(round(ps / 0.002))
    t0 = time.perf_counter()
    lmp.command(f"run {nsteps}")
    wall = time.perf_counter() - t0
    rep = hook.close() if hook is not None else {}
    natoms = int(lmp.get_natoms())
    lmp.close()
    return {"tag": tag, "T": T, "ps": ps, "natoms": natoms, "wall_s": wall}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--ps", type=float, default=40.0)
    ap.add_argument("--temps", type=int, nargs="+", default=[1300, 1500, 1700])
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--no-gaps", action="store_true", help="skip the compress-no runs")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for T in a.temps:
        for compress in ([True] if a.no_gaps else [True, False]):
            r = run_one(a.out, T, a.ps, a.every, compress, seed=1000 + T + (0 if compress else 7))
            print(json.dumps(r), flush=True)
