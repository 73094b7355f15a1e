"""Training data for a small DeePMD model, labelled by a classical rigid-ion model (CaF2 or alpha-AgI).

Runs the classical example (``--system caf2``: ../caf2/in.caf2; ``--system agi``: ../agi/in.agi, the PRV
potential tabulated by ../agi/potential.py) at several volumes (lattice parameter scaled by ``--strains``) and
temperatures and writes DeePMD's npy format (``data/sys.*/set.000/{coord,box,energy,force,virial}.npy``,
``type.raw``, ``type_map.raw``). Several volumes: a model trained at one density extrapolates badly. The virial
(eV) is LAMMPS's virial pressure tensor (kinetic part excluded, k-space included) times the volume.

    python make_training_data.py --frames 200 --out data
    python make_training_data.py --system agi --frames 150      # -> agi/data
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from lammps_hooks import load_lammps

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from systems import EXAMPLES, SYSTEMS  # noqa: E402

NKTV2P_METAL = 1.6021765e6  # bar Å^3 per eV (LAMMPS metal units)


def sample(system: str, strain: float, temperature: float, frames: int, every: int, seed: int,
           equilibrate: int | None = None, table: str | None = None) -> dict[str, np.ndarray]:
    cfg = SYSTEMS[system]
    v = dict(cfg["label_vars"], T=str(temperature), seed=str(seed))
    if table:
        v["table"] = table
    args = ["-log", "none", "-screen", "none"]
    for name, val in v.items():
        args += ["-var", name, val]
    lmp = load_lammps(args)
    lmp.file(cfg["label_script"])
    lmp.command(f"change_box all x scale {strain} y scale {strain} z scale {strain} remap")
    lmp.command(f"run {cfg['label_equilibrate'] if equilibrate is None else equilibrate}")  # at this volume
    n = int(lmp.get_natoms())
    types = np.asarray(lmp.gather_atoms("type", 0, 1)).reshape(n)
    ids = np.asarray(lmp.gather_atoms("id", 0, 1)).reshape(n)
    order = np.argsort(ids)
    lmp.command("compute label_vir all pressure NULL virial")
    lmp.command("thermo_style custom step pe c_label_vir[*]")  # the last step of every run: virial tallied
    coords, boxes, energies, forces, virials = [], [], [], [], []
    for _ in range(frames):
        lmp.command(f"run {every}")
        x = np.asarray(lmp.gather_atoms("x", 1, 3)).reshape(n, 3)[order]
        f = np.asarray(lmp.gather_atoms("f", 1, 3)).reshape(n, 3)[order]
        lo, hi, xy, yz, xz, _, _ = lmp.extract_box()
        box = np.array([[hi[0] - lo[0], 0, 0], [xy, hi[1] - lo[1], 0], [xz, yz, hi[2] - lo[2]]])
        p = lmp.extract_compute("label_vir", 0, 1)  # global vector: xx yy zz xy xz yz, bar (tallied at the thermo step)
        pt = np.array([[p[0], p[3], p[4]], [p[3], p[1], p[5]], [p[4], p[5], p[2]]])
        coords.append(x.ravel())
        forces.append(f.ravel())
        boxes.append(box.ravel())
        virials.append((pt * abs(np.linalg.det(box)) / NKTV2P_METAL).ravel())
        energies.append(lmp.get_thermo("pe"))
    lmp.close()
    return {"coord": np.array(coords), "box": np.array(boxes), "energy": np.array(energies),
            "force": np.array(forces), "virial": np.array(virials), "type": types[order] - 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--system", choices=sorted(SYSTEMS), default="caf2")
    ap.add_argument("--frames", type=int, default=200, help="frames per (volume, temperature)")
    ap.add_argument("--every", type=int, help="MD steps between frames (default: the system's)")
    ap.add_argument("--equilibrate", type=int, help="MD steps at each volume before the first frame")
    ap.add_argument("--strains", help="lattice parameter scales (default 0.98,1.0,1.02)")
    ap.add_argument("--temperatures", help="K (default: caf2 1200,1500; agi 400,550,700)")
    ap.add_argument("--seed", type=int, default=1000, help="system k uses seed + k (a held-out set: another seed)")
    ap.add_argument("--out", help="default: data/ in the system's directory")
    a = ap.parse_args()
    cfg = SYSTEMS[a.system]
    out = a.out or os.path.join(cfg["dir"], "data")
    table = None
    if a.system == "agi":
        sys.path.insert(0, os.path.join(EXAMPLES, "agi"))
        from potential import write_table

        os.makedirs(out, exist_ok=True)
        table = os.path.join(out, "agi_prv.table")
        write_table(table)
    k = 0
    for s in (float(v) for v in (a.strains or cfg["strains"]).split(",")):
        for t in (float(v) for v in (a.temperatures or cfg["label_temperatures"]).split(",")):
            d = sample(a.system, s, t, a.frames, a.every or cfg["label_every"], seed=a.seed + k,
                       equilibrate=a.equilibrate, table=table)
            sysdir = os.path.join(out, f"sys.{k:02d}")
            os.makedirs(os.path.join(sysdir, "set.000"), exist_ok=True)
            for key in ("coord", "box", "energy", "force", "virial"):
                np.save(os.path.join(sysdir, "set.000", f"{key}.npy"), d[key])
            np.savetxt(os.path.join(sysdir, "type.raw"), d["type"], fmt="%d")
            with open(os.path.join(sysdir, "type_map.raw"), "w") as fh:
                fh.write("".join(f"{e}\n" for e in cfg["type_map"]))
            print(f"{sysdir}: strain {s}, T {t} K, {len(d['energy'])} frames", flush=True)
            k += 1


if __name__ == "__main__":
    main()
