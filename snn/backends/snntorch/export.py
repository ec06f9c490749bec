"""Export of a converted network as a plain snntorch ``nn.Module`` that advances one step
per ``forward`` call (:func:`to_snntorch`).

IF layers become ``snntorch.Leaky(beta=1.0, threshold=theta, reset_mechanism=...)``, whose
update association ``u[t] = (u[t-1] + I[t]) - theta * s[t-1]`` (reset to zero:
``u[t] = (1 - s[t-1]) * u[t-1] + I[t]``) the simulation engine
(:mod:`snn.backends.snntorch.engine`) follows too, so both give bit-identical membranes.
A max-pool of spikes pools the cumulative spike counts and emits their increase (see
:mod:`snn.ir`); other nodes are their torch ops (Linear and Conv2d as the real torch layers).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from snn import ir
from snn import ir_torch as torch_ops
from snn.errors import SnnError


class _SpikeMaxPool(nn.Module):
    """One-step cumulative-count max-pooling of spikes (stateful), 1-D or 2-D."""

    def __init__(self, node: ir.Node):
        super().__init__()
        self.node = node
        self.cum: torch.Tensor | None = None
        self.pooled: torch.Tensor | None = None

    def reset(self) -> None:
        self.cum = self.pooled = None

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        self.cum = s if self.cum is None else self.cum + s
        pooled = torch_ops.forward(self.node, {}, [self.cum])
        out = pooled if self.pooled is None else pooled - self.pooled
        self.pooled = pooled
        return out


LAYERS = ir.Table("the snntorch exporter's torch layers", {
    ir.Linear: lambda node: nn.Linear(node.weight.shape[1], node.weight.shape[0], bias=node.bias is not None),
    ir.Conv2d: lambda node: nn.Conv2d(node.weight.shape[1] * node.groups, node.weight.shape[0],
                                      node.weight.shape[2:], node.stride, node.padding, node.dilation,
                                      node.groups, bias=node.bias is not None),
    ir.Conv1d: lambda node: nn.Conv1d(node.weight.shape[1] * node.groups, node.weight.shape[0],
                                      node.weight.shape[2:], node.stride, node.padding, node.dilation,
                                      node.groups, bias=node.bias is not None),
})
"""Node types exported as the real torch layer (so tools that hook ``nn.Linear``/``nn.Conv*d``,
such as NeuroBench, see them); every other stateless node runs its :mod:`snn.ir_torch` op."""


class _Op(nn.Module):
    """A stateless IR node: its torch layer (:data:`LAYERS`), or its torch op with the
    node's arrays as buffers."""

    def __init__(self, node: ir.Node, dtype: torch.dtype):
        super().__init__()
        self.node = node
        self.layer: nn.Module | None = LAYERS[type(node)](node) if type(node) in LAYERS else None
        if self.layer is not None:
            self.layer = self.layer.to(dtype)
            with torch.no_grad():
                self.layer.weight.copy_(torch.as_tensor(node.weight))
                if node.bias is not None:
                    self.layer.bias.copy_(torch.as_tensor(node.bias))
            self.layer.requires_grad_(False)
        for f in ("scale", "shift", "gains"):
            v = getattr(node, f, None)
            if isinstance(v, np.ndarray):
                self.register_buffer(f, torch.as_tensor(v, dtype=dtype))

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.layer is not None:
            return self.layer(xs[0])
        p = {f: getattr(self, f) for f in ("scale", "shift", "gains") if hasattr(self, f)}
        return torch_ops.forward(self.node, p, xs)


class SnnTorchNetwork(nn.Module):
    """A converted network as a plain snntorch module: one timestep per ``forward``.

    ``forward(x)`` takes the input at this step, shape (B, *input shape), and returns
    ``(y, mem)``: ``y`` the output layer's value at this step (its input current) and
    ``mem`` the readout membrane (the sum of ``y`` so far; after a readout warm-up of ``d``
    steps, the sum since step ``d + 1``), like snntorch neurons' ``(spk, mem)``. Call ``reset()`` before a new sequence. IF layers are
    ``snntorch.Leaky(beta=1.0, threshold=theta, reset_mechanism=...)`` whose membranes
    start at ``v_init * theta``.
    """

    def __init__(self, graph: ir.Graph, dtype: torch.dtype = torch.float32):
        super().__init__()
        import snntorch

        self.graph = graph
        self.mods = nn.ModuleDict()
        self._keys = {}
        spiking = set(graph.spiking_nodes())
        for i, (name, node) in enumerate(graph.nodes.items()):
            key = f"n{i}"
            self._keys[name] = key
            if isinstance(node, ir.IF):
                if not node.plain:
                    raise SnnError(ir.unsupported_message(
                        name, node, "the snntorch exporter", ("if (one 0/1 spike per step)",),
                        f"snntorch's Leaky emits one 0/1 spike per step (burst={node.burst}, signed={node.signed}); "
                        "convert with burst=1, signed=False to export, or simulate with snn.simulate"))
                self.mods[key] = snntorch.Leaky(beta=1.0, threshold=node.threshold,
                                                reset_mechanism=node.reset, init_hidden=False)
            elif node.spike_route == "pool" and name in spiking:
                self.mods[key] = _SpikeMaxPool(node)
            elif not isinstance(node, (ir.Input, ir.Readout)):
                self.mods[key] = _Op(node, dtype)
        self.mem: dict[str, torch.Tensor] = {}
        self.readout: torch.Tensor | None = None
        self.steps = 0

    def reset(self) -> None:
        self.mem = {}
        self.readout = None
        self.steps = 0
        for m in self.mods.values():
            if isinstance(m, _SpikeMaxPool):
                m.reset()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.graph
        vals: dict[str, torch.Tensor] = {}
        out = None
        for name, node in g.nodes.items():
            ins = [vals[i] for i in g.inputs_of(name)]
            if isinstance(node, ir.Input):
                vals[name] = x
            elif isinstance(node, ir.Readout):
                out = ins[0].reshape(len(ins[0]), -1)
                self.steps += 1
                if self.readout is None or self.steps == node.delay + 1:  # the warm-up ends: start again
                    self.readout = out.clone()
                else:
                    self.readout = self.readout + out
                vals[name] = self.readout
            elif isinstance(node, ir.IF):
                mem = self.mem.get(name)
                if mem is None:
                    mem = torch.full_like(ins[0], node.v_init * node.threshold)
                spk, self.mem[name] = self.mods[self._keys[name]](ins[0], mem)
                vals[name] = spk.to(ins[0].dtype)  # snntorch's Heaviside returns float32
            else:
                vals[name] = self.mods[self._keys[name]](*ins)
        if out is None:
            raise SnnError("graph has no Readout node")
        return out, self.readout


def to_snntorch(graph: ir.Graph, dtype: torch.dtype = torch.float32) -> SnnTorchNetwork:
    """Export an SNN graph as a :class:`SnnTorchNetwork`."""
    return SnnTorchNetwork(graph, dtype).eval()
