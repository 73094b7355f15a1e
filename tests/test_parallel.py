"""Many runs on a real Dask cluster (local, in-process workers for speed)."""

import pytest

from iondiff_stream.parallel import RunSpec, analyze_many
from iondiff_stream.synthetic import make_run


def test_analyze_many_on_dask(tmp_path):
    from distributed import Client, LocalCluster

    specs, runs = [], []
    for k in range(3):
        run = make_run(n_frames=800, sigma_A=0.18, hop_prob=3e-3, n_chains=1, framework=True, seed=50 + k)
        run.write_lammps(str(tmp_path / f"r{k}.dump"), str(tmp_path / f"r{k}.data"))
        specs.append(RunSpec([str(tmp_path / f"r{k}.dump")], "Li", str(tmp_path / f"out{k}"),
                             {"topology": str(tmp_path / f"r{k}.data"), "md_timestep_ps": 0.005}))
        runs.append(run)
    specs.append(RunSpec([str(tmp_path / "missing.dump")], "Li", str(tmp_path / "bad"), {}))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False) as cluster, Client(cluster) as client:
        res = analyze_many(specs, client=client)
    assert len(res) == 4
    for r, run in zip(res[:3], runs):
        assert r["n_frames"] == 800
        assert r["n_hops"] == pytest.approx(len(run.events), abs=max(1, 0.03 * len(run.events)))
    assert "error" in res[3] and "not found" in res[3]["error"]
