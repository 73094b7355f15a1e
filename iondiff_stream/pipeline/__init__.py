"""The one orchestrator: read a run once, run the analyses asked for, write the run's results files.

:mod:`~iondiff_stream.pipeline.run` reads (:func:`open_run`, :func:`read_run`), analyses
(:func:`analyze_run`, :func:`hops_of`) and builds the :class:`RunAnalysis`;
:mod:`~iondiff_stream.pipeline.files` writes and reads ``summary.json``, ``hops.csv`` and ``results.zarr``.
Below it: ``io`` (readers, frame store) → ``model`` (site model, hop rule) → ``analysis``; above it:
``outputs`` (report, plots), ``live`` and the interfaces (``cli``, ``monitor``, ``database``, ``lammps_hooks``).
"""

from iondiff_stream.pipeline.run import (RunAnalysis, analyse_sites, analyze_run, compute_descriptors, hops_of, open_run,
                                         read_run)

__all__ = ["RunAnalysis", "analyse_sites", "analyze_run", "compute_descriptors", "hops_of", "open_run", "read_run"]
