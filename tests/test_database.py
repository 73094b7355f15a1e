"""Descriptor database: manifest checks, statistics against scipy/scikit-learn, a real Dask cluster with a killed worker."""

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from iondiff_stream.database import ManifestError, RunEntry, read_manifest, run_status, write_statistics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, text):
    with open(path, "w") as fh:
        fh.write(text)
    return str(path)


def test_manifest_is_checked(tmp_path):
    head = "name,files,topology,mobile,temperature_K,timestep_ps,material\n"
    with pytest.raises(ManifestError, match="lacks column"):
        read_manifest(_write(tmp_path / "a.csv", "name,files,mobile\nx,a.dump,F\n"))
    with pytest.raises(ManifestError, match="duplicate"):
        read_manifest(_write(tmp_path / "b.csv", head + "r1,a.xyz,,Li,500,0.1,m\nr1,b.xyz,,Li,500,0.1,m\n"))
    with pytest.raises(ManifestError, match="not a number"):
        read_manifest(_write(tmp_path / "c.csv", head + "r1,a.xyz,,Li,hot,0.1,m\n"))
    with pytest.raises(ManifestError, match="folder name"):
        read_manifest(_write(tmp_path / "d.csv", head + "../r1,a.xyz,,Li,500,0.1,m\n"))
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(str(tmp_path / "missing.csv"))
    e = read_manifest(_write(tmp_path / "e.csv", head.strip() + ",family\nr1,sub/a.gz; sub/b.gz,,Li,500,,m,fam\n"))
    assert e[0].files == [str(tmp_path / "sub" / "a.gz"), str(tmp_path / "sub" / "b.gz")]
    assert e[0].timestep_ps is None and e[0].temperature_K == 500 and e[0].family == "fam"


def _fake_db(tmp_path, n=14, seed=0):
    """A database folder with finished runs whose descriptors are random but correlated (with gaps)."""
    rng = np.random.default_rng(seed)
    entries = []
    z = rng.normal(size=n)
    for i in range(n):
        name = f"run{i:02d}"
        d = tmp_path / "runs" / name
        d.mkdir(parents=True)
        vals = {
            "name": name, "material": f"mat{i % 4}", "family": ["a", "b"][i % 2],
            "temperature_K": float(500 + 100 * (i % 5)),
            "D_tracer_cm2_s": float(10 ** (-6 + z[i] + 0.3 * rng.normal())),
            "hop_length_mean_A": float(2.5 + 0.5 * z[i] + 0.2 * rng.normal()),
            "mean_phonon_freq_THz": float(6 - z[i] + rng.normal()),
            "vib_entropy_kB_per_atom": float(rng.normal() + 7),
            "lindemann_ratio_d": float(rng.uniform()) if i % 3 else None,  # gaps: Spearman only, not PCA
            "heat_capacity_kB_per_atom": 2.9,  # constant: excluded
            "n_frames": 1000 + i,  # bookkeeping: excluded
            "vdos_source": "velocities",
        }
        with open(d / "descriptors.json", "w") as fh:
            json.dump({"values": vals, "group_size_hist": [int(x) for x in rng.integers(0, 20, 6)]}, fh)
        (d / "DONE").write_text("{}")
        entries.append(RunEntry(name, ["x"], None, "Li", vals["temperature_K"], None, vals["material"], vals["family"]))
    return entries


