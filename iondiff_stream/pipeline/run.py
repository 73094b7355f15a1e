"""The offline analysis of one run, orchestrated in one place: read → hops → residences → transport →
correlations → summary → files.

Every step returns a documented result object (:class:`~iondiff_stream.analysis.hops.HopResults`,
:class:`~iondiff_stream.analysis.hops.ResidenceTimes`, :class:`~iondiff_stream.analysis.transport.TransportResult`,
:class:`~iondiff_stream.analysis.correlations.CorrelationResult`); :class:`RunAnalysis` holds them and the flat
``summary`` dict of ``summary.json``; :mod:`iondiff_stream.pipeline.files` only writes and reads the files.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from iondiff_stream.analysis.correlations import CorrelationParameters, concerted_groups
from iondiff_stream.analysis.distinct import distinct_origin
from iondiff_stream.analysis.sites import hop_concerted_modes
from iondiff_stream.model.framework import FrameworkFrames
from iondiff_stream.analysis.hops import (HopParameters, HopResults, IonSubset, JumpCorrelation, ResidenceTimes, combine_hop_results,
                   find_hops, jump_correlation, parameters_dict, residence_times)
from iondiff_stream.io.store import writer_alive
from iondiff_stream.io import TrajectoryData, collect_positions, guess_format, load_universe, select_mobile
from iondiff_stream.analysis.transport import TransportResult, analyse_transport, default_charge
from iondiff_stream.pipeline.result import HopStatistics, RunAnalysis, RunFacts
from iondiff_stream.analysis.descriptors import RunDescriptors, run_descriptors
from iondiff_stream.core.errors import AnalysisError
from iondiff_stream.core.units import A2_PER_PS_TO_CM2_PER_S, lammps_factors

logger = logging.getLogger(__name__)

__all__ = ["analyze_run", "analyse_positions", "hops_of", "open_run", "read_run", "RunAnalysis", "reference_sites_distance", "summarise",
           "compute_descriptors"]

#: D_hops / D_MSD outside this range: the hops do not carry the measured transport
HOP_MSD_RANGE = (0.5, 3.0)
#: fewest consecutive hop pairs (same ion) for the correlation factor f to be reported
MIN_JUMP_PAIRS = 20
#: positions (float64 bytes) up to which the transport runs in a thread beside the hops (their working sets add up)
THREADED_TRANSPORT_MAX_BYTES = 64 * 2**20


def reference_sites_distance(points: np.ndarray, sites: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Minimum-image distance from each point (n, 3) to the nearest reference site (m, 3), Å, shape (n,)."""
    from iondiff_stream.model.sites import SiteModel

    if len(points) == 0:
        return np.zeros(0)
    model = SiteModel(np.asarray(sites, float), np.asarray(box, float), np.ones(len(sites)))
    return model.nearest(np.asarray(points, float))[1]


def _finite(v: Any) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else float(v)


