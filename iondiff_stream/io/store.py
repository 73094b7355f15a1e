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
    commit.json          the commit record: frames durably written, last step, segments, ...
    .writer.lock         the single writer's lock (``fcntl.flock``; pid, host and start time inside)

Frame k (counting from the first frame ever written) lives in slot ``k % capacity``;
``capacity`` is a multiple of ``chunk_frames`` and chunks are aligned on it.

Durability: frames are collected in memory and written a whole chunk at a time
(one chunk write per ``chunk_frames`` frames); a partial chunk is written by
:meth:`FrameStoreWriter.flush` (on close, every ``flush_frames`` frames, and
every ``flush_seconds``). ``commit.json`` is replaced atomically (write then
rename) *after* the data it describes is written; every chunk is written by
write-then-rename too (by the writer itself for the layout it creates, see
:class:`_ChunkFiles`; by Zarr's local store otherwise). A reader therefore never sees a
half-written frame, and after a SIGKILL of the writer the store holds every frame up to the
last flush: at most ``flush_frames`` frames (default ``chunk_frames``) or
``flush_seconds`` of simulation output are lost (plus, with the LAMMPS hook, the frames
collected for the next batch). The commit record is ``fsync``-ed when the writer closes
the store; an operating-system crash during a run can lose the commits since the start.

Segments: every LAMMPS ``run`` (and every timestep reset) starts a *segment*, a contiguous
range of frames listed in ``commit.json``. Frames are never dropped because their step was
seen before in another segment; only a true restart (a new writer session whose first step
lies inside the last segment, e.g. after ``read_restart``) skips the frames already stored,
and counts them (``n_skipped_duplicates``).

Ring stores: before a flush overwrites slots, the commit record first retracts the frames
living there (``first_frame`` moves forward), so a reader that re-checks the commit after
reading (as :meth:`FrameStoreReader.read` does) never returns a torn frame: it gets
:class:`~iondiff_stream.core.errors.StoreOverwrittenError` and can retry.

One writer: :class:`FrameStoreWriter` holds an exclusive lock on ``.writer.lock`` until it is
closed (or its process dies); a second writer gets
:class:`~iondiff_stream.core.errors.StoreLockedError`. A lock file left by a killed writer is
detected (it is not empty) and reported.

Checksums: every chunk carries a CRC32C checksum (zarr's ``crc32c`` codec); a damaged chunk
is reported as :class:`~iondiff_stream.core.errors.StoreCorruptError`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from iondiff_stream.core.errors import (
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    StoreMismatchError,
    StoreOverwrittenError,
    TrajectoryFileNotFoundError,
    TrajectoryFormatError,
)
from iondiff_stream.io.segments import choose_segment

logger = logging.getLogger(__name__)

__all__ = ["FrameStoreWriter", "FrameStoreReader", "Commit", "store_info", "writer_alive", "FORMAT"]

FORMAT = "iondiff_stream.framestore"
VERSION = 2
LOCK_NAME = ".writer.lock"
_ARRAYS = ("positions", "framework_centre", "step", "time_ps", "box", "wall_s")
_NO_CENTRE = np.full(3, np.nan)
_NO_CENTRE.flags.writeable = False


@dataclass
class Commit:
    """The commit record (``commit.json``).

    Attributes
    ----------
    n_frames : int
        Frames durably written since the store was created (global count).
    first_frame : int
        Oldest global frame still in the store (``n_frames - capacity`` for a full ring; moved
        forward *before* a flush overwrites ring slots).
    last_step : int
        MD step of the newest committed frame (-1 when empty).
    n_skipped_duplicates : int
        Frames refused because a restarted writer sent steps already stored.
    n_step_gaps : int
        Places where the step jumped by more than the usual interval within a segment.
    n_run_boundary_repeats : int
        Frames not stored because a new ``run`` began with the configuration just stored
        (same step as the last frame, no timestep reset).
    segments : list of dict
        One entry per segment: ``index``, ``first_frame`` (global), ``n_frames``,
        ``first_step``, ``last_step``, ``first_time_ps``, ``last_time_ps``, ``started_by``
        (``"start"``, ``"new run"``, ``"timestep reset"``, ``"appended run"``), ``restarts``, and
        ``interrupted`` (why the run was stopped early, e.g. ``"SIGINT"``) when it was.
    unclean_exits : list of dict
        Writers that did not close the store (lock info found by the next writer).
    """

    n_frames: int = 0
    first_frame: int = 0
    last_step: int = -1
    n_skipped_duplicates: int = 0
    n_step_gaps: int = 0
    n_run_boundary_repeats: int = 0
    segments: list[dict[str, Any]] = field(default_factory=list)
    unclean_exits: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, path: str) -> Commit:
        p = os.path.join(path, "commit.json")
        if not os.path.exists(p):
            return cls()
        try:
            with open(p) as fh:
                raw = json.load(fh)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise StoreCorruptError(f"{path}: the commit record commit.json is unreadable ({exc}): store corrupt") from exc
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def write(self, path: str, sync: bool = True) -> None:
        """Replace ``commit.json`` atomically (write, then rename); ``sync``: ``fsync`` it first.

        The rename alone is enough for readers and for a writer killed at any moment (the operating
        system keeps what was written); ``fsync`` also survives a crash of the operating system, at
        ~10 ms of waiting on a busy disk, so a live writer syncs only when it closes the store.
        """
        p = os.path.join(path, "commit.json")
        tmp = p + f".{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            fh.write(json.dumps(self.__dict__))  # one write (json.dump writes piece by piece: twice the CPU)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, p)


class _WriterLock:
    """Exclusive ``flock`` on ``STORE/.writer.lock``, with who holds it written inside.

    The kernel releases the lock when the process dies, so a killed writer never blocks the
    store; the file's content (emptied on a clean release) tells the next writer that the
    previous one did not close the store.
    """

    def __init__(self, store: str) -> None:
        import fcntl

        self.path = os.path.join(store, LOCK_NAME)
        self.stale: dict[str, Any] | None = None
        self._fh = open(self.path, "a+")  # noqa: SIM115 - held for the writer's lifetime
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._content()
            self._fh.close()
            who = (f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')}"
                   if holder else "another process")
            raise StoreLockedError(
                f"{store} is being written by {who}; a store has one writer: wait for that run to end "
                "or write to another --store"
            ) from None
        prev = self._content()
        if prev:
            self.stale = prev
            logger.warning(
                "%s: the previous writer (pid %s on %s, started %s) did not close the store (killed?); "
                "the frames it committed are kept", store, prev.get("pid"), prev.get("host"), prev.get("started"),
            )
        self._fh.seek(0)
        self._fh.truncate()
        json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                   "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, self._fh)
        self._fh.flush()

    def _content(self) -> dict[str, Any]:
        try:
            self._fh.seek(0)
            txt = self._fh.read().strip()
            return json.loads(txt) if txt else {}
        except (OSError, ValueError):
            return {"pid": "?", "host": "?", "started": "?"}

    def release(self) -> None:
        import fcntl

        if self._fh.closed:
            return
        self._fh.seek(0)
        self._fh.truncate()  # empty = closed cleanly (the file is kept: unlinking would race)
        self._fh.flush()
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        self._fh.close()


#: Zstd level of new stores. Zstd's fast mode: unwrapped float64 positions hardly compress (to 95 % at zstd's
#: default level 3, which costs 5x the CPU: 0.6 ms per chunk of 200 ions x 100 frames, a cost paid in the
#: simulation's process); steps, times and boxes still shrink many times over.
ZSTD_LEVEL = -1


#: Arrays of new stores written without compression (only the CRC32C checksum): unwrapped positions do not
#: compress (zstd's fast mode leaves them at 100 %, level 1-3 at 95 % for 2-6 µs of CPU per frame of 200 ions,
#: paid in the simulation's process).
UNCOMPRESSED = ("positions", "framework")
#: chunk keys of the arrays a new store gets: ``c.i.0.0`` files in the array's directory (Zarr's default encoding
#: with "." as separator). With "/" every chunk also needed its own directories (``c/i/0/``): two ``mkdir`` per
#: chunk of a 3-d array, 0.1-0.4 ms each on a busy virtual disk, in the simulation's process
#: (benchmarks/store_chunk_keys.py; docs/performance.md). Stores written with "/" are read and appended to as they
#: are.
CHUNK_SEPARATOR = "."


def _codecs(name: str = "") -> dict[str, Any]:
    """Zstd compression followed by a CRC32C checksum of every chunk (the checksum alone for
    :data:`UNCOMPRESSED` arrays)."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    if name in UNCOMPRESSED:
        return {"compressors": (Crc32cCodec(),)}
    return {"compressors": (ZstdCodec(level=ZSTD_LEVEL), Crc32cCodec())}


#: bytes per piece in which an uncompressed chunk is checksummed and written (:meth:`_ChunkFiles._write_file`)
_CRC_PIECE = 1 << 16


class _ChunkFiles:
    """Whole chunks of one array encoded and written directly, as Zarr would write them.

    Zarr's own write path costs ~1.5 ms of CPU per write whatever its size (indexing, its codec pipeline,
    a hop to its event-loop thread): six arrays per flush made the store's writes the largest cost of the
    hook in the simulation's process. For the layout the writer creates (``bytes`` little-endian, ``zstd``
    without its own checksum or no compressor (:data:`UNCOMPRESSED`), ``crc32c``; chunk keys ``c.i.0...``
    (:data:`CHUNK_SEPARATOR`) or ``c/i/0/...``;
    regular chunks along the frame axis only) a chunk is encoded here in ~20 µs (small arrays) and
    written by write-then-rename, like Zarr's local store. The chunk being filled is kept in memory (and
    read back once when a session starts inside one), so every write is a whole chunk. Arrays of any
    other layout (a store written by another version) return None from :meth:`for_array` and are written
    through Zarr.
    """

    def __init__(self, root: str, name: str, shape_tail: tuple[int, ...], chunk: int, dtype: np.dtype,
                 fill: Any, level: int | None, separator: str = "/") -> None:
        from numcodecs.zstd import Zstd

        self.sep = separator
        self.dir = os.path.join(root, name, "c") if separator == "/" else os.path.join(root, name)
        self.tail = shape_tail
        self.chunk = chunk
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.fill = fill
        self._zstd = Zstd(level=level) if level is not None else None  # None: no compression
        self._open: tuple[int, np.ndarray] | None = None  # (chunk index, its frames) of the chunk being filled
        self._dirs: set[str] = set()

    @classmethod
    def for_array(cls, root: str, name: str, array: Any) -> _ChunkFiles | None:
        """A direct writer for ``array`` if its layout is the one :class:`FrameStoreWriter` creates, else None."""
        try:
            m = array.metadata.to_dict()
            codecs = [dict(c) for c in m["codecs"]]
            zstd = len(codecs) == 3 and codecs[1].get("name") == "zstd"
            ok = (m.get("zarr_format") == 3 and m["chunk_grid"]["name"] == "regular"
                  and tuple(m["chunk_grid"]["configuration"]["chunk_shape"])[1:] == tuple(array.shape[1:])
                  and m["chunk_key_encoding"].get("name") == "default"
                  and m["chunk_key_encoding"].get("configuration", {}).get("separator") in ("/", ".")
                  and len(codecs) in (2, 3) and codecs[0] == {"name": "bytes", "configuration": {"endian": "little"}}
                  and (len(codecs) == 2 or zstd and not codecs[1]["configuration"].get("checksum", False))
                  and codecs[-1].get("name") == "crc32c" and m["data_type"] in ("float64", "float32", "int64")
                  and not m.get("storage_transformers"))
            if not ok:
                return None
            chunk = int(m["chunk_grid"]["configuration"]["chunk_shape"][0])
            return cls(root, name, tuple(array.shape[1:]), chunk, np.dtype(m["data_type"]), array.fill_value,
                       int(codecs[1]["configuration"].get("level", 0)) if zstd else None,
                       m["chunk_key_encoding"]["configuration"]["separator"])
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    def _key(self, ci: int) -> str:
        if self.sep == "/":
            return os.path.join(self.dir, str(ci), *(["0"] * len(self.tail)))
        return os.path.join(self.dir, ".".join(["c", str(ci)] + ["0"] * len(self.tail)))

    def _encode(self, block: np.ndarray) -> tuple[bytes, bytes]:
        """The compressed chunk and its CRC32C (4 bytes, little-endian), to be written one after the other."""
        import google_crc32c

        data = self._zstd.encode(np.ascontiguousarray(block, dtype=self.dtype))
        return data, int(google_crc32c.value(data)).to_bytes(4, "little")

    def _write_file(self, fh: Any, block: np.ndarray) -> None:
        """Write one chunk's bytes and its CRC32C to ``fh``.

        An uncompressed chunk goes in 64 KiB pieces, each checksummed and written while it is in the cache
        (google-crc32c takes only ``bytes``; the pieces reuse the same small buffer). One copy of the whole
        chunk would be fresh memory every chunk (MBs at a frame every step), and on these virtual machines
        a single write of 3-5 MB costs ~10x as much CPU as the same bytes in pieces
        (``benchmarks/hook_cpu.py``; docs/performance.md).
        """
        import google_crc32c

        if self._zstd is not None:
            data, crc = self._encode(block)
            fh.write(data)
            fh.write(crc)
            return
        view = memoryview(np.ascontiguousarray(block, dtype=self.dtype).reshape(-1)).cast("B")
        c = 0
        for i in range(0, len(view), _CRC_PIECE):
            piece = bytes(view[i : i + _CRC_PIECE])
            c = google_crc32c.extend(c, piece)
            fh.write(piece)
        fh.write(int(c).to_bytes(4, "little"))

    def _decode(self, raw: bytes) -> np.ndarray:
        import google_crc32c

        if len(raw) < 4 or int(google_crc32c.value(raw[:-4])).to_bytes(4, "little") != raw[-4:]:
            raise StoreCorruptError(f"{os.path.dirname(self.dir)}: a chunk failed its checksum: store corrupt")
        out = np.frombuffer(self._zstd.decode(raw[:-4]) if self._zstd is not None else raw[:-4], dtype=self.dtype)
        return out.reshape((self.chunk,) + self.tail).copy()

    def _block(self, ci: int) -> np.ndarray:
        """The frames of chunk ``ci`` as stored now (fill values where nothing was written)."""
        if self._open is not None and self._open[0] == ci:
            return self._open[1]
        try:
            with open(self._key(ci), "rb") as fh:
                return self._decode(fh.read())
        except FileNotFoundError:
            return np.full((self.chunk,) + self.tail, self.fill, dtype=self.dtype)

    def write(self, s0: int, s1: int, values: np.ndarray) -> None:
        """Store ``values`` in slots ``[s0, s1)``, a whole chunk per file write."""
        k = 0
        while s0 < s1:
            ci = s0 // self.chunk
            c0 = ci * self.chunk
            stop = min(s1, c0 + self.chunk)
            if s0 == c0 and stop == c0 + self.chunk:
                block = np.asarray(values[k : k + stop - s0], dtype=self.dtype)
            else:
                block = self._block(ci)
                block[s0 - c0 : stop - c0] = values[k : k + stop - s0]
            path = self._key(ci)
            d = os.path.dirname(path)
            if d not in self._dirs:
                os.makedirs(d, exist_ok=True)
                self._dirs.add(d)
            tmp = f"{path}.{os.getpid()}.partial"
            with open(tmp, "wb") as fh:
                self._write_file(fh, block)
            os.replace(tmp, path)
            # keep the chunk being filled (its later slots come with the next flush)
            self._open = (ci, block if block.base is None and block.flags.writeable else block.copy()) \
                if stop < c0 + self.chunk else None
            k += stop - s0
            s0 = stop


class FrameStoreWriter:
    """Append frames to a store, a whole chunk per write; the store's only writer while open.

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
        Ring size in frames (> 0; rounded up to whole chunks); ``None`` = unbounded archive.
    chunk_frames : int
        Frames per chunk.
    flush_frames : int, optional
        Flush (commit) at least every this many frames (default: one chunk).
    flush_seconds : float, optional
        Also flush when this much wall time passed since the last flush.
    mode : {"w", "a"}
        ``"w"`` creates (refuses a store that holds frames unless ``overwrite``),
        ``"a"`` appends to an existing store (a new segment, or the continuation of the
        last one after a restart) or creates it.
    overwrite : bool
        With ``mode="w"``: replace a store that holds frames.
    metadata : dict, optional
        Run metadata kept in the group attributes.
    lammps_types : array of int, shape (n_ions,), optional
        LAMMPS atom types of the stored ions (kept next to the species, so that a
        ``"type N"`` selection works on the store too).

    Raises
    ------
    StoreLockedError
        Another writer has the store open.
    StoreError
        The store cannot be created, or holds frames and neither append nor overwrite was asked.
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
        lammps_types: Any = None,
        framework: tuple[Any, Any, Any] | None = None,
    ) -> None:
        import zarr

        self.path = os.fspath(path)
        self.ion_ids = np.asarray(ion_ids, dtype=np.int64)
        self.species = [str(s) for s in species]
        if len(self.species) != len(self.ion_ids):
            raise StoreMismatchError(f"{len(self.ion_ids)} ion ids but {len(self.species)} species")
        if len(self.ion_ids) == 0:
            raise StoreMismatchError("no ions to store (empty selection)")
        if mode not in ("w", "a"):
            raise ValueError(f"mode must be 'w' or 'a', got {mode!r}")
        if capacity is not None and int(capacity) < 1:
            raise StoreError(f"ring capacity must be a positive number of frames, got {capacity}")
        self.units = units
        self.chunk = int(chunk_frames)
        if self.chunk < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        self.flush_frames = int(flush_frames or self.chunk)
        self.flush_seconds = flush_seconds
        self.lammps_types = None if lammps_types is None else [int(t) for t in lammps_types]
        n = len(self.ion_ids)
        fw_ids = None if framework is None else np.asarray(framework[0], dtype=np.int64)
        if fw_ids is not None and len(fw_ids) == 0:
            fw_ids = None
        self._lock: _WriterLock | None = None
        created: dict[str, Any] = {}
        try:
            parent = os.path.dirname(os.path.abspath(self.path)) or "."
            os.makedirs(parent, exist_ok=True)
            if not os.access(parent, os.W_OK):
                raise PermissionError(f"directory {parent} is not writable")
            if os.path.exists(self.path) and not os.path.isdir(self.path):
                raise StoreError(f"cannot create store {self.path}: a file of that name exists")
            os.makedirs(self.path, exist_ok=True)
            self._lock = _WriterLock(self.path)
            exists = os.path.exists(os.path.join(self.path, "zarr.json"))
            held = Commit.read(self.path).n_frames if exists else 0
            if exists and mode == "a":
                self.group = zarr.open_group(self.path, mode="r+")
                self._check_compatible()
                self.capacity = self.group.attrs["capacity"]
                self.commit = Commit.read(self.path)
            elif held > 0 and mode == "w" and not overwrite:
                raise StoreError(
                    f"{self.path} already holds {held} frames from an earlier run; append this run as a new "
                    "segment (--append) or replace the store (--overwrite)"
                )
            else:
                for entry in os.listdir(self.path):  # keep our lock file: zarr's mode="w" would delete it
                    if entry != LOCK_NAME:
                        full = os.path.join(self.path, entry)
                        if os.path.isdir(full):
                            import shutil

                            shutil.rmtree(full)
                        else:
                            os.remove(full)
                cap = None if capacity is None else int(np.ceil(int(capacity) / self.chunk) * self.chunk)
                self.capacity = cap
                attrs = {
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
                if self.lammps_types is not None:
                    attrs["lammps_types"] = self.lammps_types
                if fw_ids is not None:  # the framework atoms' own positions (sites attached to the framework)
                    attrs["framework_ids"] = fw_ids.tolist()
                    attrs["framework_species"] = [str(x) for x in framework[1]]
                    if framework[2] is not None:
                        attrs["framework_lammps_types"] = [int(t) for t in framework[2]]
                # the group with its attributes: one metadata write (attrs.update writes once per key)
                self.group = zarr.create_group(self.path, attributes=attrs)  # no overwrite: it would delete the lock
                # an archive starts at 16 chunks (what its first growth gave): no metadata rewrites in a short run
                # (~1.5 ms of CPU per array); readers go by the commit record, never by the arrays' shape
                size = cap if cap is not None else 16 * self.chunk
                shapes = {
                    "positions": ((size, n, 3), "float64", (self.chunk, n, 3), "angstrom"),
                    "framework_centre": ((size, 3), "float64", (self.chunk, 3), "angstrom"),
                    "step": ((size,), "int64", (self.chunk,), None),
                    "time_ps": ((size,), "float64", (self.chunk,), "ps"),
                    "box": ((size, 6), "float64", (self.chunk, 6), "angstrom, degrees"),
                    "wall_s": ((size,), "float64", (self.chunk,), "s since epoch"),
                }
                if fw_ids is not None:
                    shapes["framework"] = ((size, len(fw_ids), 3), "float32", (self.chunk, len(fw_ids), 3), "angstrom")
                for name, (shape, dt, ch, u) in shapes.items():
                    created[name] = self.group.create_array(name, shape=shape, dtype=dt, chunks=ch,
                                            chunk_key_encoding={"name": "default", "separator": CHUNK_SEPARATOR},
                                            fill_value=np.nan if dt.startswith("float") else -1,
                                            attributes={"units": u} if u else None, **_codecs(name))
                self.commit = Commit()
                self.commit.write(self.path)
        except BaseException as exc:
            if self._lock is not None:
                self._lock.release()
            if isinstance(exc, StoreError):
                raise
            if isinstance(exc, (PermissionError, OSError)):
                raise StoreError(f"cannot create or open store {self.path}: {exc}") from exc
            raise
        if self._lock.stale:
            self.commit.unclean_exits.append(self._lock.stale)
        if created:  # the arrays just created (opening them again costs a metadata read each)
            self._arrays = {k: created[k] for k in _ARRAYS + (("framework",) if "framework" in created else ())}
        else:
            names = _ARRAYS + (("framework",) if "framework" in self.group else ())
            self._arrays = {k: self.group[k] for k in names}
        self._names = tuple(self._arrays)
        self.n_framework = int(self._arrays["framework"].shape[1]) if "framework" in self._arrays else 0
        self._files = {k: _ChunkFiles.for_array(self.path, k, a) for k, a in self._arrays.items()}
        # frames held in memory until written: the first ``_n_buf`` rows of one array per stored array, reused
        # from flush to flush (no new memory per chunk; allocated at the first frame)
        self._buf: dict[str, np.ndarray] = {}
        self._n_buf = 0
        self._buf_last_step: int | None = None
        self._last_flush = time.monotonic()
        self._step_interval: int | None = None
        self._closed = False
        self._closing = False
        self._session_started = False
        self._dedupe = False  # restart: skip steps already stored until the first new one
        self._pending_reason: str | None = None

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

    @property
    def segments(self) -> list[dict[str, Any]]:
        """Segments written so far (including frames still in memory)."""
        return self.commit.segments

    def _start_segment(self, reason: str, step: int, time_ps: float) -> None:
        g = self.commit.n_frames + self._n_buf
        self.commit.segments.append({
            "index": len(self.commit.segments), "first_frame": g, "n_frames": 0, "first_step": int(step),
            "last_step": int(step), "first_time_ps": float(time_ps), "last_time_ps": float(time_ps),
            "started_by": reason, "restarts": 0,
        })
        self._step_interval = None
        if len(self.commit.segments) > 1:
            logger.info("%s: segment %d starts at step %d (%s)", self.path, len(self.commit.segments) - 1, step, reason)

    def append(
        self,
        step: int,
        time_ps: float,
        positions: np.ndarray,
        box: np.ndarray,
        framework_centre: np.ndarray | None = None,
        new_run: bool = False,
        framework_positions: np.ndarray | None = None,
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
        new_run : bool
            The first frame of a new LAMMPS ``run`` command: starts a new segment (a frame
            with the same step as the last one stored is then the same configuration and
            is not stored twice).
        framework_positions : ndarray, shape (n_framework, 3), optional
            Unwrapped framework positions, Å (stores created with ``framework``; NaN when not given).

        Returns
        -------
        bool
            False when the frame was not stored (a restart's step already stored, or the
            repeat of the last frame at the start of a run).

        Notes
        -----
        A step lower than the last one within one writer session is a timestep reset
        (``reset_timestep``): it starts a new segment. The first frame of a writer that
        appends to a store continues the last segment when its step lies after that
        segment's first step (a restart; steps already stored are skipped and counted),
        and starts a new segment otherwise.
        """
        if self._closed:
            raise StoreError("store writer is closed")
        pos = np.asarray(positions, dtype=np.float64)
        if pos.shape != (self.n_ions, 3):
            raise StoreMismatchError(f"frame has shape {pos.shape}, store expects ({self.n_ions}, 3)")
        if not np.all(np.isfinite(pos)):
            raise TrajectoryFormatError(f"step {step}: NaN/inf positions; frame refused")
        return self._append_checked(int(step), float(time_ps), pos, np.asarray(box, dtype=np.float64),
                                    None if framework_centre is None else np.asarray(framework_centre, float),
                                    new_run, time.time(), framework_positions)

    def append_many(
        self,
        steps: Any,
        times_ps: Any,
        positions: np.ndarray,
        boxes: np.ndarray,
        framework_centres: np.ndarray | None = None,
        new_run: Any = None,
        wall_s: Any = None,
        framework_positions: np.ndarray | None = None,
    ) -> int:
        """Add consecutive frames at once (the checks run once over the block); like :meth:`append` per frame.

        Parameters
        ----------
        steps, times_ps : sequence, shape (m,)
        positions : ndarray, shape (m, n_ions, 3)
            Unwrapped positions in Å.
        boxes : ndarray, shape (m, 6)
        framework_centres : ndarray, shape (m, 3), optional
        new_run : sequence of bool, shape (m,), optional
        wall_s : sequence of float, shape (m,), optional
            When each frame was received (Unix s; default now).
        framework_positions : ndarray, shape (m, n_framework, 3), optional

        Returns
        -------
        int
            Frames stored.

        Raises
        ------
        TrajectoryFormatError
            A frame has NaN/inf positions (the frames before it are stored).
        """
        if self._closed:
            raise StoreError("store writer is closed")
        pos = np.asarray(positions, dtype=np.float64)
        m = len(pos)
        if pos.shape != (m, self.n_ions, 3):
            raise StoreMismatchError(f"frames have shape {pos.shape[1:]}, store expects ({self.n_ions}, 3)")
        bad = m
        if not np.isfinite(pos.sum()) and not np.isfinite(pos).all():  # a NaN/inf makes the sum non-finite
            bad = int(np.flatnonzero(~np.isfinite(pos).reshape(m, -1).all(1))[0])
        now = time.time()
        stored = 0
        steps_a = np.asarray(steps, dtype=np.int64)
        new_a = np.zeros(m, bool) if new_run is None else np.asarray(new_run, dtype=bool)
        k = 0
        while k < bad:
            n_run = self._regular_frames(steps_a[k:bad], new_a[k:bad])
            if n_run:  # the common case, done for the whole run of frames at once
                sl = slice(k, k + n_run)
                self._append_block(
                    steps_a[sl], np.asarray(times_ps[sl], dtype=np.float64), pos[sl],
                    np.broadcast_to(np.asarray(boxes, dtype=np.float64)[sl], (n_run, 6)),
                    None if framework_centres is None else np.asarray(framework_centres, dtype=np.float64)[sl],
                    np.full(n_run, now) if wall_s is None else np.asarray(wall_s[sl], dtype=np.float64),
                    None if framework_positions is None else framework_positions[sl])
                stored += n_run
                k += n_run
                continue
            stored += self._append_checked(
                int(steps[k]), float(times_ps[k]), pos[k], boxes[k],
                None if framework_centres is None else framework_centres[k],
                bool(new_a[k]), now if wall_s is None else float(wall_s[k]),
                None if framework_positions is None else framework_positions[k])
            k += 1
        if bad < m:
            raise TrajectoryFormatError(f"step {int(steps[bad])}: NaN/inf positions; frame refused")
        return stored

    def _append_checked(self, step: int, time_ps: float, pos: np.ndarray, box: np.ndarray,
                        framework_centre: np.ndarray | None, new_run: bool, wall: float,
                        framework_positions: np.ndarray | None = None) -> bool:
        last = self._buf_last_step if self._n_buf else self.commit.last_step
        segs = self.commit.segments
        if not self._session_started:
            self._session_started = True
            if not segs and self.commit.n_frames > 0:  # a version-1 store: one segment
                segs.append({"index": 0, "first_frame": self.commit.first_frame, "n_frames": self.commit.n_frames
                             - self.commit.first_frame, "first_step": -1, "last_step": last, "first_time_ps": float("nan"),
                             "last_time_ps": float("nan"), "started_by": "start", "restarts": 0})
            if not segs:
                self._start_segment("start", step, time_ps)
            elif step > segs[-1]["first_step"]:
                segs[-1]["restarts"] += 1
                self._dedupe = step <= last
                logger.info("%s: continuing segment %d from step %d (restart)", self.path, len(segs) - 1, step)
            else:
                self._start_segment("appended run", step, time_ps)
            decided = True
        else:
            decided = False
        if decided and not self._dedupe:
            pass
        elif self._dedupe:
            if step <= last:
                self.commit.n_skipped_duplicates += 1
                return False
            if self.commit.n_skipped_duplicates:
                logger.warning("%s: restart: %d frames already stored were skipped", self.path,
                               self.commit.n_skipped_duplicates)
            self._dedupe = False
        elif new_run:
            if step == last:  # `run` after `run`: its first frame is the configuration just stored
                self.commit.n_run_boundary_repeats += 1
                self._pending_reason = "new run"
                return False
            self._start_segment("timestep reset" if step < last else "new run", step, time_ps)
            self._pending_reason = None
        elif self._pending_reason is not None:
            self._start_segment(self._pending_reason if step > last else "timestep reset", step, time_ps)
            self._pending_reason = None
        elif step < last:
            self._start_segment("timestep reset", step, time_ps)
        elif step == last:
            self.commit.n_run_boundary_repeats += 1
            return False
        seg = segs[-1]
        if seg["n_frames"] > 0:
            gap = step - seg["last_step"]
            if self._step_interval is None:
                self._step_interval = gap
            elif gap > self._step_interval:
                self.commit.n_step_gaps += 1
                logger.warning("step jumps from %d to %d: frames in between are missing from %s", last, step, self.path)
        else:
            seg["first_step"], seg["first_time_ps"] = step, float(time_ps)
        seg["n_frames"] += 1
        seg["last_step"], seg["last_time_ps"] = step, float(time_ps)
        self._hold(np.array([step], np.int64), np.array([time_ps], np.float64), pos[None],
                   np.asarray(box, np.float64)[None], None if framework_centre is None else framework_centre[None],
                   np.array([wall]), None if framework_positions is None else framework_positions[None])
        return True

    def _regular_frames(self, steps: np.ndarray, new_run: np.ndarray) -> int:
        """How many of the frames ``steps`` (from the first) continue the current segment regularly.

        Regular: the session and its segment have started, no restart or run boundary is pending, no frame
        starts a run, and every step follows the one before by the segment's step interval: the frames that
        :meth:`_append_checked` would only add, so :meth:`_append_block` adds them at once.
        """
        segs = self.commit.segments
        if (not self._session_started or self._dedupe or self._pending_reason is not None or not segs
                or segs[-1]["n_frames"] == 0 or self._step_interval is None or not len(steps)):
            return 0
        last = self._buf_last_step if self._n_buf else self.commit.last_step
        ok = ~new_run
        ok[0] &= int(steps[0]) - int(last) == self._step_interval
        ok[1:] &= np.diff(steps) == self._step_interval
        return len(ok) if ok.all() else int(np.argmin(ok))

    def _append_block(self, steps: np.ndarray, times_ps: np.ndarray, pos: np.ndarray, boxes: np.ndarray,
                      framework_centres: np.ndarray | None, wall: np.ndarray,
                      framework_positions: np.ndarray | None) -> None:
        """Add regular frames (:meth:`_regular_frames`) to the current segment, a chunk's worth at a time."""
        seg = self.commit.segments[-1]
        m, i = len(steps), 0
        while i < m:
            room = self.chunk - (self.commit.n_frames + self._n_buf) % self.chunk
            j = min(m, i + max(1, min(room, self.flush_frames - self._n_buf)))
            seg["n_frames"] += j - i
            seg["last_step"], seg["last_time_ps"] = int(steps[j - 1]), float(times_ps[j - 1])
            self._hold(steps[i:j], times_ps[i:j], pos[i:j], boxes[i:j],
                       None if framework_centres is None else framework_centres[i:j], wall[i:j],
                       None if framework_positions is None else framework_positions[i:j])
            i = j

    def _hold(self, steps: np.ndarray, times_ps: np.ndarray, pos: np.ndarray, boxes: np.ndarray,
              framework_centres: np.ndarray | None, wall: np.ndarray, framework_positions: np.ndarray | None) -> None:
        """Keep a block of frames in memory; flush at a chunk's end, after ``flush_frames`` or ``flush_seconds``."""
        m = len(steps)
        n0, n1 = self._n_buf, self._n_buf + m
        buf = self._buf
        if not buf or len(buf["step"]) < n1:
            rows = max(n1, self.flush_frames, 1)
            new = {k: np.empty((rows,) + tuple(a.shape[1:]), dtype=a.dtype) for k, a in self._arrays.items()}
            for k, a in buf.items():
                new[k][:n0] = a[:n0]
            self._buf = buf = new
        buf["positions"][n0:n1] = pos
        buf["framework_centre"][n0:n1] = _NO_CENTRE if framework_centres is None else framework_centres
        buf["step"][n0:n1] = steps
        buf["time_ps"][n0:n1] = times_ps
        buf["box"][n0:n1] = boxes
        buf["wall_s"][n0:n1] = wall
        if self.n_framework:
            buf["framework"][n0:n1] = np.nan if framework_positions is None else framework_positions
        self._n_buf = n1
        self._buf_last_step = int(steps[-1])
        if (self.commit.n_frames + self._n_buf) % self.chunk == 0 or self._n_buf >= self.flush_frames or (
            self.flush_seconds is not None and time.monotonic() - self._last_flush > self.flush_seconds
        ):
            self.flush()

    def flush(self) -> None:
        """Write the frames held in memory and commit them."""
        pending = self._n_buf
        if pending:
            start = self.commit.n_frames
            end = start + pending
            if self.capacity is None:
                for k in self._names:
                    a = self._arrays[k]
                    if a.shape[0] < end:
                        # grow geometrically (from 16 chunks, at most 64 chunks at a time): few metadata
                        # rewrites (~1.5 ms of CPU each, six arrays); readers go by the commit record,
                        # never by the arrays' shape
                        cur = a.shape[0]
                        want = max(end, 16 * self.chunk, min(2 * cur, cur + 64 * self.chunk))
                        new = int(np.ceil(want / self.chunk) * self.chunk)
                        a.resize((new,) + a.shape[1:])
            else:
                oldest_kept = max(0, end - self.capacity)
                if oldest_kept > self.commit.first_frame:
                    # retract the frames whose slots are about to be overwritten *before* writing
                    committed_n = self.commit.n_frames
                    self.commit.first_frame = min(oldest_kept, committed_n)
                    self.commit.write(self.path, sync=False)
            self._write_slots(start, end)
            self._n_buf = 0
            self.commit.n_frames = end
            self.commit.first_frame = max(0, end - self.capacity) if self.capacity else 0
        self.commit.write(self.path, sync=self._closing)
        self._last_flush = time.monotonic()

    def _write_slots(self, start: int, end: int) -> None:
        data = {k: v[: self._n_buf] for k, v in self._buf.items()}
        self.commit.last_step = int(data["step"][-1])
        cap = self.capacity
        if cap is not None and end - start > cap:  # more pending frames than the ring holds: keep the newest
            data = {k: v[end - start - cap :] for k, v in data.items()}
            start = end - cap
        # split at the ring's wrap-around so every write is a contiguous slice
        pieces = []
        g = start
        while g < end:
            s = g % cap if cap else g
            stop_slot = min(cap, s + (end - g)) if cap else s + (end - g)
            pieces.append((g - start, g - start + (stop_slot - s), s, stop_slot))
            g += stop_slot - s
        for k in self._names:
            files = self._files[k]
            for i0, i1, s0, s1 in pieces:
                if files is not None:
                    files.write(s0, s1, data[k][i0:i1])
                else:
                    self._arrays[k][s0:s1] = data[k][i0:i1]

    def mark_interrupted(self, reason: str) -> None:
        """Record in the last segment that the run was stopped early (written at the next flush or close).

        Parameters
        ----------
        reason : str
            E.g. ``"SIGINT"``, ``"SIGTERM"``.
        """
        if self.commit.segments:
            self.commit.segments[-1]["interrupted"] = str(reason)
        logger.info("%s: run interrupted (%s)", self.path, reason)

    def close(self) -> None:
        """Flush, close and release the writer's lock (idempotent)."""
        if not self._closed:
            self._closing = True  # the last commit is synced to disk
            try:
                self.flush()
            finally:
                self._closed = True
                if self._lock is not None:
                    self._lock.release()

    def __enter__(self) -> FrameStoreWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class FrameStoreReader:
    """Read committed frames of a store, also while a writer appends.

    Parameters
    ----------
    path : str

    Raises
    ------
    TrajectoryFileNotFoundError, TrajectoryFormatError, StoreCorruptError
    """

    def __init__(self, path: str) -> None:
        import zarr

        self.path = os.fspath(path)
        if not os.path.exists(os.path.join(self.path, "zarr.json")):
            raise TrajectoryFileNotFoundError(f"no frame store at {self.path}")
        try:
            self.group = zarr.open_group(self.path, mode="r")
            a = dict(self.group.attrs)
        except Exception as exc:  # noqa: BLE001 - zarr raises many kinds on damaged metadata
            raise StoreCorruptError(f"{self.path}: the store's metadata (zarr.json) is unreadable ({exc}): store corrupt") from exc
        if a.get("format") != FORMAT:
            raise TrajectoryFormatError(f"{self.path} is not an iondiff_stream frame store")
        self.ion_ids = np.asarray(a["ion_ids"], dtype=np.int64)
        self.species = list(a["species"])
        self.lammps_types = a.get("lammps_types")
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

    @property
    def ring_dropped_frames(self) -> int:
        """Frames written to the store that a ring no longer holds."""
        return int(self.commit.first_frame)

    @property
    def segments(self) -> list[dict[str, Any]]:
        """Segments with frames still available, as ranges of available frames.

        Returns
        -------
        list of dict
            The commit's segment records plus ``start`` and ``stop`` (available-frame
            indices, ``[start, stop)``) and ``dropped_by_ring`` (frames of the segment
            that the ring no longer holds). A store written before segments existed is
            one segment.
        """
        c = self.commit
        segs = c.segments or [{"index": 0, "first_frame": 0, "n_frames": c.n_frames, "first_step": -1,
                               "last_step": c.last_step, "started_by": "start", "restarts": 0}]
        out = []
        for s in segs:
            g0, g1 = s["first_frame"], min(s["first_frame"] + s["n_frames"], c.n_frames)
            a0, a1 = max(g0, c.first_frame), g1
            if a1 <= a0:
                continue
            out.append({**s, "n_frames": g1 - g0, "start": a0 - c.first_frame, "stop": a1 - c.first_frame,
                        "dropped_by_ring": a0 - g0})
        return out

    def read(self, start: int = 0, stop: int | None = None, names: tuple[str, ...] = _ARRAYS) -> dict[str, np.ndarray]:
        """Frames ``[start, stop)`` of those available (0 = oldest available).

        Returns
        -------
        dict
            ``positions (m, n_ions, 3)``, ``framework_centre (m, 3)``, ``step (m,)``,
            ``time_ps (m,)``, ``box (m, 6)``, ``wall_s (m,)``.

        Raises
        ------
        StoreOverwrittenError
            A ring writer overwrote some of these frames while they were read (retry).
        StoreCorruptError
            A chunk failed its checksum or could not be decoded.
        """
        import zarr

        c = self.commit
        n = self.n_frames
        stop = n if stop is None else min(stop, n)
        if start < 0 or start > stop:
            raise IndexError(f"frames [{start}, {stop}) not in 0..{n}")
        g0, g1 = c.first_frame + start, c.first_frame + stop
        out: dict[str, np.ndarray] = {}
        try:
            grp = zarr.open_group(self.path, mode="r")  # re-open: sees resized arrays
        except Exception as exc:  # noqa: BLE001
            raise StoreCorruptError(f"{self.path}: the store's metadata is unreadable ({exc}): store corrupt") from exc
        for k in names:
            try:
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
            except Exception as exc:  # noqa: BLE001 - zarr/numcodecs raise many kinds on damaged chunks
                if self.refresh().first_frame > g0:
                    raise StoreOverwrittenError(
                        f"{self.path}: the ring buffer overwrote frames while they were read; retry (read more recent frames)"
                    ) from exc
                what = "failed its checksum" if "checksum" in str(exc).lower() else "could not be decoded"
                raise StoreCorruptError(
                    f"{self.path}: store damaged: a chunk of {k!r} in frames {g0}-{g1 - 1} {what}: store corrupt"
                ) from exc
            if k in _CHUNKS_ALWAYS_WRITTEN:
                self._check_chunks_present(grp[k], k, g0, g1)
        if self.refresh().first_frame > g0:
            raise StoreOverwrittenError(
                f"{self.path}: the ring buffer overwrote frames while they were read; retry (read more recent frames)"
            )
        return out

    def _check_chunks_present(self, arr: Any, name: str, g0: int, g1: int) -> None:
        """Raise :class:`StoreCorruptError` when a chunk file holding committed frames ``[g0, g1)`` is missing.

        Zarr reads a missing chunk as its fill value (NaN, -1) without complaint; the arrays in
        :data:`_CHUNKS_ALWAYS_WRITTEN` never hold a chunk of fill values only, so a missing file is damage.
        """
        if g1 <= g0:
            return
        frames = np.arange(g0, g1)
        slots = frames % self.capacity if self.capacity is not None else frames
        chunk_of = slots // int(self.chunk)
        extra = (0,) * (len(arr.shape) - 1)
        for c in np.unique(chunk_of):
            key = arr.metadata.encode_chunk_key((int(c),) + extra)
            f = os.path.join(self.path, name, *key.split("/"))
            if not os.path.exists(f):
                if self.refresh().first_frame > g0:
                    raise StoreOverwrittenError(f"{self.path}: the ring buffer overwrote frames while they were read; "
                                                "retry (read more recent frames)")
                hit = frames[chunk_of == c]
                raise StoreCorruptError(
                    f"{self.path}: store damaged: missing chunk {name}/{key} (frames {int(hit[0])}-{int(hit[-1])}); "
                    "the store's files were deleted or not copied whole"
                )

    def verify(self) -> int:
        """Read every available chunk of every array (checksums checked); return the frames checked.

        Raises
        ------
        StoreCorruptError
        """
        n = self.n_frames
        step = max(int(self.chunk), 1)
        for s in range(0, n, step):
            self.read(s, min(n, s + step))
        return n


def store_info(path: str, segment: int | str | None = None) -> dict[str, Any]:
    """What a store holds and which of its segments an analysis uses.

    Parameters
    ----------
    path : str
    segment : int, "all" or None
        None = the last segment.

    Returns
    -------
    dict
        ``segments`` (index, steps, times, frames, how each started), ``segment_analysed``,
        ``ring_dropped_frames``, ``skipped_duplicate_frames``, ``frames_available``.
    """
    r = FrameStoreReader(path)
    segs = r.segments
    if not segs:
        raise StoreError(f"{path}: the store has no frames")
    chosen = choose_segment(segs, segment, path)
    return {
        "store_segments": [{k: s.get(k) for k in ("index", "first_step", "last_step", "first_time_ps", "last_time_ps",
                                                  "n_frames", "dropped_by_ring", "started_by", "restarts")}
                           for s in segs],
        "segment_analysed": "all" if chosen is None else int(chosen["index"]),
        "ring_dropped_frames": r.ring_dropped_frames,
        "skipped_duplicate_frames": r.commit.n_skipped_duplicates,
        "frames_available": r.n_frames,
    }


#: arrays whose committed chunks always exist as files (framework_centre is NaN, its fill value, without a framework)
_CHUNKS_ALWAYS_WRITTEN = ("positions", "step", "time_ps", "box", "wall_s")


def _runs(idx: np.ndarray) -> list[tuple[int, int]]:
    cut = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [len(idx)]]) - 1
    return [(int(idx[s]), int(idx[e])) for s, e in zip(starts, ends)]


def writer_alive(path: str) -> bool:
    """True while a writer holds the store's lock (a LAMMPS run still writing it).

    Parameters
    ----------
    path : str
        The frame store.
    """
    import fcntl

    lock = os.path.join(os.fspath(path), LOCK_NAME)
    if not os.path.exists(lock):
        return False
    with open(lock, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return False
