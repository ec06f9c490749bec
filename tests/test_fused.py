"""The fused CPU kernels give exactly the spikes and outputs of the reference torch ops
(issue 6: results identical before and after the speed work)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import snn
from snn.backends.snntorch import kernels

pytestmark = pytest.mark.skipif(kernels.load() is None, reason="no C++ toolchain to build the fused kernels")


@pytest.mark.parametrize("which", ["mlp_net", "cnn_net", "resnet_net"])
@pytest.mark.parametrize("encoding", ["constant", "poisson"])
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_fused_equals_reference(which, encoding, precision, request, digits):
    """Fused IF/max-pool/Add kernels with dense synaptic ops: bit for bit the reference.
    With every synaptic op event-driven (``event="always"``) the currents are summed in
    another order: in float64 the same spikes in every layer and step, outputs within
    1e-12; in float32 a current that lands within rounding of the threshold can flip a
    spike (seen on AVX-512 machines: 10 of 79,000 spikes in the residual net), so at
    most 0.1 % of any layer's spikes may differ and the predictions must agree."""
    net = request.getfixturevalue(which)
    x = digits[2][:48]
    if which != "mlp_net":
        x = x.reshape(-1, 1, 8, 8)
    kw = dict(timesteps=24, encoding=encoding, precision=precision, seed=5, batch_size=20, chunk=9)
    ref = snn.simulate(net, x, impl="torch", **kw)
    dense = snn.simulate(net, x, impl="fused", event="never", **kw)
    event = snn.simulate(net, x, impl="fused", event="always", **kw)
    assert ref.step_sums.keys() == dense.step_sums.keys() == event.step_sums.keys()
    for k in ref.step_sums:
        np.testing.assert_array_equal(ref.step_sums[k], dense.step_sums[k], err_msg=k)
    np.testing.assert_array_equal(ref.outputs, dense.outputs)
    flips = {k: int(np.abs(ref.step_sums[k] - event.step_sums[k]).sum()) for k in ref.step_sums}
    if precision == "float64":
        assert not any(flips.values()), flips
        np.testing.assert_allclose(event.outputs, ref.outputs, rtol=0, atol=1e-12 * np.abs(ref.outputs).max())
        np.testing.assert_array_equal(event.predictions, ref.predictions)
    else:
        for k, n in flips.items():
            assert n <= 1e-3 * ref.step_sums[k].sum(), (k, n)
        if not any(flips.values()):
            np.testing.assert_allclose(event.outputs, ref.outputs, rtol=0, atol=1e-5 * np.abs(ref.outputs).max())
        assert (event.predictions[-1] == ref.predictions[-1]).mean() >= 0.95


