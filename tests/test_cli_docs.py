"""The self-documenting `snn` command: --help with defaults and valid values, --version,
`snn hardware`, `snn config show|docs` (docs/config.md kept in sync), `snn doctor`,
one-line errors for missing extras, user modules found without PYTHONPATH, the trained
ANN in the run folder (`snn convert RUN_DIR`), and progress that stays readable in a log."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from snn import config
from snn.cli import main
from snn.energy import PROFILES
from snn.energy.profiles import constants

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


# --------------------------------------------------------------------------- --help, --version
def test_help_lists_every_command_and_version(capsys):
    rc, out, _ = _run(["--help"], capsys)
    assert rc == 0
    for cmd in ("run", "sweep", "convert", "energy", "hardware", "config", "doctor"):
        assert f"\n    {cmd} " in out, cmd
    rc, out, _ = _run(["--version"], capsys)
    assert rc == 0 and out.startswith("snn ") and "python 3." in out


def test_help_shows_defaults_and_valid_values(capsys):
    rc, out, _ = _run(["energy", "--help"], capsys)
    text = " ".join(out.split())  # argparse wraps lines
    assert rc == 0
    assert "simulation steps T (default: 32)" in text
    assert "--backend {snntorch,brian2}" in text  # few choices: in the usage; many: listed in the help
    assert "default: snntorch" in text and "default: constant" in text
    assert "valid: " + ", ".join(PROFILES) in text.replace("- ", "-")  # every hardware profile
    rc, out, _ = _run(["convert", "--help"], capsys)
    text = " ".join(out.split())
    assert "valid: mlp, lenet5" in text and "--calib {digits,mnist,fashion_mnist,cifar10}" in text
    assert "(default: 2048)" in text and "(default: percentile)" in text and "a run folder" in text


def test_bad_choice_is_one_line_before_any_work(capsys):
    rc, _, err = _run(["energy", "net.h5", "--data", "digits", "--hardware", "loihi3"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "invalid choice: 'loihi3'" in err


# --------------------------------------------------------------------------- snn hardware
def test_hardware_lists_profiles_with_description_and_sources(capsys):
    rc, out, _ = _run(["hardware"], capsys)
    assert rc == 0 and f"{len(PROFILES)} hardware profiles" in out
    for name, pr in PROFILES.items():
        assert f"\n{name}  [{pr.kind}" in out and pr.description in out
    assert "source: Horowitz, 'Computing's energy problem', ISSCC 2014" in out


@pytest.mark.parametrize("name", ["loihi", "gpu-h100", "45nm-fp32"])
def test_hardware_name_shows_every_constant_with_its_source(name, capsys):
    rc, out, _ = _run(["hardware", name], capsys)
    assert rc == 0
    rows = constants(PROFILES[name])
    assert rows and all(f"  {r['key']} " in out and r["source"] in out for r in rows)
    if PROFILES[name].calibrated:
        assert "calibrated on:" in out
    if not PROFILES[name].has("platform"):
        assert "dynamic energy only" in out


def test_hardware_unknown_name_and_custom_file(tmp_path, capsys):
    rc, _, err = _run(["hardware", "loihi3"], capsys)
    assert rc == 2 and "unknown hardware profile 'loihi3'; valid: 45nm-fp32" in err
    f = tmp_path / "p.yaml"
    f.write_text("profiles:\n  my-chip:\n    kind: event\n    description: my accelerator\n"
                 "    e_mac: {value: 1.0e-12, source: datasheet p. 3}\n    e_ac: 2.0e-13\n    e_neuron: 5.0e-13\n")
    rc, out, _ = _run(["hardware", "my-chip", "--profiles-file", str(f)], capsys)
    assert rc == 0 and "my accelerator" in out and "source: datasheet p. 3" in out
    assert "source: user-supplied (no source given)" in out and "source: default (not given" in out


# --------------------------------------------------------------------------- snn config
def test_config_show_is_the_resolved_config_with_a_description_per_key(capsys):
    rc, out, _ = _run(["config", "show", str(QUICKSTART)], capsys)
    assert rc == 0
    assert yaml.safe_load(out) == config.to_dict(config.load_config(QUICKSTART))  # valid YAML, every default
    keys = [ln for ln in out.splitlines() if ln and not ln.startswith("#")]
    assert len(keys) == len(config.schema_keys()) and all(" # " in ln for ln in keys)
    assert "backend: snntorch" in out and "(one of: snntorch, brian2)" in out


def test_config_show_defaults_and_overrides(capsys):
    rc, out, _ = _run(["config", "show"], capsys)
    data = yaml.safe_load(out)
    assert rc == 0 and data["name"] is None and data["sim"]["timesteps"] == 64
    rc, out, _ = _run(["config", "show", str(QUICKSTART), "--set", "sim.timesteps=8"], capsys)
    assert rc == 0 and yaml.safe_load(out)["sim"]["timesteps"] == 8
    rc, _, err = _run(["config", "show", str(QUICKSTART), "--set", "sim.timestep=8"], capsys)
    assert rc == 2 and "sim.timestep: unknown key" in err


def test_every_config_key_is_described():
    for path, field, _ in config.schema_keys():
        assert field.description and len(field.description) > 5, path


def test_docs_config_md_is_in_sync():
    """docs/config.md is generated from the schema: regenerate it with
    `snn config docs --out docs/config.md` after changing snn/config.py."""
    assert (ROOT / "docs" / "config.md").read_text() == config.docs_markdown()
    for path, _, _ in config.schema_keys():
        assert f"`{path}`" in config.docs_markdown()


# --------------------------------------------------------------------------- snn doctor
def test_doctor_reports_the_cpu_install_works(capsys, tmp_path):
    rc, out, _ = _run(["doctor", "--no-brian2", "--data-root", str(tmp_path / "nodata")], capsys)
    assert rc == 0, out
    lines = out.splitlines()
    for what in ("python", "core packages", "torch", "fused CPU kernels", "convert + simulate", "data root",
                 "dataset digits", "GPU", "extra [ray]", "extra [nir]"):
        assert any(ln[6:].startswith(what + ":") for ln in lines), what
    assert "note  data root:" in out and "note  dataset mnist: not present" in out  # reported, not an error
    assert "summary: the CPU install works" in out


def test_doctor_fails_on_a_missing_core_package(monkeypatch, capsys):
    from snn import doctor

    monkeypatch.setattr(doctor, "CORE", doctor.CORE + ("snn-no-such-package",))
    assert doctor.run_checks(brian2=False) == 1
    out = capsys.readouterr().out
    assert "FAIL  core packages: missing: snn-no-such-package" in out and "does NOT work" in out


@pytest.mark.slow
@pytest.mark.brian2
def test_doctor_with_brian2_code_generation():
    p = subprocess.run([sys.executable, "-m", "snn.cli", "doctor"], capture_output=True, text=True, timeout=900,
                       cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr[-2000:]
    assert "ok    brian2 cython: brian2" in p.stdout


# --------------------------------------------------------------------------- extras
def test_missing_extra_is_one_line_naming_it(monkeypatch, tmp_path, capsys):
    from snn.errors import MissingExtra
    from snn.shard import ray_session

    monkeypatch.setitem(sys.modules, "ray", None)  # as if snn[ray] were not installed
    with pytest.raises(MissingExtra, match=r"needs Ray, which is not installed: pip install 'snn\[ray\]'"):
        with ray_session(None, 1, tmp_path):
            pass
    cfg = tmp_path / "s.yaml"
    cfg.write_text("name: s\nsim: {timesteps: 2}\nsweep: {sim.timesteps: [1, 2]}\n")
    rc, _, err = _run(["sweep", str(cfg), "--ray", "--results", str(tmp_path / "r")], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "pip install 'snn[ray]'" in err
    with pytest.raises(config.ConfigError, match=r"sim.cluster: cluster: ray needs Ray.*snn\[ray\]"):
        config.load_config({"name": "s", "sim": {"cluster": "ray"}})


# --------------------------------------------------------------------------- user modules
USER_MODULE = """import torch.nn as nn


