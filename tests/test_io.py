"""Readers on the real data in ../shared/data and on LAMMPS dumps with known positions."""

import gzip
import warnings

import MDAnalysis as mda
import numpy as np
import pytest
from MDAnalysis.lib.mdamath import triclinic_vectors

from conftest import shared
from iondiff_stream.core.errors import (
    InvalidCoordinatesError,
    SelectionError,
    TimestepError,
    TrajectoryFileNotFoundError,
    TrajectoryFormatError,
)
from iondiff_stream.io import collect_positions, load_universe, select_mobile
from iondiff_stream.synthetic.runs import make_run


def test_xdatcar_gz_matches_ase(argyrodite_50p):
    import ase.io

    u = load_universe(argyrodite_50p[0])
    assert u.trajectory.n_frames == 140 and len(u.atoms) == 416
    assert len(select_mobile(u, "Li")) == 192
    ref = ase.io.read(argyrodite_50p[0], index="-1", format="vasp-xdatcar")
    u.trajectory[-1]
    h = triclinic_vectors(u.dimensions).astype(float)
    frac = np.linalg.solve(h.T, u.atoms.positions.astype(float).T).T
    d = frac - ref.get_scaled_positions(wrap=False)
    assert np.max(np.abs(d - np.rint(d))) < 2e-6
    assert u.dimensions[:3] == pytest.approx([20.3123, 20.3123, 20.3124], abs=1e-3)
    assert list(u.atoms.elements[:1]) == ["Li"]
    # masses from the element (mixed-case symbols included), the same as ASE's table
    assert np.allclose(u.atoms.masses, ref.get_masses())


def test_restarts_concatenate(argyrodite_50p):
    u = load_universe(argyrodite_50p)
    assert u.trajectory.n_frames == 700
    data = collect_positions(u, "Li", timestep_ps=0.1)
    steps = np.abs(np.diff(data.ion_major(), axis=1))
    assert steps.max() < 3.0  # continuous across the run boundaries (no wrap jumps)
    assert data.times_ps[-1] == pytest.approx(69.9)


def test_xdatcar_needs_timestep(argyrodite_50p):
    u = load_universe(argyrodite_50p[0])
    with pytest.raises(TimestepError, match="timestep_ps"):
        collect_positions(u, "Li")


def test_truncated_xdatcar(tmp_path, argyrodite_50p):
    with gzip.open(argyrodite_50p[0], "rt") as fh:
        lines = fh.read().splitlines()
    cut = tmp_path / "XDATCAR"
    cut.write_text("\n".join(lines[: 7 + 3 * 417 + 100]) + "\n")
    with pytest.raises(TrajectoryFormatError, match=r"frame 3 .*incomplete.*3 frames before it are complete"):
        load_universe(str(cut))
    u = load_universe(str(cut), allow_truncated=True)
    assert u.trajectory.n_frames == 3


@pytest.mark.parametrize("fmt, lo", [("%.8f %.8f %.8f", 0.0), ("  %11.8f  %11.8f  %11.8f", -9.9),
                                     ("%12.6f%12.6f%12.6f", -99.9), ("%11.8f %11.8f %11.8f  ", -9.9),
                                     ("%8.3f %8.3f %8.3f", -99.9), ("%.8e %.8e %.8e", 0.0),
                                     ("%.8f\t%.8f\t%.8f", 0.0), ("%g %g %g", 0.0)])
