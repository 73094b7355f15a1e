"""Long synthetic runs with known hops, written frame block by frame block (never the whole run in memory).

:func:`write_lattice_walk` makes a vacancy-mediated lattice walk of mobile ions
on a simple-cubic lattice (spacing ``a``) with a vibrating framework, and
writes it as a DCD trajectory (wrapped coordinates, like an MD engine's
output) plus a PDB topology, in blocks of frames; the ground truth (every hop:
ion, start and end frame, from/to unwrapped site) goes to a ``.npz`` file.
Used for the 10^5-10^6-frame benchmarks and the slow out-of-core test.

Model: every ion vibrates about its site (Ornstein-Uhlenbeck, amplitude
``sigma_A`` per axis, correlation time ``tau_frames``); a resting ion that has
rested at least ``min_rest`` frames tries a hop with probability ``hop_prob``
per frame to a random one of its 6 neighbours, which succeeds when that site
is vacant; the hop takes 2-4 frames (straight line). Units: Å, ps.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["LatticeWalk", "write_lattice_walk"]

_DIRS = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])


@dataclass
class LatticeWalk:
    """What :func:`write_lattice_walk` wrote.

    Attributes
    ----------
    trajectory, topology, truth : str
        Paths of the DCD, the PDB and the ground-truth ``.npz``.
    n_frames, n_mobile, n_framework : int
    n_hops : int
        Completed hops (all of length ``a``).
    dt_ps, a_A, box_A : float
    """

    trajectory: str
    topology: str
    truth: str
    n_frames: int
    n_mobile: int
    n_framework: int
    n_hops: int
    dt_ps: float
    a_A: float
    box_A: float


def _ou_block(rng: np.random.Generator, state: np.ndarray, n: int, coef: float, sigma: float) -> np.ndarray:
    """``n`` frames of an OU process per column continuing from ``state`` (updated in place)."""
    from scipy.signal import lfilter

    noise = rng.normal(0.0, sigma * np.sqrt(1 - coef**2), (n,) + state.shape)
    out, zf = lfilter([1.0], [1.0, -coef], noise, axis=0, zi=(coef * state)[None])
    state[...] = out[-1]
    return out


def write_lattice_walk(
    out_dir: str,
    n_frames: int,
    n_cells: int = 5,
    n_mobile: int = 100,
    n_framework_cells: int = 3,
    n_framework: int | None = None,
    a: float = 2.5,
    sigma_A: float = 0.15,
    tau_frames: float = 3.0,
    hop_prob: float = 3e-3,
    min_rest: int = 20,
    dt_ps: float = 0.05,
    block: int = 20000,
    seed: int = 0,
    name: str = "walk",
) -> LatticeWalk:
    """Write a vacancy lattice walk with known hops as DCD + PDB + truth, one block of frames at a time.

    Parameters
    ----------
    out_dir : str
        Directory for ``{name}.dcd``, ``{name}.pdb``, ``{name}_truth.npz``.
    n_frames : int
    n_cells : int
        Mobile-ion lattice ``n_cells**3`` sites (box edge ``n_cells * a``).
    n_mobile : int
        Ions (``Li``); the other sites are vacancies.
    n_framework_cells : int
        Framework ``S`` atoms on an ``n_framework_cells**3`` lattice offset by half a site.
    n_framework : int, optional
        Keep only the first ``n_framework`` of those framework sites.
    a, sigma_A, tau_frames, hop_prob, min_rest : float
        Site spacing (Å), vibration amplitude per axis (Å), its correlation time
        (frames), per-frame attempt probability of a rested ion, minimum rest (frames).
    dt_ps : float
        Time between frames, ps.
    block : int
        Frames generated and written at once (memory ~ block × atoms × 50 B).
    seed : int

    Returns
    -------
    LatticeWalk
    """
    import MDAnalysis as mda

    rng = np.random.default_rng(seed)
    n_sites = n_cells**3
    if not 0 < n_mobile < n_sites:
        raise ValueError(f"n_mobile must be in 1..{n_sites - 1} (vacancies needed), got {n_mobile}")
    L = n_cells * a
    grid = np.stack(np.meshgrid(*[np.arange(n_cells)] * 3, indexing="ij"), -1).reshape(-1, 3)
    occ = np.full(n_sites, -1)
    start_sites = rng.choice(n_sites, n_mobile, replace=False)
    occ[start_sites] = np.arange(n_mobile)
    cell = grid[start_sites].astype(np.int64)  # unwrapped integer lattice coordinates of each ion
    nf_cells = n_framework_cells
    fgrid = np.stack(np.meshgrid(*[np.arange(nf_cells)] * 3, indexing="ij"), -1).reshape(-1, 3)
    fsites = (fgrid + 0.5) * (L / nf_cells) + a / 4
    if n_framework is not None:
        fsites = fsites[:n_framework]
    n_fw = len(fsites)
    names = ["Li"] * n_mobile + ["S"] * n_fw

    os.makedirs(out_dir, exist_ok=True)
    top = os.path.join(out_dir, f"{name}.pdb")
    traj = os.path.join(out_dir, f"{name}.dcd")
    truth_path = os.path.join(out_dir, f"{name}_truth.npz")
    u = mda.Universe.empty(n_mobile + n_fw, trajectory=True)
    for attr, vals in (("names", names), ("elements", names), ("types", names),
                       ("resnames", ["ION"]), ("resids", [1])):
        u.add_TopologyAttr(attr, vals)
    u.dimensions = [L, L, L, 90, 90, 90]
    u.atoms.positions = np.vstack([grid[start_sites] * a + a / 2, fsites]).astype(np.float32)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u.atoms.write(top)

    coef = float(np.exp(-1.0 / tau_frames))
    vib = rng.normal(0, sigma_A, (n_mobile, 3))
    vib_f = rng.normal(0, sigma_A, (n_fw, 3))
    busy_until = np.full(n_mobile, -1)  # last frame of the hop in progress
    pending: dict[int, tuple[int, int, np.ndarray, np.ndarray]] = {}
    events: list[tuple[int, int, int, int, int, int, int, int, int]] = []
    # (ion, start, end, from xyz cell, to xyz cell): start = last frame at origin, end = first at destination
    w = mda.Writer(traj, n_mobile + n_fw, dt=dt_ps)
    try:
        for t0 in range(0, n_frames, block):
            nb = min(block, n_frames - t0)
            base = np.empty((nb, n_mobile, 3))
            base[:] = cell * a + a / 2
            for i, (t_s, hl, p0, p1) in list(pending.items()):  # hops that started in the previous block
                for t in range(t0, min(t0 + nb, t_s + hl)):
                    base[t - t0, i] = p0 + ((t - t_s) / hl) * (p1 - p0)
                if t_s + hl <= t0 + nb:
                    del pending[i]
            tries = np.argwhere(rng.random((nb, n_mobile)) < hop_prob)
            dirs = rng.integers(0, 6, len(tries))
            lens = rng.integers(2, 5, len(tries))
            for (tt, i), d, hl in zip(tries, dirs, lens):
                t = t0 + int(tt)
                if t <= busy_until[i] or t - max(busy_until[i], -1) < min_rest or t + hl >= n_frames:
                    continue
                here = cell[i] % n_cells
                here_idx = (here[0] * n_cells + here[1]) * n_cells + here[2]
                nxt = (here + _DIRS[d]) % n_cells
                nxt_idx = (nxt[0] * n_cells + nxt[1]) * n_cells + nxt[2]
                if occ[nxt_idx] >= 0:
                    continue
                occ[here_idx], occ[nxt_idx] = -1, i
                frm, to = cell[i].copy(), cell[i] + _DIRS[d]
                cell[i] = to
                end = t + int(hl)
                busy_until[i] = end
                events.append((int(i), t, end, *frm.tolist(), *to.tolist()))
                p0, p1 = frm * a + a / 2, to * a + a / 2
                s = t - t0
                k = np.arange(1, hl)
                seg = p0 + (k / hl)[:, None] * (p1 - p0)
                e_in = min(nb, s + hl)
                if s + 1 < e_in:
                    base[s + 1 : e_in, i] = seg[: e_in - s - 1]
                if e_in < nb:
                    base[e_in:, i] = p1
                if s + hl > nb:  # the hop crosses into the next block: finish it there
                    pending[int(i)] = (t, int(hl), p0, p1)
            x = base + _ou_block(rng, vib, nb, coef, sigma_A)
            xf = fsites[None] + _ou_block(rng, vib_f, nb, coef, sigma_A)
            allx = np.concatenate([x, xf], axis=1)
            allx = np.mod(allx, L).astype(np.float32)
            for f in range(nb):
                u.atoms.positions = allx[f]
                u.dimensions = [L, L, L, 90, 90, 90]
                w.write(u.atoms)
            logger.info("lattice walk: %d / %d frames, %d hops", t0 + nb, n_frames, len(events))
    finally:
        w.close()
    ev = np.array(events, dtype=np.int64).reshape(-1, 9)
    np.savez(truth_path, ion=ev[:, 0], start_frame=ev[:, 1], end_frame=ev[:, 2], from_cell=ev[:, 3:6],
             to_cell=ev[:, 6:9], a_A=a, box_A=L, dt_ps=dt_ps, n_frames=n_frames)
    return LatticeWalk(traj, top, truth_path, n_frames, n_mobile, n_fw, len(ev), dt_ps, a, L)


def truth_of(walk: LatticeWalk | str) -> dict[str, Any]:
    """The ground truth of a walk (arrays of the ``.npz``)."""
    path = walk.truth if isinstance(walk, LatticeWalk) else walk
    with np.load(path) as z:
        return {k: z[k] for k in z.files}
