"""The DeePMD model's own trust signal joined to the hops: hop-resolved model deviation and trusted transport.

An ensemble of DeePMD models (``pair_style deepmd m0.pb m1.pb ... atomic``) disagrees on the forces where its
training data did not reach; LAMMPS writes that disagreement (the model deviation, eV/Å) beside the run and the
hook keeps it in the frame store (:mod:`iondiff_stream.io.model_deviation`). Hops are rare events, often the very
configurations the training data missed, so this module asks of every hop how far the models disagreed on the
hopping ion while it hopped, against the same ions at rest, and what the transport is without the stretches of
the run where the model was not trusted.

Trust levels are DP-GEN's: below ``trust_lo`` (0.05 eV/Å) the model is trusted, above ``trust_hi`` (0.15 eV/Å)
it is not (:data:`~iondiff_stream.io.model_deviation.TRUST_LO_EV_A`, ``TRUST_HI_EV_A``).

Functions
---------
deviation_status
    The live numbers of the monitor: current and largest deviation, frames above the trust levels, a warning
    when the run has left the trusted region.
frame_deviation
    The deviation of every analysed frame (per ion with ``atomic``), matched by MD step.
hop_trust
    Per-hop maximum deviation of the hopping ion, hops above the trust levels, hop vs rest, and the transport
    (MSD and hop-carried D) without the untrusted stretches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from iondiff_stream.analysis.transport import msd_ion_blocks
from iondiff_stream.core.units import A2_PER_PS_TO_CM2_PER_S
from iondiff_stream.io.model_deviation import (TRUST_HI_EV_A, TRUST_LO_EV_A, ModelDeviation, read_store_deviation,
                                               rows_for_steps)

logger = logging.getLogger(__name__)

__all__ = ["deviation_status", "frame_deviation", "FrameDeviation", "hop_trust", "TrustResult", "trusted_stretches",
           "windowed_msd_D", "HOP_COLUMN"]

#: the column hops.csv gains: the largest force deviation of the hopping ion over the frames of the hop, eV/Å
HOP_COLUMN = "max_devi_f_eV_A"


def _levels(trust_lo: float | None, trust_hi: float | None) -> tuple[float, float]:
    lo = TRUST_LO_EV_A if trust_lo is None else float(trust_lo)
    hi = TRUST_HI_EV_A if trust_hi is None else float(trust_hi)
    if not (0 <= lo <= hi):
        from iondiff_stream.core.errors import IonDiffStreamError

        raise IonDiffStreamError(f"trust levels must satisfy 0 <= lo <= hi, got lo={lo} and hi={hi} eV/Å")
    return lo, hi


def _state(value: float, lo: float, hi: float) -> str:
    return "untrusted" if value > hi else "candidate" if value > lo else "trusted"


def deviation_status(store: str, frame_steps: np.ndarray | None = None, trust_lo: float | None = None,
                     trust_hi: float | None = None) -> dict[str, Any] | None:
    """Live model-deviation numbers of a store (None when the store has no deviation).

    Parameters
    ----------
    store : str
        The frame store.
    frame_steps : ndarray of int, optional
        Steps of the available frames: the frames with a deviation row are counted.
    trust_lo, trust_hi : float, optional
        Trust levels of the maximum force deviation, eV/Å (default DP-GEN's 0.05 and 0.15).

    Returns
    -------
    dict or None
        ``rows``, ``last_step``, ``per_atom``, ``trust_lo_eV_A``, ``trust_hi_eV_A``, ``current_max_devi_f_eV_A``
        (the newest row), ``current_state`` (trusted / candidate / untrusted), ``max_max_devi_f_eV_A``,
        ``mean_max_devi_f_eV_A``, ``frames_with_devi`` (frames of the store with a row of the same step),
        ``frames_above_trust_lo``, ``frames_above_trust_hi``, ``fraction_above_trust_hi``,
        ``first_step_above_trust_hi``, ``current_max_devi_f_ions_eV_A`` (the stored ions only, per-atom runs)
        and ``warning`` when the run is, or has been, outside the trusted region.
    """
    lo, hi = _levels(trust_lo, trust_hi)
    dev = read_store_deviation(store, atomic=True, atom_rows=slice(-1, None))  # per atom: the newest row only
    if dev is None:
        return None
    out: dict[str, Any] = {"rows": len(dev), "per_atom": dev.atomic, "trust_lo_eV_A": lo, "trust_hi_eV_A": hi}
    if not len(dev):
        return out
    f = dev.max_devi_f
    cur = float(f[-1])
    out.update({"last_step": int(dev.step[-1]), "current_max_devi_f_eV_A": cur, "current_state": _state(cur, lo, hi),
                "max_max_devi_f_eV_A": float(np.max(f)), "mean_max_devi_f_eV_A": float(np.mean(f))})
    if dev.atom_devi_f is not None and dev.atom_devi_f.shape[1]:
        out["current_max_devi_f_ions_eV_A"] = float(np.nanmax(dev.atom_devi_f[-1]))
    if frame_steps is not None:
        rows = rows_for_steps(dev, frame_steps)
        ff = f[rows[rows >= 0]]
        out.update({"frames_with_devi": int(len(ff)), "frames_above_trust_lo": int((ff > lo).sum()),
                    "frames_above_trust_hi": int((ff > hi).sum()),
                    "fraction_above_trust_hi": float((ff > hi).mean()) if len(ff) else None})
    above = np.flatnonzero(f > hi)
    out["first_step_above_trust_hi"] = int(dev.step[above[0]]) if len(above) else None
    if cur > hi:
        out["warning"] = (f"the run is outside the trusted region: max force deviation {cur:.3g} eV/Å > {hi:g} at step "
                          f"{int(dev.step[-1])} (first above at step {int(dev.step[above[0]])}); forces and hops "
                          "there are not reliable")
    elif len(above):
        out["warning"] = (f"the run was outside the trusted region in {len(above)} of {len(f)} deviation rows (first "
                          f"at step {int(dev.step[above[0]])}, max {float(np.max(f)):.3g} eV/Å > {hi:g})")
    return out


@dataclass
class FrameDeviation:
    """Model deviation of every analysed frame.

    Attributes
    ----------
    frame_max_f : ndarray, shape (n_frames,)
        Maximum force deviation over all atoms, eV/Å (NaN where the frame's step has no row).
    ion_f : ndarray, shape (n_frames, n_mobile) or None
        Force deviation of each mobile ion (per-atom runs), eV/Å, NaN where missing.
    has_row : ndarray of bool, shape (n_frames,)
    """

    frame_max_f: np.ndarray
    ion_f: np.ndarray | None
    has_row: np.ndarray

    @property
    def per_atom(self) -> bool:
        return self.ion_f is not None


def frame_deviation(dev: ModelDeviation, steps: np.ndarray, ion_ids: np.ndarray | None = None) -> FrameDeviation:
    """The deviation rows of the analysed frames (matched by step) and, per atom, of the analysed ions (by id).

    Parameters
    ----------
    dev : ModelDeviation
        From :func:`~iondiff_stream.io.model_deviation.read_store_deviation` (columns = the store's ions) or
        :func:`~iondiff_stream.io.model_deviation.read_model_devi` (columns = atom ids 1..N).
    steps : ndarray of int, shape (n_frames,)
    ion_ids : ndarray of int, shape (n_mobile,), optional
        Atom ids of the analysed ions (needed for the per-atom deviation).
    """
    rows = rows_for_steps(dev, steps)
    has = rows >= 0
    fmax = np.full(len(rows), np.nan)
    fmax[has] = dev.max_devi_f[rows[has]]
    ion_f = None
    if dev.atom_devi_f is not None and ion_ids is not None and dev.atom_ids is not None:
        col_of = {int(a): j for j, a in enumerate(dev.atom_ids)}
        cols = np.array([col_of.get(int(a), -1) for a in ion_ids], dtype=np.int64)
        ion_f = np.full((len(rows), len(cols)), np.nan)
        ok = cols >= 0
        if ok.any():
            ion_f[np.ix_(has, ok)] = dev.atom_devi_f[np.ix_(rows[has], cols[ok])]
        if not ok.all():
            logger.warning("%d analysed ions have no per-atom model deviation", int((~ok).sum()))
    return FrameDeviation(fmax, ion_f, has)


def _fill_between(values: np.ndarray) -> np.ndarray:
    """NaNs replaced by the larger of the nearest known values before and after (conservative for trust)."""
    v = np.asarray(values, dtype=np.float64)
    known = np.flatnonzero(np.isfinite(v))
    if len(known) == 0 or len(known) == len(v):
        return v.copy()
    idx = np.arange(len(v))
    prev = known[np.clip(np.searchsorted(known, idx, side="right") - 1, 0, len(known) - 1)]
    nxt = known[np.clip(np.searchsorted(known, idx, side="left"), 0, len(known) - 1)]
    return np.where(np.isfinite(v), v, np.maximum(v[prev], v[nxt]))


def trusted_stretches(trusted: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs ``[a, b)`` of True frames."""
    t = np.asarray(trusted, dtype=bool)
    if not len(t):
        return []
    d = np.diff(np.r_[0, t.astype(np.int8), 0])
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def windowed_msd_D(positions: Any, dt_ps: float, stretches: list[tuple[int, int]], lags: np.ndarray) -> dict[str, Any]:
    """Tracer D from the MSD of windows lying wholly inside ``stretches``, fitted over ``lags``.

    The MSD at lag ``k`` frames averages every origin whose window ``[t, t + k]`` lies in one stretch (all
    ions); ``D = slope / 6`` of a least-squares line through MSD(lag) (with intercept, for the vibrations).

    Parameters
    ----------
    positions : array_like, shape (n_frames, n_ions, 3)
        Unwrapped positions, Å.
    dt_ps : float
        Time between frames, ps.
    stretches : list of (int, int)
    lags : ndarray of int
        Lags (frames) of the fit.

    Returns
    -------
    dict
        ``D_cm2_s`` (None when no lag has windows), ``msd_A2`` per lag, ``windows`` per lag.
    """
    lags = np.asarray(lags, dtype=np.int64)
    msd = np.zeros(len(lags))
    cnt = np.zeros(len(lags), dtype=np.int64)
    for a, b in stretches:
        fits = lags < b - a  # lags with at least one window in this stretch
        if not fits.any():
            continue
        x = np.asarray(positions[a:b], dtype=np.float64).transpose(1, 0, 2)  # (n_ions, frames, 3)
        per_ion = msd_ion_blocks(x, int(lags[fits].max()), lags=lags[fits]).sum(axis=2)  # (n_ions, n_lags), Å²
        windows = (b - a - lags[fits]) * x.shape[0]  # origins × ions per lag
        msd[fits] += per_ion.mean(axis=0) * windows
        cnt[fits] += windows
    ok = cnt > 0
    m = np.where(ok, msd / np.maximum(cnt, 1), np.nan)
    D = None
    if ok.sum() >= 2:
        t = np.asarray(lags, dtype=np.float64)[ok] * dt_ps
        slope = np.polyfit(t, m[ok], 1)[0]
        D = float(slope / 6.0 * A2_PER_PS_TO_CM2_PER_S)
    return {"D_cm2_s": D, "msd_A2": m, "windows": cnt}


@dataclass
class TrustResult:
    """Hop-resolved trust of one run.

    Attributes
    ----------
    hop_max_f : ndarray, shape (n_hops,)
        Largest force deviation of the hopping ion (per atom) or of the frame (no ``atomic``) over the frames of
        each hop (start to end frame), eV/Å; NaN when none of them has a deviation row.
    trusted_frames : ndarray of bool, shape (n_frames,)
        Frame max deviation <= ``trust_hi`` (frames without a row take the larger of their neighbours' rows).
    summary : dict
        The numbers for ``summary.json`` (see :func:`hop_trust`).
    """

    hop_max_f: np.ndarray
    trusted_frames: np.ndarray
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The keys this result adds to ``summary.json`` (units in the names)."""
        return dict(self.summary)


def hop_trust(hops: Any, fd: FrameDeviation, times_ps: np.ndarray, positions: Any = None, n_mobile: int | None = None,
              trust_lo: float | None = None, trust_hi: float | None = None, min_lag_ps: float = 0.5) -> TrustResult:
    """Join the model deviation to the hops; the transport without the untrusted stretches.

    Parameters
    ----------
    hops : HopTable
        Columns ``ion``, ``start_frame``, ``end_frame``, ``length_A``, ``open``.
    fd : FrameDeviation
        From :func:`frame_deviation` for the same frames.
    times_ps : ndarray, shape (n_frames,)
    positions : array_like, shape (n_frames, n_mobile, 3), optional
        Unwrapped positions, Å: the MSD with and without the untrusted stretches.
    n_mobile : int, optional
        Mobile ions (default ``positions.shape[1]`` or the largest ion index + 1).
    trust_lo, trust_hi : float, optional
        eV/Å; default DP-GEN's 0.05 and 0.15.
    min_lag_ps : float
        Shortest lag of the MSD fits, ps (past the vibrations).

    Returns
    -------
    TrustResult
        ``summary``: ``trust_lo_eV_A``, ``trust_hi_eV_A``, ``model_devi_per_atom``, ``model_devi_frames`` (frames
        with a row) of ``n_frames``, ``max_devi_f_max_eV_A``, ``max_devi_f_mean_eV_A``, ``frames_above_trust_lo_fraction``,
        ``frames_above_trust_hi_fraction``, ``hops_with_devi``, ``hops_above_trust_lo``/``_hi`` and their
        ``_fraction`` (closed hops), ``hop_max_devi_f_median_eV_A``, ``hop_devi_f_mean_eV_A`` and
        ``rest_devi_f_mean_eV_A`` (the hopping ions' deviation in the frames of their hops and at rest; per atom
        only), ``trusted_time_fraction``, ``n_trusted_stretches``, ``D_hops_all_cm2_s``/``D_hops_trusted_cm2_s``,
        ``D_msd_all_cm2_s``/``D_msd_trusted_cm2_s`` (the MSD slope of all windows of the run and of the windows
        inside trusted stretches, over the same lags ``D_msd_lags_ps``; None with ``D_msd_trusted_reason`` when
        the stretches are too short) and their ``_change_percent``, ``trust_note``.
    """
    lo, hi = _levels(trust_lo, trust_hi)
    nf = len(times_ps)
    ion = np.asarray(hops["ion"], dtype=np.int64)
    s0 = np.asarray(hops["start_frame"], dtype=np.int64)
    e0 = np.minimum(np.asarray(hops["end_frame"], dtype=np.int64), nf - 1)
    is_open = np.asarray(hops["open"], dtype=bool)
    length = np.asarray(hops["length_A"], dtype=np.float64)
    if n_mobile is None:
        n_mobile = int(positions.shape[1]) if positions is not None else int(ion.max(initial=-1) + 1)
    per_ion = fd.ion_f
    hop_max = np.full(len(ion), np.nan)
    in_hop = np.zeros((nf, n_mobile), dtype=bool) if per_ion is not None else None
    for h in range(len(ion)):
        a, b = int(s0[h]), int(e0[h]) + 1
        vals = per_ion[a:b, ion[h]] if per_ion is not None else fd.frame_max_f[a:b]
        if np.isfinite(vals).any():
            hop_max[h] = float(np.nanmax(vals))
        if in_hop is not None:
            in_hop[a:b, ion[h]] = True
    closed = ~is_open
    known = np.isfinite(hop_max) & closed
    f = fd.frame_max_f
    fk = f[np.isfinite(f)]
    s: dict[str, Any] = {
        "trust_lo_eV_A": lo, "trust_hi_eV_A": hi, "model_devi_per_atom": bool(per_ion is not None),
        "model_devi_frames": int(fd.has_row.sum()), "n_frames_analysed": int(nf),
        "max_devi_f_max_eV_A": float(fk.max()) if len(fk) else None,
        "max_devi_f_mean_eV_A": float(fk.mean()) if len(fk) else None,
        "frames_above_trust_lo_fraction": float((fk > lo).mean()) if len(fk) else None,
        "frames_above_trust_hi_fraction": float((fk > hi).mean()) if len(fk) else None,
        "hops_with_devi": int(known.sum()),
        "hops_above_trust_lo": int((hop_max[known] > lo).sum()),
        "hops_above_trust_hi": int((hop_max[known] > hi).sum()),
        "hops_above_trust_lo_fraction": float((hop_max[known] > lo).mean()) if known.any() else None,
        "hops_above_trust_hi_fraction": float((hop_max[known] > hi).mean()) if known.any() else None,
        "hop_max_devi_f_median_eV_A": float(np.median(hop_max[known])) if known.any() else None,
    }
    if per_ion is not None and in_hop is not None:
        hoppers = np.unique(ion)
        sub, mask = per_ion[:, hoppers], in_hop[:, hoppers]
        dh, dr = sub[mask], sub[~mask]
        dh, dr = dh[np.isfinite(dh)], dr[np.isfinite(dr)]
        s["hop_devi_f_mean_eV_A"] = float(dh.mean()) if len(dh) else None
        s["rest_devi_f_mean_eV_A"] = float(dr.mean()) if len(dr) else None
        s["hop_to_rest_devi_ratio"] = (s["hop_devi_f_mean_eV_A"] / s["rest_devi_f_mean_eV_A"]
                                       if len(dh) and len(dr) and dr.mean() > 0 else None)
    # trusted stretches: the frame maximum over all atoms (the dynamics of every atom uses every force)
    filled = _fill_between(f)
    trusted = np.where(np.isfinite(filled), filled <= hi, True)
    stretches = trusted_stretches(trusted)
    dt = float(times_ps[1] - times_ps[0]) if nf > 1 else float("nan")
    t_all = float(times_ps[-1] - times_ps[0]) if nf > 1 else 0.0
    t_tr = float(sum((b - a - 1) * dt for a, b in stretches if b - a > 1)) if nf > 1 else 0.0
    s["trusted_time_fraction"] = t_tr / t_all if t_all > 0 else None
    s["n_trusted_stretches"] = len(stretches)
    s["frames_untrusted"] = int((~trusted).sum())
    # hop-carried D: closed hops whose frames are all trusted, over the trusted time
    hop_ok = closed & np.array([trusted[int(a):int(b) + 1].all() for a, b in zip(s0, e0)], dtype=bool)
    conv = A2_PER_PS_TO_CM2_PER_S / (6.0 * max(n_mobile, 1))
    s["D_hops_all_cm2_s"] = float((length[closed] ** 2).sum() / t_all * conv) if t_all > 0 else None
    s["D_hops_trusted_cm2_s"] = float((length[hop_ok] ** 2).sum() / t_tr * conv) if t_tr > 0 else None
    s["D_hops_trusted_change_percent"] = _change(s["D_hops_all_cm2_s"], s["D_hops_trusted_cm2_s"])
    if positions is not None and nf > 8:
        # MSD windows lying wholly inside trusted stretches, against all windows of the run, over the same lags:
        # from min_lag_ps (past the vibrations) to half the longest trusted stretch. Joining the stretches instead
        # would add a vibrational jump at every cut, which at these diffusivities outweighs the diffusion.
        longest = max((b - a for a, b in stretches), default=0)
        k1 = max(1, int(round(min_lag_ps / dt)))
        k2 = min(nf // 4, longest // 2)
        if k2 >= max(k1 + 2, 2 * k1):  # lags over a factor of two at least
            lags = np.unique(np.linspace(k1, k2, num=min(12, k2 - k1 + 1)).astype(np.int64))
            whole = windowed_msd_D(positions, dt, [(0, nf)], lags)
            part = windowed_msd_D(positions, dt, stretches, lags)
            s["D_msd_all_cm2_s"] = whole["D_cm2_s"]
            s["D_msd_trusted_cm2_s"] = part["D_cm2_s"]
            s["D_msd_trusted_change_percent"] = _change(whole["D_cm2_s"], part["D_cm2_s"])
            s["D_msd_lags_ps"] = [float(lags[0] * dt), float(lags[-1] * dt)]
        else:
            s["D_msd_trusted_cm2_s"] = None
            s["D_msd_trusted_reason"] = (f"the trusted stretches are too short for the MSD: the longest is "
                                         f"{max(longest - 1, 0) * dt:.3g} ps; the fit (lags {min_lag_ps:g} to "
                                         f"{2 * min_lag_ps:g} ps at least) needs {4 * min_lag_ps:g} ps")
    s["trust_note"] = _note(s)
    return TrustResult(hop_max, trusted, s)


def _change(ref: float | None, new: float | None) -> float | None:
    if ref is None or new is None or not np.isfinite(ref) or ref == 0:
        return None
    return float(100.0 * (new - ref) / ref)


def _note(s: dict[str, Any]) -> str:
    parts = []
    hf = s.get("hops_above_trust_hi_fraction")
    if hf is not None:
        parts.append(f"{s['hops_above_trust_hi']} of {s['hops_with_devi']} hops ({100 * hf:.1f} %) exceed the upper "
                     f"trust level {s['trust_hi_eV_A']:g} eV/Å")
    tf = s.get("trusted_time_fraction")
    if tf is not None:
        parts.append(f"{100 * tf:.1f} % of the run is trusted ({s['frames_untrusted']} untrusted frames)")
    for key, what in (("D_msd_trusted_change_percent", "D from the MSD"), ("D_hops_trusted_change_percent", "D of the hops")):
        c = s.get(key)
        if c is not None:
            parts.append(f"{what} changes by {c:+.1f} % without the untrusted stretches")
    return "; ".join(parts)


def add_model_deviation(run: Any, store: str, trust_lo: float | None = None, trust_hi: float | None = None) -> bool:
    """Join a store's model deviation to an analysed run: hop column :data:`HOP_COLUMN` and summary keys.

    Parameters
    ----------
    run : RunAnalysis
        ``run.data`` (steps, times, ids, positions), ``run.hops.hops`` (the HopTable, gains the column) and
        ``run.trust`` (set to the :class:`TrustResult`, whose keys, with ``model_devi_source``, join the summary).
    store : str
        The frame store analysed.
    trust_lo, trust_hi : float, optional
        eV/Å.

    Returns
    -------
    bool
        False when the store has no deviation (nothing changed).
    """
    dev = read_store_deviation(store, atomic=True)
    if dev is None:
        return False
    data = run.data
    if data.steps is None:
        logger.warning("%s: the frames have no steps: the model deviation cannot be matched to them", store)
        return False
    fd = frame_deviation(dev, data.steps, data.atom_ids)
    table = run.hops.hops
    res = hop_trust(table, fd, data.times_ps, positions=data.positions, n_mobile=data.n_mobile,
                    trust_lo=trust_lo, trust_hi=trust_hi)
    table.columns[HOP_COLUMN] = res.hop_max_f
    res.summary["model_devi_source"] = dev.meta.get("out_file")
    run.trust = res
    if res.summary.get("hops_above_trust_hi"):
        logger.warning("%s", res.summary["trust_note"])
    return True
