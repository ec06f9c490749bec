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
    if node.levels:
        return torch.floor(torch.clamp(xs[0] / node.ceiling, 0.0, 1.0) * node.levels + 0.5) / node.levels * node.ceiling
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


# --------------------------------------------------------------------------- spiking, time-major
def if_scan(current: torch.Tensor, u: torch.Tensor, prev: torch.Tensor, threshold: float, subtract: bool,
            static: bool, k: int, out: torch.Tensor | None = None, block: int = 1 << 14, burst: int = 1,
            count: torch.Tensor | None = None) -> torch.Tensor:
    """``k`` steps of IF neurons (the equations of :mod:`snn.ir`) in place on the membrane
    ``u`` and last spikes ``prev`` (both (B, ...)); ``current`` is (k, B, ...), or (B, ...)
    when ``static``. Uses snntorch's association ``u[t] = (u[t-1] + I[t]) - theta * s[t-1]``
    (reset to zero: ``u[t] = (1 - s[t-1]) u[t-1] + I[t]``), as every torch path of this
    package does, so they give bit-identical spikes. Returns the (k, B, ...) spikes (into
    ``out`` if given); ``prev`` holds the last step's spikes on return. The samples are
    taken ``block`` neurons at a time, so that a block's membranes stay in cache over the
    ``k`` steps. ``burst`` > 1: up to that many spikes per step; ``count`` (B, ...), for
    signed neurons: their net spike count before the last step (updated in place), which
    bounds their negative spikes (subtractive reset only)."""
    out = torch.empty((k,) + tuple(u.shape), device=u.device, dtype=u.dtype) if out is None else out
    per = max(1, int(np.prod(u.shape[1:])))
    rows = max(1, block // per)
    plain = burst == 1 and count is None
    for r0 in range(0, max(1, len(u)), rows):
        r = slice(r0, r0 + rows)
        ub, last, ob = u[r], prev[r], out[:, r]
        cb = None if count is None else count[r]
        for t in range(k):
            if not subtract:
                ub.mul_(1.0 - last)
            ub.add_(current[r] if static else current[t, r])
            if subtract:
                ub.sub_(last, alpha=threshold)
            if plain:
                torch.gt(ub, threshold, out=ob[t])
            else:
                _extended_spikes(ub, last, cb, threshold, burst, ob[t])
            last = ob[t]
        prev[r] = last
    return out


def _extended_spikes(u: torch.Tensor, last: torch.Tensor, count: torch.Tensor | None, threshold: float, burst: int,
                     out: torch.Tensor) -> None:
    """Burst/signed spikes of one step (:mod:`snn.ir`) from the membrane ``u`` into ``out``;
    ``count`` (signed neurons) takes the last step's spikes ``last`` first."""
    torch.gt(u, threshold, out=out)
    for j in range(2, burst + 1):
        out.add_(u > j * threshold)
    if count is not None:
        count.add_(last)
        neg = (u < 0).to(u.dtype)
        for j in range(1, burst):
            neg.add_(u < -j * threshold)
        out.sub_(torch.minimum(neg, count))


def spike_pool(node: ir.Node, p: dict[str, torch.Tensor], s: torch.Tensor, cum0: torch.Tensor,
               pooled0: torch.Tensor) -> torch.Tensor:
    """A max-pool of spikes (the cumulative-count rule of :mod:`snn.ir`) over ``k`` steps:
    ``s`` (k, B, C, ...) spikes, ``cum0``/``pooled0`` the input counts and pooled counts
    before them (updated in place). Returns the (k, B, C, ...) pooled spikes."""
    k, b = s.shape[:2]
    cum = torch.cumsum(s, dim=0) + cum0
    pooled = forward(node, p, [cum.reshape((k * b,) + tuple(s.shape[2:]))])
    pooled = pooled.reshape((k, b) + tuple(pooled.shape[1:]))
    out = torch.diff(pooled, dim=0, prepend=pooled0.unsqueeze(0))
    cum0.copy_(cum[-1])
    pooled0.copy_(pooled[-1])
    return out


Adjust = Callable[[str, torch.Tensor], torch.Tensor]


@torch.no_grad()
def simulate_steps(graph: ir.Graph, x: torch.Tensor, timesteps: int, adjust: Adjust | None = None,
                   keep: Sequence[str] = (), params: Params | None = None) -> dict[str, torch.Tensor]:
    """Simulate an SNN graph on a constant input ``x`` (N, *input shape) for ``timesteps``
    steps, layer by layer with the whole time axis in memory (the equations of
    :mod:`snn.ir`; the backends' results, without their tiling). For calibration
    (:mod:`snn.conversion`): ``adjust(name, current)`` is called with each IF layer's
    input current, (T, N, ...), and returns the current the layer gets instead, so a
    calibration can correct a layer from the spikes of the already-corrected layers
    before it, in one pass. Returns ``{"output": (T, N, K) readout after each step, name:
    value}`` for the names in ``keep`` (a (T, N, ...) tensor; spikes for IF layers)."""
    params = params or Params(graph, x.device, x.dtype)
    T, n = int(timesteps), len(x)
    spiking = set(graph.spiking_nodes())
    consumers = {k: len(graph.consumers_of(k)) for k in graph.nodes}
    vals: dict[str, tuple[torch.Tensor, bool]] = {}
    out: dict[str, torch.Tensor] = {}

    def timed(v: torch.Tensor, st: bool) -> torch.Tensor:
        return v.unsqueeze(0).expand((T,) + tuple(v.shape)) if st else v

    for name, node in graph.nodes.items():
        ins = graph.inputs_of(name)
        xs = [vals[i] for i in ins]
        if isinstance(node, ir.Input):
            val = (x, True)
        elif isinstance(node, ir.IF):
            cur, st = xs[0]
            if adjust is not None:
                cur, st = adjust(name, timed(cur, st)), False
            u = torch.full((n,) + graph.shapes[name], node.v_init * node.threshold, dtype=x.dtype, device=x.device)
            val = (if_scan(cur, u, torch.zeros_like(u), node.threshold, node.reset == "subtract", st, T,
                           burst=node.burst, count=torch.zeros_like(u) if node.signed else None), False)
        elif isinstance(node, ir.Readout):
            cur, st = xs[0]
            sums = torch.cumsum(timed(cur, st).reshape(T, n, -1), dim=0)
            val = (torch.as_tensor(ir.readout_means(sums.cpu().numpy(), node.delay), device=x.device), False)
        elif node.spike_route == "pool" and name in spiking:
            s = xs[0][0]
            cum0 = torch.zeros_like(s[0])
            pooled0 = torch.zeros((n,) + graph.shapes[name], dtype=x.dtype, device=x.device)
            val = (spike_pool(node, params.t[name], s, cum0, pooled0), False)
        elif all(st for _, st in xs):
            val = (forward(node, params.t[name], [v for v, _ in xs], name), True)
        else:
            flat = [timed(v, st).reshape((T * n,) + tuple(v.shape[1 if st else 2:])) for v, st in xs]
            y = forward(node, params.t[name], flat, name)
            val = (y.reshape((T, n) + tuple(y.shape[1:])), False)
        vals[name] = val
        if name in keep:
            out[name] = timed(*val)
        for i in ins:
            consumers[i] -= 1
            if consumers[i] == 0 and i != graph.output:
                del vals[i]
    out["output"] = timed(*vals[graph.output])
    return out
