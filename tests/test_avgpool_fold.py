"""Average pools of spikes folded into the layer that reads them (issue 14): the snntorch
backend drives a convolution after an average pool, or a Linear layer after an average
pool and a flatten, by the binary pre-pool spikes with the pool folded into its weights.
The folded layer equals pool-then-layer (exactly in float64, on any device torch has), and
a simulation with the fold gives the spikes of every layer and the outputs of the
reference torch ops: identical in float64, at most 0.1 % flipped spikes in float32."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import snn
from snn import ir, ir_torch
from snn.backends.snntorch import engine, kernels


def _conv_after_pool(x, pool, node, w):
    """The folded convolution of ``x`` (N, C, *size) with an explicit output size (the conv
    of the pooled map's), as the event kernel computes it: crop, zero padding, stride."""
    pooled = (F.avg_pool1d, F.avg_pool2d)[x.ndim - 3](x, pool.kernel, pool.stride, pool.padding)
    ref = (F.conv1d, F.conv2d)[x.ndim - 3](pooled, w, None, node.stride, node.padding, node.dilation)
    wf, stride, padding, crop = ir_torch.avgpool_conv(pool, node, w, tuple(x.shape[1:]))
    xc = x[(..., *[slice(0, c) for c in crop])]
    pads = [v for p, extra in zip(reversed(padding), reversed(wf.shape[2:])) for v in (p, p + extra)]
    got = (F.conv1d, F.conv2d)[x.ndim - 3](F.pad(xc, pads), wf, None, stride)
    return got[(..., *[slice(0, n) for n in ref.shape[2:]])], ref


@pytest.mark.parametrize("size,K,S,P", [((12, 12), 2, 2, 0), ((13, 11), 2, 2, 0), ((13, 12), 2, 2, 1),
                                         ((15, 13), 3, 3, 1), ((17, 16), 2, 3, 0), ((11,), 2, 2, 0), ((16,), 3, 3, 1)])
def test_folded_conv_equals_pool_then_conv(size, K, S, P):
    g = torch.Generator().manual_seed(0)
    rank = len(size)
    x = (torch.rand((3, 4) + size, generator=g) < 0.3).double()
    pool = (ir.AvgPool1d, ir.AvgPool2d)[rank - 1]((K,) * rank, (S,) * rank, (P,) * rank)
    for k, s, p, d in itertools.product((1, 3), (1, 2), (0, 1), (1, 2)):
        w = torch.randn((5, 4) + (k,) * rank, generator=g, dtype=torch.float64)
        node = (ir.Conv1d, ir.Conv2d)[rank - 1](w.numpy(), None, (s,) * rank, (p,) * rank, (d,) * rank)
        got, ref = _conv_after_pool(x, pool, node, w)
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-12, msg=f"k={k} s={s} p={p} d={d}")


def test_overlapping_pool_is_not_folded_into_a_conv():
    """A pool with kernel > stride reads past a pooled map's border that the conv pads with
    zeros: no exact single convolution, so none is offered."""
    node = ir.Conv2d(np.ones((2, 2, 3, 3)), padding=(1, 1))
    assert ir_torch.avgpool_conv(ir.AvgPool2d((3, 3), (2, 2)), node, torch.ones(2, 2, 3, 3), (2, 9, 9)) is None


@pytest.mark.parametrize("size,K,S,P", [((8, 8), 2, 2, 0), ((7, 9), 3, 2, 1), ((6, 6), 2, 1, 0), ((11,), 2, 2, 1)])
def test_folded_linear_equals_pool_flatten_linear(size, K, S, P):
    g = torch.Generator().manual_seed(1)
    rank = len(size)
    x = torch.rand((3, 4) + size, generator=g, dtype=torch.float64)
    pooled = (F.avg_pool1d, F.avg_pool2d)[rank - 1](x, K, S, P)
    w = torch.randn(7, pooled[0].numel(), generator=g, dtype=torch.float64)
    pool = (ir.AvgPool1d, ir.AvgPool2d)[rank - 1]((K,) * rank, (S,) * rank, (P,) * rank)
    wf = ir_torch.avgpool_linear(pool, w, tuple(x.shape[1:]))
    torch.testing.assert_close(x.flatten(1) @ wf.T, pooled.flatten(1) @ w.T, rtol=0, atol=1e-12)


def test_folding_is_device_agnostic():
    """The folds are torch ops on the weights' device: on 'meta' (no data, as on a GPU the
    code runs unchanged) they give the shapes the CPU gives."""
    pool, node = ir.AvgPool2d((2, 2), (2, 2)), ir.Conv2d(np.ones((8, 4, 3, 3)), padding=(1, 1))
    cpu = ir_torch.avgpool_conv(pool, node, torch.ones(8, 4, 3, 3), (4, 14, 14))
    meta = ir_torch.avgpool_conv(pool, node, torch.ones(8, 4, 3, 3, device="meta"), (4, 14, 14))
    assert meta[0].device.type == "meta" and meta[0].shape == cpu[0].shape == (8, 4, 6, 6) and meta[1:] == cpu[1:]
    lin = ir_torch.avgpool_linear(pool, torch.ones(10, 4 * 7 * 7, device="meta"), (4, 14, 14))
    assert lin.device.type == "meta" and lin.shape == (10, 4 * 14 * 14)


# --------------------------------------------------------------------------- in the backend
needs_kernels = pytest.mark.skipif(kernels.load() is None, reason="no C++ toolchain to build the fused kernels")


