"""snntorch backend: fast multi-step simulation in torch (CPU or CUDA), and export of a
network as a plain snntorch ``nn.Module`` that advances one step per ``forward`` call.

Simulation scheme (results follow the equations in :mod:`snn.ir` exactly):

* the batch is simulated tile by tile: a tile is a chunk of steps of a sub-batch (sizes
  from :func:`_tiles`); within a tile, layer by layer, a layer's synaptic input for all
  the tile's steps is one batched op over ``steps * samples`` rows, then the IF update runs
  over the tile's steps with the membranes of its few samples in cache;
* values that do not change over time (the input under constant encoding, and every
  stateless node that depends only on it, i.e. the first layer) are computed once;
* on the CPU with the fused kernels (:mod:`snn.backends.kernels`), a synaptic layer whose
  input is sparse enough runs event-driven (work in proportion to the nonzero inputs), and
  a residual ``Add`` is summed inside the IF kernel that consumes it;
* only tile-sized tensors exist at any time, so peak memory does not grow with T
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
from snn import ir_torch as torch_ops
from snn.backends import BatchRecord
from snn.errors import SnnError

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
    """Membrane ``u`` and previous spikes of one IF layer, for one batch (B, ...)."""

    def __init__(self, node: ir.IF, shape: tuple[int, ...], dev: torch.device, dtype: torch.dtype,
                 fused: Any = None):
        self.node = node
        self.u = torch.full(shape, node.v_init * node.threshold, device=dev, dtype=dtype)
        self.prev = torch.zeros(shape, device=dev, dtype=dtype)  # spikes of the previous step
        self.fused = fused

    def scan(self, current: torch.Tensor | _Sum, k: int, static: bool, rows: slice,
             steps: torch.Tensor | None = None) -> torch.Tensor:
        """Run ``k`` steps of the samples ``rows`` of the batch; ``current`` is (k, b, ...), or
        (b, ...) if ``static``, or a pending two-input :class:`_Sum` (summed inside the fused
        kernel). Returns (k, b, ...) spikes; adds the per-step spikes summed over the samples
        to ``steps`` (k, *shape) if given, or their sum over the k steps to a (1, *shape) ``steps``."""
        th, subtract = self.node.threshold, self.node.reset == "subtract"
        u, prev = self.u[rows], self.prev[rows]  # contiguous views: the batch axis is the outermost
        if isinstance(current, _Sum):  # made only when the fused kernels are in use
            return self.fused.if_scan(current.xs[0].contiguous(), current.xs[1].contiguous(), current.gains, u,
                                      prev, th, subtract, False, k, steps)
        if self.fused is not None:
            return self.fused.if_scan(current.contiguous(), None, None, u, prev, th, subtract, static, k, steps)
        out = torch.empty((k,) + tuple(u.shape), device=u.device, dtype=u.dtype)
        for t in range(k):
            if not subtract:
                u.mul_(1.0 - prev)
            u.add_(current if static else current[t])
            if subtract:
                u.sub_(prev, alpha=th)
            torch.gt(u, th, out=out[t])
            prev = out[t]
        self.prev[rows] = prev
        if steps is not None:
            per_step = out.sum(dim=1, dtype=torch.float64)
            steps += per_step.sum(dim=0, keepdim=True) if len(steps) == 1 else per_step
        return out


class _Sum:
    """An ``Add`` node's value left unevaluated for the IF layer that is its only consumer:
    ``gains[0] * xs[0] + gains[1] * xs[1]`` (per channel), so the fused IF kernel sums it on
    the fly instead of writing and re-reading it (same float operations as the torch op)."""

    def __init__(self, xs: list[torch.Tensor], gains: torch.Tensor):
        self.xs, self.gains = xs, gains


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


TILE_ROWS = 2048
"""Target rows (steps x samples) of one tile's batched ops; see :func:`_tiles`."""


