"""Command line: ``iondiff-stream analyze|...`` (only calls the public API)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from collections.abc import Sequence
from typing import Annotated, Optional

import typer

from iondiff_stream.core.errors import IonDiffStreamError

#: True when :func:`main` runs as the program (console script, ``python -m``), not called in-process
_PROGRAM = False

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Ionic hops, correlations and transport from MD.",
                  context_settings={"help_option_names": ["-h", "--help"]})

_VERBOSE_HELP = "Log what each step does (INFO messages on stderr)."


def _print_version(value: bool) -> None:
    if value:
        from iondiff_stream import __version__

        typer.echo(f"iondiff-stream {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show the Python traceback of a failure.")] = False,
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="Print the package version and exit.")] = False,
) -> None:
    """iondiff-stream: which ions hop, when, where to, and how many hop together."""


def _nonzero(value: int, flag: str) -> int:
    if value == 0:
        raise typer.BadParameter("0 has no meaning: give a number of processes, or -1 for all cores", param_hint=flag)
    return value


def _pairs(values: Optional[list[str]], flag: str) -> dict[str, str]:
    """``NAME=VALUE`` options as a dict; a value without ``=`` is a usage error naming the option."""
    out: dict[str, str] = {}
    for v in values or []:
        if "=" not in v:
            raise typer.BadParameter(f"{v!r} is not NAME=VALUE", param_hint=flag)
        k, val = v.split("=", 1)
        out[k] = val
    return out


def _check_analyze_options(*, out: Path, overwrite: bool, temperature: Optional[float], charge: Optional[float],
                           timestep_ps: Optional[float], md_timestep_ps: Optional[float], memory_budget: str,
                           segment: Optional[str], method: str, start_ps: Optional[float] = None,
                           stop_ps: Optional[float] = None) -> None:
    """Every option of ``analyze`` and its output directory, before anything is read (usage errors, exit 2).

    Raises
    ------
    typer.BadParameter
        Naming the flag: a non-positive temperature or time step, an unreadable or too small memory budget,
        a segment that is neither a number nor ``all``, a negative ``--start-ps``/``--stop-ps`` or a ``--stop-ps``
        not after ``--start-ps``, an output directory that cannot be written.
    """
    import math

    from iondiff_stream.io.positions_store import MemoryBudget, parse_bytes

    if method not in ("sites", "silhouette"):
        raise typer.BadParameter(f"must be 'sites' or 'silhouette', got {method!r}", param_hint="'--method'")
    for flag, v in (("--temperature", temperature), ("--timestep-ps", timestep_ps), ("--md-timestep-ps", md_timestep_ps)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise typer.BadParameter(f"must be a positive number, got {v:g}", param_hint=f"'{flag}'")
    if charge is not None and not math.isfinite(charge):
        raise typer.BadParameter(f"must be a finite number of e, got {charge}", param_hint="'--charge'")
    for flag, v in (("--start-ps", start_ps), ("--stop-ps", stop_ps)):
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise typer.BadParameter(f"must be a time >= 0 ps, got {v:g}", param_hint=f"'{flag}'")
    if stop_ps is not None and stop_ps <= (start_ps or 0.0):
        raise typer.BadParameter(f"must be later than --start-ps ({start_ps or 0.0:g} ps), got {stop_ps:g}",
                                 param_hint="'--stop-ps'")
    try:
        MemoryBudget(parse_bytes(memory_budget))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--memory-budget'") from None
    if segment is not None and segment.strip().lower() != "all":
        try:
            if int(segment) < 0:
                raise ValueError
        except ValueError:
            raise typer.BadParameter(f"must be a segment number (0, 1, ...) or 'all', got {segment!r}",
                                     param_hint="'--segment'") from None
    _check_writable_dir(out, "--out")


def _check_writable_dir(path: Path, flag: str) -> None:
    """A directory that exists and can be written, or can be created: probed without leaving anything behind."""
    import os
    import tempfile

    p = Path(os.path.abspath(path))
    if p.exists() and not p.is_dir():
        raise typer.BadParameter(f"{path} exists and is not a directory", param_hint=f"'{flag}'")
    base = p
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise typer.BadParameter(f"cannot create {path}: {base} is not a directory", param_hint=f"'{flag}'")
    try:
        tempfile.TemporaryDirectory(dir=base, prefix=".iondiff-write-check-").cleanup()
    except OSError as exc:
        raise typer.BadParameter(f"cannot write in {base}: {exc.strerror or exc}", param_hint=f"'{flag}'") from None


def _setup_logging(verbose: bool) -> None:
    """Log to stderr: through rich's handler on a terminal (printed above a live progress bar), else plain lines."""
    level = logging.INFO if verbose else logging.WARNING
    if sys.stderr.isatty():
        from iondiff_stream.core.progress import log_handler

        logging.basicConfig(level=level, handlers=[log_handler()])
    else:
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("MDAnalysis").setLevel(logging.WARNING)
    if not verbose:
        logging.getLogger("distributed").setLevel(logging.WARNING)


