"""Progress while a compressed trajectory is read: the run's bar advances with the compressed bytes consumed
(decompression of a .gz dump / XDATCAR.gz), before the first frame is parsed."""

import gzip
import shutil

import numpy as np
import pytest

from iondiff_stream.pipeline.run import analyze_run
from iondiff_stream.io import collect_positions, load_universe
from iondiff_stream.io import lammps_dump
from iondiff_stream.io.readers import read_xdatcar
from iondiff_stream.core.progress import RunProgress
from iondiff_stream.synthetic.runs import make_run


def _gzip(src, dst):
    with open(src, "rb") as f, gzip.open(dst, "wb") as g:
        shutil.copyfileobj(f, g)


def _rising_before(events, marker="FRAME"):
    """The fractions reported before the first ``marker`` (frames parsed)."""
    assert marker in events, events[:20]
    before = [e for e in events[: events.index(marker)] if e != marker]
    return before


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    d = tmp_path_factory.mktemp("gzdump")
    run = make_run(n_frames=600, n_cells=3, n_vacancies=3, hop_prob=0.02, n_chains=0, framework=True, seed=4)
    dump, data = str(d / "run.dump"), str(d / "run.data")
    run.write_lammps(dump, data)
    _gzip(dump, dump + ".gz")
    return dump, dump + ".gz", data


def test_gz_dump_progress_moves_before_the_first_frame(dumps, monkeypatch):
    plain, gz, data = dumps
    events = []
    parse = lammps_dump.DumpBlockReader.read

    def read(self, start, stop):
        events.append("FRAME")
        return parse(self, start, stop)

    monkeypatch.setattr(lammps_dump.DumpBlockReader, "read", read)
    res = analyze_run(gz, "Li", topology=data, md_timestep_ps=0.002, progress=lambda name, f: events.append((name, f)))
    before = _rising_before(events)
    fractions = [f for _, f in before]
    assert {name for name, _ in before} == {"read"}
    assert len(set(fractions)) >= 5 and fractions == sorted(fractions) and fractions[-1] > 0, before
    assert fractions[-1] <= 0.25 + 1e-9  # the decompression's guessed share; frames and hops follow
    done = [e for e in events if e != "FRAME"]
    assert [f for _, f in done] == sorted(f for _, f in done) and done[-1][1] == pytest.approx(1.0)
    # the same analysis as the plain file's
    ref = analyze_run(plain, "Li", topology=data, md_timestep_ps=0.002)
    assert res.summary["n_hops"] == ref.summary["n_hops"] > 0


def test_gz_dump_same_frames_and_no_bar_needed(dumps):
    plain, gz, data = dumps
    a = collect_positions(load_universe(plain, topology=data), "Li", md_timestep_ps=0.002)
    b = collect_positions(load_universe(gz, topology=data), "Li", md_timestep_ps=0.002)  # no RunProgress active
    assert np.array_equal(a.positions, b.positions) and np.array_equal(a.times_ps, b.times_ps)


def test_xdatcar_gz_progress(tmp_path):
    rng = np.random.default_rng(1)
    n, frames = 8, 1500
    lines = ["synthetic", "1.0", "  8.0 0.0 0.0", "  0.0 8.0 0.0", "  0.0 0.0 8.0", "  Li Cl", "  4 4"]
    x = rng.uniform(0, 1, (n, 3))
    for k in range(frames):
        x = (x + rng.normal(0, 0.01, x.shape)) % 1.0
        lines.append(f"Direct configuration= {k + 1:5d}")
        lines += [f"  {a:.8f}  {b:.8f}  {c:.8f}" for a, b, c in x]
    path = tmp_path / "XDATCAR.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    fractions = []
    with RunProgress({"read": 1.0, "frames": 3.0}, enabled=False, listener=lambda name, f: fractions.append(f)):
        xd = read_xdatcar(str(path))
    assert xd.frac.shape[0] == frames
    assert len(set(fractions)) >= 5 and fractions == sorted(fractions)
    assert fractions[-1] == pytest.approx(0.25)  # the whole file consumed: its stage done


def test_reweight_keeps_what_is_done():
    seen = []
    with RunProgress({"read": 1.0, "frames": 3.0}, enabled=False, listener=lambda n, f: seen.append((n, f))) as bar:
        from iondiff_stream.core.progress import stage

        stage("read", 10).advance(10)
        assert bar.fraction == pytest.approx(0.25)
        bar.reweight({"read": 1.0, "hops": 1.0})
        stage("read", 2).finish()
        assert bar.fraction == pytest.approx(0.625)
        stage("hops", 4).finish()
    assert seen[-1] == ("hops", pytest.approx(1.0))
