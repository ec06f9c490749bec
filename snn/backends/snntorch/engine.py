"""The simulation engine of the snntorch backend: fast multi-step simulation in torch (CPU
or CUDA) of one batch, :func:`run`.

Simulation scheme (results follow the equations in :mod:`snn.ir` exactly):

* the batch is simulated tile by tile: a tile is a chunk of steps of a sub-batch (sizes
  from :func:`_tiles`); within a tile, layer by layer, a layer's synaptic input for all
  the tile's steps is one batched op over ``steps * samples`` rows, then the IF update runs
  over the tile's steps with the membranes of its few samples in cache;
* values that do not change over time (the input under constant encoding, and every
  stateless node that depends only on it, i.e. the first layer) are computed once;
* on the CPU with the fused kernels (:mod:`snn.backends.snntorch.kernels`), a synaptic
  layer whose input is sparse enough runs event-driven (work in proportion to the nonzero
  inputs; the choice is :mod:`snn.backends.snntorch.event_cost`'s), an average pool of
  spikes read only by a convolution (or, through a flatten, a Linear layer) is folded into
  that layer, which then runs event-driven on the binary pre-pool spikes (same spikes; the
  pooled map is never made) or, where the pool's input is an IF layer read by nothing
  else, on the windows' spike counts, made by one kernel with that IF layer (the spikes are
  never stored; an event per nonzero window and channel), an event-driven layer of at
  least :data:`FUSE_IF_NEURONS` outputs and the plain IF layer that alone reads it run as
  one kernel (its currents never stored; where that IF layer's average pool is folded into
  the next layer, the kernel sums its spikes over the pool's windows and the spikes are
  never stored either), and a residual ``Add`` is summed inside the IF kernel that consumes it;
  an IF layer whose readers are all event-driven layers hands its spikes on as bytes (uint8
  0/1, a quarter of float32's memory traffic; as floats to a tile the cost model runs dense);
* only tile-sized tensors exist at any time, so peak memory does not grow with T
  (per-step spike counts, which are per neuron and summed over the batch, do).

The IF update uses snntorch's association, ``u[t] = (u[t-1] + I[t]) - theta * s[t-1]``
(reset to zero: ``u[t] = (1 - s[t-1]) * u[t-1] + I[t]``), so that the exported snntorch
model (:mod:`snn.backends.snntorch.export`) gives bit-identical membranes.

The stateful nodes, those the engine steps itself, are the table :data:`STATEFUL`; every
other node is its stateless torch op from :mod:`snn.ir_torch`.
"""
from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

import numpy as np
import torch

from snn import encode as enc
from snn import ir
from snn import ir_torch as torch_ops
from snn.backends import BatchRecord
from snn.backends.snntorch.event_cost import (IFArgs, _event_forward, _packs, _pool_counts_event_forward,
                                              _pooled_event_forward, foldable)
from snn.errors import SnnError
from snn.util import made_once

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
        self.count = torch.zeros(shape, device=dev, dtype=dtype) if node.signed else None  # net spikes so far
        self.fused = fused if node.plain else None  # burst/signed spikes: the torch ops

    def scan(self, current: torch.Tensor | _Sum, k: int, static: bool, rows: slice,
             steps: torch.Tensor | None = None, as_bytes: bool = False) -> torch.Tensor:
        """Run ``k`` steps of the samples ``rows`` of the batch; ``current`` is (k, b, ...), or
        (b, ...) if ``static``, or a pending two-input :class:`_Sum` (summed inside the fused
        kernel). Returns (k, b, ...) spikes (with the fused kernels and ``as_bytes``, as uint8);
        adds the per-step spikes summed over the samples to ``steps`` (k, *shape) if given, or
        their sum over the k steps to a (1, *shape) ``steps``."""
        th, subtract = self.node.threshold, self.node.reset == "subtract"
        u, prev = self.u[rows], self.prev[rows]  # contiguous views: the batch axis is the outermost
        if isinstance(current, _Sum):  # made only when the fused kernels are in use
            return self.fused.if_scan(current.xs[0].contiguous(), current.xs[1].contiguous(), current.gains, u,
                                      prev, th, subtract, False, k, steps, as_bytes)
        if self.fused is not None:
            return self.fused.if_scan(current.contiguous(), None, None, u, prev, th, subtract, static, k, steps,
                                      as_bytes)
        out = torch_ops.if_scan(current, u, prev, th, subtract, static, k, burst=self.node.burst,
                                count=None if self.count is None else self.count[rows])  # views, updated in place
        if steps is not None:  # events: a burst of n spikes is n, a negative spike one
            per_step = (out.abs() if self.node.signed else out).sum(dim=1, dtype=torch.float64)
            steps += per_step.sum(dim=0, keepdim=True) if len(steps) == 1 else per_step
        return out

    def avgpool(self, current: torch.Tensor, k: int, static: bool, rows: slice, pool: ir.AvgPool1d | ir.AvgPool2d,
                pooled_shape: tuple[int, ...], steps: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`scan` (fused kernels, plain spikes) and the non-overlapping average pool
        ``pool`` that alone reads this layer, in one kernel that never stores the spikes:
        returns the spike counts of the pool's windows (k * b, C, Hp, Wp) (a 1-D pool's
        (k * b, C, 1, Lp)); the pool's value is ``counts / area``. ``pooled_shape``: the
        pool's output shape (C, Hp, Wp) or (C, Lp)."""
        u, prev = self.u[rows], self.prev[rows]
        if len(pooled_shape) == 2:  # (b, C, L) as (b, C, 1, L)
            u, prev = u.unsqueeze(-2), prev.unsqueeze(-2)
        out = self.fused.if_avgpool(current.contiguous(), u, prev, self.node.threshold, self.node.reset == "subtract",
                                    static, k, steps, *_pool_2d(pool, pooled_shape))
        return out.reshape((-1,) + tuple(out.shape[2:]))


