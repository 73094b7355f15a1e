"""Python interop: hop tables as pandas DataFrames, readable summaries of result objects in terminals and notebooks."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from iondiff_stream.pipeline.run import analyze_run
from iondiff_stream.core.display import fmt
from iondiff_stream.analysis.hops import HOP_COLUMNS, HopTable, find_hops
from iondiff_stream.synthetic.runs import make_run
from iondiff_stream.analysis.transport import analyse_transport


@pytest.fixture(scope="module")
def synthetic():
    return make_run(n_frames=1200, seed=5)


@pytest.fixture(scope="module")
def hops(synthetic):
    return find_hops(synthetic.positions, synthetic.times_ps, box=synthetic.box)


def test_to_pandas_has_every_column_with_units_and_dtypes(hops):
    table = hops.hops
    assert len(table) > 5
    df = table.to_pandas()
    assert isinstance(df, pd.DataFrame) and list(df.columns) == list(HOP_COLUMNS) and len(df) == len(table)
    assert df["open"].dtype == bool and df["atom_id"].dtype == np.int64 and df["length_A"].dtype == np.float64
    np.testing.assert_array_equal(df["start_frame"].to_numpy(), table["start_frame"])


def test_column_access_like_a_dataframe(hops):
    table = hops.hops
    assert isinstance(table["length_A"], np.ndarray)  # one column: the array, as before
    sub = table[["atom_id", "length_A"]]
    assert isinstance(sub, pd.DataFrame) and list(sub.columns) == ["atom_id", "length_A"]
    np.testing.assert_array_equal(sub["length_A"].to_numpy(), table["length_A"])
    assert list(table.to_pandas(("duration_ps",)).columns) == ["duration_ps"]
    with pytest.raises(KeyError, match="no hop column 'nope'"):
        table[["atom_id", "nope"]]


def test_empty_table():
    empty = HopTable.empty()
    assert list(empty.to_pandas().columns) == list(HOP_COLUMNS) and len(empty.to_pandas()) == 0
    assert "0 (0 open, 0 back-hops)" in repr(empty)


def _readable(text: str) -> None:
    lines = text.splitlines()
    assert 3 <= len(lines) <= 25 and max(map(len, lines)) <= 110, text
    assert not re.search(r"\bNone\b|\bnan\b", text, re.I), text
    assert "array(" not in text and "{" not in text, text


def test_hop_reprs(hops):
    _readable(repr(hops.hops))
    _readable(repr(hops))
    assert repr(hops).startswith("HopResults") and f"{len(hops.hops.closed())} closed" in repr(hops)
    html = hops._repr_html_()
    assert html.startswith("<div>") and "<table>" in html and "HopResults" in html
    assert "<table>" in hops.hops._repr_html_()


def test_transport_repr(synthetic):
    dt = float(synthetic.times_ps[1] - synthetic.times_ps[0])
    tr = analyse_transport(synthetic.positions, dt, float(np.prod(synthetic.box[:3])))  # no temperature: no σ
    text = repr(tr)
    _readable(text)
    assert "D* (tracer)" in text and "cm²/s" in text and "not computed (needs the temperature)" in text
    assert "<table>" in tr._repr_html_()


def test_run_repr(tmp_path):
    make_run(n_frames=800, framework=True, seed=6).write_lammps(str(tmp_path / "r.dump"), str(tmp_path / "r.data"))
    run = analyze_run([str(tmp_path / "r.dump")], "Li", topology=str(tmp_path / "r.data"), md_timestep_ps=0.005,
                      temperature_K=600)
    text = repr(run)
    _readable(text)
    assert text.startswith("RunAnalysis") and "D* (tracer)" in text and "600 K" in text and "mS/cm" in text
    assert "<table>" in run._repr_html_()
    if run.correlations is not None:
        _readable(repr(run.correlations))


@pytest.mark.parametrize("value, text", [
    (None, "—"), (float("nan"), "—"), (True, "yes"), (False, "no"), (3, "3"), (np.int64(42), "42"),
    (1.2037093113368011, "1.204"), (6.346943133294801e-07, "6.347e-07"), (500.0, "500"),
    ([1.2037093113368011, 1.621092944779754], "[1.204, 1.621]"), ("ok", "ok"),
])
def test_fmt_has_at_most_four_significant_digits(value, text):
    assert fmt(value) == text


def test_fmt_units_and_arrays():
    assert fmt(2.5, "Å") == "2.5 Å"
    assert fmt(np.array([0.45, 74.95]), "ps") == "[0.45, 74.95] ps"
