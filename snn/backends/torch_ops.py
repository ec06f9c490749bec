"""Torch implementations of the stateless IR nodes, shared by the ANN evaluator used for
calibration and by the snntorch backend (one table: :func:`forward`).

Tensors carry a leading batch axis: ``(N, *sample shape)``. A backend with a time axis
folds it into the batch axis before calling these (``(T, B, ...) -> (T*B, ...)``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from snn import ir
from snn.errors import SnnError


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


def forward(node: ir.Node, p: dict[str, torch.Tensor], xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Apply one stateless node. ``IF`` is not stateless (backends scan it); here it is ReLU."""
    if isinstance(node, ir.Linear):
        return F.linear(xs[0], p["weight"], p.get("bias"))
    if isinstance(node, ir.Conv2d):
        return F.conv2d(xs[0], p["weight"], p.get("bias"), node.stride, node.padding, node.dilation, node.groups)
    if isinstance(node, ir.Affine):
        return xs[0] * _chan(p["scale"], xs[0].ndim) + _chan(p["shift"], xs[0].ndim)
    if isinstance(node, (ir.ReLU, ir.IF)):
        return torch.relu(xs[0])
    if isinstance(node, ir.AvgPool2d):
        return F.avg_pool2d(xs[0], node.kernel, node.stride, node.padding)
    if isinstance(node, ir.MaxPool2d):
        return F.max_pool2d(xs[0], node.kernel, node.stride, node.padding, node.dilation)
    if isinstance(node, ir.Flatten):
        return xs[0].reshape(xs[0].shape[0], -1)
    if isinstance(node, ir.Reshape):
        return xs[0].reshape((xs[0].shape[0],) + node.shape)
    if isinstance(node, ir.Add):
        g = p["gains"]
        out = xs[0] * _chan(g[0], xs[0].ndim)
        for k in range(1, len(xs)):
            out = out + xs[k] * _chan(g[k], xs[k].ndim)
        return out
    if isinstance(node, ir.Concat):
        return torch.cat(list(xs), dim=1)
    if isinstance(node, ir.Readout):
        return xs[0]
    raise SnnError(f"no torch implementation for node type {node.kind}")


@torch.no_grad()
def evaluate_ann(graph: ir.Graph, x: torch.Tensor, keep: Sequence[str] = (),
                 params: Params | None = None) -> dict[str, torch.Tensor]:
    """Evaluate an ANN graph on a batch in torch; returns ``{"output": y, name: value for keep}``."""
    params = params or Params(graph, x.device, x.dtype)
    vals: dict[str, torch.Tensor] = {}
    out: dict[str, torch.Tensor] = {}
    for name, node in graph.nodes.items():
        vals[name] = x if isinstance(node, ir.Input) else \
            forward(node, params.t[name], [vals[i] for i in graph.inputs_of(name)])
        if name in keep:
            out[name] = vals[name]
    out["output"] = vals[graph.output]
    return out