def summarise(
    data: TrajectoryData,
    hops: HopResults,
    reference_sites: np.ndarray | None = None,
    metastable_distance_A: float = 1.0,
    max_lag_fraction: float = 0.5,
    temperature_K: float | None = None,
    charge: float | None = None,
    correlation_params: CorrelationParameters | None = None,
    correlations: bool = True,
    transport: Any = None,
) -> RunAnalysis:
    """Residences, transport, correlations, concerted modes and G_d(r≈0, t) of an analysed run, and its summary
    numbers.

    Parameters
    ----------
    data : TrajectoryData
    hops : HopResults
    reference_sites : ndarray, shape (m, 3), optional
        Sites of the reference lattice, Å. Default: the mobile ions' positions in the first frame.
    metastable_distance_A : float
        A residence is metastable when at least this far from every reference site, Å.
    max_lag_fraction : float
        MSD lags up to this fraction of the run; D is fitted over the second half of those lags.
    temperature_K : float, optional
        For conductivities.
    charge : float, optional
        Ionic charge (e); default from the element (Li/Na +1, F -1, O -2, ...).
    correlation_params : CorrelationParameters, optional
    correlations : bool
        Compute the concerted-hop groups (the costliest step on runs with many hops).
    transport : TransportResult or concurrent.futures.Future, optional
        Transport of these positions (:func:`transport_of`) already computed, or being computed in
        another thread (its result is awaited after the correlations); computed here when not given.

    Returns
    -------
    RunAnalysis
    """
    T = data.n_frames
    total_ps = float(data.times_ps[-1] - data.times_ps[0]) if T > 1 else 0.0
    res = residence_times(hops)
    if len(res):
        sites = np.asarray(data.positions[0], float) if reference_sites is None else np.asarray(reference_sites, float)
        res.metastable = reference_sites_distance(res.position_A, sites, data.box) >= metastable_distance_A
    charge = _charge_of(data, temperature_K, charge)
    corr = None
    if correlations and T >= 2 and total_ps > 0:
        corr = concerted_groups(hops.hops, T, data.n_mobile, total_ps, data.box, correlation_params)
    if transport is None:
        tr = transport_of(data, temperature_K, charge, max_lag_fraction)
    else:
        tr = transport.result() if hasattr(transport, "result") else transport
    jumps = jump_correlation(hops.hops)
    warnings = list(hops.warnings)
    stats = _statistics((data, hops, res, tr, jumps), metastable_distance_A, warnings)
    if tr is not None:
        warnings += tr.warnings
    modes = None
    if hops.sites is not None and total_ps > 0:  # shared site indices: the "sites" method
        modes = hop_concerted_modes(hops.hops, data.n_mobile, total_ps, site_types=hops.extra.get("site_label"))
    distinct = None
    if T >= 3 and data.n_mobile >= 2 and total_ps > 0 and data.box is not None and np.all(np.asarray(data.box)[:3] > 0):
        distinct = distinct_origin(data.positions, data.times_ps, data.box)
        warnings += distinct.warnings
    facts = RunFacts(n_frames=T, n_mobile=data.n_mobile, mobile_species=sorted({str(x) for x in data.species}),
                     timestep_ps=_finite(data.timestep_ps), total_time_ps=total_ps, temperature_K=temperature_K,
                     charge_e=charge, drift_removed=data.framework_drift is not None,
                     volume_A3=_finite(data.volume_A3), parameters=parameters_dict(hops.parameters),
                     warnings=warnings)
    return RunAnalysis(data, hops, res, tr, corr, jumps, stats, facts, modes=modes, distinct=distinct)


def _charge_of(data: TrajectoryData, temperature_K: float | None, charge: float | None) -> float | None:
    """The ionic charge for conductivities: as given, else from the element of a single mobile species."""
    if charge is None and temperature_K is not None:
        species = sorted({str(x) for x in data.species})
        charge = default_charge(species[0]) if len(species) == 1 else None
    return charge


def transport_of(data: TrajectoryData, temperature_K: float | None = None, charge: float | None = None,
                 max_lag_fraction: float = 0.5) -> TransportResult | None:
    """Transport (:func:`~iondiff_stream.analysis.transport.analyse_transport`) of the mobile ions; None below 8 frames."""
    if data.n_frames < 8:
        return None
    return analyse_transport(data.ion_major(), data.timestep_ps, data.volume_A3, temperature_K,
                             _charge_of(data, temperature_K, charge), max_lag_fraction=max_lag_fraction)


def hop_msd_fraction_interval(frac: float | None, closed: Any, n_mobile: int, tr: TransportResult | None,
                              level: float = 0.95) -> tuple[float, float] | None:
    """Bootstrap interval over ions of D_hops / D_MSD.

    The same resampled ions (:attr:`TransportResult.bootstrap_ions`) give both parts: their hops'
    ``Σ length²`` and their MSD's D* (relative to all ions), so the ion-to-ion spread of hopping and of
    diffusion, largely the same ions, is resampled jointly. A run with a handful of hops (a short
    AIMD run) gets a wide interval.

    Parameters
    ----------
    frac : float or None
        D_hops / D_MSD of all ions.
    closed : HopTable
        Closed hops (``ion``, ``length_A`` columns).
    n_mobile : int
    tr : TransportResult or None
    level : float

    Returns
    -------
    (low, high) or None
        None without a ratio, a bootstrap, or hops.
    """
    if frac is None or tr is None or tr.bootstrap_ions is None or tr.bootstrap_D_tracer_relative is None:
        return None
    if len(closed) == 0 or len(tr.bootstrap_ions) < 20:
        return None
    a = np.bincount(np.asarray(closed["ion"], dtype=np.int64), weights=np.asarray(closed["length_A"]) ** 2,
                    minlength=n_mobile)
    rel_hops = a[tr.bootstrap_ions].sum(1) / a.sum()
    rel_d = tr.bootstrap_D_tracer_relative
    ok = rel_d > 0
    if ok.sum() < 20:
        return None
    r = frac * rel_hops[ok] / rel_d[ok]
    q = 100 * (1 - level) / 2
    lo, hi = np.percentile(r, [q, 100 - q])
    return float(lo), float(hi)