_TRUST_LO_HELP = ("DeePMD runs with model deviation: lower trust level of the max force deviation, eV/A "
                  "(DP-GEN's model_devi_f_trust_lo).")
_TRUST_HI_HELP = ("DeePMD runs with model deviation: upper trust level of the max force deviation, eV/A "
                  "(DP-GEN's model_devi_f_trust_hi); above it a frame or hop is untrusted.")


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
    temperature: Annotated[
        Optional[float], typer.Option("--temperature", min=0.0, help="Temperature, K (conductivity).")
    ] = None,
    charge: Annotated[Optional[float], typer.Option("--charge", help="Ionic charge, e (default from element).")] = None,
    percentile: Annotated[float, typer.Option(min=0.0, max=100.0, help="Null percentile for concerted hops.")] = 95.0,
    method: Annotated[str, typer.Option("--method", help="Hop method: 'sites' (shared sites, core-to-core; default) "
                                        "or 'silhouette' (the published per-ion k-means procedure).")] = "sites",
    k_max: Annotated[int, typer.Option(min=2, help="Largest K tried per ion (silhouette method).")] = 10,
    silhouette_threshold: Annotated[float, typer.Option(min=-1.0, max=1.0, help="K=1 below this best silhouette (silhouette method).")] = 0.7,
    seed: Annotated[int, typer.Option(min=0, help="Random seed.")] = 0,
    jobs: Annotated[int, typer.Option("--jobs", "-j", callback=lambda v: _nonzero(v, "--jobs"),
                                      help="Dask worker processes (LocalCluster) for the per-ion work (-1: all cores).")] = 1,
    scheduler: Annotated[
        Optional[str], typer.Option("--scheduler", help="Dask scheduler address (tcp://HOST:PORT) for the per-ion work.")
    ] = None,
    memory_budget: Annotated[
        str, typer.Option("--memory-budget", help="Working memory, e.g. 2GB; longer runs go out of core (positions.zarr).")
    ] = "1GiB",
    out_of_core: Annotated[
        Optional[bool], typer.Option("--out-of-core/--in-memory", help="Force the on-disk positions store (default: by budget).")
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
    with_report: Annotated[bool, typer.Option("--report", help="Also write the figures and report.html.")] = False,
    segment: Annotated[
        Optional[str], typer.Option("--segment", help="Frame stores (a segment per LAMMPS run) and LAMMPS dumps (a segment "
                                    "per reset_timestep): segment N or 'all' (joined on one time axis); default the last.")
    ] = None,
    start_ps: Annotated[
        Optional[float], typer.Option("--start-ps", help="Analyse from this time, ps from the first frame of the "
                                      "segment analysed (any input).")
    ] = None,
    stop_ps: Annotated[
        Optional[float], typer.Option("--stop-ps", help="Analyse up to this time, ps from the first frame of the "
                                      "segment analysed (any input).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help=_VERBOSE_HELP)] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Reuse a non-empty --out: replace a previous analysis's outputs there.")
    ] = False,
    allow_truncated: Annotated[
        bool, typer.Option("--allow-truncated", help="Drop an incomplete last frame (killed run) instead of failing.")
    ] = False,
    allow_discontinuities: Annotated[
        bool, typer.Option("--allow-discontinuities",
                           help="Analyse despite repeated frames or jumps between frames (files out of order).")
    ] = False,
    force_timestep: Annotated[
        bool, typer.Option("--force-timestep", help="Use --timestep-ps even where it contradicts the file's times.")
    ] = False,
    trust_lo: Annotated[float, typer.Option("--trust-lo", min=0.0, help=_TRUST_LO_HELP)] = 0.05,
    trust_hi: Annotated[float, typer.Option("--trust-hi", min=0.0, help=_TRUST_HI_HELP)] = 0.15,
) -> None:
    """Detect hops and compute transport for one run; write hops.csv, summary.json, results.zarr."""
    if _PROGRAM:
        import os

        # One BLAS thread unless the user says otherwise: the analysis has no large dense products (the GLS
        # eigendecompositions are <= 400 x 400 and already run on one thread), so a thread pool only costs its
        # start-up when numpy and scipy load their OpenBLAS (~0.1 s) and, on busy cores, waits between threads
        # (10-30x slower eigh measured on 2 shared cores). Inherited by Dask workers (--jobs), as Dask advises.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from iondiff_stream.pipeline.run import analyze_run
    from iondiff_stream.analysis.correlations import CorrelationParameters
    from iondiff_stream.analysis.hops import HopParameters
    from iondiff_stream.pipeline.files import prepare_output_dir

    if _PROGRAM:
        import gc

        gc.freeze()  # the imported modules live to the end: later full collections need not walk them (~50 ms)
    _setup_logging(verbose)
    _check_analyze_options(out=out, overwrite=overwrite, temperature=temperature, charge=charge, timestep_ps=timestep_ps,
                           md_timestep_ps=md_timestep_ps, memory_budget=memory_budget, segment=segment, method=method,
                           start_ps=start_ps, stop_ps=stop_ps)
    prepare_output_dir(str(out), overwrite=overwrite)
    params = HopParameters(method=method, k_max=k_max, silhouette_threshold=silhouette_threshold, seed=seed)
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
        segment=segment,
        memory_budget=memory_budget,
        out_of_core=out_of_core,
        scheduler=scheduler,
        reader_kwargs={"allow_truncated": True} if allow_truncated else None,
        allow_discontinuities=allow_discontinuities,
        force_timestep=force_timestep,
        start_ps=start_ps,
        stop_ps=stop_ps,
        trust_lo=trust_lo,
        trust_hi=trust_hi,
    )
    s = run.summary
    keys = ["n_frames", "n_mobile", "timestep_ps", "method", "n_sites", "n_hops", "n_diffusive_ions", "mean_hop_length_A",
            "mean_hop_duration_ps", "hop_frequency_per_ps", "mean_residence_time_ps", "D_tracer_cm2_s",
            "D_sigma_cm2_s", "D_sigma_status", "D_sigma_ci95_cm2_s", "D_tracer_status", "D_tracer_reason", "haven_ratio", "sigma_NE_mS_cm", "mean_correlated_ions", "hop_msd_fraction", "hop_msd_fraction_ci95",
            "hop_msd_check", "hop_correlation_factor", "hop_msd_fraction_correlated", "long_range_diffusion", "warnings"]
    keys += [k for k in ("store_complete", "time_window_ps") if k in s]
    keys += [k for k in ("max_devi_f_max_eV_A", "hops_above_trust_hi_fraction", "D_msd_trusted_change_percent",
                         "trust_note") if k in s]
    typer.echo(json.dumps({k: s.get(k) for k in keys}, indent=2))
    if "store_segments" in s:
        typer.echo(_format_segments(s["store_segments"], s["segment_analysed"], s.get("ring_dropped_frames", 0)))
    if "dump_segments" in s:
        typer.echo(_format_segments(s["dump_segments"], s["segment_analysed"], 0, what="dump"))
    typer.echo(f"results in {out}/ (hops.csv, summary.json, results.zarr)")
    if with_report:
        from iondiff_stream.outputs.report import make_report

        make_report(str(out))
        typer.echo(f"report: {out}/report.html")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    script: Annotated[Path, typer.Argument(help="LAMMPS input script (unmodified).")],
    mobile: Annotated[str, typer.Option("--mobile", help="Mobile ions: element (types guessed from masses) or 'type N'.")],
    store: Annotated[Path, typer.Option("--store", help="Zarr store to write (one segment per LAMMPS run).")],
    every: Annotated[int, typer.Option("--every", min=1, help="Steps between stored frames.")] = 10,
    capacity: Annotated[Optional[int], typer.Option(help="Ring size in frames (default: keep all).")] = None,
    chunk_frames: Annotated[Optional[int], typer.Option(min=1, help="Frames per Zarr chunk (default: 100, or 1000 steps' worth).")] = None,
    var: Annotated[Optional[list[str]], typer.Option("--var", help="LAMMPS variable NAME=VALUE (or -var NAME VALUE).")] = None,
    append: Annotated[bool, typer.Option("--append", help="Add to an existing store (new segment; a restart continues its segment).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing store.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="Hide LAMMPS's screen output.")] = False,
    log: Annotated[str, typer.Option("--log", help="LAMMPS log file ('none': no log).")] = "log.lammps",
    verbose: Annotated[bool, typer.Option("--verbose", help=_VERBOSE_HELP + " (no -v here: -v is LAMMPS's -var)")] = False,
) -> None:
    """Run an unmodified LAMMPS input script with the streaming hook (fix external), like `lmp -in SCRIPT`.

    Ctrl-C or SIGTERM halts LAMMPS at the next stored frame, closes the store (last segment marked interrupted)
    and exits with status 130.
    """
    from lammps_hooks.run_script import run_script

    _setup_logging(verbose)
    variables = _pairs(var, "--var")
    extra = list(ctx.args)
    while extra:
        if extra[0] in ("-var", "-v") and len(extra) >= 3:
            variables[extra[1]] = extra[2]
            extra = extra[3:]
        else:
            raise typer.BadParameter(f"unexpected argument {extra[0]!r} (use -var NAME VALUE)")
    _check_store_flags(append, overwrite, capacity, every)
    res = run_script(str(script), mobile, str(store), every=every, variables=variables, capacity=capacity,
                     chunk_frames=chunk_frames, quiet=quiet, log=None if log.lower() == "none" else log,
                     mode="a" if append else "w", overwrite=overwrite)
    typer.echo(json.dumps(res, indent=2))
    if res.get("interrupted"):  # Ctrl-C / SIGTERM: LAMMPS halted, the store closed; the usual status of an interrupt
        typer.echo(f"interrupted ({res['interrupted']}): {res.get('frames', 0)} frames in {store}", err=True)
        raise typer.Exit(130)


def _check_store_flags(append: bool, overwrite: bool, capacity: Optional[int], every: int = 1) -> None:
    if append and overwrite:
        raise typer.BadParameter("--append and --overwrite exclude each other")
    if capacity is not None and capacity < 1:
        raise typer.BadParameter(f"--capacity must be a positive number of frames, got {capacity}")
    if every < 1:
        raise typer.BadParameter(f"--every must be >= 1, got {every}")


@app.command()
def snippet(
    mobile: Annotated[str, typer.Option("--mobile", help="Mobile ions: element (types from masses) or 'type N'.")],
    store: Annotated[str, typer.Option("--store", help="Zarr store the LAMMPS run fills.")],
    every: Annotated[int, typer.Option("--every", help="Steps between stored frames.")] = 10,
    capacity: Annotated[Optional[int], typer.Option(help="Ring size in frames (default: keep all).")] = None,
    append: Annotated[bool, typer.Option("--append", help="Add to an existing store (new segment / restart).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing store.")] = False,
    lmp: Annotated[Optional[str], typer.Option("--lmp", help="LAMMPS binary to check (default: 'lmp' on PATH).")] = None,
    model_devi: Annotated[Optional[str], typer.Option(
        "--model-devi", help="DeePMD's model deviation file (out_file of 'pair_style deepmd m0.pb m1.pb ...', "
                             "relative to where lmp runs): stored beside the frames.")] = None,
) -> None:
    """Print input-script lines for `fix python/invoke` (LAMMPS with the PYTHON package, e.g. Debian's lmp).

    Also says on stderr which `lmp` it found and whether it has the PYTHON package the lines need.
    """
    from lammps_hooks.fix_python_invoke import check_lmp
    from lammps_hooks.fix_python_invoke import snippet as _snippet

    _check_store_flags(append, overwrite, capacity, every)
    mode = "append" if append else "overwrite" if overwrite else "new"
    typer.echo(_snippet(mobile, every, store, mode=mode, capacity=capacity, model_devi=model_devi), nl=False)
    found = check_lmp(lmp)
    typer.echo(("note: " if found["python"] else "warning: ") + found["message"], err=True)


@app.command()
def listen(
    address: Annotated[str, typer.Argument(help="HOST:PORT of a LAMMPS 'fix imd ... version 3'.")],
    store: Annotated[Path, typer.Option("--store", help="Zarr store to write.")],
    topology: Annotated[Path, typer.Option("--topology", help="LAMMPS data file of the same system.")],
    mobile: Annotated[str, typer.Option("--mobile", help="Mobile ions: element or 'type N'.")],
    max_frames: Annotated[Optional[int], typer.Option(min=1, help="Stop after this many frames.")] = None,
    units: Annotated[str, typer.Option(help="LAMMPS unit style of the simulation.")] = "metal",
    capacity: Annotated[Optional[int], typer.Option(help="Ring size in frames (default: keep all).")] = None,
    append: Annotated[bool, typer.Option("--append", help="Add to an existing store (new segment / restart).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing store.")] = False,
    model_devi: Annotated[Optional[Path], typer.Option(
        "--model-devi", help="DeePMD's model deviation file LAMMPS writes (same machine or shared file system): "
                             "stored beside the frames.")] = None,
) -> None:
    """Receive frames from LAMMPS over IMDv3 and store them (`monitor` shows the live hops)."""
    from lammps_hooks.imd_listener import listen as _listen

    from iondiff_stream.core.progress import RunProgress, stage

    _setup_logging(False)
    _check_store_flags(append, overwrite, capacity)
    with RunProgress({"frames": 1.0}, enabled=sys.stderr.isatty(), description="listen") as bar:
        got = stage("frames", max_frames or 1)

        def on_frame(n: int) -> None:  # frames received so far (the total is known only with --max-frames)
            bar.status(f"{n} frames received")
            if max_frames:
                got.advance()

        res = _listen(address, str(topology), mobile, str(store), max_frames=max_frames, units=units,
                      capacity=capacity, mode="a" if append else "w", overwrite=overwrite, on_frame=on_frame,
                      model_devi=str(model_devi) if model_devi is not None else None)
    typer.echo(json.dumps(res, indent=2))


@app.command()
def monitor(
    store: Annotated[Path, typer.Argument(help="Zarr store being written by 'run' or the hook.")],
    once: Annotated[bool, typer.Option("--once", help="Print one status and exit.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    interval: Annotated[float, typer.Option(min=0.05, help="Seconds between refreshes.")] = 2.0,
    verify: Annotated[bool, typer.Option("--verify", help="With --once: check every chunk's checksum.")] = False,
    html_page: Annotated[Optional[Path], typer.Option(
        "--html", help="Also keep this self-contained HTML page up to date (rewritten atomically at every "
                       "refresh; open it in a browser, e.g. over a shared file system).")] = None,
    serve: Annotated[Optional[int], typer.Option(
        "--serve", min=0, max=65535, help="Also serve the live page on http://127.0.0.1:PORT/ while the command "
                                          "runs (0: a free port; the page goes to a temporary file without --html).")
    ] = None,
    trust_lo: Annotated[float, typer.Option("--trust-lo", min=0.0, help=_TRUST_LO_HELP)] = 0.05,
    trust_hi: Annotated[float, typer.Option("--trust-hi", min=0.0, help=_TRUST_HI_HELP)] = 0.15,
) -> None:
    """Live view of a running simulation: frames, segments, speed, MSD and D, ions in transit, hops."""
    from iondiff_stream.monitor import status, watch

    _setup_logging(False)
    if verify and not once:
        raise typer.BadParameter("applies with --once only", param_hint="'--verify'")
    page = _live_page(html_page, serve, interval)
    if once:
        st = status(str(store), verify=verify, trust_lo=trust_lo, trust_hi=trust_hi)
        if page is not None:
            page.update(st)
        typer.echo(json.dumps(st, indent=2) if as_json else _format_status(st))
        return
    try:
        with _TermAsInterrupt():
            if page is not None:
                page.start(str(store), serve)
            watch(str(store), interval, on_status=page, trust_lo=trust_lo, trust_hi=trust_hi)
    except _Terminated:
        typer.echo("terminated", err=True)
        raise typer.Exit(143) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    finally:
        if page is not None:
            page.stop()


class _Terminated(BaseException):
    """SIGTERM arrived while a command that cleans up after itself was running (a BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` on the way swallows it)."""


class _TermAsInterrupt:
    """For the length of a ``with``: SIGTERM raises :class:`_Terminated` in the main thread (so the command's
    ``finally`` runs: server stopped, temporary page removed) instead of killing the process; the previous
    handler is restored on exit. Outside the main thread nothing changes."""

    def __enter__(self) -> _TermAsInterrupt:
        import signal
        import threading

        self._old = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handle)
        return self

    @staticmethod
    def _handle(signum: int, frame: object) -> None:
        raise _Terminated()

    def __exit__(self, *exc: object) -> None:
        import signal

        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def _live_page(html_page: Optional[Path], serve: Optional[int], interval: float):
    """The page of ``monitor --html/--serve`` (None without either option)."""
    if html_page is None and serve is None:
        return None
    from iondiff_stream.live_page import MonitorPage

    return MonitorPage(None if html_page is None else str(html_page), refresh_s=max(1.0, interval),
                       announce=lambda msg: typer.echo(msg, err=True))


def _format_status(st: dict) -> str:
    lines = [f"{k}: {v}" for k, v in st.items() if k != "segments"]
    if st.get("segments"):
        lines.append(_format_segments(st["segments"], None, st.get("ring_dropped_frames", 0)))
    return "\n".join(lines)


def _format_segments(segs: list, analysed: object, dropped: int, what: str = "store") -> str:
    """One line per segment of a store (one per LAMMPS run) or of a dump (one per timestep reset)."""
    out = [f"{what} segments ({len(segs)}; analysed: {analysed})" if analysed is not None
           else f"{what} segments ({len(segs)})"]
    for g in segs:
        out.append(f"  {g['index']}: steps {g['first_step']}..{g['last_step']}, {g['n_frames']} frames"
                   f" ({g['started_by']}{', ' + str(g['restarts']) + ' restart(s)' if g.get('restarts') else ''}"
                   f"{', ' + str(g['dropped_by_ring']) + ' dropped by the ring' if g.get('dropped_by_ring') else ''})")
    if dropped:
        out.append(f"  the ring dropped {dropped} earlier frames")
    return "\n".join(out)


@app.command()
def sites(
    trajectories: Annotated[list[Path], typer.Argument(help="Trajectory file(s) of one run, in time order.")],
    mobile: Annotated[str, typer.Option("--mobile", help="Mobile ions, e.g. Li.")],
    framework: Annotated[str, typer.Option("--framework", help="Anions spanning the tetrahedra, e.g. S,Cl.")],
    out: Annotated[Path, typer.Option("--out", help="Write sites.json here (a file).")],
    topology: Annotated[Optional[Path], typer.Option("--topology", help="Topology (LAMMPS data file for dumps).")] = None,
    timestep_ps: Annotated[Optional[float], typer.Option("--timestep-ps", help="Time between stored frames, ps.")] = None,
    md_timestep_ps: Annotated[
        Optional[float], typer.Option("--md-timestep-ps", help="MD timestep (LAMMPS dumps: frame time = step x this).")
    ] = None,
    reference: Annotated[Optional[Path], typer.Option("--reference", help="Structure with labelled sites.")] = None,
    label: Annotated[Optional[list[str]], typer.Option("--label", help="SPECIES=TYPE for reference sites.")] = None,
    default_label: Annotated[str, typer.Option(help="Type of unlabelled holes.")] = "other",
    anchor: Annotated[Optional[str], typer.Option(help="Species aligning the reference, e.g. P.")] = None,
    window_ps: Annotated[float, typer.Option(min=0.0, help="Window for concerted modes, ps.")] = 1.0,
    align_tol: Annotated[Optional[float], typer.Option("--align-tol", help="Largest anchor residual after the "
                         "reference alignment, Å (default: half the shortest anchor-anchor distance).")] = None,
    match_tol: Annotated[Optional[float], typer.Option("--match-tol", help="Reference site to hole centre distance "
                         "counted as unmatched, Å (default: half the median hole spacing).")] = None,
) -> None:
    """Tetrahedral sites: occupation per site type, residence times, concerted A->B + B->C modes."""
    from iondiff_stream.pipeline.run import analyse_sites

    _setup_logging(False)
    labels = _pairs(label, "--label")
    res = analyse_sites([str(t) for t in trajectories], mobile, framework, topology=str(topology) if topology else None,
                        timestep_ps=timestep_ps, md_timestep_ps=md_timestep_ps,
                        reference=str(reference) if reference else None, labels=labels,
                        default_label=default_label, anchor=anchor, window_ps=window_ps, align_tol_A=align_tol,
                        match_tol_A=match_tol)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    typer.echo(json.dumps({k: res[k] for k in ("n_sites", "site_types", "fraction", "mean_residence_frames")}, indent=2))


@app.command()
def report(
    out: Annotated[Path, typer.Argument(help="Directory written by 'analyze'.")],
    ion: Annotated[Optional[int], typer.Option(help="Mobile-ion index for the path figure.")] = None,
    series: Annotated[Optional[list[Path]], typer.Option(
        "--series", help="A directory of the same system analysed at another temperature (repeat the option): "
                         "the headline then shows the activation energies.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help=_VERBOSE_HELP)] = False,
) -> None:
    """Write PNG figures and report.html summarising an analysed run."""
    from iondiff_stream.core.progress import RunProgress
    from iondiff_stream.outputs.report import make_report

    _setup_logging(verbose)
    with RunProgress({"figures": 1.0}, enabled=sys.stderr.isatty(), description="report"):
        written = make_report(str(out), ion, series=[str(d) for d in series or []])
    for p in written:
        typer.echo(p)


@app.command()
def arrhenius(
    runs: Annotated[list[Path], typer.Argument(help="Directories written by 'analyze', one per temperature.")],
    temperature: Annotated[
        Optional[list[str]], typer.Option("--temperature", help="Temperatures of the runs, K, in their order: "
                                          "comma-separated or repeated (default: from each summary.json).")
    ] = None,
    temperatures: Annotated[Optional[list[str]], typer.Option("--temperatures", hidden=True,
                                                                help="Old name of --temperature.")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Write the Arrhenius plot (PNG).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help=_VERBOSE_HELP)] = False,
) -> None:
    """Activation energies and prefactors across runs from D*, D_sigma, the hop frequency nu and f*nu (no fit of sigma), and of
    the concerted modes' frequencies and the G_d(r~0, t) times."""
    from iondiff_stream.outputs.report import arrhenius_across_runs

    _setup_logging(verbose)
    given = [t for v in (temperature or []) + (temperatures or []) for t in v.split(",") if t.strip()]
    try:
        temps = [float(t) for t in given] if given else None
    except ValueError:
        raise typer.BadParameter(f"{','.join(given)!r} is not a comma-separated list of numbers (K)",
                                 param_hint="'--temperature'") from None
    res = arrhenius_across_runs([str(r) for r in runs], temps, str(plot) if plot else None)
    typer.echo(json.dumps(res, indent=2))


@app.command()
def database(
    manifest: Annotated[Path, typer.Argument(help="CSV: name,files,topology,mobile,temperature_K,timestep_ps,material[,family].")],
    out: Annotated[Path, typer.Option("--out", help="Database folder (runs/, descriptors.csv, statistics, index.html).")],
    scheduler: Annotated[
        Optional[str], typer.Option("--scheduler", help="Address of a running Dask scheduler, tcp://HOST:PORT.")
    ] = None,
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", help="Workers of the local Dask cluster.")] = None,
    no_figures: Annotated[bool, typer.Option("--no-figures", help="Skip the PNG figures and index.html.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help=_VERBOSE_HELP)] = False,
) -> None:
    """Descriptor database of many runs on Dask: per-run analysis (cached), descriptors, Spearman, PCA, classes."""
    from iondiff_stream.database import build_database

    _setup_logging(verbose)
    import distributed  # noqa: F401  (its import configures its loggers: quiet them afterwards)

    logging.getLogger("distributed").setLevel(logging.INFO if verbose else logging.ERROR)
    if scheduler and jobs:
        raise typer.BadParameter("give either --scheduler or --jobs, not both")
    res = build_database(str(manifest), str(out), scheduler=scheduler, n_jobs=jobs, figures=not no_figures)
    typer.echo(json.dumps({"finished": len(res.done), "skipped_already_finished": len(res.skipped),
                           "analysed_again": res.redone,
                           "failed": res.failures, "outputs": res.outputs}, indent=2))
    if res.failures:
        typer.echo(f"{len(res.failures)} run(s) failed (listed in {out}/failures.json); re-run to retry them", err=True)


def _one_line(exc: BaseException) -> str:
    """At most two lines: what went wrong (package errors already name the file, frame or option)."""
    text = str(exc).strip() or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return "\n  ".join(lines[:2]) + (" ..." if len(lines) > 2 else "")


def _describe(exc: BaseException, args: Sequence[str] = ()) -> str:
    """One or two lines for an exception that reached the command line, naming it when it is not ours.

    Errors from other libraries do not know which file they were reading: the
    command and the existing paths among its arguments are named instead.
    """
    import os

    if isinstance(exc, IonDiffStreamError):
        return _one_line(exc)
    paths = [a for a in args if not a.startswith("-") and os.path.exists(a)][:3]
    where = " ".join(([args[0]] if args else []) + paths)
    text = str(exc).lower()
    if "decompress" in text or "checksum" in text or "crc" in text:
        return f"{where}: corrupt data ({type(exc).__name__}: {_one_line(exc)}); a damaged file or store chunk"
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"file not found: {exc.filename}"
    if isinstance(exc, PermissionError) and exc.filename:
        return f"permission denied: {exc.filename}"
    if isinstance(exc, MemoryError):
        return "out of memory (try fewer frames, --jobs 1, or a machine with more RAM)"
    if isinstance(exc, OSError):
        return _one_line(exc)
    name = type(exc).__name__
    mod = type(exc).__module__
    if mod.startswith("lammps") or str(exc).lstrip().startswith("ERROR"):
        return f"LAMMPS: {_one_line(exc)}"
    return f"{where + ': ' if where else ''}{name}: {_one_line(exc)} (run with --debug for the traceback)"


def _split_debug(args: list[str]) -> tuple[list[str], bool]:
    """Remove ``--debug`` (anywhere before a ``--``) from the arguments; env IONDIFF_STREAM_DEBUG=1 also sets it."""
    import os

    debug = os.environ.get("IONDIFF_STREAM_DEBUG", "").lower() in ("1", "true", "yes")
    out: list[str] = []
    for i, a in enumerate(args):
        if a == "--":
            out.extend(args[i:])
            break
        if a == "--debug":
            debug = True
        else:
            out.append(a)
    return out, debug


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: every failure becomes one or two lines on stderr and a non-zero exit status.

    Exit status: 0 success, 1 unexpected failure, 2 bad input or usage (package errors, click usage
    errors), 130 interrupted. ``--debug`` (anywhere on the command line) re-raises with the traceback.
    """
    global _PROGRAM
    _PROGRAM = argv is None
    from iondiff_stream.core.quiet import quiet_third_party

    quiet_third_party()
    args, debug = _split_debug(list(sys.argv[1:] if argv is None else argv))
    if not debug:
        # a reader that failed half-built can complain again at garbage collection; one message is enough
        sys.unraisablehook = lambda u: logging.getLogger(__name__).debug("ignored: %s", u.exc_value)
    cmd = typer.main.get_command(app)
    code = 0
    try:
        rv = cmd.main(args=args, prog_name="iondiff-stream", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except typer.Exit as exc:  # pragma: no cover - returned, not raised, in non-standalone mode
        code = exc.exit_code
    except typer.TyperException as exc:  # usage errors: bad option, missing argument, bad value
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:  # pragma: no cover
            typer.echo(f"error: {exc.format_message()}", err=True)
        code = exc.exit_code
    except typer.Abort as exc:
        cause = exc.__cause__ or exc.__context__
        if debug and cause is not None:
            raise cause
        if isinstance(cause, EOFError):
            typer.echo(f"error: unexpected end of input: {_one_line(cause)}", err=True)
            code = 2
        else:
            typer.echo("aborted", err=True)
            code = 1
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        code = 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns failures into messages
        if debug:
            raise
        typer.echo(f"error: {_describe(exc, args)}", err=True)
        code = 2 if isinstance(exc, IonDiffStreamError) else 1
    if argv is None:
        # The program itself (console script, python -m): the process ends now, with every output written
        # and closed. Freezing the live objects spares the interpreter's final garbage collection a walk
        # over the ~10^6 objects numpy, scipy, MDAnalysis and zarr leave (~0.1 s of a 2 s analysis);
        # atexit handlers (logging, temporary stores) still run.
        import gc

        gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    main()
