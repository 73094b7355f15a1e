"""Thin glue between LAMMPS and iondiff_stream.

* :mod:`lammps_hooks.fix_external` — ``fix external pf/callback`` for LAMMPS driven from Python
  (``attach(lmp, mobile=..., every=..., store=...)``), also used by ``iondiff-stream run``.
* :mod:`lammps_hooks.fix_python_invoke` — for LAMMPS binaries with the PYTHON package (``fix python/invoke``,
  e.g. Debian's ``lmp``); ``iondiff-stream snippet`` prints the input lines.
* :mod:`lammps_hooks.imd_listener` — receive frames from ``fix imd ... version 3`` of any LAMMPS binary.

The hook stays thin: slice ``[:nlocal]``, copy ids, positions and image flags (gathered to rank 0 under
MPI), hand plain arrays to :class:`iondiff_stream.io.sink.FrameSink`, which matches atoms by id (any ids),
unwraps and stores them; every ``run`` becomes a segment of the store.
"""

from .fix_external import Hook, atoms_by_id, attach, load_lammps

__all__ = ["Hook", "atoms_by_id", "attach", "load_lammps"]
