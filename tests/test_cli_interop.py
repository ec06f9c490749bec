"""The interop commands: `snn convert model.onnx ...` and `snn export net.h5 --nir/--lava`."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn

import snn
from snn.cli import main


@pytest.fixture
def onnx_model(tmp_path):
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 10)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(2, 1, 8, 8),), str(tmp_path / "m.onnx"), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "n"}})
    return tmp_path / "m.onnx"


def test_convert_onnx_then_export_nir_and_lava(onnx_model, tmp_path, capsys):
    out = tmp_path / "net.h5"
    assert main(["convert", str(onnx_model), "--calib", "digits", "--calib-samples", "256", "--reset", "zero",
                 "--v-init", "0", "--out", str(out)]) == 0
    assert "converted m.onnx (1 IF layers" in capsys.readouterr().out
    assert main(["export", str(out), "--nir", str(tmp_path / "net.nir"), "--lava", str(tmp_path / "net.net")]) == 0
    printed = capsys.readouterr().out
    assert "quantised to 8-bit weights" in printed and "wrote" in printed
    assert [v.kind for v in snn.from_nir(tmp_path / "net.nir").graph.nodes.values()] == \
        [v.kind for v in snn.load(out).graph.nodes.values()]
    assert snn.from_lava(tmp_path / "net.net").graph.nodes.keys() == snn.load(out).graph.nodes.keys()


def test_export_errors_are_one_line(onnx_model, tmp_path, capsys):
    out = tmp_path / "net.h5"
    assert main(["convert", str(onnx_model), "--calib", "digits", "--calib-samples", "128", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["export", str(out), "--nir", str(tmp_path / "x.nir")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "snn export: error: node '1' (if) is not supported by the NIR exporter" in err
    assert not (tmp_path / "x.nir").exists()
    assert main(["export", str(out)]) == 2
    assert "--nir PATH and/or --lava PATH" in capsys.readouterr().err
    assert main(["convert", str(onnx_model), "--arch", "mlp", "--calib", "digits", "--out", str(out)]) == 2
    assert "an ONNX file holds its own architecture" in capsys.readouterr().err
