"""snn.quantize: per-layer shared exponent and signed mantissa; both backends simulate the
quantised network identically; it prices, saves and exports like any network."""
from __future__ import annotations

import numpy as np
import pytest

import snn
from snn import ir
from snn.quantization import RULES, mantissa_max


@pytest.mark.parametrize("bits", [8, 6, 4])
def test_weights_are_mantissas_times_one_exponent_per_layer(bits, cnn_net):
    q = snn.quantize(cnn_net, weight_bits=bits)
    layers = q.meta["quantization"]["layers"]
    weighted = [n for n, v in cnn_net.graph.nodes.items() if isinstance(v, (ir.Linear, ir.Conv2d, ir.Affine, ir.Add))]
    assert sorted(layers) == sorted(weighted) and weighted
    for name in weighted:
        node, orig, e = q.graph.nodes[name], cnn_net.graph.nodes[name], layers[name]["exponent"]
        w, w0 = (node.weight, orig.weight) if hasattr(node, "weight") else (node.scale, orig.scale) \
            if isinstance(node, ir.Affine) else (node.gains, orig.gains)
        m = w / 2.0 ** e
        np.testing.assert_array_equal(m, np.round(m))
        assert np.abs(m).max() <= mantissa_max(bits)
        assert np.abs(w0).max() > mantissa_max(bits) * 2.0 ** (e - 1), "exponent not the smallest that fits"
        assert np.abs(w - w0).max() <= 2.0 ** (e - 1) + 1e-15  # round to nearest
        if getattr(node, "bias", None) is not None:
            b = node.bias / 2.0 ** e
            np.testing.assert_array_equal(b, np.round(b))
    assert [v.kind for v in q.graph.nodes.values()] == [v.kind for v in cnn_net.graph.nodes.values()]


def test_backends_simulate_the_quantised_network_identically(cnn_net, digits):
    q = snn.quantize(cnn_net, weight_bits=4)
    x = digits[2][:6].reshape(-1, 1, 8, 8)
    a = snn.simulate(q, x, 16, backend="snntorch", precision="float64")
    b = snn.simulate(q, x, 16, backend="brian2", precision="float64", target="numpy")
    for k in a.step_sums:
        assert int(a.step_sums[k].sum()) > 0
        np.testing.assert_array_equal(b.step_sums[k], a.step_sums[k], err_msg=k)
    np.testing.assert_array_equal(b.predictions, a.predictions)


def test_accuracy_falls_with_the_bit_width(mlp_net, digits):
    x, y = digits[2], digits[3]
    acc = {bits: snn.simulate(snn.quantize(mlp_net, bits) if bits else mlp_net, x, 32).accuracy(y)[-1]
           for bits in (None, 8, 2)}
    assert abs(acc[8] - acc[None]) <= 0.02 and acc[None] > 0.9
    assert acc[2] < acc[8]


def test_quantised_network_prices_saves_and_exports(mlp_net, digits, tmp_path):
    q = snn.quantize(mlp_net, weight_bits=8)
    res = snn.simulate(q, digits[2][:8], 8)
    totals = snn.energy_report(q, res, hardware=["loihi"]).totals
    assert (totals["synops"] if isinstance(totals, dict) else totals.synops) > 0
    q.save(tmp_path / "q.h5")
    back = snn.load(tmp_path / "q.h5")
    assert back.meta["quantization"]["weight_bits"] == 8
    np.testing.assert_array_equal(back.graph.nodes["0"].weight, q.graph.nodes["0"].weight)


def test_bad_input_is_refused(mlp_net):
    for bits in (1, 17, 8.0, True):
        with pytest.raises(snn.SnnError, match="weight_bits must be an integer in"):
            snn.quantize(mlp_net, weight_bits=bits)
    with pytest.raises(snn.SnnError, match=r"node '1' \(relu\) is not supported by the weight quantiser"):
        snn.quantize(mlp_net.ann)


def test_every_snn_node_type_has_a_rule():
    assert {t for t in ir.NODE_TYPES.values() if t not in ir.ACTIVATIONS} == set(RULES)


def test_quantised_network_is_priced_on_the_integer_profile(digits):
    """A floating-point profile with an integer twin prices an 8-bit network on the twin,
    and the report says so; the float network keeps the float profile."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    net = snn.convert(model, digits[0][:100])
    q = snn.quantize(net, weight_bits=8)
    x = digits[2][:8]
    rep_f = snn.energy_report(net, snn.simulate(net, x, 4), hardware=["45nm-fp32", "loihi"])
    rep_q = snn.energy_report(q, snn.simulate(q, x, 4), hardware=["45nm-fp32", "loihi"])
    assert sorted(rep_f.energy) == ["45nm-fp32", "loihi"]
    assert sorted(rep_q.energy) == ["45nm-int8", "loihi"]
    assert any("priced on 45nm-int8" in a for a in rep_q.assumptions)
    # the integer profile's per-op energies are lower than FP32's for the same kind of counts
    assert rep_q.energy["45nm-int8"]["snn_dynamic_j"] < rep_f.energy["45nm-fp32"]["snn_dynamic_j"]
