"""Conversion: fidelity on load_digits, normalisation methods, residual scaling, HDF5 round
trip, the exported snntorch module, and every bad input the core issue names."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import snn
from snn import ir
from snn.conversion import _commute_maxpool_relu
from snn.errors import ConversionError, SnnError
from tests.conftest import accuracy


def _img(x):
    return x.reshape(-1, 1, 8, 8)


@pytest.mark.parametrize("which", ["mlp", "cnn", "resnet"])
def test_fidelity_on_digits_at_T64(which, digits, digits_mlp, digits_cnn, digits_resnet):
    model = {"mlp": digits_mlp, "cnn": digits_cnn, "resnet": digits_resnet}[which]
    xtr, _, xte, yte = digits
    if which != "mlp":
        xtr, xte = _img(xtr), _img(xte)
    ann = accuracy(model, xte, yte)
    net = snn.convert(model, xtr)
    acc = snn.simulate(net, xte, timesteps=64).accuracy(yte)
    assert acc.shape == (64,)
    assert acc[-1] >= ann - 0.01, (which, ann, acc[-1])


def test_spikes_are_binary_and_thresholds_are_one(cnn_net, digits):
    assert all(n.threshold == 1.0 for n in cnn_net.graph.nodes.values() if isinstance(n, ir.IF))
    res = snn.simulate(cnn_net, _img(digits[2][:20]), timesteps=16, batch_size=20)
    for name, steps in res.step_sums.items():  # with one sample per batch row, per-step counts <= N
        assert steps.max() <= 20
    res1 = snn.simulate(cnn_net, _img(digits[2][:1]), timesteps=16)
    for steps in res1.step_sums.values():
        assert set(np.unique(steps)) <= {0, 1}


def test_maxpool_stays_max_pooling(cnn_net):
    kinds = [n.kind for n in cnn_net.graph.nodes.values()]
    assert kinds.count("maxpool2d") == 2 and "avgpool2d" not in kinds
    # each max-pool pools spikes: its input is an IF layer
    for name, node in cnn_net.graph.nodes.items():
        if isinstance(node, ir.MaxPool2d):
            assert isinstance(cnn_net.graph.nodes[cnn_net.graph.inputs_of(name)[0]], ir.IF)
            assert name in cnn_net.graph.recorded_nodes()


def test_maxpool_before_relu_is_moved_after_it():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)).eval()
    g = _commute_maxpool_relu(snn.trace.trace(m, torch.randn(2, 1, 6, 6)))
    assert [g.nodes[n].kind for n in g.nodes] == ["input", "conv2d", "relu", "maxpool2d", "flatten", "linear"]
    x = torch.randn(5, 1, 6, 6)
    np.testing.assert_allclose(ir.evaluate(g, x.numpy())["output"], m.double()(x.double()).detach().numpy(),
                               atol=1e-10)


def test_normalisation_methods(digits, digits_mlp):
    x = digits[0]
    nets = {
        "max": snn.convert(digits_mlp, x, method="max"),
        "p99": snn.convert(digits_mlp, x, method="percentile", percentile=99.0),
        "chan": snn.convert(digits_mlp, x, method="percentile", channelwise=True),
    }
    lam_max = np.array(nets["max"].meta["scales"]["1"])
    lam_p99 = np.array(nets["p99"].meta["scales"]["1"])
    lam_ch = np.array(nets["chan"].meta["scales"]["1"])
    assert lam_max.shape == (128,) and np.all(lam_max == lam_max[0])  # one scale per layer
    assert lam_p99[0] < lam_max[0]
    assert len(np.unique(lam_ch)) > 1 and np.all(lam_ch <= lam_max[0] + 1e-9)
    # the layer-wise max equals the largest calibration activation of that ReLU
    act = ir.evaluate(nets["max"].ann, x, keep=["1"])["1"]
    assert lam_max[0] == pytest.approx(act.max(), rel=1e-5)
    for name, net in nets.items():
        acc = snn.simulate(net, digits[2], timesteps=64).accuracy(digits[3])[-1]
        assert acc > 0.9, name


def test_residual_add_gains_put_spikes_and_currents_in_one_unit(resnet_net):
    g = resnet_net.graph
    adds = [n for n, v in g.nodes.items() if isinstance(v, ir.Add)]
    assert len(adds) == 2
    lam = resnet_net.meta["scales"]
    # identity shortcut: the block input's spikes (scale of relu before) enter with gain lam_in / lam_out
    add = g.nodes[adds[0]]
    src_if = g.inputs_of(adds[0])[1]
    out_if = g.consumers_of(adds[0])[0]
    np.testing.assert_allclose(add.gains[1], np.array(lam[src_if]) / np.array(lam[out_if]))
    np.testing.assert_allclose(add.gains[0], 1.0)  # the conv branch was rescaled in its weights


def test_hdf5_round_trip_is_lossless(tmp_path, resnet_net, digits):
    p = tmp_path / "net.h5"
    resnet_net.save(p)
    back = snn.load(p)
    assert list(back.graph.nodes) == list(resnet_net.graph.nodes)
    assert back.graph.edges == resnet_net.graph.edges and back.meta == resnet_net.meta
    for name, node in resnet_net.graph.nodes.items():
        other = back.graph.nodes[name]
        assert type(other) is type(node)
        for k, v in ir.node_to_dict(node).items():
            w = ir.node_to_dict(other)[k]
            if isinstance(v, np.ndarray):
                assert v.dtype == w.dtype and np.array_equal(v, w)
            else:
                assert v == w, (name, k)
    assert list(back.ann.nodes) == list(resnet_net.ann.nodes)
    x = _img(digits[2][:30])
    a = snn.simulate(resnet_net, x, timesteps=8, precision="float64")
    b = snn.simulate(back, x, timesteps=8, precision="float64")
    np.testing.assert_array_equal(a.outputs, b.outputs)
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left


def test_load_errors(tmp_path):
    with pytest.raises(SnnError, match="no such file"):
        snn.load(tmp_path / "missing.h5")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(SnnError, match="not a readable snn network file|not an snn network file"):
        snn.load(bad)


def test_to_snntorch_matches_simulate(cnn_net, digits):
    import snntorch

    x = _img(digits[2][:25])
    res = snn.simulate(cnn_net, x, timesteps=10, precision="float64")
    step = cnn_net.to_snntorch("float64")
    assert any(isinstance(m, snntorch.Leaky) for m in step.modules())
    assert any(isinstance(m, nn.Conv2d) for m in step.modules())
    step.reset()
    xt = torch.tensor(x, dtype=torch.float64)
    with torch.no_grad():
        for t in range(10):
            y, mem = step(xt)
            np.testing.assert_allclose(mem.numpy() / (t + 1), res.outputs[t], rtol=1e-9, atol=1e-12)
    assert y.shape == (25, 10)


def test_user_model_in_training_mode_is_not_changed(digits):
    m = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10)).train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    net = snn.convert(m, digits[0][:100])
    assert m.training
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k])
    # converted in eval mode: BN used its running statistics (folded), dropout removed
    assert [n.kind for n in net.graph.nodes.values()] == ["input", "linear", "if", "linear", "readout"]


def test_calibration_from_a_dataloader(digits, digits_mlp):
    ds = torch.utils.data.TensorDataset(torch.tensor(digits[0]), torch.tensor(digits[1]))
    loader = torch.utils.data.DataLoader(ds, batch_size=100)
    a = snn.convert(digits_mlp, loader, max_calibration=300)
    b = snn.convert(digits_mlp, digits[0][:300])
    assert a.meta["calibration_samples"] == 300
    assert a.meta["scales"] == b.meta["scales"]


@pytest.mark.parametrize("calib, msg", [
    (np.zeros((0, 64), np.float32), "empty"),
    (np.full((4, 64), np.nan, np.float32), "NaN"),
    (np.zeros((4, 63), np.float32), "shape"),
    ([], "empty"),
    ("abc", "calibration must be"),
])
def test_bad_calibration(calib, msg, digits_mlp):
    with pytest.raises(ConversionError, match=msg):
        snn.convert(digits_mlp, calib)


@pytest.mark.parametrize("kw, msg", [
    ({"method": "mean"}, "unknown normalisation method 'mean'; valid: max, percentile"),
    ({"percentile": 0}, "percentile must be in"),
    ({"reset": "soft"}, "unknown reset 'soft'; valid: subtract, zero"),
])
def test_bad_conversion_options(kw, msg, digits, digits_mlp):
    with pytest.raises(ConversionError, match=msg):
        snn.convert(digits_mlp, digits[0][:10], **kw)


@pytest.mark.parametrize("kw, msg", [
    ({"timesteps": 0}, "timesteps must be an integer >= 1"),
    ({"timesteps": -3}, "timesteps must be an integer >= 1"),
    ({"timesteps": 4, "backend": "nest"}, "unknown backend 'nest'; valid: snntorch, brian2"),
    ({"timesteps": 4, "encoding": "latency"}, "unknown encoding 'latency'; valid: constant, poisson"),
    ({"timesteps": 4, "precision": "float16"}, "unknown precision 'float16'; valid: float32, float64"),
    ({"timesteps": 4, "device": "tpu"}, "unknown device 'tpu'"),
    ({"timesteps": 4, "batch_size": 0}, "batch_size must be"),
])
def test_bad_simulation_options(kw, msg, mlp_net, digits):
    with pytest.raises(SnnError, match=msg):
        snn.simulate(mlp_net, digits[2][:4], **kw)


def test_bad_simulation_inputs(mlp_net, digits):
    with pytest.raises(SnnError, match="do not match the network input"):
        snn.simulate(mlp_net, digits[2][:4, :10], timesteps=4)
    with pytest.raises(SnnError, match="NaN"):
        snn.simulate(mlp_net, np.full((2, 64), np.nan), timesteps=4)
    with pytest.raises(SnnError, match=r"poisson encoding needs inputs in \[0, 1\]"):
        snn.simulate(mlp_net, digits[2][:4] * 3, timesteps=4, encoding="poisson")
    with pytest.raises(SnnError, match="labels"):
        snn.simulate(mlp_net, digits[2][:4], timesteps=4).accuracy([1, 2])


def test_poisson_is_seeded_and_backend_input_is_recorded(mlp_net, digits):
    x = digits[2][:50]
    a = snn.simulate(mlp_net, x, timesteps=16, encoding="poisson", seed=3)
    b = snn.simulate(mlp_net, x, timesteps=16, encoding="poisson", seed=3)
    c = snn.simulate(mlp_net, x, timesteps=16, encoding="poisson", seed=4)
    np.testing.assert_array_equal(a.outputs, b.outputs)
    assert not np.array_equal(a.outputs, c.outputs)
    # input spikes are recorded; their rate approximates the pixel intensity
    rate = a.spike_counts["input"] / 16
    assert abs(rate.mean() - x.mean()) < 0.02
    assert snn.simulate(mlp_net, x, timesteps=4).spike_counts.keys() == {"1", "4"}


def test_result_shapes(mlp_net, digits):
    res = snn.simulate(mlp_net, digits[2][:30], timesteps=5, batch_size=7)
    assert res.outputs.shape == (5, 30, 10) and res.predictions.shape == (5, 30)
    assert res.spike_counts["1"].shape == (128,) and res.spike_counts_per_step["1"].shape == (5, 128)
    np.testing.assert_allclose(res.spike_counts_per_step["1"].sum(0), res.spike_counts["1"])
    tot = snn.simulate(mlp_net, digits[2][:30], timesteps=5, record="totals")
    assert tot.spike_counts_per_step is None
    np.testing.assert_array_equal(tot.spike_sums["1"], res.spike_sums["1"])
