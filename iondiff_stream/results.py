"""Summaries and output files of an offline analysis (hops.csv, summary.json, results.zarr).

Units are in every name (``_A``, ``_ps``, ``_cm2_s``) and in the Zarr attributes.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import StoreError
from .hops import HopResults, parameters_dict
from .io import TrajectoryData
from .correlations import CorrelationParameters, CorrelationResult, concerted_groups
from .transport import DiffusionFit, TransportResult, analyse_transport, default_charge

logger = logging.getLogger(__name__)

__all__ = ["residence_times", "reference_sites_distance", "RunAnalysis", "summarise", "write_outputs"]


def reference_sites_distance(points: np.ndarray, sites: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Minimum-image distance from each point to the nearest reference site.

    Parameters
    ----------
    points : ndarray, shape (n, 3)
        Å (unwrapped is fine).
    sites : ndarray, shape (m, 3)
    box : ndarray, shape (6,)

    Returns
    -------
    ndarray, shape (n,)
        Å.
    """
    from MDAnalysis.lib.distances import distance_array

    if len(points) == 0:
        return np.zeros(0)
    d = distance_array(points.astype(np.float64), sites.astype(np.float64), box=box.astype(np.float32))
    return d.min(1)


def residence_times(hops: HopResults, times_ps: np.ndarray) -> list[dict[str, Any]]:
    """Complete residences at a centre (bounded by a hop in and a hop out).

    Returns
    -------
    list of dict
        ``ion, centre, arrival_frame, departure_frame, duration_ps``; the
        duration runs from the first frame vibrating at the centre (end of the
        hop in) to the last one (start of the hop out).
    """
    out: list[dict[str, Any]] = []
    tab = hops.hops.closed()
    ions = tab["ion"]
    for i in np.unique(ions):
        sel = np.flatnonzero(ions == i)
        sel = sel[np.argsort(tab["start_frame"][sel])]
        for a, b in zip(sel[:-1], sel[1:]):
            arr, dep = int(tab["end_frame"][a]), int(tab["start_frame"][b])
            if dep < arr:
                continue
            out.append(
                {
                    "ion": int(i),
                    "centre": int(tab["to_centre"][a]),
                    "arrival_frame": arr,
                    "departure_frame": dep,
                    "duration_ps": float(times_ps[dep] - times_ps[arr]),
                }
            )
    return out


@dataclass
class RunAnalysis:
    """Everything the offline analyzer computed for one run."""

    data: TrajectoryData
    hops: HopResults
    msd_lag_ps: np.ndarray
    msd_A2: np.ndarray
    msd_axes_A2: np.ndarray
    diffusion: DiffusionFit | None
    residences: list[dict[str, Any]]
    metastable: np.ndarray  # per residence: True when at a metastable centre
    summary: dict[str, Any] = field(default_factory=dict)
    transport: TransportResult | None = None
    correlations: CorrelationResult | None = None


