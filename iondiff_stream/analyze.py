"""One call for the whole offline analysis of one run: read, hops, transport, outputs."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .hops import HopParameters, find_hops
from .io import collect_positions, load_universe, select_mobile
from .results import RunAnalysis, summarise, write_outputs

logger = logging.getLogger(__name__)

__all__ = ["analyze_run"]


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
    progress: bool = False,
    start: int | None = None,
    stop: int | None = None,
    step: int | None = None,
    reader_kwargs: dict[str, Any] | None = None,
    temperature_K: float | None = None,
    charge: float | None = None,
    correlation_params: Any = None,
    memory_budget: Any = None,
    out_of_core: bool | None = None,
    scheduler: Any = None,
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
    reference : str, optional
        A structure file (any format ASE reads) whose sites of the mobile
        species define the reference lattice for metastable centres; default:
        the first frame.
    n_jobs : int
        Dask worker processes (a ``LocalCluster``) for the per-ion work; 1 runs in-process.
    progress : bool
        One progress bar (rich, with ETA) over the whole run on stderr.
    temperature_K, charge : float, optional
        For conductivities (charge defaults from the element).
    correlation_params : CorrelationParameters, optional
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

    Returns
    -------
    RunAnalysis
    """
    from .io.positions_store import MemoryBudget, parse_bytes
    from .progress import RunProgress, run_weights, stage

    u = load_universe(trajectories, topology, **(reader_kwargs or {}))
    ag = select_mobile(u, mobile)
    budget = memory_budget if isinstance(memory_budget, MemoryBudget) or memory_budget is None \
        else MemoryBudget(parse_bytes(memory_budget))
    n_read = len(range(*slice(start, stop, step).indices(u.trajectory.n_frames)))
    weights = run_weights(n_read, len(ag), len(u.atoms) - len(ag) if remove_drift else 0)
    if out_dir is None:
        weights.pop("write")
    store_path = os.path.join(out_dir, "positions.zarr") if out_dir is not None else None
    with RunProgress(weights, enabled=progress):
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
        )
        if out_dir is not None and not data.out_of_core and os.path.isdir(store_path):
            import shutil

            shutil.rmtree(store_path)  # a store of an earlier out-of-core analysis of this output directory
        warm = _warm_centres(trajectories, data)
        hops = find_hops(data.positions, data.times_ps, params, data.atom_indices, n_jobs=n_jobs,
                         atom_ids=data.atom_ids, warm_centres=warm, client=scheduler)
        sites = None
        if reference is not None:
            sites = _reference_sites(reference, set(map(str, data.species)), data.box)
        st = stage("transport", 1)
        run = summarise(data, hops, reference_sites=sites, temperature_K=temperature_K, charge=charge,
                        correlation_params=correlation_params)
        st.finish()
        stage("correlations", 1).finish()
        if out_dir is not None:
            st = stage("write", 1)
            files = [os.fspath(trajectories)] if isinstance(trajectories, (str, os.PathLike)) \
                else [os.fspath(t) for t in trajectories]
            write_outputs(run, out_dir, extra={"inputs": files, "mobile": mobile, "topology": topology})
            st.finish()
    return run


def _warm_centres(trajectories: Any, data: Any) -> list[Any] | None:
    """Online centres of a frame store, per analysed ion (None for other inputs)."""
    from .io import guess_format

    paths = [trajectories] if isinstance(trajectories, (str, os.PathLike)) else list(trajectories)
    if len(paths) != 1 or guess_format(os.fspath(paths[0])) != "IONDIFFZARR":
        return None
    from .buffer import FrameStoreReader
    from .online import OnlineCentres  # imports scipy.stats: only for stores

    st = FrameStoreReader(os.fspath(paths[0])).online_state()
    if st is None:
        return None
    est = OnlineCentres.load(st)
    if data.framework_drift is not None:  # centres were learnt before drift removal
        shift = data.framework_drift[-1]
    else:
        shift = np.zeros(3)
    out = []
    for idx in data.atom_indices:
        k = int(est.n_centres_[idx]) if idx < len(est.n_centres_) else 0
        out.append(est.centres_[idx, :k] - shift if k >= 2 else None)
    logger.info("warm start from the online centres of %d ions", sum(c is not None for c in out))
    return out


def _reference_sites(path: str, species: set[str], box: np.ndarray) -> np.ndarray:
    """Sites of ``species`` in a structure file, in the run's (canonical) cell orientation."""
    import ase.io
    from MDAnalysis.lib.mdamath import triclinic_vectors

    from .errors import SelectionError, TrajectoryFileNotFoundError

    if not os.path.exists(path):
        raise TrajectoryFileNotFoundError(f"reference structure not found: {path}")
    atoms = ase.io.read(path)
    mask = np.isin(atoms.get_chemical_symbols(), sorted(species))
    if not mask.any():
        raise SelectionError(f"reference structure {path} has no sites of {sorted(species)}")
    frac = atoms.get_scaled_positions(wrap=True)[mask]
    return frac @ triclinic_vectors(box).astype(np.float64)
