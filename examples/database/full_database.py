"""The full example database: the shared AIMD runs + CaF2 LAMMPS runs at 3 temperatures, on a real Dask cluster.

    python examples/database/full_database.py --out DIR [--shared ../shared/data] [--temps 1000 1300 1600]

1. runs LAMMPS (examples/database/in.caf2_vdos: velocities dumped every 10 fs) at each temperature;
2. writes DIR/manifest.csv: argyrodite Li6PS5Cl 0p/50p/100p (XDATCAR, 500 K, 100 fs frames), LGPS 600 K and
   Na3PS4 800 K (extxyz, 20 fs frames) from the shared data, and the CaF2 runs;
3. starts ``dask scheduler`` + 2 ``dask worker`` processes on loopback and runs
   ``iondiff-stream database DIR/manifest.csv --out DIR/db --scheduler tcp://...``;
4. prints the physics checks: VDOS integral per atom, kinetic temperature of the spectrum against T, C_v and
   S_vib against T, and the position-only VDOS against the velocity VDOS below the Nyquist frequency.

Takes a few minutes on 2 cores (mostly LAMMPS: ~12000 steps per temperature).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)


def shared_rows(shared: str) -> list[dict[str, str]]:
    """Manifest rows of the shared AIMD runs (those present)."""
    rows = []
    arg = os.path.join(shared, "argyrodite_Li6PS5Cl_morgan2021", "data", "Li6PS5Cl")
    for x in ("0p", "50p", "100p"):
        files = sorted(glob.glob(os.path.join(arg, x, "run*", "actual_XDATCAR.gz")),
                       key=lambda p: int(os.path.basename(os.path.dirname(p))[3:]))
        if files:
            rows.append({"name": f"argyrodite_{x}", "files": ";".join(files), "topology": "", "mobile": "Li",
                         "temperature_K": "500", "timestep_ps": "0.1", "material": f"Li6PS5Cl {x} exchange",
                         "family": "argyrodite", "md_timestep_ps": ""})
    for name, rel, mob, T, mat in (
        ("LGPS_600K", "LGPS_600K_pmg_diffusion/derived_LGPS_600K_unwrapped.extxyz", "Li", "600", "Li10GeP2S12"),
        ("Na3PS4_800K", "Na3PS4_cubic_800K_pmg_diffusion/derived_cNa3PS4_800K_unwrapped.extxyz", "Na", "800", "Na3PS4"),
    ):
        p = os.path.join(shared, rel)
        if os.path.exists(p):
            rows.append({"name": name, "files": p, "topology": "", "mobile": mob, "temperature_K": T, "timestep_ps": "",
                         "material": mat, "family": "thiophosphate", "md_timestep_ps": ""})
    return rows


def start_cluster(workdir: str, n_workers: int = 2) -> tuple[str, list[subprocess.Popen]]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    sf = os.path.join(workdir, "scheduler.json")
    if os.path.exists(sf):
        os.remove(sf)
    log = open(os.path.join(workdir, "cluster.log"), "w")
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", sf], env=env, stdout=log, stderr=subprocess.STDOUT)]
    for _ in range(300):
        if os.path.exists(sf) and os.path.getsize(sf) > 0:
            break
        time.sleep(0.1)
    address = json.load(open(sf))["address"]
    for i in range(n_workers):
        procs.append(subprocess.Popen([sys.executable, "-m", "dask", "worker", address, "--nthreads", "1",
                                       "--no-dashboard", "--name", f"w{i}"], env=env, stdout=log,
                                      stderr=subprocess.STDOUT))
    from distributed import Client

    with Client(address, timeout="30s") as c:
        c.wait_for_workers(n_workers, timeout=120)
    return address, procs


def physics_checks(db: str, rows: list[dict[str, str]]) -> None:
    import numpy as np

    from iondiff_stream.analysis.descriptors import read_all_atoms, vdos_from_positions, vdos_from_velocities

    with open(os.path.join(db, "descriptors.csv"), newline="") as fh:
        desc = {r["name"]: r for r in csv.DictReader(fh)}
    print("\nrun                 T(K)  source     nu_N(THz)  int g  T_kin(K)  Cv(kB/at)  S(kB/at)  F(meV/at)  "
          "<nu>(THz)  Lindemann  hops  D*(cm2/s)")
    for r in rows:
        d = desc.get(r["name"])
        if d is None:
            print(f"{r['name']:<18} not finished")
            continue
        z = np.load(os.path.join(db, "runs", r["name"], "vdos.npz"))
        integral = float(np.trapezoid(z["dos_per_THz_all"], z["freq_THz_all"]))

        def f(k, fmt=".3f"):
            v = d.get(k, "")
            return format(float(v), fmt) if v not in ("", None) else "nan"

        print(f"{r['name']:<18} {float(d['temperature_K']):5.0f}  {d['vdos_source']:<10} {f('nyquist_THz', '8.1f')}  "
              f"{integral:5.3f}  {f('T_kinetic_K_all', '7.0f')}  {f('heat_capacity_kB_per_atom_all')}      "
              f"{f('vib_entropy_kB_per_atom_all')}     {f('vib_free_energy_meV_per_atom_all', '8.1f')}   "
              f"{f('mean_phonon_freq_THz_all', '6.2f')}     {f('lindemann_ratio')}      {d['n_hops']:>4}  "
              f"{f('D_tracer_cm2_s', '.2e')}")
    print("\nCaF2: position-only VDOS (frames every `stride` dumps) against the velocity VDOS (all atoms), "
          "below 0.8 x its Nyquist frequency")
    print("run          stride  nu_N(THz)  L1|g_pos - g_vel| (of 3)  T_kin pos/vel  S_vib pos/vel (kB/atom)")
    for r in rows:
        if not r["name"].startswith("CaF2"):
            continue
        base = os.path.dirname(os.path.abspath(db))  # manifest.csv (relative CaF2 paths) sits next to db/
        tr = read_all_atoms([os.path.join(base, r["files"])], os.path.join(base, r["topology"]),
                            md_timestep_ps=float(r["md_timestep_ps"]))
        T = float(r["temperature_K"])
        ref = vdos_from_velocities(tr.velocities, tr.timestep_ps, tr.masses)
        for stride in (1, 2, 4):
            dp = vdos_from_positions(tr.positions[:, ::stride], tr.timestep_ps * stride, tr.masses)
            sel = ref.freq_THz < 0.8 * dp.nyquist_THz
            gp = np.interp(ref.freq_THz[sel], dp.freq_THz, dp.dos_per_THz)
            l1 = np.trapezoid(np.abs(gp - ref.dos_per_THz[sel]), ref.freq_THz[sel])
            print(f"{r['name']:<12} {stride:6d}  {dp.nyquist_THz:9.1f}  {l1:24.4f}  {dp.T_kinetic_K:5.0f}/{ref.T_kinetic_K:5.0f}"
                  f"    {dp.thermal(T)['vib_entropy_kB_per_atom']:.3f}/{ref.thermal(T)['vib_entropy_kB_per_atom']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--temps", type=float, nargs="+", default=[1000.0, 1300.0, 1600.0])
    ap.add_argument("--nsteps", type=int, default=10000)
    args = ap.parse_args()
    import make_caf2_runs

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    caf2_manifest = make_caf2_runs.make_runs(out, args.temps, nsteps=args.nsteps)
    print(f"CaF2 LAMMPS runs ready ({time.time() - t0:.0f} s)")
    with open(caf2_manifest, newline="") as fh:
        caf2 = list(csv.DictReader(fh))
    rows = shared_rows(os.path.abspath(args.shared)) + caf2
    manifest = os.path.join(out, "manifest.csv")
    with open(manifest, "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    address, procs = start_cluster(out)
    try:
        t1 = time.time()
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        subprocess.run([sys.executable, "-m", "iondiff_stream.cli", "database", manifest, "--out",
                        os.path.join(out, "db"), "--scheduler", address], env=env, check=True)
        print(f"database built on {address} with 2 workers in {time.time() - t1:.0f} s")
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            p.wait(30)
    physics_checks(os.path.join(out, "db"), rows)


if __name__ == "__main__":
    main()
