"""The event-driven synaptic layers of the snntorch backend and the cost model that
chooses them.

On the CPU with the fused kernels (:mod:`snn.backends.snntorch.kernels`), a Linear or
Conv2d layer whose input changes over time (spikes, or an average pool of spikes) can
run event-driven: per sample, the nonzero inputs are listed and each adds its weights to
the outputs it reaches, so the work is ``nonzeros * kh * kw * Co`` instead of the dense
op's ``inputs * kh * kw * Co`` MACs. Which of the two is faster depends on the layer and
the input's density; :func:`event_wins` decides with the per-sample costs
:data:`EVENT_COST` measured on this project's reference machine.

An average pool of spikes followed by a convolution (or by a flatten and a Linear layer)
runs as one event-driven layer on the binary pre-pool spikes
(:func:`_pooled_event_forward`): each spike is an event of the pooled map at its window,
adding the layer's weights divided by the pool's area, so the work follows the spikes and
the graded pooled map is never made.

What the choice may change (the bound; README "Guarantees"): both paths add the same
products ``w_ij * x_j`` over a layer's fan-in ``K`` (``kh * kw * Cin``; with a folded
pool, its taps too), in another order, so each current lies within

    gamma_K * sum_j |w_ij| |x_j|,    gamma_K = K u / (1 - K u)

of the exact sum (Higham 2002, eq. 3.4; ``u = 2**-24`` in float32, ``2**-53`` in
float64), and the two paths within twice that of each other. A recorded number (spike
count, accuracy, energy) can change only where a membrane potential lands within that
distance of its threshold and a spike flips: in float64 none on the test networks, in
float32 at most 0.1 % of a layer's spikes (``tests/test_fused.py``) and none on the
digits MLP of ``tests/test_determinism.py``. ``event="auto"`` decides from the input's
density and the fixed table :data:`EVENT_COST`, never from timings or the machine's
load, so one config and seed always make the same choices.

>>> event_wins(4096, 4096, 204.8, 9 * 64, 64 * 9 * 64 * 64, linear=False)  # 5 % of a ResNet block's input
True
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from snn import ir

EVENT_COST = {"linear": {"F": 80.0, "IO": 2.5, "ADD": 0.125, "MAC": 0.036},
              "conv": {"F": 0.0, "IO": 0.55, "ADD": 0.11, "MAC": 0.038}}
"""Per-sample costs (ns) with which a Linear/Conv2d layer chooses between the event-driven
kernel and the dense torch op, fitted by ``experiments/bench/event_cost.py`` on 2 CPU
cores: ``F + IO * (inputs + outputs) + ADD * nonzeros * kh * kw * Co_padded`` against
``MAC`` times the dense MACs."""


AVG_POOL_MACS = 16.0
"""The dense average pool's time per input element, in dense MACs: what the dense path of a
layer after an average pool pays on top of the layer (torch's CPU ``avg_pool2d`` on spikes;
15-40 MACs per element in profiles of the average-pooling MNIST CNN of ``speed.py``)."""


def event_wins(inputs: int, outputs: int, nonzeros: float, kk_cop: int, macs: int, linear: bool) -> bool:
    """Whether the event kernel is expected to be faster than the dense op for one sample
    (``nonzeros`` input events, ``kk_cop`` = kh * kw * padded output channels); see :data:`EVENT_COST`."""
    c = EVENT_COST["linear" if linear else "conv"]
    return c["F"] + c["IO"] * (inputs + outputs) + c["ADD"] * nonzeros * kk_cop < c["MAC"] * macs


def _packs(in_shape: tuple[int, ...]) -> bool:
    """Whether the event kernel can take this input: an event (channel, y, x) packs into 31
    bits (a Linear layer's input is (features,) = features channels of 1 x 1)."""
    c, h, w = in_shape if len(in_shape) == 3 else (int(np.prod(in_shape)), 1, 1)
    return sum(int(v - 1).bit_length() for v in (c, h, w)) <= 31


def _event_weights(node: ir.Linear | ir.Conv2d, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """The weights in the event kernel's layout (:func:`_event_layout`), made once (cached in ``p``)."""
    if "event_wt" not in p:
        conv = isinstance(node, ir.Conv2d)
        p["event_wt"] = _event_layout(p["weight"] if conv else p["weight"][:, :, None, None],
                                      node.stride[1] if conv else 1, node.dilation[1] if conv else 1)
    return p["event_wt"]


def _event_layout(w: torch.Tensor, stride: int, dilation: int) -> torch.Tensor:
    """A (Co, Cin, kh, kw) weight with column stride and dilation as the event kernel's
    (kh, Cin, kwl, Co rounded up to 8): with dilation 1, for each phase ``r < stride`` the
    ``nj = ceil(kw / stride)`` columns ``r + j * stride`` in reverse order, zeros past ``kw``
    (``kwl = stride * nj``; stride 1: the row reversed), so an event's contributions along one
    kernel row are one contiguous block; with dilation > 1 the row reversed."""
    co, ci, kh, kw = w.shape
    cop = -(-co // 8) * 8
    if dilation != 1:
        wt = torch.zeros((kh, ci, kw, cop), dtype=w.dtype, device=w.device)
        wt[..., :co] = w.flip(3).permute(2, 1, 3, 0)
        return wt
    nj = -(-kw // stride)
    wt = torch.zeros((kh, ci, stride, nj, cop), dtype=w.dtype, device=w.device)
    for r in range(min(stride, kw)):
        taps = w[..., r::stride]  # (Co, Cin, kh, n <= nj): columns r, r + stride, ...
        wt[:, :, r, nj - taps.shape[3]:, :co] = taps.flip(3).permute(2, 1, 3, 0)
    return wt.reshape(kh, ci, stride * nj, cop)


def _event_forward(fused: Any, node: ir.Linear | ir.Conv2d, p: dict[str, torch.Tensor], x: torch.Tensor,
                   out_shape: tuple[int, ...], mode: str) -> torch.Tensor | None:
    """``node`` applied to ``x`` (M, *input shape) by the event-driven kernel (work in
    proportion to the nonzero inputs), or None if ``mode`` is "auto" and :func:`event_wins`
    (on the nonzeros of every 8th sample) expects the dense op to be faster."""
    wt = _event_weights(node, p)
    linear = isinstance(node, ir.Linear)
    x = x.reshape(len(x), -1, 1, 1).contiguous() if linear else x.contiguous()
    if mode == "auto":
        inputs, outputs = int(np.prod(x.shape[1:])), int(np.prod(out_shape))
        kk_cop = int(np.prod(node.weight.shape[2:])) * wt.shape[3]
        if not event_wins(inputs, outputs, fused.sampled_nonzeros(x, 8), kk_cop,
                          int(np.prod(node.weight.shape[1:])) * outputs, linear):
            return None
    if linear:
        return fused.event_conv2d(x, wt, p.get("bias"), out_shape[0], 1, 1, [1, 1], [0, 0], [1, 1]).reshape(
            len(x), out_shape[0])
    return fused.event_conv2d(x, wt, p.get("bias"), out_shape[0], out_shape[1], out_shape[2],
                              list(node.stride), list(node.padding), list(node.dilation))


def foldable(pool: ir.Node, node: ir.Node, in_shape: tuple[int, ...]) -> bool:
    """Whether ``node`` (a Conv1d/Conv2d with groups 1, or a Linear layer after a flatten)
    can take the average pool ``pool``'s input ``in_shape`` through the event kernel with
    the pool folded in: the pool must not overlap (kernel <= stride on every axis)."""
    g = ir.spatial(pool)
    if any(k > s for k, s in zip(g["kernel"], g["stride"])):
        return False
    if not isinstance(node, ir.Linear) and (not isinstance(node, (ir.Conv1d, ir.Conv2d)) or node.groups != 1):
        return False
    return _packs(in_shape if len(in_shape) == 3 else (in_shape[0], 1, in_shape[1]))


def _pooled_event_weights(pool: ir.Node, node: ir.Node, p: dict[str, torch.Tensor],
                          in_shape: tuple[int, ...]) -> tuple[torch.Tensor, list[list[int]], list[int]]:
    """``node``'s weights divided by the pool's area, in the event kernel's layout, with its
    2-D geometry ``[stride, padding, dilation]`` on the pooled map and the pool's
    ``{Kh, Kw, Sh, Sw, Ph, Pw, Hp, Wp}`` (a 1-D layer or pool is a 2-D one of height 1; a
    Linear layer after a flatten a convolution whose kernel covers the pooled map), made once
    (cached in ``p``)."""
    if "pool_event" not in p:
        g, two = ir.spatial(pool), len(in_shape) == 3

        def as_2d(v: tuple[int, ...], height: int) -> list[int]:  # a 1-D geometry with a height axis
            return list(v) if two else [height, *v]

        K, S, P = as_2d(g["kernel"], 1), as_2d(g["stride"], 1), as_2d(g["padding"], 0)
        pooled = [(n + 2 * q - k) // s + 1 for n, q, k, s in zip(as_2d(in_shape[1:], 1), P, K, S)]
        w = p["weight"] / float(K[0] * K[1])
        if isinstance(node, ir.Linear):
            w, geometry = w.reshape((len(w), in_shape[0], *pooled)), [[1, 1], [0, 0], [1, 1]]
        else:
            w = w if two else w[:, :, None]
            geometry = [as_2d(node.stride, 1), as_2d(node.padding, 0), as_2d(node.dilation, 1)]
        p["pool_event"] = (_event_layout(w, geometry[0][1], geometry[2][1]), geometry, K + S + P + pooled)
    return p["pool_event"]


def _pooled_event_forward(fused: Any, pool: ir.Node, node: ir.Linear | ir.Conv1d | ir.Conv2d,
                          p: dict[str, torch.Tensor], x: torch.Tensor, out_shape: tuple[int, ...],
                          mode: str) -> torch.Tensor | None:
    """``node(avgpool(x))`` (a Linear layer: of the flattened pooled map) of the pool's input
    ``x`` (M, *pool input shape) by the event kernel ``event_pool_conv2d``: each nonzero
    input is an event of the pooled map at its window, adding ``node``'s weights / pool area,
    so the work follows the nonzeros of ``x`` (the pre-pool spikes) and the pooled map is
    never made. None if ``mode`` is "auto" and :func:`event_wins` expects the dense pool and
    layer to be faster. Returns (M, *out_shape)."""
    in_shape = tuple(x.shape[1:])
    wt, (stride, padding, dilation), pool_geometry = _pooled_event_weights(pool, node, p, in_shape)
    linear = isinstance(node, ir.Linear)
    x = x.reshape((len(x), in_shape[0], -1, in_shape[-1])).contiguous()
    out2 = (out_shape[0], 1, 1) if linear else (out_shape[0],) + ((1,) + out_shape[1:] if len(out_shape) == 2
                                                                  else out_shape[1:])
    if mode == "auto":
        inputs, outputs = int(np.prod(in_shape)), int(np.prod(out_shape))
        per_event = (1 if linear else int(np.prod(node.weight.shape[2:]))) * wt.shape[3]
        macs = int(np.prod(node.weight.shape[1:])) * outputs + AVG_POOL_MACS * inputs  # the layer, and the pool
        if not event_wins(inputs, outputs, fused.sampled_nonzeros(x, 8), per_event, macs, False):
            return None
    y = fused.event_pool_conv2d(x, wt, p.get("bias"), out2[0], out2[1], out2[2], stride, padding, dilation,
                                pool_geometry)
    return y.reshape((len(x),) + tuple(out_shape))
