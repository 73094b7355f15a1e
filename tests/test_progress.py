"""One progress system: the library's stages advance a single run-wide bar."""

import numpy as np
import pytest

from iondiff_stream.analysis.hops import HopParameters, find_hops
from iondiff_stream.io import collect_positions
from iondiff_stream.core.progress import RunProgress, current, stage, track
from iondiff_stream.synthetic.runs import make_run


def test_stages_advance_one_bar():
    run = make_run(n_frames=400, n_cells=3, n_vacancies=3, n_chains=0, seed=1)
    u = run.to_universe()
    with RunProgress({"read": 1.0, "hops": 3.0}, enabled=False) as rp:
        assert current() is rp
        data = collect_positions(u, "Li")
        assert rp.completed == pytest.approx(250.0)  # reading is a quarter of the weight
        find_hops(data.positions, data.times_ps, HopParameters(seed=0), layout="frame", box=data.box)
        assert rp.completed == pytest.approx(1000.0)
    assert current() is None
    st = stage("anything", 10)  # outside a run: a no-op
    st.advance(3)
    assert list(track(range(4), "x")) == [0, 1, 2, 3]


def test_bar_draws_on_stderr(capsys):
    with RunProgress({"a": 1.0, "b": 1.0}, enabled=True, description="test") as rp:
        s = stage("a", 4)
        for _ in range(4):
            s.advance()
        stage("b", 1).finish()
    assert rp.completed == pytest.approx(1000.0)
    err = capsys.readouterr().err
    assert "test" in err and "100%" in err
    assert np.isclose(rp.completed, 1000.0)