def event_if_case(g: torch.Generator, conv: tuple, size: tuple, k: int, B: int, rows: int | None,
                  dtype: torch.dtype, graded: bool = False) -> tuple:
    """A random event layer + IF layer case: ``conv`` = (Cin, Co, kernel, stride, padding) on
    ``size`` maps, k steps of B samples of 20-25 % dense spikes (or graded: counts 1-3):
    ``(x, wt, b, u, prev, steps, geometry, y)``, ``steps`` two batch-sum buffers of ``rows``
    rows (or None) and ``y`` the layer's currents (k, B, Co, Ho, Wo) by ``event_conv2d``."""
    ci, co, kk, s, p = conv
    Ho, Wo = ((n + 2 * p - kk) // s + 1 for n in size)
    x = (torch.rand((k * B, ci) + tuple(size), generator=g) < (0.25 if graded else 0.2)).to(dtype)
    if graded:
        x = x * torch.randint(1, 4, x.shape, generator=g).to(dtype)
    wt = torch.zeros(kk, kk, ci, -(-co // 16) * 16, dtype=dtype)
    wt[..., :co] = torch.randn(kk, kk, ci, co, generator=g, dtype=dtype) * 0.5
    b = torch.randn(co, generator=g, dtype=dtype) * 0.1
    u, prev = torch.rand(B, co, Ho, Wo, generator=g, dtype=dtype), torch.zeros(B, co, Ho, Wo, dtype=dtype)
    steps = [None if rows is None else torch.zeros((rows, co, Ho, Wo), dtype=torch.float64) for _ in range(2)]
    geometry = [[s, s], [p, p], [1, 1]]
    y = kernels.load().event_conv2d(x, wt, b, co, Ho, Wo, *geometry, 0).reshape(k, B, co, Ho, Wo).contiguous()
    return x, wt, b, u, prev, steps, geometry, y


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(8, 20, 9, 3, 1, 1), (6, 32, 10, 3, 2, 1), (40, 24, 1, 1, 1, 0)])
def test_event_conv_if_kernel_equals_conv_then_if_scan(dtype, shape):
    """``event_conv2d_if`` (an event-driven layer and the IF layer that alone reads it, one
    kernel, parallel over samples) gives bit for bit ``event_conv2d`` then ``if_scan``:
    spikes, membranes, previous spikes and the batch sums (none, per chunk, per step), for
    a convolution, a strided one and a Linear layer (1 x 1), both resets."""
    fused = kernels.load()
    g = torch.Generator().manual_seed(0)
    ci, co, H, kk, s, p = shape
    k, B, Ho = 5, 3, (H + 2 * p - kk) // s + 1
    for subtract, rows in [(True, None), (True, 1), (False, 5), (True, 5)]:
        x, wt, b, u, prev, steps, geometry, y = event_if_case(g, (ci, co, kk, s, p), (H, H), k, B, rows, dtype)
        u1, p1, u2, p2 = u.clone(), prev.clone(), u.clone(), prev.clone()
        ref = fused.if_scan(y, None, None, u1, p1, 0.7, subtract, False, k, steps[0], False)
        got = fused.event_conv2d_if(x, wt, b, co, Ho, Ho, *geometry, 0, u2, p2, 0.7, subtract, k, steps[1], False)
        assert float(ref.sum()) > 0
        for a, e in ((got, ref), (u2, u1), (p2, p1)) + (() if rows is None else ((steps[1], steps[0]),)):
            assert torch.equal(a, e)
    with pytest.raises(RuntimeError, match="membranes"):
        fused.event_conv2d_if(x, wt, b, co, Ho, Ho, *geometry, 0, u2[:2], p2[:2], 0.7, True, k, None, False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spikes_as_bytes_equal_spikes_as_floats(dtype):
    """Spikes stored as bytes (uint8 0/1, for readers that are all event-driven layers):
    ``if_scan`` (plain and residual-sum input) and ``event_conv2d_if`` give the float spikes'
    values and the same state and counts, and the event kernels read byte spikes into the
    same currents, bit for bit, on every loop order (64-byte blocks and their remainder)."""
    fused = kernels.load()
    g = torch.Generator().manual_seed(3)
    k, B, C, H = 4, 3, 7, 9  # 567 neurons per sample: 8 blocks of 64 bytes and a remainder
    x = torch.rand(k, B, C, H, H, generator=g, dtype=dtype)
    x2, gains = torch.rand(k, B, C, H, H, generator=g, dtype=dtype), torch.rand(2, C, generator=g, dtype=dtype)
    for second in (None, x2):
        state = [torch.rand(B, C, H, H, generator=g, dtype=dtype) * 0.5, torch.zeros(B, C, H, H, dtype=dtype)]
        runs = []
        for as_bytes in (False, True):
            u, p, steps = state[0].clone(), state[1].clone(), torch.zeros((k, C, H, H), dtype=torch.float64)
            s = fused.if_scan(x, second, None if second is None else gains, u, p, 0.7, True, False, k, steps, as_bytes)
            runs.append((s, u, p, steps))
        (s, u, p, steps), (sb, ub, pb, stepsb) = runs
        assert sb.dtype == torch.uint8 and float(s.sum()) > 0 and torch.equal(sb.to(dtype), s)
        assert torch.equal(u, ub) and torch.equal(p, pb) and torch.equal(steps, stepsb)
    wt = torch.zeros(3, 3, C, 16, dtype=dtype)
    wt[..., :11] = torch.randn(3, 3, C, 11, generator=g, dtype=dtype)
    b = torch.randn(11, generator=g, dtype=dtype)
    xs, xb = s.reshape(k * B, C, H, H), sb.reshape(k * B, C, H, H)
    for path in (0, 1, 2):
        assert torch.equal(fused.event_conv2d(xb, wt, b, 11, H, H, [1, 1], [1, 1], [1, 1], path),
                           fused.event_conv2d(xs, wt, b, 11, H, H, [1, 1], [1, 1], [1, 1], path))
    u0 = torch.rand(B, 11, H, H, generator=g, dtype=dtype)
    outs = []
    for as_bytes in (False, True):
        u, p = u0.clone(), torch.zeros_like(u0)
        outs.append((fused.event_conv2d_if(xb, wt, b, 11, H, H, [1, 1], [1, 1], [1, 1], 0, u, p, 0.7, True, k, None,
                                           as_bytes), u, p))
    assert outs[1][0].dtype == torch.uint8 and torch.equal(outs[1][0].to(dtype), outs[0][0])
    assert torch.equal(outs[0][1], outs[1][1]) and torch.equal(outs[0][2], outs[1][2])


@pytest.mark.parametrize("which", ["cnn_net", "resnet_net"])
def test_spikes_as_bytes_in_the_engine(which, request, digits, monkeypatch):
    """In a simulation, the IF layers whose readers are all event-driven layers hand their
    spikes on as bytes (the event kernels were given uint8 inputs), and every layer's spikes
    and the outputs are the reference torch ops' (float64)."""
    fused, dtypes = kernels.load(), set()
    for f in ("event_conv2d", "event_conv2d_if"):
        run_kernel = getattr(fused, f)
        monkeypatch.setattr(fused, f, lambda *a, _f=run_kernel: dtypes.add(a[0].dtype) or _f(*a))
    x = digits[2][:48].reshape(-1, 1, 8, 8)
    kw = dict(timesteps=24, precision="float64", batch_size=20, chunk=9)
    ref = snn.simulate(request.getfixturevalue(which), x, impl="torch", **kw)
    got = snn.simulate(request.getfixturevalue(which), x, impl="fused", event="always", **kw)
    assert torch.uint8 in dtypes
    for k in ref.step_sums:
        np.testing.assert_array_equal(got.step_sums[k], ref.step_sums[k], err_msg=k)
    np.testing.assert_allclose(got.outputs, ref.outputs, rtol=0, atol=1e-12 * np.abs(ref.outputs).max())


@pytest.mark.parametrize("fuse", [False, True])
def test_conv1d_layers_run_event_driven(fuse, digits, monkeypatch):
    """1-D convolutions that read spikes (stride, dilation, padding) run on the event kernel as
    convolutions of height 1, alone or with their IF layer as one kernel, with the reference
    spikes in every layer and step and its outputs (float64)."""
    import torch.nn as nn

    from snn.backends.snntorch import engine

    fused, shapes = kernels.load(), []
    for f in ("event_conv2d", "event_conv2d_if"):
        run_kernel = getattr(fused, f)
        monkeypatch.setattr(fused, f, lambda *a, _f=run_kernel: shapes.append(tuple(a[1].shape)) or _f(*a))
    if fuse:
        monkeypatch.setattr(engine, "FUSE_IF_NEURONS", 1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv1d(8, 8, 3, stride=2, padding=2, dilation=2),
                          nn.ReLU(), nn.Conv1d(8, 6, 5, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 8, 10)).eval()
    x = digits[0][:120].reshape(-1, 4, 16)
    net = snn.convert(model, x[:100])
    kw = dict(timesteps=16, precision="float64", batch_size=10, chunk=6)
    ref = snn.simulate(net, x[100:], impl="torch", **kw)
    got = snn.simulate(net, x[100:], impl="fused", event="always", **kw)
    assert (1, 3, 8, 16) in shapes and (1, 5, 8, 16) in shapes  # both spike-reading convolutions, as 1 x k kernels
    assert all(int(v.sum()) > 0 for v in ref.spike_sums.values())
    for k in ref.step_sums:
        np.testing.assert_array_equal(got.step_sums[k], ref.step_sums[k], err_msg=k)
    np.testing.assert_allclose(got.outputs, ref.outputs, rtol=0, atol=1e-12 * np.abs(ref.outputs).max())


@pytest.mark.parametrize("which", ["mlp_net", "cnn_net", "resnet_net"])
@pytest.mark.parametrize("record", ["steps", "totals"])
def test_layer_and_if_fused_equal_reference(which, record, request, digits, monkeypatch):
    """With every event-driven layer that feeds a plain IF layer alone run as one kernel
    with it (``FUSE_IF_NEURONS`` lowered to 1 for these small nets), float64: the reference
    spikes in every layer and step, outputs within 1e-12, and the fused kernel ran."""
    from snn.backends.snntorch import engine

    fused, calls = kernels.load(), []
    run_kernel = fused.event_conv2d_if
    monkeypatch.setattr(fused, "event_conv2d_if", lambda *a: calls.append(a[0].shape) or run_kernel(*a))
    monkeypatch.setattr(engine, "FUSE_IF_NEURONS", 1)
    net = request.getfixturevalue(which)
    x = digits[2][:48]
    if which != "mlp_net":
        x = x.reshape(-1, 1, 8, 8)
    kw = dict(timesteps=24, precision="float64", batch_size=20, chunk=9, record=record)
    ref = snn.simulate(net, x, impl="torch", **kw)
    got = snn.simulate(net, x, impl="fused", event="always", **kw)
    assert calls
    for k in ref.spike_sums:
        np.testing.assert_array_equal(got.spike_sums[k], ref.spike_sums[k], err_msg=k)
        if record == "steps":
            np.testing.assert_array_equal(got.step_sums[k], ref.step_sums[k], err_msg=k)
    np.testing.assert_allclose(got.outputs, ref.outputs, rtol=0, atol=1e-12 * np.abs(ref.outputs).max())


def test_fused_zero_reset_and_padding_pool(digits):
    import torch.nn as nn

    from tests.conftest import _fit

    x, y = digits[0].reshape(-1, 1, 8, 8), digits[1]
    m = _fit(nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),
                           nn.Flatten(), nn.Linear(6 * 4 * 4, 10)), x, y, epochs=3)
    net = snn.convert(m, x, reset="zero")
    xt = digits[2][:30].reshape(-1, 1, 8, 8)
    ref = snn.simulate(net, xt, timesteps=16, impl="torch", precision="float64")
    got = snn.simulate(net, xt, timesteps=16, impl="fused", precision="float64")
    for k in ref.step_sums:
        np.testing.assert_array_equal(ref.step_sums[k], got.step_sums[k], err_msg=k)


