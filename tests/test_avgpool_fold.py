"""Average pools of spikes folded into the layer that reads them (issue 14): the snntorch
backend drives a convolution after an average pool, or a Linear layer after an average
pool and a flatten, by the binary pre-pool spikes, each an event of the pooled map at its
window. The folded layer equals pool-then-layer (to float summation order), and a
simulation with the fold gives the spikes of every layer and the outputs of the reference
torch ops: identical in float64, at most 0.1 % flipped spikes in float32."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import snn
from snn import ir
from snn.backends.snntorch import engine, kernels


needs_kernels = pytest.mark.skipif(kernels.load() is None, reason="no C++ toolchain to build the fused kernels")


def _folded(pool, node, x, w, b, path=0):
    """``node(pool(x))`` by the event kernel with the pool folded in (loop order ``path``), and by torch."""
    from snn.backends.snntorch.event_cost import _pooled_event_forward

    rank = x.ndim - 2
    pooled = (F.avg_pool1d, F.avg_pool2d)[rank - 1](x, pool.kernel, pool.stride, pool.padding)
    if isinstance(node, ir.Linear):
        ref = F.linear(pooled.flatten(1), w, b)
    else:
        ref = (F.conv1d, F.conv2d)[rank - 1](pooled, w, b, node.stride, node.padding, node.dilation)
    got = _pooled_event_forward(kernels.load(), pool, node, {"weight": w, "bias": b}, x, tuple(ref.shape[1:]),
                                "always", path)
    return got, ref


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size,K,S,P", [((12, 12), 2, 2, 0), ((13, 11), 2, 2, 0), ((13, 12), 2, 2, 1),
                                         ((15, 13), 3, 3, 1), ((17, 16), 2, 3, 0), ((11,), 2, 2, 0), ((16,), 3, 3, 1)])
def test_folded_layer_equals_pool_then_layer(size, K, S, P, dtype):
    """Convolutions of every stride, padding and dilation, and a Linear layer after a
    flatten, on binary and graded inputs, maps with rows past the last window, padded pools."""
    g = torch.Generator().manual_seed(0)
    rank = len(size)
    spikes = (torch.rand((3, 4) + size, generator=g) < 0.3).to(dtype)
    graded = spikes * torch.randint(1, 4, spikes.shape, generator=g).to(dtype)
    pool = (ir.AvgPool1d, ir.AvgPool2d)[rank - 1]((K,) * rank, (S,) * rank, (P,) * rank)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for k, s, p, d in itertools.product((1, 3), (1, 2), (0, 1), (1, 2)):
        w = torch.randn((5, 4) + (k,) * rank, generator=g, dtype=dtype)
        b = torch.randn(5, generator=g, dtype=dtype)
        node = (ir.Conv1d, ir.Conv2d)[rank - 1](w.numpy(), b.numpy(), (s,) * rank, (p,) * rank, (d,) * rank)
        for x, path in itertools.product((spikes, graded), (1, 2)):  # both loop orders of the kernel
            got, ref = _folded(pool, node, x, w, b, path)
            torch.testing.assert_close(got, ref, rtol=tol, atol=tol, msg=f"k={k} s={s} p={p} d={d} path={path}")
    n_pooled = (F.avg_pool1d, F.avg_pool2d)[rank - 1](spikes, K, S, P)[0].numel()
    w, b = torch.randn(7, n_pooled, generator=g, dtype=dtype), torch.randn(7, generator=g, dtype=dtype)
    for x, path in itertools.product((spikes, graded), (1, 2)):
        got, ref = _folded(pool, ir.Linear(w.numpy(), b.numpy()), x, w, b, path)
        torch.testing.assert_close(got, ref, rtol=tol, atol=tol)


def test_overlapping_or_grouped_is_not_foldable():
    """A pool with kernel > stride (a pooled value shares inputs with its neighbours) or a
    grouped convolution is left to the dense pool and layer."""
    from snn.backends.snntorch.event_cost import foldable

    conv = ir.Conv2d(np.ones((2, 2, 3, 3)), padding=(1, 1))
    assert foldable(ir.AvgPool2d((2, 2), (2, 2)), conv, (2, 9, 9))
    assert not foldable(ir.AvgPool2d((3, 3), (2, 2)), conv, (2, 9, 9))
    assert not foldable(ir.AvgPool2d((3, 3), (2, 2)), ir.Linear(np.ones((3, 32))), (2, 9, 9))
    assert not foldable(ir.AvgPool2d((2, 2), (2, 2)), ir.Conv2d(np.ones((2, 1, 3, 3)), groups=2), (2, 9, 9))


def test_folded_weights_are_device_agnostic():
    """The folded weights are torch ops on the weights' device: on 'meta' (no data, as on a
    GPU the code runs unchanged) they have the layout and geometry the CPU gives."""
    from snn.backends.snntorch.event_cost import _pooled_event_weights

    pool, node = ir.AvgPool2d((2, 2), (2, 2)), ir.Conv2d(np.ones((8, 4, 3, 3)), padding=(1, 1))
    cpu = _pooled_event_weights(pool, node, {"weight": torch.ones(8, 4, 3, 3)}, (4, 14, 14))
    meta = _pooled_event_weights(pool, node, {"weight": torch.ones(8, 4, 3, 3, device="meta")}, (4, 14, 14))
    assert meta[0].device.type == "meta" and meta[0].shape == cpu[0].shape == (3, 3, 4, 16) and meta[1:] == cpu[1:]
    assert cpu[2] == [2, 2, 2, 2, 0, 0, 7, 7] and float(cpu[0][0, 0, 0, 0]) == 0.25
    lin = _pooled_event_weights(pool, ir.Linear(np.ones((10, 4 * 7 * 7))),
                                {"weight": torch.ones(10, 4 * 7 * 7, device="meta")}, (4, 14, 14))
    assert lin[0].device.type == "meta" and lin[0].shape == (7, 7, 4, 16)


# --------------------------------------------------------------------------- in the backend
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
def test_avgpool_cnn_folded_equals_reference(which, precision, digits, monkeypatch):
    """Every pool of these nets is folded (each conv after a pool, each Linear after pool and
    flatten) and runs with its IF layer as one kernel (``if_avgpool``), and the recorded
    spikes and outputs are the reference torch ops'."""
    fused, calls = kernels.load(), []
    run_kernel = fused.if_avgpool
    monkeypatch.setattr(fused, "if_avgpool", lambda *a: calls.append(a[11:13]) or run_kernel(*a))
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
    assert len(set(calls)) == 2  # both pools (their output sizes) ran with their IF layer
    auto = snn.simulate(net, x[100:], impl="fused", **kw)  # the cost model's choice per tile, either way the same
    _assert_same(ref, auto, precision)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size,K,S,P", [((12, 12), (2, 2), (2, 2), (0, 0)), ((13, 11), (2, 2), (2, 2), (1, 0)),
                                         ((17, 16), (2, 3), (3, 3), (1, 1)), ((1, 15), (1, 2), (1, 2), (0, 1)),
                                         ((1, 16), (1, 2), (1, 2), (0, 0)), ((9, 9), (3, 3), (3, 3), (0, 0))])
