"""The IR evaluated with torch: one table (:data:`OPS`) from node type to torch op, used by
calibration (:mod:`snn.conversion`), the GPU/CPU energy measurement
(:mod:`snn.energy.measure`) and the snntorch backend for its stateless nodes.

Tensors carry a leading batch axis: ``(N, *sample shape)``. A backend with a time axis
folds it into the batch axis before calling these (``(T, B, ...) -> (T*B, ...)``).

>>> import numpy as np, torch
>>> from snn import ir
>>> g = ir.Graph({"input": ir.Input((2,)), "fc": ir.Linear(np.eye(2)), "act": ir.ReLU()},
...              [("input", "fc"), ("fc", "act")], "input", "act")
>>> evaluate_ann(g, torch.tensor([[1.0, -1.0]]))["output"]
tensor([[1., 0.]])
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from snn import ir

Op = Callable[[ir.Node, dict[str, torch.Tensor], Sequence[torch.Tensor]], torch.Tensor]
OPS = ir.Table("the torch evaluator")
"""``op(node, params, xs) -> y``: one stateless node on a batch; ``params`` holds the
node's arrays as tensors (see :class:`Params`). ``IF`` here is its ANN meaning, ReLU."""


class Params:
    """A node's numpy arrays as torch tensors on one device and dtype, made once."""

    def __init__(self, graph: ir.Graph, device: torch.device | str, dtype: torch.dtype):
        self.t: dict[str, dict[str, torch.Tensor]] = {}
        for name, node in graph.nodes.items():
            d = {}
            for f in ("weight", "bias", "scale", "shift", "gains"):
                v = getattr(node, f, None)
                if isinstance(v, np.ndarray):
                    d[f] = torch.as_tensor(v, dtype=dtype, device=device)
            self.t[name] = d


def _chan(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """Shape a per-channel vector to broadcast over (N, C, ...)."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _rank(node: ir.Node) -> int:
    return len(ir.spatial(node)["kernel"])


@OPS.register(ir.Linear)
def _linear(node: ir.Linear, p: dict[str, torch.Tensor], xs: Sequence[torch.Tensor]) -> torch.Tensor:
    return F.linear(xs[0], p["weight"], p.get("bias"))


@OPS.register(ir.Conv2d, ir.Conv1d)
def _conv(node: ir.Conv2d, p: dict[str, torch.Tensor], xs: Sequence[torch.Tensor]) -> torch.Tensor:
    conv = (F.conv1d, F.conv2d)[_rank(node) - 1]
    return conv(xs[0], p["weight"], p.get("bias"), node.stride, node.padding, node.dilation, node.groups)


@OPS.register(ir.Affine)
def _affine(node: ir.Affine, p: dict[str, torch.Tensor], xs: Sequence[torch.Tensor]) -> torch.Tensor:
    return xs[0] * _chan(p["scale"], xs[0].ndim) + _chan(p["shift"], xs[0].ndim)


@OPS.register(ir.ReLU, ir.IF)
def _relu(node: ir.Node, p: dict[str, torch.Tensor], xs: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.relu(xs[0])


@OPS.register(ir.Clip)
def _clip(node: ir.Clip, p: dict[str, torch.Tensor], xs: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.clamp(xs[0], 0.0, node.ceiling)


@OPS.register(ir.Upsample)
def _upsample(node: ir.Upsample, p: dict[str, torch.Tensor], xs: Sequence[torch.Tensor]) -> torch.Tensor:
    y = xs[0]
    for a, k in enumerate(node.scale):
        y = y.repeat_interleave(k, dim=2 + a)
    return y


@OPS.register(ir.Pad)
def _pad(node: ir.Pad, p: dict[str, torch.Tensor], xs: Sequence[torch.Tensor]) -> torch.Tensor:
    q = node.padding  # F.pad takes the last axis first
    return F.pad(xs[0], [v for a in reversed(range(len(q) // 2)) for v in (q[2 * a], q[2 * a + 1])])


@OPS.register(ir.AvgPool2d, ir.AvgPool1d)
def _avgpool(node: ir.Node, p: dict[str, torch.Tensor], xs: Sequence[torch.Tensor]) -> torch.Tensor:
    pool = (F.avg_pool1d, F.avg_pool2d)[_rank(node) - 1]
    return pool(xs[0], node.kernel, node.stride, node.padding)


@OPS.register(ir.MaxPool2d, ir.MaxPool1d)
def _maxpool(node: ir.Node, p: dict[str, torch.Tensor], xs: Sequence[torch.Tensor]) -> torch.Tensor:
    pool = (F.max_pool1d, F.max_pool2d)[_rank(node) - 1]
    return pool(xs[0], node.kernel, node.stride, node.padding, node.dilation)


@OPS.register(ir.Flatten)
def _flatten(node: ir.Flatten, p: dict[str, torch.Tensor], xs: Sequence[torch.Tensor]) -> torch.Tensor:
    return xs[0].reshape(xs[0].shape[0], -1)


@OPS.register(ir.Reshape)
def _reshape(node: ir.Reshape, p: dict[str, torch.Tensor], xs: Sequence[torch.Tensor]) -> torch.Tensor:
    return xs[0].reshape((xs[0].shape[0],) + node.shape)


@OPS.register(ir.Add)
def _add(node: ir.Add, p: dict[str, torch.Tensor], xs: Sequence[torch.Tensor]) -> torch.Tensor:
    g = p["gains"]
    out = xs[0] * _chan(g[0], xs[0].ndim)
    for k in range(1, len(xs)):
        out = out + xs[k] * _chan(g[k], xs[k].ndim)
    return out


@OPS.register(ir.Concat)
def _concat(node: ir.Concat, p: dict[str, torch.Tensor], xs: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat(list(xs), dim=1)


@OPS.register(ir.Readout)
def _readout(node: ir.Readout, p: dict[str, torch.Tensor], xs: Sequence[torch.Tensor]) -> torch.Tensor:
    return xs[0]


def forward(node: ir.Node, p: dict[str, torch.Tensor], xs: Sequence[torch.Tensor], name: str = "?") -> torch.Tensor:
    """Apply one stateless node (see :data:`OPS`)."""
    return OPS.rule(node, name)(node, p, xs)


@torch.no_grad()
def evaluate_ann(graph: ir.Graph, x: torch.Tensor, keep: Sequence[str] = (),
                 params: Params | None = None) -> dict[str, torch.Tensor]:
    """Evaluate an ANN graph on a batch in torch; returns ``{"output": y, name: value for keep}``."""
    ir.check_supported(graph, OPS.kinds() + (ir.Input.kind,), OPS.interpreter)
    params = params or Params(graph, x.device, x.dtype)
    vals: dict[str, torch.Tensor] = {}
    out: dict[str, torch.Tensor] = {}
    for name, node in graph.nodes.items():
        vals[name] = x if isinstance(node, ir.Input) else \
            forward(node, params.t[name], [vals[i] for i in graph.inputs_of(name)], name)
        if name in keep:
            out[name] = vals[name]
    out["output"] = vals[graph.output]
    return out