def _finite(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def summarise(
    data: TrajectoryData,
    hops: HopResults,
    reference_sites: np.ndarray | None = None,
    metastable_distance_A: float = 1.0,
    max_lag_fraction: float = 0.5,
    temperature_K: float | None = None,
    charge: float | None = None,
    correlation_params: CorrelationParameters | None = None,
) -> RunAnalysis:
    """Residences, transport, correlations and the summary numbers of one analysed run.

    Parameters
    ----------
    data : TrajectoryData
    hops : HopResults
    reference_sites : ndarray, shape (m, 3), optional
        Sites of the reference lattice, Å. Default: the mobile ions' positions
        in the first frame.
    metastable_distance_A : float
        A centre is metastable when at least this far from every reference site.
    max_lag_fraction : float
        MSD lags up to this fraction of the run; D is fitted over the second
        half of those lags.
    temperature_K : float, optional
        For conductivities.
    charge : float, optional
        Ionic charge (e); default from the element (Li/Na +1, F -1, O -2, ...).
    correlation_params : CorrelationParameters, optional
    """
    T = data.n_frames
    times = data.times_ps
    dt = data.timestep_ps
    tab = hops.hops
    closed = tab.closed()
    total_ps = float(times[-1] - times[0]) if T > 1 else 0.0
    sites = np.asarray(data.positions[0], float) if reference_sites is None else np.asarray(reference_sites, float)
    res = residence_times(hops, times)
    meta = np.zeros(len(res), dtype=bool)
    if res:
        pts = np.array([hops.ions[r["ion"]].centres[r["centre"]] for r in res])
        meta = reference_sites_distance(pts, sites, data.box) >= metastable_distance_A
    if charge is None and temperature_K is not None:
        species = sorted({str(x) for x in data.species})
        charge = default_charge(species[0]) if len(species) == 1 else None
    tr = None
    if T >= 8:
        tr = analyse_transport(data.ion_major(), dt, data.volume_A3, temperature_K, charge,
                               max_lag_fraction=max_lag_fraction)
    corr = None
    if T >= 2 and total_ps > 0:
        corr = concerted_groups(tab, T, data.n_mobile, total_ps, data.box, correlation_params)
    sil = np.array([ion.silhouette for ion in hops.ions])
    durations = np.array([r["duration_ps"] for r in res])
    nu = (len(closed) / (data.n_mobile * total_ps)) if total_ps > 0 else None
    a_mean = float(closed["length_A"].mean()) if len(closed) else None
    nu0 = None
    if tr is not None and a_mean:
        nu0 = 6.0 * tr.tracer.D_A2_ps / a_mean**2  # dilute limit D = a^2 nu0 / 6
    summary: dict[str, Any] = {
        "n_frames": T,
        "n_mobile": data.n_mobile,
        "mobile_species": sorted({str(s) for s in data.species}),
        "timestep_ps": _finite(dt),
        "total_time_ps": total_ps,
        "temperature_K": temperature_K,
        "charge_e": charge,
        "n_hops": int(len(closed)),
        "n_open_hops": int(tab["open"].sum()),
        "n_back_hops": int(closed["back_hop"].sum()),
        "n_diffusive_ions": int(len(np.unique(closed["ion"]))),
        "k_distribution": {str(k): int(v) for k, v in zip(*np.unique(hops.k, return_counts=True))},
        "mean_silhouette": _finite(float(np.nanmean(sil))) if np.any(np.isfinite(sil)) else None,
        "mean_hop_length_A": _finite(a_mean) if a_mean is not None else None,
        "max_hop_length_A": _finite(float(closed["length_A"].max())) if len(closed) else None,
        "mean_hop_duration_ps": _finite(float(closed["duration_ps"].mean())) if len(closed) else None,
        "hop_frequency_per_ps": nu,
        "nu0_dilute_limit_per_ps": nu0,
        "nu_over_nu0": (nu / nu0) if (nu is not None and nu0) else None,
        "mean_residence_time_ps": _finite(float(durations[meta].mean())) if meta.any() else None,
        "n_metastable_residences": int(meta.sum()),
        "mean_residence_time_all_ps": _finite(float(durations.mean())) if len(durations) else None,
        "metastable_distance_A": metastable_distance_A,
        "drift_removed": data.framework_drift is not None,
        "volume_A3": _finite(data.volume_A3),
        "parameters": parameters_dict(hops.parameters),
    }
    if tr is not None:
        summary.update({k: (_finite(v) if isinstance(v, float) else v) for k, v in tr.summary().items()})
        summary["D_tracer_stderr_cm2_s"] = tr.tracer.stderr_cm2_s
    else:
        summary["D_tracer_cm2_s"] = None
    if corr is not None:
        summary.update(corr.summary())
    fit = tr.tracer if tr is not None else None
    lag = tr.lag_ps if tr is not None else np.zeros(0)
    msd = tr.msd_A2 if tr is not None else np.zeros(0)
    axes = tr.msd_axes_A2 if tr is not None else np.zeros((0, 3))
    return RunAnalysis(data, hops, lag, msd, axes, fit, res, meta, summary, tr, corr)


def write_outputs(run: RunAnalysis, out_dir: str, extra: dict[str, Any] | None = None) -> None:
    """Write ``hops.csv``, ``summary.json`` and ``results.zarr`` into ``out_dir``.

    Raises
    ------
    StoreError
        If ``out_dir`` cannot be created or written.
    """
    import zarr

    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = os.path.join(out_dir, ".write_test")
        with open(probe, "w") as fh:
            fh.write("")
        os.remove(probe)
    except OSError as exc:
        raise StoreError(f"cannot write to output directory {out_dir!r}: {exc}") from exc
    summary = dict(run.summary)
    if extra:
        summary.update(extra)
    run.hops.hops.to_csv(os.path.join(out_dir, "hops.csv"))
    tmp = os.path.join(out_dir, "summary.json.tmp")
    with open(tmp, "w") as fh:
        json.dump(summary, fh, indent=2, default=_json_default)
    os.replace(tmp, os.path.join(out_dir, "summary.json"))

    g = zarr.open_group(os.path.join(out_dir, "results.zarr"), mode="w")
    g.attrs.update({"length_unit": "angstrom", "time_unit": "ps", "summary": json.loads(json.dumps(summary, default=_json_default))})
    h = run.hops

    def arr(name: str, values: np.ndarray, units: str | None, doc: str) -> None:
        a = g.create_array(name, data=np.ascontiguousarray(values))
        a.attrs["description"] = doc
        if units:
            a.attrs["units"] = units

    arr("times_ps", run.data.times_ps, "ps", "time of every frame")
    arr("atom_indices", run.data.atom_indices.astype(np.int64), None, "0-based trajectory index of each mobile ion")
    arr("k", h.k.astype(np.int16), None, "number of vibrational centres per ion")
    arr("k_silhouette", np.array([i.k_silhouette for i in h.ions], np.int16), None, "K chosen by silhouette alone")
    arr("centres_A", h.centres_padded(), "angstrom", "unwrapped centres (n_mobile, 2*k_max, 3), NaN padded")
    arr("silhouette", np.array([i.silhouette for i in h.ions]), None, "best average silhouette per ion")
    arr(
        "silhouette_by_k",
        np.stack([i.silhouette_by_k for i in h.ions]),
        None,
        "average silhouette for K = 2..k_max (n_mobile, k_max - 1)",
    )
    arr("sigma_A", np.array([i.sigma_A for i in h.ions]), "angstrom", "vibration amplitude per axis")
    arr("r_vib_A", np.array([i.r_vib_A for i in h.ions]), "angstrom", "vibrating radius")
    arr("states", h.states(), None, "centre index per ion and frame, -1 in transit (n_mobile, n_frames)")
    pos = run.data.positions
    if run.data.out_of_core:
        g.attrs["positions_store"] = os.path.abspath(run.data.store.path) if run.data.store is not None else None
        logger.info("positions stay in their store %s (not copied into results.zarr)", g.attrs["positions_store"])
    elif pos.nbytes // 2 <= 2 * 2**30:  # float32 copy up to 2 GiB (it duplicates the trajectory)
        p = g.create_array("positions_A", shape=(pos.shape[1], pos.shape[0], 3), dtype="float32",
                           chunks=(1, run.data.n_frames, 3))
        p[:] = pos.transpose(1, 0, 2).astype(np.float32)
        p.attrs.update({"units": "angstrom", "description": "unwrapped (drift-corrected) positions (n_mobile, n_frames, 3)"})
    else:
        logger.warning("positions (%.1f GiB) not copied into results.zarr: read them from the trajectory",
                       pos.nbytes / 2**31)
    arr("box", run.data.box, "angstrom, degrees", "cell [a, b, c, alpha, beta, gamma] of the first frame")
    hg = g.create_group("hops")
    hg.attrs["description"] = "one entry per hop; columns as in hops.csv"
    for name, values in h.hops.columns.items():
        units = "angstrom" if name.endswith("_A") else "ps" if name.endswith("_ps") else None
        a = hg.create_array(name, data=np.ascontiguousarray(values))
        if units:
            a.attrs["units"] = units
    mg = g.create_group("msd")
    mg.create_array("lag_ps", data=run.msd_lag_ps).attrs["units"] = "ps"
    mg.create_array("msd_A2", data=run.msd_A2).attrs["units"] = "angstrom^2"
    mg.create_array("msd_axes_A2", data=run.msd_axes_A2).attrs["units"] = "angstrom^2"
    if run.transport is not None:
        mg.create_array("mscd_A2", data=run.transport.mscd_A2).attrs["units"] = "angstrom^2"
        mg.attrs["description"] = "tracer MSD (msd_A2, per axis msd_axes_A2) and collective MSD / N (mscd_A2)"
    if run.correlations is not None:
        c = run.correlations
        cg = g.create_group("correlations")
        coo = c.corr.tocoo()
        cg.create_array("corr_row", data=coo.row.astype(np.int64))
        cg.create_array("corr_col", data=coo.col.astype(np.int64))
        cg.create_array("corr_value", data=coo.data.astype(np.float64))
        cg.create_array("group_of_event", data=c.group_of_event.astype(np.int64))
        cg.create_array("group_sizes", data=c.group_sizes.astype(np.int64))
        cg.create_array("size_hist", data=c.size_hist.astype(np.int64))
        cg.attrs.update({"threshold": float(c.threshold), "description": "sparse event-event correlation "
                         "(closed hops in hops.csv order), concerted groups, group-size histogram n=1..20"})
    if run.residences:
        rg = g.create_group("residences")
        for key in ("ion", "centre", "arrival_frame", "departure_frame"):
            rg.create_array(key, data=np.array([r[key] for r in run.residences], dtype=np.int64))
        rg.create_array("duration_ps", data=np.array([r["duration_ps"] for r in run.residences])).attrs["units"] = "ps"
        rg.create_array("metastable", data=run.metastable.astype(bool))
    logger.info("wrote %s (hops.csv, summary.json, results.zarr)", out_dir)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.bool_):
        return bool(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
