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
    assert cfg.convert.method is None and cfg.sweep == {}  # null: "percentile", or "mse" with convert.timesteps
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
    cfg = load_config({"name": "x"}, ["sim.timesteps=16", "convert.percentile=99.9", "sim.backend=brian2",
                                      "sim.options.target=numpy"])
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


# --------------------------------------------------------------------------- checks that need the package's rules
def test_ranges_the_ir_enforces_are_config_errors():
    assert err({"name": "x", "convert": {"v_init": 1.0}}) == \
        "config: convert.v_init: IF v_init must be in [0, 1) (a fraction of the threshold), got 1.0"
    assert "convert.v_init: IF v_init must be in [0, 1)" in err({"name": "x", "convert": {"v_init": -0.1}})
    assert err({"name": "x", "convert": {"reset": "soft"}}) == \
        "config: convert.reset: unknown reset 'soft'; valid: subtract, zero"
    assert load_config({"name": "x", "convert": {"v_init": 0.0, "reset": "zero"}}).convert.v_init == 0.0
    assert "sweep convert.v_init=1: convert.v_init: IF v_init must be in [0, 1)" in \
        err({"name": "x", "sweep": {"convert.v_init": [0.5, 1]}})


def test_model_arguments_and_user_classes_are_checked():
    assert err({"name": "x", "model": {"kwargs": {"hiden": [8]}}}) == \
        "config: model.kwargs: model 'mlp' got unknown argument(s) hiden; it accepts: in_shape=(1, 8, 8), " \
        "hidden=(128, 64), num_classes=10"
    assert err({"name": "x", "model": {"name": "no_such_pkg.mod:Net"}}).startswith(
        "config: model.name: cannot import module 'no_such_pkg.mod'")
    assert err({"name": "x", "model": {"name": "tests.test_runner:Nope"}}) == \
        "config: model.name: module 'tests.test_runner' has no attribute 'Nope'"
    assert "model.kwargs: tests.test_runner:DigitsNet does not accept them" in \
        err({"name": "x", "model": {"name": "tests.test_runner:DigitsNet", "kwargs": {"depth": 3}}})


PROFILE = "profiles:\n  my-chip:\n    e_mac: 1.0e-12\n    e_ac: 1.0e-13\n    e_neuron: 1.0e-13\n"


def test_hardware_names_are_checked_against_builtin_and_file_profiles(tmp_path):
    from snn.energy import PROFILES

    (tmp_path / "p.yaml").write_text(PROFILE)
    f = str(tmp_path / "p.yaml")
    cfg = load_config({"name": "x", "energy": {"profiles_file": f, "hardware": ["my-chip", "loihi"]}})
    assert cfg.energy.hardware == ["my-chip", "loihi"]
    assert err({"name": "x", "energy": {"profiles_file": f, "hardware": ["my-chip", "my-chp"]}}) == (
        f"config: energy.hardware: unknown hardware profile(s) 'my-chp'; valid: {', '.join(PROFILES)}, my-chip "
        f"(built in, or defined in {f})")
    assert err({"name": "x", "energy": {"hardware": ["my-chip"]}}) == (
        f"config: energy.hardware: unknown hardware profile(s) 'my-chip'; valid: {', '.join(PROFILES)} "
        "(or define them in energy.profiles_file)")
    assert "sweep energy.hardware=['nochip']: energy.hardware: unknown hardware profile(s) 'nochip'" in \
        err({"name": "x", "energy": {"profiles_file": f}, "sweep": {"energy.hardware": [["my-chip"], ["nochip"]]}})


def test_missing_or_invalid_profiles_file_is_a_config_error(tmp_path):
    missing = tmp_path / "none.yaml"
    assert err({"name": "x", "energy": {"profiles_file": str(missing), "hardware": ["my-chip"]}}) == \
        f"config: energy.profiles_file: no such profile file: {missing}"
    (tmp_path / "bad.yaml").write_text("profiles: [1, 2\n")
    assert err({"name": "x", "energy": {"profiles_file": str(tmp_path / "bad.yaml")}}).startswith(
        f"config: energy.profiles_file: {tmp_path / 'bad.yaml'} is not valid YAML at line 2, column 1: expected ',' or ']'")
    (tmp_path / "neg.yaml").write_text(PROFILE.replace("e_ac: 1.0e-13", "e_ac: -1"))
    assert err({"name": "x", "energy": {"profiles_file": str(tmp_path / "neg.yaml")}}) == \
        f"config: energy.profiles_file: {tmp_path / 'neg.yaml'}: profile 'my-chip': e_ac must be a finite number >= 0, got -1.0"


def test_profile_keys_that_no_pricing_tier_uses_are_config_errors(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text(PROFILE + "    e_synop: 2.0e-13\n")
    assert err({"name": "x", "energy": {"profiles_file": str(p), "hardware": ["my-chip"]}}) == (
        f"config: energy.profiles_file: {p}: profile 'my-chip': unknown key(s) e_synop (no tier of kind "
        "'event' uses them); valid: cores_per_chip, description, e_ac, e_mac, e_mem, e_neuron, e_spike, "
        "embodied_kg, event_driven, kind, neurons_per_core, runtime_power_w, service_life_years, static_power_w, "
        "t_ac_s, t_host_step_s, t_neuron_s, t_sync_s")
    p.write_text("profiles:\n  g:\n    kind: gpu\n    peak_flops: 1.0e+12\n    board_power_w: 100\n    mem_bw: 1.0e+12\n"
                 "    bytes_per_value: 2\n    idle_power_w: 50\n")
    assert err({"name": "x", "energy": {"profiles_file": str(p), "hardware": ["g"]}}) == (
        f"config: energy.profiles_file: {p}: profile 'g': the platform tier of kind 'gpu' needs active_power_w, "
        "t_call_s, t_kernel_s (it needs active_power_w, idle_power_w, t_call_s, t_kernel_s; given: idle_power_w)")


def test_energy_batch_size_is_checked_before_any_data(tmp_path):
    assert load_config({"name": "x", "energy": {"batch_size": 64}}).energy.batch_size == 64
    assert load_config({"name": "x"}).energy.batch_size == 1
    for bad in (0, -3, 1.5, "many"):
        assert err({"name": "x", "energy": {"batch_size": bad}}).startswith("config: energy.batch_size: ")
