"""DeePMD model deviation: reader, live tail, store, join to frames and hops, monitor.

The fixtures are real: ``tests/data/model_devi_atomic.out`` and ``model_devi.out`` were written by LAMMPS
(``pair_style deepmd m0.pb m1.pb out_freq 10 out_file ... [atomic]``, deepmd-kit 3.2.0) running
``examples/dpmd/in.dpmd`` (CaF2, 321 atoms, 1500 K, 100 steps) with two tiny models trained on the classical CaF2
labels with different seeds (``examples/dpmd/train_and_run.sh``, 300 training steps each), and the frames were
streamed by ``iondiff-stream run``.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from iondiff_stream.analysis.hops import HopTable
from iondiff_stream.analysis.trust import deviation_status, frame_deviation, hop_trust, trusted_stretches, windowed_msd_D
from iondiff_stream.core.errors import TrajectoryFileNotFoundError, TrajectoryFormatError
from iondiff_stream.io.model_deviation import (ModelDeviationTail, ModelDeviationWriter, pair_style_model_devi,
                                               read_model_devi, read_store_deviation, rows_for_steps)
from iondiff_stream.io.store import FrameStoreWriter

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
ATOMIC = os.path.join(DATA, "model_devi_atomic.out")
PLAIN = os.path.join(DATA, "model_devi.out")
SIX = ["max_devi_v", "min_devi_v", "avg_devi_v", "max_devi_f", "min_devi_f", "avg_devi_f"]


def test_read_atomic_file():
    d = read_model_devi(ATOMIC)
    assert list(d.columns) == SIX  # "atm_devi_f(N)" in the header names the per-atom block, not a column
    np.testing.assert_array_equal(d.step, np.arange(0, 101, 10))
    assert d.atom_devi_f.shape == (11, 321)
    np.testing.assert_array_equal(d.atom_ids, np.arange(1, 322))
    # the per-atom block is what the named columns summarise (same numbers, as written)
    np.testing.assert_array_equal(d.atom_devi_f.max(1), d.max_devi_f)
    np.testing.assert_array_equal(d.atom_devi_f.min(1), d.columns["min_devi_f"])
    np.testing.assert_allclose(d.atom_devi_f.mean(1), d.columns["avg_devi_f"], rtol=1e-6)
    assert d.max_devi_f[0] == pytest.approx(0.4300252) and d.max_devi_f.max() == pytest.approx(0.4758452)
    assert d.atom_devi_f[3, 9] == pytest.approx(0.0670914, abs=1e-7)


def test_read_plain_file():
    d = read_model_devi(PLAIN)
    assert not d.atomic and d.atom_devi_f is None and list(d.columns) == SIX
    np.testing.assert_array_equal(d.step, np.arange(0, 101, 10))
    assert d.max_devi_f[1] == pytest.approx(0.2887673) and d.max_devi_f[8] == pytest.approx(0.4494554)
    assert np.all(d.columns["min_devi_f"] <= d.columns["avg_devi_f"])
    assert np.all(d.columns["avg_devi_f"] <= d.max_devi_f)


def test_read_errors(tmp_path):
    with pytest.raises(TrajectoryFileNotFoundError):
        read_model_devi(str(tmp_path / "none.out"))
    bad = tmp_path / "bad.out"
    bad.write_text("# time energy\n1 2 3\n")
    with pytest.raises(TrajectoryFormatError, match="header"):
        read_model_devi(str(bad))
    ragged = tmp_path / "ragged.out"
    lines = open(PLAIN).read().splitlines()
    ragged.write_text("\n".join(lines[:3] + [lines[3] + " 1.0"]) + "\n")
    with pytest.raises(TrajectoryFormatError, match="different lengths"):
        read_model_devi(str(ragged))


def test_tail_follows_a_growing_file_in_pieces(tmp_path):
    raw = open(ATOMIC, "rb").read()
    path = tmp_path / "model_devi.out"
    tail = ModelDeviationTail(str(path))
    assert tail.poll() is None  # not there yet
    path.write_bytes(b"")
    rng = np.random.default_rng(3)
    cuts = np.sort(rng.choice(np.arange(1, len(raw)), size=25, replace=False))
    got, pos = [], 0
    for c in list(cuts) + [len(raw)]:
        with open(path, "ab") as fh:
            fh.write(raw[pos:c])
        pos = c
        rows = tail.poll()
        if rows is not None:
            # only complete lines come out: each row has all its 321 per-atom values
            assert rows.atom_devi_f.shape[1] == 321
            got.append(rows)
    assert tail.poll() is None
    whole = read_model_devi(ATOMIC)
    np.testing.assert_array_equal(np.concatenate([g.step for g in got]), whole.step)
    np.testing.assert_array_equal(np.concatenate([g.atom_devi_f for g in got]), whole.atom_devi_f)
    assert tail.n_rows == 11
    # a new pair_style command re-creates the file: it is read again from its start
    path.write_bytes(raw[: raw.index(b"\n", 200) + 1])
    again = tail.poll()
    assert tail.restarts == 1 and again is not None and list(again.step) == [0]
    tail.close()


def test_pair_style_parsing():
    p = pair_style_model_devi("pair_style deepmd m0.pb m1.pb out_freq 10 out_file md.out atomic  # comment")
    assert p == {"models": ["m0.pb", "m1.pb"], "out_file": "md.out", "out_freq": 10, "atomic": True, "relative": None}
    p = pair_style_model_devi("pair_style deepmd a.pb b.pb c.pb fparam 1.2 relative 1.0")
    assert p["models"] == ["a.pb", "b.pb", "c.pb"] and p["out_file"] == "model_devi.out" and p["out_freq"] == 100
    assert p["relative"] == 1.0 and not p["atomic"]
    assert pair_style_model_devi("pair_style deepmd graph.pb") is None  # one model: no deviation
    assert pair_style_model_devi("pair_style lj/cut 2.5") is None


def _store_with_deviation(tmp_path, steps, dev_parts, ion_ids, name="run.zarr", mode="w"):
    store = str(tmp_path / name)
    rng = np.random.default_rng(0)
    with FrameStoreWriter(store, ion_ids, ["F"] * len(ion_ids), chunk_frames=4) as w:
        for s in steps:
            w.append(int(s), s * 0.002, rng.normal(size=(len(ion_ids), 3)), np.array([16.4, 16.4, 16.4, 90, 90, 90.0]))
    wr = ModelDeviationWriter(store, ion_ids=ion_ids, mode=mode, flush_rows=4, meta={"out_freq": 10})
    for part in dev_parts:
        wr.append(part)
    report = wr.close()
    return store, report


def test_store_keeps_the_deviation_of_the_stored_ions(tmp_path):
    whole = read_model_devi(ATOMIC)
    ion_ids = np.array([2, 10, 57, 300, 321])
    steps = np.r_[np.arange(0, 101, 10), 105]  # the last frame has no deviation row (not a multiple of out_freq)
    store, report = _store_with_deviation(tmp_path, steps, [whole.take(np.arange(7)), whole.take(np.arange(7, 11))],
                                          ion_ids)
    assert report == {"model_devi_rows": 11, "model_devi_max_f_eV_A": pytest.approx(0.4758452)}
    dev = read_store_deviation(store)
    np.testing.assert_array_equal(dev.step, whole.step)
    np.testing.assert_array_equal(dev.atom_ids, ion_ids)
    np.testing.assert_allclose(dev.atom_devi_f, whole.atom_devi_f[:, ion_ids - 1], rtol=1e-6)  # float32 in the store
    np.testing.assert_array_equal(dev.max_devi_f, whole.max_devi_f)
    assert dev.meta["out_freq"] == 10 and dev.meta["atomic"] is True
    np.testing.assert_array_equal(rows_for_steps(dev, steps), np.r_[np.arange(11), -1])
    # appending (a second run into the same store) keeps the rows; "w" replaces them
    wr = ModelDeviationWriter(store, ion_ids=ion_ids, mode="a")
    wr.append(whole.take(np.arange(2)))
    assert wr.close()["model_devi_rows"] == 13
    assert read_store_deviation(store).step.tolist()[-3:] == [100, 0, 10]
    # a step written twice (a new run recomputes its first step) matches its last row
    assert rows_for_steps(read_store_deviation(store), np.array([0, 20]))[0] == 11


def test_live_status_with_trust_levels(tmp_path):
    whole = read_model_devi(ATOMIC)
    ion_ids = np.arange(1, 322, 3)
    steps = np.r_[np.arange(0, 101, 10), 105]
    store, _ = _store_with_deviation(tmp_path, steps, [whole], ion_ids)
    st = deviation_status(store, steps)  # DP-GEN's levels: these tiny models are never trusted
    assert st["rows"] == 11 and st["frames_with_devi"] == 11 and st["per_atom"]
    assert (st["trust_lo_eV_A"], st["trust_hi_eV_A"]) == (0.05, 0.15)
    assert st["frames_above_trust_hi"] == 11 and st["fraction_above_trust_hi"] == 1.0
    assert st["current_max_devi_f_eV_A"] == pytest.approx(0.3568563) and st["current_state"] == "untrusted"
    assert st["max_max_devi_f_eV_A"] == pytest.approx(0.4758452)
    assert st["current_max_devi_f_ions_eV_A"] == pytest.approx(whole.atom_devi_f[-1, ion_ids - 1].max(), rel=1e-6)
    assert st["first_step_above_trust_hi"] == 0 and "outside the trusted region" in st["warning"]
    st = deviation_status(store, steps, trust_lo=0.35, trust_hi=0.4)  # user levels
    assert st["frames_above_trust_hi"] == 4 and st["frames_above_trust_lo"] == 6
    assert st["current_state"] == "candidate" and st["first_step_above_trust_hi"] == 0
    assert "4 of 11" in st["warning"]
    st = deviation_status(store, steps, trust_lo=0.5, trust_hi=0.6)
    assert st["frames_above_trust_hi"] == 0 and st["current_state"] == "trusted" and "warning" not in st
    assert deviation_status(str(tmp_path / "none.zarr")) is None


def test_monitor_cli_reports_the_deviation(tmp_path):
    whole = read_model_devi(ATOMIC)
    store, _ = _store_with_deviation(tmp_path, np.arange(0, 101, 10), [whole], np.arange(1, 322, 3))
    r = subprocess.run([sys.executable, "-m", "iondiff_stream.cli", "monitor", store, "--once", "--json",
                        "--trust-lo", "0.35", "--trust-hi", "0.4"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    md = json.loads(r.stdout)["model_deviation"]
    assert md["frames_with_devi"] == 11 and md["frames_above_trust_hi"] == 4 and md["last_step"] == 100
    from iondiff_stream.live_page import render, snapshot

    st = json.loads(r.stdout)
    page = render(st, [snapshot(st)])
    assert "Model trust" in page and "model deviation now" in page and "frames above 0.4 eV/Å" in page


def _hops(rows):
    cols = {k: [] for k in ("atom_index", "atom_id", "ion", "start_frame", "end_frame", "start_time_ps", "end_time_ps",
                            "duration_ps", "length_A", "from_centre", "to_centre", "from_x_A", "from_y_A", "from_z_A",
                            "to_x_A", "to_y_A", "to_z_A", "open", "back_hop")}
    for ion, s, e, length, is_open in rows:
        for k in cols:
            cols[k].append(0)
        cols["ion"][-1], cols["start_frame"][-1], cols["end_frame"][-1] = ion, s, e
        cols["length_A"][-1], cols["open"][-1], cols["back_hop"][-1] = length, is_open, False
    return HopTable.from_columns(cols)


def test_hop_resolved_trust_per_atom():
    whole = read_model_devi(ATOMIC)
    ion_ids = np.array([10, 57, 300])  # ions 0, 1, 2 of the analysis
    steps = np.arange(0, 101, 10)
    times = steps * 0.002
    fd = frame_deviation(whole, steps, ion_ids)
    assert fd.per_atom and fd.ion_f.shape == (11, 3) and fd.has_row.all()
    a = whole.atom_devi_f[:, ion_ids - 1]
    hops = _hops([(0, 2, 3, 2.7, False), (1, 5, 7, 3.0, False), (2, 8, 10, 2.7, True)])
    res = hop_trust(hops, fd, times, n_mobile=3, trust_lo=0.05, trust_hi=0.4)
    # the hopping ion's own deviation over the frames of its hop (start to end frame)
    np.testing.assert_allclose(res.hop_max_f, [a[2:4, 0].max(), a[5:8, 1].max(), a[8:11, 2].max()])
    assert res.hop_max_f[0] == pytest.approx(0.0670914, abs=1e-7)
    s = res.summary
    assert s["hops_with_devi"] == 2  # closed hops
    assert s["hops_above_trust_lo"] == int((res.hop_max_f[:2] > 0.05).sum())
    assert s["hops_above_trust_hi"] == 0 and s["hops_above_trust_hi_fraction"] == 0.0
    # hop vs rest: the hopping ions' deviation inside and outside their hops
    inside = np.r_[a[2:4, 0], a[5:8, 1], a[8:11, 2]]
    rest = np.r_[a[np.r_[0:2, 4:11], 0], a[np.r_[0:5, 8:11], 1], a[0:8, 2]]
    assert s["hop_devi_f_mean_eV_A"] == pytest.approx(inside.mean()) and s["rest_devi_f_mean_eV_A"] == pytest.approx(rest.mean())
    # frames above 0.4 eV/Å (whole system): 0, 1, 4, 5 -> trusted stretches [2, 4) and [6, 11)
    np.testing.assert_array_equal(res.trusted_frames, whole.max_devi_f <= 0.4)
    assert trusted_stretches(res.trusted_frames) == [(2, 4), (6, 11)] and s["n_trusted_stretches"] == 2
    assert s["frames_untrusted"] == 4
    assert s["trusted_time_fraction"] == pytest.approx((1 + 4) / 10)
    # hop-carried D: ion 1's hop (frames 5-7) touches an untrusted frame (5); ion 0's hop (2-3) is trusted
    conv = 1e-4 / (6 * 3)
    d_all, d_tr = (2.7**2 + 3.0**2) / 0.2 * conv, 2.7**2 / (0.2 * 0.5) * conv
    assert s["D_hops_all_cm2_s"] == pytest.approx(d_all) and s["D_hops_trusted_cm2_s"] == pytest.approx(d_tr)
    assert s["D_hops_trusted_change_percent"] == pytest.approx(100 * (d_tr - d_all) / d_all)
    assert "of 2 hops" in s["trust_note"]


def test_hop_trust_without_per_atom_uses_the_frame_maximum():
    plain = read_model_devi(PLAIN)
    steps = np.arange(0, 101, 10)
    fd = frame_deviation(plain, steps, np.array([10, 20]))
    assert not fd.per_atom
    res = hop_trust(_hops([(0, 1, 3, 2.7, False), (1, 6, 9, 2.7, False)]), fd, steps * 0.002, n_mobile=2,
                    trust_hi=0.4)
    np.testing.assert_allclose(res.hop_max_f, [plain.max_devi_f[1:4].max(), plain.max_devi_f[6:10].max()])
    assert res.summary["hops_above_trust_hi"] == 1 and res.summary["hops_above_trust_hi_fraction"] == 0.5
    assert "hop_devi_f_mean_eV_A" not in res.summary and res.summary["model_devi_per_atom"] is False
    # frames whose step has no row take the larger deviation of their neighbours' rows
    fd2 = frame_deviation(plain, np.arange(0, 101, 5))
    assert fd2.has_row.sum() == 11
    res2 = hop_trust(_hops([]), fd2, np.arange(0, 101, 5) * 0.002, n_mobile=2, trust_hi=0.4)
    assert res2.trusted_frames[15] == (max(plain.max_devi_f[7], plain.max_devi_f[8]) <= 0.4)


def test_windowed_msd_of_a_random_walk():
    # a random walk of known D (per-axis step 0.3 Å per 0.1 ps: D = 0.3² / (2 × 0.1) Å²/ps), whole or in two stretches
    rng = np.random.default_rng(1)
    steps = rng.normal(scale=0.3, size=(400, 50, 3))
    x = np.cumsum(steps, axis=0)
    dt = 0.1
    lags = np.arange(2, 21)
    whole = windowed_msd_D(x, dt, [(0, 400)], lags)
    d_true = 0.3**2 / (2 * dt) * 1e-4  # cm²/s
    assert whole["D_cm2_s"] == pytest.approx(d_true, rel=0.1)
    half = windowed_msd_D(x, dt, [(0, 150), (250, 400)], lags)
    assert half["D_cm2_s"] == pytest.approx(d_true, rel=0.15)
    assert half["windows"][0] == (150 - 2 + 150 - 2) * 50
    # against the direct sum over windows, with a stretch shorter than the longest lags
    parts = [(0, 150), (250, 400), (160, 170)]
    got = windowed_msd_D(x, dt, parts, lags)
    for i, k in enumerate(lags):
        d = [x[a + k:b] - x[a:b - k] for a, b in parts if b - a > k]
        assert got["windows"][i] == sum(v.shape[0] * v.shape[1] for v in d)
        assert got["msd_A2"][i] == pytest.approx(sum(float((v * v).sum()) for v in d) / got["windows"][i], rel=1e-10)


def test_offline_analysis_joins_the_deviation_to_every_hop(tmp_path):
    """analyze on a store holding deviation rows: hops.csv gains max_devi_f_eV_A (the hopping ion's own, over the
    frames of its hop), the summary the untrusted share and the transport without the untrusted stretch."""
    import csv

    from iondiff_stream.io.model_deviation import ModelDeviation
    from iondiff_stream.pipeline.run import analyze_run
    from iondiff_stream.synthetic.runs import make_run

    run = make_run(n_frames=600, sigma_A=0.15, hop_prob=1e-2, n_chains=0, seed=3)
    X = run.positions.transpose(1, 0, 2)
    nf, n = X.shape[:2]
    ids = np.arange(1, n + 1)
    store = str(tmp_path / "dev.zarr")
    dt = float(run.times_ps[1] - run.times_ps[0])
    with FrameStoreWriter(store, ids, ["Li"] * n, chunk_frames=50) as w:
        for t in range(nf):
            w.append(10 * t, t * dt, X[t], run.box)
    # per-ion deviation: small and ion-specific, except in frames 300-349 where the model "leaves" its data
    steps = 10 * np.arange(nf)
    atom = 0.01 + 0.001 * np.arange(n)[None, :] + np.zeros((nf, 1))
    atom[300:350] += 0.5
    cols = {k: np.zeros(nf) for k in SIX}
    cols["max_devi_f"] = atom.max(1)
    wr = ModelDeviationWriter(store, ion_ids=ids, flush_rows=64)
    wr.append(ModelDeviation(steps, cols, atom, ids))
    wr.close()
    out = str(tmp_path / "out")
    res = analyze_run(store, "Li", out_dir=out, trust_hi=0.15)
    s = res.summary
    with open(os.path.join(out, "hops.csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == s["n_hops"] > 10
    got = np.array([float(r["max_devi_f_eV_A"]) for r in rows])
    want = np.array([atom[int(r["start_frame"]):int(r["end_frame"]) + 1, int(r["ion"])].max() for r in rows])
    np.testing.assert_allclose(got, want, atol=1e-6)  # hops.csv keeps 6 decimals
    closed = np.array([r["open"] == "false" for r in rows])
    inside = np.array([int(r["start_frame"]) <= 349 and int(r["end_frame"]) >= 300 for r in rows])
    assert s["hops_above_trust_hi"] == int((inside & closed).sum())
    assert s["hops_above_trust_hi_fraction"] == pytest.approx((inside & closed).sum() / closed.sum())
    assert s["frames_untrusted"] == 50 and s["n_trusted_stretches"] == 2
    assert s["trusted_time_fraction"] == pytest.approx((299 + 249) / 599)
    assert s["model_devi_frames"] == nf and s["model_devi_per_atom"] is True
    assert s["D_msd_trusted_cm2_s"] > 0 and s["D_msd_trusted_change_percent"] is not None
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["hops_above_trust_hi"] == s["hops_above_trust_hi"] and "trust_note" in summary
    import zarr

    g = zarr.open_group(os.path.join(out, "results.zarr"), mode="r")
    assert g["hops/max_devi_f_eV_A"].attrs.get("units") == "eV/angstrom"