def test_statistics_match_scipy_and_sklearn(tmp_path):
    pd = pytest.importorskip("pandas")
    from scipy.stats import spearmanr
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score, silhouette_score
    from sklearn.preprocessing import StandardScaler

    entries = _fake_db(tmp_path)
    paths = write_statistics(str(tmp_path), entries, figures=True)
    for key in ("fig_spearman", "fig_pca", "fig_d_vs_descriptors", "fig_concert", "fig_vdos"):
        assert os.path.getsize(paths[key]) > 1000
    desc = pd.read_csv(paths["descriptors"])
    assert len(desc) == 14 and desc["name"].tolist() == [e.name for e in entries]
    rho = pd.read_csv(paths["spearman"], index_col=0)
    pval = pd.read_csv(paths["spearman_p"], index_col=0)
    cols = list(rho.columns)
    assert "heat_capacity_kB_per_atom" not in cols and "n_frames" not in cols and "vdos_source" not in cols
    assert "lindemann_ratio_d" in cols and "D_tracer_cm2_s" in cols
    for a in cols:
        for b in cols:
            ok = desc[a].notna() & desc[b].notna()
            r = spearmanr(desc.loc[ok, a], desc.loc[ok, b])
            assert rho.loc[a, b] == pytest.approx(r.statistic, abs=1e-12)
            assert pval.loc[a, b] == pytest.approx(r.pvalue, rel=1e-9, abs=1e-300)
    assert rho.loc["D_tracer_cm2_s", "hop_length_mean_A"] > 0.5  # the planted correlation is found

    pca = json.load(open(paths["pca"]))
    full = pca["columns"]
    assert "lindemann_ratio_d" not in full and "lindemann_ratio_d" in pca["excluded_incomplete"]
    Z = StandardScaler().fit_transform(desc[full].to_numpy(float))
    ref = PCA(n_components=min(Z.shape)).fit(Z)
    np.testing.assert_allclose(pca["explained_variance_ratio"], ref.explained_variance_ratio_, rtol=1e-10)
    np.testing.assert_allclose(np.abs(pca["loadings"]), np.abs(ref.components_), atol=1e-8)  # up to sign

    km = json.load(open(paths["kmeans"]))
    sil = {k: silhouette_score(Z, KMeans(n_clusters=k, n_init=10, random_state=0).fit(Z).labels_)
           for k in range(2, 9)}
    best = max(sil, key=sil.get)
    assert km["k"] == best
    for k, s in sil.items():
        assert km["silhouette_by_k"][str(k)] == pytest.approx(s, rel=1e-10)
    labels = pd.read_csv(paths["classes"])["class"].to_numpy()
    ref_labels = KMeans(n_clusters=best, n_init=10, random_state=0).fit(Z).labels_
    assert adjusted_rand_score(labels, ref_labels) == pytest.approx(1.0)


# ---------------------------------------------------------------------------
# a real cluster: `dask scheduler` + 2 `dask worker` processes on loopback