def test_unknown_impl(mlp_net, digits):
    with pytest.raises(snn.SnnError, match="unknown impl 'fast'.*valid: auto, fused, torch"):
        snn.simulate(mlp_net, digits[2][:2], timesteps=2, impl="fast")


@pytest.mark.parametrize("impl", ["fused", "torch"])
def test_totals_equal_the_sum_of_per_step_counts(impl, cnn_net, digits):
    x = digits[2][:30].reshape(-1, 1, 8, 8)
    steps = snn.simulate(cnn_net, x, timesteps=20, chunk=6, impl=impl, record="steps")
    totals = snn.simulate(cnn_net, x, timesteps=20, chunk=6, impl=impl, record="totals")
    assert totals.step_sums is None and totals.spike_sums.keys() == steps.spike_sums.keys()
    for k, v in steps.step_sums.items():
        np.testing.assert_array_equal(totals.spike_sums[k], v.sum(axis=0), err_msg=k)


@pytest.mark.parametrize("impl", ["fused", "torch"])
@pytest.mark.parametrize("encoding", ["constant", "poisson"])
def test_tiling_does_not_change_results(impl, encoding, resnet_net, cnn_net, digits, monkeypatch):
    """Splitting the batch into sub-batches (tiles of few samples and many steps) gives the
    spikes of one whole-batch tile, Poisson inputs included; the outputs differ only by
    the summation order of the readout over chunks."""
    from snn.backends.snntorch import engine

    x = digits[2][:30].reshape(-1, 1, 8, 8)
    for net in (resnet_net, cnn_net):
        kw = dict(timesteps=20, encoding=encoding, seed=3, impl=impl, event="never")
        whole = snn.simulate(net, x, **kw)
        monkeypatch.setattr(engine, "TILE_ROWS", 28)  # 4 steps x 7 samples, balanced to 5 sub-batches of 6
        assert engine._tiles(net.graph, 30, 20, 4, 4, encoding == "constant", engine.TILE_ROWS) == (4, 6)
        tiled = snn.simulate(net, x, chunk=4, **kw)
        monkeypatch.undo()
        for k in whole.step_sums:
            np.testing.assert_array_equal(whole.step_sums[k], tiled.step_sums[k], err_msg=k)
        np.testing.assert_allclose(tiled.outputs, whole.outputs, rtol=0, atol=1e-6 * np.abs(whole.outputs).max())
        np.testing.assert_array_equal(tiled.predictions, whole.predictions)