def _statistics(run_parts: tuple[TrajectoryData, HopResults, ResidenceTimes, TransportResult | None,
                                 JumpCorrelation | None], metastable_distance_A: float,
                warnings: list[str]) -> HopStatistics:
    """The hop table's numbers, with D* as the transport reports it (None when not resolved)."""
    data, hops, res, tr, jc = run_parts
    T = data.n_frames
    total_ps = float(data.times_ps[-1] - data.times_ps[0]) if T > 1 else 0.0
    tab = hops.hops
    closed = tab.closed()
    nu = (len(closed) / (data.n_mobile * total_ps)) if total_ps > 0 else None
    a_mean = float(closed["length_A"].mean()) if len(closed) else None
    d_star = tr.D_tracer_cm2_s if tr is not None else None  # reported: None when the run does not support it
    d_msd = d_star / A2_PER_PS_TO_CM2_PER_S if d_star is not None else None
    nu0 = 6.0 * d_msd / a_mean**2 if (d_msd is not None and a_mean) else None  # dilute limit D = a² ν0 / 6
    sil = np.array([ion.silhouette for ion in hops.ions]) if hops.ions else np.zeros(0)
    d_hops = hops.d_hops_A2_ps()
    frac = d_hops / d_msd if (d_msd is not None and d_msd > 0 and math.isfinite(d_hops)) else None
    frac_ci = hop_msd_fraction_interval(frac, closed, data.n_mobile, tr)
    # f needs a sample of consecutive hop pairs: with a handful it is noise (e.g. one ion's hop and return)
    f_corr = jc.factor if (jc is not None and jc.n_pairs >= MIN_JUMP_PAIRS and math.isfinite(jc.factor)) else None
    confined = tr is not None and tr.long_range_diffusion is False
    if confined:
        growth = tr.msd_growth_ratio
        warnings.append(f"no long-range diffusion in this run: the MSD saturates (its growth beyond the "
                        f"vibrations from t/4 to t/2 is x{growth:.2f}, about 2 for diffusion): D* fits a plateau, not a diffusion coefficient, and D_hops/D_MSD "
                        "does not apply (the hops are confined motion, e.g. within cages)")
        logger.warning(warnings[-1])
        check = "not applicable: no long-range diffusion"
    elif tr is not None and tr.status.get("D_tracer") != "resolved":
        check = f"not applicable: {tr.status['D_tracer']}"
    elif frac is None:
        check = "not available"
    else:
        check = "ok" if HOP_MSD_RANGE[0] <= frac <= HOP_MSD_RANGE[1] else (
            "high" if frac > HOP_MSD_RANGE[1] else "low")
    if frac is not None and not confined and not HOP_MSD_RANGE[0] <= frac <= HOP_MSD_RANGE[1]:
        why = ("most hops are back-and-forth or confined (e.g. within cages) motion" if frac > HOP_MSD_RANGE[1]
               else "hops are missed, or the ions move without hopping between sites")
        ci = f", 95 % interval {frac_ci[0]:.2f}-{frac_ci[1]:.2f} over ions" if frac_ci is not None else ""
        warnings.append(f"hops do not carry the measured transport: D_hops/D_MSD = {frac:.2f}{ci} "
                        f"(expected {HOP_MSD_RANGE[0]}-{HOP_MSD_RANGE[1]}): {why}")
        logger.warning(warnings[-1])
    meta = res.metastable
    return HopStatistics(
        method=hops.parameters.method,
        n_sites=hops.n_sites,
        site_model=hops.extra.get("site_model"),
        n_hops=int(len(closed)),
        n_open_hops=int(tab["open"].sum()),
        n_back_hops=int(closed["back_hop"].sum()),
        n_diffusive_ions=int(len(np.unique(closed["ion"]))),
        k_distribution={str(k): int(v) for k, v in zip(*np.unique(hops.k, return_counts=True))},
        mean_silhouette=_finite(float(np.nanmean(sil))) if np.any(np.isfinite(sil)) else None,
        median_sigma_A=_finite(float(np.median(hops.sigma_A))) if len(hops.sigma_A) else None,
        mean_hop_length_A=_finite(a_mean),
        max_hop_length_A=_finite(float(closed["length_A"].max())) if len(closed) else None,
        mean_hop_duration_ps=_finite(float(closed["duration_ps"].mean())) if len(closed) else None,
        hop_frequency_per_ps=nu,
        nu0_dilute_limit_per_ps=nu0,
        nu_over_nu0=(nu / nu0) if (nu is not None and nu0) else None,
        D_hops_cm2_s=_finite(d_hops * A2_PER_PS_TO_CM2_PER_S),
        hop_msd_fraction=_finite(frac),
        hop_msd_fraction_ci95=list(frac_ci) if frac_ci is not None else None,
        hop_msd_check=check,
        hop_correlation_factor=_finite(f_corr),
        hop_correlation_factor_std=_finite(jc.factor_std) if f_corr is not None else None,
        n_hop_pairs=int(jc.n_pairs) if jc is not None else 0,
        hop_frequency_effective_per_ps=_finite(nu * f_corr) if (nu is not None and f_corr is not None) else None,
        D_hops_correlated_cm2_s=_finite(d_hops * f_corr * A2_PER_PS_TO_CM2_PER_S) if f_corr is not None else None,
        hop_msd_fraction_correlated=_finite(frac * f_corr) if (frac is not None and f_corr is not None) else None,
        mean_residence_time_ps=_finite(float(res.duration_ps[meta].mean())) if meta.any() else None,
        n_metastable_residences=int(meta.sum()),
        mean_residence_time_all_ps=_finite(float(res.duration_ps.mean())) if len(res) else None,
        metastable_distance_A=metastable_distance_A,
    )


