"""Config schema: defaults, every kind of bad input naming its key path, --set overrides,
the hash, sweep expansion, and the shipped configs."""
from __future__ import annotations

from pathlib import Path

import pytest

from snn.config import (ExperimentConfig, apply_overrides, config_hash, expand_sweep, load_config, parse_set,
                        read_yaml, to_yaml, validate)
from snn.errors import ConfigError, SnnError

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def err(raw, overrides=()):
    with pytest.raises(ConfigError) as e:
        load_config(raw, overrides)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_defaults_fill_every_section():
    cfg = load_config({"name": "x"})
    assert isinstance(cfg, ExperimentConfig)
    assert (cfg.data.name, cfg.model.name, cfg.sim.backend, cfg.sim.timesteps) == ("digits", "mlp", "snntorch", 64)
    assert cfg.convert.method == "percentile" and cfg.sweep == {}
    assert issubclass(ConfigError, SnnError)


@pytest.mark.parametrize("raw, expected", [
    ({"name": "x", "sim": {"timestep": 4}}, "sim.timestep: unknown key (valid: backend, timesteps"),
    ({"name": "x", "train": {"lerning_rate": 0.1}}, "train.lerning_rate: unknown key"),
    ({"name": "x", "simulation": {}}, "simulation: unknown key"),
    ({"name": "x", "sim": {"timesteps": -4}}, "sim.timesteps: Input should be greater than or equal to 1 (got -4)"),
    ({"name": "x", "sim": {"timesteps": 0}}, "sim.timesteps"),
    ({"name": "x", "sim": {"timesteps": "many"}}, "sim.timesteps: Input should be a valid integer"),
    ({"name": "x", "sim": {"timesteps": 3.5}}, "sim.timesteps"),
    ({"name": "x", "train": {"lr": -1}}, "train.lr"),
    ({"name": "x", "convert": {"percentile": 120}}, "convert.percentile"),
    ({"name": "x", "data": {"name": "imagenet"}}, "data.name: unknown dataset 'imagenet'; valid: digits"),
    ({"name": "x", "model": {"name": "transformer"}}, "model.name: unknown model 'transformer'"),
    ({"name": "x", "model": {"name": "not a:path"}}, "model.name"),
    ({"name": "x", "sim": {"backend": "nest"}}, "sim.backend: unknown backend 'nest'; valid: snntorch, brian2"),
    ({"name": "x", "sim": {"encoding": "latency"}}, "sim.encoding: unknown encoding"),
    ({"name": "x", "sim": {"device": "tpu"}}, "sim.device"),
    ({"name": "x", "convert": {"method": "robust"}}, "convert.method: unknown normalisation method"),
    ({"name": "x", "sim": 5}, "sim: Input should be a valid dictionary"),
    ({"sim": {}}, "name: required key is missing"),
    ({"name": "bad/name"}, "name: String should match pattern"),
    ({"name": "x", "model": {"checkpoint": "w.pt", "pretrained": True}}, "model: give either checkpoint or pretrained"),
    ({"name": "x", "sweep": {"sim.timesteps": []}}, "sweep: 'sim.timesteps' has an empty list"),
    ({"name": "x", "sweep": {"sim.timesteps": 8}}, "sweep.sim.timesteps: Input should be a valid list"),
    ({"name": "x", "sweep": {"sim.timesteps": [8, -1]}}, "sweep sim.timesteps=-1: sim.timesteps"),
    ({"name": "x", "sweep": {"sim.timestepz": [8]}}, "sim.timestepz: unknown key"),
    ({"name": "x", "sweep": {"output.dir": ["a"]}}, "'output.dir' cannot be swept"),
])
def test_bad_values_name_the_key_path(raw, expected):
    assert expected in err(raw)