def _pool_2d(pool: ir.AvgPool1d | ir.AvgPool2d, pooled_shape: tuple[int, ...]) -> tuple:
    """A non-overlapping average pool as the fused kernels take it, ``(kernel, stride, padding,
    Ho, Wo)``, from its output shape (C, Ho, Wo); a 1-D pool's (C, L) as a 2-D pool of height 1."""
    g = ir.spatial(pool)
    if len(pooled_shape) == 3:
        return list(g["kernel"]), list(g["stride"]), list(g["padding"]), *pooled_shape[1:]
    return [1, *g["kernel"]], [1, *g["stride"]], [0, *g["padding"]], 1, pooled_shape[1]


class _Sum:
    """An ``Add`` node's value left unevaluated for the IF layer that is its only consumer:
    ``gains[0] * xs[0] + gains[1] * xs[1]`` (per channel), so the fused IF kernel sums it on
    the fly instead of writing and re-reading it (same float operations as the torch op)."""

    def __init__(self, xs: list[torch.Tensor], gains: torch.Tensor):
        self.xs, self.gains = xs, gains


class _Spiked:
    """The spikes (k, b, ...) of the plain IF layer that alone reads an event-driven layer,
    made by one kernel with that layer (its currents never stored), for the IF node to pass
    on; where that IF layer's average pool is folded into the next layer, the pool windows'
    spike counts (k * b, C, Hp, Wp) instead (the spikes never stored either)."""

    def __init__(self, spikes: torch.Tensor):
        self.spikes = spikes


class _Pooled:
    """An average pool of the spikes ``spikes`` (k, b, ...) left unevaluated for the
    convolution or Linear layer that alone reads it (through a flatten, for a Linear layer),
    which takes the spikes themselves with the pool folded into its weights; or, where the
    IF layer and the pool ran as one kernel (:meth:`_IFState.avgpool`), the spike ``counts``
    of the pool's windows (k * b, C, Hp, Wp)."""

    def __init__(self, spikes: torch.Tensor | None = None, counts: torch.Tensor | None = None):
        self.spikes, self.counts = spikes, counts


