"""Independent reference hop count for the alpha-AgI runs (no ``iondiff_stream`` code is used).

Definition (per frame, on the LAMMPS text dump ``id type xu yu zu``, atoms sorted by id):

1. Drift: the iodide sublattice's mean displacement from the first frame is subtracted from every atom.
2. Lattice: the I atoms are mapped once (first frame) onto the ideal bcc sites of the n x n x n cubic cells
   (a = L / n), which also gives the sublattice's offset in the dump's box.
3. Sites: the 12 tetrahedral 12d sites per cubic cell ((1/2, 1/4, 0) and permutations, 1500 for n = 5);
   the 4 nearest I of every site are found once on the ideal lattice; in every frame a site sits at the mean
   of the minimum-image positions of its 4 I atoms in that frame.
4. Assignment: every Ag goes to its nearest site (minimum image, periodic k-d tree) in every frame.
5. Visits: maximal runs of frames at the same site; runs shorter than ``min_stay_ps`` (0.2 ps) are dropped,
   consecutive remaining runs at the same site are merged; a committed hop is a change between two
   consecutive remaining visits at different sites. Its frame is the first frame of the new visit; its
   jump length is the minimum-image distance between the two ideal sites (1.79 A = a sqrt(2)/4 for
   nearest tetrahedral neighbours).

Also: D* of Ag from a plain least-squares line through the MSD (all time origins, lags 10-50 % of the run,
iodide drift removed), and the iodide MSD (bcc stability).

Usage::

    python examples/agi/reference.py RUN_DIR [RUN_DIR ...] [--md-timestep-ps 0.004] [--every 5]

writes ``RUN_DIR/reference.npz`` and ``RUN_DIR/reference.json`` and prints the JSON summary (without the
per-hop list). The frame time is taken from ``RUN_DIR/run.json`` (``frame_dt_ps``) when present, else from
the dump's step numbers times ``--md-timestep-ps``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

import numpy as np
from scipy.spatial import cKDTree
import sys as _sys

_sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from framework_reference import (committed_visits as _visits, minimg as _minimg, msd_fft,  # noqa: E402,F401
                                 plain_msd_diffusion, read_dump, wrap as _wrap)

log = logging.getLogger(__name__)

#: fractional coordinates of the 12 tetrahedral (12d) sites of the bcc cubic cell
TET_FRAC = np.array([
    (0, .5, .25), (0, .5, .75), (0, .25, .5), (0, .75, .5),
    (.5, 0, .25), (.5, 0, .75), (.25, 0, .5), (.75, 0, .5),
    (.5, .25, 0), (.5, .75, 0), (.25, .5, 0), (.75, .5, 0),
])
#: fractional coordinates of the 2 I of the bcc cubic cell
BCC_FRAC = np.array([(0, 0, 0), (.5, .5, .5)])


def reference_hops(positions: np.ndarray, types: np.ndarray, box: np.ndarray, dt_ps: float,
                   mobile_type: int = 1, anion_type: int = 2, n_cells: int | None = None,
                   min_stay_ps: float = 0.2) -> dict:
    """Committed tetrahedral-site hops of the mobile ions (the independent reference, see module doc).

    Parameters
    ----------
    positions : ndarray, shape (n_frames, n_atoms, 3)
        Unwrapped positions, A.
    types : ndarray, shape (n_atoms,)
        Atom types.
    box : ndarray, shape (3,)
        Cubic box lengths, A.
    dt_ps : float
        Time between frames, ps.
    mobile_type, anion_type : int
        Types of Ag and I.
    n_cells : int, optional
        Cubic cells per edge (default: from the number of I, 2 per cell).
    min_stay_ps : float
        Visits shorter than this are dropped, ps.

    Returns
    -------
    dict
        ``hops`` (n_hops, 4) int: mobile index, frame, from site, to site; ``jump_A`` (n_hops,);
        ``hops_per_ion`` (n_mobile,); ``site_of_frame`` (n_frames, n_mobile) nearest site per frame;
        ``sites_A`` (n_sites, 3) ideal sites in the dump's box frame (iodide offset of the first frame,
        drift removed); ``sites_mean_A`` (n_sites, 3) time-averaged per-frame sites; scalar statistics.
    """
    L = np.asarray(box, float)
    mob = np.flatnonzero(types == mobile_type)
    ani = np.flatnonzero(types == anion_type)
    nf = positions.shape[0]
    if n_cells is None:
        n_cells = int(round((len(ani) / 2) ** (1 / 3)))
    a = L / n_cells
    # 1. drift of the iodide sublattice
    drift = (positions[:, ani] - positions[0:1, ani]).mean(1)  # (nf, 3)
    x = positions - drift[:, None, :]
    xi = x[:, ani]
    # 2. ideal bcc lattice, I -> lattice site, offset of the sublattice in the box
    cells = np.stack(np.meshgrid(*[np.arange(n_cells)] * 3, indexing="ij"), -1).reshape(-1, 3)
    ideal_i = ((cells[:, None, :] + BCC_FRAC[None]) * a).reshape(-1, 3)
    ideal_t = ((cells[:, None, :] + TET_FRAC[None]) * a).reshape(-1, 3)
    offset = np.zeros(3)
    for _ in range(3):
        _, lat = cKDTree(_wrap(ideal_i + offset, L), boxsize=L).query(_wrap(xi[0], L))
        offset = offset + _minimg(xi[0] - (ideal_i[lat] + offset), L).mean(0)
    if len(np.unique(lat)) != len(ani):
        raise ValueError("iodide atoms do not map one-to-one onto the bcc lattice in the first frame")
    atom_of_lattice = np.empty(len(ani), int)
    atom_of_lattice[lat] = np.arange(len(ani))
    sites = _wrap(ideal_t + offset, L)
    # 3. the 4 nearest I of every tetrahedral site (ideal lattice)
    d4, nb = cKDTree(_wrap(ideal_i, L), boxsize=L).query(_wrap(ideal_t, L), k=4)
    if not np.allclose(d4, a[0] * np.sqrt(5) / 4, atol=1e-6):
        raise ValueError("tetrahedral sites must have 4 I at a sqrt(5)/4")
    nb_atoms = atom_of_lattice[nb]  # (n_sites, 4)
    # 3-4. per-frame sites and nearest-site assignment
    xm = x[:, mob]
    site_of_frame = np.empty((nf, len(mob)), np.int32)
    sites_sum = np.zeros_like(sites)
    dmax = 0.0
    for f in range(nf):
        s = sites + _minimg(xi[f][nb_atoms] - sites[:, None, :], L).mean(1)
        sites_sum += _minimg(s - sites, L)
        dist, site_of_frame[f] = cKDTree(_wrap(s, L), boxsize=L).query(_wrap(xm[f], L))
        dmax = max(dmax, float(dist.max()))
    sites_mean = _wrap(sites + sites_sum / nf, L)
    # 5. visits, 0.2 ps filter, committed hops
    min_frames = min_stay_ps / dt_ps - 1e-9
    hops, visits_len, visits_interior, raw_changes = [], [], [], np.zeros(len(mob), int)
    visited = set()
    for j in range(len(mob)):
        seq = site_of_frame[:, j]
        change = np.flatnonzero(seq[1:] != seq[:-1]) + 1
        raw_changes[j] = len(change)
        starts = np.r_[0, change]
        ends = np.r_[change, nf]
        keep = (ends - starts) >= min_frames
        ks, ke, kv = starts[keep], ends[keep], seq[starts[keep]]
        merged: list[list[int]] = []  # [site, start, end]
        for s0, e0, v in zip(ks, ke, kv):
            if merged and merged[-1][0] == v:
                merged[-1][2] = e0
            else:
                merged.append([int(v), int(s0), int(e0)])
        for k in range(1, len(merged)):
            hops.append((j, merged[k][1], merged[k - 1][0], merged[k][0]))
        for v, s0, e0 in merged:
            visited.add(v)
            visits_len.append((e0 - s0) * dt_ps)
            if s0 > 0 and e0 < nf:
                visits_interior.append((e0 - s0) * dt_ps)
    hops_arr = np.array(hops, dtype=np.int64).reshape(-1, 4)
    jump = np.linalg.norm(_minimg(ideal_t[hops_arr[:, 3]] - ideal_t[hops_arr[:, 2]], L), axis=1) if len(hops) \
        else np.zeros(0)
    d_nn = a[0] * np.sqrt(2) / 4
    per_ion = np.bincount(hops_arr[:, 0], minlength=len(mob)) if len(hops) else np.zeros(len(mob), int)
    run_ps = (nf - 1) * dt_ps
    # iodide MSD (drift removed) from the first frame: bcc stability
    msd_i = ((xi - xi[0:1]) ** 2).sum(-1).mean(1)
    rms_dev = np.sqrt((_minimg(xi - (ideal_i[lat] + offset)[None], L) ** 2).sum(-1).mean())
    D, msd = plain_msd_diffusion(xm, dt_ps)
    lengths, counts = np.unique(np.round(jump, 1), return_counts=True)
    return {
        "hops": hops_arr, "jump_A": jump, "hops_per_ion": per_ion, "raw_changes_per_ion": raw_changes,
        "site_of_frame": site_of_frame, "sites_A": sites, "sites_mean_A": sites_mean,
        "iodide_offset_A": offset, "msd_Ag_A2": msd, "msd_I_from_first_A2": msd_i,
        "n_frames": nf, "frame_dt_ps": dt_ps, "run_ps": run_ps, "n_mobile": len(mob), "n_sites": len(sites),
        "lattice_a_A": float(a[0]), "n_hops": int(len(hops)), "nu_per_ps": len(hops) / (len(mob) * run_ps),
        "raw_changes": int(raw_changes.sum()),
        "share_tet_tet_1p79": float(np.mean(np.abs(jump - d_nn) < 0.05)) if len(hops) else float("nan"),
        "jump_length_counts": {f"{v:.1f}": int(c) for v, c in zip(lengths, counts)},
        "n_sites_visited": len(visited), "mean_residence_ps": float(np.mean(visits_len)),
        "mean_residence_interior_ps": float(np.mean(visits_interior)) if visits_interior else float("nan"),
        "D_tracer_plain_cm2_s": D, "msd_I_max_A2": float(msd_i.max()), "msd_I_end_A2": float(msd_i[-1]),
        "iodide_rms_from_ideal_A": float(rms_dev), "max_dist_to_nearest_site_A": dmax,
        "min_stay_ps": min_stay_ps,
    }


def run_reference(run_dir: str, md_timestep_ps: float = 0.004, mobile_type: int = 1, anion_type: int = 2,
                  min_stay_ps: float = 0.2) -> dict:
    """Reference for ``run_dir/dump.lammpstrj``; writes ``reference.npz`` and ``reference.json`` there.

    Parameters
    ----------
    run_dir : str
        Directory with ``dump.lammpstrj`` (and optionally ``run.json`` with ``frame_dt_ps``).
    md_timestep_ps : float
        MD timestep, ps (frame time = step difference x this) when ``run.json`` is absent.
    mobile_type, anion_type : int
        LAMMPS types of Ag and I.
    min_stay_ps : float
        Shortest kept visit, ps.

    Returns
    -------
    dict
        JSON-able summary (also written to ``reference.json``, which adds the per-hop list).
    """
    steps, ids, types, box, xyz = read_dump(os.path.join(run_dir, "dump.lammpstrj"))
    meta_path = os.path.join(run_dir, "run.json")
    meta = json.load(open(meta_path)) if os.path.exists(meta_path) else {}
    dt = float(meta["frame_dt_ps"]) if "frame_dt_ps" in meta else float(np.median(np.diff(steps))) * md_timestep_ps
    r = reference_hops(xyz, types, box, dt, mobile_type, anion_type, min_stay_ps=min_stay_ps)
    mob_ids = ids[types == mobile_type]
    np.savez_compressed(
        os.path.join(run_dir, "reference.npz"), mobile_atom_ids=mob_ids, hops=r["hops"], jump_A=r["jump_A"],
        hops_per_ion=r["hops_per_ion"], raw_changes_per_ion=r["raw_changes_per_ion"],
        site_of_frame=r["site_of_frame"], sites_A=r["sites_A"], sites_mean_A=r["sites_mean_A"],
        msd_Ag_A2=r["msd_Ag_A2"], msd_I_from_first_A2=r["msd_I_from_first_A2"], box_A=box, steps=steps)
    summary = {k: v for k, v in r.items() if not isinstance(v, np.ndarray)}
    summary.update({"run_dir": run_dir, "T": meta.get("T"), "box_A": box.tolist(),
                    "hop_columns": ["atom_id", "frame", "from_site", "to_site", "jump_A"]})
    full = dict(summary)
    full["hops_per_ion"] = {int(i): int(c) for i, c in zip(mob_ids, r["hops_per_ion"])}
    full["hops"] = [[int(mob_ids[h[0]]), int(h[1]), int(h[2]), int(h[3]), round(float(j), 4)]
                    for h, j in zip(r["hops"], r["jump_A"])]
    full["sites_A"] = np.round(r["sites_A"], 5).tolist()
    with open(os.path.join(run_dir, "reference.json"), "w") as fh:
        json.dump(full, fh)
    log.info("%s: %d hops, nu = %.3f /ps", run_dir, r["n_hops"], r["nu_per_ps"])
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", nargs="+")
    ap.add_argument("--md-timestep-ps", type=float, default=0.004)
    ap.add_argument("--min-stay-ps", type=float, default=0.2)
    a = ap.parse_args()
    for d in a.run_dirs:
        print(json.dumps(run_reference(d, a.md_timestep_ps, min_stay_ps=a.min_stay_ps)), flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
