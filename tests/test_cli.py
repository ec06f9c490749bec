"""The `snn` command: every bad input exits 2 with one line and writes nothing; the
subcommands work end to end on the digits dataset."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from snn.cli import main

GOOD = {"name": "clitest", "threads": 1, "data": {"name": "digits", "test_limit": 120}, "model": {"name": "mlp", "kwargs": {"hidden": [32]}},
        "train": {"epochs": 3, "lr": 0.01}, "sim": {"timesteps": 6},
        "energy": {"hardware": ["45nm-fp32", "loihi"]}}


def _write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _good(tmp_path: Path, **changes) -> Path:
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in GOOD.items()}
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            cfg.setdefault(section, {})[field] = value
        else:
            cfg[section] = value
    cfg["train"]["cache_dir"] = str(tmp_path.parent / "train-cache")
    return _write(tmp_path, yaml.safe_dump(cfg))


BAD_CONFIGS = {
    "unknown key": ("name: x\nsim: {timestep: 4}\n", "sim.timestep: unknown key"),
    "wrong type": ("name: x\nsim: {timesteps: lots}\n", "sim.timesteps: Input should be a valid integer"),
    "negative timesteps": ("name: x\nsim: {timesteps: -8}\n", "sim.timesteps: Input should be greater than or equal to 1"),
    "unknown dataset": ("name: x\ndata: {name: imagenet}\n", "data.name: unknown dataset 'imagenet'"),
    "unknown model": ("name: x\nmodel: {name: gpt}\n", "model.name: unknown model 'gpt'"),
    "unknown backend": ("name: x\nsim: {backend: nest}\n", "sim.backend: unknown backend 'nest'"),
    "v_init out of range": ("name: x\nconvert: {v_init: 1.0}\n",
                            "convert.v_init: IF v_init must be in [0, 1) (a fraction of the threshold), got 1.0"),
    "unknown hardware": ("name: x\nenergy: {hardware: [loihi3]}\n", "energy.hardware: unknown hardware profile(s) 'loihi3'"),
    "missing profiles file": ("name: x\nenergy: {profiles_file: none.yaml}\n",
                              "energy.profiles_file: no such profile file: none.yaml"),
    "yaml syntax": ("name: x\nsim: {timesteps: 4\n", "YAML syntax error at line"),
    "empty file": ("", "the config file is empty"),
}


def _assert_user_error(rc: int, err: str, expected: str, cwd: Path) -> None:
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert expected in lines[0] and "Traceback" not in err
    assert not (cwd / "results").exists()


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_exits_2_with_one_line(case, tmp_path, monkeypatch, capsys):
    text, expected = BAD_CONFIGS[case]
    monkeypatch.chdir(tmp_path)
    cfg = _write(tmp_path, text)
    for cmd in ("run", "sweep"):
        rc = main([cmd, str(cfg)])
        _assert_user_error(rc, capsys.readouterr().err, expected, tmp_path)


def test_config_errors_before_the_data_is_looked_for(tmp_path, monkeypatch, capsys):
    """On data that is not there (MNIST under an empty root), a config error is still the
    one reported: the config is checked before any data is loaded."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text("profiles:\n  chip:\n    e_mac: 1e-12\n    e_ac: 1e-13\n    e_neuron: 0\n"
                                     "    e_synop: 1e-13\n")
    nodata = {"data__name": "mnist", "data__root": str(tmp_path / "nowhere"), "model": {"name": "lenet5"}}
    for changes, expected in [
            ({"convert__v_init": 1.0}, "convert.v_init: IF v_init must be in [0, 1) (a fraction of the threshold)"),
            ({"energy__profiles_file": "p.yaml", "energy__hardware": ["chip"]},
             "energy.profiles_file: p.yaml: profile 'chip': unknown key(s) e_synop (no tier of kind 'event' "
             "uses them)"),
            ({"energy__profiles_file": "p.yaml", "energy__hardware": ["chip2"]}, "energy.profiles_file: p.yaml:")]:
        cfg = _good(tmp_path, **nodata, **changes)
        for cmd in ("run", "sweep"):
            _assert_user_error(main([cmd, str(cfg)]), capsys.readouterr().err, expected, tmp_path)
    (tmp_path / "p.yaml").write_text("profiles:\n  chip:\n    e_mac: 1e-12\n    e_ac: 1e-13\n    e_neuron: 0\n")
    cfg = _good(tmp_path, **nodata, energy__profiles_file="p.yaml", energy__hardware=["chip", "chip2"])
    _assert_user_error(main(["run", str(cfg)]), capsys.readouterr().err,
                       "energy.hardware: unknown hardware profile(s) 'chip2'; valid: 45nm-fp32", tmp_path)
    # with the config right, the missing data is what is reported
    cfg = _good(tmp_path, **nodata, energy__profiles_file="p.yaml", energy__hardware=["chip"])
    _assert_user_error(main(["run", str(cfg)]), capsys.readouterr().err, "dataset 'mnist' not found", tmp_path)


