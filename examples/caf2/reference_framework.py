"""Independent reference hop count for the CaF2 series of ``run_series.py`` (no ``iondiff_stream`` code is used).

Same method as ``examples/agi/reference.py`` (per-frame framework sites), adapted to fluorite:

1. Drift: the Ca sublattice's mean displacement from the first frame is subtracted from every atom.
2. Lattice: the Ca atoms are mapped once (first frame) onto the ideal fcc lattice of the n x n x n cubic
   cells (a = L / n; removed Ca leave empty lattice points), which also gives the sublattice's offset.
3. Sites: the F sites are the 8 tetrahedral holes per cubic cell ((1/4, 1/4, 1/4) and the other 7
   (+-1/4)-type points), each with 4 Ca at a sqrt(3)/4; the octahedral holes ((1/2, 1/2, 1/2) and the edge
   centres, 4 per cell, 6 Ca at a/2) are the interstitial sites. In every frame a site sits at the mean of the
   minimum-image positions of its (present) Ca neighbours in that frame.
4. Assignment: every F goes to its nearest tetrahedral site (minimum image) in every frame: the primary
   reference. A second pass assigns every F to the nearest site of tetrahedral + octahedral sites together,
   to count the visits (>= 0.2 ps) that rest on an octahedral interstitial.
5. Visits: maximal runs of frames at the same site; runs shorter than ``min_stay_ps`` (0.2 ps) are dropped,
   consecutive remaining runs at the same site are merged; a committed hop is a change between two
   consecutive remaining visits at different sites. Jump length: minimum-image distance between the two
   ideal sites (a / 2 = nearest tetrahedral neighbours along <100>).

Also D* of F from a plain least-squares line through the MSD (all time origins, lags 10-50 % of the run,
Ca drift removed) and the Ca MSD (framework stability).

Usage::

    python examples/caf2/reference_framework.py OUT_DIR [--temps 1300 1500 1700] [--tags c n]
                                                [--md-timestep-ps 0.002]

reads ``OUT_DIR/T{T}_{tag}.dump`` (``id type xu yu zu``, type 1 = Ca, type 2 = F) and writes
``OUT_DIR/T{T}/reference.json`` (tag ``c``) or ``OUT_DIR/T{T}/reference_{tag}.json`` (other tags), plus
``.npz`` next to it, and prints one JSON summary line per run.
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

#: fcc Ca positions of the cubic cell (fractional)
FCC_FRAC = np.array([(0, 0, 0), (0, .5, .5), (.5, 0, .5), (.5, .5, 0)])
#: the 8 tetrahedral holes (F sites) of the cubic cell
TET_FRAC = np.array([(x, y, z) for x in (.25, .75) for y in (.25, .75) for z in (.25, .75)])
#: the 4 octahedral holes of the cubic cell (body centre, edge centres)
OCT_FRAC = np.array([(.5, .5, .5), (.5, 0, 0), (0, .5, 0), (0, 0, .5)])


def reference_hops(positions: np.ndarray, types: np.ndarray, box: np.ndarray, dt_ps: float,
                   mobile_type: int = 2, frame_type: int = 1, n_cells: int | None = None,
                   min_stay_ps: float = 0.2) -> dict:
    """Committed tetrahedral-site hops of F (see the module doc) and octahedral-visit statistics."""
    L = np.asarray(box, float)
    mob = np.flatnonzero(types == mobile_type)
    fra = np.flatnonzero(types == frame_type)
    nf = positions.shape[0]
    if n_cells is None:
        n_cells = int(round((len(fra) / 4) ** (1 / 3)))
    a = L / n_cells
    drift = (positions[:, fra] - positions[0:1, fra]).mean(1)
    x = positions - drift[:, None, :]
    xc = x[:, fra]
    cells = np.stack(np.meshgrid(*[np.arange(n_cells)] * 3, indexing="ij"), -1).reshape(-1, 3)
    ideal_c = ((cells[:, None, :] + FCC_FRAC[None]) * a).reshape(-1, 3)
    ideal_t = ((cells[:, None, :] + TET_FRAC[None]) * a).reshape(-1, 3)
    ideal_o = ((cells[:, None, :] + OCT_FRAC[None]) * a).reshape(-1, 3)
    offset = np.zeros(3)
    for _ in range(3):
        _, lat = cKDTree(_wrap(ideal_c + offset, L), boxsize=L).query(_wrap(xc[0], L))
        offset = offset + _minimg(xc[0] - (ideal_c[lat] + offset), L).mean(0)
    if len(np.unique(lat)) != len(fra):
        raise ValueError("Ca atoms do not map one-to-one onto the fcc lattice in the first frame")
    atom_of_lattice = np.full(len(ideal_c), -1)
    atom_of_lattice[lat] = np.arange(len(fra))  # -1: Ca vacancy

    def neighbours(ideal_sites: np.ndarray, k: int, dist: float) -> np.ndarray:
        d, nb = cKDTree(_wrap(ideal_c, L), boxsize=L).query(_wrap(ideal_sites, L), k=k)
        if not np.allclose(d, dist, atol=1e-6):
            raise ValueError("unexpected neighbour distances of the ideal sites")
        return atom_of_lattice[nb]

    nb_t = neighbours(ideal_t, 4, a[0] * np.sqrt(3) / 4)
    nb_o = neighbours(ideal_o, 6, a[0] / 2)
    sites_t = _wrap(ideal_t + offset, L)
    sites_o = _wrap(ideal_o + offset, L)

    def frame_sites(sites: np.ndarray, nb: np.ndarray, f: int) -> np.ndarray:
        ok = nb >= 0
        d = _minimg(xc[f][np.where(ok, nb, 0)] - sites[:, None, :], L) * ok[..., None]
        return sites + d.sum(1) / ok.sum(1)[:, None]

    xm = x[:, mob]
    n_t = len(sites_t)
    site_t = np.empty((nf, len(mob)), np.int32)
    site_all = np.empty((nf, len(mob)), np.int32)
    sum_t = np.zeros_like(sites_t)
    dmax = 0.0
    for f in range(nf):
        st = frame_sites(sites_t, nb_t, f)
        so = frame_sites(sites_o, nb_o, f)
        sum_t += _minimg(st - sites_t, L)
        dist, site_t[f] = cKDTree(_wrap(st, L), boxsize=L).query(_wrap(xm[f], L))
        dmax = max(dmax, float(dist.max()))
        _, site_all[f] = cKDTree(_wrap(np.vstack([st, so]), L), boxsize=L).query(_wrap(xm[f], L))
    sites_mean = _wrap(sites_t + sum_t / nf, L)

    min_frames = min_stay_ps / dt_ps - 1e-9
    hops, visits_len, visited, raw = [], [], set(), np.zeros(len(mob), int)
    hops_all, oct_visits, oct_frames, oct_ions = 0, 0, 0, set()
    for j in range(len(mob)):
        seq = site_t[:, j]
        raw[j] = int((seq[1:] != seq[:-1]).sum())
        merged = _visits(seq, min_frames)
        for k in range(1, len(merged)):
            hops.append((j, merged[k][1], merged[k - 1][0], merged[k][0]))
        for v, s0, e0 in merged:
            visited.add(v)
            visits_len.append((e0 - s0) * dt_ps)
        m_all = _visits(site_all[:, j], min_frames)
        hops_all += max(0, len(m_all) - 1)
        for v, s0, e0 in m_all:
            if v >= n_t:
                oct_visits += 1
                oct_frames += e0 - s0
                oct_ions.add(j)
    oct_frames_raw = int((site_all >= n_t).sum())
    hops_arr = np.array(hops, dtype=np.int64).reshape(-1, 4)
    jump = (np.linalg.norm(_minimg(ideal_t[hops_arr[:, 3]] - ideal_t[hops_arr[:, 2]], L), axis=1)
            if len(hops) else np.zeros(0))
    d_nn = a[0] / 2
    per_ion = np.bincount(hops_arr[:, 0], minlength=len(mob)) if len(hops) else np.zeros(len(mob), int)
    run_ps = (nf - 1) * dt_ps
    msd_c = ((xc - xc[0:1]) ** 2).sum(-1).mean(1)
    D, msd = plain_msd_diffusion(xm, dt_ps)
    lengths, counts = np.unique(np.round(jump, 1), return_counts=True)
    return {
        "hops": hops_arr, "jump_A": jump, "hops_per_ion": per_ion, "raw_changes_per_ion": raw,
        "site_of_frame": site_t, "sites_A": sites_t, "sites_mean_A": sites_mean, "oct_sites_A": sites_o,
        "msd_F_A2": msd, "msd_Ca_from_first_A2": msd_c,
        "n_frames": nf, "frame_dt_ps": dt_ps, "run_ps": run_ps, "n_mobile": len(mob), "n_framework": len(fra),
        "n_sites": n_t, "n_oct_sites": len(sites_o), "n_ca_vacancies": int((atom_of_lattice < 0).sum()),
        "lattice_a_A": float(a[0]), "n_hops": int(len(hops)), "nu_per_ps": len(hops) / (len(mob) * run_ps),
        "raw_changes": int(raw.sum()),
        "share_nn_jumps": float(np.mean(np.abs(jump - d_nn) < 0.05)) if len(hops) else float("nan"),
        "nn_jump_A": float(d_nn),
        "jump_length_counts": {f"{v:.1f}": int(c) for v, c in zip(lengths, counts)},
        "n_sites_visited": len(visited), "mean_residence_ps": float(np.mean(visits_len)),
        "oct_visits_kept": oct_visits, "oct_visit_ions": len(oct_ions), "oct_frames_kept": oct_frames,
        "oct_frames_raw_share": oct_frames_raw / site_all.size, "n_hops_tet_plus_oct": int(hops_all),
        "D_tracer_plain_cm2_s": D, "msd_Ca_max_A2": float(msd_c.max()), "msd_Ca_end_A2": float(msd_c[-1]),
        "max_dist_to_nearest_site_A": dmax, "min_stay_ps": min_stay_ps,
    }


def run_reference(dump: str, out_json: str, frame_dt_ps: float | None = None, md_timestep_ps: float = 0.002,
                  min_stay_ps: float = 0.2, T: float | None = None) -> dict:
    """Reference for one dump; writes ``out_json`` and ``out_json`` with ``.npz``; returns the summary."""
    steps, ids, types, box, xyz = read_dump(dump)
    dt = frame_dt_ps if frame_dt_ps else float(np.median(np.diff(steps))) * md_timestep_ps
    r = reference_hops(xyz, types, box, dt, min_stay_ps=min_stay_ps)
    mob_ids = ids[types == 2]
    os.makedirs(os.path.dirname(out_json) or ".", exist_ok=True)
    np.savez_compressed(
        out_json[:-5] + ".npz", mobile_atom_ids=mob_ids, hops=r["hops"], jump_A=r["jump_A"],
        hops_per_ion=r["hops_per_ion"], raw_changes_per_ion=r["raw_changes_per_ion"],
        site_of_frame=r["site_of_frame"], sites_A=r["sites_A"], sites_mean_A=r["sites_mean_A"],
        oct_sites_A=r["oct_sites_A"], msd_F_A2=r["msd_F_A2"], msd_Ca_from_first_A2=r["msd_Ca_from_first_A2"],
        box_A=box, steps=steps)
    summary = {k: v for k, v in r.items() if not isinstance(v, np.ndarray)}
    summary.update({"dump": dump, "T": T, "box_A": box.tolist(),
                    "hop_columns": ["atom_id", "frame", "from_site", "to_site", "jump_A"]})
    full = dict(summary)
    full["hops_per_ion"] = {int(i): int(c) for i, c in zip(mob_ids, r["hops_per_ion"])}
    full["hops"] = [[int(mob_ids[h[0]]), int(h[1]), int(h[2]), int(h[3]), round(float(j), 4)]
                    for h, j in zip(r["hops"], r["jump_A"])]
    full["sites_A"] = np.round(r["sites_A"], 5).tolist()
    with open(out_json, "w") as fh:
        json.dump(full, fh)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--temps", type=int, nargs="+", default=[1300, 1500, 1700])
    ap.add_argument("--tags", nargs="+", default=["c"], help="run tags: c (compressed ids), n (ids with gaps)")
    ap.add_argument("--md-timestep-ps", type=float, default=0.002)
    ap.add_argument("--min-stay-ps", type=float, default=0.2)
    a = ap.parse_args()
    for T in a.temps:
        for tag in a.tags:
            dump = os.path.join(a.out_dir, f"T{T}_{tag}.dump")
            if not os.path.exists(dump):
                log.warning("%s missing", dump)
                continue
            name = "reference.json" if tag == "c" else f"reference_{tag}.json"
            s = run_reference(dump, os.path.join(a.out_dir, f"T{T}", name), md_timestep_ps=a.md_timestep_ps,
                              min_stay_ps=a.min_stay_ps, T=T)
            print(json.dumps(s), flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
