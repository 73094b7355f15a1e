"""Figures, report page and Arrhenius fits."""

import html
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from iondiff_stream.pipeline.run import analyze_run
from iondiff_stream.outputs.report import arrhenius_across_runs, make_report, trust_checks
from iondiff_stream.synthetic.runs import make_run
from iondiff_stream.analysis.transport import arrhenius_fit
from iondiff_stream.core.units import KB_EV_PER_K


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
    assert f"<tr><th>hops (closed)</th><td>{s['n_hops']}</td></tr>" in page
    _assert_readable(page)
    assert s["n_hops"] > 10 and s["sigma_NE_mS_cm"] > 0
    # H = D*/D_sigma only where D_sigma is resolved from zero (95 % interval above 0)
    if s["D_sigma_status"] == "resolved":
        assert s["haven_ratio"] > 0 and s["D_sigma_ci95_cm2_s"][0] > 0
    else:
        assert s["haven_ratio"] is None and s["D_sigma_cm2_s"] is None and s["D_sigma_ci95_cm2_s"][0] <= 0
        assert "<tr><th>D_σ (collective)</th><td>not resolved: " in page


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
    # the headline and the transport table say why, with the run's status and reason
    assert f"<div class='value'>{s['D_tracer_status']}</div>" in page
    assert f"<tr><th>D* (tracer)</th><td>{html.escape(s['D_tracer_reason'])}" in page \
        or f"<tr><th>D* (tracer)</th><td>{s['D_tracer_status']}: {html.escape(s['D_tracer_reason'])}" in page
    assert "no hops in this run, so no hop timeline" in page
    assert not os.path.exists(os.path.join(out, "hop_timeline.png"))
    _assert_readable(page)
    checks = dict((name, v) for name, v, _ in trust_checks(s))
    assert checks["Run length"] in ("fail", "warn") and checks["Frame spacing"] == "n/a"


def _visible_text(page):
    """What a reader sees: the page without its style sheet, its tags and the list of input paths."""
    body = re.sub(r"<style>.*?</style>", " ", page, flags=re.S)
    body = re.sub(r"<p class='inputs'>.*?</p>", " ", body, flags=re.S)
    text = re.sub(r"<[^>]+>", " ", body)
    return html.unescape(text)


def _significant_digits(token):
    digits = token.replace(".", "").lstrip("0")
    if "." not in token:
        digits = digits.rstrip("0")
    return len(digits)


def _assert_readable(page):
    """No Python reprs, no NaN, no JSON, no number with more than 4 significant digits; a headline and a trust panel."""
    text = _visible_text(page)
    for word in ("None", "True", "False"):
        assert not re.search(rf"\b{word}\b", text), (word, text[:3000])
    assert not re.search(r"\bnan\b", text, flags=re.I)
    assert "{" not in text and "}" not in text, "raw JSON on the page"
    too_long = [t for t in re.findall(r"\d[\d.]*\d|\d", text) if _significant_digits(t) > 4]
    assert not too_long, too_long
    assert "class='cards'" in page and "D* (tracer diffusion)" in page and "hop frequency ν" in page
    assert "Can these numbers be trusted?" in page
    for name in ("Long-range diffusion", "Hops vs MSD", "Site model", "Frame spacing", "Run length", "Model deviation"):
        assert f"<th>{name}</th>" in page, name
    assert re.search(r"class='badge (pass|warn|fail|na)'", page)


def test_report_headline_series_and_concert_figure(analysed):
    """With the other temperature as a series the headline shows Ea; the concert figure has its caption."""
    make_report(analysed[1], series=[analysed[0]])
    page = open(os.path.join(analysed[1], "report.html")).read()
    _assert_readable(page)
    assert "Ea from D*" in page and "Ea from ν" in page and " eV" in page
    assert "Concerted hopping against chance" in page and "group_sizes.png" in page
    assert "time-shuffled" in page or "shifted in time" in page