def test_tile_sizes_keep_memory_flat_in_T(resnet_net):
    """Steps per chunk stop growing at 32 and a node's tile stays under the byte budget, so
    tile tensors (and peak memory) do not grow with T."""
    from snn.backends.snntorch import engine

    g = resnet_net.graph
    widest = max(int(np.prod(s)) for s in g.shapes.values())
    for batch in (1, 7, 256):
        tiles = [engine._tiles(g, batch, T, 4, None, True, budget=widest * 4 * 100) for T in (8, 32, 128, 4096)]
        assert tiles[2] == tiles[3] and tiles[0][0] == 8 and all(k <= 32 for k, _ in tiles)
        for k, sub in tiles:
            assert 1 <= sub <= batch and k * sub <= 100
    assert engine._tiles(g, 256, 128, 4, 5, True) == (5, 256)  # chunk given: 5 steps x 256 samples


def test_unknown_event_mode(mlp_net, digits):
    with pytest.raises(snn.SnnError, match="unknown event mode 'sparse'.*valid: auto, always, never"):
        snn.simulate(mlp_net, digits[2][:2], timesteps=2, event="sparse")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("stride,padding,dilation,kernel", [(1, 1, 1, (3, 3)), (2, 1, 1, (3, 3)), (1, 0, 1, (5, 5)),
                                                            (2, 2, 2, (3, 2)), (1, 0, 1, (1, 1)), (2, 3, 1, (6, 6)),
                                                            (3, 1, 1, (4, 7)), (3, 0, 1, (2, 2))])