class Net(nn.Module):
    def __init__(self, hidden=16):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x):
        return self.body(x)
"""


def test_user_module_found_in_the_config_folder_and_the_working_directory(tmp_path, monkeypatch):
    name = f"mymodels_{tmp_path.name.replace('-', '_')}"  # a fresh module name for this test
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / f"{name}.py").write_text(USER_MODULE)
    cfg = folder / "cfg.yaml"
    cfg.write_text(f"name: u\nmodel: {{name: '{name}:Net', kwargs: {{hidden: 8}}}}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the folder appended is undone after the test
    assert config.load_config(cfg).model.name == f"{name}:Net"  # found beside the config, no PYTHONPATH
    other = f"{name}_cwd"
    (elsewhere / f"{other}.py").write_text(USER_MODULE)
    assert config.load_config({"name": "u", "model": {"name": f"{other}:Net"}}).model.kwargs == {}
    with pytest.raises(config.ConfigError, match=r"model.name: cannot import module 'nowhere_xyz'.*looked on "
                                                 r"sys.path and in"):
        config.load_config({"name": "u", "model": {"name": "nowhere_xyz:Net"}})


# --------------------------------------------------------------------------- the run folder
def test_run_folder_holds_the_ann_and_convert_accepts_it(tmp_path, monkeypatch, capsys):
    """`snn run` writes model.safetensors (with the spec that rebuilds it), per-stage timings
    (report and total included) in summary.json and the report, and no carriage returns
    in a log; `snn convert RUN_DIR` converts the saved ANN."""
    from snn.runner import load_run_model

    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"name": "rf", "threads": 1, "data": {"name": "digits", "test_limit": 100},
                                   "model": {"name": "mlp", "kwargs": {"hidden": [16]}},
                                   "train": {"epochs": 2, "lr": 0.01, "cache_dir": str(tmp_path / "cache")},
                                   "sim": {"timesteps": 4}, "energy": {"hardware": ["45nm-fp32"]}}))
    rc, out, err = _run(["run", str(cfg), "--results", str(tmp_path / "res")], capsys)
    assert rc == 0, err
    assert "\r" not in out + err  # not a terminal: plain lines
    assert "epoch 1/2:" in out + err and "epoch 2/2:" in out + err  # one line per epoch
    run_dir = Path(out.split("run:")[1].split()[0])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(summary["timings_s"]) == ["data", "model", "convert", "build", "simulate", "energy", "report",
                                          "total"]
    timings = " ".join((run_dir / "report.md").read_text().split("## Timings")[1].split("##")[0].split())
    assert all(f"| {stage} |" in timings for stage in summary["timings_s"]), timings  # report and total too
    model, spec = load_run_model(run_dir)
    assert spec["model"] == "mlp" and spec["kwargs"]["hidden"] == [16] and spec["dataset"] == "digits"
    from snn import train
    from snn.data import load_dataset

    x, y = load_dataset("digits", "test", limit=100)
    assert train.evaluate(model, x, y) == pytest.approx(summary["ann_accuracy"])
    rc, out, err = _run(["convert", str(run_dir), "--calib-samples", "64", "--out", str(tmp_path / "n.h5")], capsys)
    assert rc == 0, err
    assert "converted mlp of run" in out and (tmp_path / "n.h5").is_file()


# --------------------------------------------------------------------------- progress
def test_progress_in_a_log_is_plain_lines(capsys):
    import time

    from snn.util import activity, progress

    assert list(progress(range(10), "work", "batch")) == list(range(10))
    with activity("building") as t:
        time.sleep(0.01)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines()[-1].startswith("building: done in ") and t["seconds"] >= 0.01
    assert "work: 10/10 batch" in err and len([ln for ln in err.splitlines() if ln.startswith("work:")]) <= 6
