"""brian2 backend: connectivity matrices, golden spike trains, record modes, batches,
preferences, and every bad input the issue names. Fast: numpy target, tiny graphs."""
from __future__ import annotations

import sys

import numpy as np
import pytest

import snn
from snn import ir
from snn.backends import brian2_forms as bf
from snn.errors import SnnError

pytestmark = pytest.mark.brian2


def _sim(net, x, T, **kw):
    kw.setdefault("target", "numpy")
    return snn.simulate(net, x, T, backend="brian2", precision="float64", **kw)


# --------------------------------------------------------------------------- connectivity
@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 0, 1, 1), (2, 1, 1, 2), (1, 2, 2, 1), (2, 0, 1, 4)])
def test_conv_matrix_equals_convolution(stride, padding, dilation, groups):
    rng = np.random.default_rng(0)
    node = ir.Conv2d(weight=rng.normal(size=(8, 4 // groups, 3, 3)), stride=stride,
                     padding=padding, dilation=dilation, groups=groups)
    in_shape = (4, 9, 7)
    out_shape = ir.output_shape(node, [in_shape])
    x = rng.normal(size=(3,) + in_shape)
    M = bf.conv_matrix(node, in_shape, out_shape)
    ref = ir.eval_node(node, [x]).reshape(3, -1)
    np.testing.assert_allclose((M @ x.reshape(3, -1).T).T, ref, rtol=1e-12, atol=1e-12)


def test_pool_matrix_equals_average_pooling():
    node = ir.AvgPool2d(kernel=3, stride=2, padding=1)
    x = np.random.default_rng(1).normal(size=(2, 3, 7, 6))
    out_shape = ir.output_shape(node, [x.shape[1:]])
    M = bf.pool_matrix(node, x.shape[1:], out_shape, 1.0 / 9)
    np.testing.assert_allclose((M @ x.reshape(2, -1).T).T, ir.eval_node(node, [x]).reshape(2, -1), rtol=1e-12)


# --------------------------------------------------------------------------- golden trains
def _one_neuron(reset: str) -> ir.Graph:
    nodes = {"input": ir.Input((1,)), "fc": ir.Linear(weight=[[0.5]]),
             "if": ir.IF(threshold=1.0, reset=reset, v_init=0.0), "out": ir.Linear(weight=[[1.0]]),
             "readout": ir.Readout()}
    edges = [("input", "fc"), ("fc", "if"), ("if", "out"), ("out", "readout")]
    return ir.Graph(nodes, edges, "input", "readout")


@pytest.mark.parametrize("reset,train", [
    # u = 0.5, 1.0 (tie: no spike), 1.5 (spike), then 1.0 again (subtract) or 0.5 (zero)
    ("subtract", [0, 0, 1, 0, 1, 0, 1, 0]),
    ("zero", [0, 0, 1, 0, 0, 1, 0, 0]),
])
def test_golden_spike_train_and_tie_rule(reset, train):
    g = _one_neuron(reset)
    res = _sim(g, np.ones((2, 1)), 8)
    np.testing.assert_array_equal(res.step_sums["if"][:, 0], 2 * np.array(train))
    expected = np.cumsum(train) / np.arange(1, 9)
    np.testing.assert_allclose(res.outputs[:, 0, 0], expected, rtol=1e-15)


def test_same_step_propagation_through_layers():
    """A spike of layer l at step t reaches layer l+1 at step t (no synaptic delay)."""
    nodes = {"input": ir.Input((1,)), "a": ir.Linear(weight=[[2.0]]), "if1": ir.IF(v_init=0.0),
             "b": ir.Linear(weight=[[1.5]]), "if2": ir.IF(v_init=0.0), "c": ir.Linear(weight=[[1.0]]),
             "readout": ir.Readout()}
    g = ir.Graph(nodes, [("input", "a"), ("a", "if1"), ("if1", "b"), ("b", "if2"), ("if2", "c"), ("c", "readout")],
                 "input", "readout")
    res = _sim(g, np.ones((1, 1)), 3)
    # if1 spikes at every step (u = 2 > 1, then 2 - 1 + 2 ...); if2 gets 1.5 at step 0 and spikes at once
    np.testing.assert_array_equal(res.step_sums["if1"][:, 0], [1, 1, 1])
    np.testing.assert_array_equal(res.step_sums["if2"][:, 0], [1, 1, 1])
    np.testing.assert_allclose(res.outputs[0, 0, 0], 1.0)


# --------------------------------------------------------------------------- records, batches, precision
def test_record_modes(mlp_net, digits):
    x = digits[2][:6]
    steps = _sim(mlp_net, x, 8)
    totals = _sim(mlp_net, x, 8, record="totals")
    none = _sim(mlp_net, x, 8, record="none")
    assert totals.step_sums is None and none.spike_sums == {} and none.step_sums is None
    for k in steps.spike_sums:
        np.testing.assert_array_equal(totals.spike_sums[k], steps.spike_sums[k])
        np.testing.assert_array_equal(steps.step_sums[k].sum(0), steps.spike_sums[k])
    np.testing.assert_array_equal(none.outputs, steps.outputs)
    assert sum(int(v.sum()) for v in steps.spike_sums.values()) > 0


def test_batches_and_poisson_seed_match_snntorch(mlp_net, digits):
    x = digits[2][:11]
    a = snn.simulate(mlp_net, x, 8, backend="snntorch", encoding="poisson", precision="float64", batch_size=4, seed=5)
    b = _sim(mlp_net, x, 8, encoding="poisson", batch_size=4, seed=5)
    for k in a.spike_sums:
        np.testing.assert_array_equal(b.step_sums[k], a.step_sums[k])
    c = _sim(mlp_net, x, 8, encoding="poisson", batch_size=4, seed=6)
    assert not np.array_equal(c.spike_sums["input"], b.spike_sums["input"])


def test_float32_is_honoured(mlp_net, digits):
    res = snn.simulate(mlp_net, digits[2][:4], 4, backend="brian2", precision="float32", target="numpy")
    assert res.outputs.dtype == np.float32


def test_preferences_restored(mlp_net, digits):
    from brian2 import get_device, prefs

    keys = ("codegen.target", "core.default_float_dtype", "codegen.runtime.cython.cache_dir",
            "codegen.cpp.extra_compile_args_gcc")
    before = {k: prefs[k] for k in keys}
    dev = get_device()
    snn.simulate(mlp_net, digits[2][:2], 2, backend="brian2", precision="float32", target="numpy")
    assert {k: prefs[k] for k in keys} == before
    assert get_device() is dev


# --------------------------------------------------------------------------- bad input
def test_unknown_target_lists_valid(mlp_net, digits):
    with pytest.raises(SnnError, match="unknown brian2 code generation target 'gpu'.*cython, numpy, cpp_standalone"):
        _sim(mlp_net, digits[2][:2], 2, target="gpu")


def test_unknown_option_and_device(mlp_net, digits):
    with pytest.raises(SnnError, match="unknown option.*chunk"):
        _sim(mlp_net, digits[2][:2], 2, chunk=4)
    with pytest.raises(SnnError, match="CPU only"):
        _sim(mlp_net, digits[2][:2], 2, device="cuda")


def test_ann_graph_is_refused(mlp_net, digits):
    with pytest.raises(SnnError, match=r"node '1' \(relu\).*backend 'brian2'"):
        _sim(mlp_net.ann, digits[2][:2], 2)


def test_maxpool_of_currents_is_refused():
    nodes = {"input": ir.Input((1, 4, 4)), "conv": ir.Conv2d(weight=np.ones((2, 1, 3, 3)), padding=1),
             "if0": ir.IF(), "conv2": ir.Conv2d(weight=np.ones((2, 2, 1, 1))),
             "pool": ir.MaxPool2d(kernel=2, stride=2), "if": ir.IF(), "flat": ir.Flatten(),
             "fc": ir.Linear(weight=np.ones((3, 8))), "readout": ir.Readout()}
    edges = [("input", "conv"), ("conv", "if0"), ("if0", "conv2"), ("conv2", "pool"), ("pool", "if"),
             ("if", "flat"), ("flat", "fc"), ("fc", "readout")]
    g = ir.Graph(nodes, edges, "input", "readout")
    with pytest.raises(SnnError, match=r"node 'pool' \(maxpool2d\).*backend 'brian2'"):
        _sim(g, np.ones((1, 1, 4, 4)), 2)


def test_missing_brian2_says_what_to_install(mlp_net, digits, monkeypatch):
    monkeypatch.setitem(sys.modules, "brian2", None)
    with pytest.raises(SnnError, match="pip install brian2"):
        _sim(mlp_net, digits[2][:2], 2)


@pytest.mark.parametrize("target", ["cython", "cpp_standalone"])
def test_missing_compiler_says_what_to_install(mlp_net, digits, monkeypatch, tmp_path, target):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(SnnError, match="needs a C\\+\\+ compiler.*install"):
        _sim(mlp_net, digits[2][:2], 2, target=target)


# --------------------------------------------------------------------------- one network per simulation
@pytest.mark.parametrize("encoding", ["constant", "poisson"])
def test_one_network_reused_across_batches_groups_and_runs(cnn_net, digits, monkeypatch, encoding):
    """23 samples in batches of 10, groups of 3 samples, runs of 7 samples (3 epochs, padded):
    the network is built once and every spike is the snntorch backend's."""
    from snn.backends import brian2 as b2be

    built = []
    init = b2be._Net.__init__

    def counted(self, *args, **kw):
        built.append((args[2], args[3]))  # (G, E)
        init(self, *args, **kw)

    monkeypatch.setattr(b2be._Net, "__init__", counted)
    x = digits[2][:23].reshape(-1, 1, 8, 8)
    a = snn.simulate(cnn_net, x, 8, backend="snntorch", encoding=encoding, precision="float64", batch_size=10, seed=1)
    b = _sim(cnn_net, x, 8, encoding=encoding, batch_size=10, seed=1, group=3, run_samples=7)
    assert built == [(3, 3)]
    assert all(int(v.sum()) > 0 for v in a.spike_sums.values())
    for k in a.step_sums:
        np.testing.assert_array_equal(b.step_sums[k], a.step_sums[k], err_msg=k)
        np.testing.assert_array_equal(b.spike_sums[k], a.spike_sums[k], err_msg=k)
    np.testing.assert_array_equal(b.predictions, a.predictions)
    np.testing.assert_allclose(b.outputs, a.outputs, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("option,value", [("group", 0), ("group", 2.5), ("run_samples", -1), ("run_samples", "all")])
def test_bad_group_options(mlp_net, digits, option, value):
    with pytest.raises(SnnError, match=f"brian2 option {option} must be a positive integer or 'auto'"):
        _sim(mlp_net, digits[2][:2], 2, **{option: value})