def test_event_conv_equals_dense(dtype, stride, padding, dilation, kernel):
    """The event kernel computes F.conv2d for binary and for graded sparse inputs (an average
    pool of spikes), any stride, padding, dilation, kernel shape and output channels (the
    weight stored as (kh, kw, Cin, Co padded to 16); 13, 29 and 61 output channels are 1, 2
    and 4 vectors of float32, the row scatter's straight-line cases for 3 tap columns at
    stride 1, and 2, 4 and 8 of float64)."""
    from snn import ir
    from snn.backends.snntorch.event_cost import _event_weights

    fused = kernels.load()
    g = torch.Generator().manual_seed(0)
    for co in (13, 29, 61):
        w = torch.randn((co, 5) + kernel, generator=g, dtype=dtype)
        b = torch.randn(co, generator=g, dtype=dtype)
        node = ir.Conv2d(weight=w.numpy(), bias=b.numpy(), stride=(stride,) * 2, padding=(padding,) * 2,
                         dilation=(dilation,) * 2)
        wt = _event_weights(node, {"weight": w, "bias": b})
        assert wt.shape == (kernel[0], kernel[1], 5, -(-co // 16) * 16)
        spikes = (torch.rand((6, 5, 11, 11), generator=g) < 0.15).to(dtype)
        graded = spikes * torch.randint(1, 5, spikes.shape, generator=g).to(dtype) / 4
        for x in (spikes, graded, torch.zeros_like(spikes)):
            ref = torch.nn.functional.conv2d(x, w, b, stride, padding, dilation)
            for path in (0, 1, 2):  # chosen per sample, output-stationary gather, row scatter
                got = fused.event_conv2d(x, wt, b, co, ref.shape[2], ref.shape[3], [stride] * 2, [padding] * 2,
                                         [dilation] * 2, path)
                torch.testing.assert_close(got, ref, rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-12)


def test_sampled_nonzeros_counts_every_eighth_sample():
    x = torch.zeros(17, 3, 4)
    x[0, 0, :2] = 1.0   # sample 0: 2 nonzeros
    x[8, 2, 3] = -0.5   # sample 8: 1
    x[16] = 2.0         # sample 16: 12
    x[3] = 1.0          # not sampled
    assert kernels.load().sampled_nonzeros(x, 8) == pytest.approx((2 + 1 + 12) / 3)


def test_event_cost_model_choices():
    """Hand-computed from EVENT_COST: a wide sparse layer goes event-driven, a tiny one dense."""
    from snn.backends import snntorch

    c = snntorch.EVENT_COST["conv"]
    # ResNet 64->64 3x3 on 8x8, 5 % of 4,096 inputs spike: 204.8 events x 9 x 64 adds
    event = c["F"] + c["IO"] * (4096 + 4096) + 204.8 * 9 * (c["EV"] + c["ADD"] * 64)
    assert event < c["MAC"] * 64 * 9 * 64 * 64 + c["DIO"] * (4096 + 4096)
    assert snntorch.event_wins(4096, 4096, 204.8, 9, 64, 64 * 9 * 64 * 64, linear=False)
    assert not snntorch.event_wins(84, 10, 11.0, 1, 16, 840, linear=True)  # LeNet's last layer
    # ResNet's 16->32 1x1 stride-2 shortcut on 32x32, 10 % of 16,384 inputs: its MACs alone
    # (131,072) would call it dense; its memory traffic makes the event kernel win
    assert c["MAC"] * 131072 < c["F"] + c["IO"] * (16384 + 8192) + 1638.4 * 0.25 * (c["EV"] + c["ADD"] * 32)
    assert snntorch.event_wins(16384, 8192, 1638.4, 0.25, 32, 131072, linear=False)


def test_event_kernel_takes_wide_layers_and_refuses_unpackable_inputs():
    """A Linear layer of 40,000 inputs (1 x 1 positions) runs event-driven; an input plane
    of 2**31 positions or more (its positions are int32) is refused by the kernel and never
    offered to it by the backend."""
    from snn.backends.snntorch.event_cost import _packs

    fused = kernels.load()
    g = torch.Generator().manual_seed(1)
    w, b = torch.randn(24, 40000, generator=g), torch.randn(24, generator=g)
    wt = torch.zeros(1, 1, 40000, 32)
    wt[0, 0, :, :24] = w.t()
    x = (torch.rand(3, 40000, generator=g) < 0.01).float()
    for path in (1, 2):
        got = fused.event_conv2d(x.reshape(3, 40000, 1, 1), wt, b, 24, 1, 1, [1, 1], [0, 0], [1, 1], path)
        torch.testing.assert_close(got.reshape(3, 24), torch.nn.functional.linear(x, w, b), rtol=0, atol=1e-4)
    assert _packs((40000,)) and _packs((2**20, 64, 64)) and not _packs((1, 2**16, 2**15))
    with pytest.raises(RuntimeError, match="fewer than 2\\*\\*31 positions"):
        fused.event_conv2d(torch.empty(1, 1, 2**16, 2**15), torch.zeros(1, 1, 1, 16), None, 8, 2**16, 2**15,
                           [1, 1], [0, 0], [1, 1], 0)


@pytest.mark.parametrize("geometry", [((2, 2), (2, 2), (0, 0), 8), ((3, 3), (2, 2), (1, 1), 7)])
@pytest.mark.parametrize("per_step", [True, False])
def test_spike_maxpool_kernel_equals_reference(geometry, per_step):
    """The standalone spiking max-pool kernel (used when the pooled IF layer has other
    readers too): outputs, state and batch sums (per step or totals) equal the torch path's."""
    from snn import ir
    from snn.backends.snntorch.engine import _PoolState

    (kernel, stride, padding, size) = geometry
    node = ir.MaxPool2d(kernel=kernel, stride=stride, padding=padding)
    out_hw = (size + 2 * padding[0] - kernel[0]) // stride[0] + 1
    g = torch.Generator().manual_seed(2)
    pools = [_PoolState(node, (3, 4, size, size), (3, 4, out_hw, out_hw), torch.device("cpu"), torch.float32, {}, f)
             for f in (None, kernels.load())]
    counts = [torch.zeros((5 if per_step else 1, 4, out_hw, out_hw), dtype=torch.float64) for _ in pools]
    for chunk in range(2):
        s = (torch.rand((5, 3, 4, size, size), generator=g) < 0.3).float()
        ref, got = (p.step(s[:, 1:], slice(1, 3), c) for p, c in zip(pools, counts))
        torch.testing.assert_close(got, ref, rtol=0, atol=0)
    torch.testing.assert_close(pools[1].cum, pools[0].cum, rtol=0, atol=0)
    torch.testing.assert_close(pools[1].pooled, pools[0].pooled, rtol=0, atol=0)
    torch.testing.assert_close(counts[1], counts[0], rtol=0, atol=0)
    assert counts[0].sum() > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings: Linux only")
def test_freed_tile_buffers_stay_in_the_heap():
    """After the snntorch backend's ``keep_freed_tiles`` (run by every CPU simulation), a
    48 MiB buffer is carved from the heap, whose freed memory the next tile reuses, not
    mapped on its own (glibc's default for buffers over 32 MiB, unmapped on free and
    page-faulted afresh next time): glibc's ``mallinfo2`` counts no mapped bytes while it
    lives. ``SNN_MALLOC=0`` leaves malloc as it is."""
    code = ("import ctypes, numpy as np\n"
            "from snn.backends.snntorch import engine\n"
            "class Info(ctypes.Structure):\n"
            "    _fields_ = [(n, ctypes.c_size_t) for n in ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd',\n"
            "                'usmblks', 'fsmblks', 'uordblks', 'fordblks', 'keepcost')]\n"
            "libc = ctypes.CDLL('libc.so.6')\n"
            "libc.mallinfo2.restype = Info\n"
            "engine.keep_freed_tiles()\n"
            "before = libc.mallinfo2().hblkhd\n"
            "t = np.ones(12 * 2**20, dtype=np.float32)\n"
            "print(libc.mallinfo2().hblkhd - before)\n")
    mapped = {}
    for setting in ("1", "0"):
        env = {**os.environ, "SNN_MALLOC": setting}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        if "mallinfo2" in out.stderr:
            pytest.skip("no mallinfo2 (glibc < 2.33 or not glibc)")
        assert out.returncode == 0, out.stderr
        mapped[setting] = int(out.stdout.split()[-1])
    assert mapped["1"] == 0 and mapped["0"] >= 48 * 2**20, mapped
