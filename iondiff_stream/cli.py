"""Command line: ``iondiff-stream analyze|...`` (only calls the public API)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import IonDiffStreamError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Ionic hops, correlations and transport from MD.")


@app.callback()
def _root() -> None:
    """iondiff-stream: which ions hop, when, where to, and how many hop together."""


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("MDAnalysis").setLevel(logging.WARNING)


@app.command()
def analyze(
    trajectories: Annotated[list[Path], typer.Argument(help="Trajectory file(s) of one run, in time order.")],
    mobile: Annotated[str, typer.Option("--mobile", help="Mobile ions: element, 'type N' or MDAnalysis selection.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    topology: Annotated[Optional[Path], typer.Option("--topology", help="Topology (LAMMPS data file for dumps).")] = None,
    timestep_ps: Annotated[Optional[float], typer.Option("--timestep-ps", help="Time between stored frames, ps.")] = None,
    md_timestep_ps: Annotated[
        Optional[float], typer.Option("--md-timestep-ps", help="MD timestep (LAMMPS dumps: frame time = step x this).")
    ] = None,
    no_drift: Annotated[bool, typer.Option("--no-drift-removal", help="Keep framework drift.")] = False,
    reference: Annotated[Optional[Path], typer.Option("--reference", help="Reference structure for metastable sites.")] = None,
    temperature: Annotated[Optional[float], typer.Option("--temperature", help="Temperature, K (conductivity).")] = None,
    charge: Annotated[Optional[float], typer.Option("--charge", help="Ionic charge, e (default from element).")] = None,
    percentile: Annotated[float, typer.Option(help="Null percentile for concerted hops.")] = 95.0,
    k_max: Annotated[int, typer.Option(help="Largest K tried per ion.")] = 10,
    silhouette_threshold: Annotated[float, typer.Option(help="K=1 below this best silhouette.")] = 0.7,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Worker processes.")] = 1,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
    with_report: Annotated[bool, typer.Option("--report", help="Also write the figures and report.html.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Detect hops and compute transport for one run; write hops.csv, summary.json, results.zarr."""
    from .analyze import analyze_run
    from .correlations import CorrelationParameters
    from .hops import HopParameters

    _setup_logging(verbose)
    params = HopParameters(k_max=k_max, silhouette_threshold=silhouette_threshold, seed=seed)
    run = analyze_run(
        [str(t) for t in trajectories],
        mobile,
        topology=str(topology) if topology else None,
        out_dir=str(out),
        timestep_ps=timestep_ps,
        md_timestep_ps=md_timestep_ps,
        remove_drift=not no_drift,
        params=params,
        reference=str(reference) if reference else None,
        n_jobs=jobs,
        progress=progress and sys.stderr.isatty(),
        temperature_K=temperature,
        charge=charge,
        correlation_params=CorrelationParameters(percentile=percentile, seed=seed),
    )
    s = run.summary
    keys = ["n_frames", "n_mobile", "timestep_ps", "n_hops", "n_diffusive_ions", "mean_hop_length_A",
            "mean_hop_duration_ps", "hop_frequency_per_ps", "mean_residence_time_ps", "D_tracer_cm2_s",
            "D_sigma_cm2_s", "haven_ratio", "sigma_NE_mS_cm", "mean_correlated_ions"]
    typer.echo(json.dumps({k: s.get(k) for k in keys}, indent=2))
    typer.echo(f"results in {out}/ (hops.csv, summary.json, results.zarr)")
    if with_report:
        from .report import make_report

        make_report(str(out))
        typer.echo(f"report: {out}/report.html")


@app.command()
def report(
    out: Annotated[Path, typer.Argument(help="Directory written by 'analyze'.")],
    ion: Annotated[Optional[int], typer.Option(help="Mobile-ion index for the path figure.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Write PNG figures and report.html summarising an analysed run."""
    from .report import make_report

    _setup_logging(verbose)
    for p in make_report(str(out), ion):
        typer.echo(p)


@app.command()
def arrhenius(
    runs: Annotated[list[Path], typer.Argument(help="Directories written by 'analyze', one per temperature.")],
    temperatures: Annotated[
        Optional[str], typer.Option("--temperatures", help="Comma-separated temperatures, K (default: from the runs).")
    ] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Write the Arrhenius plot (PNG).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Activation energies and prefactors from D*, D_sigma and the hop frequency across runs."""
    from .report import arrhenius_across_runs

    _setup_logging(verbose)
    temps = [float(t) for t in temperatures.split(",")] if temperatures else None
    res = arrhenius_across_runs([str(r) for r in runs], temps, str(plot) if plot else None)
    typer.echo(json.dumps(res, indent=2))


def main() -> None:
    """Entry point: run the app and turn package errors into a one-line message and exit code 2."""
    try:
        app()
    except IonDiffStreamError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
