"""snntorch backend: fast multi-step simulation in torch (CPU or CUDA), and export of a
network as a plain snntorch ``nn.Module`` that advances one step per ``forward`` call.

Simulation scheme (results follow the equations in :mod:`snn.ir` exactly):

* time is processed in chunks of ``chunk`` steps; within a chunk, layer by layer, a
  layer's synaptic input for all steps of the chunk is one batched torch op over
  ``chunk * B`` samples, then the IF update runs as a loop over the chunk's steps;
* values that do not change over time (the input under constant encoding, and every
  stateless node that depends only on it, i.e. the first layer) are computed once;
* only chunk-sized tensors exist at any time, so peak memory does not grow with T
  (per-step spike counts, which are per neuron and summed over the batch, do).

The IF update uses snntorch's association, ``u[t] = (u[t-1] + I[t]) - theta * s[t-1]``
(reset to zero: ``u[t] = (1 - s[t-1]) * u[t-1] + I[t]``), so that the exported snntorch
model gives bit-identical membranes.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn

from snn import encode as enc
from snn import ir
from snn.backends import torch_ops
from snn.errors import SnnError
from snn.simulate import BatchRecord

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise SnnError(f"unknown device {device!r}; valid: cpu, cuda, cuda:N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SnnError("device 'cuda' requested but no CUDA GPU is available; use device='cpu'")
    if dev.type not in ("cpu", "cuda"):
        raise SnnError(f"unknown device {device!r}; valid: cpu, cuda, cuda:N")
    return dev


class _IFState:
    """Membrane ``u`` and previous spikes of one IF layer, for one batch."""

    def __init__(self, node: ir.IF, shape: tuple[int, ...], dev: torch.device, dtype: torch.dtype,
                 fused: Any = None):
        self.node = node
        self.u = torch.full(shape, node.v_init * node.threshold, device=dev, dtype=dtype)
        self.prev = torch.zeros(shape, device=dev, dtype=dtype)  # spikes of the previous step
        self.fused = fused

    def scan(self, current: torch.Tensor, k: int, static: bool, steps: torch.Tensor | None = None) -> torch.Tensor:
        """Run ``k`` steps; ``current`` is (k, B, ...) or, if ``static``, (B, ...). Returns (k, B, ...)
        spikes; adds the per-step spikes summed over the batch to ``steps`` (k, *shape) if given,
        or their sum over the k steps to a (1, *shape) ``steps``."""
        th, u, subtract = self.node.threshold, self.u, self.node.reset == "subtract"
        if self.fused is not None:
            return self.fused.if_scan(current.contiguous(), u, self.prev, th, subtract, static, k, steps)
        out = torch.empty((k,) + tuple(u.shape), device=u.device, dtype=u.dtype)
        for t in range(k):
            if not subtract:
                u.mul_(1.0 - self.prev)
            u.add_(current if static else current[t])
            if subtract:
                u.sub_(self.prev, alpha=th)
            torch.gt(u, th, out=out[t])
            self.prev = out[t]
        if steps is not None:
            per_step = out.sum(dim=1, dtype=torch.float64)
            steps += per_step.sum(dim=0, keepdim=True) if len(steps) == 1 else per_step
        return out


def _chunk_size(graph: ir.Graph, batch: int, itemsize: int, rows: int = 2048, budget: int = 16 * 2**20) -> int:
    """Steps per chunk: enough that a layer's batched op has about ``rows`` samples
    (``chunk * batch``), at most 64, and one node's (chunk, B, neurons) tensor at most
    ``budget`` bytes (small tensors are recycled by the allocator instead of being mapped
    and page-faulted afresh; measured). Independent of T, so peak memory is flat in T."""
    widest = max(int(np.prod(s)) for s in graph.shapes.values())
    by_memory = budget // max(1, batch * widest * itemsize)
    return int(max(1, min(64, -(-rows // batch), by_memory)))


IMPLS = ("auto", "fused", "torch")
_PARAMS: dict[tuple[int, str, torch.dtype], tuple[ir.Graph, torch_ops.Params]] = {}


def _params(graph: ir.Graph, dev: torch.device, dtype: torch.dtype) -> torch_ops.Params:
    """The graph's weights as tensors, made once per (graph, device, dtype) and reused by
    the following batches of a simulation (the last few graphs are kept)."""
    key = (id(graph), str(dev), dtype)
    hit = _PARAMS.get(key)
    if hit is None or hit[0] is not graph:
        if len(_PARAMS) >= 4:
            _PARAMS.pop(next(iter(_PARAMS)))
        hit = _PARAMS[key] = (graph, torch_ops.Params(graph, dev, dtype))
    return hit[1]


def run(graph: ir.Graph, x: np.ndarray, *, timesteps: int, encoding: str, seed: int, start: int,
        precision: str, device: str, record: str, chunk: int | None = None, impl: str = "auto",
        **options: Any) -> BatchRecord:
    """Simulate one batch ``x`` (B, *input shape); see :mod:`snn.simulate` for the record.

    ``impl``: ``"fused"`` uses the compiled CPU kernels of :mod:`snn.backends.kernels`,
    ``"torch"`` the reference torch ops (same spikes), ``"auto"`` the kernels on CPU when
    they compile here and torch ops otherwise (and on CUDA). ``chunk``: steps per chunk.
    """
    if options:
        raise SnnError(f"unknown option(s) for backend 'snntorch': {', '.join(options)}; valid: chunk, impl")
    if impl not in IMPLS:
        raise SnnError(f"unknown impl {impl!r} for backend 'snntorch'; valid: {', '.join(IMPLS)}")
    dtype, dev = DTYPES[precision], _device(device)
    fused = None
    if impl != "torch" and dev.type == "cpu":
        from snn.backends import kernels

        fused = kernels.load()
        if fused is None and impl == "fused":
            raise SnnError(f"impl='fused' requested but the CPU kernels could not be built ({kernels._failed})")
    elif impl == "fused":
        raise SnnError("impl='fused' runs on the CPU only; use impl='auto' or 'torch' on CUDA")
    params = _params(graph, dev, dtype)
    B, T = len(x), timesteps
    k_max = int(chunk) if chunk else _chunk_size(graph, B, torch.finfo(dtype).bits // 8)
    xt = torch.as_tensor(np.ascontiguousarray(x), device=dev, dtype=dtype)
    static_input = enc.is_static(encoding)
    spiking = set(graph.spiking_nodes())
    recorded = [] if record == "none" else graph.recorded_nodes() + ([] if static_input else [graph.input])
    sums = {n: torch.zeros(graph.shapes[n], dtype=torch.float64, device=dev) for n in recorded}
    steps = {n: torch.zeros((T,) + graph.shapes[n], dtype=torch.float64, device=dev) for n in recorded} \
        if record == "steps" else None
    n_out = int(np.prod(graph.shapes[graph.output]))
    outputs = torch.empty((T, B, n_out), dtype=dtype, device=dev)

    if_state = {n: _IFState(node, (B,) + graph.shapes[n], dev, dtype, fused)
                for n, node in graph.nodes.items() if isinstance(node, ir.IF)}
    pool_state = {n: _PoolState(node, (B,) + graph.shapes[graph.inputs_of(n)[0]], (B,) + graph.shapes[n], dev,
                                dtype, params.t[n], fused)
                  for n, node in graph.nodes.items() if isinstance(node, ir.MaxPool2d) and n in spiking}
    readout_acc = torch.zeros((B, n_out), dtype=dtype, device=dev)
    static_cache: dict[str, torch.Tensor] = {}
    counted = set(if_state) | set(pool_state)

    totals = {n: torch.zeros((1,) + graph.shapes[n], dtype=torch.float64, device=dev) for n in counted & set(sums)} \
        if steps is None else {}

    def rec_buffer(name: str, c0: int, k: int) -> torch.Tensor | None:
        """Where an IF/pool node adds its batch sums for steps c0..c0+k: its rows of the
        per-step record, or (totals only) one row that sums every step."""
        if name not in sums:
            return None
        return steps[name][c0:c0 + k] if steps is not None else totals[name]

    inputs_of = {n: graph.inputs_of(n) for n in graph.nodes}
    n_consumers = {n: len(graph.consumers_of(n)) for n in graph.nodes}
    with torch.no_grad():
        for c0 in range(0, T, k_max):
            k = min(k_max, T - c0)
            vals: dict[str, tuple[torch.Tensor, bool]] = {}  # name -> (value, is_static)
            left = dict(n_consumers)  # a chunk value is freed once its last consumer ran
            for name, node in graph.nodes.items():
                ins = [vals[i] for i in inputs_of[name]]
                for i in inputs_of[name]:
                    left[i] -= 1
                    if left[i] == 0:
                        del vals[i]
                if isinstance(node, ir.Input):
                    if static_input:
                        vals[name] = (xt, True)
                    else:
                        v = np.stack([enc.encode_step(x, c0 + t, encoding, seed, start) for t in range(k)])
                        vals[name] = (torch.as_tensor(v, device=dev, dtype=dtype), False)
                elif isinstance(node, ir.IF):
                    cur, st = ins[0]
                    vals[name] = (if_state[name].scan(cur, k, st, rec_buffer(name, c0, k)), False)
                elif isinstance(node, ir.Readout):
                    cur, st = ins[0]
                    cur = cur.reshape((B, n_out)) if st else cur.reshape((k, B, n_out))
                    cum = readout_acc + (cur.expand((k, B, n_out)) if st else cur).cumsum(0)
                    readout_acc = cum[-1].clone()
                    steps_done = torch.arange(c0 + 1, c0 + k + 1, device=dev, dtype=dtype).reshape(k, 1, 1)
                    outputs[c0:c0 + k] = cum / steps_done
                    vals[name] = (cum, False)
                elif name in pool_state:
                    vals[name] = (pool_state[name].step(ins[0][0], rec_buffer(name, c0, k)), False)
                elif all(st for _, st in ins):
                    if name not in static_cache:
                        static_cache[name] = torch_ops.forward(node, params.t[name], [v for v, _ in ins])
                    vals[name] = (static_cache[name], True)
                else:
                    flat = []
                    for v, st in ins:
                        if st:
                            v = v.unsqueeze(0).expand((k,) + tuple(v.shape))
                        flat.append(v.reshape((k * B,) + tuple(v.shape[2:])))
                    y = torch_ops.forward(node, params.t[name], flat)
                    vals[name] = (y.reshape((k, B) + tuple(y.shape[1:])), False)
                if name in sums and name not in counted:  # the input's Poisson spikes
                    per_step = vals[name][0].sum(dim=1, dtype=torch.float64)
                    sums[name] += per_step.sum(dim=0)
                    if steps is not None:
                        steps[name][c0:c0 + k] = per_step
            vals.clear()
    for n in counted & set(sums):  # what the IF/pool nodes added to their buffers
        sums[n] = steps[n].sum(dim=0) if steps is not None else totals[n][0]

    def _np(d: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return {n: np.rint(v.cpu().numpy()).astype(np.int64) for n, v in d.items()}

    return BatchRecord(outputs=outputs.cpu().numpy(), spike_sums=_np(sums),
                       step_sums=_np(steps) if steps is not None else None)


class _PoolState:
    """Cumulative input counts and pooled maxima of one spiking max-pool, for one batch."""

    def __init__(self, node: ir.MaxPool2d, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 dev: torch.device, dtype: torch.dtype, params: dict[str, torch.Tensor], fused: Any = None):
        self.node, self.params, self.fused = node, params, fused
        self.cum = torch.zeros(in_shape, device=dev, dtype=dtype)
        self.pooled = torch.zeros(out_shape, device=dev, dtype=dtype)

    def step(self, s: torch.Tensor, steps: torch.Tensor | None = None) -> torch.Tensor:
        """Spikes ``s`` (k, B, C, H, W) -> pooled spikes (k, B, C, Ho, Wo); see :mod:`snn.ir`."""
        n = self.node
        if self.fused is not None:
            return self.fused.spike_maxpool(s.contiguous(), self.cum, self.pooled, list(n.kernel), list(n.stride),
                                            list(n.padding), list(n.dilation), steps)
        k, B = s.shape[:2]
        cum = torch.empty_like(s)
        acc = self.cum
        for t in range(k):
            acc = cum[t].copy_(acc).add_(s[t])
        pooled = torch_ops.forward(n, self.params, [cum.reshape((k * B,) + tuple(s.shape[2:]))])
        pooled = pooled.reshape((k, B) + tuple(pooled.shape[1:]))
        out = torch.empty_like(pooled)
        out[0] = pooled[0] - self.pooled
        out[1:] = pooled[1:] - pooled[:-1]
        self.cum, self.pooled = cum[-1].clone(), pooled[-1].clone()
        if steps is not None:
            per_step = out.sum(dim=1, dtype=torch.float64)
            steps += per_step.sum(dim=0, keepdim=True) if len(steps) == 1 else per_step
        return out


# --------------------------------------------------------------------------- export
class _SpikeMaxPool(nn.Module):
    """One-step cumulative-count max-pooling of spikes (stateful)."""

    def __init__(self, node: ir.MaxPool2d):
        super().__init__()
        self.pool = nn.MaxPool2d(node.kernel, node.stride, node.padding, node.dilation)
        self.cum: torch.Tensor | None = None
        self.pooled: torch.Tensor | None = None

    def reset(self) -> None:
        self.cum = self.pooled = None

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        self.cum = s if self.cum is None else self.cum + s
        pooled = self.pool(self.cum)
        out = pooled if self.pooled is None else pooled - self.pooled
        self.pooled = pooled
        return out


class _Op(nn.Module):
    """A stateless IR node with its parameters as buffers (Linear/Conv2d become the real
    torch layers, so tools that hook ``nn.Linear``/``nn.Conv2d`` see them)."""

    def __init__(self, node: ir.Node, dtype: torch.dtype):
        super().__init__()
        self.node = node
        self.layer: nn.Module | None = None
        if isinstance(node, ir.Linear):
            self.layer = nn.Linear(node.weight.shape[1], node.weight.shape[0], bias=node.bias is not None)
        elif isinstance(node, ir.Conv2d):
            co, cig, kh, kw = node.weight.shape
            self.layer = nn.Conv2d(cig * node.groups, co, (kh, kw), node.stride, node.padding, node.dilation,
                                   node.groups, bias=node.bias is not None)
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
    ``mem`` the readout membrane (the sum of ``y`` so far), like snntorch neurons'
    ``(spk, mem)``. Call ``reset()`` before a new sequence. IF layers are
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
                self.mods[key] = snntorch.Leaky(beta=1.0, threshold=node.threshold,
                                                reset_mechanism=node.reset, init_hidden=False)
            elif isinstance(node, ir.MaxPool2d) and name in spiking:
                self.mods[key] = _SpikeMaxPool(node)
            elif not isinstance(node, (ir.Input, ir.Readout)):
                self.mods[key] = _Op(node, dtype)
        self.mem: dict[str, torch.Tensor] = {}
        self.readout: torch.Tensor | None = None

    def reset(self) -> None:
        self.mem = {}
        self.readout = None
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
                self.readout = out.clone() if self.readout is None else self.readout + out
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
