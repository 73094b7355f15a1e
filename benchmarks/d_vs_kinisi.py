"""Tracer D* and its 95 % interval, side by side with kinisi, on the argyrodite Li6PS5Cl AIMD runs.

For each system: our GLS fit (start of the diffusive regime chosen from the data, interval pooled over the
start choice) and kinisi 2.x (``DiffusionAnalyzer.from_xdatcar`` + ``diffusion(start_dt)``, emcee posterior)
at the start we chose, and at kinisi's and our fit from a fixed 2 ps start; ratios of the interval widths.
kinisi's example data (``example_XDATCAR.gz``) is the 50p run1 file used here.

Run: ``python benchmarks/d_vs_kinisi.py [--full] [0p 100p ...]`` (``--full`` adds the concatenated 70 ps runs of
0p/50p/100p; names select cases).
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import numpy as np

from iondiff_stream.io import collect_positions, load_universe
from iondiff_stream.analysis.transport import analyse_transport

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = os.path.join(HERE, "..", "..", "shared", "data", "argyrodite_Li6PS5Cl_morgan2021", "data", "Li6PS5Cl")
RUNS = {"0p": 5, "50p": 6, "100p": 6}


def ours(files: list[str], start_ps: float | None = None) -> dict:
    d = collect_positions(load_universe(files), "Li", timestep_ps=0.1, remove_drift=True)
    tr = analyse_transport(d.ion_major(), 0.1, d.volume_A3, 500.0, 1)
    g = tr.tracer_gls
    out = {"D": g.D_cm2_s, "ci95": list(g.ci95_cm2_s), "start_ps": g.start_ps, "pooled_starts_ps": g.starts_pooled_ps.tolist()}
    if start_ps is not None:
        from iondiff_stream.analysis.transport import fit_diffusion_gls, squared_displacement_variance

        sel = np.unique(np.rint(np.linspace(1, len(tr.lag_ps) - 1, 1000)).astype(int))
        v = squared_displacement_variance(d.ion_major(), sel)
        f = fit_diffusion_gls(tr.lag_ps[sel], tr.msd_A2[sel], v, d.n_mobile, d.n_frames, 0.1, start_ps=start_ps)
        out["fixed_start"] = {"start_ps": start_ps, "D": f.D_cm2_s, "ci95": list(f.ci95_cm2_s)}
    return out


def kinisi_d(files: list[str], starts_ps: list[float]) -> dict:
    import scipp as sc
    from kinisi.analyze import DiffusionAnalyzer
    from pymatgen.io.vasp import Xdatcar

    xds = [Xdatcar(f) for f in files]
    p = {"specie": "Li", "time_step": 2.0 * sc.Unit("fs"), "step_skip": 50 * sc.Unit("dimensionless"), "progress": False}
    da = DiffusionAnalyzer.from_xdatcar(xds[0] if len(xds) == 1 else xds, dtype=None if len(xds) == 1 else "consecutive", **p)
    out = {}
    for s in starts_ps:
        da.diffusion(s * sc.Unit("ps"), progress=False, random_state=np.random.RandomState(1))
        D = da.D.values
        out[f"{s:g}"] = {"D": float(np.median(D)), "ci95": [float(x) for x in np.percentile(D, [2.5, 97.5])]}
    return out


def main() -> None:
    warnings.simplefilter("ignore")
    cases = [("50p run1 (kinisi example)", ["50p/run1"])]
    only = [a for a in sys.argv[1:] if not a.startswith("--")]
    if "--full" in sys.argv:
        cases += [(f"{c} run1-{k} (70 ps)", [f"{c}/run{i}" for i in range(1, k + 1)]) for c, k in RUNS.items()]
    if only:
        cases = [c for c in cases if any(c[0].startswith(o) for o in only)]
    rows = []
    for name, runs in cases:
        files = [os.path.join(BASE, r, "actual_XDATCAR.gz") for r in runs]
        o = ours(files, start_ps=2.0)
        k = kinisi_d(files, [o["start_ps"], 2.0])
        kc = k[f"{o['start_ps']:g}"]
        w_o = o["ci95"][1] - o["ci95"][0]
        w_k = kc["ci95"][1] - kc["ci95"][0]
        overlap = o["ci95"][0] <= kc["ci95"][1] and kc["ci95"][0] <= o["ci95"][1]
        rows.append({"system": name, "ours": o, "kinisi": k, "width_ratio_ours_over_kinisi": w_o / w_k,
                     "overlap": overlap})
        print(f"{name}: ours D* {o['D']:.3e} 95% [{o['ci95'][0]:.3e}, {o['ci95'][1]:.3e}] (start {o['start_ps']:.3g} ps, "
              f"pooled {o['pooled_starts_ps']}) | kinisi at that start {kc['D']:.3e} [{kc['ci95'][0]:.3e}, "
              f"{kc['ci95'][1]:.3e}] | width ours/kinisi {w_o / w_k:.2f}, overlap {overlap} | fixed 2 ps: ours "
              f"{o['fixed_start']['D']:.3e} [{o['fixed_start']['ci95'][0]:.3e}, {o['fixed_start']['ci95'][1]:.3e}], "
              f"kinisi {k['2']['D']:.3e} [{k['2']['ci95'][0]:.3e}, {k['2']['ci95'][1]:.3e}]", flush=True)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