def analyse_positions(
    data: TrajectoryData,
    params: HopParameters | None = None,
    *,
    reference_sites: np.ndarray | None = None,
    n_jobs: int = 1,
    progress: bool = False,
    temperature_K: float | None = None,
    charge: float | None = None,
    correlation_params: CorrelationParameters | None = None,
    warm_centres: Sequence[Any] | None = None,
    scheduler: Any = None,
) -> RunAnalysis:
    """Hops, residences, transport and correlations of positions already read (no files written).

    ``data.positions`` is (n_frames, n_mobile, 3), read per ion block; ``n_jobs > 1`` or
    ``scheduler`` (a Dask address or client) run one Dask task per ion block.
    """
    from iondiff_stream.core.progress import stage

    params = params or HopParameters()
    transport = None
    if (isinstance(data.positions, np.ndarray) and data.positions.nbytes <= THREADED_TRANSPORT_MAX_BYTES
            and scheduler is None and n_jobs == 1):
        # small run in memory, hops in this process: transport (mostly BLAS/FFT work, which releases the GIL)
        # runs in a thread on the second core while the hops are found; it does not depend on them. Larger
        # runs stay sequential: the two working sets at once would not respect the memory budget.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="transport") as pool:
            transport = pool.submit(transport_of, data, temperature_K, charge)
            hops = hops_of(data, params, n_jobs, progress, warm_centres, scheduler)
            st = stage("transport", 1)
            run = summarise(data, hops, reference_sites=reference_sites, temperature_K=temperature_K, charge=charge,
                            correlation_params=correlation_params, transport=transport)
    else:
        hops = hops_of(data, params, n_jobs, progress, warm_centres, scheduler)
        st = stage("transport", 1)
        run = summarise(data, hops, reference_sites=reference_sites, temperature_K=temperature_K, charge=charge,
                        correlation_params=correlation_params)
    st.finish()
    stage("correlations", 1).finish()
    return run


