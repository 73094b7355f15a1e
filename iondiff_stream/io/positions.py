"""Unwrapped positions of the mobile ions: the one frame-reading path of every analysis.

:class:`UnwrappedPositions` (an MDAnalysis analysis) collects unwrapped, optionally drift-corrected positions
of the selected atoms, shape ``(n_frames, n_atoms, 3)``, in one pass of slabs of frames: in memory, or for long
runs out of core in a Zarr store chunked per ion block (:mod:`iondiff_stream.io.positions_store`), within a
memory budget; with ``velocities=True`` also their velocities (the descriptors' VDOS).
:func:`collect_positions` is its front end (frame selection, segments, progress).

Units: Å and ps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import MDAnalysis as mda
import numpy as np
from MDAnalysis.analysis.base import AnalysisBase

from iondiff_stream.core.errors import (
    InvalidCoordinatesError,
    SelectionError,
    TimestepError,
    TrajectoryFormatError,
)
from iondiff_stream.core.pbc import cell_matrix, minimum_image
from iondiff_stream.io import validate
from iondiff_stream.io.formats import times_in_file
from iondiff_stream.io.universe import elements_of, select_mobile

logger = logging.getLogger(__name__)

__all__ = ["TrajectoryData", "UnwrappedPositions", "collect_positions"]


@dataclass
class TrajectoryData:
    """Unwrapped positions of the mobile ions and what goes with them.

    Attributes
    ----------
    positions : ndarray or zarr.Array, shape (n_frames, n_mobile, 3)
        Unwrapped Cartesian positions, Å (drift removed if requested), frame
        major: ``positions[:, i0:i1]`` is an ion block. An in-memory float64
        array, or (out of core) a float32 Zarr array chunked per ion block
        (see :mod:`iondiff_stream.io.positions_store`).
    times_ps : ndarray, shape (n_frames,)
    box : ndarray, shape (6,)
        Box of the first frame ``[a, b, c, alpha, beta, gamma]`` (Å, degrees).
    atom_indices : ndarray, shape (n_mobile,)
        0-based indices of the mobile atoms in the trajectory.
    atom_ids : ndarray, shape (n_mobile,)
        Atom ids as the file gives them (LAMMPS tags; 1-based serials otherwise).
    species : ndarray of str, shape (n_mobile,)
    framework_drift : ndarray, shape (n_frames, 3) or None
        Mean framework displacement that was subtracted, Å.
    framework_positions : ndarray, shape (n_frames, n_framework, 3), float32, or None
        Unwrapped positions of the non-mobile atoms, Å (drift removed like the mobile ions'); kept
        when they fit a quarter of the memory budget (the site model attaches sites to them).
    framework_species : ndarray of str, shape (n_framework,) or None
    velocities : ndarray, shape (n_frames, n_mobile, 3), or None
        Velocities of the selected atoms, Å/ps, when asked for (``velocities=True``) and every frame has them.
    steps : ndarray, shape (n_frames,) or None
        MD step numbers where the file has them.
    volume_A3 : float
    store : PositionStore or None
        The on-disk store when ``positions`` is out of core.
    """

    positions: Any
    times_ps: np.ndarray
    box: np.ndarray
    atom_indices: np.ndarray
    species: np.ndarray
    framework_drift: np.ndarray | None = None
    steps: np.ndarray | None = None
    volume_A3: float = float("nan")
    meta: dict[str, Any] = field(default_factory=dict)
    atom_ids: np.ndarray | None = None
    store: Any = None
    framework_positions: np.ndarray | None = None
    framework_species: np.ndarray | None = None
    velocities: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_mobile(self) -> int:
        return int(self.positions.shape[1])

    @property
    def out_of_core(self) -> bool:
        """True when the positions live in a Zarr store on disk."""
        return not isinstance(self.positions, np.ndarray)

    @property
    def timestep_ps(self) -> float:
        return float(self.times_ps[1] - self.times_ps[0]) if self.n_frames > 1 else float("nan")

    def ion_major(self) -> Any:
        """Positions as ``(n_mobile, n_frames, 3)``: a transposed view in memory, else an :class:`IonMajorView`."""
        if isinstance(self.positions, np.ndarray):
            return self.positions.transpose(1, 0, 2)
        from iondiff_stream.io.positions_store import IonMajorView, ion_block_of

        return IonMajorView(self.positions, ion_block=ion_block_of(self.positions))


def _species(ag: mda.AtomGroup) -> np.ndarray:
    el = elements_of(ag)
    if el is None or np.any(el == ""):
        return np.array([str(t) for t in ag.types], dtype=object)
    return np.array([str(e) for e in el], dtype=object)


def _box_volume(box: np.ndarray) -> float:
    from MDAnalysis.lib.mdamath import box_volume

    return float(box_volume(box))


class UnwrappedPositions(AnalysisBase):
    """Collect unwrapped positions of mobile ions, one slab of frames at a time.

    Positions are unwrapped by minimum-image frame-to-frame differences
    (orthorhombic and triclinic boxes), which is exact whether the file holds
    wrapped or unwrapped coordinates, provided no atom moves more than half a
    box length between stored frames (checked). Framework drift (the mean
    displacement of all non-mobile atoms, as in pymatgen's DiffusionAnalyzer)
    can be subtracted.

    Frames are buffered in slabs of ``plan.frame_chunk`` frames and unwrapped
    with array operations per slab; each slab is written to the output (an
    in-memory float64 array, or out of core a float32 :class:`PositionStore`),
    so memory is bounded by the budget whatever the run length.

    Parameters
    ----------
    mobile : AtomGroup
    remove_drift : bool
        Subtract the mean unwrapped displacement of the framework atoms.
    timestep_ps : float, optional
        Time between stored frames, ps; required when the file has no times.
    md_timestep_ps : float, optional
        MD integration timestep, ps; with LAMMPS dumps the frame times are
        ``step * md_timestep_ps``.
    memory_budget : MemoryBudget or int, optional
        Working memory (bytes); decides in memory vs out of core.
    out_of_core : bool, optional
        Force positions to a Zarr store (True) or memory (False).
    store_path : str, optional
        Directory of the Zarr store (default: a temporary directory).
    n_workers : int
        Ion blocks that will be analysed at once (sizes the ion block).
    progress : callable, optional
        ``progress(n_frames_done)`` called after each slab.
    allow_discontinuities : bool
        Warn instead of refusing a run with repeated frames or jumps between
        frames (see :mod:`iondiff_stream.io.validate`).
    force_timestep : bool
        Use ``timestep_ps`` even when it contradicts the times in the file.
    frame_clock : ndarray of int, optional
        Per analysed frame, its count on the run's time axis (times = this × ``timestep_ps``); default the
        trajectory frame index. Differs where joined segments left a boundary frame out
        (:class:`~iondiff_stream.io.segments.FrameSelection`).
    step_offset : ndarray of int, optional
        Per analysed frame, added to its MD step (and step-based time): joined dump segments.
    velocities : bool
        Also collect the selected atoms' velocities (``results.data.velocities``; None when a frame has none).
    velocity_scale : float
        Factor from the file's velocity unit to Å/ps (:func:`iondiff_stream.io.formats.velocity_reading`).

    Raises
    ------
    TrajectoryFormatError
        A frame cannot be read (the message names file and frame), frames are
        repeated, or the run jumps between frames (files out of order).
    TimestepError
        Times unknown, not increasing, or contradicting ``timestep_ps``.

    Results
    -------
    results.data : TrajectoryData
    """

    def __init__(
        self,
        mobile: mda.AtomGroup,
        remove_drift: bool = True,
        timestep_ps: float | None = None,
        md_timestep_ps: float | None = None,
        memory_budget: Any = None,
        out_of_core: bool | None = None,
        store_path: str | None = None,
        n_workers: int = 1,
        progress: Any = None,
        allow_discontinuities: bool = False,
        force_timestep: bool = False,
        frame_clock: np.ndarray | None = None,
        step_offset: np.ndarray | None = None,
        velocities: bool = False,
        velocity_scale: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(mobile.universe.trajectory, **kwargs)
        self.mobile = mobile
        self.remove_drift = remove_drift
        self.timestep_ps = timestep_ps
        self.md_timestep_ps = md_timestep_ps
        self.memory_budget = memory_budget
        self.out_of_core = out_of_core
        self.store_path = store_path
        self.n_workers = n_workers
        self.progress = progress
        self.allow_discontinuities = allow_discontinuities
        self.force_timestep = force_timestep
        self.frame_clock = None if frame_clock is None else np.asarray(frame_clock, dtype=np.int64)
        self.step_offset = None if step_offset is None else np.asarray(step_offset, dtype=np.int64)
        self.velocities = velocities
        self.velocity_scale = velocity_scale

    def run(self, *args: Any, **kwargs: Any) -> "UnwrappedPositions":
        """As :meth:`AnalysisBase.run`; a frame the reader cannot parse is named (file, frame)."""
        validate.check_timestep(self.timestep_ps, "timestep (--timestep-ps)")
        validate.check_timestep(self.md_timestep_ps, "MD timestep (--md-timestep-ps)")
        self._reading = -1
        self._done = -1
        try:
            super().run(*args, **kwargs)
        except (SelectionError, InvalidCoordinatesError, TimestepError, TrajectoryFormatError):
            raise
        except (IndexError, ValueError, KeyError, EOFError, OSError, np.linalg.LinAlgError) as exc:
            traj = self._trajectory
            if self._reading != self._done:  # failed while using frame self._reading
                where = validate.frame_source(traj, self._reading)
            else:  # failed while the reader parsed the next frame
                where = validate.frame_source(traj, self._done + 1)
            raise TrajectoryFormatError(
                f"{where}: cannot read this frame ({type(exc).__name__}: {exc}); the file is truncated or corrupt there"
            ) from exc
        return self

    def _prepare(self) -> None:
        from iondiff_stream.io.positions_store import MemoryBudget, PositionStore, plan_chunks

        u = self.mobile.universe
        if len(self.mobile) == 0:
            raise SelectionError("empty mobile selection")
        self._framework = u.atoms - self.mobile
        self._with_drift = bool(self.remove_drift and len(self._framework))
        self._scale = float(getattr(u, "iondiff_length_scale", 1.0))
        self._fallback_box = getattr(u, "iondiff_box_fallback", None)
        n, N = self.n_frames, len(self.mobile)
        M = len(self._framework) if self._with_drift else 0
        budget = self.memory_budget
        if budget is not None and not isinstance(budget, MemoryBudget):
            budget = MemoryBudget(int(budget))
        self.plan = plan_chunks(n, N, M, budget, self.n_workers, self.out_of_core)
        fw_bytes = n * M * 3 * 4
        keep_fw = M > 0 and fw_bytes <= (budget.bytes if budget is not None else MemoryBudget().bytes) // 4
        if M > 0 and not keep_fw:
            logger.info("framework positions (%.0f MB) exceed a quarter of the memory budget: not kept, sites "
                        "are not attached to the framework", fw_bytes / 1e6)
        self._fw_out = np.empty((n, M, 3), dtype=np.float32) if keep_fw else None
        self._last_f: np.ndarray | None = None
        if self.plan.in_memory:
            self._store = None
            self._out: Any = np.empty((n, N, 3), dtype=np.float64)
        else:
            self._store = PositionStore(self.store_path, n, N, self.plan)
            self._out = self._store.array
        B = self.plan.frame_chunk
        self._buf_m = np.empty((B, N, 3), dtype=np.float64)
        self._buf_f = np.empty((B, M, 3), dtype=np.float64)
        self._buf_box = np.empty((B, 6), dtype=np.float64)
        self._buf_frame = np.empty(B, dtype=np.int64)
        self._nb = 0
        self._t0 = 0
        self._drift = np.zeros((n, 3))
        self._times = np.empty(n)
        self._steps = np.full(n, -1, dtype=np.int64)
        fb = self._fallback_box
        self._no_box = np.full(6, np.nan) if fb is None else np.asarray(fb, dtype=np.float64)
        self._box0: np.ndarray | None = None
        self._last_raw_m: np.ndarray | None = None  # raw (wrapped) positions of the previous frame
        self._last_raw_f: np.ndarray | None = None
        self._last_m: np.ndarray | None = None  # unwrapped position of the previous frame (float64)
        self._last_drift = np.zeros(3)
        self._max_jump = 0.0
        self._hash = np.zeros(n, dtype=np.int64)  # of each frame's mobile coordinates (bytes)
        self._frame_ids = np.zeros(n, dtype=np.int64)
        self._med_step = np.zeros(n)  # median over ions of the unwrapped step into each frame, Å
        self._vel = np.empty((n, N, 3)) if self.velocities else None
        self._vel_missing = False

    def _compute(self, indexed_frames: np.ndarray, verbose: bool | None = None, **kwargs: Any) -> Any:
        """Frames of an in-memory trajectory copied one slab at a time; any other reader frame by frame.

        MDAnalysis's loop builds a Timestep per frame (~20 us each); a :class:`MemoryReader` (XDATCAR,
        extended XYZ, ``in_memory`` universes) already holds every frame in one array, so its slabs are taken
        directly, with the same values (float32 positions and boxes, ``time = frame * dt``), slab boundaries
        and checks as :meth:`_single_frame` gives.
        """
        from MDAnalysis.coordinates.memory import MemoryReader

        traj = self._trajectory
        if not (isinstance(traj, MemoryReader) and traj.stored_order == "fac" and not traj.transformations):
            return super()._compute(indexed_frames, verbose, **kwargs)
        frames = np.asarray(indexed_frames[:, 1], dtype=np.int64)
        self._prepare_sliced_trajectory(slicer=frames)
        self._prepare()
        if len(frames) == 0:
            return self
        coords, dims = traj.coordinate_array, traj.dimensions_array
        offset = traj.ts.data.get("time_offset", 0)
        mob = self.mobile.ix
        fw = self._framework.ix if self._with_drift else None
        B = len(self._buf_m)
        for s0 in range(0, len(frames), B):
            f = frames[s0 : s0 + B]
            nb = len(f)
            self._reading = int(f[0])
            xm = coords[f][:, mob]  # float32, as AtomGroup.positions
            self._buf_m[:nb] = xm
            if fw is not None:
                self._buf_f[:nb] = coords[f][:, fw]
            box = dims[f]
            no_box = np.all(box[:, :3] == 0, axis=1)[:, None]  # Timestep.dimensions is None there
            self._buf_box[:nb] = np.where(no_box, self._no_box, box)
            self._buf_frame[:nb] = f
            i = slice(s0, s0 + nb)
            if self._vel is not None:
                if traj.velocity_array is None:
                    self._vel_missing = True
                else:
                    self._vel[i] = traj.velocity_array[f][:, mob] * self.velocity_scale
            self._frame_ids[i] = f
            self._hash[i] = [hash(x.tobytes()) for x in xm]
            self._times[i] = f * traj.ts.dt + offset
            self.frames[i] = f
            self.times[i] = self._times[i]
            self._nb = nb
            self._frame_index = s0 + nb - 1
            self._flush()
            self._done = int(f[-1])
        return self

    def _single_frame(self) -> None:
        i, j = self._frame_index, self._nb
        self._reading = int(self._ts.frame)
        self._frame_ids[i] = self._ts.frame
        dims = self._ts.dimensions
        self._buf_box[j] = self._no_box if dims is None else dims  # checked and scaled per slab
        self._buf_frame[j] = self._ts.frame
        self._buf_m[j] = xm = self.mobile.positions
        self._hash[i] = hash(xm.tobytes())  # equal for bit-identical frames (repeats)
        if self._with_drift:
            self._buf_f[j] = self._framework.positions
        self._times[i] = self._ts.time
        if self._vel is not None:
            if self._ts.has_velocities:
                self._vel[i] = self.mobile.velocities * self.velocity_scale
            else:
                self._vel_missing = True
        step = self._ts.data.get("step")
        if step is not None:
            self._steps[i] = step
        if self.step_offset is not None:  # joined segments: steps and step-based times continue
            self._steps[i] += self.step_offset[i]
            self._times[i] += self.step_offset[i] * self._ts.dt
        self._nb += 1
        if self._nb == len(self._buf_m):
            self._flush()
        self._done = self._reading

    def _check_slab(self, xm: np.ndarray, xf: np.ndarray, boxes: np.ndarray, frames: np.ndarray) -> None:
        """Validate one slab of raw frames before it is unwrapped (boxes, NaN/inf coordinates).

        Parameters
        ----------
        xm, xf : ndarray, shape (B, n_mobile, 3), (B, n_framework, 3)
            Raw positions (Å) of the mobile and (if drift is removed) framework atoms.
        boxes : ndarray, shape (B, 6)
            Boxes ``[a, b, c, alpha, beta, gamma]`` (Å, degrees; NaN where the frame has none).
        frames : ndarray, shape (B,)
            Trajectory frame numbers of the slab.
        """
        bad_box = ~(np.isfinite(boxes).all(axis=1) & (boxes[:, :3] > 0).all(axis=1))
        if bad_box.any():
            k = int(np.argmax(bad_box))
            raise InvalidCoordinatesError(
                f"frame {int(frames[k])}: no valid periodic box ({boxes[k].tolist()}); "
                "give a topology/data file with the box"
            )
        okm = np.isfinite(xm).all(axis=2)
        if not okm.all():
            f, bad = np.nonzero(~okm)
            first = f[0]
            atoms = self.mobile.indices[bad[f == first]]
            raise InvalidCoordinatesError(
                f"{validate.frame_source(self._trajectory, int(frames[first]))}: NaN/inf coordinates for mobile atom "
                f"indices {atoms[:10].tolist()}"
            )
        if xf.size and not np.isfinite(xf).all():
            first = int(np.argmin(np.isfinite(xf).all(axis=(1, 2))))
            raise InvalidCoordinatesError(
                f"{validate.frame_source(self._trajectory, int(frames[first]))}: NaN/inf coordinates for framework atoms"
            )

    def _flush(self) -> None:
        """Unwrap the buffered slab and write it to the output."""
        nb = self._nb
        if nb == 0:
            return
        xm, xf, boxes = self._buf_m[:nb], self._buf_f[:nb], self._buf_box[:nb]
        self._check_slab(xm, xf, boxes, self._buf_frame[:nb])
        if self._scale != 1.0:
            xm *= self._scale
            xf *= self._scale
            boxes[:, :3] *= self._scale
        if self._box0 is None:
            self._box0 = boxes[0].copy()
        d = np.empty_like(xm)
        d[1:] = xm[1:] - xm[:-1]
        if self._last_raw_m is None:
            d[0] = 0.0
        else:
            d[0] = xm[0] - self._last_raw_m
        d = self._min_image_slab(d, boxes)
        if d.size:
            jumps = np.abs(d[1:] if self._last_raw_m is None else d)
            if jumps.size:
                self._max_jump = max(self._max_jump, float(jumps.max()))
        self._med_step[self._t0 : self._t0 + nb] = np.median(np.linalg.norm(d, axis=2), axis=1) if d.shape[1] else 0.0
        d[0] += xm[0] if self._last_m is None else self._last_m
        unwrapped = np.cumsum(d, axis=0)  # sequential float64 sums: identical to frame-by-frame accumulation
        self._last_m = unwrapped[-1].copy()
        self._last_raw_m = xm[-1].copy()
        t0 = self._t0
        if self._with_drift:
            df = np.empty_like(xf)
            df[1:] = xf[1:] - xf[:-1]
            df[0] = 0.0 if self._last_raw_f is None else xf[0] - self._last_raw_f
            df = self._min_image_slab(df, boxes)
            step_drift = df.mean(axis=1)
            step_drift[0] += self._last_drift
            drift = np.cumsum(step_drift, axis=0)
            self._drift[t0 : t0 + nb] = drift
            self._last_drift = drift[-1].copy()
            self._last_raw_f = xf[-1].copy()
            unwrapped -= drift[:, None, :]
            if self._fw_out is not None:  # unwrapped framework, drift removed like the mobile ions
                df[0] += xf[0] if self._last_f is None else self._last_f
                uf = np.cumsum(df, axis=0)
                self._last_f = uf[-1].copy()
                self._fw_out[t0 : t0 + nb] = uf - drift[:, None, :]
        if self._store is None:
            self._out[t0 : t0 + nb] = unwrapped
        else:
            self._store.write(t0, unwrapped)
        self._t0 += nb
        self._nb = 0
        if self.progress is not None:
            self.progress(nb)

    @staticmethod
    def _min_image_slab(raw: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Displacements (B, n, 3) with whole lattice translations removed, per frame's box (B, 6)."""
        if len(boxes) and np.all(boxes == boxes[0]):
            h = cell_matrix(boxes[0])
            frac = raw @ np.linalg.inv(h)
            return raw - np.rint(frac) @ h
        out = np.empty_like(raw)
        for k in range(len(raw)):
            out[k] = UnwrappedPositions._min_image(raw[k], boxes[k])
        return out

    @staticmethod
    def _min_image(raw: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Frame-to-frame displacements (n, 3) with whole lattice translations removed
        (:func:`iondiff_stream.core.pbc.minimum_image`)."""
        return minimum_image(raw, box)

    def _conclude(self) -> None:
        self._flush()
        if self._box0 is None:
            raise TrajectoryFormatError("no frames were read")
        frames = self._frame_ids
        validate.check_duplicates(self._hash, frames, self._trajectory, allow=self.allow_discontinuities)
        if len(self.mobile) >= validate.MIN_IONS_FOR_JUMPS:
            validate.check_discontinuities(self._med_step, frames, self._trajectory,
                                           allow=self.allow_discontinuities)
        half = 0.5 * float(np.min(self._box0[:3]))
        if self._max_jump > 0.8 * half:
            logger.warning(
                "an atom moved %.2f Å between two stored frames (half box %.2f Å): "
                "frames may be too far apart to unwrap reliably",
                self._max_jump,
                half,
            )
        times = self._resolve_times()
        data = TrajectoryData(
            positions=self._out,
            times_ps=times,
            box=self._box0,
            atom_indices=self.mobile.indices.copy(),
            species=_species(self.mobile),
            framework_drift=self._drift if self._with_drift else None,
            steps=self._steps if np.all(self._steps >= 0) else None,
            volume_A3=_box_volume(self._box0),
            atom_ids=np.asarray(self.mobile.ids).astype(np.int64) if hasattr(self.mobile, "ids") else None,
            store=self._store,
            framework_positions=self._fw_out if self._with_drift else None,
            framework_species=_species(self._framework) if (self._with_drift and self._fw_out is not None) else None,
            velocities=None if (self._vel is None or self._vel_missing) else self._vel,
        )
        del self._buf_m, self._buf_f
        self.results.data = data

    def _resolve_times(self) -> np.ndarray:
        n = self.n_frames
        traj = self._trajectory
        frames = np.asarray(self.frames, dtype=np.int64)
        clock = frames if self.frame_clock is None else self.frame_clock  # counts stored intervals
        file_has_times = times_in_file(traj)  # the formats table: the reader or its format knows the times
        if self.md_timestep_ps is not None and np.all(self._steps >= 0):
            t = self._steps * float(self.md_timestep_ps)
            if self.timestep_ps is not None and not validate.check_timestep_agrees(
                float(self.timestep_ps), t, clock, traj, force=self.force_timestep,
                source=f"the MD timestep (--md-timestep-ps) {float(self.md_timestep_ps):g} ps x the steps in the file",
            ):
                t = clock * float(self.timestep_ps)
        elif self.timestep_ps is not None:
            t = clock * float(self.timestep_ps)
            if file_has_times:
                validate.check_timestep_agrees(float(self.timestep_ps), self._times, clock, traj,
                                               force=self.force_timestep)
        elif file_has_times:
            t = self._times.copy()
        elif type(traj).__name__ == "MemoryReader" and n > 1:
            t = self._times.copy()
        else:
            raise TimestepError(
                f"the time between frames is not in {getattr(traj, 'filename', None) or 'this file'}: give the time "
                "between stored frames (--timestep-ps, timestep_ps) or, for LAMMPS dumps, the MD timestep "
                "(--md-timestep-ps, md_timestep_ps)"
            )
        if not getattr(traj, "iondiff_absolute_times", False):  # frame stores keep their real times
            t = t - t[0]
        if n > 1:
            validate.check_times_increase(t, frames, traj)
            dtt = np.diff(t)
            if not np.allclose(dtt, dtt[0], rtol=1e-4, atol=1e-9):
                logger.warning("frames are not evenly spaced in time (dt %.6g..%.6g ps)", dtt.min(), dtt.max())
        return t




def collect_positions(
    u: mda.Universe,
    mobile: str | mda.AtomGroup,
    *,
    remove_drift: bool = True,
    timestep_ps: float | None = None,
    md_timestep_ps: float | None = None,
    start: int | None = None,
    stop: int | None = None,
    step: int | None = None,
    verbose: bool = False,
    memory_budget: Any = None,
    out_of_core: bool | None = None,
    store_path: str | None = None,
    n_workers: int = 1,
    allow_discontinuities: bool = False,
    force_timestep: bool = False,
    segment: int | str | None = None,
    start_ps: float | None = None,
    stop_ps: float | None = None,
    velocities: bool = False,
    velocity_scale: float = 1.0,
) -> TrajectoryData:
    """Unwrapped positions of the mobile ions in one pass (see :class:`UnwrappedPositions`).

    The frames are validated on the way (:mod:`iondiff_stream.io.validate`):
    repeated frames, jumps between frames (files out of order), non-increasing
    times and a ``timestep_ps`` contradicting the file's times raise unless
    ``allow_discontinuities`` / ``force_timestep``.

    Parameters
    ----------
    u : Universe
    mobile : str or AtomGroup
    remove_drift, timestep_ps, md_timestep_ps :
        See :class:`UnwrappedPositions`.
    start, stop, step : int, optional
        Frames to read (within the chosen segment of a dump).
    segment : int, "all" or None
        LAMMPS dumps whose step goes back (``reset_timestep``): the segment to analyse, default the
        last; ``"all"`` joins them on one time axis (see :mod:`iondiff_stream.io.segments`). Frame
        stores choose theirs when opened (``load_universe(..., segment=)``).
    start_ps, stop_ps : float, optional
        Keep the frames whose time from the first frame of the segment lies in ``[start_ps, stop_ps]``.
    verbose : bool
        Show a progress bar (rich) when no run-wide bar is active.
    memory_budget : MemoryBudget or int, optional
        Bytes of working memory (default 1 GiB): positions go out of core
        (a Zarr store) when float64 positions would take over a quarter of it.
    out_of_core : bool, optional
        Force the store (True) or memory (False).
    store_path : str, optional
        Where to write the store (default: a temporary directory removed with
        the returned data's ``store``).
    n_workers : int
        Ion blocks analysed at once later (sizes the store's ion blocks).
    velocities, velocity_scale :
        Collect velocities too (Å/ps; see :class:`UnwrappedPositions`).

    Returns
    -------
    TrajectoryData
        ``positions`` of shape (n_frames, n_mobile, 3).
    """
    from iondiff_stream.core.progress import RunProgress, current, stage

    from iondiff_stream.io.segments import select_frames

    ag = select_mobile(u, mobile) if isinstance(mobile, str) else mobile
    sel = select_frames(u, segment=segment, start=start, stop=stop, step=step, start_ps=start_ps, stop_ps=stop_ps,
                        timestep_ps=timestep_ps, md_timestep_ps=md_timestep_ps)
    if sel is None:
        n = len(range(*slice(start, stop, step).indices(u.trajectory.n_frames)))
        which: dict[str, Any] = {"start": start, "stop": stop, "step": step}
        extra: dict[str, Any] = {}
    else:
        n = len(sel.frames)
        which = {"frames": sel.frames}
        extra = {"frame_clock": sel.clock, "step_offset": sel.step_offset}
    own = RunProgress({"read": 1.0}, enabled=True, description="reading") if (verbose and current() is None) else None
    if own is not None:
        own.__enter__()
    try:
        st = stage("read", n)
        run = UnwrappedPositions(ag, remove_drift=remove_drift, timestep_ps=timestep_ps, md_timestep_ps=md_timestep_ps,
                                 memory_budget=memory_budget, out_of_core=out_of_core, store_path=store_path,
                                 n_workers=n_workers, progress=st, allow_discontinuities=allow_discontinuities,
                                 force_timestep=force_timestep, velocities=velocities,
                                 velocity_scale=velocity_scale, **extra)
        run.run(verbose=False, **which)
    except BaseException as exc:
        if own is not None:
            own.__exit__(type(exc), exc, None)
        raise
    if own is not None:
        own.__exit__(None, None, None)
    data = run.results.data
    if sel is not None:
        data.meta["selection"] = sel.summary
    return data
