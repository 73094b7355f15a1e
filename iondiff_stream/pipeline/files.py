"""Output files of an offline analysis: writing and reading ``hops.csv``, ``summary.json``, ``results.zarr``.

Nothing here computes an analysis (that is :mod:`iondiff_stream.pipeline.run`); units are in every name
(``_A``, ``_ps``, ``_cm2_s``) and in the Zarr attributes.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np

from iondiff_stream.io import RESULTS_FORMAT
from iondiff_stream.pipeline.result import RunAnalysis
from iondiff_stream.core.jsonio import json_default
from iondiff_stream.core.errors import StoreError, TrajectoryFileNotFoundError, TrajectoryFormatError


logger = logging.getLogger(__name__)

__all__ = ["write_outputs", "read_outputs", "ion_centres"]


def write_outputs(run: RunAnalysis, out_dir: str, extra: dict[str, Any] | None = None) -> None:
    """Write ``hops.csv``, ``summary.json`` and ``results.zarr`` into ``out_dir``.

    Raises
    ------
    StoreError
        If ``out_dir`` cannot be created or written.
    """
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
        json.dump(summary, fh, indent=2, default=json_default)
    os.replace(tmp, os.path.join(out_dir, "summary.json"))

    # results.zarr: every group and array with its attributes is planned first, then written concurrently
    # through zarr's public asynchronous API (groups, then all arrays) instead of one blocking call per array
    # and attribute (~90 round trips)
    groups: dict[str, dict[str, Any]] = {}
    arrays: list[tuple[str, str, np.ndarray, dict[str, Any], dict[str, Any]]] = []
    root_attrs: dict[str, Any] = {"format": RESULTS_FORMAT, "length_unit": "angstrom", "time_unit": "ps",
                                  "summary": json.loads(json.dumps(summary, default=json_default))}
    h = run.hops

    def arr(name: str, values: np.ndarray, units: str | None, doc: str | None = None, group: str = "",
            **kwargs: Any) -> None:
        attrs: dict[str, Any] = {}
        if doc:
            attrs["description"] = doc
        if units:
            attrs["units"] = units
        arrays.append((group, name, np.ascontiguousarray(values), attrs, kwargs))

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
        root_attrs["positions_store"] = os.path.abspath(run.data.store.path) if run.data.store is not None else None
        logger.info("positions stay in their store %s (not copied into results.zarr)", root_attrs["positions_store"])
    elif pos.nbytes // 2 <= 2 * 2**30:  # float32 copy up to 2 GiB (it duplicates the trajectory)
        arr("positions_A", np.asarray(pos).transpose(1, 0, 2).astype(np.float32), "angstrom",
            "unwrapped (drift-corrected) positions (n_mobile, n_frames, 3)", chunks=(1, run.data.n_frames, 3))
    else:
        logger.warning("positions (%.1f GiB) not copied into results.zarr: read them from the trajectory",
                       pos.nbytes / 2**31)
    arr("box", run.data.box, "angstrom, degrees", "cell [a, b, c, alpha, beta, gamma] of the first frame")
    groups["hops"] = {"description": "one entry per hop; columns as in hops.csv"}
    for name, values in h.hops.columns.items():
        units = "eV/angstrom" if name.endswith("_eV_A") else "angstrom" if name.endswith("_A") else "ps" if name.endswith("_ps") else None
        arr(name, values, units, group="hops")
    groups["msd"] = {}
    tr = run.transport
    arr("lag_ps", tr.lag_ps if tr is not None else np.zeros(0), "ps", group="msd")
    arr("msd_A2", tr.msd_A2 if tr is not None else np.zeros(0), "angstrom^2", group="msd")
    arr("msd_axes_A2", tr.msd_axes_A2 if tr is not None else np.zeros((0, 3)), "angstrom^2", group="msd")
    if tr is not None:
        arr("mscd_A2", tr.mscd_A2, "angstrom^2", group="msd")
        groups["msd"]["description"] = "tracer MSD (msd_A2, per axis msd_axes_A2) and collective MSD / N (mscd_A2)"
    if run.correlations is not None:
        c = run.correlations
        coo = c.corr.tocoo()
        groups["correlations"] = {"threshold": float(c.threshold), "description": "sparse event-event correlation "
                                  "(closed hops in hops.csv order), concerted groups, group-size histogram n=1..20"}
        for name, values in (("corr_row", coo.row.astype(np.int64)), ("corr_col", coo.col.astype(np.int64)),
                             ("corr_value", coo.data.astype(np.float64)),
                             ("group_of_event", c.group_of_event.astype(np.int64)),
                             ("group_sizes", c.group_sizes.astype(np.int64)),
                             ("size_hist", c.size_hist.astype(np.int64))):
            arr(name, values, None, group="correlations")
    r = run.residences
    if len(r):
        groups["residences"] = {}
        for key in ("ion", "centre", "arrival_frame", "departure_frame"):
            arr(key, np.asarray(getattr(r, key), dtype=np.int64), None, group="residences")
        arr("duration_ps", np.asarray(r.duration_ps, float), "ps", group="residences")
        arr("metastable", np.asarray(r.metastable, bool), None, group="residences")
    _run_async(_write_zarr(os.path.join(out_dir, "results.zarr"), root_attrs, groups, arrays))
    logger.info("wrote %s (hops.csv, summary.json, results.zarr)", out_dir)


def _run_async(coro: Any) -> Any:
    """Run a coroutine of zarr's public asynchronous API to completion from synchronous code (in a fresh
    thread when the caller already runs an event loop, e.g. a notebook)."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _write_zarr(path: Any, root_attrs: dict[str, Any], groups: dict[str, dict[str, Any]],
                      arrays: list[tuple[str, str, np.ndarray, dict[str, Any], dict[str, Any]]]) -> None:
    """Create the group at ``path`` (a path or a store; replacing it), its subgroups, then every array with data.

    ``arrays`` holds ``(subgroup or "", name, data, attributes, create_array keyword arguments)``.
    """
    import asyncio

    import zarr.api.asynchronous as za

    root = await za.open_group(path, mode="w", attributes=root_attrs)
    made = await asyncio.gather(*(root.create_group(name, attributes=attrs) for name, attrs in groups.items()))
    parent = {"": root, **dict(zip(groups, made))}
    await asyncio.gather(*(parent[g].create_array(name, data=data, attributes=attrs, **kw)
                           for g, name, data, attrs, kw in arrays))


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
    try:
        with open(sj) as fh:
            summary = json.load(fh)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TrajectoryFormatError(f"{sj}: not a summary written by 'iondiff-stream analyze' ({exc})") from exc
    if not isinstance(summary, dict):
        raise TrajectoryFormatError(f"{sj}: not a summary written by 'iondiff-stream analyze'")
    try:
        g = zarr.open_group(zp, mode="r")
    except Exception as exc:  # noqa: BLE001 - zarr raises several kinds for a damaged group
        raise StoreError(f"{zp}: cannot open the results store ({type(exc).__name__}: {exc})") from exc
    return summary, g


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
    from iondiff_stream.core.pbc import minimum_image

    vis = np.unique(st[st >= 0])
    local = np.where(st >= 0, np.searchsorted(vis, np.maximum(st, 0)), -1)
    sites = np.asarray(g["sites_A"][:], float)[vis]
    if "positions_A" in g and len(vis):
        x = np.asarray(g["positions_A"][ion], float)
        first = np.array([int(np.argmax(st == v)) for v in vis])
        sites = x[first] - minimum_image(x[first] - sites, np.asarray(g["box"][:], float))
    return sites, local


