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
the graded pooled map is never made. Where the IF layer before the pool and the pool run as
one kernel, the layer takes the windows' spike counts instead
(:func:`_pool_counts_event_forward`): one event per nonzero window and channel, of value
the count (on the benchmark's average-pooling nets, 1.3-2x fewer events than spikes).

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

>>> event_wins(4096, 4096, 204.8, 9, 64, 64 * 9 * 64 * 64, linear=False)  # 5 % of a ResNet block's input
True
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from snn import ir

EVENT_COST = {"linear": {"F": 14.0, "IO": 1.1, "EV": 5.2, "ADD": 0.017, "MAC": 0.0084, "DIO": 0.28},
              "conv": {"F": 89.0, "IO": 0.24, "EV": 1.0, "ADD": 0.0047, "MAC": 0.0092, "DIO": 0.34}}
"""Per-sample costs (ns) with which a Linear/Conv1d/Conv2d layer chooses between the event-driven
kernel and the dense torch op, fitted by ``experiments/bench/event_cost.py`` on 2 CPU
cores (17 layer shapes, 2-40 % density; ``results/reference/event_cost.json``): ``F + IO *
(inputs + outputs) + EV * nonzeros * taps + ADD * nonzeros * taps * Co_padded`` (``taps`` =
kh * kw / (sh * sw), the outputs an event reaches; 1 for a Linear layer) against ``MAC``
times the dense MACs plus ``DIO`` per input and output (the dense op's own memory traffic,
which dominates 1x1 convolutions: a 16->32 1x1 stride-2 one takes ~10 us per sample, ~5x
its MACs' share; fitted on the mean of each case's timings, as the dense op's time is
bimodal for some shapes)."""


AVG_POOL_MACS = 30.0
"""The dense average pool's time per input element, in dense MACs (``EVENT_COST``'s
``MAC``): what the dense path of a layer after an average pool of spikes that is not made
with its IF layer pays on top of the layer (torch's CPU ``avg_pool2d`` on spikes; 0.25-0.7
ns per element in profiles of the average-pooling MNIST CNN of ``speed.py``)."""


def event_wins(inputs: int, outputs: int, nonzeros: float, taps: float, cop: int, macs: float,
               linear: bool) -> bool:
    """Whether the event kernel is expected to be faster than the dense op for one sample
    (``nonzeros`` input events, each reaching ``taps`` output positions of ``cop`` padded
    output channels); see :data:`EVENT_COST`."""
    c = EVENT_COST["linear" if linear else "conv"]
    event = c["F"] + c["IO"] * (inputs + outputs) + nonzeros * taps * (c["EV"] + c["ADD"] * cop)
    return event < c["MAC"] * macs + c["DIO"] * (inputs + outputs)


def _taps(node: ir.Linear | ir.Conv1d | ir.Conv2d) -> float:
    """Output positions one input event reaches, on average: kh * kw / (sh * sw) for a
    convolution, 1 for a Linear layer (the ``taps`` of :func:`event_wins`)."""
    if isinstance(node, ir.Linear):
        return 1.0
    return float(np.prod(node.weight.shape[2:])) / float(np.prod(node.stride))


def _packs(in_shape: tuple[int, ...]) -> bool:
    """Whether the event kernel can take this input: a position of one input plane fits in
    an int32 (a Linear layer's input is (features,) = features channels of 1 x 1)."""
    return int(np.prod(in_shape[1:])) < 2**31 if len(in_shape) == 3 else True


def _event_weights(node: ir.Linear | ir.Conv1d | ir.Conv2d, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """The weights in the event kernel's layout (:func:`_event_layout`), made once (cached in
    ``p``); a Linear layer's as a 1 x 1 convolution's, a Conv1d's as a convolution of height 1."""
    if "event_wt" not in p:
        w = p["weight"]
        p["event_wt"] = _event_layout(w if isinstance(node, ir.Conv2d) else w[:, :, None] if isinstance(node, ir.Conv1d)
                                      else w[:, :, None, None])
    return p["event_wt"]


COP_ROUND = 16
"""Output channels are padded with zero weights to a multiple of this (64 bytes of float32):
the event kernel sums whole vectors of output channels."""


def _event_layout(w: torch.Tensor) -> torch.Tensor:
    """A (Co, Cin, kh, kw) weight as the event kernel's (kh, kw, Cin, Co rounded up to
    :data:`COP_ROUND`, zeros past Co): an event of channel ``c`` at tap ``(a, e)`` adds the
    contiguous row ``[a, e, c, :]`` to one output position's channels."""
    co, ci, kh, kw = w.shape
    wt = torch.zeros((kh, kw, ci, -(-co // COP_ROUND) * COP_ROUND), dtype=w.dtype, device=w.device)
    wt[..., :co] = w.permute(2, 3, 1, 0)
    return wt


IFArgs = tuple[torch.Tensor, torch.Tensor, float, bool, int, torch.Tensor | None, tuple | None, bool]
"""``(u, prev, theta, subtract, k, steps, pool, bytes)`` of the plain IF layer that alone
reads an event-driven layer, for the kernel that runs both (``event_conv2d_if``); ``pool``:
None, or ``(kernel, stride, padding, Hp, Wp)`` of the non-overlapping 2-D average pool that
alone reads that IF layer, whose windows' spike sums the kernel then returns instead of the
spikes (``event_conv2d_if_avgpool``); ``bytes``: the spikes as uint8 (0 or 1), for readers
that are all event-driven layers (a quarter of float32's memory traffic)."""


def _run_event(fused: Any, x: torch.Tensor, wt: torch.Tensor, bias: torch.Tensor | None,
               out2: tuple[int, int, int], geometry: list[list[int]], path: int, ifs: IFArgs | None,
               out_shape: tuple[int, ...]) -> torch.Tensor:
    """The event kernel on ``x`` (M, Cin, H, W) with ``wt`` in its layout, output (Co, Ho, Wo)
    ``out2`` and ``[stride, padding, dilation]`` ``geometry``: (M, *out_shape), or with
    ``ifs`` the spikes (k, b, *out_shape) of the IF layer after it (``event_conv2d_if``), or
    with its pool the windows' spike sums (k * b, Co, Hp, Wp) (``event_conv2d_if_avgpool``)."""
    if ifs is not None:
        u, prev, theta, subtract, k, steps, pool, as_bytes = ifs
        if pool is not None:
            counts = fused.event_conv2d_if_avgpool(x, wt, bias, *out2, *geometry, path, u, prev, theta, subtract, k,
                                                   steps, *pool)
            return counts.reshape((-1,) + tuple(counts.shape[2:]))
        return fused.event_conv2d_if(x, wt, bias, *out2, *geometry, path, u, prev, theta, subtract, k, steps,
                                     as_bytes)
    return fused.event_conv2d(x, wt, bias, *out2, *geometry, path).reshape((len(x),) + tuple(out_shape))


def _event_forward(fused: Any, node: ir.Linear | ir.Conv1d | ir.Conv2d, p: dict[str, torch.Tensor], x: torch.Tensor,
                   out_shape: tuple[int, ...], mode: str, path: int = 0, ifs: IFArgs | None = None
                   ) -> torch.Tensor | None:
    """``node`` applied to ``x`` (M, *input shape; float, or spikes as uint8) by the
    event-driven kernel (work in proportion to the nonzero inputs), or None if ``mode`` is
    "auto" and :func:`event_wins`
    (on the nonzeros of every 8th sample) expects the dense op to be faster. ``path``: the
    kernel's loop order, 0 chosen per sample (fewer visits), 1 output-stationary gather, 2
    row scatter (same sums in another order; the tests run each). ``ifs``: the
    :data:`IFArgs` of the plain IF layer that alone reads ``node``, for ``x`` of k steps of
    b samples (rows t * b + s): the layer and that IF layer run as one kernel
    (``event_conv2d_if``, parallel over the samples; the currents are never stored), which
    updates ``u`` and ``prev`` (b, *out_shape), adds the spikes' batch sums to ``steps``
    and returns the spikes (k, b, *out_shape), the same as the layer then ``if_scan``; or,
    with the IF layer's average pool, that pool's window sums (k * b, Co, Hp, Wp), the same
    as the layer then ``if_avgpool``."""
    wt = _event_weights(node, p)
    linear, flat = isinstance(node, ir.Linear), isinstance(node, ir.Conv1d)
    x = (x.reshape(len(x), -1, 1, 1) if linear else x.unsqueeze(2) if flat else x).contiguous()
    if mode == "auto":
        inputs, outputs = int(np.prod(x.shape[1:])), int(np.prod(out_shape))
        if not event_wins(inputs, outputs, fused.sampled_nonzeros(x, 8), _taps(node), wt.shape[3],
                          int(np.prod(node.weight.shape[1:])) * outputs, linear):
            return None
    geometry = ([[1, 1], [0, 0], [1, 1]] if linear else  # stride, padding, dilation of the 2-D kernel
                [[1, *node.stride], [0, *node.padding], [1, *node.dilation]] if flat else
                [list(node.stride), list(node.padding), list(node.dilation)])
    return _run_event(fused, x, wt, p.get("bias"), _out_2d(node, out_shape), geometry, path, ifs, out_shape)


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
        p["pool_event"] = (_event_layout(w), geometry, K + S + P + pooled)
    return p["pool_event"]


def _pooled_event_forward(fused: Any, pool: ir.Node, node: ir.Linear | ir.Conv1d | ir.Conv2d,
                          p: dict[str, torch.Tensor], x: torch.Tensor, out_shape: tuple[int, ...],
                          mode: str, path: int = 0) -> torch.Tensor | None:
    """``node(avgpool(x))`` (a Linear layer: of the flattened pooled map) of the pool's input
    ``x`` (M, *pool input shape) by the event kernel ``event_pool_conv2d``: each nonzero
    input is an event of the pooled map at its window, adding ``node``'s weights / pool area,
    so the work follows the nonzeros of ``x`` (the pre-pool spikes) and the pooled map is
    never made. None if ``mode`` is "auto" and :func:`event_wins` expects the dense pool and
    layer to be faster. ``path`` as in :func:`_event_forward`. Returns (M, *out_shape)."""
    in_shape = tuple(x.shape[1:])
    wt, (stride, padding, dilation), pool_geometry = _pooled_event_weights(pool, node, p, in_shape)
    x = x.reshape((len(x), in_shape[0], -1, in_shape[-1])).contiguous()
    out2 = _out_2d(node, out_shape)
    if mode == "auto":
        inputs, outputs = int(np.prod(in_shape)), int(np.prod(out_shape))
        macs = int(np.prod(node.weight.shape[1:])) * outputs + AVG_POOL_MACS * inputs  # the layer, and the pool
        if not event_wins(inputs, outputs, fused.sampled_nonzeros(x, 8), _taps(node), wt.shape[3], macs, False):
            return None
    y = fused.event_pool_conv2d(x, wt, p.get("bias"), out2[0], out2[1], out2[2], stride, padding, dilation,
                                pool_geometry, path)
    return y.reshape((len(x),) + tuple(out_shape))


def _out_2d(node: ir.Node, out_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """A layer's output shape as the event kernel's (Co, Ho, Wo): a Linear layer's is
    (features, 1, 1), a 1-D convolution's (Co, 1, L)."""
    if isinstance(node, ir.Linear):
        return out_shape[0], 1, 1
    return (out_shape[0], 1, out_shape[1]) if len(out_shape) == 2 else tuple(out_shape)


def _pool_counts_event_forward(fused: Any, pool: ir.Node, node: ir.Linear | ir.Conv1d | ir.Conv2d,
                               p: dict[str, torch.Tensor], counts: torch.Tensor, in_shape: tuple[int, ...],
                               out_shape: tuple[int, ...], mode: str, path: int = 0,
                               ifs: IFArgs | None = None) -> torch.Tensor | None:
    """``node(avgpool(s))`` from the spike counts of the pool's windows, ``counts``
    (M, C, Hp, Wp; a 1-D pool's (M, C, 1, Lp)), made with the spikes ``s`` (pool input shape
    ``in_shape``) by the fused IF + pool kernel ``if_avgpool``: the event kernel on the
    counts, with ``node``'s weights / pool area (:func:`_pooled_event_weights`), so the work
    follows the nonzero windows. The same sums as :func:`_pooled_event_forward` with the
    events of one window and channel added at once (``count * w / area``). None if ``mode``
    is "auto" and :func:`event_wins` expects the dense layer on ``counts / area`` to be faster.
    Returns (M, *out_shape); with ``ifs``, the spikes of the IF layer after ``node``, as in
    :func:`_event_forward`."""
    wt, (stride, padding, dilation), _ = _pooled_event_weights(pool, node, p, in_shape)
    out2 = _out_2d(node, out_shape)
    if mode == "auto":
        inputs, outputs = int(np.prod(counts.shape[1:])), int(np.prod(out_shape))
        if not event_wins(inputs, outputs, fused.sampled_nonzeros(counts, 8), _taps(node), wt.shape[3],
                          int(np.prod(node.weight.shape[1:])) * outputs, False):
            return None
    return _run_event(fused, counts, wt, p.get("bias"), out2, [stride, padding, dilation], path, ifs, out_shape)
