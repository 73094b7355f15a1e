"""``make demo``: the live CaF2 demo end to end.

1. runs the CaF2 fluorite example (``examples/caf2/in.caf2``: 321 atoms, 2 F vacancies, 1500 K, 40 ps)
   through ``iondiff-stream run`` with the streaming hook, in a subprocess;
2. prints the live monitor status while it runs (frames, speed, hops, running D);
3. finalises offline from the store (``analyze``: hops, transport, correlations) and writes the report;
4. prints the summary.

``--quick`` runs 4 ps only. Outputs go to ``--out`` (default ``demo_out``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
CAF2 = ROOT / "examples" / "caf2" / "in.caf2"
KEYS = ["n_frames", "n_mobile", "timestep_ps", "n_hops", "n_diffusive_ions", "mean_hop_length_A",
        "mean_hop_duration_ps", "hop_frequency_per_ps", "mean_residence_time_ps", "D_tracer_cm2_s",
        "D_sigma_cm2_s", "D_sigma_status", "D_sigma_ci95_cm2_s", "D_tracer_status", "D_tracer_reason", "haven_ratio", "sigma_NE_mS_cm",
        "n_concerted_groups", "mean_correlated_ions", "hop_msd_fraction", "hop_msd_fraction_ci95", "hop_msd_check", "hop_correlation_factor",
        "hop_msd_fraction_correlated", "long_range_diffusion", "warnings"]


def run_demo(out: str, steps: int = 20000, temperature: float = 1500.0) -> dict:
    """Run the live demo; returns the offline summary."""
    from iondiff_stream.pipeline.run import analyze_run
    from iondiff_stream.monitor import status
    from iondiff_stream.outputs.report import make_report

    if not CAF2.exists():
        raise FileNotFoundError(f"{CAF2} not found: run the demo from a checkout of the repository")
    os.makedirs(out, exist_ok=True)
    store = os.path.join(out, "caf2.zarr")
    shutil.rmtree(store, ignore_errors=True)
    cmd = [sys.executable, "-m", "iondiff_stream.cli", "run", str(CAF2), "--mobile", "F", "--store", store,
           "--every", "10", "--chunk-frames", "100", "--quiet", "--overwrite", "--log", os.path.join(out, "log.lammps"),
           "-var", "nsteps", str(steps), "-var", "T", str(temperature)]
    out_lines = sys.stdout
    out_lines.write(f"[1/3] LAMMPS CaF2 at {temperature:.0f} K, {steps} steps, hook every 10 steps -> {store}\n")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None:
        time.sleep(3)
        try:
            st = status(store)
        except Exception:  # noqa: BLE001 - the store may not exist yet
            continue
        if st.get("frames"):
            out_lines.write(
                f"  live: {st['frames']:5d} frames, {st.get('simulated_time_ps', 0):6.1f} ps simulated, "
                f"{(st.get('speed_ns_per_day') or 0):6.1f} ns/day, hops {st.get('hops', 0):4d}, "
                f"in transit {st.get('ions_in_transit', 0):3d}, D(F) ~ {st['D_running_cm2_s'].get('F') or 0:.2e} cm2/s\n"
            )
            out_lines.flush()
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the LAMMPS run failed:\n{stderr[-3000:]}")
    out_lines.write(f"  run finished: {stdout.strip()}\n")
    out_lines.write("[2/3] offline finalisation from the store\n")
    run = analyze_run(store, "F", out_dir=os.path.join(out, "analysis"), temperature_K=temperature, n_jobs=2)
    out_lines.write("[3/3] report\n")
    for p in make_report(os.path.join(out, "analysis")):
        out_lines.write(f"  {p}\n")
    return run.summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--quick", action="store_true", help="4 ps instead of 40 ps")
    args = ap.parse_args(argv)
    from iondiff_stream.core.quiet import quiet_third_party

    quiet_third_party()  # the demo's own warnings (and LAMMPS errors) still show
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # the demo's local Dask cluster: its scheduler/worker start-up messages are not the demo's output
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    summary = run_demo(args.out, steps=2000 if args.quick else 20000)
    sys.stdout.write(json.dumps({k: summary.get(k) for k in KEYS}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
