"""ONNX in: ``snn.convert("model.onnx", calibration)`` on real ONNX files exported from torch
in the test. Every catalogue network converts to the same spiking network as the torch model
(same node kinds, identical spikes and predictions); a trained CNN exported with torch's
defaults (BatchNorm folded in float32 by the exporter) has the same SNN accuracy; an
unsupported op gives the ConversionError a torch model gets, naming the op."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import snn
from snn.errors import ConversionError
from tests.test_node_types import CASES, _randomise_bn

pytest.importorskip("onnx")
T = 16


def _export(model: nn.Module, x: np.ndarray, path, **kw) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.as_tensor(x[:2]),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, **kw)
    return str(path)


@pytest.mark.parametrize("case", list(CASES))
def test_onnx_file_converts_to_the_same_network(case, digits, tmp_path):
    factory, prep = CASES[case]
    torch.manual_seed(0)
    model = _randomise_bn(factory())
    xc, xt = digits[0][:200], digits[2][:16]
    if prep is not None:
        xc, xt = prep(xc), prep(xt)
    path = _export(model, xc, tmp_path / f"{case}.onnx", do_constant_folding=False)
    a, b = snn.convert(model, xc), snn.convert(path, xc)
    assert [v.kind for v in b.graph.nodes.values()] == [v.kind for v in a.graph.nodes.values()]
    assert [v.kind for v in b.ann.nodes.values()] == [v.kind for v in a.ann.nodes.values()]
    ra, rb = (snn.simulate(n, xt, T, precision="float64") for n in (a, b))
    for k in ra.step_sums:
        assert int(ra.step_sums[k].sum()) > 0
    assert [np.array_equal(rb.step_sums[k2], ra.step_sums[k1]) for k1, k2 in zip(ra.step_sums, rb.step_sums)] == \
        [True] * len(ra.step_sums)
    np.testing.assert_array_equal(rb.predictions, ra.predictions)
    np.testing.assert_allclose(rb.outputs, ra.outputs, rtol=1e-9, atol=1e-9)


def test_trained_cnn_exported_with_defaults_has_the_same_accuracy(digits, digits_cnn, tmp_path):
    """torch's exporter folds BatchNorm into the convolutions in float32; the SNN accuracy
    at T=32 on the digits test set equals that of converting the torch model directly."""
    x, xt, yt = digits[0].reshape(-1, 1, 8, 8), digits[2].reshape(-1, 1, 8, 8), digits[3]
    path = _export(digits_cnn, x, tmp_path / "cnn.onnx")
    import onnx

    assert "BatchNormalization" not in {n.op_type for n in onnx.load(path).graph.node}
    a, b = snn.convert(digits_cnn, x), snn.convert(path, x)
    acc = [snn.simulate(n, xt, 32).accuracy(yt)[-1] for n in (a, b)]
    assert acc[0] > 0.9 and acc[1] == acc[0]


def test_unsupported_op_gives_the_torch_models_error(digits, tmp_path):
    model = nn.Sequential(nn.Linear(64, 16), nn.Sigmoid(), nn.Linear(16, 10))
    x = digits[0][:32]
    with pytest.raises(ConversionError, match=r"cannot convert node '1' \(Sigmoid\): module type Sigmoid is not "
                                              r"supported\. Supported: "):
        snn.convert(model, x)
    with pytest.raises(ConversionError, match=r"cannot convert node '1' \(ONNX op Sigmoid\): ONNX op Sigmoid is "
                                              r"not supported\. Supported ONNX ops: .*Relu"):
        snn.convert(_export(model, x, tmp_path / "s.onnx"), x)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing"])
def test_corrupt_onnx_file_names_the_file(damage, digits, tmp_path):
    path = tmp_path / "m.onnx"
    _export(nn.Sequential(nn.Linear(64, 10)), digits[0], path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "garbage":
        path.write_bytes(b"\x07not a protobuf" * 50)
    else:
        path.unlink()
    with pytest.raises(ConversionError, match=r"m\.onnx"):
        snn.convert(str(path), digits[0][:16])


def test_calibration_of_the_wrong_shape_is_refused(digits, tmp_path):
    path = _export(nn.Sequential(nn.Linear(64, 10)), digits[0], tmp_path / "m.onnx")
    with pytest.raises(ConversionError, match=r"calibration samples of shape \(1, 8, 8\), the ONNX model expects \(64,\)"):
        snn.convert(path, digits[0][:16].reshape(-1, 1, 8, 8))
