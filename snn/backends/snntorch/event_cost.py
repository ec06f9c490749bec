"""The event-driven synaptic layers of the snntorch backend and the cost model that
chooses them.

On the CPU with the fused kernels (:mod:`snn.backends.snntorch.kernels`), a Linear or
Conv2d layer whose input changes over time (spikes, or an average pool of spikes) can
run event-driven: per sample, the nonzero inputs are listed and each adds its weights to
the outputs it reaches, so the work is ``nonzeros * kh * kw * Co`` instead of the dense
op's ``inputs * kh * kw * Co`` MACs. Which of the two is faster depends on the layer and
the input's density; :func:`event_wins` decides with the per-sample costs
:data:`EVENT_COST` measured on this project's reference machine.

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
    """The weights as (kh, Cin, kw reversed, Co rounded up to 8) for the event kernel (an
    event's contributions along one kernel row are then one contiguous block), made once
    (cached in ``p``)."""
    if "event_wt" not in p:
        w = p["weight"] if isinstance(node, ir.Conv2d) else p["weight"][:, :, None, None]
        co, ci, kh, kw = w.shape
        wt = torch.zeros((kh, ci, kw, -(-co // 8) * 8), dtype=w.dtype, device=w.device)
        wt[..., :co] = w.flip(3).permute(2, 1, 3, 0)
        p["event_wt"] = wt
    return p["event_wt"]


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
        if not event_wins(inputs, outputs, fused.sampled_nonzeros(x, 8), wt.shape[0] * wt.shape[2] * wt.shape[3],
                          int(np.prod(node.weight.shape[1:])) * outputs, linear):
            return None
    if linear:
        return fused.event_conv2d(x, wt, p.get("bias"), out_shape[0], 1, 1, [1, 1], [0, 0], [1, 1]).reshape(
            len(x), out_shape[0])
    return fused.event_conv2d(x, wt, p.get("bias"), out_shape[0], out_shape[1], out_shape[2],
                              list(node.stride), list(node.padding), list(node.dilation))
