"""MDAnalysis reader and topology parser for iondiff_stream frame stores (``format="IONDIFFZARR"``).

Frames are read lazily, a Zarr chunk at a time. The committed frame count is
taken when the reader opens; open a new Universe to see frames written later.

A store holds one segment per LAMMPS ``run`` (see :mod:`iondiff_stream.io.store`); the reader
shows one segment, the last by default (``segment=N`` or ``segment="all"`` as a reader
keyword, ``--segment`` on the command line). ``"all"`` joins the segments into one time axis:
a segment whose clock was reset continues from the previous one's end, and its first frame is
left out when it repeats the previous frame's configuration. Frame times are the stored times
(``time_ps``), not shifted to start at zero. Atom types are the LAMMPS types where the store
has them (so ``"type 2"`` selects what it selected in ``run``), the species otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from MDAnalysis.coordinates import base
from MDAnalysis.core.topology import Topology
from MDAnalysis.core.topologyattrs import Atomids, Atomnames, Atomtypes, Elements, Masses, Resids, Resnums, Segids
from iondiff_stream.core.elements import element_masses
from MDAnalysis.topology.base import TopologyReaderBase

from iondiff_stream.io.segments import choose_segment
from iondiff_stream.io.store import FrameStoreReader

__all__ = ["StoreReader", "StoreParser", "universe_from_store"]

_NAMES = ("positions", "framework_centre", "step", "time_ps", "box", "wall_s")


def _framework_meta(r: FrameStoreReader) -> tuple[np.ndarray, list[str], list[Any]] | None:
    """Ids, species and types of the framework atoms a store holds (``framework`` array), else None."""
    a = dict(r.group.attrs)
    if "framework" not in r.group or "framework_ids" not in a:
        return None
    ids = np.asarray(a["framework_ids"], dtype=np.int64)
    species = list(a.get("framework_species", ["X"] * len(ids)))
    types = list(a.get("framework_lammps_types") or species)
    return ids, species, types


class StoreParser(TopologyReaderBase):
    """Topology of a frame store: the stored ions plus the framework-centre pseudo-atom ``FWC``."""

    format = ["IONDIFFZARR"]

    def parse(self, **kwargs: Any) -> Topology:  # noqa: D102
        r = FrameStoreReader(self.filename)
        fw = _framework_meta(r)
        if fw is not None:  # the framework atoms themselves (the site model attaches sites to them)
            fw_ids, fw_species, fw_types = fw
            species = np.array(list(r.species) + list(fw_species), dtype=object)
            ion_types = r.lammps_types if r.lammps_types is not None else list(r.species)
            types = np.array([str(t) for t in ion_types] + [str(t) for t in fw_types], dtype=object)
            ids = np.concatenate([r.ion_ids, fw_ids])
            elements = species.copy()
            masses = element_masses(species)
        else:
            species = np.array(list(r.species) + ["FWC"], dtype=object)
            if r.lammps_types is not None:
                types = np.array([str(t) for t in r.lammps_types] + ["FWC"], dtype=object)
            else:
                types = species.copy()
            ids = np.concatenate([r.ion_ids, [0]])
            elements = np.array(list(r.species) + [""], dtype=object)
            masses = np.append(element_masses(species[:-1]), 0.0)
        n = len(species)
        attrs = [
            Atomnames(species),
            Atomtypes(types),
            Elements(elements),
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
    iondiff_absolute_times = True

    def __init__(self, filename: Any, convert_units: bool = True, segment: int | str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(filename, convert_units=convert_units, **kwargs)
        self._store = FrameStoreReader(str(filename))
        self._fw = _framework_meta(self._store)
        self._names = _NAMES + (("framework",) if self._fw is not None else ())
        self.n_atoms = self._store.ion_ids.size + (len(self._fw[0]) if self._fw is not None else 1)
        self._cache_start = -1
        self._cache: dict[str, np.ndarray] = {}
        self.ts = self._Timestep(self.n_atoms, **self._ts_kwargs)
        if self._store.n_frames == 0:
            raise EOFError(f"{filename}: the store has no committed frames yet")
        self.segments = self._store.segments
        chosen = choose_segment(self.segments, segment, str(filename))
        self.segment = "all" if chosen is None else int(chosen["index"])
        if chosen is not None:
            self._idx = np.arange(chosen["start"], chosen["stop"])
            self._toff = np.zeros(len(self._idx))
        else:
            self._idx, self._toff = self._join_segments()
        self._n = len(self._idx)
        self._read_frame(0)

    def _join_segments(self) -> tuple[np.ndarray, np.ndarray]:
        """Available-frame indices and time offsets (ps) of all segments on one time axis."""
        idx: list[np.ndarray] = []
        off: list[np.ndarray] = []
        prev_end_t = None
        prev_last = None
        shift = 0.0
        for s in self.segments:
            ii = np.arange(s["start"], s["stop"])
            t = self._store.read(s["start"], min(s["start"] + 2, s["stop"]), names=("time_ps", "positions"))
            if prev_end_t is not None:
                t0 = float(t["time_ps"][0])
                if t0 + shift <= prev_end_t:  # the clock was reset: continue from the previous end
                    repeat = prev_last is not None and np.array_equal(t["positions"][0], prev_last)
                    if repeat:
                        ii = ii[1:]
                        shift = prev_end_t - t0
                    else:
                        dt = float(t["time_ps"][1] - t0) if len(t["time_ps"]) > 1 else 0.0
                        shift = prev_end_t + max(dt, 0.0) - t0
            if len(ii):
                idx.append(ii)
                off.append(np.full(len(ii), shift))
                last = self._store.read(s["stop"] - 1, s["stop"], names=("time_ps", "positions"))
                prev_end_t = float(last["time_ps"][0]) + shift
                prev_last = last["positions"][0]
        return np.concatenate(idx), np.concatenate(off)

    @staticmethod
    def parse_n_atoms(filename: Any, **kwargs: Any) -> int:
        r = FrameStoreReader(str(filename))
        fw = _framework_meta(r)
        return r.ion_ids.size + (len(fw[0]) if fw is not None else 1)

    @property
    def n_frames(self) -> int:
        return self._n

    def _block(self, i: int) -> tuple[dict[str, np.ndarray], int]:
        j = int(self._idx[i])  # index among the store's available frames
        size = max(int(self._store.chunk), 64)
        start = (j // size) * size
        if start != self._cache_start:
            self._cache = self._store.read(start, min(start + size, self._store.n_frames), names=self._names)
            self._cache_start = start
        return self._cache, j - start

    def _read_frame(self, i: int) -> base.Timestep:
        if i < 0 or i >= self._n:
            raise IOError(f"frame {i} out of range")
        blk, j = self._block(i)
        ts = self.ts
        ts.frame = i
        n_ions = blk["positions"].shape[1]
        ts.positions[:n_ions] = blk["positions"][j]
        if self._fw is not None:
            ts.positions[n_ions:] = blk["framework"][j]
        else:
            fc = blk["framework_centre"][j]
            ts.positions[-1] = fc if np.all(np.isfinite(fc)) else 0.0
        ts.dimensions = blk["box"][j]
        ts.time = float(blk["time_ps"][j]) + float(self._toff[i])
        ts.data["step"] = int(blk["step"][j])
        ts.data["time"] = ts.time
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

    def frame_times_ps(self) -> np.ndarray:
        """Time of every frame this reader shows, ps, as ``ts.time`` gives it (stored times, joined segments
        continued), without reading positions.

        Returns
        -------
        ndarray, shape (n_frames,)
        """
        t = self._store.read(0, int(self._idx.max()) + 1, names=("time_ps",))["time_ps"]  # frames counted at opening
        return np.asarray(t, dtype=np.float64)[self._idx] + self._toff

    @property
    def dt(self) -> float:
        if self._n < 2:
            return 1.0
        j0, j1 = int(self._idx[0]), int(self._idx[1])
        t0 = self._store.read(j0, j0 + 1, names=("time_ps",))["time_ps"][0]
        t1 = self._store.read(j1, j1 + 1, names=("time_ps",))["time_ps"][0]
        return float(t1 + self._toff[1] - t0 - self._toff[0])


def universe_from_store(path: str, **kwargs: Any) -> Any:
    """An MDAnalysis Universe over the committed frames of a store.

    The atoms are the stored ions (names = species, ids = LAMMPS tags) and the framework atoms when the
    store holds their positions (written by the hook by default), else one pseudo-atom named ``FWC`` at the
    framework centre; either way the analyses' framework-drift removal works as on a full trajectory.
    """
    import MDAnalysis as mda

    return mda.Universe(path, format="IONDIFFZARR", topology_format="IONDIFFZARR", **kwargs)
