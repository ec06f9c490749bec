"""The experiment pipeline on digits: what a run stores, that it is reproducible and
atomic, and that truncating a simulation equals a shorter run."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch.nn as nn
import yaml

import snn
from snn.config import config_hash, load_config
from snn.errors import ConfigError, DataError
from snn.results import list_runs, read_results
from snn.runner import curve_points, run_experiment


CACHE = Path(tempfile.mkdtemp(prefix="snn-test-models-"))  # trained once, shared by the tests here


def small(tmp_path, **over):
    cfg = {"name": "rt", "threads": 1, "data": {"name": "digits", "test_limit": 150},
           "model": {"name": "mlp", "kwargs": {"hidden": [48]}}, "train": {"epochs": 8, "lr": 0.01,
                                                                            "cache_dir": str(CACHE)},
           "sim": {"timesteps": 12}, "energy": {"hardware": ["45nm-fp32", "loihi"]}}
    for k, v in over.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    return cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runner")
    return run_experiment(small(tmp), results_dir=tmp / "results", progress=False, log=lambda m: None), tmp


def test_run_stores_everything(run):
    r, tmp = run
    files = {p.name for p in r.path.iterdir()}
    assert {"config.yaml", "results.h5", "summary.json", "network.h5", "report.md", "report.html", "COMPLETE",
            "accuracy_vs_timesteps.png", "firing_rates.png"} <= files
    assert r.path.parent == tmp / "results" / "rt"
    cfg = load_config(yaml.safe_load((r.path / "config.yaml").read_text()))
    h = config_hash(cfg)
    assert r.path.name.endswith("-" + h) and r.summary["config_hash"] == h
    assert (r.path / "config.yaml").read_text().startswith(f"# config hash: {h}")
    assert cfg.model.kwargs == {"hidden": [48]} and cfg.convert.method == "percentile"  # defaults resolved


def test_results_agree_with_summary_and_network(run):
    r, _ = run
    d, s = r.data, r.summary
    assert d.accuracy.shape == (12,) and d.n_samples == s["n_test"] == 150
    assert s["snn_accuracy"] == pytest.approx(d.accuracy[-1]) and s["ann_accuracy"] == pytest.approx(d.ann_accuracy)
    assert d.ann_accuracy > 0.8 and s["snn_accuracy"] > d.ann_accuracy - 0.1
    assert s["accuracy_at"]["12"] == pytest.approx(d.accuracy[-1])
    net = snn.load(r.path / "network.h5")
    assert set(d.spikes) == set(net.graph.recorded_nodes())
    for node, counts in d.spikes.items():
        assert counts.shape == (12,) and d.neurons[node] == int(np.prod(net.graph.shapes[node]))
    assert s["firing_rates"] == pytest.approx(d.firing_rates())
    e = d.energy
    assert list(e["energy"]) == ["45nm-fp32", "loihi"] and len(e["per_step"]["snn_j"]["loihi"]) == 12
    assert s["energy"]["loihi"]["snn_j"] == pytest.approx(e["energy"]["loihi"]["snn_j"])
    assert e["per_step"]["snn_j"]["loihi"][-1] == pytest.approx(e["energy"]["loihi"]["snn_j"])
    env = d.environment
    assert env["torch"] and env["git_commit"] and env["device"] == "cpu"
    assert d.training and "loss" in json.dumps(d.training)


def test_rerun_reproduces_numbers_and_reuses_training(run):
    r, tmp = run
    # through the package entry point, with an override that restates the config's value
    again = snn.run_experiment(small(tmp, sim={"timesteps": 5}), overrides=["sim.timesteps=12"],
                               results_dir=tmp / "results", progress=False, log=lambda m: None)
    assert again.path != r.path and again.summary["config_hash"] == r.summary["config_hash"]
    np.testing.assert_array_equal(again.data.accuracy, r.data.accuracy)
    assert again.summary["ann_accuracy"] == r.summary["ann_accuracy"]
    assert again.summary["timings_s"]["model"] < max(2.0, r.summary["timings_s"]["model"])


def test_report_shows_the_numbers(run):
    r, _ = run
    md = (r.path / "report.md").read_text()
    for text in ("## Accuracy", "ANN (mlp", "SNN (snntorch, T = 12", "## Energy", "loihi", "## Per-layer firing rates",
                 "![", "## Environment", "## Configuration"):
        assert text in md, text
    assert f"{100 * r.summary['snn_accuracy']:.2f}%" in md
    html = (r.path / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 and "<table>" in html


def test_failed_run_leaves_nothing(tmp_path, monkeypatch):
    import snn.report

    def boom(*a, **k):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(snn.report, "build_report", boom)
    with pytest.raises(RuntimeError, match="plotting failed"):
        run_experiment(small(tmp_path), results_dir=tmp_path / "results", progress=False, log=lambda m: None)
    assert list((tmp_path / "results" / "rt").iterdir()) == []


def test_bad_input_writes_nothing(tmp_path):
    with pytest.raises(ConfigError, match="sim.timesteps"):
        run_experiment(small(tmp_path, sim={"timesteps": 0}), results_dir=tmp_path / "results")
    with pytest.raises(DataError, match="files go in"):
        run_experiment(small(tmp_path, data={"name": "mnist", "root": str(tmp_path)}, model={"name": "lenet5"}),
                       results_dir=tmp_path / "results")
    assert not (tmp_path / "results").exists()


class DigitsNet(nn.Module):
    """A user model given as ``tests.test_runner:DigitsNet`` in a config."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))

    def forward(self, x):
        return self.body(x)


def test_user_model_with_checkpoint(tmp_path):
    import torch

    torch.manual_seed(0)
    ckpt = tmp_path / "w.pt"
    torch.save(DigitsNet(16).state_dict(), ckpt)
    r = run_experiment(small(tmp_path, model={"name": "tests.test_runner:DigitsNet", "kwargs": {"width": 16},
                                              "checkpoint": str(ckpt)}),
                       results_dir=tmp_path / "results", progress=False, log=lambda m: None)
    assert r.summary["model_source"] == f"checkpoint {ckpt}" and r.data.training == []
    with pytest.raises(ConfigError, match="cannot import module"):
        run_experiment(small(tmp_path, model={"name": "no_such_pkg.mod:Net"}), results_dir=tmp_path / "results")
    with pytest.raises(ConfigError, match="has no attribute 'Nope'"):
        run_experiment(small(tmp_path, model={"name": "tests.test_runner:Nope"}), results_dir=tmp_path / "results")


def test_curve_points():
    assert curve_points(1) == [1]
    pts = curve_points(64)
    assert pts[0] == 1 and pts[-1] == 64 and pts == sorted(set(pts)) and len(pts) <= 9
