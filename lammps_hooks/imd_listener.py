"""Receive frames from ``fix imd ... version 3`` of any LAMMPS binary (IMDv3, via MDAnalysis's IMD reader).

LAMMPS side (the simulation waits for the listener unless ``nowait on``)::

    fix stream all imd 8888 version 3 unwrap on trate 10

Listener side::

    iondiff-stream listen localhost:8888 --topology system.data --mobile F --store run.zarr

The topology (a LAMMPS data file of the same system) gives atom ids and types; IMD frames carry
positions (Å), the box, the step and the time. Frames go through the same
:class:`iondiff_stream.io.sink.FrameSink` as the ``fix external`` hook. Only loopback or the user's own
hosts should be given as HOST.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from iondiff_stream.core.errors import IonDiffStreamError
from iondiff_stream.io.sink import FrameSink

logger = logging.getLogger(__name__)

__all__ = ["listen"]


def listen(
    address: str,
    topology: str,
    mobile: str,
    store: str,
    capacity: int | None = None,
    chunk_frames: int = 100,
    max_frames: int | None = None,
    timeout: float = 60.0,
    units: str = "metal",
    mode: str = "a",
    overwrite: bool = False,
    on_frame: Any = None,
    model_devi: str | None = None,
) -> dict[str, Any]:
    """Connect to an IMDv3 server at ``HOST:PORT`` and store frames until the simulation ends.

    ``units`` is the LAMMPS unit style of the simulation: IMD carries LAMMPS's own length and time
    values, converted to Å and ps like the hook's. IMD frames say nothing about ``run`` commands:
    a timestep reset (``reset_timestep``) starts a new segment of the store, consecutive runs
    without a reset form one segment. ``mode``/``overwrite`` as in
    :class:`iondiff_stream.io.sink.FrameSink` (``"w"`` refuses a store that holds frames).

    Ctrl-C closes the store (every frame received so far, the last segment marked interrupted) and
    re-raises ``KeyboardInterrupt``. ``on_frame(n)``, if given, is called with the frames received so far
    after each frame (the command line's progress).

    ``model_devi``: DeePMD's model deviation file (``pair_style deepmd m0.pb m1.pb ... out_file PATH``) when
    the listener runs where LAMMPS writes it (same machine or a shared file system): its new lines are read
    after every received frame and kept in ``STORE/model_devi/``, keyed by MD step
    (:class:`iondiff_stream.io.model_deviation.ModelDeviationFollower`); IMD does not carry them. The lines
    written after the last frame are stored when the simulation ends.

    Returns
    -------
    dict
        ``frames`` received, the sink's report (with ``model_devi_rows`` when following the deviation).
    """
    import MDAnalysis as mda
    from MDAnalysis.lib.mdamath import triclinic_vectors

    from iondiff_stream.core.elements import elements_from_masses
    from iondiff_stream.io.universe import data_atom_style

    if ":" not in address:
        raise IonDiffStreamError(f"address must be HOST:PORT, got {address!r}")
    try:
        import imdclient  # noqa: F401
    except ImportError as exc:
        raise IonDiffStreamError("listening needs the 'imdclient' package (pip install imdclient)") from exc
    style = data_atom_style(topology)
    top = mda.Universe(topology, topology_format="DATA", **({"atom_style": style} if style else {}))
    ids = np.asarray(top.atoms.ids, dtype=np.int64)
    order = np.argsort(ids)
    types = np.asarray(top.atoms.types).astype(np.int64)[order]
    masses = {int(t): float(m) for t, m in zip(top.atoms.types, top.atoms.masses)}
    elements = {t: e for t, e in zip(sorted(masses), elements_from_masses([masses[t] for t in sorted(masses)])) if e}
    sink = FrameSink(store, ids[order], types, mobile, elements, units=units, capacity=capacity,
                     chunk_frames=chunk_frames, metadata={"source": f"imd://{address}"}, worker="thread",
                     mode=mode, overwrite=overwrite)
    devi = None
    if model_devi is not None:
        from iondiff_stream.io.model_deviation import ModelDeviationFollower

        devi = ModelDeviationFollower(model_devi, store, sink.ion_ids, mode="w" if overwrite or mode == "w" else "a",
                                      meta={"source": f"imd://{address}"})
    u = mda.Universe(topology, f"imd://{address}", topology_format="DATA", timeout=timeout,
                     **({"atom_style": style} if style else {}))
    n = 0
    interrupted = None
    try:
        for ts in u.trajectory:
            h = triclinic_vectors(ts.dimensions).astype(np.float64)
            step = int(ts.data.get("step", n))
            # MDAnalysis hands over LAMMPS's numbers unchanged (its IMD units are Å and ps)
            sink.push(step, float(ts.time), np.array(u.atoms.positions, dtype=np.float64)[order], h)
            if devi is not None:
                devi.poll()
            n += 1
            if on_frame is not None:
                on_frame(n)
            if max_frames is not None and n >= max_frames:
                break
    except KeyboardInterrupt:  # Ctrl-C: the store is closed with its last segment marked interrupted
        interrupted = "SIGINT"
        raise
    finally:
        try:
            report = sink.close(interrupted=interrupted)
        finally:
            if devi is not None:
                report_devi = devi.close()  # the lines written after the last frame
        if devi is not None:
            report.update(report_devi)
        try:
            u.trajectory.close()
        except Exception:  # noqa: BLE001
            pass
    return {"frames": n, **report}
