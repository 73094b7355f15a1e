"""The formats table (issue 18): one row per format; ASE's .traj added as one row plus its reader."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared
from iondiff_stream.core.errors import TrajectoryFormatError
from iondiff_stream.io import FORMATS, guess_format, load_universe
from iondiff_stream.io.formats import format_named, format_of_reader, times_in_file

LGPS = ("LGPS_600K_pmg_diffusion", "derived_LGPS_600K_unwrapped.extxyz")


def test_table_rows_and_names(tmp_path):
    names = [f.name for f in FORMATS]
    assert len(names) == len(set(names))
    assert guess_format("run.traj") == "ASETRAJ"
    assert guess_format("a/b/XDATCAR.gz") == "XDATCAR"
    assert guess_format("dump.run.gz") == "LAMMPSDUMP"
    assert guess_format("x.lammpstrj") == "LAMMPSDUMP"
    assert guess_format("run.extxyz") == "EXTXYZ"
    assert guess_format("data.caf2") == "DATA"
    assert guess_format("traj.dcd") is None  # MDAnalysis knows these by suffix itself
    store = tmp_path / "frames"
    store.mkdir()
    (store / "zarr.json").write_text("{}")
    assert guess_format(str(store)) == "IONDIFFZARR"
    assert format_named("IONDIFFDUMP").name == "LAMMPSDUMP"  # our fast reader is a LAMMPS dump reader
    assert format_named("DCD").has_times and not format_named("LAMMPSDUMP").has_times


def test_ase_traj_reads_as_the_extxyz_it_was_written_from(tmp_path):
    """The same LGPS AIMD run as extxyz and as ASE .traj: same frames, times and hops, number for number."""
    import ase.io

    from iondiff_stream import analyze_run

    src = shared(*LGPS)
    frames = ase.io.read(src, index=":")
    traj = str(tmp_path / "lgps.traj")
    ase.io.write(traj, frames)
    u = load_universe(traj)
    assert type(u.trajectory).__name__ == "ASETrajReader" and format_of_reader(u.trajectory).name == "ASETRAJ"
    assert times_in_file(u.trajectory) and u.trajectory.dt == pytest.approx(0.02)  # time_fs in info
    assert list(u.atoms.elements[:1]) == [frames[0].get_chemical_symbols()[0]]
    a = analyze_run(src, mobile="Li", temperature_K=600.0)
    b = analyze_run(traj, mobile="Li", temperature_K=600.0)
    assert a.data.n_frames == b.data.n_frames == len(frames)
    np.testing.assert_array_equal(a.data.positions, b.data.positions)
    assert a.summary["n_hops"] == b.summary["n_hops"] > 0
    for col, vals in a.hops.hops.columns.items():
        np.testing.assert_array_equal(vals, b.hops.hops.columns[col], err_msg=col)
    assert a.summary["D_tracer_cm2_s"] == b.summary["D_tracer_cm2_s"]


def test_ase_velocities_in_the_cell_orientation(tmp_path):
    """Velocities from momenta (extxyz and .traj), Å/ps, rotated with the positions into MDAnalysis's cell
    orientation: fractional velocities and speeds are unchanged."""
    import ase
    import ase.io
    import ase.units

    from iondiff_stream.analysis.descriptors import read_all_atoms

    rng = np.random.default_rng(3)
    cell = np.array([[7.0, 0.4, 0.3], [0.5, 8.0, 0.2], [0.1, 0.6, 9.0]])  # not in MDAnalysis's orientation
    v_A_fs = rng.normal(0, 0.01, (5, 6, 3))
    frames = []
    for k in range(5):
        at = ase.Atoms("Li4O2", scaled_positions=rng.random((6, 3)), cell=cell, pbc=True)
        at.set_velocities(v_A_fs[k] / ase.units.fs)
        at.info["time_fs"] = 2.0 * k
        frames.append(at)
    for name in ("v.extxyz", "v.traj"):
        p = str(tmp_path / name)
        ase.io.write(p, frames)
        tr = read_all_atoms(p)
        assert tr.velocities is not None and tr.velocities.shape == (6, 5, 3)
        v = tr.velocities.transpose(1, 0, 2)  # (frames, atoms, 3), Å/ps
        np.testing.assert_allclose(np.linalg.norm(v, axis=2), 1000 * np.linalg.norm(v_A_fs, axis=2), rtol=1e-5)
        u = load_universe(p)
        m = u.trajectory.ts.triclinic_dimensions
        np.testing.assert_allclose(v @ np.linalg.inv(m), 1000 * v_A_fs @ np.linalg.inv(cell), rtol=1e-4, atol=1e-6)
        assert tr.timestep_ps == pytest.approx(0.002)


def test_bad_traj_names_the_file(tmp_path):
    p = tmp_path / "broken.traj"
    p.write_bytes(b"this is not an ASE trajectory\n" * 10)
    with pytest.raises(TrajectoryFormatError, match="broken.traj"):
        load_universe(str(p))
