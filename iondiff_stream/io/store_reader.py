"""MDAnalysis reader and topology parser for iondiff_stream frame stores (``format="IONDIFFZARR"``).

Frames are read lazily, a Zarr chunk at a time. The committed frame count is
taken when the reader opens; open a new Universe to see frames written later.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from MDAnalysis.coordinates import base
from MDAnalysis.core.topology import Topology
from MDAnalysis.core.topologyattrs import Atomids, Atomnames, Atomtypes, Elements, Masses, Resids, Resnums, Segids
from MDAnalysis.guesser.tables import masses as _MASSES
from MDAnalysis.topology.base import TopologyReaderBase

from ..buffer import FrameStoreReader

__all__ = ["StoreReader", "StoreParser"]


class StoreParser(TopologyReaderBase):
    """Topology of a frame store: the stored ions plus the framework-centre pseudo-atom ``FWC``."""

    format = ["IONDIFFZARR"]

    def parse(self, **kwargs: Any) -> Topology:  # noqa: D102
        r = FrameStoreReader(self.filename)
        species = np.array(list(r.species) + ["FWC"], dtype=object)
        n = len(species)
        ids = np.concatenate([r.ion_ids, [0]])
        masses = np.array([_MASSES.get(s.upper(), 0.0) for s in species[:-1]] + [0.0])
        attrs = [
            Atomnames(species),
            Atomtypes(species.copy()),
            Elements(np.array(list(r.species) + [""], dtype=object)),
            Masses(masses),
            Atomids(ids),
            Resids(np.array([1])),
            Resnums(np.array([1])),
            Segids(np.array(["SYSTEM"], dtype=object)),
        ]
        return Topology(n, 1, 1, attrs=attrs)


class StoreReader(base.ReaderBase):
    """Frames of an iondiff_stream Zarr store (unwrapped positions, Å; times, ps)."""

    format = ["IONDIFFZARR"]
    units = {"time": "ps", "length": "Angstrom"}
    iondiff_times_from_file = True

    def __init__(self, filename: Any, convert_units: bool = True, **kwargs: Any) -> None:
        super().__init__(filename, convert_units=convert_units, **kwargs)
        self._store = FrameStoreReader(str(filename))
        self._n = self._store.n_frames
        self.n_atoms = self._store.ion_ids.size + 1
        self._cache_start = -1
        self._cache: dict[str, np.ndarray] = {}
        self.ts = self._Timestep(self.n_atoms, **self._ts_kwargs)
        if self._n == 0:
            raise EOFError(f"{filename}: the store has no committed frames yet")
        self._read_frame(0)

    @staticmethod
    def parse_n_atoms(filename: Any, **kwargs: Any) -> int:
        return FrameStoreReader(str(filename)).ion_ids.size + 1

    @property
    def n_frames(self) -> int:
        return self._n

    def _block(self, i: int) -> tuple[dict[str, np.ndarray], int]:
        size = max(int(self._store.chunk), 64)
        start = (i // size) * size
        if start != self._cache_start:
            self._cache = self._store.read(start, min(start + size, self._n))
            self._cache_start = start
        return self._cache, i - start

    def _read_frame(self, i: int) -> base.Timestep:
        if i < 0 or i >= self._n:
            raise IOError(f"frame {i} out of range")
        blk, j = self._block(i)
        ts = self.ts
        ts.frame = i
        ts.positions[:-1] = blk["positions"][j]
        fc = blk["framework_centre"][j]
        ts.positions[-1] = fc if np.all(np.isfinite(fc)) else 0.0
        ts.dimensions = blk["box"][j]
        ts.time = float(blk["time_ps"][j])
        ts.data["step"] = int(blk["step"][j])
        ts.data["time"] = float(blk["time_ps"][j])
        return ts

    def _read_next_timestep(self, ts: base.Timestep | None = None) -> base.Timestep:
        nxt = self.ts.frame + 1
        if nxt >= self._n:
            self.rewind()
            raise StopIteration
        return self._read_frame(nxt)

    def _reopen(self) -> None:
        self.ts.frame = -1

    def close(self) -> None:  # noqa: D102
        pass

    @property
    def dt(self) -> float:
        if self._n < 2:
            return 1.0
        blk = self._store.read(0, 2, names=("time_ps",))
        return float(blk["time_ps"][1] - blk["time_ps"][0])
