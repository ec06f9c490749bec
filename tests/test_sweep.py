"""Sweeps: the grid runs once per point, resumes after SIGKILL with exactly N complete
runs, runs in local worker processes and on a real local Ray cluster."""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import sys
import time
from pathlib import Path

import pytest
import yaml

from snn.results import list_runs
from snn.sweep import run_sweep


CACHE = Path(tempfile.mkdtemp(prefix="snn-test-models-"))  # the sweeps' model, trained once for all tests here


def sweep_cfg(tmp_path: Path, timesteps=(2, 3), methods=("max", "percentile"), name="sw") -> Path:
    cfg = {"name": name, "threads": 1, "data": {"name": "digits", "test_limit": 100},
           "model": {"name": "mlp", "kwargs": {"hidden": [32]}},
           "train": {"epochs": 4, "lr": 0.01, "cache_dir": str(CACHE)},
           "energy": {"hardware": ["loihi"]}, "output": {"report": False, "save_network": False},
           "sweep": {"sim.timesteps": list(timesteps), "convert.method": list(methods)}}
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return p


def points(results: Path, name: str = "sw") -> list[tuple[int, str]]:
    out = []
    for r in list_runs(results, name):
        s = yaml.safe_load((r / "config.yaml").read_text())
        out.append((s["sim"]["timesteps"], s["convert"]["method"]))
    return sorted(out)


def test_sweep_runs_each_point_once_and_resumes(tmp_path):
    cfg, res_dir = sweep_cfg(tmp_path), tmp_path / "results"
    logs: list[str] = []
    res = run_sweep(cfg, results_dir=res_dir, log=logs.append)
    assert (res.total, len(res.ran), len(res.skipped), res.failed) == (4, 4, 0, [])
    assert points(res_dir) == [(2, "max"), (2, "percentile"), (3, "max"), (3, "percentile")]
    assert (res.compare_dir / "compare.md").is_file()
    md = (res.compare_dir / "compare.md").read_text()
    assert "timesteps=2 method=max" in md and "timesteps=3 method=percentile" in md
    again = run_sweep(cfg, results_dir=res_dir, log=logs.append)
    assert (len(again.ran), sorted(again.skipped)) == (0, sorted(res.ran))
    assert any("4 already complete, 0 to run" in m for m in logs)
    # growing the grid runs only the new points
    bigger = run_sweep(sweep_cfg(tmp_path, timesteps=(2, 3, 5)), results_dir=res_dir, log=logs.append)
    assert (len(bigger.ran), len(bigger.skipped)) == (2, 4) and len(list_runs(res_dir, "sw")) == 6


def test_plan_runs_a_repeated_value_once(tmp_path):
    from snn.config import load_config
    from snn.sweep import plan

    todo, done = plan(load_config(sweep_cfg(tmp_path, timesteps=(2, 2, 3))), tmp_path / "results")
    assert [p for p, _ in todo] == [{"sim.timesteps": t, "convert.method": m} for t in (2, 3)
                                    for m in ("max", "percentile")] and done == []


def test_failed_point_does_not_stop_the_others(tmp_path):
    cfg = yaml.safe_load(sweep_cfg(tmp_path).read_text())
    cfg["sweep"] = {"sim.timesteps": [2], "sim.options": [{}, {"impl": "no_such_impl"}]}  # a value the backend refuses
    res = run_sweep(cfg, results_dir=tmp_path / "results", log=lambda m: None)
    assert len(res.ran) == 1 and len(res.failed) == 1 and "no_such_impl" in res.failed[0][1]
    assert not [p for p in (tmp_path / "results" / "sw").iterdir() if p.name.startswith(".partial")]


def _train_first(cfg: Path) -> None:
    """Train (and cache) the sweep's model here, so that the workers only load it."""
    from snn.config import expand_sweep, load_config
    from snn.runner import build_model

    build_model(expand_sweep(load_config(cfg))[0][1], progress=False, log=lambda m: None)


def _sweep_cmd(cfg: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "snn.cli", "sweep", str(cfg), *extra]


@pytest.mark.slow
def test_sigkill_half_way_then_resume_gives_exactly_n_runs(tmp_path):
    cfg = sweep_cfg(tmp_path, timesteps=(2, 3, 4, 5, 6, 7))  # 12 runs: points take a fraction of a second
    n = 12
    res_dir = tmp_path / "results"
    _train_first(cfg)
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.Popen(_sweep_cmd(cfg, "--workers", "2", "--results", str(res_dir)), cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(list_runs(res_dir, "sw") if res_dir.exists() else []) < 3:
        time.sleep(0.005)  # kill soon after the third run is published
    os.kill(proc.pid, signal.SIGKILL)  # the driver only: its workers must die with it
    proc.wait(timeout=30)
    time.sleep(1.0)
    done_before = {p.name for p in list_runs(res_dir, "sw")}
    assert 3 <= len(done_before) < n, "the sweep was not killed half-way"
    time.sleep(2.0)
    assert {p.name for p in list_runs(res_dir, "sw")} == done_before  # no orphan worker finished a run
    p = subprocess.run(_sweep_cmd(cfg, "--workers", "2", "--results", str(res_dir)), cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"{len(done_before)} already complete, {n - len(done_before)} to run" in p.stderr
    final = list_runs(res_dir, "sw")
    assert len(final) == n and done_before <= {r.name for r in final}
    assert len(points(res_dir)) == n == len(set(points(res_dir)))
    assert not [q for q in (res_dir / "sw").iterdir() if q.name.startswith(".partial")]


@pytest.mark.ray
def test_sweep_on_a_local_ray_cluster(tmp_path):
    pytest.importorskip("ray")
    cfg, res_dir = sweep_cfg(tmp_path, timesteps=(2,)), tmp_path / "results"
    _train_first(cfg)
    p = subprocess.run(_sweep_cmd(cfg, "--ray", "--workers", "2", "--results", str(res_dir)), cwd=tmp_path,
                       env={**os.environ, "MPLBACKEND": "Agg"}, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "on Ray (local cluster)" in p.stderr and "2/2 runs complete" in p.stdout
    assert points(res_dir) == [(2, "max"), (2, "percentile")]
    # quiet: no Ray banner or token warning; its logs kept in the results folder, not /tmp
    assert "Token authentication" not in p.stderr and "Started a local Ray instance" not in p.stderr
    assert list((res_dir / "sw" / "ray-logs").glob("session_*/raylet.out"))
