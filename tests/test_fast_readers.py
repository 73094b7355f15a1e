"""The block-parsing LAMMPS dump reader gives exactly MDAnalysis's frames (positions, boxes, times)."""

import warnings

import MDAnalysis as mda
import numpy as np
import pytest

from iondiff_stream.core.errors import TrajectoryFormatError
from iondiff_stream.io import collect_positions, load_universe
from iondiff_stream.io.lammps_dump import DumpBlockReader, FastDumpReader
from iondiff_stream.synthetic.runs import make_run


@pytest.fixture(scope="module")
def synth():
    return make_run(n_frames=150, n_cells=3, n_vacancies=3, hop_prob=0.02, n_chains=0, framework=True, seed=2)


def _frames(u):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pos = np.array([ts.positions.copy() for ts in u.trajectory])
        dims = np.array([ts.dimensions.copy() for ts in u.trajectory])
        times = np.array([ts.time for ts in u.trajectory])
        steps = np.array([ts.data["step"] for ts in u.trajectory])
    return pos, dims, times, steps


def _both(dump, data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = mda.Universe(data, dump, format="LAMMPSDUMP", topology_format="DATA", atom_style="id type x y z", **kw)
        new = mda.Universe(data, dump, format=FastDumpReader, topology_format="DATA", atom_style="id type x y z", **kw)
    return _frames(ref), _frames(new)


@pytest.mark.parametrize("parser", ["numpy", "pandas"])
@pytest.mark.parametrize("columns", ["x y z", "xs ys zs", "xu yu zu"])
def test_same_frames_as_mdanalysis(tmp_path, synth, columns, parser, monkeypatch):
    import iondiff_stream.io.lammps_dump as ld

    monkeypatch.setattr(ld, "_PANDAS_MIN_VALUES", 0 if parser == "pandas" else 10**12)
    if parser == "numpy":
        monkeypatch.delitem(__import__("sys").modules, "pandas", raising=False)
    dump, data = str(tmp_path / "run.dump"), str(tmp_path / "run.data")
    synth.write_lammps(dump, data, columns=columns, every_step=10)
    ref, new = _both(dump, data, dt=0.005)
    assert ref[0].shape == (150, synth.n_ions + 27, 3)
    for a, b in zip(ref, new):
        assert a.dtype == b.dtype and np.array_equal(a, b)  # bit for bit
    assert new[2][1] == pytest.approx(0.05)


def test_triclinic_and_random_access(tmp_path):
    rng = np.random.default_rng(1)
    n, nf = 7, 40
    lines = []
    for f in range(nf):
        xy, xz, yz = rng.uniform(-1.5, 1.5, 3)
        lo = rng.uniform(-0.5, 0.5, 3)
        L = np.array([9.0, 10.0, 11.0]) + rng.uniform(-0.1, 0.1, 3)
        xlo_b = lo[0] + min(0.0, xy, xz, xy + xz)
        xhi_b = lo[0] + L[0] + max(0.0, xy, xz, xy + xz)
        ylo_b = lo[1] + min(0.0, yz)
        yhi_b = lo[1] + L[1] + max(0.0, yz)
        lines += ["ITEM: TIMESTEP", str(5 * f), "ITEM: NUMBER OF ATOMS", str(n), "ITEM: BOX BOUNDS xy xz yz pp pp pp",
                  f"{xlo_b:.8g} {xhi_b:.8g} {xy:.8g}", f"{ylo_b:.8g} {yhi_b:.8g} {xz:.8g}",
                  f"{lo[2]:.8g} {lo[2] + L[2]:.8g} {yz:.8g}", "ITEM: ATOMS id type xs ys zs vx"]
        for i in rng.permutation(n):
            x = rng.uniform(0, 1, 3)
            lines.append(f"{i + 1} 1 {x[0]:.7g} {x[1]:.7g} {x[2]:.7g} {rng.normal():.4g}")
    dump = tmp_path / "tri.lammpstrj"
    dump.write_text("\n".join(lines) + "\n")
    data = tmp_path / "tri.data"
    data.write_text("t\n\n7 atoms\n1 atom types\n\n0 9 xlo xhi\n0 10 ylo yhi\n0 11 zlo zhi\n1 2 3 xy xz yz\n\n"
                    "Masses\n\n1 6.94\n\nAtoms # atomic\n\n" + "".join(f"{i + 1} 1 0 0 0\n" for i in range(n)))
    ref, new = _both(str(dump), str(data))
    for a, b in zip(ref, new):
        assert np.array_equal(a, b)
    assert np.ptp(ref[1][:, 3:]) > 1.0  # the cell angles change from frame to frame
    r = FastDumpReader(str(dump))
    blk = r.read_block(13, 17)
    assert np.array_equal(blk["positions"], ref[0][13:17]) and list(blk["step"]) == [65, 70, 75, 80]
    assert np.array_equal(r[21].positions, ref[0][21])


@pytest.mark.parametrize("parser", ["numpy", "pandas"])
def test_truncated_and_malformed(tmp_path, synth, parser, monkeypatch):
    import iondiff_stream.io.lammps_dump as ld

    monkeypatch.setattr(ld, "_PANDAS_MIN_VALUES", 0 if parser == "pandas" else 10**12)
    if parser == "numpy":
        monkeypatch.delitem(__import__("sys").modules, "pandas", raising=False)
    dump, data = str(tmp_path / "run.dump"), str(tmp_path / "run.data")
    synth.write_lammps(dump, data)
    text = open(dump).read().splitlines()
    cut = tmp_path / "cut.dump"
    cut.write_text("\n".join(text[:-5]) + "\n")
    with pytest.raises(TrajectoryFormatError, match="last frame is incomplete"):
        DumpBlockReader(str(cut))
    assert DumpBlockReader(str(cut), allow_truncated=True).n_frames == 149
    u = load_universe(str(cut), topology=data, allow_truncated=True)
    assert type(u.trajectory).__name__ == "FastDumpReader" and u.trajectory.n_frames == 149
    i = text.index("ITEM: ATOMS id type x y z", 500)
    bad = list(text)
    bad[i + 2] = bad[i + 2].replace(" ", " abc ", 1)
    p = tmp_path / "bad.dump"
    p.write_text("\n".join(bad) + "\n")
    with pytest.raises(TrajectoryFormatError, match="not all numbers"):
        DumpBlockReader(str(p)).read(0, 150)


def test_collect_positions_same_with_either_reader(tmp_path, synth):
    dump, data = str(tmp_path / "run.dump"), str(tmp_path / "run.data")
    synth.write_lammps(dump, data, columns="x y z")
    fast = collect_positions(load_universe(dump, topology=data), "Li", md_timestep_ps=0.002)
    slow = collect_positions(load_universe(dump, topology=data, format="LAMMPSDUMP"), "Li", md_timestep_ps=0.002)
    assert np.array_equal(fast.positions, slow.positions)
    assert np.array_equal(fast.times_ps, slow.times_ps)