# --- sanity of summaries and ownership of output directories (issue 12) ---

__all__ += ["prepare_output_dir", "OWNED_OUTPUTS"]

#: what ``analyze`` / ``report`` write into an output directory (``--overwrite`` removes these, nothing else)
OWNED_OUTPUTS = (
    "hops.csv",
    "summary.json",
    "summary.json.tmp",
    ".write_test",
    "results.zarr",
    "report.html",
    "ion_path.png",
    "hop_timeline.png",
    "correlation_matrix.png",
    "group_sizes.png",
    "msd.png",
    "positions.zarr",  # out-of-core positions of a long run
)


def prepare_output_dir(out_dir: str, overwrite: bool = False) -> list[str]:
    """Make sure an output directory can be written without mixing two runs.

    Parameters
    ----------
    out_dir : str
    overwrite : bool
        Allow a non-empty directory: the outputs of a previous analysis
        (:data:`OWNED_OUTPUTS`) are removed first; other files are left alone.

    Returns
    -------
    list of str
        Paths removed.

    Raises
    ------
    StoreError
        ``out_dir`` is a file, or holds files and ``overwrite`` is False.
    """
    import shutil

    if not os.path.exists(out_dir):
        return []
    if not os.path.isdir(out_dir):
        raise StoreError(f"output directory (--out) {out_dir} exists and is not a directory")
    present = sorted(os.listdir(out_dir))
    if not present:
        return []
    if not overwrite:
        shown = ", ".join(present[:5]) + (f", ... ({len(present)} entries)" if len(present) > 5 else "")
        raise StoreError(
            f"output directory (--out) {out_dir} is not empty ({shown}): choose a new directory, or pass "
            "--overwrite (overwrite=True) to replace the outputs of a previous analysis there"
        )
    removed = []
    for name in present:
        if name not in OWNED_OUTPUTS:
            continue
        p = os.path.join(out_dir, name)
        try:
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.remove(p)
        except OSError as exc:
            raise StoreError(f"cannot remove the previous output {p}: {exc}") from exc
        removed.append(p)
    kept = [n for n in present if n not in OWNED_OUTPUTS]
    if kept:
        logger.info("--overwrite: kept %d file(s) not written by iondiff-stream in %s: %s", len(kept), out_dir,
                    ", ".join(kept[:5]))
    return removed