def hops_of(data: TrajectoryData, params: HopParameters | None = None, n_jobs: int = 1, progress: bool = False,
            warm_centres: Sequence[Any] | None = None, scheduler: Any = None) -> HopResults:
    """Hops of the mobile ions of a run: one site model per species (the hop stage of every analysis)."""
    params = params or HopParameters()
    per_ion = np.array([str(x) for x in data.species])
    species = sorted(set(per_ion.tolist()))
    fw = None
    if data.framework_positions is not None and data.framework_species is not None:
        fw = FrameworkFrames(data.framework_positions, np.asarray(data.framework_species))
    if len(species) > 1 and params.method == "sites":
        # every species learns its own sites (a Li site and an S site are different places even when close)
        parts = []
        for name in species:
            ions = np.flatnonzero(per_ion == name)
            pos = (data.positions[:, ions] if isinstance(data.positions, np.ndarray)  # in memory: a copy
                   else IonSubset(data.positions, ions))  # out of core: read lazily, block by block
            res = find_hops(pos, data.times_ps, params, np.asarray(data.atom_indices)[ions],
                            n_jobs=n_jobs, progress=progress, atom_ids=np.asarray(data.atom_ids)[ions], box=data.box,
                            layout="frame", client=scheduler, framework=fw, species=[name])
            parts.append((ions, res))
        hops = combine_hop_results(parts, data.n_mobile, labels=species)
        msg = (f"{len(species)} mobile species ({', '.join(species)}): sites learnt per species; transport "
               "(D*, D_sigma, conductivity) is over all of them together")
        logger.warning(msg)
        hops.warnings.append(msg)
    else:
        hops = find_hops(data.positions, data.times_ps, params, data.atom_indices, n_jobs=n_jobs, progress=progress,
                         atom_ids=data.atom_ids, warm_centres=warm_centres, box=data.box, layout="frame",
                         client=scheduler, framework=fw, species=species)
    chk = hops.extra.get("site_check")
    if chk and chk.get("site_check") in ("warn", "fail"):
        msg = (f"site model self-check {chk['site_check']} ({hops.extra.get('site_model', 'sites')}): "
               + "; ".join(r.split(": ", 1)[1] for r in chk["site_check_reasons"])
               + ": hop counts, frequencies, lengths and residence times are unreliable")
        logger.warning(msg)
        hops.warnings.append(msg)
    return hops


