"""The experiment pipeline on digits: what a run stores, that it is reproducible and
atomic, and that truncating a simulation equals a shorter run."""
from __future__ import annotations

import json
import re
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
    assert cfg.model.kwargs == {"hidden": [48]} and cfg.convert.method is None  # null: picked by snn.convert
    assert r.summary["method"] == "percentile" and r.summary["conversion"]["auto"] == []


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
    assert list(e["energy"]) == ["45nm-fp32", "loihi"]
    for b in ("dynamic", "total"):
        assert len(e["per_step"][f"snn_{b}_j"]["loihi"]) == 12
        assert s["energy"]["loihi"][f"snn_{b}_j"] == pytest.approx(e["energy"]["loihi"][f"snn_{b}_j"])
        assert e["per_step"][f"snn_{b}_j"]["loihi"][-1] == pytest.approx(e["energy"]["loihi"][f"snn_{b}_j"])
    assert s["energy"]["45nm-fp32"]["snn_total_j"] is None and s["energy"]["45nm-fp32"]["basis"] == "dynamic"
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
    for text in ("## Accuracy", "ANN (mlp", "SNN (snntorch, T = 12", "## Energy", "loihi",
                 "## Firing rates of the neuron layers",
                 "![", "## Environment", "## Configuration"):
        assert text in md, text
    assert f"{100 * r.summary['snn_accuracy']:.2f}%" in md
    html = (r.path / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 and "<table>" in html


def test_failed_run_leaves_nothing(tmp_path, monkeypatch):
    import snn.report

    def boom(*a, **k):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(snn.report, "write_report", boom)
    with pytest.raises(RuntimeError, match="plotting failed"):
        run_experiment(small(tmp_path), results_dir=tmp_path / "results", progress=False, log=lambda m: None)
    assert list((tmp_path / "results" / "rt").iterdir()) == []


def test_one_pass_loads_each_split_once_and_builds_the_model_once(tmp_path, monkeypatch):
    """Data and model once per run, whether the model is trained or loaded from the cache;
    the report is rendered from memory (no read-back of the run); stage timings and the
    total are stored and printed."""
    import snn.data
    import snn.report
    import snn.results
    import snn.zoo

    calls: dict[str, list] = {"load_dataset": [], "create_model": [], "read_run": []}

    def counted(module, name):
        real = getattr(module, name)

        def wrapper(*a, **k):
            calls[name].append(a[:2])
            return real(*a, **k)

        monkeypatch.setattr(module, name, wrapper)

    counted(snn.data, "load_dataset")
    counted(snn.zoo, "create_model")
    counted(snn.results, "read_run")
    monkeypatch.setattr(snn.report, "read_run", snn.results.read_run)
    cfg = small(tmp_path, train={"epochs": 2, "cache_dir": str(tmp_path / "cache")})
    for cached in (False, True):
        logs: list[str] = []
        r = run_experiment(cfg, results_dir=tmp_path / "results", progress=False, log=logs.append)
        assert sorted(s for _, s in calls["load_dataset"]) == ["test", "train"], calls
        assert [n for n, *_ in calls["create_model"]] == ["mlp"] and calls["read_run"] == []
        assert r.summary["model_source"] == "trained"  # cache hit or not: the same summary (test_determinism)
        assert cached == any("trained weights loaded from the cache" in m for m in logs)
        t = r.summary["timings_s"]
        assert list(t) == ["data", "model", "convert", "build", "simulate", "energy", "report", "total"]
        assert t["total"] >= sum(v for k, v in t.items() if k != "total") - 0.01
        assert f"run complete in {t['total']:.1f} s (data {t['data']:.1f} s, model" in logs[-1]
        assert json.loads((r.path / "summary.json").read_text()) == r.summary
        for v in calls.values():
            v.clear()


def test_summary_has_the_operation_counts(run):
    r, _ = run
    s, tot = r.summary, r.data.energy["totals"]
    assert (s["synops"], s["neuron_updates"], s["macs_dense"]) == (tot["synops"], tot["neuron_updates"],
                                                                   tot["macs_dense"])
    assert s["synops"] > 0 and s["neuron_updates"] == tot["neurons"] * 12 and s["macs_dense"] == 64 * 48 + 48 * 10
    assert s["op_ratio"] == pytest.approx((tot["synops"] + tot["input_macs"] + tot["current_macs"]) / tot["macs_dense"])
    stored = json.loads((r.path / "summary.json").read_text())
    assert stored["op_ratio"] == s["op_ratio"] and stored["synops"] == s["synops"]


def test_config_errors_come_before_any_data_is_loaded(tmp_path, monkeypatch):
    import snn.data

    def no_data(*a, **k):
        raise AssertionError("data loaded before the config was checked")

    monkeypatch.setattr(snn.data, "load_dataset", no_data)
    monkeypatch.setattr(snn.data, "dataset_label", no_data)
    bad = tmp_path / "p.yaml"
    bad.write_text("profiles:\n  chip:\n    e_mac: 1e-12\n    e_ac: 1e-13\n    e_neuron: 1e-13\n    e_synop: 2\n")
    nodata = {"data": {"name": "mnist", "root": str(tmp_path / "nowhere")}, "model": {"name": "lenet5"}}
    for over, msg in [({"convert": {"v_init": 1.0}}, "convert.v_init: IF v_init must be in [0, 1)"),
                      ({"energy": {"profiles_file": str(bad)}},
                       f"energy.profiles_file: {bad}: profile 'chip': unknown key(s) e_synop"),
                      ({"energy": {"hardware": ["nochip"], "profiles_file": str(tmp_path / "none.yaml")}},
                       "energy.profiles_file: no such profile file")]:
        with pytest.raises(ConfigError, match=re.escape(msg)):
            snn.run_experiment(small(tmp_path, **nodata, **over), results_dir=tmp_path / "results")
    assert not (tmp_path / "results").exists()


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
