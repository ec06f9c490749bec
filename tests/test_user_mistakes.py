"""Every mistake a new user makes gets one clear line, before the expensive work (issue 15,
item 4). Runs whose data are MNIST under an empty root show the order: the mistake is
reported, not the missing data, so it was found before any data was loaded or any model
trained; a user's model is checked on two zero samples first (snn.runner.check_model)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

import snn
from snn.cli import main
from snn.errors import ConversionError, SnnError

MODELS = '''
import torch.nn as nn

class Mnist(nn.Module):          # written for 28x28 inputs
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    def forward(self, x):
        return self.net(x)

class Recurrent(nn.Module):      # an LSTM over the 8 rows of a digit
    def __init__(self, kind="LSTM"):
        super().__init__()
        self.rnn = getattr(nn, kind)(8, 16, batch_first=True)
        self.fc = nn.Linear(16, 10)
    def forward(self, x):
        y, _ = self.rnn(x.view(-1, 8, 8))
        return self.fc(y[:, -1])

class Gelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.GELU(), nn.Linear(32, 10))
    def forward(self, x):
        return self.net(x)

class Five(nn.Module):           # five outputs for ten classes
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    def forward(self, x):
        return self.net(x)
'''


def _config(tmp_path: Path, **sections) -> Path:
    cfg = {"name": "mistake", "threads": 1, "data": {"name": "digits", "test_limit": 16},
           "model": {"name": "mlp", "kwargs": {"hidden": [8]}}, "train": {"epochs": 1},
           "sim": {"timesteps": 2}, "energy": {"enabled": False}, "output": {"report": False}}
    cfg.update(sections)
    (tmp_path / "mistake_models.py").write_text(MODELS)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "c.yaml"


def _error(argv: list[str], capsys) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (rc, err)
    return lines[0]


NO_DATA = {"name": "mnist", "root": "no-data-here"}  # loading it would fail: the mistake must come first


@pytest.mark.parametrize("model, expected", [
    ("Mnist", "model.name: Mnist does not accept samples of shape (1, 8, 8) (dataset digits): its first layer "
              "'net.1' (Linear) takes 784 input features (torch: mat1 and mat2 shapes cannot be multiplied"),
    ("Five", "gives outputs of shape (5,) per sample; dataset digits has 10 classes"),
    ("Recurrent", "cannot be converted, so it is not trained: cannot convert node 'rnn' (LSTM): module type LSTM "
                  "(a recurrent layer"),
    ("Gelu", "cannot be converted, so it is not trained: cannot convert node 'net.2' (GELU)"),
])
def test_user_model_checked_before_data_and_training(model, expected, tmp_path, monkeypatch, capsys):
    """The message says it: found before training (a model trained first would fail in
    conversion, with another message); nothing is written."""
    monkeypatch.chdir(tmp_path)
    cfg = _config(tmp_path, model={"name": f"mistake_models:{model}"})
    for command in ("run", "sweep"):
        assert expected in _error([command, str(cfg), "--results", "res"], capsys)
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_recurrent_layers_are_refused_by_name(kind):
    import importlib.util
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / f"rec_{kind}.py").write_text(MODELS)
        spec = importlib.util.spec_from_file_location(f"rec_{kind}", Path(d) / f"rec_{kind}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    sys.modules.pop(f"rec_{kind}", None)
    with pytest.raises(ConversionError, match=rf"cannot convert node 'rnn' \({kind}\): module type {kind} "
                                              r"\(a recurrent layer"):
        snn.convert(mod.Recurrent(kind), torch.rand(4, 64))


def test_calibration_of_the_wrong_width_says_what_the_model_expects(capfd):
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    with pytest.raises(ConversionError) as e:
        snn.convert(model, torch.rand(100, 32))
    msg = str(e.value)
    assert msg.startswith("Sequential does not accept samples of shape (32,) (data of shape (100, 32)): its first "
                          "layer '0' (Linear) takes 64 input features (torch: mat1 and mat2 shapes cannot be "), msg
    assert "\n" not in msg and "ShapeProp" not in msg and "(2, 32)" not in msg
    out = capfd.readouterr()
    assert "Traceback" not in out.err and "ShapeProp" not in out.err


def test_percentile_as_a_fraction_is_refused(tmp_path, monkeypatch, capsys):
    with pytest.raises(ConversionError, match=r"percentile is in percent: 99.99, not 0.9999"):
        snn.convert(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), torch.rand(8, 4), percentile=0.9999)
    monkeypatch.chdir(tmp_path)
    cfg = _config(tmp_path, data=NO_DATA)
    assert "convert.percentile: percentile is in percent: 99.99, not 0.9999" in _error(
        ["run", str(cfg), "--set", "convert.percentile=0.9999"], capsys)
    snn.convert(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), torch.rand(8, 4), percentile=1.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_refused_up_front(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = _config(tmp_path, data=NO_DATA)
    for key in ("sim.device", "train.device"):
        line = _error(["run", str(cfg), "--set", f"{key}=cuda"], capsys)
        assert f"{key}: device 'cuda': CUDA is not available on this machine" in line
    assert "--device: device 'cuda': CUDA is not available" in _error(
        ["energy", "missing.h5", "--data", "digits", "--device", "cuda"], capsys)


def test_energy_with_an_unknown_profile_fails_before_loading_anything(tmp_path, capsys):
    """The network file does not even exist: the profile is what is reported."""
    line = _error(["energy", str(tmp_path / "missing.h5"), "--data", "digits", "--hardware", "loihi", "loihi9"], capsys)
    assert "argument --hardware: invalid choice: 'loihi9' (choose from '45nm-fp32'" in line


def test_results_that_is_a_file_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a folder")
    cfg = _config(tmp_path, data=NO_DATA)
    for command in ("run", "sweep"):
        line = _error([command, str(cfg), "--results", "afile"], capsys)
        assert "afile is not a folder" in line
    assert (tmp_path / "afile").read_text() == "not a folder"
