"""Output files of an offline analysis: writing and reading ``hops.csv``, ``summary.json``, ``results.zarr``.

Nothing here computes an analysis (that is :mod:`iondiff_stream.analyze`); units are in every name
(``_A``, ``_ps``, ``_cm2_s``) and in the Zarr attributes.
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import StoreError, TrajectoryFileNotFoundError

if TYPE_CHECKING:
    from .analyze import RunAnalysis

logger = logging.getLogger(__name__)

__all__ = ["write_outputs", "read_outputs", "ion_centres"]


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
    arr("k", h.k.astype(np.int32), None, "distinct sites visited (sites method) / centres (silhouette) per ion")
    arr("hops_per_ion", h.hops_per_ion.astype(np.int64), None, "closed hops of every mobile ion")
    arr("sigma_A", np.asarray(h.sigma_A, float), "angstrom", "vibration amplitude per axis (short-time fluctuations)")
    arr("r_core_A", np.asarray(h.r_core_A, float), "angstrom", "core / vibrating radius before the per-site cap")
    if h.sites is not None:
        arr("sites_A", h.sites.sites_A, "angstrom", "shared sites, wrapped into the cell (n_sites, 3)")
        arr("site_core_cap_A", h.sites.core_cap_A, "angstrom", "largest core radius of every site")
        arr("states", h.states, None, "site index per ion and frame, -1 in transit (n_mobile, n_frames)")
    else:
        arr("states", h.states, None, "centre index per ion and frame, -1 in transit (n_mobile, n_frames)")
        arr("k_silhouette", np.array([i.k_silhouette for i in h.ions], np.int16), None, "K chosen by silhouette alone")
        arr("centres_A", h.centres_padded(), "angstrom", "unwrapped centres (n_mobile, 2*k_max, 3), NaN padded")
        arr("silhouette", np.array([i.silhouette for i in h.ions]), None, "best average silhouette per ion")
        arr("silhouette_by_k", np.stack([i.silhouette_by_k for i in h.ions]), None,
            "average silhouette for K = 2..k_max (n_mobile, k_max - 1)")
    pos = run.data.positions  # (n_frames, n_mobile, 3)
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
    r = run.residences
    if len(r):
        rg = g.create_group("residences")
        for key in ("ion", "centre", "arrival_frame", "departure_frame"):
            rg.create_array(key, data=np.asarray(getattr(r, key), dtype=np.int64))
        rg.create_array("duration_ps", data=np.asarray(r.duration_ps, float)).attrs["units"] = "ps"
        rg.create_array("metastable", data=np.asarray(r.metastable, bool))
    logger.info("wrote %s (hops.csv, summary.json, results.zarr)", out_dir)


def read_outputs(out_dir: str) -> tuple[dict[str, Any], Any]:
    """``summary.json`` (dict) and ``results.zarr`` (read-only Zarr group) of an analysis directory.

    Raises
    ------
    TrajectoryFileNotFoundError
        If the directory has no analysis outputs.
    """
    import zarr

    sj = os.path.join(out_dir, "summary.json")
    zp = os.path.join(out_dir, "results.zarr")
    if not (os.path.exists(sj) and os.path.exists(zp)):
        raise TrajectoryFileNotFoundError(f"{out_dir} has no summary.json/results.zarr: run 'iondiff-stream analyze' first")
    with open(sj) as fh:
        summary = json.load(fh)
    return summary, zarr.open_group(zp, mode="r")


def ion_centres(g: Any, ion: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres one ion visited and its frame states relabelled to them (for the path figure).

    Parameters
    ----------
    g : zarr.Group
        ``results.zarr`` of an analysis.
    ion : int
        Mobile-ion index.

    Returns
    -------
    centres : ndarray, shape (k, 3)
        Unwrapped positions of the sites (or centres) the ion visited, Å.
    states : ndarray, shape (T,)
        Index into ``centres`` per frame, -1 in transit.
    """
    st = np.asarray(g["states"][ion])
    if "sites_A" not in g:
        k = int(g["k"][ion])
        return np.asarray(g["centres_A"][ion][:k], float), st
    from .pbc import minimum_image

    vis = np.unique(st[st >= 0])
    local = np.where(st >= 0, np.searchsorted(vis, np.maximum(st, 0)), -1)
    sites = np.asarray(g["sites_A"][:], float)[vis]
    if "positions_A" in g and len(vis):
        x = np.asarray(g["positions_A"][ion], float)
        first = np.array([int(np.argmax(st == v)) for v in vis])
        sites = x[first] - minimum_image(x[first] - sites, np.asarray(g["box"][:], float))
    return sites, local


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
