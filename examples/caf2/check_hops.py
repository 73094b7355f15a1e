"""Hop-detector checks on the CaF2 series written by ``run_series.py`` (numbers for the README table).

For every temperature: hops of the default ("sites") and the published ("silhouette") method,
D_hops / D_MSD, the independent count of committed nearest-lattice-site changes (stays >= 0.2 ps
on the ideal F sublattice), store vs dump vs dump + 1e-3 A noise (same hops: same atom, +-1 frame),
the run with gaps in the atom ids, the streaming estimator replayed over the store's frames and the
monitor's final count vs the offline one; then Arrhenius fits of nu and D*.

Usage::

    python examples/caf2/check_hops.py OUT_DIR [--temps 1300 1500 1700] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np


def f_sublattice(box: np.ndarray) -> np.ndarray:
    """Ideal F sites of the fluorite cell (simple cubic, spacing L / n), Å."""
    L = float(box[0])
    n = int(round(L / (5.477 / 2)))
    g = (np.arange(n) + 0.5) * (L / n)
    return np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)


def check_temperature(d: str, T: int, silhouette: bool = True) -> dict:
    from iondiff_stream.pipeline.run import analyze_run
    from iondiff_stream.analysis.hops import HopParameters, committed_site_changes, find_hops
    from iondiff_stream.live.hops import LiveHops
    from iondiff_stream.live.online import OnlineCentres
    from iondiff_stream.io.store import FrameStoreReader
    from iondiff_stream.synthetic.runs import same_hops

    out: dict = {"T": T}
    st = analyze_run(f"{d}/T{T}_c.zarr", "F")
    du = analyze_run([f"{d}/T{T}_c.dump"], "F", topology=f"{d}/T{T}_c.data", md_timestep_ps=0.002)
    gaps = None
    if os.path.exists(f"{d}/T{T}_n.dump"):
        gaps = analyze_run([f"{d}/T{T}_n.dump"], "F", topology=f"{d}/T{T}_n.data", md_timestep_ps=0.002)
    data = st.data
    ref = committed_site_changes(data.positions, data.times_ps, f_sublattice(data.box), data.box, 0.2, layout="frame")
    s = st.summary
    out.update({
        "n_F": data.n_mobile, "frames": data.n_frames, "dt_ps": data.timestep_ps, "n_sites": s["n_sites"],
        "hops": s["n_hops"], "ref_changes": int(ref.sum()), "hops_over_ref": s["n_hops"] / max(1, int(ref.sum())),
        "back_fraction": s["n_back_hops"] / max(1, s["n_hops"]),
        "nu_per_ps": s["hop_frequency_per_ps"], "D_tracer_cm2_s": s["D_tracer_cm2_s"],
        "D_tracer_std_cm2_s": s.get("D_tracer_posterior_std_cm2_s") or s.get("D_tracer_std_cm2_s"),
        "hop_msd_fraction": s["hop_msd_fraction"], "f_corr": s["hop_correlation_factor"],
        "f_corr_std": s["hop_correlation_factor_std"], "nu_eff_per_ps": s["hop_frequency_effective_per_ps"],
        "hop_msd_fraction_correlated": s["hop_msd_fraction_correlated"], "msd_growth_ratio": s["msd_growth_ratio"],
    })
    if gaps is not None:
        ref_n = committed_site_changes(gaps.data.positions, gaps.data.times_ps, f_sublattice(gaps.data.box),
                                       gaps.data.box, 0.2, layout="frame")
        out.update({"gaps_hops": gaps.summary["n_hops"], "gaps_ref": int(ref_n.sum()),
                    "gaps_hop_msd_fraction": gaps.summary["hop_msd_fraction"],
                    "gaps_nu_per_ps": gaps.summary["hop_frequency_per_ps"],
                    "gaps_D_tracer_cm2_s": gaps.summary["D_tracer_cm2_s"],
                    "gaps_atom_ids_first": [int(v) for v in gaps.data.atom_ids[:3]]})
    out["store_vs_dump"] = same_hops(st.hops.hops, du.hops.hops, 1)["fraction"]
    rng = np.random.default_rng(T)
    noisy = du.data.positions + rng.normal(0.0, 1e-3, du.data.positions.shape)
    hn = find_hops(noisy, du.data.times_ps, HopParameters(), du.data.atom_indices, atom_ids=du.data.atom_ids,
                   box=du.data.box, layout="frame")
    out["dump_vs_noisy"] = same_hops(du.hops.hops, hn.hops, 1)["fraction"]
    # live: the streaming estimator fed the store's frames one at a time (as a watcher of positions in memory
    # would), and the monitor's count of the closed store (the offline analysis by construction)
    r = FrameStoreReader(f"{d}/T{T}_c.zarr")
    raw = r.read()
    live = OnlineCentres()
    for k in range(len(raw["positions"])):
        live.partial_fit(raw["positions"][k : k + 1], box=raw["box"][k], times_ps=raw["time_ps"][k : k + 1])
    live.finalize()
    out["live_hops"] = int(live.hops_.sum())
    out["live_over_offline"] = out["live_hops"] / max(1, s["n_hops"])
    mon = LiveHops(f"{d}/T{T}_c.zarr").update()
    out["monitor_final_hops"] = int(mon.hops_.sum())
    out["monitor_final_equals_offline"] = out["monitor_final_hops"] == s["n_hops"]
    if silhouette:
        sil = analyze_run(f"{d}/T{T}_c.zarr", "F", params=HopParameters(method="silhouette"))
        out["silhouette_hops"] = sil.summary["n_hops"]
        out["silhouette_hop_msd_fraction"] = sil.summary["hop_msd_fraction"]
    return out


def arrhenius(rows: list[dict]) -> dict:
    from iondiff_stream.analysis.transport import arrhenius_fit

    T = np.array([r["T"] for r in rows], float)
    n = np.array([r["hops"] for r in rows], float)
    nu = np.array([r["nu_per_ps"] for r in rows], float)
    nu_eff = np.array([r["nu_eff_per_ps"] for r in rows], float)
    f, f_std = np.array([r["f_corr"] for r in rows], float), np.array([r["f_corr_std"] for r in rows], float)
    D, D_std = np.array([r["D_tracer_cm2_s"] for r in rows], float), np.array([r["D_tracer_std_cm2_s"] for r in rows])
    # 1 sigma: Poisson on the hop count, bootstrap on f, the GLS posterior on D*
    return {"nu_per_ps": arrhenius_fit(T, nu, nu / np.sqrt(n)),
            "nu_eff_per_ps": arrhenius_fit(T, nu_eff, nu_eff * np.sqrt(1 / n + (f_std / f) ** 2)),
            "D_tracer_cm2_s": arrhenius_fit(T, D, D_std.astype(float))}


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--temps", type=int, nargs="+", default=[1300, 1500, 1700])
    ap.add_argument("--json")
    ap.add_argument("--no-silhouette", action="store_true")
    a = ap.parse_args()
    rows = []
    for T in a.temps:
        rows.append(check_temperature(a.out, T, not a.no_silhouette))
        print(json.dumps(rows[-1]), flush=True)
    if len(rows) >= 2:
        fits = arrhenius(rows)
        print(json.dumps({"arrhenius": fits}, default=float))
        ea_nu, ea_d = fits["nu_per_ps"]["Ea_eV"], fits["D_tracer_cm2_s"]["Ea_eV"]
        ea_eff = fits["nu_eff_per_ps"]["Ea_eV"]
        err = {k: fits[k]["Ea_err_eV"] for k in fits}
        print(f"Ea(nu) = {ea_nu:.3f} +- {err['nu_per_ps']:.3f} eV, Ea(f nu) = {ea_eff:.3f} +- "
              f"{err['nu_eff_per_ps']:.3f} eV, Ea(D*) = {ea_d:.3f} +- {err['D_tracer_cm2_s']:.3f} eV, "
              f"ratios {ea_nu / ea_d:.3f}, {ea_eff / ea_d:.3f}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"rows": rows}, fh, indent=1, default=float)