def _make_runs_module():
    spec = importlib.util.spec_from_file_location("make_caf2_runs", os.path.join(ROOT, "examples", "database",
                                                                                   "make_caf2_runs.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def caf2_manifest(tmp_path_factory):
    pytest.importorskip("lammps")
    d = tmp_path_factory.mktemp("caf2db")
    path = _make_runs_module().make_runs(str(d), [1000.0, 1300.0, 1500.0, 1700.0], nsteps=1000, nequil=300, every=5)
    with open(path, "a") as fh:  # a broken run: must be listed, never fatal to the others
        fh.write("broken,missing.dump,caf2_1000K.data,F,1000,,CaF2,fluorite,0.002\n")
    return path


class _Cluster:
    """A ``dask scheduler`` and worker processes started with ``python -m dask`` (stopped by their pids)."""

    def __init__(self, tmp, n_workers=2):
        self.env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.file = str(tmp / "scheduler.json")
        self.log = open(tmp / "cluster.log", "w")
        self.sched = subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                                       "--no-dashboard", "--scheduler-file", self.file], env=self.env,
                                      stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 600  # generous: a busy machine is slow, not wrong
        while time.time() < deadline and not (os.path.exists(self.file) and os.path.getsize(self.file) > 0):
            time.sleep(0.1)
        self.address = json.load(open(self.file))["address"]
        self.workers = [self.add_worker(f"w{i}") for i in range(n_workers)]

    def add_worker(self, name):
        p = subprocess.Popen([sys.executable, "-m", "dask", "worker", self.address, "--nthreads", "1", "--no-nanny",
                              "--no-dashboard", "--name", name], env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        return p

    def wait_workers(self, n, timeout=600):
        from distributed import Client

        with Client(self.address, timeout="300s") as c:
            c.wait_for_workers(n, timeout=timeout)

    def close(self):
        for p in [*self.workers, self.sched]:
            if p.poll() is None:
                p.terminate()
        for p in [*self.workers, self.sched]:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.log.close()


def _cli(manifest, out, address):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "iondiff_stream.cli", "database", manifest, "--out", out,
                             "--scheduler", address, "--no-figures"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _done_times(out, names):
    return {n: os.path.getmtime(os.path.join(out, "runs", n, "DONE")) for n in names if run_status(out, n) == "done"}


def test_database_on_a_cluster_survives_a_killed_worker(caf2_manifest, tmp_path):
    names = ["CaF2_1000K", "CaF2_1300K", "CaF2_1500K", "CaF2_1700K"]
    out = str(tmp_path / "db")
    cl = _Cluster(tmp_path)
    try:
        cl.wait_workers(2)
        proc = _cli(caf2_manifest, out, cl.address)
        t0 = time.time()
        while time.time() - t0 < 300 and proc.poll() is None and not _done_times(out, names):
            time.sleep(0.2)
        before = _done_times(out, names)
        assert before and len(before) < len(names), "no run finished before the kill, or all of them"
        victim = cl.workers[0]
        os.kill(victim.pid, signal.SIGKILL)  # a worker dies mid-way (it was busy: 2 workers, 4+1 runs) ...
        proc.kill()  # ... and the build itself is killed: the worst case
        victim.wait(10)
        proc.wait(10)
        # nothing finished was lost or damaged
        after = _done_times(out, names)
        for n, t in before.items():
            assert after[n] == t
            assert json.load(open(os.path.join(out, "runs", n, "descriptors.json")))["values"]["name"] == n
        assert len(after) < len(names)  # runs were left unfinished
        # a re-run (with a fresh worker) completes the rest and skips what is finished
        cl.workers.append(cl.add_worker("w2"))
        cl.wait_workers(2)
        proc2 = _cli(caf2_manifest, out, cl.address)
        stdout2, stderr2 = proc2.communicate(timeout=600)
        assert proc2.returncode == 0, stderr2[-2000:]
        res2 = json.loads(stdout2[: stdout2.rindex("}") + 1])
        final = _done_times(out, names)
        assert sorted(final) == names
        assert res2["skipped_already_finished"] >= len(before)
        assert res2["finished"] == len(names)
        for n, t in before.items():
            assert final[n] == t  # not redone
        assert list(res2["failed"]) == ["broken"] and "not found" in res2["failed"]["broken"]
        # a further re-run analyses nothing but the broken run again, keeping it listed
        proc3 = _cli(caf2_manifest, out, cl.address)
        stdout3, _ = proc3.communicate(timeout=300)
        res3 = json.loads(stdout3[: stdout3.rindex("}") + 1])
        assert res3["skipped_already_finished"] == len(names) and list(res3["failed"]) == ["broken"]
        assert _done_times(out, names) == final
        assert not os.listdir(os.path.join(out, "runs", ".work"))  # folders of killed attempts are cleaned up
    finally:
        cl.close()
    # the database itself: one row per finished run, physics of the CaF2 series
    with open(os.path.join(out, "descriptors.csv"), newline="") as fh:
        rows = {r["name"]: r for r in csv.DictReader(fh)}
    assert sorted(rows) == names
    s = [float(rows[n]["vib_entropy_kB_per_atom_all"]) for n in names]
    cv = [float(rows[n]["heat_capacity_kB_per_atom_all"]) for n in names]
    assert all(np.diff(s) > 0)  # S_vib rises with T
    assert all(2.9 < c < 3.0 for c in cv) and all(np.diff(cv) > 0)
    for n in names:
        T = float(rows[n]["temperature_K"])
        assert float(rows[n]["T_kinetic_K_all"]) == pytest.approx(T, rel=0.08)
        assert rows[n]["vdos_source"] == "velocities"


@pytest.mark.slow
def test_database_of_the_shared_runs(tmp_path):
    """The shared AIMD runs on a local Dask cluster: every run finishes; what their sampling allows is checked."""
    from conftest import shared

    from iondiff_stream.database import build_database

    spec = importlib.util.spec_from_file_location("full_database", os.path.join(ROOT, "examples", "database",
                                                                                 "full_database.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.shared_rows(os.path.dirname(shared("LGPS_600K_pmg_diffusion")))
    assert len(rows) == 5
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    res = build_database(str(manifest), str(tmp_path / "db"), n_jobs=2)
    assert not res.failures and len(res.done) == 5
    with open(tmp_path / "db" / "descriptors.csv", newline="") as fh:
        d = {r["name"]: r for r in csv.DictReader(fh)}
    for name, r in d.items():
        z = np.load(tmp_path / "db" / "runs" / name / "vdos.npz")
        assert np.trapezoid(z["dos_per_THz_all"], z["freq_THz_all"]) == pytest.approx(3.0, rel=1e-6)
        assert r["vdos_source"] == "positions"
        assert float(r["heat_capacity_kB_per_atom_all"]) <= 3.0
    # argyrodite: 100 fs frames, Nyquist 5 THz cuts the Li/PS4 spectrum: flagged by the weight near the limit and
    # by the kinetic temperature the spectrum carries (about half of 500 K)
    for x in ("0p", "50p", "100p"):
        r = d[f"argyrodite_{x}"]
        assert float(r["nyquist_THz"]) == pytest.approx(5.0)
        assert float(r["vdos_weight_near_nyquist"]) > 0.1 and float(r["T_kinetic_over_T"]) < 0.75
    # Na3PS4: 20 fs raw AIMD frames, Nyquist 25 THz above the PS4 stretching modes: equipartition holds
    assert float(d["Na3PS4_800K"]["T_kinetic_over_T"]) == pytest.approx(1.0, abs=0.1)
    assert float(d["Na3PS4_800K"]["vdos_weight_near_nyquist"]) < 0.01
    # LGPS: the stored coordinates are smoothed (pymatgen test file): the spectrum carries ~1% of 600 K: flagged
    assert float(d["LGPS_600K"]["T_kinetic_over_T"]) < 0.1


def test_changed_manifest_row_is_analysed_again(tmp_path):
    """Cache: a finished run is skipped, unless the inputs of its manifest row changed (labels do not count)."""
    from distributed import Client, LocalCluster

    from iondiff_stream.database import build_database
    from iondiff_stream.synthetic.runs import make_run

    run = make_run(n_frames=300, n_cells=3, n_vacancies=3, hop_prob=5e-3, n_chains=0, framework=True, seed=5)
    run.write_lammps(str(tmp_path / "s.dump"), str(tmp_path / "s.data"))
    head = "name,files,topology,mobile,temperature_K,timestep_ps,material,md_timestep_ps\n"
    manifest = tmp_path / "m.csv"
    out = str(tmp_path / "db")
    done = os.path.join(out, "runs", "syn", "DONE")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        manifest.write_text(head + "syn,s.dump,s.data,Li,500,,A,0.005\n")
        r1 = build_database(str(manifest), out, client=client, figures=False)
        assert r1.done == ["syn"] and not r1.failures
        t1 = os.path.getmtime(done)
        manifest.write_text(head + "syn,s.dump,s.data,Li,500,,renamed material,0.005\n")
        r2 = build_database(str(manifest), out, client=client, figures=False)
        assert r2.skipped == ["syn"] and os.path.getmtime(done) == t1
        with open(os.path.join(out, "descriptors.csv"), newline="") as fh:
            assert next(csv.DictReader(fh))["material"] == "renamed material"
        manifest.write_text(head + "syn,s.dump,s.data,Li,700,,renamed material,0.005\n")
        r3 = build_database(str(manifest), out, client=client, figures=False)
        assert r3.skipped == [] and r3.done == ["syn"]
        with open(os.path.join(out, "descriptors.csv"), newline="") as fh:
            assert float(next(csv.DictReader(fh))["temperature_K"]) == 700.0


def test_transport_values_without_meaning_are_skipped_and_named(tmp_path):
    """Runs whose D* is null (too short, no long-range diffusion): left out of Spearman/PCA, listed with why."""
    entries = _fake_db(tmp_path)
    for e, status in zip(entries[:2], ("too short", "no long-range diffusion")):
        p = tmp_path / "runs" / e.name / "descriptors.json"
        d = json.load(open(p))
        d["values"].update({"D_tracer_cm2_s": None, "D_tracer_status": status, "haven_ratio": None,
                            "haven_ratio_status": status})
        json.dump(d, open(p, "w"))
    paths = write_statistics(str(tmp_path), entries, figures=False)
    import csv

    skipped = list(csv.DictReader(open(paths["skipped_values"])))
    assert {(r["name"], r["column"], r["status"]) for r in skipped} == {
        (entries[0].name, "D_tracer_cm2_s", "too short"), (entries[0].name, "haven_ratio", "too short"),
        (entries[1].name, "D_tracer_cm2_s", "no long-range diffusion"),
        (entries[1].name, "haven_ratio", "no long-range diffusion")}
    pca = json.load(open(paths["pca"]))
    assert "D_tracer_cm2_s" not in pca["columns"] and len(pca["skipped_values"]) == 4 and pca["skipped_note"]
    rho = __import__("pandas").read_csv(paths["spearman"], index_col=0)
    assert "D_tracer_status" not in rho.columns and "D_tracer_cm2_s" in rho.columns  # pairwise: 12 runs left
    from iondiff_stream.database import DatabaseResult, write_html

    page = open(write_html(str(tmp_path), entries, DatabaseResult())).read()
    assert "left out of Spearman and PCA" in page and "D_tracer_cm2_s null (too short)" in page


def test_new_descriptor_reaches_cached_runs(tmp_path, monkeypatch):
    """Cache key = package version + manifest inputs + analysis parameters: a release with a new descriptor
    redoes the runs cached before it (reported, with why); a changed analysis parameter does too."""
    from distributed import Client, LocalCluster

    import iondiff_stream
    import iondiff_stream.pipeline.run as pipeline_run
    from iondiff_stream.database import build_database, cache_key, read_manifest, stale_reason
    from iondiff_stream.synthetic.runs import make_run

    run = make_run(n_frames=300, n_cells=3, n_vacancies=3, hop_prob=5e-3, n_chains=0, framework=True, seed=5)
    run.write_lammps(str(tmp_path / "s.dump"), str(tmp_path / "s.data"))
    manifest = tmp_path / "m.csv"
    manifest.write_text("name,files,topology,mobile,temperature_K,timestep_ps,material,md_timestep_ps\n"
                        "syn,s.dump,s.data,Li,500,,A,0.005\n")
    out = str(tmp_path / "db")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        r1 = build_database(str(manifest), out, client=client, figures=False)
        assert r1.done == ["syn"] and not r1.redone
        with open(os.path.join(out, "runs", "syn", "descriptors.json")) as fh:
            stored = json.load(fh)
        assert stored["cache_key"]["package_version"] == iondiff_stream.__version__
        assert stored["cache_key"]["parameters"]["hops"]["method"] == "sites"
        with open(os.path.join(out, "descriptors.csv"), newline="") as fh:
            row1 = next(csv.DictReader(fh))
        assert "new_descriptor_per_ps" not in row1

        # the next release: a new version that computes one more descriptor
        original = pipeline_run.run_descriptors

        def with_new_descriptor(run, *args, **kwargs):
            desc = original(run, *args, **kwargs)
            desc.values["new_descriptor_per_ps"] = run.data.n_frames / float(run.data.times_ps[-1])
            return desc

        monkeypatch.setattr(pipeline_run, "run_descriptors", with_new_descriptor)
        monkeypatch.setattr(iondiff_stream, "__version__", "99.0.0")
        r2 = build_database(str(manifest), out, client=client, figures=False)
        assert r2.skipped == [] and r2.done == ["syn"]
        assert r2.redone == {"syn": f"package version {stored['cache_key']['package_version']} -> 99.0.0"}
        with open(os.path.join(out, "redone.json")) as fh:
            assert json.load(fh) == r2.redone
        with open(os.path.join(out, "descriptors.csv"), newline="") as fh:
            row2 = next(csv.DictReader(fh))
        assert float(row2["new_descriptor_per_ps"]) == pytest.approx(300 / float(row1["total_time_ps"]), rel=1e-9)
        assert float(row2["n_hops"]) == float(row1["n_hops"])  # same analysis otherwise

        r3 = build_database(str(manifest), out, client=client, figures=False)  # nothing changed: reused
        assert r3.skipped == ["syn"] and not r3.redone

    # a stored key with another hop parameter is stale, and says which
    entry = read_manifest(str(manifest))[0]
    path = os.path.join(out, "runs", "syn", "descriptors.json")
    with open(path) as fh:
        d = json.load(fh)
    assert stale_reason(out, entry) is None and d["cache_key"] == json.loads(json.dumps(cache_key(entry)))
    d["cache_key"]["parameters"]["hops"]["min_residence_ps"] = 0.5
    with open(path, "w") as fh:
        json.dump(d, fh)
    assert stale_reason(out, entry) == "analysis parameters changed: hops.min_residence_ps"
