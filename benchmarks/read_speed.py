"""Reading speed: LAMMPS text dump with MDAnalysis's ``LAMMPSDUMP`` reader vs iondiff_stream's ``IONDIFFDUMP``.

Writes a dump (``--frames`` frames of 64 atoms, ``id type x y z`` as LAMMPS writes them, atoms in shuffled
order), then reads every frame with both readers in the same process (MDAnalysis imported for both; the
time of our reader includes importing pandas, which it uses for large blocks), checks that positions, boxes
and times are identical bit for bit, and prints both times (wall and process CPU: the CPU ratio is the one that
holds on a loaded machine) and the ratio. Also times ``collect_positions``
(reading + unwrapping) through either reader::

    python benchmarks/read_speed.py --frames 20000 --work /tmp/read
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np


def write_dump(path: str, data: str, n_frames: int, n_atoms: int = 64, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    L = 12.0
    x = rng.uniform(0, L, (n_atoms, 3))
    with open(data, "w") as fh:
        fh.write(f"bench\n\n{n_atoms} atoms\n2 atom types\n\n0 {L} xlo xhi\n0 {L} ylo yhi\n0 {L} zlo zhi\n\n"
                 "Masses\n\n1 6.94\n2 32.06\n\nAtoms # atomic\n\n")
        for i in range(n_atoms):
            fh.write(f"{i + 1} {1 + (i >= n_atoms // 2)} {x[i, 0]:.6f} {x[i, 1]:.6f} {x[i, 2]:.6f}\n")
    with open(path, "w") as fh:
        for t in range(n_frames):
            x = x + rng.normal(0, 0.1, x.shape)
            w = np.mod(x, L)
            fh.write(f"ITEM: TIMESTEP\n{10 * t}\nITEM: NUMBER OF ATOMS\n{n_atoms}\nITEM: BOX BOUNDS pp pp pp\n"
                     f"0 {L}\n0 {L}\n0 {L}\nITEM: ATOMS id type x y z\n")
            order = rng.permutation(n_atoms)
            fh.write("".join(f"{i + 1} {1 + (i >= n_atoms // 2)} {w[i, 0]:.6g} {w[i, 1]:.6g} {w[i, 2]:.6g}\n"
                             for i in order))


def read_all(u) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = u.trajectory.n_frames
    pos = np.empty((n, len(u.atoms), 3), np.float32)
    dims = np.empty((n, 6), np.float32)
    times = np.empty(n)
    for k, ts in enumerate(u.trajectory):
        pos[k] = ts.positions
        dims[k] = ts.dimensions
        times[k] = ts.time
    return pos, dims, times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--work", default="/tmp/iondiff_read")
    ap.add_argument("--preimport", action="store_true", help="import pandas before timing (as MDAnalysis is)")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    dump, data = os.path.join(a.work, f"bench_{a.frames}.dump"), os.path.join(a.work, "bench.data")
    if not os.path.exists(dump):
        write_dump(dump, data, a.frames)
    size = os.path.getsize(dump) / 1e6

    import MDAnalysis as mda

    from iondiff_stream.io import collect_positions, load_universe
    from iondiff_stream.io.lammps_dump import FastDumpReader

    if a.preimport:
        import pandas  # noqa: F401

    kw = dict(topology_format="DATA", atom_style="id type x y z", dt=0.002)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0, c0 = time.perf_counter(), time.process_time()
        ours = read_all(mda.Universe(data, dump, format=FastDumpReader, **kw))
        t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        ref = read_all(mda.Universe(data, dump, format="LAMMPSDUMP", **kw))
        t_mda, c_mda = time.perf_counter() - t0, time.process_time() - c0
    same = all(np.array_equal(x, y) for x, y in zip(ref, ours))
    print(f"dump: {a.frames} frames x 64 atoms, {size:.0f} MB; pandas imported "
          f"{'before timing' if a.preimport else 'within our time'}")
    print(f"MDAnalysis LAMMPSDUMP   wall {t_mda:7.2f} s  cpu {c_mda:7.2f} s  ({a.frames / c_mda:8.0f} frames per cpu s)")
    print(f"iondiff IONDIFFDUMP     wall {t_ours:7.2f} s  cpu {c_ours:7.2f} s  ({a.frames / c_ours:8.0f} frames per cpu s)")
    print(f"ratio (cpu) {c_mda / c_ours:.1f}x, (wall) {t_mda / t_ours:.1f}x   identical positions/boxes/times: {same}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.process_time()
        collect_positions(load_universe(dump, topology=data), "type 1", md_timestep_ps=0.002)
        t_c1 = time.process_time() - t0
        t0 = time.process_time()
        collect_positions(load_universe(dump, topology=data, format="LAMMPSDUMP"), "type 1", md_timestep_ps=0.002)
        t_c2 = time.process_time() - t0
    print(f"collect_positions (read + unwrap, cpu): MDAnalysis reader {t_c2:.2f} s, ours {t_c1:.2f} s, "
          f"ratio {t_c2 / t_c1:.1f}x")
    if not same:
        raise SystemExit("positions differ")


if __name__ == "__main__":
    main()