def test_missing_config_file_and_bad_set(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _assert_user_error(main(["run", "nope.yaml"]), capsys.readouterr().err, "config file not found: nope.yaml", tmp_path)
    cfg = _good(tmp_path)
    _assert_user_error(main(["run", str(cfg), "--set", "sim.timesteps=-1"]), capsys.readouterr().err,
                       "sim.timesteps: Input should be greater than or equal to 1 (got -1)", tmp_path)
    _assert_user_error(main(["run", str(cfg), "--set", "sim.backnd=brian2"]), capsys.readouterr().err,
                       "sim.backnd: unknown key", tmp_path)
    _assert_user_error(main(["run", str(cfg), "--set", "novalue"]), capsys.readouterr().err,
                       "expected key.path=value", tmp_path)
    _assert_user_error(main(["run"]), capsys.readouterr().err, "the following arguments are required: config", tmp_path)


def test_bad_config_through_the_installed_command(tmp_path):
    """The real entry point (a fresh interpreter): exit code 2, one line, no traceback."""
    cfg = _write(tmp_path, "name: x\nsim: {timesteps: -8}\n")
    p = subprocess.run([sys.executable, "-m", "snn.cli", "run", str(cfg)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    _assert_user_error(p.returncode, p.stderr, "sim.timesteps", tmp_path)
    assert p.stdout == ""


def test_missing_dataset_says_where_files_go(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "nodata"
    empty.mkdir()
    cfg = _good(tmp_path, data__name="mnist", data__root=str(empty), model={"name": "lenet5"})
    rc = main(["run", str(cfg)])
    _assert_user_error(rc, capsys.readouterr().err, f"its files go in {empty / 'mnist'}", tmp_path)
    rc = main(["data", "verify", "mnist", "--data-root", str(empty)])
    err = capsys.readouterr().err
    assert rc == 2 and "snn data download mnist" in err


def test_sweep_section_needs_snn_sweep(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = _good(tmp_path, sweep={"sim.timesteps": [2, 4]})
    _assert_user_error(main(["run", str(cfg)]), capsys.readouterr().err, "has a sweep section (2 runs)", tmp_path)
    _assert_user_error(main(["sweep", str(cfg), "--workers", "0"]), capsys.readouterr().err, "--workers must be >= 1",
                       tmp_path)


def test_run_report_compare(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = _good(tmp_path)
    assert main(["run", str(cfg), "--quiet"]) == 0
    out = capsys.readouterr().out
    report = Path(out.split("report: ")[1].split()[0])
    assert report.is_file() and report.resolve().parent.parent == tmp_path / "results" / "clitest"
    assert "SNN accuracy" in out
    assert main(["run", str(cfg), "--quiet", "--set", "sim.timesteps=3"]) == 0
    runs = sorted(str(p) for p in (tmp_path / "results" / "clitest").iterdir())
    assert len(runs) == 2
    report.unlink()
    assert main(["report", str(report.parent)]) == 0 and report.is_file()
    capsys.readouterr()
    assert main(["compare", *runs, "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "SNN acc" in out and "energy per inference" in out and (tmp_path / "cmp" / "compare.html").is_file()
    assert (tmp_path / "cmp" / "accuracy_vs_timesteps.png").is_file()
    # the run's network, priced again from the command line
    rc = main(["energy", str(report.parent / "network.h5"), "--data", "digits", "--timesteps", "4", "--samples", "50",
               "--hardware", "loihi", "--json", str(tmp_path / "e.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "SNN accuracy at T=4 on 50 digits test samples" in out and "loihi" in out
    from snn.energy import EnergyReport

    assert EnergyReport.from_json(tmp_path / "e.json").totals.timesteps == 4
    assert (tmp_path / "cmp" / "energy_compare.json").is_file()
    # a corrupted results file is a clear error
    import shutil

    broken = tmp_path / "broken-run"
    shutil.copytree(report.parent, broken)
    data = (broken / "results.h5").read_bytes()
    (broken / "results.h5").write_bytes(data[: len(data) // 2])
    assert main(["report", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "results.h5 is corrupted" in err and len(err.strip().splitlines()) == 1
    # a run directory that is not complete is refused
    assert main(["report", str(tmp_path)]) == 2
    assert "not a complete run" in capsys.readouterr().err


def test_data_list(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in ("digits", "mnist", "fashion_mnist", "cifar10"))


@pytest.fixture
def lenet_checkpoint(tmp_path):
    import torch

    from snn.zoo import create_model

    torch.manual_seed(0)
    path = tmp_path / "lenet.pt"
    torch.save(create_model("lenet5", input_size=28).state_dict(), path)
    return path


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_convert_and_checkpoint_safety(tmp_path, monkeypatch, capsys, lenet_checkpoint):
    if not os.environ.get("SNN_DATA"):
        pytest.skip("needs SNN_DATA with MNIST")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "net.h5"
    rc = main(["convert", str(lenet_checkpoint), "--arch", "lenet5", "--calib", "mnist", "--calib-samples", "64",
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    import snn

    assert snn.load(out).graph.shapes[snn.load(out).graph.input] == (1, 28, 28)
    capsys.readouterr()

    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"w": _Evil()}, f)
    import torch

    torch.save({"w": _Evil()}, tmp_path / "evil2.pt")
    for bad in (evil, tmp_path / "evil2.pt"):
        rc = main(["convert", str(bad), "--arch", "lenet5", "--calib", "mnist", "--out", str(tmp_path / "x.h5")])
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "pwned.txt").exists() and not (tmp_path / "x.h5").exists()

    broken = tmp_path / "broken.pt"
    broken.write_bytes(lenet_checkpoint.read_bytes()[:200])
    rc = main(["convert", str(broken), "--arch", "lenet5", "--calib", "mnist", "--out", str(tmp_path / "x.h5")])
    err = capsys.readouterr().err
    assert rc == 2 and "broken.pt" in err and not (tmp_path / "x.h5").exists()
