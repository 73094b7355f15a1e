"""An independent check of the G_d(r≈0, t) times of the alpha-AgI runs: the same question asked of sites.

``iondiff-stream analyze`` counts other ions within r0 = 0.5 Å of where an ion was (``Gd0_*`` in summary.json),
with a long-time value measured from the run. Here no ``iondiff_stream`` code is used: the tetrahedral-site
assignment of ``../../agi/reference.py`` (every Ag to its nearest 12d site, the sites following their 4 I in
every frame) gives s_i(t), and

    ratio(t) = P(another ion is on the site ion i held a time t earlier) / ((N - 1) / n_sites)

over ions and time origins (the same lags and at most 100 origins per lag). The denominator is exact, not
measured: the 1500 sites of alpha-AgI are equivalent, so at long times each holds any other ion with probability
(N - 1) / n_sites. The ½ and 0.1 crossings are this estimator's τ_d and onset time. Also the reference's own
mean residence time (visits of at least 0.2 ps).

    python site_gd.py runs/T450 runs/T550 runs/T650 runs_prv/T450 runs_prv/T550 runs_prv/T650

A run directory holds ``dpmd.zarr`` (DeePMD, the hook's store with the iodide as framework) or ``dump.lammpstrj``
(the classical runs of ``classical.py``), and ``analysis/summary.json`` (the lags and the sphere estimate).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "agi"))

from reference import reference_hops  # noqa: E402  (examples/agi/reference.py)


def load(run: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Positions (n_frames, n_atoms, 3), types (1 = Ag, 2 = I), box lengths (3,), frame spacing (ps)."""
    if os.path.exists(os.path.join(run, "dpmd.zarr")):
        import zarr

        store = os.path.join(run, "dpmd.zarr")
        nf = json.load(open(os.path.join(store, "commit.json")))["n_frames"]  # the arrays are allocated ahead
        g = zarr.open_group(store, mode="r")
        ag, iod = np.asarray(g["positions"][:nf], float), np.asarray(g["framework"][:nf], float)
        box = np.asarray(g["box"][0][:3], float)
        t = np.asarray(g["time_ps"][:nf], float)
        # the iodide does not diffuse: unwrap it by the minimum image from the first frame
        iod = iod[0] + (iod - iod[0] + box / 2) % box - box / 2
        pos = np.concatenate([ag, iod], axis=1)
        types = np.r_[np.ones(ag.shape[1], int), np.full(iod.shape[1], 2)]
        return pos, types, box, float((t[-1] - t[0]) / (len(t) - 1))
    from framework_reference import read_dump

    steps, _, types, box, pos = read_dump(os.path.join(run, "dump.lammpstrj"))
    dt = json.load(open(os.path.join(run, "run.json")))["frame_dt_ps"]
    return pos, types, box, float(dt)


def crossing(lags: np.ndarray, ratio: np.ndarray, level: float) -> float | None:
    above = np.flatnonzero(ratio >= level)
    if not len(above):
        return None
    k = int(above[0])
    if k == 0:
        return float(lags[0])
    return float(lags[k - 1] + (level - ratio[k - 1]) * (lags[k] - lags[k - 1]) / (ratio[k] - ratio[k - 1]))


def site_gd(run: str, n_origins: int = 100) -> dict:
    pos, types, box, dt = load(run)
    ref = reference_hops(pos, types, box, dt)
    sof = ref["site_of_frame"]
    nf, n = sof.shape
    n_sites = ref["n_sites"]
    s = json.load(open(os.path.join(run, "analysis", "summary.json")))
    lag_ps = np.asarray(s["Gd0_lag_ps"], float)
    lags = np.rint(lag_ps / dt).astype(int)
    ratio = np.empty(len(lags))
    for j, lag in enumerate(lags):
        starts = np.unique(np.linspace(0, nf - 1 - lag, min(n_origins, nf - lag)).round().astype(int))
        other = 0
        for t0 in starts:
            held = np.bincount(sof[t0 + lag], minlength=n_sites)[sof[t0]]
            other += int((held - (sof[t0 + lag] == sof[t0])).sum())
        ratio[j] = other / (len(starts) * n) / ((n - 1) / n_sites)
    sphere = np.asarray(s["Gd0_over_rho"], float) / s["Gd0_long_time_over_rho"]
    return {"run": run, "T_K": s.get("temperature_K"), "frames": nf, "n_sites": n_sites,
            "reference_hops": ref["n_hops"], "reference_nu_per_ps": ref["nu_per_ps"],
            "reference_mean_residence_ps": ref["mean_residence_ps"], "msd_I_end_A2": ref["msd_I_end_A2"],
            "site_onset_ps": crossing(lag_ps, ratio, 0.1), "site_tau_ps": crossing(lag_ps, ratio, 0.5),
            "site_ratio_at_longest_lag": float(ratio[-1]), "longest_lag_ps": float(lag_ps[-1]),
            "sphere_onset_ps": s.get("Gd0_onset_time_ps"), "sphere_tau_ps": s.get("Gd0_time_ps"),
            "sphere_ratio_at_longest_lag": float(sphere[-1]), "analysis_mean_residence_ps":
            s.get("mean_residence_time_ps"), "lag_ps": lag_ps.tolist(), "site_ratio": ratio.tolist(),
            "sphere_ratio": sphere.tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--json", help="write all results here")
    a = ap.parse_args()
    out = []
    print("| run | T (K) | G_d onset (0.1): r < 0.5 Å / sites | τ_d (½): r < 0.5 Å / sites | share at the longest lag: "
          "r < 0.5 Å / sites | mean residence: analyze / reference (ps) | iodide MSD at the end (Å²) |")
    print("|---|---|---|---|---|---|---|")

    def f(x: float | None) -> str:
        return "—" if x is None else f"{x:.2f}"

    for run in a.runs:
        r = site_gd(run)
        out.append(r)
        print(f"| {os.path.relpath(run)} | {r['T_K']:.0f} | {f(r['sphere_onset_ps'])} / {f(r['site_onset_ps'])} | "
              f"{f(r['sphere_tau_ps'])} / {f(r['site_tau_ps'])} | {r['sphere_ratio_at_longest_lag']:.2f} / "
              f"{r['site_ratio_at_longest_lag']:.2f} at {r['longest_lag_ps']:.0f} ps | "
              f"{f(r['analysis_mean_residence_ps'])} / {f(r['reference_mean_residence_ps'])} | "
              f"{r['msd_I_end_A2']:.2f} |", flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