def _tiles(graph: ir.Graph, batch: int, timesteps: int, itemsize: int, chunk: int | None, static_input: bool,
           rows: int = TILE_ROWS, budget: int = 16 * 2**20) -> tuple[int, int]:
    """(steps per chunk, samples per sub-batch): the simulation runs tile by tile, a tile
    being one chunk of steps of one sub-batch, and every layer's batched op covers
    ``steps * samples`` rows: about ``rows``, and one node's tile at most ``budget`` bytes
    (small tensors are recycled by the allocator instead of being mapped and page-faulted
    afresh; measured). Long chunks of few samples keep the IF state (membranes) of a
    sub-batch in cache across the chunk's steps. Independent of T beyond 32 steps, so peak
    memory is flat in T. A non-constant encoding's input chunk, made for the whole batch,
    is kept under ``budget`` too."""
    per_row = max(int(np.prod(s)) for s in graph.shapes.values()) * itemsize
    rows = max(1, min(rows, budget // per_row))
    k = int(chunk) if chunk else max(1, min(32, timesteps, rows))
    if not static_input and not chunk:
        k = max(1, min(k, budget // (batch * int(np.prod(graph.shapes[graph.input])) * itemsize)))
    sub = max(1, min(batch, rows // k))
    n_sub = -(-batch // sub)
    return k, -(-batch // n_sub)


OPTIONS = ("chunk", "impl", "event")
IMPLS = ("auto", "fused", "torch")
EVENT_MODES = ("auto", "always", "never")
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
        event: str = "auto", **options: Any) -> BatchRecord:
    """Simulate one batch ``x`` (B, *input shape); see :mod:`snn.simulate` for the record.

    ``impl``: ``"fused"`` uses the compiled CPU kernels of :mod:`snn.backends.kernels`,
    ``"torch"`` the reference torch ops (same spikes), ``"auto"`` the kernels on CPU when
    they compile here and torch ops otherwise (and on CUDA). ``chunk``: steps per chunk.
    ``event``: with the fused kernels, a Linear/Conv2d layer whose input changes over time
    runs event-driven ("always"), densely ("never"), or as the measured cost model
    :func:`event_wins` expects to be faster for each tile's input density ("auto"). The
    fused kernels also sum a two-input ``Add`` inside the IF layer that consumes it, and
    run an IF layer and the spiking max-pool that alone reads it as one kernel.
    """
    if options:
        raise SnnError(f"unknown option(s) for backend 'snntorch': {', '.join(options)}; "
                       f"valid: {', '.join(OPTIONS)}")
    if event not in EVENT_MODES:
        raise SnnError(f"unknown event mode {event!r} for backend 'snntorch'; valid: {', '.join(EVENT_MODES)}")
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
    static_input = enc.is_static(encoding)
    k_max, sub = _tiles(graph, B, T, torch.finfo(dtype).bits // 8, chunk, static_input, TILE_ROWS)
    xt = torch.as_tensor(np.ascontiguousarray(x), device=dev, dtype=dtype)
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
    event_nodes, pending_sums, if_pools = set(), set(), {}
    if fused is not None:
        event_nodes = {n for n, node in graph.nodes.items()
                       if (isinstance(node, ir.Linear) or (isinstance(node, ir.Conv2d) and node.groups == 1))
                       and _packs(graph.shapes[inputs_of[n][0]])}
        pending_sums = {n for n, node in graph.nodes.items() if isinstance(node, ir.Add) and len(inputs_of[n]) == 2
                        and [type(graph.nodes[c]) for c in graph.consumers_of(n)] == [ir.IF]}
        if_pools = {n: graph.consumers_of(n)[0] for n, node in graph.nodes.items()
                    if isinstance(node, ir.IF) and len(graph.consumers_of(n)) == 1
                    and graph.consumers_of(n)[0] in pool_state and inputs_of[n][0] not in pending_sums}
    fused_pool: dict[str, torch.Tensor] = {}  # pooled spikes computed with their IF layer
    static_full: dict[str, torch.Tensor] = {graph.input: xt} if static_input else {}
    with torch.no_grad():
        for c0 in range(0, T, k_max):
            k = min(k_max, T - c0)
            x_chunk = None if static_input else torch.as_tensor(
                np.stack([enc.encode_step(x, c0 + t, encoding, seed, start) for t in range(k)]), device=dev,
                dtype=dtype)
            for s0 in range(0, B, sub):
                sl = slice(s0, min(B, s0 + sub))
                b = sl.stop - s0
                vals: dict[str, tuple[torch.Tensor, bool]] = {}  # name -> (value, is_static)
                left = dict(n_consumers)  # a tile's value is freed once its last consumer ran
                for name, node in graph.nodes.items():
                    ins = [vals[i] for i in inputs_of[name]]
                    for i in inputs_of[name]:
                        left[i] -= 1
                        if left[i] == 0:
                            del vals[i]
                    if isinstance(node, ir.Input):
                        vals[name] = (xt[sl], True) if static_input else (x_chunk[:, sl], False)
                    elif name in if_pools:
                        cur, st = ins[0]
                        p = if_pools[name]
                        fused_pool[p] = pool_state[p].after_if(if_state[name], cur, k, st, sl, rec_buffer(name, c0, k),
                                                               rec_buffer(p, c0, k))
                        vals[name] = (fused_pool[p], False)  # read by the pool only, which takes fused_pool[p]
                    elif isinstance(node, ir.IF):
                        cur, st = ins[0]
                        vals[name] = (if_state[name].scan(cur, k, st, sl, rec_buffer(name, c0, k)), False)
                    elif isinstance(node, ir.Readout):
                        cur, st = ins[0]
                        cur = cur.reshape((b, n_out)) if st else cur.reshape((k, b, n_out))
                        cum = readout_acc[sl] + (cur.expand((k, b, n_out)) if st else cur).cumsum(0)
                        readout_acc[sl] = cum[-1]
                        steps_done = torch.arange(c0 + 1, c0 + k + 1, device=dev, dtype=dtype).reshape(k, 1, 1)
                        outputs[c0:c0 + k, sl] = cum / steps_done
                        vals[name] = (cum, False)
                    elif name in fused_pool:
                        vals[name] = (fused_pool.pop(name), False)
                    elif name in pool_state:
                        vals[name] = (pool_state[name].step(ins[0][0], sl, rec_buffer(name, c0, k)), False)
                    elif name in pending_sums and not any(st for _, st in ins):
                        vals[name] = (_Sum([v for v, _ in ins], params.t[name]["gains"]), False)
                    elif name in event_nodes and event != "never" and not ins[0][1]:
                        v = ins[0][0].reshape((k * b,) + tuple(ins[0][0].shape[2:]))
                        y = _event_forward(fused, node, params.t[name], v, graph.shapes[name], event)
                        if y is None:
                            y = torch_ops.forward(node, params.t[name], [v])
                        vals[name] = (y.reshape((k, b) + tuple(y.shape[1:])), False)
                    elif all(st for _, st in ins):  # constant over time: computed once, for the whole batch
                        if name not in static_full:
                            static_full[name] = torch_ops.forward(node, params.t[name],
                                                                  [static_full[i] for i in inputs_of[name]])
                        vals[name] = (static_full[name][sl], True)
                    else:
                        flat = []
                        for v, st in ins:
                            if st:
                                v = v.unsqueeze(0).expand((k,) + tuple(v.shape))
                            flat.append(v.reshape((k * b,) + tuple(v.shape[2:])))
                        y = torch_ops.forward(node, params.t[name], flat)
                        vals[name] = (y.reshape((k, b) + tuple(y.shape[1:])), False)
                    if name in sums and name not in counted:  # the input's Poisson spikes
                        per_step = vals[name][0].sum(dim=1, dtype=torch.float64)
                        sums[name] += per_step.sum(dim=0)
                        if steps is not None:
                            steps[name][c0:c0 + k] += per_step
                vals.clear()
    for n in counted & set(sums):  # what the IF/pool nodes added to their buffers
        sums[n] = steps[n].sum(dim=0) if steps is not None else totals[n][0]

    def _np(d: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return {n: np.rint(v.cpu().numpy()).astype(np.int64) for n, v in d.items()}

    return BatchRecord(outputs=outputs.cpu().numpy(), spike_sums=_np(sums),
                       step_sums=_np(steps) if steps is not None else None)


class _PoolState:
    """Cumulative input counts and pooled maxima of one spiking max-pool, for one batch (B, ...)."""

    def __init__(self, node: ir.MaxPool2d, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 dev: torch.device, dtype: torch.dtype, params: dict[str, torch.Tensor], fused: Any = None):
        self.node, self.params, self.fused = node, params, fused
        self.cum = torch.zeros(in_shape, device=dev, dtype=dtype)
        self.pooled = torch.zeros(out_shape, device=dev, dtype=dtype)

    def step(self, s: torch.Tensor, rows: slice, steps: torch.Tensor | None = None) -> torch.Tensor:
        """Spikes ``s`` (k, b, C, H, W) of the samples ``rows`` -> pooled spikes (k, b, C, Ho, Wo);
        see :mod:`snn.ir`. Counts go to ``steps`` as in :meth:`_IFState.scan`."""
        n = self.node
        cum0, pooled0 = self.cum[rows], self.pooled[rows]
        if self.fused is not None:
            return self.fused.spike_maxpool(s.contiguous(), cum0, pooled0, *self._geometry(), steps)
        k, b = s.shape[:2]
        cum = torch.empty_like(s)
        acc = cum0
        for t in range(k):
            acc = cum[t].copy_(acc).add_(s[t])
        pooled = torch_ops.forward(n, self.params, [cum.reshape((k * b,) + tuple(s.shape[2:]))])
        pooled = pooled.reshape((k, b) + tuple(pooled.shape[1:]))
        out = torch.empty_like(pooled)
        out[0] = pooled[0] - pooled0
        out[1:] = pooled[1:] - pooled[:-1]
        cum0.copy_(cum[-1])
        pooled0.copy_(pooled[-1])
        if steps is not None:
            per_step = out.sum(dim=1, dtype=torch.float64)
            steps += per_step.sum(dim=0, keepdim=True) if len(steps) == 1 else per_step
        return out

    def after_if(self, ifs: _IFState, current: torch.Tensor, k: int, static: bool, rows: slice,
                 if_steps: torch.Tensor | None, steps: torch.Tensor | None) -> torch.Tensor:
        """The IF layer ``ifs``, whose spikes only this pool reads, and this pool in one
        fused kernel, channel plane by plane, without materialising the IF's spikes; the IF's
        counts go to ``if_steps``, the pool's to ``steps``. Returns the pooled spikes."""
        return self.fused.if_maxpool(current.contiguous(), ifs.u[rows], ifs.prev[rows], ifs.node.threshold,
                                     ifs.node.reset == "subtract", static, k, if_steps, self.cum[rows],
                                     self.pooled[rows], *self._geometry(), steps)

    def _geometry(self) -> list[list[int]]:
        n = self.node
        return [list(n.kernel), list(n.stride), list(n.padding), list(n.dilation)]


STATEFUL = ir.Table("backend 'snntorch'", {ir.IF: _IFState, ir.MaxPool2d: _PoolState})
"""The nodes this backend steps itself, with their state class (a max-pool only when it
pools spikes; on the constant input it is the stateless torch op)."""
SUPPORTED: tuple[str, ...] = tuple(dict.fromkeys(
    (ir.Input.kind, ir.Readout.kind) + STATEFUL.kinds()
    + tuple(t.kind for t in torch_ops.OPS if t not in ir.ACTIVATIONS)))
"""Node kinds this backend simulates: its stateful nodes and the stateless torch ops."""


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