def test_several_errors_on_one_line():
    msg = err({"name": "x", "sim": {"timesteps": -1, "backend": "nest"}})
    assert "sim.timesteps" in msg and "sim.backend" in msg


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        read_yaml(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("\n# only a comment\n")
    with pytest.raises(ConfigError, match="the config file is empty"):
        read_yaml(tmp_path / "empty.yaml")
    (tmp_path / "bad.yaml").write_text("name: x\nsim: {timesteps: 4\n")
    with pytest.raises(ConfigError, match=r"YAML syntax error at line \d+, column \d+"):
        read_yaml(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        read_yaml(tmp_path / "list.yaml")
    (tmp_path / "ok.yaml").write_text("name: x\nsim: {timestep: 4}\n")
    with pytest.raises(ConfigError, match=r"ok\.yaml: sim\.timestep: unknown key"):
        load_config(tmp_path / "ok.yaml")


def test_set_overrides_parse_yaml_and_validate():
    assert parse_set(["sim.timesteps=64", "convert.method=max", "energy.hardware=[loihi]", "data.root=null"]) == {
        "sim.timesteps": 64, "convert.method": "max", "energy.hardware": ["loihi"], "data.root": None}
    cfg = load_config({"name": "x"}, ["sim.timesteps=16", "convert.percentile=99.9", "sim.options.target=numpy"])
    assert (cfg.sim.timesteps, cfg.convert.percentile, cfg.sim.options) == (16, 99.9, {"target": "numpy"})
    assert "sim.timesteps: Input should be greater than or equal to 1 (got -3)" in err({"name": "x"}, ["sim.timesteps=-3"])
    assert "sim.timestepz: unknown key" in err({"name": "x"}, ["sim.timestepz=3"])
    assert "sim.timesteps is not a section" in err({"name": "x", "sim": {"timesteps": 4}}, ["sim.timesteps.a=1"])
    assert "expected key.path=value" in err({"name": "x"}, ["sim.timesteps"])
    assert "(with --set)" in err({"name": "x"}, ["sim.backend=nest"])


def test_set_a_sweep_list():
    cfg = load_config({"name": "x"}, ["sweep.sim.timesteps=[4, 8]"])
    assert cfg.sweep == {"sim.timesteps": [4, 8]}
    assert apply_overrides({"name": "x"}, {"sweep.convert.method": ["max"]})["sweep"] == {"convert.method": ["max"]}


def test_hash_ignores_output_and_description_only():
    a = load_config({"name": "x"})
    assert config_hash(a) == config_hash(load_config({"name": "x", "description": "d", "output": {"dir": "elsewhere"},
                                                      "data": {"root": "/data"}}))
    assert config_hash(a) != config_hash(load_config({"name": "x", "sim": {"timesteps": 63}}))
    assert config_hash(a) != config_hash(load_config({"name": "y"}))
    assert config_hash(a) == config_hash(load_config(to_yaml_roundtrip(a)))
    assert len(config_hash(a)) == 12


def to_yaml_roundtrip(cfg):
    import yaml

    return yaml.safe_load(to_yaml(cfg))


def test_sweep_expansion_is_the_cartesian_product_in_order():
    cfg = load_config({"name": "x", "sweep": {"sim.timesteps": [4, 8, 16], "convert.method": ["max", "percentile"]}})
    runs = expand_sweep(cfg)
    assert [p for p, _ in runs] == [{"sim.timesteps": t, "convert.method": m} for t in (4, 8, 16)
                                    for m in ("max", "percentile")]
    assert all(c.sim.timesteps == p["sim.timesteps"] and c.convert.method == p["convert.method"] and not c.sweep
               for p, c in runs)
    assert len({config_hash(c) for _, c in runs}) == 6
    # a point's hash equals that of the same run made by hand with --set
    hand = load_config({"name": "x"}, ["sim.timesteps=8", "convert.method=max"])
    assert config_hash(hand) == config_hash(runs[2][1])
    assert [p for p, _ in expand_sweep(load_config({"name": "x"}))] == [{}]


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    cfg = load_config(path)
    assert cfg.name == path.stem
    n = len(expand_sweep(cfg))
    assert n == (8 if path.stem == "sweep_timesteps" else 1)


def test_shipped_configs_exist():
    names = {p.stem for p in EXPERIMENTS.glob("*.yaml")}
    assert {"quickstart", "mnist_lenet", "fashion_lenet", "cifar10_resnet20", "sweep_timesteps"} <= names
    assert validate(read_yaml(EXPERIMENTS / "cifar10_resnet20.yaml")).model.pretrained
