"""Training data for a small DeePMD model of CaF2, labelled by the classical rigid-ion model.

Runs the CaF2 example (../caf2/in.caf2) at several volumes (lattice parameter scaled by ``--strains``) and
temperatures and writes DeePMD's npy format (``data/sys.*/set.000/{coord,box,energy,force}.npy``,
``type.raw``, ``type_map.raw``). Several volumes: a model trained at one density extrapolates badly.

    python make_training_data.py --frames 200 --out data
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from lammps_hooks import load_lammps

HERE = os.path.dirname(os.path.abspath(__file__))
CAF2 = os.path.join(HERE, "..", "caf2", "in.caf2")


def sample(strain: float, temperature: float, frames: int, every: int, seed: int) -> dict[str, np.ndarray]:
    lmp = load_lammps(["-log", "none", "-screen", "none", "-var", "nsteps", "0", "-var", "T", str(temperature),
                       "-var", "seed", str(seed)])
    lmp.file(CAF2)
    lmp.command(f"change_box all x scale {strain} y scale {strain} z scale {strain} remap")
    lmp.command("run 500")  # equilibrate at this volume
    n = int(lmp.get_natoms())
    types = np.asarray(lmp.gather_atoms("type", 0, 1)).reshape(n)
    ids = np.asarray(lmp.gather_atoms("id", 0, 1)).reshape(n)
    order = np.argsort(ids)
    coords, boxes, energies, forces = [], [], [], []
    lmp.command("thermo_style custom step pe")
    for _ in range(frames):
        lmp.command(f"run {every}")
        x = np.asarray(lmp.gather_atoms("x", 1, 3)).reshape(n, 3)[order]
        f = np.asarray(lmp.gather_atoms("f", 1, 3)).reshape(n, 3)[order]
        lo, hi, xy, yz, xz, _, _ = lmp.extract_box()
        box = np.array([[hi[0] - lo[0], 0, 0], [xy, hi[1] - lo[1], 0], [xz, yz, hi[2] - lo[2]]])
        coords.append(x.ravel())
        forces.append(f.ravel())
        boxes.append(box.ravel())
        energies.append(lmp.get_thermo("pe"))
    lmp.close()
    return {"coord": np.array(coords), "box": np.array(boxes), "energy": np.array(energies),
            "force": np.array(forces), "type": types[order] - 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200, help="frames per (volume, temperature)")
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--strains", default="0.98,1.0,1.02")
    ap.add_argument("--temperatures", default="1200,1500")
    ap.add_argument("--out", default=os.path.join(HERE, "data"))
    a = ap.parse_args()
    k = 0
    for s in (float(v) for v in a.strains.split(",")):
        for t in (float(v) for v in a.temperatures.split(",")):
            d = sample(s, t, a.frames, a.every, seed=1000 + k)
            sysdir = os.path.join(a.out, f"sys.{k:02d}")
            os.makedirs(os.path.join(sysdir, "set.000"), exist_ok=True)
            for key in ("coord", "box", "energy", "force"):
                np.save(os.path.join(sysdir, "set.000", f"{key}.npy"), d[key])
            np.savetxt(os.path.join(sysdir, "type.raw"), d["type"], fmt="%d")
            with open(os.path.join(sysdir, "type_map.raw"), "w") as fh:
                fh.write("Ca\nF\n")
            print(f"{sysdir}: strain {s}, T {t} K, {len(d['energy'])} frames")
            k += 1


if __name__ == "__main__":
    main()
