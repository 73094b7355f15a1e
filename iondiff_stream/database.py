"""Descriptor database of many runs on Dask: manifest -> per-run analysis -> statistics, classes, figures.

``iondiff-stream database MANIFEST.csv --out DB [--scheduler ADDRESS | --jobs N]``

Manifest (CSV, one row per run)::

    name,files,topology,mobile,temperature_K,timestep_ps,material[,family][,md_timestep_ps][,lammps_units]

``files`` holds one or more trajectory files of the run in time order separated
by ``;``; relative paths are relative to the manifest's folder. ``timestep_ps`` is
the time between stored frames (empty: from the files); ``md_timestep_ps`` (LAMMPS
dumps) makes frame times ``step × md_timestep_ps``; ``lammps_units`` (default
``metal``) converts dump velocities.

Layout of ``DB``::

    DB/runs/NAME/            one finished run: analysis/ (hops.csv, summary.json, results.zarr),
                             descriptors.json, vdos.npz and DONE (written last)
    DB/runs/NAME.failed.json error of the last failed attempt (removed when the run succeeds)
    DB/runs/.work/           attempts in progress (a finished attempt is renamed to runs/NAME at once)

Cache: a finished run is reused only when its cache key (``descriptors.json`` → ``cache_key``, see
:func:`cache_key`) equals today's: the package version, the inputs of its manifest row (files, topology, mobile,
temperature, time steps, units; not the labels) and the analysis parameters (hop rule, correlations,
descriptor options). Otherwise it is analysed again and reported (``DatabaseResult.redone``, ``redone.json``,
a warning naming what changed): a new release with a new descriptor reaches every run cached before it.

    DB/descriptors.csv       one row per finished run
    DB/spearman.csv, DB/spearman_p.csv   Spearman ρ and two-sided p-values (scipy.stats.spearmanr)
    DB/pca.json              PCA of the standardised descriptors (scikit-learn)
    DB/classes.csv, DB/kmeans.json       k-means classes, K chosen by the silhouette
    DB/failures.json         runs that failed, with their errors
    DB/redone.json           runs analysed again in this build because their cache key changed, and why
    DB/*.png, DB/index.html  figures and the page that shows them

Each run is one Dask task that writes into a fresh folder under ``runs/.work`` and
renames it to ``runs/NAME`` when everything, the ``DONE`` marker last, is written:
a run is either complete or absent, whatever is killed when. A rebuild skips
finished runs, retries failed ones, and never lets one failure stop the others.
The workers must see ``DB`` and the trajectories at the same paths (a shared file
system, as on any cluster).

Statistics (all on ``descriptors.csv``):

* Spearman: every numeric descriptor column with at least 3 finite values that is
  not constant; each pair over the runs where both are finite (pairwise complete),
  ``scipy.stats.spearmanr``; NaN where fewer than 3 runs are in common.
* PCA and k-means: the columns finite for every run and not constant, standardised
  (``sklearn.preprocessing.StandardScaler``); ``sklearn.decomposition.PCA``;
  ``sklearn.cluster.KMeans(n_init=10, random_state=0)`` for K = 2..min(8, n_runs − 1),
  K with the largest mean silhouette (``sklearn.metrics.silhouette_score``).
"""

from __future__ import annotations

import csv
import html
import json
import logging
import math
import os
import shutil
import time
import traceback
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from iondiff_stream.core.jsonio import json_default
from iondiff_stream.core.dask import dask_client
from iondiff_stream.core.errors import IonDiffStreamError

logger = logging.getLogger(__name__)

__all__ = [
    "ManifestError",
    "RunEntry",
    "read_manifest",
    "run_status",
    "analyse_entry",
    "build_database",
    "DatabaseResult",
    "write_statistics",
    "spearman_table",
    "pca_table",
    "kmeans_table",
    "descriptor_matrix",
    "stat_columns",
    "write_figures",
    "write_html",
    "STAT_EXCLUDE",
]

REQUIRED = ["name", "files", "topology", "mobile", "temperature_K", "timestep_ps", "material"]
OPTIONAL = ["family", "md_timestep_ps", "lammps_units"]
ID_COLUMNS = ["name", "material", "family"]
#: bookkeeping columns of descriptors.csv left out of the statistics (run length, sampling, counts, checks)
STAT_EXCLUDE = {
    "n_frames", "n_frames_vibrational", "timestep_ps", "total_time_ps", "n_mobile", "n_atoms", "n_atoms_d", "n_atoms_nd", "n_atoms_fw",
    "n_atoms_all", "nyquist_THz", "vdos_weight_near_nyquist", "T_kinetic_K", "T_kinetic_K_d", "T_kinetic_K_nd",
    "T_kinetic_K_fw", "T_kinetic_K_all", "T_kinetic_over_T", "vdos_source", "n_hops",
    "D_tracer_status", "D_sigma_status", "haven_ratio_status", "sigma_NE_status",
}
#: transport columns whose value a run may not support, and the descriptor holding the reason
STATUS_OF = {"D_tracer_cm2_s": "D_tracer_status", "D_sigma_cm2_s": "D_sigma_status", "haven_ratio": "haven_ratio_status",
             "sigma_NE_mS_cm": "sigma_NE_status"}
DONE = "DONE"


class ManifestError(IonDiffStreamError, ValueError):
    """The manifest is missing, has missing columns, duplicate or unsafe names or bad values."""