def test_fixed_column_parser_is_strtod_bit_for_bit(fmt, lo):
    """Aligned fixed-point columns parse to exactly numpy.fromstring's doubles; other layouts are refused."""
    from iondiff_stream.io.readers import parse_fixed_columns

    rng = np.random.default_rng(0)
    x = rng.uniform(lo, 1.0, (3000, 3))  # lo < 0: widths with room for a sign
    x[:3] = [[0.0, -0.0, 0.5], [0.999999999, 5e-9, -5e-9], [1e-8, 0.25, 0.75]]
    if lo == 0.0:
        x[:3] = np.abs(x[:3])  # "%.8f" of a negative is one character wider: ragged lines are refused
    text = "\n".join(fmt % tuple(r) for r in x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ref = np.fromstring(text, dtype=np.float64, sep=" ").reshape(-1, 3)
    got = parse_fixed_columns(text.encode("ascii"), 3)
    if "e" in fmt or "g" in fmt or "\t" in fmt:
        assert got is None
        return
    assert got is not None
    assert np.array_equal(got.view(np.int64), ref.view(np.int64))  # same bits (signed zeros included)


@pytest.mark.parametrize("text", [b"0.1 0.2 0.3\n0.1 0.2", b"0.1 0.2 0.3\n0.1 -.2 0.4", b"0.1 0.2 0.3\n0-1 0.2 0.4",
                                  b"1.5 2.5 3.5\n1-5 2.5 3.5", b"12.5 2.5 3.5\n 1 .5 2.5 3.5",
                                  b"1.5 2.5 3.5\n1.5 2.5 3.x", b"1.5 2.5 3.5\n1.5 2.5 3.5 4",
                                  b"--1.5 2.5 3.5\n -1.5 2.5 3.5", b"0.1 0.2\n0.3 0.4"])
def test_fixed_column_parser_refuses_what_it_cannot_read_exactly(text):
    from iondiff_stream.io.readers import parse_fixed_columns

    assert parse_fixed_columns(text, 3) is None


def test_extxyz_lgps_time_from_file():
    u = load_universe(shared("LGPS_600K_pmg_diffusion", "derived_LGPS_600K_unwrapped.extxyz"))
    data = collect_positions(u, "Li")
    assert data.ion_major().shape == (20, 1000, 3)
    assert data.timestep_ps == pytest.approx(0.02)
    assert data.volume_A3 == pytest.approx(8.729014**2 * 12.735865 - 0.018257**2 * 12.735865, rel=1e-5)


def test_extxyz_wrapped_na3ps4_unwraps():
    u = load_universe(shared("Na3PS4_cubic_800K_pmg_diffusion", "derived_cNa3PS4_trajectories_wrapped.extxyz"))
    data = collect_positions(u, "Na", timestep_ps=0.02, remove_drift=False)
    assert data.ion_major().shape == (48, 200, 3)
    jumps = np.linalg.norm(np.diff(data.ion_major(), axis=1), axis=2)
    assert jumps.max() < 2.0
    # unwrapped positions wrap back onto the file's coordinates
    h = triclinic_vectors(data.box).astype(float)
    u.trajectory[-1]
    f_ours = np.linalg.solve(h.T, data.ion_major()[:, -1].T).T
    f_file = np.linalg.solve(h.T, select_mobile(u, "Na").positions.astype(float).T).T
    d = f_ours - f_file
    assert np.max(np.abs(d - np.rint(d))) < 1e-5
    assert np.abs(np.rint(d)).max() >= 1  # some ions did cross the boundary


def test_lammps_data_xyz_li3incl6():
    d = "Li3InCl6_gemdat_lammps_tiny"
    u = load_universe(shared(d, "lammps_coords.xyz"), topology=shared(d, "lammps_data.txt"))
    assert u.trajectory.n_frames == 4
    data = collect_positions(u, "Li", timestep_ps=2.0)
    assert data.ion_major().shape == (24, 4, 3)
    assert data.box[4] == pytest.approx(109.81, abs=0.01)  # triclinic box from the data file
    assert set(data.species) == {"Li"}


@pytest.fixture(scope="module")
def synth():
    return make_run(n_frames=120, n_cells=3, n_vacancies=4, hop_prob=0.02, n_chains=0, framework=True,
                    drift_A_per_ps=2.0, seed=4)


@pytest.mark.parametrize("columns", ["x y z", "xu yu zu", "xs ys zs", "x y z ix iy iz"])
def test_lammps_dump_conventions(tmp_path, synth, columns):
    dump, data = str(tmp_path / "run.dump"), str(tmp_path / "run.data")
    synth.write_lammps(dump, data, columns=columns, every_step=10)
    u = load_universe(dump, topology=data)
    td = collect_positions(u, "Li", md_timestep_ps=0.005, remove_drift=False)
    assert td.timestep_ps == pytest.approx(0.05)
    shift = td.ion_major()[:, :1] - synth.positions[:, :1]  # same up to the image of frame 0
    assert np.allclose(td.ion_major() - shift, synth.positions, atol=2e-5)
    assert np.allclose(shift, np.rint(shift / synth.box[0]) * synth.box[0], atol=2e-5)


def test_drift_removal(synth):
    u = synth.to_universe(wrapped=True)
    td = collect_positions(u, "Li", remove_drift=True)
    truth = synth.positions - synth.drift[None]
    d = td.ion_major() - td.ion_major()[:, :1] - (truth - truth[:, :1])
    assert np.abs(d).max() < 0.05  # framework noise averages out
    assert np.abs(synth.drift[-1]).max() > 5.0


def test_triclinic_unwrap():
    rng = np.random.default_rng(0)
    box = np.array([10.0, 11.0, 12.0, 80.0, 100.0, 110.0])
    h = triclinic_vectors(box).astype(float)
    steps = rng.normal(0, 0.4, (300, 5, 3))
    truth = 5 + np.cumsum(steps, axis=0)
    frac = np.linalg.solve(h.T, truth.reshape(-1, 3).T).T
    wrapped = ((frac - np.floor(frac)) @ h).reshape(truth.shape)
    u = mda.Universe.empty(5, trajectory=True)
    u.add_TopologyAttr("elements", ["Li"] * 5)
    from MDAnalysis.coordinates.memory import MemoryReader

    u.load_new(wrapped.astype(np.float32), format=MemoryReader, dimensions=box.astype(np.float32), dt=0.1)
    td = collect_positions(u, "Li")
    got = td.positions  # (T, n, 3)
    off = got[0] - truth[0]
    assert np.allclose(got - off, truth, atol=1e-4)


def test_bad_inputs(tmp_path, argyrodite_50p, synth):
    with pytest.raises(TrajectoryFileNotFoundError, match="not found"):
        load_universe(str(tmp_path / "nope.dump"))
    u = load_universe(argyrodite_50p[0])
    with pytest.raises(SelectionError, match=r"matched no atoms.*Cl, Li, P, S"):
        select_mobile(u, "Na")
    with pytest.raises(SelectionError, match="invalid selection"):
        select_mobile(u, "resname (((")
    dump, data = str(tmp_path / "run.dump"), str(tmp_path / "run.data")
    synth.write_lammps(dump, data)
    with pytest.raises(TrajectoryFormatError, match="data file"):
        load_universe(dump)
    text = open(dump).read().splitlines()
    i = text.index("ITEM: ATOMS id type x y z", 1000)
    text[i + 3] = " ".join(text[i + 3].split()[:2] + ["nan", "1.0", "2.0"])
    bad = tmp_path / "nan.dump"
    bad.write_text("\n".join(text) + "\n")
    u = load_universe(str(bad), topology=data)
    with pytest.raises(InvalidCoordinatesError, match="NaN"):
        collect_positions(u, "type 1 or type 2", timestep_ps=0.05)
    cut = tmp_path / "cut.dump"
    cut.write_text("\n".join(open(dump).read().splitlines()[:-10]) + "\n")
    n = synth.n_ions + synth.framework.shape[0]
    with pytest.raises(TrajectoryFormatError, match=rf"last frame is incomplete: {n - 10} of {n} atom lines.*allow_truncated"):
        load_universe(str(cut), topology=data)
    u = load_universe(str(cut), topology=data, allow_truncated=True)
    assert u.trajectory.n_frames == 119


@pytest.mark.parametrize("ext", ["dcd", "xtc", "h5md"])
def test_binary_formats_with_time_in_file(tmp_path, synth, ext):
    u0 = synth.to_universe(wrapped=True)
    path = str(tmp_path / f"run.{ext}")
    top = str(tmp_path / "top.pdb")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u0.atoms.write(top)
        u0.trajectory.units = {"time": "ps", "length": "Angstrom"}
        kw = {"dt": 0.05} if ext == "dcd" else {}
        with mda.Writer(path, len(u0.atoms), **kw) as w:
            for ts in u0.trajectory:
                w.write(u0.atoms)
    u = load_universe(path, topology=top)
    td = collect_positions(u, "Li", remove_drift=False)
    assert td.timestep_ps == pytest.approx(0.05, rel=1e-4)
    off = td.ion_major()[:, :1] - synth.positions[:, :1]
    tol = 1.1e-2 if ext == "xtc" else 1e-4  # xtc keeps 0.01 Å (3 decimals in nm), twice: frame and offset
    assert np.allclose(td.ion_major() - off, synth.positions, atol=tol)