def test_if_avgpool_equals_if_then_pool(size, K, S, P, dtype):
    """The fused IF + average pool kernel: the same membranes, previous spikes and spike
    counts as ``if_scan``, and as its output the windows' spike sums (pool * area), for the
    fast 2 x 2 path, windows that tile the map, padded and partial windows, 1-D pools (height
    1; rows that the windows tile), 4 channels and 40 (small planes stepped in groups),
    static and varying input, both resets."""
    fused = kernels.load()
    g = torch.Generator().manual_seed(1)
    k, B = 5, 3
    Ho, Wo = ((n + 2 * p - kk) // s + 1 for n, kk, s, p in zip(size, K, S, P))
    for static, subtract, C in itertools.product((False, True), (False, True), (4, 40)):
        x = torch.rand(((B,) if static else (k, B)) + (C,) + size, generator=g, dtype=dtype) * 0.9
        state = [torch.rand((B, C) + size, generator=g, dtype=dtype), torch.zeros((B, C) + size, dtype=dtype)]
        ref_u, ref_p, u, p = state[0].clone(), state[1].clone(), state[0].clone(), state[1].clone()
        ref_steps, steps = torch.zeros((k, C) + size, dtype=torch.float64), torch.zeros((k, C) + size, dtype=torch.float64)
        s = fused.if_scan(x, None, None, ref_u, ref_p, 0.7, subtract, static, k, ref_steps, False)
        ref = F.avg_pool2d(s.reshape((k * B, C) + size), K, S, P) * (K[0] * K[1])
        got = fused.if_avgpool(x, u, p, 0.7, subtract, static, k, steps, list(K), list(S), list(P), Ho, Wo)
        assert got.shape == (k, B, C, Ho, Wo) and float(s.sum()) > 0
        torch.testing.assert_close(got.reshape(ref.shape), ref, rtol=0, atol=1e-12)
        for a, b in ((u, ref_u), (p, ref_p), (steps, ref_steps)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="non-overlapping"):
        fused.if_avgpool(x, u, p, 0.7, True, static, k, None, [3, 3], [2, 2], [0, 0], Ho, Wo)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size,conv,K,S,P", [((12, 12), (3, 1, 1), (2, 2), (2, 2), (0, 0)),
                                              ((13, 11), (3, 1, 1), (2, 2), (2, 2), (1, 0)),
                                              ((17, 16), (3, 2, 1), (2, 3), (3, 3), (1, 1)),
                                              ((9, 9), (1, 1, 0), (3, 3), (3, 3), (0, 0))])