def test_trust_checks_read_site_and_model_deviation_keys():
    """Keys being added to the summary (site-model checks, model deviation) are shown when present."""
    base = {"long_range_diffusion": True, "msd_growth_ratio": 1.9, "hop_msd_check": "high", "hop_msd_fraction": 3.2,
            "hop_msd_fraction_ci95": [2.5, 4.0], "n_hops": 40, "timestep_ps": 0.01, "mean_hop_duration_ps": 0.2,
            "D_tracer_status": "resolved", "total_time_ps": 100.0,
            "warnings": ["frame spacing too coarse to resolve hops: 80 % of the hops ..."]}
    checks = {n: (v, r) for n, v, r in trust_checks(base)}
    assert checks["Long-range diffusion"][0] == "pass" and checks["Hops vs MSD"][0] == "warn"
    assert checks["Site model"] == ("n/a", "not available (this analysis did not record the site-model self-checks)")
    assert checks["Frame spacing"][0] == "warn" and checks["Model deviation"][0] == "n/a"
    assert checks["Run length"][0] == "pass"
    s = dict(base, site_check="fail", site_check_reasons=["ions rest away from every site: sites are missing"],
             resting_outside_fraction=0.12, hop_length_over_nn=1.7, hop_duration_over_residence=None,
             site_model="framework holes", model_deviation_check="warn", model_deviation_max_force_eV_A=0.31234567)
    checks = {n: (v, r) for n, v, r in trust_checks(s)}
    assert checks["Site model"][0] == "fail"
    assert "sites are missing" in checks["Site model"][1] and "framework holes" in checks["Site model"][1]
    assert "12 % of ion-time" in checks["Site model"][1] and "1.7" in checks["Site model"][1]
    assert checks["Model deviation"][0] == "warn" and "0.3123" in checks["Model deviation"][1]


def test_hop_timeline_legend_and_empty_note():
    from iondiff_stream.outputs import plots

    fig = plots.hop_timeline(np.array([0, 1, 2]), np.array([1.0, 1.1, 5.0]), np.array([1.2, 1.3, 5.1]), 4, 10.0,
                             np.array([0, 0, 1]))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("single hop" in t for t in labels) and any("concerted group" in t for t in labels)
    empty = plots.hop_timeline(np.zeros(0, int), np.zeros(0), np.zeros(0), 4, 10.0)
    assert "no hops in this run" in [t.get_text() for t in empty.axes[0].texts]


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="chromium is not installed (make test installs Debian's chromium where apt-get works)")
def test_report_in_headless_chromium(analysed, tmp_path):
    """The page as a browser renders it: headline, trust panel and every figure present."""
    make_report(analysed[1])
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    page = os.path.join(analysed[1], "report.html")
    r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run",
                        f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", "file://" + page],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    assert "D* (tracer diffusion)" in dom and "Can these numbers be trusted?" in dom
    for name in ("group_sizes.png", "hop_timeline.png", "msd.png"):
        assert f'src="{name}"' in dom
    _assert_readable(dom.replace('"', "'"))


def test_report_of_an_aimd_run(tmp_path):
    """LGPS AIMD at 600 K (pymatgen's unwrapped trajectory): readable page, headline and trust panel."""
    from conftest import shared

    traj = shared("LGPS_600K_pmg_diffusion", "derived_LGPS_600K_unwrapped.extxyz")
    out = str(tmp_path / "lgps")
    analyze_run([traj], "Li", out_dir=out, temperature_K=600.0)
    make_report(out)
    page = open(os.path.join(out, "report.html")).read()
    _assert_readable(page)
    s = json.load(open(os.path.join(out, "summary.json")))
    assert s["n_hops"] > 0 and "hop_timeline.png" in page


def test_report_shows_progress(analysed):
    """`iondiff-stream report` draws its progress with the one progress system: a figure at a time."""
    from iondiff_stream.core.progress import RunProgress

    seen = []
    with RunProgress({"figures": 1.0}, enabled=False, description="report",
                     listener=lambda name, frac: seen.append((name, frac))):
        files = make_report(analysed[1])
    figures = [f for f in files if f.endswith(".png")]
    assert len(seen) == len(figures) >= 3
    fr = [f for _, f in seen]
    assert fr == sorted(fr) and 0 < fr[0] < fr[-1] <= 1.0
