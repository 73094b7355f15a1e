"""Synthetic trajectories with known hops (ground truth for tests and benchmarks).

Mobile ions live on a simple-cubic lattice of sites (spacing ``a`` Å, periodic
box) with vacancies. Every ion vibrates around its site with correlated thermal
noise (an AR(1)/Ornstein-Uhlenbeck process of amplitude ``sigma_A`` per axis
and correlation time ``tau_frames``). Events, all recorded:

* single hops to an empty neighbour site, moving along the straight path in
  ``hop_frames`` frames; ``start_frame`` is the last frame at the origin and
  ``end_frame`` the first frame at the destination (the product's convention);
* back-hops: a hop straight back after a short residence;
* failed attempts: excursions part of the way to a neighbour and back (not hops);
* concerted chains: n ions in a row behind a vacancy move one site each, all
  starting in the same frame (ground-truth groups of concerted ions).

Optionally a rigid framework (a second lattice of atoms) that drifts as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["SyntheticRun", "make_run", "make_lattice_walk", "match_hops", "same_hops"]


@dataclass
class SyntheticRun:
    """A synthetic trajectory and its ground truth.

    Attributes
    ----------
    positions : ndarray, shape (n_ions, T, 3)
        Unwrapped mobile-ion positions, Å (drift included if any).
    times_ps : ndarray, shape (T,)
    box : ndarray, shape (6,)
    sites : ndarray, shape (n_sites, 3)
        Lattice sites in the box, Å.
    events : list of dict
        Ground-truth hops: ``ion, start_frame, end_frame, from_pos, to_pos,
        group`` (index of the concerted chain or -1), ``back_hop``.
    framework : ndarray, shape (n_framework, T, 3) or None
        Unwrapped framework positions, Å.
    drift : ndarray, shape (T, 3)
        Rigid drift added to every atom, Å.
    """

    positions: np.ndarray
    times_ps: np.ndarray
    box: np.ndarray
    sites: np.ndarray
    events: list[dict[str, Any]]
    framework: np.ndarray | None = None
    drift: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    n_failed_attempts: int = 0

    @property
    def n_ions(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_frames(self) -> int:
        return int(self.positions.shape[1])

    def groups(self) -> list[list[int]]:
        """Event indices of every concerted chain."""
        out: dict[int, list[int]] = {}
        for i, e in enumerate(self.events):
            if e["group"] >= 0:
                out.setdefault(e["group"], []).append(i)
        return [out[k] for k in sorted(out)]

    def all_positions(self, wrapped: bool = False) -> tuple[np.ndarray, list[str]]:
        """Positions of all atoms, shape (T, n_atoms, 3), and element names (mobile 'Li', framework 'S')."""
        parts = [self.positions]
        names = ["Li"] * self.n_ions
        if self.framework is not None:
            parts.append(self.framework)
            names += ["S"] * self.framework.shape[0]
        x = np.concatenate(parts, axis=0).transpose(1, 0, 2).copy()
        if wrapped:
            x = np.mod(x, self.box[:3])
        return x, names

    def to_universe(self, wrapped: bool = True) -> Any:
        """An MDAnalysis Universe (in memory) of the run, mobile ions named ``Li``."""
        import MDAnalysis as mda

        x, names = self.all_positions(wrapped)
        u = mda.Universe.empty(len(names), trajectory=True)
        u.add_TopologyAttr("names", names)
        u.add_TopologyAttr("elements", names)
        u.add_TopologyAttr("types", names)
        u.add_TopologyAttr("masses", [6.94 if n == "Li" else 32.06 for n in names])
        from MDAnalysis.coordinates.memory import MemoryReader

        dt = float(self.times_ps[1] - self.times_ps[0])
        u.load_new(x.astype(np.float32), format=MemoryReader, dimensions=self.box.astype(np.float32), dt=dt)
        return u

    def write_lammps(self, dump_path: str, data_path: str, columns: str = "x y z", every_step: int = 10) -> None:
        """Write a LAMMPS text dump and a data file (atom_style atomic, units metal).

        Parameters
        ----------
        columns : {"x y z", "xu yu zu", "xs ys zs", "x y z ix iy iz"}
            Coordinate convention of the dump.
        every_step : int
            MD steps between frames written in ``ITEM: TIMESTEP``.
        """
        x, names = self.all_positions(wrapped=False)
        L = self.box[:3]
        types = [1 if n == "Li" else 2 for n in names]
        n = len(names)
        with open(data_path, "w") as fh:
            fh.write("synthetic iondiff_stream run, units metal\n\n")
            fh.write(f"{n} atoms\n2 atom types\n\n")
            for ax, lab in zip(L, "xyz"):
                fh.write(f"0.0 {ax:.6f} {lab}lo {lab}hi\n")
            fh.write("\nMasses\n\n1 6.94\n2 32.06\n\nAtoms # atomic\n\n")
            for i in range(n):
                p = np.mod(x[0, i], L)
                fh.write(f"{i + 1} {types[i]} {p[0]:.6f} {p[1]:.6f} {p[2]:.6f}\n")
        with open(dump_path, "w") as fh:
            for t in range(x.shape[0]):
                fh.write(f"ITEM: TIMESTEP\n{t * every_step}\nITEM: NUMBER OF ATOMS\n{n}\n")
                fh.write("ITEM: BOX BOUNDS pp pp pp\n")
                for ax in L:
                    fh.write(f"0.0 {ax:.6f}\n")
                fh.write(f"ITEM: ATOMS id type {columns}\n")
                xt = x[t]
                img = np.floor(xt / L)
                wrapped = xt - img * L
                if columns == "xu yu zu":
                    cols = xt
                elif columns == "xs ys zs":
                    cols = wrapped / L
                elif columns == "x y z ix iy iz":
                    cols = np.concatenate([wrapped, img], axis=1)
                else:
                    cols = wrapped
                order = np.random.default_rng(t).permutation(n)  # LAMMPS reorders atoms
                for i in order:
                    vals = " ".join(
                        f"{int(v)}" if j >= 3 else f"{v:.6f}" for j, v in enumerate(cols[i])
                    )
                    fh.write(f"{i + 1} {types[i]} {vals}\n")


def make_run(
    n_frames: int = 3000,
    n_cells: int = 4,
    a: float = 2.5,
    n_vacancies: int = 8,
    sigma_A: float = 0.15,
    tau_frames: float = 3.0,
    hop_frames: tuple[int, int] = (2, 4),
    hop_prob: float = 2e-3,
    back_hop_prob: float = 0.3,
    fail_prob: float = 1e-3,
    n_chains: int = 4,
    chain_sizes: tuple[int, int] = (2, 4),
    min_rest: int = 25,
    dt_ps: float = 0.05,
    framework: bool = False,
    drift_A_per_ps: float = 0.0,
    active_fraction: float = 1.0,
    seed: int = 0,
) -> SyntheticRun:
    """Make a synthetic run with known hops (see module docstring).

    Parameters
    ----------
    n_frames : int
    n_cells : int
        Sites per box edge; ``n_cells**3`` sites.
    a : float
        Site spacing = hop length, Å.
    n_vacancies : int
        Empty sites; ``n_cells**3 - n_vacancies`` ions.
    sigma_A : float
        Vibration amplitude per axis, Å.
    tau_frames : float
        Correlation time of the vibration, frames.
    hop_frames : (int, int)
        Range (inclusive) of frames a hop takes from last-at-origin to first-at-destination.
    hop_prob, fail_prob : float
        Per-frame probability that a resting ion tries a hop / a failed attempt.
    back_hop_prob : float
        Probability that a hop is followed by a hop straight back.
    n_chains : int
        Concerted chains attempted (spread over the run).
    chain_sizes : (int, int)
        Range of the number of ions in a chain.
    min_rest : int
        Minimum frames at a site between two events of one ion.
    dt_ps : float
        Time between frames, ps.
    framework : bool
        Add a framework lattice (offset by a/2) of vibrating ``S`` atoms.
    drift_A_per_ps : float
        Rigid drift speed of the whole system along (1, 1, 1)/√3, Å/ps.
    active_fraction : float
        Fraction of ions allowed to hop (the rest only vibrate).
    seed : int
    """
    rng = np.random.default_rng(seed)
    L = n_cells * a
    grid = np.stack(np.meshgrid(*[np.arange(n_cells)] * 3, indexing="ij"), -1).reshape(-1, 3)
    sites = grid * a + a / 2
    n_sites = len(sites)
    n_ions = n_sites - n_vacancies
    if n_ions < 1:
        raise ValueError("no ions: n_vacancies >= number of sites")
    occ = -np.ones(n_sites, dtype=int)
    start_sites = rng.permutation(n_sites)[:n_ions]
    occ[start_sites] = np.arange(n_ions)
    site_of = start_sites.copy()
    image = np.zeros((n_ions, 3))  # unwrapped = sites[site] + image
    active = rng.random(n_ions) < active_fraction
    T = n_frames
    base = np.empty((n_ions, T, 3))
    busy_until = np.full(n_ions, min_rest)  # frame until which an ion is committed
    events: list[dict[str, Any]] = []
    reserved = np.zeros(n_sites, dtype=bool)
    pending_back: dict[int, tuple[int, int]] = {}  # ion -> (frame to start, target site)
    moves: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}  # ion -> (t0, from, to) moving
    fails: dict[int, tuple[int, np.ndarray, int]] = {}
    n_failed = 0
    dirs = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])
    chain_times = set(np.linspace(T * 0.1, T * 0.9, n_chains).astype(int).tolist()) if n_chains else set()
    group_id = 0
    last_event: dict[int, int] = {}

    def neighbour(s: int, d: np.ndarray) -> tuple[int, np.ndarray]:
        g = grid[s] + d
        wrap = np.floor_divide(g, n_cells)
        return int(np.ravel_multi_index(tuple(np.mod(g, n_cells)), (n_cells,) * 3)), wrap * L

    def start_hop(i: int, t: int, target: int, shift: np.ndarray, h: int, group: int, back: bool) -> None:
        src = sites[site_of[i]] + image[i]
        dst = sites[target] + image[i] + shift
        reserved[target] = True
        moves[i] = (t, src, dst, h, target, shift)  # type: ignore[assignment]
        last_event[i] = len(events)
        events.append(
            {
                "ion": i,
                "start_frame": t - 1,
                "end_frame": t - 1 + h,
                "from_pos": src.copy(),
                "to_pos": dst.copy(),
                "group": group,
                "back_hop": back,
            }
        )

    for t in range(T):
        # concerted chain
        if t in chain_times:
            for _ in range(200):
                v = int(rng.choice(np.flatnonzero((occ < 0) & ~reserved)))
                d = dirs[rng.integers(6)]
                n_chain = int(rng.integers(chain_sizes[0], chain_sizes[1] + 1))
                members, ok, cur = [], True, v
                for _k in range(n_chain):
                    s_prev, _ = neighbour(cur, -d)
                    i = occ[s_prev]
                    if i < 0 or not active[i] or busy_until[i] > t or i in moves or i in fails or reserved[s_prev]:
                        ok = False
                        break
                    members.append((i, cur, s_prev))
                    cur = s_prev
                if ok and members:
                    h = int(rng.integers(hop_frames[0], hop_frames[1] + 1))
                    for i, tgt, _src in members:
                        _, shift = neighbour(site_of[i], d)
                        start_hop(i, t, tgt, shift, h, group_id, False)
                        pending_back.pop(i, None)
                    group_id += 1
                    break
        for i in range(n_ions):
            if i in moves:
                continue
            if i in fails:
                continue
            if busy_until[i] > t or not active[i]:
                continue
            if i in pending_back and pending_back[i][0] <= t:
                _, tgt = pending_back.pop(i)
                if occ[tgt] < 0 and not reserved[tgt]:
                    # find the shift that makes it adjacent
                    for d in dirs:
                        s2, shift = neighbour(site_of[i], d)
                        if s2 == tgt:
                            start_hop(i, t, tgt, shift, int(rng.integers(hop_frames[0], hop_frames[1] + 1)), -1, True)
                            break
                continue
            r = rng.random()
            if r < hop_prob:
                d = dirs[rng.integers(6)]
                tgt, shift = neighbour(site_of[i], d)
                if occ[tgt] < 0 and not reserved[tgt]:
                    start_hop(i, t, tgt, shift, int(rng.integers(hop_frames[0], hop_frames[1] + 1)), -1, False)
            elif r < hop_prob + fail_prob:
                d = dirs[rng.integers(6)].astype(float)
                fails[i] = (t, d * a * rng.uniform(0.2, 0.35), int(rng.integers(2, 4)))
                n_failed += 1
        # positions at frame t
        for i in range(n_ions):
            home = sites[site_of[i]] + image[i]
            if i in moves:
                t0, src, dst, h, tgt, shift = moves[i]  # type: ignore[misc]
                f = (t - (t0 - 1)) / h
                base[i, t] = src + f * (dst - src)
                if t - (t0 - 1) >= h:  # arrived
                    occ[site_of[i]] = -1 if occ[site_of[i]] == i else occ[site_of[i]]
                    old = site_of[i]
                    site_of[i] = tgt
                    image[i] = image[i] + shift
                    occ[tgt] = i
                    reserved[tgt] = False
                    del moves[i]
                    busy_until[i] = t + min_rest
                    ev = events[last_event[i]]
                    if not ev["back_hop"] and ev["group"] < 0 and rng.random() < back_hop_prob:
                        pending_back[i] = (t + min_rest + int(rng.integers(0, min_rest)), old)
            elif i in fails:
                t0, vec, h = fails[i]
                k = t - t0
                frac = k / h if k <= h else max(0.0, 2 - k / h)
                base[i, t] = home + frac * vec
                if k >= 2 * h:
                    del fails[i]
                    busy_until[i] = t + min_rest
            else:
                base[i, t] = home
    # drop events still running at the end; a hop is a back-hop when it returns
    # to where the ion's previous hop started (scheduled or by chance)
    events = [e for e in events if e["end_frame"] <= T - 1]
    last_from: dict[int, np.ndarray] = {}
    for e in sorted(events, key=lambda e: e["start_frame"]):
        prev = last_from.get(e["ion"])
        e["back_hop"] = bool(prev is not None and np.allclose(prev, e["to_pos"]))
        last_from[e["ion"]] = e["from_pos"]
    phi = np.exp(-1.0 / tau_frames)
    noise = np.empty_like(base)
    noise[:, 0] = rng.normal(0, sigma_A, (n_ions, 3))
    kick = rng.normal(0, sigma_A * np.sqrt(1 - phi * phi), (n_ions, T, 3))
    for t in range(1, T):
        noise[:, t] = phi * noise[:, t - 1] + kick[:, t]
    times = np.arange(T) * dt_ps
    drift = (times * drift_A_per_ps)[:, None] * np.ones(3)[None, :] / np.sqrt(3)
    pos = base + noise + drift[None, :, :]
    fw = None
    if framework:
        fw_sites = sites + a / 2
        fw = fw_sites[:, None, :] + rng.normal(0, sigma_A * 0.5, (len(fw_sites), T, 3)) + drift[None, :, :]
    box = np.array([L, L, L, 90.0, 90.0, 90.0])
    return SyntheticRun(pos, times, box, sites, events, fw, drift, n_failed)


def match_hops(
    truth: list[dict[str, Any]], detected: Any, tol_frames: int = 2
) -> dict[str, Any]:
    """Match detected hops to ground truth (same ion, start and end within ``tol_frames``).

    Parameters
    ----------
    truth : list of dict
        :attr:`SyntheticRun.events`.
    detected : HopTable
        Only closed hops are matched.

    Returns
    -------
    dict
        ``tp, fp, fn, precision, recall, f1, max_start_error, max_end_error,
        pairs`` (list of (truth index, detected index)).
    """
    det = detected.closed()
    used = np.zeros(len(det), dtype=bool)
    pairs = []
    start_err, end_err = [], []
    for ti, e in enumerate(truth):
        cand = np.flatnonzero(
            (det["ion"] == e["ion"])
            & (np.abs(det["start_frame"] - e["start_frame"]) <= tol_frames)
            & (np.abs(det["end_frame"] - e["end_frame"]) <= tol_frames)
            & ~used
        )
        if len(cand):
            j = int(cand[np.argmin(np.abs(det["start_frame"][cand] - e["start_frame"]))])
            used[j] = True
            pairs.append((ti, j))
            start_err.append(int(det["start_frame"][j] - e["start_frame"]))
            end_err.append(int(det["end_frame"][j] - e["end_frame"]))
    tp = len(pairs)
    fp = int(len(det) - tp)
    fn = int(len(truth) - tp)
    prec = tp / max(tp + fp, 1)
    rec = tp / max(tp + fn, 1)
    f1 = 2 * prec * rec / max(prec + rec, 1e-12)
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": prec,
        "recall": rec,
        "f1": f1,
        "max_start_error": max(map(abs, start_err), default=0),
        "max_end_error": max(map(abs, end_err), default=0),
        "pairs": pairs,
    }


def make_events(
    n_groups: int = 2000,
    b: float = 0.5,
    max_size: int = 20,
    gap_frames: int = 40,
    duration_frames: tuple[int, int] = (2, 6),
    jitter_frames: int = 0,
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], np.ndarray, int, int]:
    """Hop events only (no trajectory), in isolated groups with sizes ~ exp(-b n).

    Every group's hops start within ``jitter_frames`` of each other and share
    one duration; groups are ``gap_frames`` apart. Every hop is by a different
    ion (ions are reused across groups).

    Returns
    -------
    columns : dict
        ``ion, start_frame, end_frame, open`` and zero positions (a HopTable's columns).
    truth_group : ndarray, shape (n_events,)
    n_frames : int
    n_ions : int
    """
    rng = np.random.default_rng(seed)
    n = np.arange(1, max_size + 1)
    p = np.exp(-b * n)
    p /= p.sum()
    sizes = rng.choice(n, size=n_groups, p=p)
    n_ions = int(max_size * 3)
    rows: dict[str, list[Any]] = {k: [] for k in ("ion", "start_frame", "end_frame")}
    truth = []
    t = gap_frames
    for g, s in enumerate(sizes):
        dur = int(rng.integers(duration_frames[0], duration_frames[1] + 1))
        ions = rng.choice(n_ions, size=s, replace=False)
        for i in ions:
            st = t + (int(rng.integers(0, jitter_frames + 1)) if jitter_frames else 0)
            rows["ion"].append(int(i))
            rows["start_frame"].append(st)
            rows["end_frame"].append(st + dur)
            truth.append(g)
        t += gap_frames + dur + jitter_frames
    m = len(truth)
    cols = {k: np.asarray(v, dtype=np.int64) for k, v in rows.items()}
    cols["open"] = np.zeros(m, dtype=bool)
    for k in ("from_x_A", "from_y_A", "from_z_A", "to_x_A", "to_y_A", "to_z_A"):
        cols[k] = np.zeros(m)
    return cols, np.asarray(truth), int(t + gap_frames), n_ions


def same_hops(a: Any, b: Any, tol_frames: int = 1) -> dict[str, Any]:
    """Hops two analyses of the same run have in common (same atom id, start and end within ``tol_frames``).

    Parameters
    ----------
    a, b : HopTable
        Closed hops are compared.

    Returns
    -------
    dict
        ``n_a, n_b, common`` and ``fraction`` = common / max(n_a, n_b) (1 when both are empty).
    """
    ta, tb = a.closed(), b.closed()
    used = np.zeros(len(tb), dtype=bool)
    by_atom: dict[int, np.ndarray] = {}
    for k, atom in enumerate(tb["atom_id"]):
        by_atom.setdefault(int(atom), []).append(k)  # type: ignore[attr-defined]
    common = 0
    for i in range(len(ta)):
        for k in by_atom.get(int(ta["atom_id"][i]), []):
            if (not used[k] and abs(int(tb["start_frame"][k]) - int(ta["start_frame"][i])) <= tol_frames
                    and abs(int(tb["end_frame"][k]) - int(ta["end_frame"][i])) <= tol_frames):
                used[k] = True
                common += 1
                break
    n = max(len(ta), len(tb))
    return {"n_a": len(ta), "n_b": len(tb), "common": common, "fraction": common / n if n else 1.0}


def make_lattice_walk(
    n_frames: int = 100_000,
    n_ions: int = 40,
    n_cells: int = 5,
    a: float = 2.5,
    sigma_A: float = 0.15,
    tau_frames: float = 3.0,
    mean_rest_frames: float = 120.0,
    min_rest: int = 25,
    hop_frames: tuple[int, int] = (2, 4),
    dt_ps: float = 0.05,
    seed: int = 0,
) -> SyntheticRun:
    """Independent ions walking on a simple-cubic lattice for a long time (every ion visits hundreds of sites).

    Each ion rests at a site for ``min_rest`` + an exponential number of frames (mean
    ``mean_rest_frames``), then hops to a random one of its 6 neighbours along a straight
    line in ``hop_frames`` frames; correlated vibration as in :func:`make_run`. Ions do not
    exclude each other (a dilute walk), so the sites in the periodic box are shared by all.
    Events follow the product's convention (``start_frame`` last at the origin,
    ``end_frame`` first at the destination).
    """
    rng = np.random.default_rng(seed)
    L = n_cells * a
    dirs = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=float) * a
    base = np.empty((n_ions, n_frames, 3))
    events: list[dict[str, Any]] = []
    for i in range(n_ions):
        p = (rng.integers(0, n_cells, 3) + 0.5) * a
        t = 0
        while t < n_frames:
            rest = min_rest + int(rng.exponential(mean_rest_frames - min_rest))
            e = min(n_frames, t + rest)
            base[i, t:e] = p
            t = e
            if t >= n_frames:
                break
            h = int(rng.integers(hop_frames[0], hop_frames[1] + 1))
            q = p + dirs[rng.integers(6)]
            f = np.arange(1, h + 1) / h
            seg = p[None] + f[:, None] * (q - p)[None]
            e = min(n_frames, t + h)
            base[i, t:e] = seg[: e - t]
            if t - 1 + h <= n_frames - 1:
                events.append({"ion": i, "start_frame": t - 1, "end_frame": t - 1 + h, "from_pos": p.copy(),
                               "to_pos": q.copy(), "group": -1, "back_hop": False})
            p = q
            t = e
    last_from: dict[int, np.ndarray] = {}
    for ev in events:
        prev = last_from.get(ev["ion"])
        ev["back_hop"] = bool(prev is not None and np.allclose(prev, ev["to_pos"]))
        last_from[ev["ion"]] = ev["from_pos"]
    phi = np.exp(-1.0 / tau_frames)
    noise = np.empty_like(base)
    noise[:, 0] = rng.normal(0, sigma_A, (n_ions, 3))
    kick = rng.normal(0, sigma_A * np.sqrt(1 - phi * phi), base.shape)
    for t in range(1, n_frames):
        noise[:, t] = phi * noise[:, t - 1] + kick[:, t]
    grid = np.stack(np.meshgrid(*[np.arange(n_cells)] * 3, indexing="ij"), -1).reshape(-1, 3)
    return SyntheticRun(base + noise, np.arange(n_frames) * dt_ps, np.array([L, L, L, 90.0, 90.0, 90.0]),
                        (grid + 0.5) * a, events)