def open_run(trajectories: Any, mobile: str, *, topology: str | None = None, segment: int | str | None = None,
             reader_kwargs: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """The Universe of a run and its mobile atoms: the one way in for every analysis of files or stores.

    Parameters
    ----------
    trajectories : path or list of paths
    mobile : str
        Mobile ions (element, ``"type N"`` or an MDAnalysis selection).
    topology : str, optional
    segment : int or "all", optional
        Frame stores and LAMMPS dumps (default: the last segment). A store's reader chooses it here;
        a dump's segments are chosen when its frames are read (``collect_positions(segment=...)``).
    reader_kwargs : dict, optional

    Returns
    -------
    universe : MDAnalysis.Universe
    mobile : MDAnalysis.AtomGroup
    """
    reader_kwargs = dict(reader_kwargs or {})
    if _store_path(trajectories) is not None:
        reader_kwargs.setdefault("segment", segment)
    elif segment is not None and not _is_dump(trajectories):
        from iondiff_stream.core.errors import IonDiffStreamError

        raise IonDiffStreamError("--segment applies to frame stores (*.zarr) and LAMMPS dumps only")
    u = load_universe(trajectories, topology, **reader_kwargs)
    return u, select_mobile(u, mobile)


def read_run(trajectories: Any, mobile: str, *, topology: str | None = None, segment: int | str | None = None,
             start: int | None = None, stop: int | None = None, reader_kwargs: dict[str, Any] | None = None,
             **collect_kwargs: Any) -> TrajectoryData:
    """Unwrapped, drift-corrected positions of a run's mobile ions (:func:`open_run` + ``collect_positions``).

    The live monitor's final count reads a store through this function, as ``analyze`` does, so that
    both count hops on the same positions.

    Returns
    -------
    TrajectoryData
    """
    u, ag = open_run(trajectories, mobile, topology=topology, segment=segment, reader_kwargs=reader_kwargs)
    if _store_path(trajectories) is None:
        collect_kwargs.setdefault("segment", segment)
    return collect_positions(u, ag, start=start, stop=stop, **collect_kwargs)


def analyze_run(
    trajectories: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    mobile: str,
    *,
    topology: str | None = None,
    out_dir: str | None = None,
    timestep_ps: float | None = None,
    md_timestep_ps: float | None = None,
    remove_drift: bool = True,
    params: HopParameters | None = None,
    reference: str | None = None,
    n_jobs: int = 1,
    progress: Any = False,
    start: int | None = None,
    stop: int | None = None,
    step: int | None = None,
    reader_kwargs: dict[str, Any] | None = None,
    temperature_K: float | None = None,
    charge: float | None = None,
    correlation_params: Any = None,
    segment: int | str | None = None,
    memory_budget: Any = None,
    out_of_core: bool | None = None,
    scheduler: Any = None,
    allow_discontinuities: bool = False,
    force_timestep: bool = False,
    start_ps: float | None = None,
    stop_ps: float | None = None,
    trust_lo: float | None = None,
    trust_hi: float | None = None,
) -> RunAnalysis:
    """Analyse one run (one or several consecutive files) end to end.

    Parameters
    ----------
    trajectories : path or list of paths
        Files of one run in time order (restarts are concatenated).
    mobile : str
        Mobile ions: element (``"Li"``), ``"type 1"`` or an MDAnalysis selection.
    topology : str, optional
        Topology file (LAMMPS data file for dumps).
    out_dir : str, optional
        Write ``hops.csv``, ``summary.json`` and ``results.zarr`` there.
    timestep_ps : float, optional
        Time between stored frames, ps, when the files do not say.
    md_timestep_ps : float, optional
        MD timestep for LAMMPS dumps (frame times = step × this).
    remove_drift : bool
        Subtract framework drift.
    params : HopParameters, optional
        ``method="sites"`` (default) or ``"silhouette"`` (the published procedure).
    reference : str, optional
        A structure file (any format ASE reads) whose sites of the mobile
        species define the reference lattice for metastable residences; default:
        the first frame.
    n_jobs : int
        Dask worker processes (a ``LocalCluster``) for the per-ion work; 1 runs in-process.
    progress : bool or callable
        One progress bar (rich, with ETA) over the whole run on stderr; a callable
        ``progress(stage_name, fraction_done)`` is called instead of drawing a bar.
    temperature_K, charge : float, optional
        For conductivities (charge defaults from the element).
    correlation_params : CorrelationParameters, optional
    segment : int or "all", optional
        Frame stores (one segment per LAMMPS ``run``) and LAMMPS dumps (a segment per
        ``reset_timestep``): the segment to analyse; default the last. ``"all"`` joins them on one
        time axis, without a boundary frame that repeats the frame before. The summary lists the
        segments (and for stores the frames a ring dropped, and ``store_complete``).
    start, stop, step : int, optional
        Frames to analyse, counted within the chosen segment.
    start_ps, stop_ps : float, optional
        Analyse the frames whose time from the first frame of the chosen segment lies in
        ``[start_ps, stop_ps]`` (any input; see :mod:`iondiff_stream.io.segments`).
    memory_budget : int or str or MemoryBudget, optional
        Working memory (default 1 GiB; e.g. ``"2GB"``). Positions go out of
        core (``out_dir/positions.zarr``, or a temporary store) when float64
        positions would take more than a quarter of it; ion blocks are sized
        from it.
    out_of_core : bool, optional
        Force (True) or forbid (False) the on-disk positions store.
    scheduler : str or distributed.Client, optional
        Dask scheduler address (e.g. ``"tcp://10.0.0.1:8786"``) or client: one
        task per ion block of the per-ion work.
    allow_discontinuities, force_timestep : bool
        Analyse a run with repeated frames or jumps between frames / with a
        ``timestep_ps`` contradicting the file's times, with a warning
        (see :func:`iondiff_stream.io.collect_positions`).
    trust_lo, trust_hi : float, optional
        Trust levels of the DeePMD model deviation, eV/Å (default DP-GEN's 0.05, 0.15), for a frame store that
        holds one (:func:`iondiff_stream.analysis.trust.add_model_deviation`: hops gain ``max_devi_f_eV_A``).

    Returns
    -------
    RunAnalysis
    """
    from iondiff_stream.pipeline.files import write_outputs

    from iondiff_stream.io.positions_store import MemoryBudget, parse_bytes
    from iondiff_stream.core.progress import RunProgress, run_weights, stage

    params = params or HopParameters()
    if n_jobs < 0:
        n_jobs = os.cpu_count() or 1
    from iondiff_stream.io.segments import check_time_window

    check_time_window(start_ps, stop_ps)
    store = _store_path(trajectories)
    reader_kwargs = dict(reader_kwargs or {})
    store_alive = False
    if store is not None:
        reader_kwargs.setdefault("segment", segment)
        store_alive = _store_being_written(store)
    # the bar is shown while the files are opened: a compressed dump or XDATCAR is decompressed then (its
    # bytes advance "read"); until the frame count is known, that scan is guessed at a quarter of the run
    bar = RunProgress({"read": 1.0, "frames": 3.0}, enabled=bool(progress) and not callable(progress),
                      listener=progress if callable(progress) else None)
    with bar:
        u, ag = open_run(trajectories, mobile, topology=topology, segment=segment, reader_kwargs=reader_kwargs)
        budget = memory_budget if isinstance(memory_budget, MemoryBudget) or memory_budget is None \
            else MemoryBudget(parse_bytes(memory_budget))
        n_read = len(range(*slice(start, stop, step).indices(u.trajectory.n_frames)))
        weights = run_weights(n_read, len(ag), len(u.atoms) - len(ag) if remove_drift else 0)
        if out_dir is None:
            weights.pop("write")
        store_path = os.path.join(out_dir, "positions.zarr") if out_dir is not None else None
        bar.reweight(weights)
        data = collect_positions(
            u,
            ag,
            remove_drift=remove_drift,
            timestep_ps=timestep_ps,
            md_timestep_ps=md_timestep_ps,
            start=start,
            stop=stop,
            step=step,
            memory_budget=budget,
            out_of_core=out_of_core,
            store_path=store_path,
            n_workers=max(1, n_jobs),
            allow_discontinuities=allow_discontinuities,
            force_timestep=force_timestep,
            segment=None if store is not None else segment,
            start_ps=start_ps,
            stop_ps=stop_ps,
        )
        if out_dir is not None and not data.out_of_core and os.path.isdir(store_path):
            import shutil

            shutil.rmtree(store_path)  # a store of an earlier out-of-core analysis of this output directory
        sites = None
        if reference is not None:
            sites = _reference_sites(reference, set(map(str, data.species)), data.box)
        run = analyse_positions(data, params, reference_sites=sites, n_jobs=n_jobs,
                                temperature_K=temperature_K, charge=charge, correlation_params=correlation_params,
                                scheduler=scheduler)
        run.facts.extra.update(data.meta.get("selection", {}))
        if store is not None:
            _add_store_info(run, store, reader_kwargs.get("segment"), complete=not store_alive)
            from iondiff_stream.analysis.trust import add_model_deviation

            add_model_deviation(run, store, trust_lo, trust_hi)
        if out_dir is not None:
            st = stage("write", 1)
            files = [os.fspath(trajectories)] if isinstance(trajectories, (str, os.PathLike)) \
                else [os.fspath(t) for t in trajectories]
            run.facts.extra.update({"inputs": files, "mobile": mobile, "topology": topology})
            write_outputs(run, out_dir)
            st.finish()
    return run


def _store_path(trajectories: Any) -> str | None:
    """The path when the input is one frame store, else None."""
    paths = [trajectories] if isinstance(trajectories, (str, os.PathLike)) else list(trajectories)
    if len(paths) == 1 and guess_format(os.fspath(paths[0])) == "IONDIFFZARR":
        return os.fspath(paths[0])
    return None


def _is_dump(trajectories: Any) -> bool:
    """True when the input is LAMMPS text dump(s)."""
    paths = [trajectories] if isinstance(trajectories, (str, os.PathLike)) else list(trajectories)
    return bool(paths) and guess_format(os.fspath(paths[0])) == "LAMMPSDUMP"


def _store_being_written(store: str) -> bool:
    """True (with a warning) when a writer holds the store's lock: the run is not finished."""
    if not writer_alive(store):
        return False
    logger.warning("%s is still being written (its writer holds the lock): analysing the frames committed so far; "
                   "the run is not finished (store_complete: false in the summary)", store)
    return True


def _add_store_info(run: Any, store: str, segment: Any, complete: bool = True) -> None:
    """Segments of the store, the one analysed, the frames a ring dropped and whether its writer had
    finished, into the summary."""
    from iondiff_stream.io.store import store_info

    info = store_info(store, segment)
    info["store_complete"] = bool(complete)
    run.facts.extra.update(info)
    if len(info["store_segments"]) > 1:
        logger.warning("%s holds %d segments (one per LAMMPS run); analysed: segment %s (choose with --segment N|all)",
                       store, len(info["store_segments"]), info["segment_analysed"])
    if info["ring_dropped_frames"]:
        logger.warning("%s is a ring: %d earlier frames were dropped; the analysis covers the %d frames it holds "
                       "(times as stored)", store, info["ring_dropped_frames"], info["frames_available"])


def _reference_sites(path: str, species: set[str], box: np.ndarray) -> np.ndarray:
    """Sites of ``species`` in a structure file, in the run's (canonical) cell orientation."""
    from iondiff_stream.io.readers import read_structure
    from MDAnalysis.lib.mdamath import triclinic_vectors

    from iondiff_stream.core.errors import SelectionError, TrajectoryFileNotFoundError

    if not os.path.exists(path):
        raise TrajectoryFileNotFoundError(f"reference structure not found: {path}")
    atoms = read_structure(path)
    mask = np.isin(atoms.get_chemical_symbols(), sorted(species))
    if not mask.any():
        raise SelectionError(f"reference structure {path} has no sites of {sorted(species)}")
    frac = atoms.get_scaled_positions(wrap=True)[mask]
    return frac @ triclinic_vectors(box).astype(np.float64)


def compute_descriptors(
    trajectories: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    mobile: str,
    *,
    topology: str | None = None,
    temperature_K: float | None = None,
    timestep_ps: float | None = None,
    md_timestep_ps: float | None = None,
    out_dir: str | None = None,
    lammps_units: str = "metal",
    source: str = "auto",
    **analyze_kwargs: Any,
) -> RunDescriptors:
    """Analyse a run (:func:`iondiff_stream.analyze_run`) and compute its descriptors.

    Parameters
    ----------
    trajectories, mobile, topology, temperature_K, timestep_ps, md_timestep_ps, out_dir
        As in ``analyze_run`` (``out_dir`` receives its outputs).
    lammps_units, source
        See :func:`run_descriptors`.
    **analyze_kwargs
        More keyword arguments of ``analyze_run``.
    """

    reader_kwargs = dict(analyze_kwargs.pop("reader_kwargs", None) or {})
    if lammps_units != "metal":
        reader_kwargs.setdefault("length_scale", lammps_factors(lammps_units)[0])
    run = analyze_run(trajectories, mobile, topology=topology, out_dir=out_dir, timestep_ps=timestep_ps,
                      md_timestep_ps=md_timestep_ps, temperature_K=temperature_K,
                      reader_kwargs=reader_kwargs or None, **analyze_kwargs)
    return run_descriptors(run, trajectories, topology, temperature_K=temperature_K, timestep_ps=timestep_ps,
                           md_timestep_ps=md_timestep_ps, lammps_units=lammps_units, source=source,
                           reader_kwargs=reader_kwargs or None)


def analyse_sites(
    trajectories: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    mobile: str,
    framework: str,
    *,
    topology: str | None = None,
    timestep_ps: float | None = None,
    md_timestep_ps: float | None = None,
    reference: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Tetrahedral-site analysis of a run's files: read once here, analysed by
    :func:`iondiff_stream.analysis.sites.analyse_sites` (site fractions, residence per type, concerted modes).

    Parameters
    ----------
    trajectories, topology, timestep_ps, md_timestep_ps
        As for :func:`analyze_run`.
    mobile : str
        Mobile ions (e.g. ``"Li"``).
    framework : str
        Anions spanning the tetrahedra (e.g. ``"S,Cl"``).
    reference : str, optional
        Structure file (any format ASE reads) with labelled sites.
    **kwargs
        ``labels``, ``default_label``, ``anchor``, ``window_ps``, ``align_tol_A``, ``match_tol_A`` of the analysis.
    """
    from iondiff_stream.analysis import sites
    from iondiff_stream.io import elements_of
    from iondiff_stream.io.readers import read_structure

    u = load_universe(trajectories, topology)
    mob = collect_positions(u, mobile, timestep_ps=timestep_ps, md_timestep_ps=md_timestep_ps, remove_drift=False)
    an = collect_positions(u, framework, timestep_ps=timestep_ps, md_timestep_ps=md_timestep_ps, remove_drift=False)
    if reference is not None and kwargs.get("anchor") is None:
        raise AnalysisError("aligning a reference structure needs an anchor species (e.g. 'P')")
    ref = read_structure(reference) if reference is not None else None
    u.trajectory[0]
    return sites.analyse_sites(mob, an, u.atoms.positions.astype(float), elements_of(u.atoms), reference_atoms=ref,
                               **kwargs)