def test_event_conv_if_avgpool_equals_conv_then_if_avgpool(size, conv, K, S, P, dtype):
    """``event_conv2d_if_avgpool`` (an event-driven convolution, the IF layer that alone reads
    it and that layer's average pool, one kernel parallel over samples) gives bit for bit
    ``event_conv2d`` then ``if_avgpool``: window sums, membranes, previous spikes and the IF's
    batch sums (none, per chunk, per step), for stride 1 and 2, padded and partial windows,
    a 1 x 1 convolution, binary and graded inputs, both resets."""
    from tests.test_fused import event_if_case

    fused = kernels.load()
    g = torch.Generator().manual_seed(2)
    kk, s, p = conv
    ci, co, k, B = 5, 29, 4, 3
    Ho, Wo = ((n + 2 * p - kk) // s + 1 for n in size)
    Hp, Wp = ((n + 2 * q - a) // b + 1 for n, a, b, q in zip((Ho, Wo), K, S, P))
    pool = [list(K), list(S), list(P), Hp, Wp]
    for (subtract, rows), graded in itertools.product([(True, None), (True, 1), (False, k), (True, k)], (False, True)):
        x, wt, b, u, prev, steps, geometry, y = event_if_case(g, (ci, co, kk, s, p), size, k, B, rows, dtype, graded)
        u1, p1, u2, p2 = u.clone(), prev.clone(), u.clone(), prev.clone()
        ref = fused.if_avgpool(y, u1, p1, 0.7, subtract, False, k, steps[0], *pool)
        got = fused.event_conv2d_if_avgpool(x, wt, b, co, Ho, Wo, *geometry, 0, u2, p2, 0.7, subtract, k, steps[1],
                                            *pool)
        assert got.shape == (k, B, co, Hp, Wp) and float(ref.sum()) > 0
        for a, e in ((got, ref), (u2, u1), (p2, p1)) + (() if rows is None else ((steps[1], steps[0]),)):
            assert torch.equal(a, e)
    with pytest.raises(RuntimeError, match="non-overlapping"):
        fused.event_conv2d_if_avgpool(x, wt, b, co, Ho, Wo, *geometry, 0, u2, p2, 0.7, True, k, None,
                                      [3, 3], [2, 2], [0, 0], Hp, Wp)


@needs_kernels
@pytest.mark.parametrize("which", ["2d", "2d_pad"])
def test_layer_if_and_pool_fused_equal_reference(which, digits, monkeypatch):
    """With every event-driven convolution before an IF layer and its folded average pool run
    as one kernel (``FUSE_IF_NEURONS`` lowered to 1 for these small nets), float64: the
    reference spikes in every layer and step and its outputs, and the kernel ran."""
    fused, calls = kernels.load(), []
    run_kernel = fused.event_conv2d_if_avgpool
    monkeypatch.setattr(fused, "event_conv2d_if_avgpool", lambda *a: calls.append(a[-2:]) or run_kernel(*a))
    monkeypatch.setattr(engine, "FUSE_IF_NEURONS", 1)
    torch.manual_seed(0)
    model, shape = MODELS[which]
    x = np.ascontiguousarray(np.resize(digits[0][:120], (120,) + shape)).astype(np.float32)
    net = snn.convert(model.eval(), x[:100])
    kw = dict(timesteps=20, precision="float64", batch_size=7, chunk=6)
    ref = snn.simulate(net, x[100:], impl="torch", **kw)
    got = snn.simulate(net, x[100:], impl="fused", event="always", **kw)
    assert calls and set(calls) == {(2, 2) if which == "2d" else (1, 1)}  # the second pool's output
    _assert_same(ref, got, "float64")


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