def _avgpool_folds(graph: ir.Graph, spiking: set[str]) -> dict[str, tuple[str, str | None]]:
    """{layer: (average pool, flatten between them or None)} for each average pool of a spike
    train whose only reader is a convolution, or a flatten whose only reader is a Linear
    layer, that can take the pool's input with the pool folded in
    (:func:`~snn.backends.snntorch.event_cost.foldable`)."""
    out: dict[str, tuple[str, str | None]] = {}
    for n, node in graph.nodes.items():
        ins = graph.inputs_of(n)
        if not isinstance(node, (ir.AvgPool1d, ir.AvgPool2d)) or ins[0] not in spiking:
            continue
        (c, *more) = graph.consumers_of(n) or [None]
        via = None
        if not more and isinstance(graph.nodes.get(c), ir.Flatten) and len(graph.consumers_of(c)) == 1:
            via, c = c, graph.consumers_of(c)[0]
        if c is not None and not more and isinstance(graph.nodes[c], ir.Linear if via else (ir.Conv1d, ir.Conv2d)) \
                and foldable(node, graph.nodes[c], graph.shapes[ins[0]]):
            out[c] = (n, via)
    return out


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
    is kept under ``budget`` too. Sub-batches larger than the thread count are rounded down
    to a multiple of it: the fused layer + IF kernels share a tile's samples among the
    threads (5 samples on 2 threads left one idle a sixth of the time)."""
    per_row = max(int(np.prod(s)) for s in graph.shapes.values()) * itemsize
    rows = max(1, min(rows, budget // per_row))
    k = int(chunk) if chunk else max(1, min(32, timesteps, rows))
    if not static_input and not chunk:
        k = max(1, min(k, budget // (batch * int(np.prod(graph.shapes[graph.input])) * itemsize)))
    sub = max(1, min(batch, rows // k))
    threads = torch.get_num_threads()
    if threads < sub < batch:  # whole samples per thread for the kernels parallel over samples
        sub -= sub % threads
    n_sub = -(-batch // sub)
    return k, -(-batch // n_sub)


MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD = 64 * 2**20, 256 * 2**20
"""glibc malloc settings applied once per process by :func:`keep_freed_tiles`."""
_malloc_set = False


def keep_freed_tiles() -> None:
    """Once per process, on Linux with glibc, unless ``SNN_MALLOC=0``: sets malloc's
    ``M_MMAP_THRESHOLD`` to 64 MiB and ``M_TRIM_THRESHOLD`` to 256 MiB, so that the tiles'
    buffers (at most 16 MiB each, :func:`_tiles`), once freed, are reused by the next tile
    instead of being returned to the system and page-faulted afresh. glibc adapts its own
    thresholds to a process's frees, but other torch work in the process (SpikingJelly's
    run in ``speed.py``) resets them: our ResNet-20 batch then took ~550,000 page faults
    (2 GB of fresh pages) and 16 % more time per run. The cost: up to 256 MiB of freed
    memory may stay with the process."""
    global _malloc_set
    if _malloc_set or os.environ.get("SNN_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return
    _malloc_set = True
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, MALLOC_MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, MALLOC_TRIM_THRESHOLD)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc (musl): its allocator as it is
        pass


FUSE_IF_NEURONS = 2048
"""An event-driven layer of at least this many outputs per sample runs as one kernel with
the plain IF layer that alone reads it (the currents are never stored: a saving in memory
traffic, which small layers do not have; the fused kernel is parallel over samples, not
rows, so it only pays where the traffic does)."""
OPTIONS = ("chunk", "impl", "event")
IMPLS = ("auto", "fused", "torch")
EVENT_MODES = ("auto", "always", "never")
_PARAMS: dict[tuple[int, str, torch.dtype], tuple[ir.Graph, torch_ops.Params]] = {}


def _params(graph: ir.Graph, dev: torch.device, dtype: torch.dtype) -> torch_ops.Params:
    """The graph's weights as tensors, made once per (graph, device, dtype) and reused by
    the following batches of a simulation (the last few graphs are kept)."""
    return made_once(_PARAMS, (id(graph), str(dev), dtype), graph, lambda: torch_ops.Params(graph, dev, dtype))


def prepare(*, device: str, impl: str = "auto", **options: Any) -> None:
    """Build what this backend compiles once per environment, the fused CPU kernels (a
    minute the first time, a cache hit afterwards), so that :func:`snn.simulate` times the
    simulation without the build."""
    if impl != "torch" and _device(device).type == "cpu":
        from snn.backends.snntorch import kernels

        kernels.load()


def run(graph: ir.Graph, x: np.ndarray, *, timesteps: int, encoding: str, seed: int, start: int,
        precision: str, device: str, record: str, chunk: int | None = None, impl: str = "auto",
        event: str = "auto", **options: Any) -> BatchRecord:
    """Simulate one batch ``x`` (B, *input shape); see :mod:`snn.simulate` for the record.

    ``impl``: ``"fused"`` uses the compiled CPU kernels of
    :mod:`snn.backends.snntorch.kernels`, ``"torch"`` the reference torch ops (same
    spikes), ``"auto"`` the kernels on CPU when they compile here and torch ops otherwise
    (and on CUDA). ``chunk``: steps per chunk. ``event``: with the fused kernels, a
    Linear/Conv1d/Conv2d layer whose input changes over time runs event-driven ("always"),
    densely ("never"), or as the measured cost model
    :func:`~snn.backends.snntorch.event_cost.event_wins` expects to be faster for each
    tile's input density ("auto"); a layer after an average pool of spikes then takes the
    pre-pool spikes with the pool folded in. The fused kernels also sum a two-input ``Add``
    inside the IF layer that consumes it, and run an IF layer and the spiking max-pool that
    alone reads it as one kernel.
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
    if dev.type == "cpu":
        keep_freed_tiles()
    if impl != "torch" and dev.type == "cpu":
        from snn.backends.snntorch import kernels

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
    plain = all(node.plain for node in graph.nodes.values() if isinstance(node, ir.IF))
    pool_state = {n: _PoolState(node, (B,) + graph.shapes[graph.inputs_of(n)[0]], (B,) + graph.shapes[n], dev,
                                dtype, params.t[n], fused if plain else None, signed=not plain)
                  for n, node in graph.nodes.items() if node.spike_route == "pool" and n in spiking}
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
                       if (isinstance(node, ir.Linear) or (isinstance(node, (ir.Conv1d, ir.Conv2d)) and node.groups == 1))
                       and _packs(graph.shapes[inputs_of[n][0]])}
        pending_sums = {n for n, node in graph.nodes.items() if isinstance(node, ir.Add) and len(inputs_of[n]) == 2
                        and [type(graph.nodes[c]) for c in graph.consumers_of(n)] == [ir.IF]
                        and graph.nodes[graph.consumers_of(n)[0]].plain}
        if_pools = {n: graph.consumers_of(n)[0] for n, node in graph.nodes.items()
                    if isinstance(node, ir.IF) and node.plain and len(graph.consumers_of(n)) == 1
                    and graph.consumers_of(n)[0] in pool_state and pool_state[graph.consumers_of(n)[0]].fused is not None
                    and inputs_of[n][0] not in pending_sums}
    folds = _avgpool_folds(graph, spiking) if fused is not None and event != "never" else {}
    deferred = {n for pool, via in folds.values() for n in (pool, via) if n}
    fold_of = {pool: layer for layer, (pool, _) in folds.items()}
    if_avgpools = {n: graph.consumers_of(n)[0] for n, node in graph.nodes.items()  # IF + folded pool: one kernel
                   if isinstance(node, ir.IF) and node.plain and len(graph.consumers_of(n)) == 1
                   and graph.consumers_of(n)[0] in fold_of and inputs_of[n][0] not in pending_sums}
    only_reader = {n: cs[0] for n in event_nodes if len(cs := graph.consumers_of(n)) == 1}
    byte_ifs = {n for n, node in graph.nodes.items()  # spikes as bytes: every reader an event-driven layer
                if isinstance(node, ir.IF) and node.plain and fused is not None and event != "never"
                and graph.consumers_of(n) and all(c in event_nodes for c in graph.consumers_of(n))}
    conv_ifs = {n: c for n, c in only_reader.items()  # event-driven layer + its IF layer (+ its pool): one kernel
                if isinstance(graph.nodes[c], ir.IF) and graph.nodes[c].plain and c not in if_pools
                and (c not in if_avgpools or isinstance(graph.nodes[if_avgpools[c]], ir.AvgPool2d))
                and int(np.prod(graph.shapes[n])) >= FUSE_IF_NEURONS}

    def dense(name: str, node: ir.Node, v: torch.Tensor) -> torch.Tensor:
        """The node's torch op on ``v`` (spikes as bytes: as floats)."""
        return torch_ops.forward(node, params.t[name], [v.to(dtype) if v.dtype == torch.uint8 else v])

    def synaptic(name: str, node: ir.Node, v: torch.Tensor) -> torch.Tensor:
        """A stateless node on a time-varying (k * b, ...) input: event-driven if chosen, else its torch op."""
        y = _event_forward(fused, node, params.t[name], v, graph.shapes[name], event) \
            if name in event_nodes and event != "never" else None
        return dense(name, node, v) if y is None else y

    def with_if(name: str, k: int, b: int, c0: int, sl: slice) -> IFArgs | None:
        """The ``ifs`` argument of the event kernels for ``name`` and the IF layer that alone
        reads it (:data:`conv_ifs`), with that IF layer's folded average pool if it has one, or
        None: the fused kernel is parallel over the b samples."""
        if name not in conv_ifs or b < torch.get_num_threads():
            return None
        c = conv_ifs[name]
        ifs, pool = if_state[c], None
        if c in if_avgpools:
            pool = _pool_2d(graph.nodes[if_avgpools[c]], graph.shapes[if_avgpools[c]])
        return ifs.u[sl], ifs.prev[sl], ifs.node.threshold, ifs.node.reset == "subtract", k, rec_buffer(c, c0, k), \
            pool, c in byte_ifs

    def folded(name: str, node: ir.Node, v: _Pooled, k: int, b: int, c0: int, sl: slice) -> torch.Tensor | _Spiked:
        """``name`` after its average pool (and flatten) of spikes (k, b, ...), ``v``: event-driven
        on the pre-pool spikes with the pool folded in, or on the windows' spike counts where
        the IF layer and the pool ran as one kernel (then with the IF layer after ``name`` too,
        where :func:`with_if` allows: its spikes); or (the cost model's choice) pool and layer."""
        pool, via = folds[name]
        pool_in = graph.shapes[inputs_of[pool][0]]
        if v.counts is not None:
            ifs = with_if(name, k, b, c0, sl)
            y = _pool_counts_event_forward(fused, graph.nodes[pool], node, params.t[name], v.counts, pool_in,
                                           graph.shapes[name], event, ifs=ifs)
            if y is not None and ifs is not None:
                return _Spiked(y)
            pooled = None if y is not None else (
                v.counts / float(np.prod(graph.nodes[pool].kernel))).reshape((k * b,) + graph.shapes[pool])
        else:
            s = v.spikes.reshape((k * b,) + pool_in)
            y = _pooled_event_forward(fused, graph.nodes[pool], node, params.t[name], s, graph.shapes[name], event)
            pooled = None if y is not None else torch_ops.forward(graph.nodes[pool], params.t[pool], [s])
        if y is None:
            y = synaptic(name, node, pooled.reshape(len(pooled), -1) if via else pooled)
        return y.reshape((k, b) + tuple(y.shape[1:]))

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
                    elif isinstance(node, ir.IF) and isinstance(ins[0][0], _Spiked):  # made with its layer
                        v = ins[0][0].spikes  # with its folded pool: the windows' counts, passed on by the pool
                        vals[name] = (_Pooled(counts=v) if name in if_avgpools else v, False)
                    elif name in if_avgpools:
                        cur, st = ins[0]
                        p = if_avgpools[name]
                        counts = if_state[name].avgpool(cur, k, st, sl, graph.nodes[p], graph.shapes[p],
                                                        rec_buffer(name, c0, k))
                        vals[name] = (_Pooled(counts=counts), False)  # read by the pool only, which passes it on
                    elif isinstance(node, ir.IF):
                        cur, st = ins[0]
                        vals[name] = (if_state[name].scan(cur, k, st, sl, rec_buffer(name, c0, k), name in byte_ifs),
                                      False)
                    elif isinstance(node, ir.Readout):
                        cur, st = ins[0]
                        cur = cur.reshape((b, n_out)) if st else cur.reshape((k, b, n_out))
                        cum = readout_acc[sl] + (cur.expand((k, b, n_out)) if st else cur).cumsum(0)
                        readout_acc[sl] = cum[-1]
                        outputs[c0:c0 + k, sl] = cum  # the membrane; its means are taken at the end
                        vals[name] = (cum, False)
                    elif name in fused_pool:
                        vals[name] = (fused_pool.pop(name), False)
                    elif name in pool_state:
                        vals[name] = (pool_state[name].step(ins[0][0], sl, rec_buffer(name, c0, k)), False)
                    elif name in pending_sums and not any(st for _, st in ins):
                        vals[name] = (_Sum([v for v, _ in ins], params.t[name]["gains"]), False)
                    elif name in deferred and not ins[0][1]:  # an average pool (or its flatten) left to its layer
                        v = ins[0][0]
                        vals[name] = (_Pooled(spikes=v) if name in fold_of and not isinstance(v, _Pooled) else v, False)
                    elif name in folds and isinstance(ins[0][0], _Pooled):
                        vals[name] = (folded(name, node, ins[0][0], k, b, c0, sl), False)
                    elif name in event_nodes and event != "never" and not ins[0][1]:
                        v = ins[0][0].reshape((k * b,) + tuple(ins[0][0].shape[2:]))
                        ifs = with_if(name, k, b, c0, sl)
                        y = _event_forward(fused, node, params.t[name], v, graph.shapes[name], event, ifs=ifs)
                        if y is not None and ifs is not None:
                            vals[name] = (_Spiked(y), False)
                        else:  # the cost model's choice decided once: dense, or event-driven without the IF layer
                            y = dense(name, node, v) if y is None else y
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

    delay = graph.nodes[graph.output].delay
    return BatchRecord(outputs=ir.readout_means(outputs.cpu().numpy(), delay), spike_sums=_np(sums),
                       step_sums=_np(steps) if steps is not None else None)


