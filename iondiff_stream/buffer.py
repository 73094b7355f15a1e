"""The Zarr (v3) frame store: a ring buffer (or an unbounded archive) of ion positions.

Layout of a store ``RUN.zarr`` (a Zarr v3 group on the local file system)::

    zarr.json            group attributes: format, units (Å, ps), ion ids, species, LAMMPS unit
                         style, capacity, chunk size, run metadata
    positions/           (capacity, n_ions, 3) float64, unwrapped positions, Å
    framework_centre/    (capacity, 3) float64, mean unwrapped position of all non-selected atoms, Å
    step/                (capacity,) int64, MD step
    time_ps/             (capacity,) float64
    box/                 (capacity, 6) float64, [a, b, c, alpha, beta, gamma] (Å, degrees)
    wall_s/              (capacity,) float64, wall-clock time the frame was received (Unix s)
    online/              state of the streaming centres (see iondiff_stream.online)
    commit.json          the commit record: frames durably written, last step, ...

Frame k (counting from the first frame ever written) lives in slot ``k % capacity``;
``capacity`` is a multiple of ``chunk_frames`` and chunks are aligned on it.

Durability: frames are collected in memory and written a whole chunk at a time
(one chunk write per ``chunk_frames`` frames); a partial chunk is written by
:meth:`FrameStoreWriter.flush` (on close, every ``flush_frames`` frames, and
every ``flush_seconds``). ``commit.json`` is replaced atomically (write then
rename) *after* the data it describes is written; Zarr's local store also writes
every chunk by write-then-rename. A reader therefore never sees a half-written
frame, and after a SIGKILL of the writer the store holds every frame up to the
last flush: at most ``flush_frames`` frames (default ``chunk_frames``) or
``flush_seconds`` of simulation output are lost.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import StoreError, StoreMismatchError, TrajectoryFileNotFoundError, TrajectoryFormatError

logger = logging.getLogger(__name__)

__all__ = ["FrameStoreWriter", "FrameStoreReader", "Commit", "universe_from_store", "FORMAT"]

FORMAT = "iondiff_stream.framestore"
VERSION = 1
_ARRAYS = ("positions", "framework_centre", "step", "time_ps", "box", "wall_s")


@dataclass
class Commit:
    """The commit record.

    Attributes
    ----------
    n_frames : int
        Frames durably written since the store was created (global count).
    first_frame : int
        Oldest global frame still in the store (``n_frames - capacity`` for a full ring).
    last_step : int
        MD step of the newest committed frame (-1 when empty).
    n_skipped_duplicates : int
        Frames refused because their step was already stored (restarts).
    n_step_gaps : int
        Places where the step jumped by more than the usual interval (frames lost
        before a restart).
    """

    n_frames: int = 0
    first_frame: int = 0
    last_step: int = -1
    n_skipped_duplicates: int = 0
    n_step_gaps: int = 0
    online_frames: int = 0

    @classmethod
    def read(cls, path: str) -> Commit:
        p = os.path.join(path, "commit.json")
        if not os.path.exists(p):
            return cls()
        with open(p) as fh:
            return cls(**json.load(fh))

    def write(self, path: str) -> None:
        p = os.path.join(path, "commit.json")
        tmp = p + f".{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump(self.__dict__, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)


class FrameStoreWriter:
    """Append frames to a store, a whole chunk per write.

    Parameters
    ----------
    path : str
        Store directory (``*.zarr``).
    ion_ids : array of int, shape (n_ions,)
        Atom ids (LAMMPS tags) of the stored ions, in the order of the rows of
        every frame.
    species : sequence of str, shape (n_ions,)
    units : str
        Unit style the frames came from (e.g. LAMMPS ``metal``); positions are
        always stored in Å and times in ps. Appending with another style is refused.
    capacity : int, optional
        Ring size in frames (rounded up to whole chunks); ``None`` = unbounded archive.
    chunk_frames : int
        Frames per chunk.
    flush_frames : int, optional
        Flush (commit) at least every this many frames (default: one chunk).
    flush_seconds : float, optional
        Also flush when this much wall time passed since the last flush.
    mode : {"w", "a"}
        ``"w"`` creates (refuses an existing non-empty store unless ``overwrite``),
        ``"a"`` appends to an existing store (restart) or creates it.
    metadata : dict, optional
        Run metadata kept in the group attributes.
    """

    def __init__(
        self,
        path: str,
        ion_ids: np.ndarray,
        species: Any,
        units: str = "metal",
        capacity: int | None = None,
        chunk_frames: int = 100,
        flush_frames: int | None = None,
        flush_seconds: float | None = 60.0,
        mode: str = "a",
        overwrite: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        import zarr

        self.path = os.fspath(path)
        self.ion_ids = np.asarray(ion_ids, dtype=np.int64)
        self.species = [str(s) for s in species]
        if len(self.species) != len(self.ion_ids):
            raise StoreMismatchError(f"{len(self.ion_ids)} ion ids but {len(self.species)} species")
        if len(self.ion_ids) == 0:
            raise StoreMismatchError("no ions to store (empty selection)")
        self.units = units
        self.chunk = int(chunk_frames)
        if self.chunk < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        self.flush_frames = int(flush_frames or self.chunk)
        self.flush_seconds = flush_seconds
        n = len(self.ion_ids)
        exists = os.path.exists(os.path.join(self.path, "zarr.json"))
        try:
            parent = os.path.dirname(os.path.abspath(self.path)) or "."
            os.makedirs(parent, exist_ok=True)
            if not os.access(parent, os.W_OK):
                raise PermissionError(f"directory {parent} is not writable")
            if exists and mode == "a":
                self.group = zarr.open_group(self.path, mode="r+")
                self._check_compatible()
                self.capacity = self.group.attrs["capacity"]
                self.commit = Commit.read(self.path)
            elif exists and mode == "w" and not overwrite and Commit.read(self.path).n_frames > 0:
                raise StoreError(f"{self.path} already holds frames; use mode='a' to append or overwrite=True")
            else:
                cap = None if capacity is None else int(np.ceil(capacity / self.chunk) * self.chunk)
                self.capacity = cap
                self.group = zarr.open_group(self.path, mode="w")
                self.group.attrs.update(
                    {
                        "format": FORMAT,
                        "version": VERSION,
                        "length_unit": "angstrom",
                        "time_unit": "ps",
                        "source_units": units,
                        "ion_ids": self.ion_ids.tolist(),
                        "species": self.species,
                        "capacity": cap,
                        "chunk_frames": self.chunk,
                        "metadata": metadata or {},
                    }
                )
                size = cap if cap is not None else 0
                shapes = {
                    "positions": ((size, n, 3), "float64", (self.chunk, n, 3), "angstrom"),
                    "framework_centre": ((size, 3), "float64", (self.chunk, 3), "angstrom"),
                    "step": ((size,), "int64", (self.chunk,), None),
                    "time_ps": ((size,), "float64", (self.chunk,), "ps"),
                    "box": ((size, 6), "float64", (self.chunk, 6), "angstrom, degrees"),
                    "wall_s": ((size,), "float64", (self.chunk,), "s since epoch"),
                }
                for name, (shape, dt, ch, u) in shapes.items():
                    a = self.group.create_array(name, shape=shape, dtype=dt, chunks=ch, fill_value=np.nan if dt == "float64" else -1)
                    if u:
                        a.attrs["units"] = u
                self.commit = Commit()
                self.commit.write(self.path)
        except (PermissionError, OSError) as exc:
            if isinstance(exc, (StoreError,)):
                raise
            raise StoreError(f"cannot create or open store {self.path}: {exc}") from exc
        self._arrays = {k: self.group[k] for k in _ARRAYS}
        self._buf: dict[str, list[Any]] = {k: [] for k in _ARRAYS}
        self._last_flush = time.monotonic()
        self._step_interval: int | None = None
        self._closed = False
        self.on_flush: list[Any] = []  # callables(writer) run before each commit (e.g. save online state)

    # ------------------------------------------------------------------
    def _check_compatible(self) -> None:
        a = self.group.attrs
        if a.get("format") != FORMAT:
            raise StoreMismatchError(f"{self.path} is not an iondiff_stream frame store")
        if list(a["ion_ids"]) != self.ion_ids.tolist():
            raise StoreMismatchError(
                f"{self.path} stores {len(a['ion_ids'])} other ions (ids {a['ion_ids'][:5]}...); "
                f"refusing to append {len(self.ion_ids)} ions with ids {self.ion_ids[:5].tolist()}..."
            )
        if list(a["species"]) != self.species:
            raise StoreMismatchError(f"{self.path} stores other species than {sorted(set(self.species))}")
        if a["source_units"] != self.units:
            raise StoreMismatchError(
                f"{self.path} was written from LAMMPS units {a['source_units']!r}; refusing frames in {self.units!r}"
            )
        if a["chunk_frames"] != self.chunk:
            logger.info("using the store's chunk size %d", a["chunk_frames"])
            self.chunk = int(a["chunk_frames"])
            self.flush_frames = max(self.flush_frames, 1)

    @property
    def n_ions(self) -> int:
        return len(self.ion_ids)

    def append(
        self,
        step: int,
        time_ps: float,
        positions: np.ndarray,
        box: np.ndarray,
        framework_centre: np.ndarray | None = None,
    ) -> bool:
        """Add one frame (kept in memory until its chunk is full or a flush).

        Parameters
        ----------
        step : int
        time_ps : float
        positions : ndarray, shape (n_ions, 3)
            Unwrapped positions in Å, rows in the order of ``ion_ids``.
        box : ndarray, shape (6,)
        framework_centre : ndarray, shape (3,), optional

        Returns
        -------
        bool
            False when the frame was skipped (its step is already stored).
        """
        if self._closed:
            raise StoreError("store writer is closed")
        pos = np.asarray(positions, dtype=np.float64)
        if pos.shape != (self.n_ions, 3):
            raise StoreMismatchError(f"frame has shape {pos.shape}, store expects ({self.n_ions}, 3)")
        if not np.all(np.isfinite(pos)):
            raise TrajectoryFormatError(f"step {step}: NaN/inf positions; frame refused")
        last = self._buf["step"][-1] if self._buf["step"] else self.commit.last_step
        if step <= last:
            self.commit.n_skipped_duplicates += 1
            return False
        if last >= 0:
            gap = step - last
            if self._step_interval is None:
                self._step_interval = gap
            elif gap > self._step_interval:
                self.commit.n_step_gaps += 1
                logger.warning("step jumps from %d to %d: frames in between are missing from %s", last, step, self.path)
        self._buf["positions"].append(pos)
        self._buf["framework_centre"].append(
            np.full(3, np.nan) if framework_centre is None else np.asarray(framework_centre, float)
        )
        self._buf["step"].append(int(step))
        self._buf["time_ps"].append(float(time_ps))
        self._buf["box"].append(np.asarray(box, dtype=np.float64))
        self._buf["wall_s"].append(time.time())
        pending = len(self._buf["step"])
        start = self.commit.n_frames
        if (start + pending) % self.chunk == 0 or pending >= self.flush_frames or (
            self.flush_seconds is not None and time.monotonic() - self._last_flush > self.flush_seconds
        ):
            self.flush()
        return True

    def flush(self) -> None:
        """Write the frames held in memory and commit them."""
        pending = len(self._buf["step"])
        if pending:
            start = self.commit.n_frames
            end = start + pending
            if self.capacity is None:
                for k in _ARRAYS:
                    a = self._arrays[k]
                    if a.shape[0] < end:
                        new = int(np.ceil(end / self.chunk) * self.chunk)
                        a.resize((new,) + a.shape[1:])
                self._write_slots(start, end)
            else:
                self._write_slots(start, end)
            for k in _ARRAYS:
                self._buf[k].clear()
            self.commit.n_frames = end
            self.commit.first_frame = max(0, end - self.capacity) if self.capacity else 0
        for cb in self.on_flush:
            cb(self)
        self.commit.write(self.path)
        self._last_flush = time.monotonic()

    def _write_slots(self, start: int, end: int) -> None:
        data = {k: np.asarray(v) for k, v in self._buf.items()}
        self.commit.last_step = int(data["step"][-1])
        cap = self.capacity
        # split at the ring's wrap-around so every write is a contiguous slice
        pieces = []
        g = start
        while g < end:
            s = g % cap if cap else g
            stop_slot = min(cap, s + (end - g)) if cap else s + (end - g)
            pieces.append((g - start, g - start + (stop_slot - s), s, stop_slot))
            g += stop_slot - s
        for k in _ARRAYS:
            for i0, i1, s0, s1 in pieces:
                self._arrays[k][s0:s1] = data[k][i0:i1]

    def close(self) -> None:
        """Flush and close (idempotent)."""
        if not self._closed:
            self.flush()
            self._closed = True

    def __enter__(self) -> FrameStoreWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class FrameStoreReader:
    """Read committed frames of a store, also while a writer appends.

    Parameters
    ----------
    path : str
    """

    def __init__(self, path: str) -> None:
        import zarr

        self.path = os.fspath(path)
        if not os.path.exists(os.path.join(self.path, "zarr.json")):
            raise TrajectoryFileNotFoundError(f"no frame store at {self.path}")
        self.group = zarr.open_group(self.path, mode="r")
        if self.group.attrs.get("format") != FORMAT:
            raise TrajectoryFormatError(f"{self.path} is not an iondiff_stream frame store")
        a = self.group.attrs
        self.ion_ids = np.asarray(a["ion_ids"], dtype=np.int64)
        self.species = list(a["species"])
        self.capacity = a["capacity"]
        self.chunk = a["chunk_frames"]
        self.source_units = a["source_units"]
        self.metadata = a.get("metadata", {})
        self.refresh()

    def refresh(self) -> Commit:
        """Re-read the commit record (frames written since opening become visible)."""
        self.commit = Commit.read(self.path)
        return self.commit

    @property
    def n_frames(self) -> int:
        """Frames available now (committed and not yet overwritten by the ring)."""
        return self.commit.n_frames - self.commit.first_frame

    def read(self, start: int = 0, stop: int | None = None, names: tuple[str, ...] = _ARRAYS) -> dict[str, np.ndarray]:
        """Frames ``[start, stop)`` of those available (0 = oldest available).

        Returns
        -------
        dict
            ``positions (m, n_ions, 3)``, ``framework_centre (m, 3)``, ``step (m,)``,
            ``time_ps (m,)``, ``box (m, 6)``, ``wall_s (m,)``.
        """
        import zarr

        c = self.commit
        n = self.n_frames
        stop = n if stop is None else min(stop, n)
        if start < 0 or start > stop:
            raise IndexError(f"frames [{start}, {stop}) not in 0..{n}")
        g0, g1 = c.first_frame + start, c.first_frame + stop
        out: dict[str, np.ndarray] = {}
        grp = zarr.open_group(self.path, mode="r")  # re-open: sees resized arrays
        for k in names:
            a = grp[k]
            if self.capacity is None:
                out[k] = a[g0:g1]
            else:
                cap = self.capacity
                idx = np.arange(g0, g1) % cap
                if len(idx) and idx[-1] >= idx[0] and len(idx) == idx[-1] - idx[0] + 1:
                    out[k] = a[idx[0] : idx[-1] + 1]
                else:
                    out[k] = np.concatenate([a[s : e + 1] for s, e in _runs(idx)]) if len(idx) else a[0:0]
        if self.refresh().first_frame > g0:
            raise StoreError("the ring buffer overwrote frames while they were read; read more recent frames")
        return out

    def online_state(self) -> dict[str, np.ndarray] | None:
        """Saved state of the streaming centres, or None."""
        import zarr

        grp = zarr.open_group(self.path, mode="r")
        if "online" not in grp:
            return None
        og = grp["online"]
        st = {k: og[k][:] for k in og.array_keys()}
        st["attrs"] = dict(og.attrs)  # type: ignore[assignment]
        return st


def _runs(idx: np.ndarray) -> list[tuple[int, int]]:
    cut = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [len(idx)]]) - 1
    return [(int(idx[s]), int(idx[e])) for s, e in zip(starts, ends)]


def universe_from_store(path: str, **kwargs: Any) -> Any:
    """An MDAnalysis Universe over the committed frames of a store.

    The atoms are the stored ions (names = species, ids = LAMMPS tags) plus one
    pseudo-atom named ``FWC`` at the framework centre, so that the analyses'
    framework-drift removal works exactly as on a full trajectory.
    """
    import MDAnalysis as mda

    from .io.store_reader import StoreReader  # noqa: F401  (registers the format)

    return mda.Universe(path, format="IONDIFFZARR", topology_format="IONDIFFZARR", **kwargs)
