"""Figures, report page and Arrhenius fits."""

import json
import os

import numpy as np
import pytest

from iondiff_stream.analyze import analyze_run
from iondiff_stream.report import arrhenius_across_runs, make_report
from iondiff_stream.synthetic import make_run
from iondiff_stream.transport import arrhenius_fit
from iondiff_stream.units import KB_EV_PER_K


def test_arrhenius_fit_analytic():
    T = np.array([600.0, 800.0, 1000.0, 1200.0])
    D = 1e-3 * np.exp(-0.3 / (KB_EV_PER_K * T))
    f = arrhenius_fit(T, D, D * 0.05)
    assert f["Ea_eV"] == pytest.approx(0.3, rel=1e-9)
    assert f["prefactor"] == pytest.approx(1e-3, rel=1e-9)
    # 5 % errors on D propagate to an Ea uncertainty of the right size
    assert 0.005 < f["Ea_err_eV"] < 0.05
    noisy = D * np.exp(np.random.default_rng(0).normal(0, 0.05, 4))
    g = arrhenius_fit(T, noisy)
    assert g["Ea_eV"] == pytest.approx(0.3, abs=3 * g["Ea_err_eV"])


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    d = tmp_path_factory.mktemp("rep")
    outs = []
    for k, (T, hp) in enumerate(((800.0, 5e-4), (1000.0, 2e-3))):
        run = make_run(n_frames=1200, sigma_A=0.18, hop_prob=hp, n_chains=3, framework=True, seed=30 + k)
        run.write_lammps(str(d / f"r{k}.dump"), str(d / f"r{k}.data"))
        out = str(d / f"out{k}")
        analyze_run([str(d / f"r{k}.dump")], "Li", topology=str(d / f"r{k}.data"), out_dir=out, md_timestep_ps=0.005,
                    temperature_K=T)
        outs.append(out)
    return outs


def _png_has_content(path):
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.shape[0] > 200 and img.shape[1] > 200
    # not blank: many distinct colours, and not mostly one colour
    flat = (img[..., :3] * 255).astype(int).reshape(-1, 3)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    assert len(colours) > 20
    assert counts.max() / len(flat) < 0.99


def test_report_writes_figures_and_page(analysed):
    files = make_report(analysed[1])
    names = {os.path.basename(f) for f in files}
    assert {"ion_path.png", "hop_timeline.png", "correlation_matrix.png", "group_sizes.png", "msd.png",
            "report.html"} <= names
    for f in files:
        if f.endswith(".png"):
            _png_has_content(f)
    page = open(os.path.join(analysed[1], "report.html")).read()
    s = json.load(open(os.path.join(analysed[1], "summary.json")))
    assert f"<td>n_hops</td><td>{s['n_hops']}</td>" in page
    assert s["n_hops"] > 10 and s["sigma_NE_mS_cm"] > 0
    # H = D*/D_sigma only where D_sigma is resolved from zero (95 % interval above 0)
    if s["D_sigma_status"] == "resolved":
        assert s["haven_ratio"] > 0 and s["D_sigma_ci95_cm2_s"][0] > 0
    else:
        assert s["haven_ratio"] is None and s["D_sigma_cm2_s"] is None and s["D_sigma_ci95_cm2_s"][0] <= 0
        assert "<td>D_sigma_status</td><td>not resolved</td>" in page


def test_arrhenius_across_runs(analysed, tmp_path):
    res = arrhenius_across_runs(analysed, plot_path=str(tmp_path / "arr.png"))
    s = [json.load(open(os.path.join(o, "summary.json"))) for o in analysed]
    # two points: Ea from the ratio of the hop frequencies
    nu = [x["hop_frequency_per_ps"] for x in s]
    ea = KB_EV_PER_K * np.log(nu[1] / nu[0]) / (1 / 800.0 - 1 / 1000.0)
    assert res["nu"]["Ea_eV"] == pytest.approx(ea, rel=1e-9)
    assert res["D_tracer"]["Ea_eV"] > 0
    _png_has_content(str(tmp_path / "arr.png"))


def test_short_run_transport_is_null_with_reason_in_summary_and_report(tmp_path):
    """21 frames of ions vibrating in place (no hops): no D*, no conductivity, in summary.json and report.html."""
    run = make_run(n_frames=21, sigma_A=0.18, hop_prob=0.0, n_chains=0, framework=True, seed=3)
    run.write_lammps(str(tmp_path / "r.dump"), str(tmp_path / "r.data"))
    out = str(tmp_path / "out")
    analyze_run([str(tmp_path / "r.dump")], "Li", topology=str(tmp_path / "r.data"), out_dir=out,
                md_timestep_ps=0.001, temperature_K=600.0)
    s = json.load(open(os.path.join(out, "summary.json")))
    assert s["n_frames"] == 21 and s["D_tracer_cm2_s"] is None and s["sigma_NE_mS_cm"] is None
    assert s["haven_ratio"] is None and s["D_sigma_cm2_s"] is None
    assert s["D_tracer_status"] != "resolved" and s["D_tracer_reason"]
    assert s["sigma_NE_status"] == s["D_tracer_status"]
    make_report(out)
    page = open(os.path.join(out, "report.html")).read()
    assert f"<td>D_tracer_cm2_s</td><td>not reported ({s['D_tracer_status']})</td>" in page
    assert "<td>D_tracer_reason</td>" in page
