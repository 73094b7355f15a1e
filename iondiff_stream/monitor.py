"""Live monitor of a store being written: ``iondiff-stream monitor RUN.zarr [--once --json]``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from iondiff_stream.io.store import FrameStoreReader
from iondiff_stream.core.errors import StoreCorruptError, StoreOverwrittenError
from iondiff_stream.live.hops import LiveHops

__all__ = ["status", "watch"]


def status(path: str, recent: int = 200, verify: bool = False, live: LiveHops | None = None,
           hops: bool = True, trust_lo: float | None = None, trust_hi: float | None = None) -> dict[str, Any]:
    """One status snapshot of a store (safe while the writer appends).

    Reads the steps and times of every available frame and the first and last chunk of positions
    (all chunks with ``verify``), so a damaged chunk among those raises
    :class:`~iondiff_stream.core.errors.StoreCorruptError`. A ring that overwrites frames while they are
    read is read again.

    Parameters
    ----------
    path : str
    recent : int
        Frames whose wall-clock stamps give the speed.
    verify : bool
        Read every chunk (checksums).
    live : LiveHops, optional
        The live hop count to update (a monitor keeps one across refreshes); by default a new one
        (the offline analysis of the frames stored so far).
    hops : bool
        Count hops at all (False: frames, speed and MSD only).
    trust_lo, trust_hi : float, optional
        Trust levels of the DeePMD model deviation, eV/Å (default DP-GEN's 0.05 and 0.15).

    Returns
    -------
    dict
        ``frames``, ``last_step``, ``simulated_time_ps``, ``speed_ns_per_day`` (from the
        wall-clock stamps of the last ``recent`` frames), ``msd_A2`` and ``D_running_cm2_s``
        per species (first available frame to the last, framework drift removed),
        ``hops``, ``ions_in_transit``, ``hop_rate_per_ion_per_ps``, ``n_sites``, ``site_model``,
        ``site_check``, ``live_frames``, ``live_final`` (see :class:`iondiff_stream.live.hops.LiveHops`),
        ``skipped_duplicate_frames``, ``step_gaps``, ``segments`` (one per LAMMPS run),
        ``ring_dropped_frames``, ``unclean_writer_exits``; ``model_deviation`` for a DeePMD run with model
        deviation (:func:`iondiff_stream.analysis.trust.deviation_status`: current and largest force deviation,
        frames above the trust levels, a ``warning`` when the run left the trusted region).
    """
    if live is None and hops:
        live = LiveHops(path)
    for attempt in range(5):
        try:
            return _status(path, recent, verify, live, (trust_lo, trust_hi))
        except StoreOverwrittenError:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def _status(path: str, recent: int, verify: bool, live: LiveHops | None,
            trust: tuple[float | None, float | None] = (None, None)) -> dict[str, Any]:
    r = FrameStoreReader(path)
    n = r.n_frames
    out: dict[str, Any] = {"store": path, "frames": n, "frames_total": r.commit.n_frames,
                           "last_step": r.commit.last_step, "n_ions": int(len(r.ion_ids))}
    segs = r.segments
    out["segments"] = [{k: g.get(k) for k in ("index", "first_step", "last_step", "n_frames", "started_by", "restarts",
                                              "dropped_by_ring")} for g in segs]
    out["ring_dropped_frames"] = r.ring_dropped_frames
    if r.commit.unclean_exits:
        out["unclean_writer_exits"] = len(r.commit.unclean_exits)
    if n == 0:
        return out
    small = r.read(0, n, names=("step", "time_ps"))  # checksums of the small arrays
    if verify:
        r.verify()
    else:
        r.read(max(0, n - int(r.chunk)), n, names=("positions",))
    if segs:  # running MSD and D over the current (last) segment
        first_i = segs[-1]["start"]
    else:
        first_i = 0
    first = r.read(first_i, first_i + 1)
    last = r.read(n - 1, n)
    t0, t1 = float(first["time_ps"][0]), float(last["time_ps"][0])
    out["simulated_time_ps"] = t1
    tail = r.read(max(first_i, n - recent), n, names=("time_ps", "wall_s"))
    dwall = float(tail["wall_s"][-1] - tail["wall_s"][0])
    dsim = float(tail["time_ps"][-1] - tail["time_ps"][0])
    out["speed_ns_per_day"] = (dsim * 1e-3) / (dwall / 86400.0) if dwall > 0 else None
    disp = last["positions"][0] - first["positions"][0]
    fc0, fc1 = first["framework_centre"][0], last["framework_centre"][0]
    if np.all(np.isfinite(fc0)) and np.all(np.isfinite(fc1)):
        disp = disp - (fc1 - fc0)
    sq = (disp**2).sum(1)
    species = np.asarray(r.species)
    out["msd_A2"] = {str(s): float(sq[species == s].mean()) for s in np.unique(species)}
    dt = t1 - t0
    out["D_running_cm2_s"] = {k: (v / (6 * dt) * 1e-4 if dt > 0 else None) for k, v in out["msd_A2"].items()}
    if live is not None:
        live.update()
        lv = live.summary()
        out.update(lv)
        if dt > 0 and live.n_frames_ > 1:
            out["hop_rate_per_ion_per_ps"] = lv["hops"] / (len(r.ion_ids) * dt)
    out["skipped_duplicate_frames"] = r.commit.n_skipped_duplicates
    out["step_gaps"] = r.commit.n_step_gaps
    from iondiff_stream.analysis.trust import deviation_status

    devi = deviation_status(path, small["step"], *trust)
    if devi is not None:
        out["model_deviation"] = devi
    return out


def watch(path: str, interval: float = 2.0, max_updates: int | None = None,
          on_status: Callable[[dict[str, Any]], None] | None = None, trust_lo: float | None = None,
          trust_hi: float | None = None) -> None:
    """Refresh a terminal table with :func:`status` every ``interval`` seconds (Ctrl-C to stop).

    ``on_status`` is called with every status shown (e.g. :class:`~iondiff_stream.live_page.LivePage`).
    """
    from rich.live import Live
    from rich.table import Table

    follower = LiveHops(path)  # the live hop count lives in this process, across refreshes

    def table() -> Table:
        try:
            st = status(path, live=follower, trust_lo=trust_lo, trust_hi=trust_hi)
        except StoreCorruptError:
            raise
        except Exception as exc:  # noqa: BLE001 - keep watching through transient states
            st = {"store": path, "waiting": str(exc)}
        if on_status is not None:
            on_status(st)
        t = Table(title=f"iondiff-stream monitor — {path}")
        t.add_column("quantity")
        t.add_column("value")
        for k, v in st.items():
            if isinstance(v, float):
                v = f"{v:.4g}"
            elif isinstance(v, list):
                v = "; ".join(f"{g.get('index')}: steps {g.get('first_step')}..{g.get('last_step')} "
                              f"({g.get('n_frames')} frames, {g.get('started_by')})" if isinstance(g, dict) else str(g)
                              for g in v)
            elif isinstance(v, dict):
                v = ", ".join(f"{a}: {b:.4g}" if isinstance(b, float) else f"{a}: {b}" for a, b in v.items())
            t.add_row(k, str(v))
        return t

    n = 0
    try:
        with Live(table(), refresh_per_second=4) as live:
            while max_updates is None or n < max_updates:
                time.sleep(interval)
                live.update(table())
                n += 1
    except KeyboardInterrupt:
        raise  # Ctrl-C: the command exits 130