@dataclass
class RunEntry:
    """One manifest row (paths absolute)."""

    name: str
    files: list[str]
    topology: str | None
    mobile: str
    temperature_K: float | None
    timestep_ps: float | None
    material: str
    family: str = ""
    md_timestep_ps: float | None = None
    lammps_units: str = "metal"


def _opt_float(v: str | None, what: str, row: int) -> float | None:
    if v is None or v.strip() == "":
        return None
    try:
        f = float(v)
    except ValueError:
        raise ManifestError(f"manifest row {row}: {what} = {v!r} is not a number") from None
    if not math.isfinite(f) or f <= 0:
        raise ManifestError(f"manifest row {row}: {what} must be > 0, got {v!r}")
    return f


def read_manifest(path: str) -> list[RunEntry]:
    """Read and check a manifest (see the module docstring).

    Raises
    ------
    ManifestError
        Missing file or columns, empty/duplicate/unsafe names, bad numbers.
    """
    if not os.path.exists(path):
        raise ManifestError(f"manifest not found: {path}")
    base = os.path.dirname(os.path.abspath(path))

    def absolute(p: str) -> str:
        p = os.path.expanduser(p.strip())
        return p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p))

    with open(path, newline="") as fh:
        rd = csv.DictReader(fh)
        cols = [c.strip() for c in (rd.fieldnames or [])]
        missing = [c for c in REQUIRED if c not in cols]
        if missing:
            raise ManifestError(f"manifest {path} lacks column(s) {', '.join(missing)}; required: {', '.join(REQUIRED)}")
        entries: list[RunEntry] = []
        seen: set[str] = set()
        for i, raw in enumerate(rd, start=2):
            row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            if not any(row.values()):
                continue
            name = row["name"]
            if not name or name.startswith(".") or any(c in name for c in "/\\:") or name != name.strip():
                raise ManifestError(f"manifest row {i}: run name {name!r} is empty or not usable as a folder name")
            if name in seen:
                raise ManifestError(f"manifest row {i}: duplicate run name {name!r}")
            seen.add(name)
            files = [absolute(f) for f in row["files"].split(";") if f.strip()]
            if not files:
                raise ManifestError(f"manifest row {i} ({name}): no files")
            if not row["mobile"]:
                raise ManifestError(f"manifest row {i} ({name}): no mobile species")
            entries.append(RunEntry(
                name=name,
                files=files,
                topology=absolute(row["topology"]) if row.get("topology") else None,
                mobile=row["mobile"],
                temperature_K=_opt_float(row.get("temperature_K"), "temperature_K", i),
                timestep_ps=_opt_float(row.get("timestep_ps"), "timestep_ps", i),
                material=row.get("material") or name,
                family=row.get("family", ""),
                md_timestep_ps=_opt_float(row.get("md_timestep_ps"), "md_timestep_ps", i),
                lammps_units=row.get("lammps_units") or "metal",
            ))
    if not entries:
        raise ManifestError(f"manifest {path} has no runs")
    return entries


def run_status(db: str, name: str) -> str:
    """``"done"``, ``"failed"`` or ``"pending"`` for run ``name`` of database ``db``."""
    if os.path.exists(os.path.join(db, "runs", name, DONE)):
        return "done"
    if os.path.exists(os.path.join(db, "runs", name + ".failed.json")):
        return "failed"
    return "pending"


def _write_json(path: str, obj: Any) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2, default=json_default)
    os.replace(tmp, path)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


def analysis_parameters() -> dict[str, Any]:
    """The analysis parameters a database run is computed with (defaults of the hop rule, the correlations
    and the descriptors), as JSON values: part of the cache key."""
    import inspect

    from iondiff_stream.analysis.correlations import CorrelationParameters
    from iondiff_stream.analysis.descriptors import run_descriptors
    from iondiff_stream.analysis.hops import HopParameters

    desc = {k: p.default for k, p in inspect.signature(run_descriptors).parameters.items()
            if p.default is not inspect.Parameter.empty}
    return json.loads(json.dumps({"hops": asdict(HopParameters()), "correlations": asdict(CorrelationParameters()),
                                  "descriptors": desc}, default=json_default))


def cache_key(entry: RunEntry) -> dict[str, Any]:
    """What a finished run must have been analysed with to be reused.

    Returns
    -------
    dict
        ``package_version``, ``inputs`` (the manifest fields that change the analysis) and ``parameters``
        (:func:`analysis_parameters`).
    """
    from iondiff_stream import __version__

    row = json.loads(json.dumps(_clean(asdict(entry))))
    return {"package_version": __version__, "inputs": {k: row.get(k) for k in _ANALYSIS_FIELDS},
            "parameters": analysis_parameters()}