class _PoolState:
    """Cumulative input counts and pooled maxima of one spiking max-pool, for one batch (B, ...).

    The fused kernels pool (C, H, W) planes; a 1-D pool of (C, L) samples runs on the same
    memory viewed as (C, 1, L), with a (1, k) window.
    """

    def __init__(self, node: ir.Node, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 dev: torch.device, dtype: torch.dtype, params: dict[str, torch.Tensor], fused: Any = None,
                 signed: bool = False):
        self.node, self.params, self.fused, self.signed = node, params, fused, signed
        self.flat = len(node.kernel) == 1
        self.cum = torch.zeros(in_shape, device=dev, dtype=dtype)
        self.pooled = torch.zeros(out_shape, device=dev, dtype=dtype)

    def step(self, s: torch.Tensor, rows: slice, steps: torch.Tensor | None = None) -> torch.Tensor:
        """Spikes ``s`` (k, b, C, H, W) of the samples ``rows`` -> pooled spikes (k, b, C, Ho, Wo);
        see :mod:`snn.ir`. Counts go to ``steps`` as in :meth:`_IFState.scan`."""
        n = self.node
        cum0, pooled0 = self.cum[rows], self.pooled[rows]
        if self.fused is not None:
            out = self.fused.spike_maxpool(self._2d(s.contiguous()), self._2d(cum0), self._2d(pooled0),
                                           *self._geometry(), self._2d(steps))
            return out.squeeze(-2) if self.flat else out
        out = torch_ops.spike_pool(n, self.params, s, cum0, pooled0)  # cum0, pooled0: views, updated
        if steps is not None:
            per_step = (out.abs() if self.signed else out).sum(dim=1, dtype=torch.float64)
            steps += per_step.sum(dim=0, keepdim=True) if len(steps) == 1 else per_step
        return out

    def after_if(self, ifs: _IFState, current: torch.Tensor, k: int, static: bool, rows: slice,
                 if_steps: torch.Tensor | None, steps: torch.Tensor | None) -> torch.Tensor:
        """The IF layer ``ifs``, whose spikes only this pool reads, and this pool in one
        fused kernel, channel plane by plane, without materialising the IF's spikes; the IF's
        counts go to ``if_steps``, the pool's to ``steps``. Returns the pooled spikes."""
        out = self.fused.if_maxpool(self._2d(current.contiguous()), self._2d(ifs.u[rows]), self._2d(ifs.prev[rows]),
                                    ifs.node.threshold, ifs.node.reset == "subtract", static, k,
                                    self._2d(if_steps), self._2d(self.cum[rows]), self._2d(self.pooled[rows]),
                                    *self._geometry(), self._2d(steps))
        return out.squeeze(-2) if self.flat else out

    def _2d(self, t: torch.Tensor | None) -> torch.Tensor | None:
        """A (..., C, L) tensor of a 1-D pool viewed as (..., C, 1, L); 2-D pools' as they are."""
        return t.unsqueeze(-2) if self.flat and t is not None else t

    def _geometry(self) -> list[list[int]]:
        g = ir.spatial(self.node)
        if self.flat:
            return [[1, g["kernel"][0]], [1, g["stride"][0]], [0, g["padding"][0]], [1, g["dilation"][0]]]
        return [list(g["kernel"]), list(g["stride"]), list(g["padding"]), list(g["dilation"])]


STATEFUL = ir.Table("backend 'snntorch'", {ir.IF: _IFState, ir.MaxPool2d: _PoolState, ir.MaxPool1d: _PoolState})
"""The nodes this backend steps itself, with their state class (a max-pool only when it
pools spikes; on the constant input it is the stateless torch op)."""
SUPPORTED: tuple[str, ...] = tuple(dict.fromkeys(
    (ir.Input.kind, ir.Readout.kind) + STATEFUL.kinds()
    + tuple(t.kind for t in torch_ops.OPS if t not in ir.ACTIVATIONS)))
"""Node kinds this backend simulates: its stateful nodes and the stateless torch ops."""
