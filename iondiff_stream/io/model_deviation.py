"""DeePMD model deviation: LAMMPS's ``model_devi.out``, read whole or followed live, and kept in a frame store.

``pair_style deepmd m0.pb m1.pb ... out_freq N out_file model_devi.out [atomic]`` (two or more models)
writes, every ``N`` steps, one line per step: the step, the maximum, minimum and mean over atoms of the
virial deviation (``*_devi_v``, eV per atom) and of the force deviation (``*_devi_f``, eV/Å), in DeePMD-kit 3
also of the atomic energy (``*_devi_e``, eV), each the standard deviation over the ensemble of models. With
``atomic`` the force deviation of every atom follows, in the order of the atom ids (column ``j`` is the atom
with id ``j + 1``; the header names the block once, ``atm_devi_f(N)``). The line of step ``s`` is written (and flushed)
while the forces of step ``s`` are computed, so a ``fix external`` callback at step ``s`` finds it.

Functions and classes
---------------------
read_model_devi
    The whole file (a partial last line of a running LAMMPS is left out).
ModelDeviationTail
    Follows a growing file: each :meth:`~ModelDeviationTail.poll` returns the lines completed since the last.
ModelDeviationFollower
    A tail feeding a writer: what a hook calls after every stored frame (``fix python/invoke``, IMD listener).
ModelDeviationWriter
    Appends deviation rows to ``STORE/model_devi/`` beside the frames (the LAMMPS hook uses it); the per-atom
    deviation is kept for the store's ions only.
read_store_deviation
    The rows committed to a store so far (also while the hook appends).
rows_for_steps
    The row of each frame, matched by MD step (the store's and LAMMPS's common time base).

Layout in a store ``RUN.zarr``::

    model_devi/step          (n,) int64, MD step
    model_devi/devi          (n, k) float64, the named columns of the file (``columns`` attribute), eV/Å and eV
    model_devi/atom_devi_f   (n, n_ions) float32, force deviation of every stored ion, eV/Å (``atomic`` runs)
    model_devi/commit.json   ``n_rows`` committed (written after the data, atomically), columns, source file
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from iondiff_stream.core.errors import StoreCorruptError, TrajectoryFileNotFoundError, TrajectoryFormatError

logger = logging.getLogger(__name__)

__all__ = ["ModelDeviation", "read_model_devi", "parse_model_devi", "ModelDeviationTail", "ModelDeviationWriter",
           "ModelDeviationFollower",
           "read_store_deviation", "has_store_deviation", "rows_for_steps", "TRUST_LO_EV_A", "TRUST_HI_EV_A",
           "GROUP", "pair_style_model_devi"]

#: DP-GEN's default trust levels of the maximum force deviation (``model_devi_f_trust_lo``/``hi``), eV/Å: below
#: ``lo`` the model is trusted, between ``lo`` and ``hi`` the configuration is a candidate for labelling, above
#: ``hi`` the model is not trusted (the configuration is usually discarded as unphysical)
TRUST_LO_EV_A = 0.05
TRUST_HI_EV_A = 0.15

#: sub-group of a frame store holding the deviation
GROUP = "model_devi"

#: named columns of model_devi.out (DeePMD-kit 2: the first six; 3: the energy columns too)
KNOWN_COLUMNS = ("max_devi_v", "min_devi_v", "avg_devi_v", "max_devi_f", "min_devi_f", "avg_devi_f",
                 "max_devi_e", "min_devi_e", "avg_devi_e")


@dataclass
class ModelDeviation:
    """Rows of model deviation, one per written step.

    Attributes
    ----------
    step : ndarray of int64, shape (n,)
        MD step of each row.
    columns : dict of str to ndarray, shape (n,)
        The named columns (``max_devi_f`` ... ), eV/Å for forces, eV (per atom) for virials and energies.
    atom_devi_f : ndarray, shape (n, n_atoms) or None
        Force deviation of every atom, eV/Å (``atomic``); in a file, column ``j`` is atom id ``j + 1``; read
        from a store, column ``j`` is the store's ion ``j`` (``atom_ids``).
    atom_ids : ndarray of int64 or None
        Atom id of each column of ``atom_devi_f``.
    meta : dict
        Where the rows came from (file, ``out_freq``, ...).
    """

    step: np.ndarray
    columns: dict[str, np.ndarray]
    atom_devi_f: np.ndarray | None = None
    atom_ids: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.step))

    @property
    def max_devi_f(self) -> np.ndarray:
        """Maximum force deviation over all atoms of each row, eV/Å."""
        return self.columns["max_devi_f"]

    @property
    def atomic(self) -> bool:
        """True when the per-atom force deviation is there."""
        return self.atom_devi_f is not None

    @classmethod
    def empty(cls, names: tuple[str, ...] = KNOWN_COLUMNS[:6]) -> ModelDeviation:
        return cls(np.zeros(0, np.int64), {k: np.zeros(0) for k in names})

    def take(self, rows: np.ndarray) -> ModelDeviation:
        """The rows ``rows`` (indices or a mask)."""
        return ModelDeviation(self.step[rows], {k: v[rows] for k, v in self.columns.items()},
                              None if self.atom_devi_f is None else self.atom_devi_f[rows], self.atom_ids, dict(self.meta))


def _header_names(line: str) -> list[str]:
    """The column names of a header line (``#  step  max_devi_v ...``)."""
    names = line.lstrip("#").split()
    if not names or names[0] != "step":
        raise TrajectoryFormatError(f"not a model_devi.out header (expected '# step max_devi_v ...'): {line.strip()!r}")
    # DeePMD-kit 3 names the per-atom block once, "atm_devi_f(N)": those columns are not named ones
    return [n for n in names[1:] if not n.startswith("atm_devi")]


def parse_model_devi(lines: list[str], names: list[str] | None, source: str = "model_devi.out") -> ModelDeviation:
    """Rows from complete data lines of ``model_devi.out``.

    Parameters
    ----------
    lines : list of str
        Data lines (no header, no partial line).
    names : list of str or None
        Named columns after ``step`` (from the header; None: the six of DeePMD-kit 2 when a line has >= 7 values).
    source : str
        For error messages.

    Raises
    ------
    TrajectoryFormatError
        A line with fewer values than named columns, or rows of different lengths.
    """
    rows = [ln.split() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if names is None:
        names = list(KNOWN_COLUMNS[:6])
    k = len(names)
    if not rows:
        return ModelDeviation.empty(tuple(names))
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise TrajectoryFormatError(f"{source}: rows of different lengths ({sorted(widths)} values): file damaged or "
                                    "written by two different pair_style commands")
    width = widths.pop()
    if width < k + 1:
        raise TrajectoryFormatError(f"{source}: {width} values on a line, the header names {k + 1}")
    try:
        arr = np.array(rows, dtype=np.float64)
    except ValueError as exc:
        raise TrajectoryFormatError(f"{source}: a line is not numbers ({exc})") from exc
    step = arr[:, 0].astype(np.int64)
    cols = {n: arr[:, 1 + i].copy() for i, n in enumerate(names)}
    atom = arr[:, 1 + k :] if width > k + 1 else None
    ids = np.arange(1, atom.shape[1] + 1, dtype=np.int64) if atom is not None else None
    return ModelDeviation(step, cols, atom, ids, {"source": source})


def read_model_devi(path: str) -> ModelDeviation:
    """Read a whole ``model_devi.out`` (a partial last line, of a LAMMPS still writing, is left out).

    Parameters
    ----------
    path : str

    Returns
    -------
    ModelDeviation
        ``atom_devi_f`` is set when the file has per-atom columns (``atomic``), column ``j`` = atom id ``j + 1``.

    Raises
    ------
    TrajectoryFileNotFoundError, TrajectoryFormatError
    """
    tail = ModelDeviationTail(path)
    if not os.path.exists(path):
        raise TrajectoryFileNotFoundError(f"model deviation file not found: {path}")
    out = tail.poll()
    return out if out is not None else ModelDeviation.empty(tuple(tail.names or KNOWN_COLUMNS[:6]))


class ModelDeviationTail:
    """Follow a ``model_devi.out`` that LAMMPS is writing: the complete lines added since the last poll.

    Cheap enough to call at every stored frame (one ``read`` of the new bytes). A file that shrank (a new
    ``pair_style`` command re-created it) is read again from its start.

    Parameters
    ----------
    path : str
        The file (it may not exist yet).
    """

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)
        self.names: list[str] | None = None
        self._fh: Any = None
        self._offset = 0
        self._partial = b""
        self.n_rows = 0
        self.restarts = 0

    def _open(self) -> bool:
        if self._fh is None:
            try:
                self._fh = open(self.path, "rb")  # noqa: SIM115 - kept open while following the file
            except FileNotFoundError:
                return False
        return True

    def poll(self) -> ModelDeviation | None:
        """Rows completed since the last call (None when there are none).

        Raises
        ------
        TrajectoryFormatError
            A header or line that is not model deviation.
        """
        if not self._open():
            return None
        size = os.fstat(self._fh.fileno()).st_size
        try:
            if os.stat(self.path).st_ino != os.fstat(self._fh.fileno()).st_ino:  # replaced: follow the new file
                self._fh.close()
                self._fh = None
                self._reset()
                if not self._open():
                    return None
                size = os.fstat(self._fh.fileno()).st_size
        except FileNotFoundError:
            pass
        if size < self._offset:  # truncated (re-created in place)
            self._reset()
        if size == self._offset:
            return None
        self._fh.seek(self._offset)
        data = self._fh.read(size - self._offset)
        self._offset += len(data)
        buf = self._partial + data
        cut = buf.rfind(b"\n")
        if cut < 0:
            self._partial = buf
            return None
        self._partial = buf[cut + 1 :]
        lines = buf[:cut].decode("ascii", errors="replace").splitlines()
        data_lines = []
        for ln in lines:
            s = ln.strip()
            if not s:
                continue
            if s.startswith("#"):
                if "step" in s.split():
                    self.names = _header_names(s)
                continue
            data_lines.append(ln)
        if not data_lines:
            return None
        out = parse_model_devi(data_lines, self.names, source=self.path)
        self.n_rows += len(out)
        return out

    def _reset(self) -> None:
        self._offset = 0
        self._partial = b""
        self.restarts += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def pair_style_model_devi(line: str) -> dict[str, Any] | None:
    """What a ``pair_style deepmd`` command writes as model deviation (None: not deepmd, or one model).

    Parameters
    ----------
    line : str
        The command, variables already substituted (``pair_style deepmd m0.pb m1.pb out_freq 10 atomic``).

    Returns
    -------
    dict or None
        ``out_file`` (default ``model_devi.out``), ``out_freq`` (default 100 steps), ``atomic``, ``models``.
    """
    words = line.split("#", 1)[0].split()
    if len(words) < 3 or words[0] != "pair_style" or not words[1].startswith("deepmd"):
        return None
    keys = {"out_file": 1, "out_freq": 1, "fparam": None, "aparam": None, "atomic": 0, "relative": 1,
            "relative_v": 1, "ttm": 1, "fparam_from_compute": 1, "aparam_from_compute": 1}
    models, i = [], 2
    while i < len(words) and words[i] not in keys:
        models.append(words[i])
        i += 1
    out: dict[str, Any] = {"models": models, "out_file": "model_devi.out", "out_freq": 100, "atomic": False,
                           "relative": None}
    while i < len(words):
        k = words[i]
        if k == "atomic":
            out["atomic"] = True
            i += 1
        elif k in ("out_file", "out_freq", "relative", "relative_v", "ttm", "fparam_from_compute",
                   "aparam_from_compute"):
            if i + 1 < len(words):
                if k == "out_file":
                    out["out_file"] = words[i + 1]
                elif k == "out_freq":
                    out["out_freq"] = int(words[i + 1])
                elif k == "relative":
                    out["relative"] = float(words[i + 1])
            i += 2
        else:  # fparam / aparam: values up to the next keyword
            i += 1
            while i < len(words) and words[i] not in keys:
                i += 1
    if len(models) < 2 or out["out_freq"] <= 0:
        return None
    return out


class ModelDeviationWriter:
    """Append model-deviation rows to a frame store (``STORE/model_devi/``), committed like the frames.

    Rows are collected in memory and written every ``flush_rows`` rows, every ``flush_seconds`` and at
    :meth:`close`; ``commit.json`` (the number of rows) is replaced after the data it describes is written,
    so a reader never sees a half-written row.

    Parameters
    ----------
    store : str
        The frame store (created by the frame writer; this writes only its ``model_devi`` sub-group).
    ion_ids : ndarray of int64, optional
        Atom ids of the store's ions: the per-atom deviation is kept for these columns only.
    mode : {"w", "a"}
        ``"w"`` replaces deviation rows already in the store; ``"a"`` appends to them.
    flush_rows : int
    flush_seconds : float or None
    meta : dict, optional
        Stored in the commit record (``out_file``, ``out_freq``, ``models`` ...).
    """

    def __init__(self, store: str, ion_ids: np.ndarray | None = None, mode: str = "w", flush_rows: int = 100,
                 flush_seconds: float | None = 5.0, meta: dict[str, Any] | None = None) -> None:
        self.path = os.path.join(os.fspath(store), GROUP)
        self.ion_ids = None if ion_ids is None else np.asarray(ion_ids, dtype=np.int64)
        self.flush_rows = max(1, int(flush_rows))
        self.flush_seconds = flush_seconds
        self.meta = dict(meta or {})
        if mode == "w" and os.path.exists(self.path):
            shutil.rmtree(self.path)
        self.commit = _read_commit(self.path) if os.path.exists(self.path) else {"n_rows": 0}
        self._buf: list[ModelDeviation] = []
        self._arrays: dict[str, Any] | None = None
        self._last = time.monotonic()
        self.n_appended = 0
        self.max_devi_f = float("-inf")

    def append(self, rows: ModelDeviation | None) -> None:
        """Keep ``rows`` (flushed when enough are held)."""
        if rows is None or not len(rows):
            return
        if rows.atom_devi_f is not None and self.ion_ids is not None:
            cols = self.ion_ids - 1
            if cols.max(initial=-1) >= rows.atom_devi_f.shape[1]:
                logger.warning("%s: the per-atom model deviation has %d atoms, fewer than the stored ions' largest "
                               "id %d (atom ids with gaps?): per-atom deviation not stored", self.path,
                               rows.atom_devi_f.shape[1], int(self.ion_ids.max()))
                rows = ModelDeviation(rows.step, rows.columns, None, None, rows.meta)
            else:
                rows = ModelDeviation(rows.step, rows.columns, rows.atom_devi_f[:, cols].astype(np.float32),
                                      self.ion_ids, rows.meta)
        self._buf.append(rows)
        self.n_appended += len(rows)
        self.max_devi_f = max(self.max_devi_f, float(np.max(rows.max_devi_f)))
        held = sum(len(b) for b in self._buf)
        if held >= self.flush_rows or (self.flush_seconds is not None
                                       and time.monotonic() - self._last > self.flush_seconds):
            self.flush()

    def _open(self, first: ModelDeviation) -> dict[str, Any]:
        import zarr

        names = list(first.columns)
        chunk = self.flush_rows
        if self.commit.get("n_rows", 0) and os.path.exists(os.path.join(self.path, "zarr.json")):
            g = zarr.open_group(self.path, mode="a")
            if list(g.attrs.get("columns", [])) != names:
                raise StoreCorruptError(f"{self.path}: appending deviation columns {names} to a store holding "
                                        f"{list(g.attrs.get('columns', []))}")
            arrays = {k: g[k] for k in ("step", "devi", "atom_devi_f") if k in g}
            if ("atom_devi_f" in arrays) != (first.atom_devi_f is not None):
                raise StoreCorruptError(f"{self.path}: per-atom deviation in one run and not in the other "
                                        "(pair_style ... atomic): write to another store")
            return arrays
        g = zarr.open_group(self.path, mode="w")
        g.update_attributes({"format": "iondiff_stream.model_devi", "columns": names,
                             "units": {"devi_f": "eV/angstrom", "devi_v": "eV (per atom)", "devi_e": "eV"},
                             "atom_ids": None if first.atom_ids is None else [int(i) for i in first.atom_ids]})
        arrays = {"step": g.create_array("step", shape=(0,), chunks=(chunk,), dtype="int64", fill_value=-1),
                  "devi": g.create_array("devi", shape=(0, len(names)), chunks=(chunk, len(names)), dtype="float64",
                                         fill_value=np.nan)}
        if first.atom_devi_f is not None:
            n = first.atom_devi_f.shape[1]
            arrays["atom_devi_f"] = g.create_array("atom_devi_f", shape=(0, n), chunks=(chunk, n), dtype="float32",
                                                   fill_value=np.nan)
        self.commit = {"n_rows": 0}
        return arrays

    def flush(self) -> None:
        """Write the rows held and commit them."""
        self._last = time.monotonic()
        if not self._buf:
            return
        bufs, self._buf = self._buf, []
        if self._arrays is None:
            self._arrays = self._open(bufs[0])
        step = np.concatenate([b.step for b in bufs])
        devi = np.column_stack([np.concatenate([b.columns[k] for b in bufs]) for k in bufs[0].columns])
        n0 = int(self.commit.get("n_rows", 0))
        n1 = n0 + len(step)
        vals = {"step": step, "devi": devi}
        if "atom_devi_f" in self._arrays:
            vals["atom_devi_f"] = np.concatenate([
                b.atom_devi_f if b.atom_devi_f is not None
                else np.full((len(b), self._arrays["atom_devi_f"].shape[1]), np.nan, np.float32) for b in bufs])
        for name, v in vals.items():
            a = self._arrays[name]
            if a.shape[0] < n1:  # grow geometrically: few metadata rewrites; readers go by the commit's n_rows
                a.resize((max(n1, 2 * a.shape[0], 8 * self.flush_rows),) + tuple(a.shape[1:]))
            a[n0:n1] = v
        self.commit = {**self.commit, **self.meta, "n_rows": n1, "last_step": int(step[-1]),
                       "atomic": "atom_devi_f" in self._arrays}
        _write_commit(self.path, self.commit)

    def close(self) -> dict[str, Any]:
        """Flush; returns ``{"model_devi_rows": n, "model_devi_max_f_eV_A": ...}`` for the run's report."""
        self.flush()
        out: dict[str, Any] = {"model_devi_rows": int(self.commit.get("n_rows", 0))}
        if self.n_appended:
            out["model_devi_max_f_eV_A"] = self.max_devi_f
        return out


class ModelDeviationFollower:
    """Follow LAMMPS's ``model_devi.out`` into a frame store: a :class:`ModelDeviationTail` feeding a
    :class:`ModelDeviationWriter`, for hooks that store frames (the ``fix python/invoke`` hook and the IMD
    listener call :meth:`poll` after every stored frame and :meth:`close` at the end).

    Parameters
    ----------
    path : str
        The file ``pair_style deepmd ... out_file PATH`` writes (it may not exist yet).
    store : str
        The frame store.
    ion_ids : ndarray of int64, optional
        Atom ids of the store's ions (per-atom deviation kept for these).
    mode : {"w", "a"}
        Replace the deviation rows in the store, or append (a restart onto an existing store).
    meta : dict, optional
        Kept in the commit record (``source``, ``out_freq`` ...); ``out_file`` is added.
    flush_seconds : float or None
        Commit held rows at least this often, s.

    Attributes
    ----------
    seconds : float
        Time spent in :meth:`poll` (reading, converting, committing), s.
    """

    def __init__(self, path: str, store: str, ion_ids: np.ndarray | None = None, mode: str = "w",
                 meta: dict[str, Any] | None = None, flush_seconds: float | None = 5.0) -> None:
        self.tail = ModelDeviationTail(path)
        self.writer = ModelDeviationWriter(store, ion_ids=ion_ids, mode=mode, flush_seconds=flush_seconds,
                                           meta={**(meta or {}), "out_file": os.path.abspath(path)})
        self.seconds = 0.0

    def poll(self) -> int:
        """Store the lines completed since the last call; returns how many rows they were."""
        t0 = time.perf_counter()
        rows = self.tail.poll()
        self.writer.append(rows)
        self.seconds += time.perf_counter() - t0
        return 0 if rows is None else len(rows)

    def close(self) -> dict[str, Any]:
        """Store the last lines and commit; returns ``model_devi_rows``, ``model_devi_max_f_eV_A`` and
        ``model_devi_hook_s`` for the run's report."""
        try:
            self.poll()
            out = self.writer.close()
        finally:
            self.tail.close()
        out["model_devi_hook_s"] = self.seconds
        return out


def _write_commit(path: str, commit: dict[str, Any]) -> None:
    p = os.path.join(path, "commit.json")
    tmp = p + f".{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        json.dump(commit, fh)
    os.replace(tmp, p)


def _read_commit(path: str) -> dict[str, Any]:
    p = os.path.join(path, "commit.json")
    if not os.path.exists(p):
        return {"n_rows": 0}
    try:
        with open(p) as fh:
            return dict(json.load(fh))
    except (OSError, ValueError) as exc:
        raise StoreCorruptError(f"{path}: commit.json of the model deviation is unreadable ({exc})") from exc


def has_store_deviation(store: str) -> bool:
    """True when a frame store holds model deviation rows."""
    return os.path.exists(os.path.join(os.fspath(store), GROUP, "commit.json"))


def read_store_deviation(store: str, atomic: bool = True, atom_rows: slice | None = None) -> ModelDeviation | None:
    """The model deviation committed to a frame store (None when it has none).

    Parameters
    ----------
    store : str
    atomic : bool
        Also read the per-atom deviation (the store's ions, in the store's ion order).
    atom_rows : slice, optional
        Read only these rows of the per-atom deviation (e.g. ``slice(-1, None)``: the newest, for a live view of a
        long run); ``atom_devi_f`` then holds those rows only.

    Raises
    ------
    StoreCorruptError
    """
    import zarr

    path = os.path.join(os.fspath(store), GROUP)
    if not os.path.exists(os.path.join(path, "commit.json")):
        return None
    commit = _read_commit(path)
    n = int(commit.get("n_rows", 0))
    if n == 0:
        return ModelDeviation.empty()
    try:
        g = zarr.open_group(path, mode="r")
        names = list(g.attrs["columns"])
        step = np.asarray(g["step"][:n], dtype=np.int64)
        devi = np.asarray(g["devi"][:n])
        rows = range(n)[atom_rows] if atom_rows is not None else range(n)
        atom = (np.asarray(g["atom_devi_f"][rows.start:rows.stop], dtype=np.float64)
                if atomic and "atom_devi_f" in g and rows.step == 1 else None)
        ids = g.attrs.get("atom_ids")
    except Exception as exc:  # noqa: BLE001 - zarr raises many kinds on damaged data
        raise StoreCorruptError(f"{path}: the model deviation could not be read ({exc}): store corrupt") from exc
    meta = {k: v for k, v in commit.items() if k != "n_rows"}
    return ModelDeviation(step, {k: devi[:, i] for i, k in enumerate(names)}, atom,
                          None if ids is None else np.asarray(ids, dtype=np.int64), meta)


def rows_for_steps(dev: ModelDeviation, steps: np.ndarray) -> np.ndarray:
    """The deviation row of each frame, matched by MD step (-1 where the step has none).

    A step written twice (a new ``run`` recomputes the forces of its first step) matches its last row.

    Parameters
    ----------
    dev : ModelDeviation
    steps : ndarray of int, shape (n_frames,)

    Returns
    -------
    ndarray of int64, shape (n_frames,)
    """
    steps = np.asarray(steps, dtype=np.int64)
    if not len(dev) or not len(steps):
        return np.full(len(steps), -1, np.int64)
    # last row of each step: sort stably by step, keep the last of equal steps
    order = np.argsort(dev.step, kind="stable")
    s = dev.step[order]
    last = np.r_[s[1:] != s[:-1], True]
    us, urow = s[last], order[last]
    pos = np.searchsorted(us, steps)
    pos = np.clip(pos, 0, len(us) - 1)
    hit = us[pos] == steps
    return np.where(hit, urow[pos], -1).astype(np.int64)