def _changes(old: Any, new: Any, path: str = "") -> list[str]:
    """Dotted names of the values that differ between two JSON trees."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [c for k in sorted(set(old) | set(new)) for c in _changes(old.get(k), new.get(k), f"{path}{k}.")]
    return [] if old == new else [path.rstrip(".")]


def stale_reason(out: str, entry: RunEntry, key: dict[str, Any] | None = None) -> str | None:
    """Why the finished run ``entry`` of database ``out`` must be analysed again, or None to reuse it.

    Parameters
    ----------
    out : str
        Database folder.
    entry : RunEntry
    key : dict, optional
        Today's :func:`cache_key` (computed when not given).
    """
    key = cache_key(entry) if key is None else key
    try:
        with open(os.path.join(out, "runs", entry.name, "descriptors.json")) as fh:
            old = json.load(fh).get("cache_key")
    except (OSError, ValueError, AttributeError):
        return "its descriptors.json cannot be read"
    if not isinstance(old, dict):
        return "it was analysed before cache keys were recorded"
    why = []
    if old.get("package_version") != key["package_version"]:
        why.append(f"package version {old.get('package_version')} -> {key['package_version']}")
    inputs = _changes(old.get("inputs"), key["inputs"])
    if inputs:
        why.append("manifest row changed: " + ", ".join(inputs))
    params = _changes(old.get("parameters"), key["parameters"])
    if params:
        why.append("analysis parameters changed: " + ", ".join(params))
    return "; ".join(why) or None


def analyse_entry(entry: RunEntry | dict[str, Any], db: str, key: dict[str, Any] | None = None) -> dict[str, Any]:
    """Analyse one run into ``db/runs/NAME`` (the Dask task; also usable alone).

    Writes into ``db/runs/.work/NAME-XXXX`` and renames that folder to
    ``db/runs/NAME`` after its ``DONE`` marker. An error is written to
    ``db/runs/NAME.failed.json`` and returned, never raised. ``key`` (default :func:`cache_key` of the entry)
    is recorded in ``descriptors.json``.

    Returns
    -------
    dict
        ``{"name", "status": "done"|"failed"|"skipped", "error"?, "seconds"}``.
    """
    from iondiff_stream.pipeline.run import compute_descriptors

    e = entry if isinstance(entry, RunEntry) else RunEntry(**entry)
    key = cache_key(e) if key is None else key
    runs = os.path.join(db, "runs")
    final = os.path.join(runs, e.name)
    failed = final + ".failed.json"
    if os.path.exists(os.path.join(final, DONE)):
        return {"name": e.name, "status": "skipped", "seconds": 0.0}
    work = os.path.join(runs, ".work", f"{e.name}-{uuid.uuid4().hex[:8]}")
    os.makedirs(work)
    t0 = time.perf_counter()
    try:
        desc = compute_descriptors(
            e.files, e.mobile, topology=e.topology, temperature_K=e.temperature_K, timestep_ps=e.timestep_ps,
            md_timestep_ps=e.md_timestep_ps, out_dir=os.path.join(work, "analysis"), lammps_units=e.lammps_units,
        )
        values = {"name": e.name, "material": e.material, "family": e.family, **desc.values}
        _write_json(os.path.join(work, "descriptors.json"),
                    _clean({"values": values, "group_size_hist": desc.group_size_hist, "entry": asdict(e),
                            "cache_key": key}))
        desc.save_vdos(os.path.join(work, "vdos.npz"))
        seconds = time.perf_counter() - t0
        _write_json(os.path.join(work, DONE), {"finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                               "seconds": seconds, "host": os.uname().nodename})
        if os.path.exists(final) and not os.path.exists(os.path.join(final, DONE)):
            shutil.rmtree(final, ignore_errors=True)  # leftovers of an old layout / a manual copy
        try:
            os.rename(work, final)
        except OSError:
            if os.path.exists(os.path.join(final, DONE)):  # another attempt finished first
                shutil.rmtree(work, ignore_errors=True)
                return {"name": e.name, "status": "skipped", "seconds": seconds}
            raise
        if os.path.exists(failed):
            os.remove(failed)
        logger.info("run %s done in %.1f s", e.name, seconds)
        return {"name": e.name, "status": "done", "seconds": seconds}
    except Exception as exc:  # noqa: BLE001 - one run's failure never stops the others
        msg = f"{type(exc).__name__}: {exc}"
        logger.error("run %s failed: %s", e.name, msg)
        _write_json(failed, {"name": e.name, "error": msg, "traceback": traceback.format_exc(),
                             "failed_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        shutil.rmtree(work, ignore_errors=True)
        return {"name": e.name, "status": "failed", "error": msg, "seconds": time.perf_counter() - t0}


@dataclass
class DatabaseResult:
    """Outcome of :func:`build_database`.

    Attributes
    ----------
    done : list of str
        Runs finished (now or before).
    skipped : list of str
        Runs found finished and not redone.
    failures : dict
        Run name -> error message.
    redone : dict
        Run name -> why its cached analysis was not reused (its cache key changed, :func:`stale_reason`).
    outputs : dict
        Output name -> path.
    """

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    redone: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)


def build_database(
    manifest: str,
    out: str,
    *,
    scheduler: str | None = None,
    client: Any = None,
    n_jobs: int | None = None,
    figures: bool = True,
) -> DatabaseResult:
    """Analyse every run of a manifest on Dask and write the database outputs.

    Parameters
    ----------
    manifest : str
        CSV manifest (see the module docstring).
    out : str
        Database folder (created).
    scheduler : str, optional
        Address of a running ``distributed`` scheduler (``tcp://HOST:PORT``).
    client : distributed.Client, optional
        An existing client (takes precedence over ``scheduler``).
    n_jobs : int, optional
        Worker processes of the default ``LocalCluster`` (default: CPU count).
    figures : bool
        Write the PNG figures and ``index.html``.

    Returns
    -------
    DatabaseResult
    """
    entries = read_manifest(manifest)
    os.makedirs(os.path.join(out, "runs", ".work"), exist_ok=True)
    result = DatabaseResult()
    todo = []
    keys = {e.name: cache_key(e) for e in entries}
    for e in entries:
        st = run_status(out, e.name)
        why = stale_reason(out, e, keys[e.name]) if st == "done" else None
        if why is not None:
            logger.warning("run %s: analysing it again (%s)", e.name, why)
            result.redone[e.name] = why
            old = os.path.join(out, "runs", ".work", f"{e.name}-stale{uuid.uuid4().hex[:8]}")
            os.rename(os.path.join(out, "runs", e.name), old)
            shutil.rmtree(old, ignore_errors=True)
            st = "pending"
        if st == "done":
            result.skipped.append(e.name)
        else:
            if st == "failed":
                logger.info("retrying failed run %s", e.name)
            todo.append(e)
    logger.info("%d runs: %d finished before, %d to analyse", len(entries), len(result.skipped), len(todo))
    if todo:
        _run_on_dask(todo, out, result, keys, scheduler=scheduler, client=client, n_jobs=n_jobs)
    result.done = [e.name for e in entries if run_status(out, e.name) == "done"]
    _remove_orphans(out, entries)
    for e in entries:
        if e.name not in result.done and e.name not in result.failures:
            result.failures[e.name] = _failure_message(out, e.name) or "not finished"
    _write_json(os.path.join(out, "failures.json"), result.failures)
    _write_json(os.path.join(out, "redone.json"), result.redone)
    result.outputs = write_statistics(out, [e for e in entries if e.name in result.done], figures=figures)
    result.outputs["failures"] = os.path.join(out, "failures.json")
    result.outputs["redone"] = os.path.join(out, "redone.json")
    if figures:
        result.outputs["html"] = write_html(out, entries, result)
    return result


#: manifest fields that change the analysis of a run (material and family are labels only)
_ANALYSIS_FIELDS = ("files", "topology", "mobile", "temperature_K", "timestep_ps", "md_timestep_ps", "lammps_units")


def _remove_orphans(out: str, entries: Sequence[RunEntry]) -> None:
    """Remove the work folders of attempts killed with their worker (every task of this build has ended)."""
    work = os.path.join(out, "runs", ".work")
    names = {e.name for e in entries}
    for d in os.listdir(work):
        if d.rsplit("-", 1)[0] in names:
            logger.info("removing %s, left by an attempt that was killed", d)
            shutil.rmtree(os.path.join(work, d), ignore_errors=True)


def _failure_message(out: str, name: str) -> str | None:
    p = os.path.join(out, "runs", name + ".failed.json")
    if not os.path.exists(p):
        return None
    with open(p) as fh:
        return str(json.load(fh).get("error"))


def _run_on_dask(todo: Sequence[RunEntry], out: str, result: DatabaseResult, keys: dict[str, dict[str, Any]], *,
                 scheduler: str | None, client: Any, n_jobs: int | None) -> None:
    with dask_client(client if client is not None else scheduler, n_jobs or os.cpu_count() or 1) as client:
        _submit_and_collect(client, todo, out, result, keys)


def _submit_and_collect(client: Any, todo: Sequence[RunEntry], out: str, result: DatabaseResult,
                        keys: dict[str, dict[str, Any]]) -> None:
    from distributed import as_completed

    db = os.path.abspath(out)
    futures = {}
    for e in todo:
        fut = client.submit(analyse_entry, asdict(e), db, keys[e.name],
                            key=f"iondiff-run-{e.name}-{uuid.uuid4().hex[:8]}", pure=False)
        futures[fut] = e.name
    n = 0
    for fut in as_completed(list(futures)):
        name = futures[fut]
        n += 1
        try:
            res = fut.result()
        except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: the run is reported, not fatal
            msg = f"{type(exc).__name__}: {exc}"
            logger.error("run %s lost on the cluster: %s", name, msg)
            if run_status(db, name) != "done":
                _write_json(os.path.join(db, "runs", name + ".failed.json"), {"name": name, "error": msg})
            result.failures[name] = msg
            continue
        if res["status"] == "failed":
            result.failures[name] = res["error"]
        logger.info("[%d/%d] %s: %s", n, len(futures), name, res["status"])


# ---------------------------------------------------------------------------
# statistics


def _load_rows(out: str, entries: Sequence[RunEntry]) -> tuple[list[dict[str, Any]], list[list[int]]]:
    rows, hists = [], []
    for e in entries:
        with open(os.path.join(out, "runs", e.name, "descriptors.json")) as fh:
            d = json.load(fh)
        v = d["values"]
        v.update({"name": e.name, "material": e.material, "family": e.family})
        rows.append(v)
        hists.append(list(d.get("group_size_hist") or []))
    return rows, hists


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    cols: list[str] = list(ID_COLUMNS)
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    return cols


def _as_float(v: Any) -> float:
    if v is None or v == "":
        return float("nan")
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _write_csv(path: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(header)
        for r in rows:
            wr.writerow(["" if (isinstance(x, float) and not math.isfinite(x)) else (repr(x) if isinstance(x, float) else x)
                         for x in r])
    os.replace(tmp, path)


def skipped_values(rows: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """Transport values that runs do not support, left out of the statistics.

    Parameters
    ----------
    rows : list of dict
        Descriptor rows (``name``, the transport columns and their ``*_status``).

    Returns
    -------
    list of dict
        ``name``, ``column``, ``status`` for every null transport value with a status other than resolved.
    """
    out = []
    for r in rows:
        for col, st_key in STATUS_OF.items():
            st = r.get(st_key)
            if st not in (None, "", "resolved") and not math.isfinite(_as_float(r.get(col))):
                out.append({"name": str(r.get("name")), "column": col, "status": str(st)})
    return out


def descriptor_matrix(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> np.ndarray:
    """Numbers of ``columns`` for every row, shape (n_runs, n_columns), NaN where missing."""
    return np.array([[_as_float(r.get(c)) for c in columns] for r in rows], dtype=float).reshape(len(rows), len(columns))


def stat_columns(names: Sequence[str], X: np.ndarray) -> tuple[list[str], list[str]]:
    """Columns for Spearman (≥ 3 finite values, not constant) and for PCA/k-means (also finite everywhere).

    Parameters
    ----------
    names : list of str
        Candidate numeric columns (bookkeeping ones already removed).
    X : ndarray, shape (n_runs, len(names))
    """
    sp_cols, full_cols = [], []
    for j, c in enumerate(names):
        x = X[:, j]
        fin = np.isfinite(x)
        if fin.sum() >= 3 and np.ptp(x[fin]) > 0:
            sp_cols.append(c)
            if fin.all():
                full_cols.append(c)
    return sp_cols, full_cols


def spearman_table(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise-complete Spearman ρ and p-values of the columns of ``X`` (scipy.stats.spearmanr).

    Parameters
    ----------
    X : ndarray, shape (n_runs, n_columns)

    Returns
    -------
    rho, p : ndarray, shape (n_columns, n_columns)
        NaN where fewer than 3 runs have both values or one of them is constant there.
    """
    from scipy.stats import spearmanr

    m = X.shape[1]
    rho = np.full((m, m), np.nan)
    p = np.full((m, m), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(m):
            for j in range(i, m):
                ok = np.isfinite(X[:, i]) & np.isfinite(X[:, j])
                if ok.sum() < 3 or np.ptp(X[ok, i]) == 0 or np.ptp(X[ok, j]) == 0:
                    continue
                r = spearmanr(X[ok, i], X[ok, j])
                rho[i, j] = rho[j, i] = float(r.statistic)
                p[i, j] = p[j, i] = float(r.pvalue)
    return rho, p


def pca_table(X: np.ndarray) -> dict[str, Any]:
    """PCA of standardised columns (``StandardScaler`` then ``PCA``).

    Parameters
    ----------
    X : ndarray, shape (n_runs, n_columns), finite

    Returns
    -------
    dict
        ``explained_variance_ratio``, ``explained_variance``, ``loadings``
        (n_components, n_columns), ``scores`` (n_runs, n_components), ``mean``, ``scale``.
    """
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(X)
    Z = sc.transform(X)
    pca = PCA(n_components=min(X.shape)).fit(Z)
    return {
        "explained_variance_ratio": pca.explained_variance_ratio_.tolist(),
        "explained_variance": pca.explained_variance_.tolist(),
        "loadings": pca.components_.tolist(),
        "scores": pca.transform(Z).tolist(),
        "mean": sc.mean_.tolist(),
        "scale": sc.scale_.tolist(),
    }


def kmeans_table(X: np.ndarray, k_max: int = 8, seed: int = 0) -> dict[str, Any]:
    """k-means on standardised columns with K chosen by the mean silhouette.

    Parameters
    ----------
    X : ndarray, shape (n_runs, n_columns), finite
    k_max : int
        Largest K tried (also at most n_runs − 1).

    Returns
    -------
    dict
        ``k``, ``labels`` (n_runs,), ``silhouette_by_k`` {K: score}, ``centres``
        (standardised units).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score
    from sklearn.preprocessing import StandardScaler

    n = X.shape[0]
    Z = StandardScaler().fit_transform(X)
    best: dict[str, Any] = {"k": 1, "labels": [0] * n, "silhouette_by_k": {}, "centres": [Z.mean(0).tolist()] if n else []}
    best_s = -np.inf
    for k in range(2, min(k_max, n - 1) + 1):
        km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(Z)
        if len(np.unique(km.labels_)) < 2:
            continue
        s = float(silhouette_score(Z, km.labels_))
        best["silhouette_by_k"][str(k)] = s
        if s > best_s:
            best_s = s
            best.update({"k": k, "labels": km.labels_.tolist(), "centres": km.cluster_centers_.tolist()})
    best["silhouette"] = best_s if np.isfinite(best_s) else None
    return best


def write_statistics(out: str, entries: Sequence[RunEntry], figures: bool = True) -> dict[str, str]:
    """Write descriptors.csv, spearman(.csv, _p.csv), pca.json, classes.csv, kmeans.json (and figures).

    Parameters
    ----------
    out : str
        Database folder.
    entries : list of RunEntry
        Finished runs.

    Returns
    -------
    dict
        Output name -> path.
    """
    rows, hists = _load_rows(out, entries)
    cols = _columns(rows)
    paths = {"descriptors": os.path.join(out, "descriptors.csv")}
    _write_csv(paths["descriptors"], cols, [[r.get(c, "") if r.get(c) is not None else "" for c in cols] for r in rows])
    cand = [c for c in cols if c not in ID_COLUMNS and c not in STAT_EXCLUDE]
    skipped = skipped_values(rows)
    if skipped:
        logger.warning("%d transport value(s) without meaning left out of Spearman/PCA (see skipped_values.csv): %s",
                       len(skipped), "; ".join(f"{r['name']} {r['column']} ({r['status']})" for r in skipped[:5]))
    paths["skipped_values"] = os.path.join(out, "skipped_values.csv")
    _write_csv(paths["skipped_values"], ["name", "column", "status"],
               [[r["name"], r["column"], r["status"]] for r in skipped])
    X = descriptor_matrix(rows, cand)
    sp_cols, full_cols = stat_columns(cand, X)
    Xs = descriptor_matrix(rows, sp_cols)
    rho, p = spearman_table(Xs) if sp_cols else (np.zeros((0, 0)), np.zeros((0, 0)))
    for key, mat in (("spearman", rho), ("spearman_p", p)):
        paths[key] = os.path.join(out, f"{key}.csv")
        _write_csv(paths[key], ["descriptor", *sp_cols], [[c, *mat[i].tolist()] for i, c in enumerate(sp_cols)])
    names = [r["name"] for r in rows]
    pca: dict[str, Any] = {"columns": full_cols, "runs": names, "excluded_incomplete": [c for c in sp_cols if c not in full_cols],
                           "note": "PCA of the standardised columns (finite for every run, not constant)",
                           "skipped_values": skipped,
                           "skipped_note": ("transport values a run cannot support (too short, no long-range "
                                            "diffusion, zero charge, not resolved from zero) are null and left out of "
                                            "Spearman (pairwise) and PCA/k-means (the column is dropped)")}
    km: dict[str, Any] = {"k": 1, "labels": [0] * len(rows), "silhouette_by_k": {}, "silhouette": None}
    if len(rows) >= 2 and full_cols:
        Xf = descriptor_matrix(rows, full_cols)
        pca.update(pca_table(Xf))
        if len(rows) >= 3:
            km = kmeans_table(Xf)
    km.update({"columns": full_cols, "runs": names})
    paths["pca"] = os.path.join(out, "pca.json")
    _write_json(paths["pca"], pca)
    paths["kmeans"] = os.path.join(out, "kmeans.json")
    _write_json(paths["kmeans"], km)
    paths["classes"] = os.path.join(out, "classes.csv")
    _write_csv(paths["classes"], ["name", "material", "family", "temperature_K", "class"],
               [[r["name"], r["material"], r["family"], _as_float(r.get("temperature_K")), int(lab)]
                for r, lab in zip(rows, km["labels"])])
    if figures and rows:
        paths.update(write_figures(out, rows, hists, sp_cols, rho, pca, km))
    return paths


# ---------------------------------------------------------------------------
# figures and page


def _fig(**kw: Any) -> Any:
    from matplotlib.figure import Figure

    return Figure(**kw)


def correlation_heatmap(rho: np.ndarray, names: Sequence[str]) -> Any:
    """Spearman ρ as a heat map (cf. the paper's correlation matrix). Returns a Figure."""
    n = len(names)
    size = max(5.0, 0.22 * n + 2)
    fig = _fig(figsize=(size + 1, size), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(rho), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(n), names, rotation=90, fontsize=6)
    ax.set_yticks(range(n), names, fontsize=6)
    fig.colorbar(im, ax=ax, shrink=0.6, label="Spearman ρ")
    ax.set_title("Spearman correlations of the descriptors")
    return fig


def pca_biplot(pca: dict[str, Any], labels: Sequence[int], run_names: Sequence[str], n_arrows: int = 8) -> Any:
    """Scores on PC1/PC2 coloured by k-means class, with the largest loadings as arrows. Returns a Figure."""
    fig = _fig(figsize=(7, 6), layout="constrained")
    ax = fig.add_subplot()
    sc = np.asarray(pca["scores"])
    if sc.shape[1] < 2:
        sc = np.column_stack([sc, np.zeros(len(sc))])
    ax.scatter(sc[:, 0], sc[:, 1], c=labels, cmap="tab10", vmin=0, vmax=9, s=40, edgecolors="k")
    for (x, y), nm in zip(sc[:, :2], run_names):
        ax.annotate(nm, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    L = np.asarray(pca["loadings"])
    if L.shape[0] >= 2:
        mag = np.hypot(L[0], L[1])
        scale = 0.9 * np.abs(sc[:, :2]).max() / max(mag.max(), 1e-12)
        for j in np.argsort(mag)[::-1][:n_arrows]:
            ax.arrow(0, 0, L[0, j] * scale, L[1, j] * scale, color="tab:red", alpha=0.6, width=0.003 * scale,
                     length_includes_head=True)
            ax.annotate(pca["columns"][j], (L[0, j] * scale, L[1, j] * scale), fontsize=6, color="tab:red")
    ev = pca["explained_variance_ratio"]
    ax.set_xlabel(f"PC1 ({100 * ev[0]:.0f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * ev[1]:.0f}% of variance)" if len(ev) > 1 else "PC2")
    ax.axhline(0, c="0.8", lw=0.5)
    ax.axvline(0, c="0.8", lw=0.5)
    ax.set_title("PCA biplot (colour: k-means class)")
    return fig


TRANSPORT_COLUMNS = ("D_tracer_cm2_s", "D_sigma_cm2_s", "sigma_NE_mS_cm", "haven_ratio", "D_vacf_cm2_s")


def strongest_descriptors(rho: np.ndarray, names: Sequence[str], target: str = "D_tracer_cm2_s", n: int = 4,
                          rows: Sequence[dict[str, Any]] | None = None) -> list[tuple[str, float]]:
    """The ``n`` descriptors with the largest |ρ| with ``target`` (transport quantities excluded).

    With ``rows``, only descriptors known together with ``target`` for at least
    half of the runs (and at least 4) are considered.
    """
    if target not in names:
        return []
    i = list(names).index(target)
    ok = set(names)
    if rows is not None:
        t = np.isfinite([_as_float(r.get(target)) for r in rows])
        need = max(4, int(math.ceil(0.5 * len(rows))))
        ok = {c for c in names if (np.isfinite([_as_float(r.get(c)) for r in rows]) & t).sum() >= need}
    cand = [(names[j], float(rho[i, j])) for j in range(len(names))
            if names[j] not in TRANSPORT_COLUMNS and names[j] in ok and np.isfinite(rho[i, j])]
    return sorted(cand, key=lambda t: -abs(t[1]))[:n]


def d_vs_descriptors(rows: Sequence[dict[str, Any]], strongest: Sequence[tuple[str, float]]) -> Any:
    """D* against the descriptors most correlated with it (log scale). Returns a Figure."""
    k = max(1, len(strongest))
    fig = _fig(figsize=(3.6 * k, 3.4), layout="constrained")
    D = np.array([_as_float(r.get("D_tracer_cm2_s")) for r in rows])
    for a, (name, r_s) in enumerate(strongest):
        ax = fig.add_subplot(1, k, a + 1)
        x = np.array([_as_float(r.get(name)) for r in rows])
        ok = np.isfinite(x) & np.isfinite(D) & (D > 0)
        ax.scatter(x[ok], D[ok], s=30, edgecolors="k")
        for xi, di, r in zip(x[ok], D[ok], [r for r, o in zip(rows, ok) if o]):
            ax.annotate(r["name"], (xi, di), fontsize=6, xytext=(2, 2), textcoords="offset points")
        ax.set_yscale("log")
        ax.set_xlabel(name, fontsize=8)
        ax.set_ylabel("D* (cm²/s)")
        ax.set_title(f"ρ = {r_s:+.2f}", fontsize=9)
    if not strongest:
        fig.add_subplot().text(0.5, 0.5, "no D* correlations (too few runs)", ha="center")
    return fig


def concert_by_temperature(rows: Sequence[dict[str, Any]], hists: Sequence[Sequence[int]], bin_K: float = 250.0) -> Any:
    """Distribution of the number of concerted ions per hop group, by temperature bin and by family. Returns a Figure."""
    fig = _fig(figsize=(10, 4), layout="constrained")
    for a, (key, label) in enumerate((("temperature", "temperature bin"), ("family", "family"))):
        ax = fig.add_subplot(1, 2, a + 1)
        groups: dict[str, np.ndarray] = {}
        for r, h in zip(rows, hists):
            if not h or sum(h) == 0:
                continue
            if key == "temperature":
                T = _as_float(r.get("temperature_K"))
                if not np.isfinite(T):
                    continue
                lo = bin_K * math.floor(T / bin_K)
                g = f"{lo:.0f}–{lo + bin_K:.0f} K"
            else:
                g = r.get("family") or r.get("material") or "?"
            acc = groups.setdefault(g, np.zeros(len(h)))
            if len(acc) < len(h):
                acc = np.pad(acc, (0, len(h) - len(acc)))
            acc[: len(h)] += np.asarray(h, float)
            groups[g] = acc
        def order(g: str) -> tuple[float, str]:
            try:
                return float(g.split("–")[0]), g
            except ValueError:
                return math.inf, g

        for g in sorted(groups, key=order):
            c = groups[g]
            n = np.arange(1, len(c) + 1)
            ok = c > 0
            ax.plot(n[ok], c[ok] / c.sum(), "o-", ms=4, label=f"{g} ({int(c.sum())} groups)")
        ax.set_yscale("log")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("ions in a concerted group, n")
        ax.set_ylabel("fraction of groups")
        ax.set_title(f"concerted-ion counts by {label}")
        if groups:
            ax.legend(fontsize=7)
    return fig


def vdos_figure(out: str, names: Sequence[str]) -> Any:
    """VDOS of the mobile ions and of the framework of every run. Returns a Figure."""
    fig = _fig(figsize=(10, 4), layout="constrained")
    axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
    for nm in names:
        p = os.path.join(out, "runs", nm, "vdos.npz")
        if not os.path.exists(p):
            continue
        z = np.load(p)
        for ax, g in zip(axes, ("mobile", "framework")):
            if f"freq_THz_{g}" in z:
                ax.plot(z[f"freq_THz_{g}"], z[f"dos_per_THz_{g}"], lw=0.8, label=nm)
    for ax, g in zip(axes, ("mobile ions", "framework")):
        ax.set_xlabel("ν (THz)")
        ax.set_ylabel("g(ν) (states / THz / atom)")
        ax.set_title(f"VDOS, {g}")
        ax.set_xlim(0, None)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=6)
    return fig


def write_figures(out: str, rows: Sequence[dict[str, Any]], hists: Sequence[Sequence[int]], sp_cols: Sequence[str],
                  rho: np.ndarray, pca: dict[str, Any], km: dict[str, Any]) -> dict[str, str]:
    """Save the database figures as PNG; returns name -> path."""
    paths = {}
    names = [r["name"] for r in rows]
    figs = {
        "fig_vdos": vdos_figure(out, names),
        "fig_concert": concert_by_temperature(rows, hists),
    }
    if len(sp_cols):
        figs["fig_spearman"] = correlation_heatmap(rho, sp_cols)
        figs["fig_d_vs_descriptors"] = d_vs_descriptors(rows, strongest_descriptors(rho, list(sp_cols), rows=rows))
    if "scores" in pca:
        figs["fig_pca"] = pca_biplot(pca, km["labels"], names)
    for key, fig in figs.items():
        p = os.path.join(out, key[4:] + ".png")
        fig.savefig(p, dpi=110)
        paths[key] = p
    return paths


SHOWN = ["temperature_K", "D_tracer_cm2_s", "haven_ratio", "n_hops", "hop_length_mean_A", "hop_duration_mean_ps",
         "hop_frequency_per_ps", "mean_correlated_ions", "mean_phonon_freq_THz", "heat_capacity_kB_per_atom",
         "vib_entropy_kB_per_atom", "lindemann_ratio", "T_kinetic_over_T", "vdos_source", "nyquist_THz"]


def write_html(out: str, entries: Sequence[RunEntry], result: DatabaseResult) -> str:
    """Write ``index.html`` (runs, failures, key descriptors, classes, figures); returns its path."""
    desc_p = os.path.join(out, "descriptors.csv")
    rows = []
    if os.path.exists(desc_p):
        with open(desc_p, newline="") as fh:
            rows = list(csv.DictReader(fh))
    classes = {}
    cp = os.path.join(out, "classes.csv")
    if os.path.exists(cp):
        with open(cp, newline="") as fh:
            classes = {r["name"]: r["class"] for r in csv.DictReader(fh)}

    def fmt(v: str) -> str:
        try:
            f = float(v)
        except ValueError:
            return html.escape(v)
        return f"{f:.4g}"

    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>iondiff_stream descriptor database</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}</style></head><body>",
             "<h1>Descriptor database</h1>",
             f"<p>{len(entries)} runs in the manifest: {len(result.done)} finished, {len(result.failures)} failed."
             " Files: <a href='descriptors.csv'>descriptors.csv</a>, <a href='spearman.csv'>spearman.csv</a>, "
             "<a href='spearman_p.csv'>spearman_p.csv</a>, <a href='pca.json'>pca.json</a>, "
             "<a href='classes.csv'>classes.csv</a>, <a href='kmeans.json'>kmeans.json</a>.</p>"]
    if result.failures:
        parts.append("<h2>Failed runs</h2><ul>")
        parts += [f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in result.failures.items()]
        parts.append("</ul>")
    flagged = []
    for r in rows:
        ratio = _as_float(r.get("T_kinetic_over_T"))
        near = _as_float(r.get("vdos_weight_near_nyquist"))
        if (np.isfinite(ratio) and abs(ratio - 1) > 0.25) or (np.isfinite(near) and near > 0.01):
            flagged.append(f"<li><b>{html.escape(r['name'])}</b>: the spectrum carries T_kin/T = {ratio:.2f}, "
                           f"{100 * near:.1f}% of the modes near the Nyquist frequency {fmt(r.get('nyquist_THz', ''))} THz"
                           "</li>")
    if flagged:
        parts.append("<h2>Vibrational descriptors not to be trusted</h2><p>Frames too far apart (the spectrum is cut "
                     "at the Nyquist frequency) or processed coordinates:</p><ul>" + "".join(flagged) + "</ul>")
    sk_p = os.path.join(out, "skipped_values.csv")
    if os.path.exists(sk_p):
        with open(sk_p, newline="") as fh:
            skipped = list(csv.DictReader(fh))
        if skipped:
            parts.append("<h2>Values without meaning (left out of Spearman and PCA)</h2><ul>"
                         + "".join(f"<li><b>{html.escape(r['name'])}</b>: {html.escape(r['column'])} null "
                                   f"({html.escape(r['status'])})</li>" for r in skipped) + "</ul>")
    cols = [c for c in SHOWN if rows and c in rows[0]]
    parts.append("<h2>Runs</h2><table><tr><th>name</th><th>material</th><th>class</th>"
                 + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>")
    for r in rows:
        parts.append(f"<tr><td>{html.escape(r['name'])}</td><td>{html.escape(r['material'])}</td>"
                     f"<td>{classes.get(r['name'], '')}</td>" + "".join(f"<td>{fmt(r.get(c, ''))}</td>" for c in cols)
                     + "</tr>")
    parts.append("</table>")
    for png, title in (("spearman.png", "Spearman correlation matrix"), ("pca.png", "PCA biplot and k-means classes"),
                       ("d_vs_descriptors.png", "D* against its most correlated descriptors"),
                       ("concert.png", "Concerted-ion counts by temperature and family"),
                       ("vdos.png", "Vibrational densities of states")):
        if os.path.exists(os.path.join(out, png)):
            parts.append(f"<h2>{title}</h2><img src='{png}'>")
    parts.append("</body></html>")
    p = os.path.join(out, "index.html")
    with open(p + ".tmp", "w") as fh:
        fh.write("\n".join(parts))
    os.replace(p + ".tmp", p)
    return p