def _avg_cnn_2d(pad: bool) -> nn.Module:
    if pad:  # 7x7 maps (a row and a column past the last window), a padded 3x3 pool
        return nn.Sequential(nn.Conv2d(1, 4, 2), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
                             nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AvgPool2d(3, padding=1),
                             nn.Flatten(), nn.Linear(6, 10))
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(6 * 2 * 2, 10))


def _avg_cnn_1d(pad: bool) -> nn.Module:
    return nn.Sequential(nn.Conv1d(4, 6, 3, padding=1), nn.ReLU(), nn.AvgPool1d(2, padding=int(pad)),
                         nn.Conv1d(6, 8, 3, padding=1, stride=1 + int(pad)), nn.ReLU(), nn.AvgPool1d(2),
                         nn.Flatten(), nn.Linear(8 * (2 if pad else 4), 10))


MODELS = {"2d": (_avg_cnn_2d(False), (1, 8, 8)), "2d_pad": (_avg_cnn_2d(True), (1, 8, 8)),
          "1d": (_avg_cnn_1d(False), (4, 16)), "1d_pad": (_avg_cnn_1d(True), (4, 16))}


def _assert_same(ref, got, precision):
    assert ref.step_sums.keys() == got.step_sums.keys()
    assert all(int(v.sum()) > 0 for v in ref.spike_sums.values()), "a layer never spikes: the test would be weak"
    if precision == "float64":
        for k in ref.step_sums:
            np.testing.assert_array_equal(got.step_sums[k], ref.step_sums[k], err_msg=k)
        np.testing.assert_allclose(got.outputs, ref.outputs, rtol=0, atol=1e-12 * np.abs(ref.outputs).max())
    else:
        for k in ref.step_sums:
            assert np.abs(got.step_sums[k] - ref.step_sums[k]).sum() <= 1e-3 * ref.step_sums[k].sum(), k
        assert (got.predictions[-1] == ref.predictions[-1]).mean() >= 0.95


@needs_kernels
@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("which", list(MODELS))
def test_avgpool_cnn_folded_equals_reference(which, precision, digits):
    """Every pool of these nets is folded (each conv after a pool, each Linear after pool and
    flatten), and the recorded spikes and outputs are the reference torch ops'."""
    torch.manual_seed(0)
    model, shape = MODELS[which]
    x = np.ascontiguousarray(np.resize(digits[0][:120], (120,) + shape)).astype(np.float32)
    net = snn.convert(model.eval(), x[:100])
    spiking = set(net.graph.spiking_nodes())
    folds = engine._avgpool_folds(net.graph, spiking)
    pools = [n for n, v in net.graph.nodes.items() if isinstance(v, (ir.AvgPool1d, ir.AvgPool2d))]
    assert sorted(p for p, _ in folds.values()) == sorted(pools) and len(pools) == 2
    kw = dict(timesteps=20, precision=precision, batch_size=7, chunk=6)
    ref = snn.simulate(net, x[100:], impl="torch", **kw)
    got = snn.simulate(net, x[100:], impl="fused", event="always", **kw)
    params = engine._params(net.graph, torch.device("cpu"), engine.DTYPES[precision])
    assert all("pool_event" in params.t[layer] for layer in folds)  # the folded weights were used
    _assert_same(ref, got, precision)
    auto = snn.simulate(net, x[100:], impl="fused", **kw)  # the cost model's choice per tile, either way the same
    _assert_same(ref, auto, precision)


@needs_kernels
def test_node_type_cases_with_every_pool_folded(digits):
    """The generated cases of test_node_types (residual nets with a pooled head, an
    overlapping pool before a Linear layer, 1-D pools before a conv): with every synaptic
    layer event-driven and every foldable pool folded, the reference spikes in float64."""
    from tests.test_node_types import T, build_cases

    folded = 0
    for case, (_, _, xt, net) in build_cases(digits).items():
        folded += len(engine._avgpool_folds(net.graph, set(net.graph.spiking_nodes())))
        kw = dict(precision="float64", seed=2)
        ref = snn.simulate(net, xt, T, impl="torch", **kw)
        got = snn.simulate(net, xt, T, impl="fused", event="always", **kw)
        for k in ref.step_sums:
            np.testing.assert_array_equal(got.step_sums[k], ref.step_sums[k], err_msg=f"{case}: {k}")
        np.testing.assert_allclose(got.outputs, ref.outputs, rtol=0, atol=1e-12 * np.abs(ref.outputs).max(),
                                   err_msg=case)
    assert folded >= 3


@needs_kernels
def test_pool_with_two_readers_is_not_folded():
    """A pool read by two layers stays a pool (each fold replaces the pooled map for one reader only)."""
    w = np.ones((2, 2, 1, 1))
    g = ir.Graph({"input": ir.Input((2, 4, 4)), "c0": ir.Conv2d(w), "s0": ir.IF(1.0), "p": ir.AvgPool2d((2, 2), (2, 2)),
                  "c1": ir.Conv2d(w), "c2": ir.Conv2d(w), "sum": ir.Add(np.ones((2, 2))), "s1": ir.IF(1.0),
                  "f": ir.Flatten(), "fc": ir.Linear(np.ones((3, 8))), "readout": ir.Readout()},
                 [("input", "c0"), ("c0", "s0"), ("s0", "p"), ("p", "c1"), ("p", "c2"), ("c1", "sum"), ("c2", "sum"),
                  ("sum", "s1"), ("s1", "f"), ("f", "fc"), ("fc", "readout")], "input", "readout")
    assert engine._avgpool_folds(g, set(g.spiking_nodes())) == {}
