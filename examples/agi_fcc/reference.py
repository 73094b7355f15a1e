"""Independent reference hop count for the fcc-iodide AgI runs (no ``iondiff_stream`` code is used).

Same per-frame framework-site method as ``examples/agi/reference.py``, for an fcc anion framework:

1. Drift: the iodide sublattice's mean displacement from the first frame is subtracted from every atom.
2. Lattice: the I atoms are mapped once (first frame) onto the ideal fcc lattice of the n x n x n cubic cells
   (a = L / n), which also gives the sublattice's offset in the dump's box.
3. Sites: both kinds of holes of the fcc iodide lattice, the Ag sites of alpha-CuI-type structures: the 8
   tetrahedral holes per cubic cell ((1/4, 1/4, 1/4)-type, 4 I at a sqrt(3)/4) and the 4 octahedral holes
   ((1/2, 1/2, 1/2) and the edge centres, 6 I at a/2); 12 n^3 sites. In every frame a site sits at the mean of
   the minimum-image positions of its I neighbours (identified once on the ideal lattice) in that frame.
4. Assignment: every Ag goes to its nearest site (tetrahedral or octahedral, minimum image) in every frame.
   A second pass with the tetrahedral holes only is reported as ``n_hops_tet_only``.
5. Visits: maximal runs of frames at the same site; runs shorter than ``min_stay_ps`` (0.2 ps) are dropped,
   consecutive remaining runs at the same site merged; a committed hop is a change between two consecutive
   remaining visits at different sites. Jump classes by the ideal sites: tet-oct (a sqrt(3)/4, the nearest
   neighbours), tet-tet (a/2), oct-oct (a/sqrt(2)), longer.

Also D* of Ag from a plain least-squares line through the MSD (all time origins, lags 10-50 % of the run,
iodide drift removed) and the iodide MSD (fcc stability).

Usage::

    python examples/agi_fcc/reference.py RUN_DIR [RUN_DIR ...] [--md-timestep-ps 0.004]

writes ``RUN_DIR/reference.npz`` and ``RUN_DIR/reference.json`` (per-ion hop counts keyed by atom id) and
prints the JSON summary (without the per-hop list). The frame time is ``RUN_DIR/run.json``'s ``frame_dt_ps``
when present, else the dump's step spacing times ``--md-timestep-ps``.
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

#: fcc I positions of the cubic cell (fractional)
FCC_FRAC = np.array([(0, 0, 0), (0, .5, .5), (.5, 0, .5), (.5, .5, 0)])
#: the 8 tetrahedral holes of the cubic cell
TET_FRAC = np.array([(x, y, z) for x in (.25, .75) for y in (.25, .75) for z in (.25, .75)])
#: the 4 octahedral holes of the cubic cell (body centre, edge centres)
OCT_FRAC = np.array([(.5, .5, .5), (.5, 0, 0), (0, .5, 0), (0, 0, .5)])


def reference_hops(positions: np.ndarray, types: np.ndarray, box: np.ndarray, dt_ps: float,
                   mobile_type: int = 1, frame_type: int = 2, n_cells: int | None = None,
                   min_stay_ps: float = 0.2) -> dict:
    """Committed hops of Ag between the tetrahedral and octahedral holes of the fcc iodide (module doc)."""
    L = np.asarray(box, float)
    mob = np.flatnonzero(types == mobile_type)
    fra = np.flatnonzero(types == frame_type)
    nf = positions.shape[0]
    if n_cells is None:
        n_cells = int(round((len(fra) / 4) ** (1 / 3)))
    a = L / n_cells
    drift = (positions[:, fra] - positions[0:1, fra]).mean(1)
    x = positions - drift[:, None, :]
    xi = x[:, fra]
    cells = np.stack(np.meshgrid(*[np.arange(n_cells)] * 3, indexing="ij"), -1).reshape(-1, 3)
    ideal_i = ((cells[:, None, :] + FCC_FRAC[None]) * a).reshape(-1, 3)
    ideal_t = ((cells[:, None, :] + TET_FRAC[None]) * a).reshape(-1, 3)
    ideal_o = ((cells[:, None, :] + OCT_FRAC[None]) * a).reshape(-1, 3)
    offset = np.zeros(3)
    for _ in range(3):
        _, lat = cKDTree(_wrap(ideal_i + offset, L), boxsize=L).query(_wrap(xi[0], L))
        offset = offset + _minimg(xi[0] - (ideal_i[lat] + offset), L).mean(0)
    if len(np.unique(lat)) != len(fra) or len(fra) != len(ideal_i):
        raise ValueError("iodide atoms do not map one-to-one onto the fcc lattice in the first frame")
    atom_of_lattice = np.empty(len(ideal_i), int)
    atom_of_lattice[lat] = np.arange(len(fra))

    def neighbours(ideal_sites: np.ndarray, k: int, dist: float) -> np.ndarray:
        d, nb = cKDTree(_wrap(ideal_i, L), boxsize=L).query(_wrap(ideal_sites, L), k=k)
        if not np.allclose(d, dist, atol=1e-6):
            raise ValueError("unexpected neighbour distances of the ideal sites")
        return atom_of_lattice[nb]

    nb_t = neighbours(ideal_t, 4, a[0] * np.sqrt(3) / 4)
    nb_o = neighbours(ideal_o, 6, a[0] / 2)
    ideal_s = np.vstack([ideal_t, ideal_o])
    n_t = len(ideal_t)
    sites = _wrap(ideal_s + offset, L)

    def frame_sites(f: int) -> np.ndarray:
        st = sites[:n_t] + _minimg(xi[f][nb_t] - sites[:n_t, None, :], L).mean(1)
        so = sites[n_t:] + _minimg(xi[f][nb_o] - sites[n_t:, None, :], L).mean(1)
        return np.vstack([st, so])

    xm = x[:, mob]
    site_of_frame = np.empty((nf, len(mob)), np.int32)
    site_tet = np.empty((nf, len(mob)), np.int32)
    sites_sum = np.zeros_like(sites)
    dmax = 0.0
    for f in range(nf):
        s = frame_sites(f)
        sites_sum += _minimg(s - sites, L)
        dist, site_of_frame[f] = cKDTree(_wrap(s, L), boxsize=L).query(_wrap(xm[f], L))
        dmax = max(dmax, float(dist.max()))
        _, site_tet[f] = cKDTree(_wrap(s[:n_t], L), boxsize=L).query(_wrap(xm[f], L))
    sites_mean = _wrap(sites + sites_sum / nf, L)

    min_frames = min_stay_ps / dt_ps - 1e-9
    hops, visits_len, visited, raw = [], [], set(), np.zeros(len(mob), int)
    hops_tet_only, frames_kept_oct, frames_kept = 0, 0, 0
    for j in range(len(mob)):
        seq = site_of_frame[:, j]
        raw[j] = int((seq[1:] != seq[:-1]).sum())
        merged = _visits(seq, min_frames)
        for k in range(1, len(merged)):
            hops.append((j, merged[k][1], merged[k - 1][0], merged[k][0]))
        for v, s0, e0 in merged:
            visited.add(v)
            visits_len.append((e0 - s0) * dt_ps)
            frames_kept += e0 - s0
            if v >= n_t:
                frames_kept_oct += e0 - s0
        hops_tet_only += max(0, len(_visits(site_tet[:, j], min_frames)) - 1)
    hops_arr = np.array(hops, dtype=np.int64).reshape(-1, 4)
    jump = (np.linalg.norm(_minimg(ideal_s[hops_arr[:, 3]] - ideal_s[hops_arr[:, 2]], L), axis=1)
            if len(hops) else np.zeros(0))
    a0 = float(a[0])
    classes = {"tet_oct": a0 * np.sqrt(3) / 4, "tet_tet": a0 / 2, "oct_oct": a0 / np.sqrt(2)}
    share = {f"share_{k}": float(np.mean(np.abs(jump - d) < 0.05)) if len(hops) else float("nan")
             for k, d in classes.items()}
    per_ion = np.bincount(hops_arr[:, 0], minlength=len(mob)) if len(hops) else np.zeros(len(mob), int)
    run_ps = (nf - 1) * dt_ps
    msd_i = ((xi - xi[0:1]) ** 2).sum(-1).mean(1)
    rms_dev = np.sqrt((_minimg(xi - (ideal_i[lat] + offset)[None], L) ** 2).sum(-1).mean())
    D, msd = plain_msd_diffusion(xm, dt_ps)
    lengths, counts = np.unique(np.round(jump, 1), return_counts=True)
    return {
        "hops": hops_arr, "jump_A": jump, "hops_per_ion": per_ion, "raw_changes_per_ion": raw,
        "site_of_frame": site_of_frame, "sites_A": sites, "sites_mean_A": sites_mean,
        "msd_Ag_A2": msd, "msd_I_from_first_A2": msd_i,
        "n_frames": nf, "frame_dt_ps": dt_ps, "run_ps": run_ps, "n_mobile": len(mob), "n_framework": len(fra),
        "n_sites": len(sites), "n_tet_sites": n_t, "n_oct_sites": len(sites) - n_t, "lattice_a_A": a0,
        "n_hops": int(len(hops)), "nu_per_ps": len(hops) / (len(mob) * run_ps), "raw_changes": int(raw.sum()),
        "share_nn_jumps": share["share_tet_oct"], **share, "nn_jump_A": classes["tet_oct"],
        "jump_length_counts": {f"{v:.1f}": int(c) for v, c in zip(lengths, counts)},
        "n_hops_tet_only": int(hops_tet_only),
        "oct_share_frames_raw": float((site_of_frame >= n_t).mean()),
        "oct_share_frames_kept": frames_kept_oct / max(1, frames_kept),
        "n_sites_visited": len(visited), "n_tet_visited": sum(v < n_t for v in visited),
        "n_oct_visited": sum(v >= n_t for v in visited), "mean_residence_ps": float(np.mean(visits_len)),
        "D_tracer_plain_cm2_s": D, "msd_I_max_A2": float(msd_i.max()), "msd_I_end_A2": float(msd_i[-1]),
        "iodide_rms_from_ideal_A": float(rms_dev), "max_dist_to_nearest_site_A": dmax, "min_stay_ps": min_stay_ps,
    }


def run_reference(run_dir: str, md_timestep_ps: float = 0.004, min_stay_ps: float = 0.2) -> dict:
    """Reference for ``run_dir/dump.lammpstrj``; writes ``reference.npz`` and ``reference.json`` there."""
    steps, ids, types, box, xyz = read_dump(os.path.join(run_dir, "dump.lammpstrj"))
    meta_path = os.path.join(run_dir, "run.json")
    meta = json.load(open(meta_path)) if os.path.exists(meta_path) else {}
    dt = float(meta["frame_dt_ps"]) if "frame_dt_ps" in meta else float(np.median(np.diff(steps))) * md_timestep_ps
    r = reference_hops(xyz, types, box, dt, min_stay_ps=min_stay_ps)
    mob_ids = ids[types == 1]
    np.savez_compressed(
        os.path.join(run_dir, "reference.npz"), mobile_atom_ids=mob_ids, hops=r["hops"], jump_A=r["jump_A"],
        hops_per_ion=r["hops_per_ion"], raw_changes_per_ion=r["raw_changes_per_ion"],
        site_of_frame=r["site_of_frame"], sites_A=r["sites_A"], sites_mean_A=r["sites_mean_A"],
        n_tet_sites=r["n_tet_sites"], msd_Ag_A2=r["msd_Ag_A2"], msd_I_from_first_A2=r["msd_I_from_first_A2"],
        box_A=box, steps=steps)
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
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", nargs="+")
    ap.add_argument("--md-timestep-ps", type=float, default=0.004)
    ap.add_argument("--min-stay-ps", type=float, default=0.2)
    a = ap.parse_args()
    for d in a.run_dirs:
        print(json.dumps(run_reference(d, a.md_timestep_ps, a.min_stay_ps)), flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
