"""Run a spiking network on inputs with a named backend; the :class:`SimulationResult`.

A backend (see :mod:`snn.backends`, the contract) simulates one batch at a time and returns a
:class:`~snn.backends.BatchRecord`; :func:`simulate` checks the graph against the
backend's supported set before any work, splits the inputs into batches, encodes them with
:mod:`snn.encode` and merges the records. Shapes: ``N`` samples, ``T`` timesteps, ``K``
outputs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from snn import encode as enc
from snn import ir
from snn.errors import SnnError

PRECISIONS = ("float32", "float64")
RECORD = ("steps", "totals", "none")
CLUSTERS = (None, "none", "ray")


@dataclass
class SimulationResult:
    """Outputs and spike records of a simulation.

    ``outputs`` (T, N, K): the readout (mean output current so far, in the ANN's units)
    after each step. ``spike_counts``: {node: per-neuron spike counts summed over the T
    steps, mean over samples}. ``spike_counts_per_step``: {node: (T, *node shape) mean
    spikes per sample at each step}, or None when recorded with ``record="totals"``.
    Spiking nodes are the IF layers and max-pools of spikes; with Poisson encoding the
    input node's spikes are recorded too.
    """

    outputs: np.ndarray
    spike_sums: dict[str, np.ndarray]
    step_sums: dict[str, np.ndarray] | None
    n_samples: int
    timesteps: int
    backend: str
    encoding: str
    precision: str
    device: str
    seed: int
    batch_size: int
    wall_time_s: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def predictions(self) -> np.ndarray:
        """(T, N) predicted class after each step: argmax of the readout."""
        return self.outputs.argmax(axis=-1)

    def accuracy(self, labels: Any) -> np.ndarray:
        """Accuracy after each of the T timesteps, as a (T,) float array in [0, 1]."""
        y = np.asarray(labels).reshape(-1)
        if len(y) != self.n_samples:
            raise SnnError(f"{len(y)} labels for {self.n_samples} simulated samples")
        return (self.predictions == y[None, :]).mean(axis=1)

    @property
    def spike_counts(self) -> dict[str, np.ndarray]:
        return {k: v / self.n_samples for k, v in self.spike_sums.items()}

    @property
    def spike_counts_per_step(self) -> dict[str, np.ndarray] | None:
        if self.step_sums is None:
            return None
        return {k: v / self.n_samples for k, v in self.step_sums.items()}

    def firing_rates(self) -> dict[str, float]:
        """Mean spikes per neuron per step, for each spiking node."""
        return {k: float(v.mean() / self.timesteps) for k, v in self.spike_counts.items()}


def _to_numpy(x: Any) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(x)


def simulate(net: Any, x: Any, timesteps: int, backend: str = "snntorch", encoding: str = "constant",
             batch_size: int = 256, device: str = "cpu", precision: str = "float32", seed: int = 0,
             record: str = "steps", progress: bool = False, cluster: str | None = None,
             address: str | None = None, workers: int | None = None, ray_logs: str | None = None,
             **options: Any) -> SimulationResult:
    """Simulate ``net`` on ``x`` for ``timesteps`` steps with a named backend.

    Every IF layer follows the equations of :mod:`snn.ir` (all layers advance in the same
    step, no synaptic delay)::

        u[t] = v[t-1] + I[t];   s[t] = [u[t] > theta];   v[t] = u[t] - s[t] * theta  (or 0)

    and the readout reports the mean output current so far, ``y[t] = sum_{k<=t} I[k] / t``.
    The graph is checked against the backend's supported node types before any work.

    Args:
        net: a :class:`snn.network.SpikingNetwork` or an SNN :class:`snn.ir.Graph` (ending in
            a ``Readout``).
        x: inputs ``(N, *input shape)``, array or tensor.
        timesteps: ``T >= 1``.
        backend: ``"snntorch"`` (CPU/CUDA, fast) or ``"brian2"`` (reference; same spikes).
        encoding: ``"constant"`` (the analog input every step) or ``"poisson"`` (inputs in [0, 1]).
        batch_size, device, precision, seed: batching, ``"cpu"``/``"cuda"``, ``"float32"``/
            ``"float64"``, the Poisson seed.
        record: ``"steps"`` per-step spike counts per neuron (energy at each step),
            ``"totals"`` their sums over steps, ``"none"`` no spike counts (outputs only).
        cluster: ``None`` (this process) or ``"ray"``: the samples are sharded, in whole batches,
            across the workers of a Ray cluster and the records merged; identical results
            (see :mod:`snn.shard`).
        address, workers: with ``cluster="ray"``, the cluster's address (default: the one this
            process is connected to, else a local cluster started for the call) and the number
            of shards (default: the cluster's CPUs; also the CPUs of a local cluster).
        ray_logs: the folder a local Ray cluster's logs are moved to when it stops (default
            ``$SNN_CACHE/ray-logs``; :func:`snn.shard.ray_session`).
        **options: backend options: ``target=``, ``group=``, ``run_samples=`` for brian2;
            ``impl=``, ``event=``, ``chunk=`` for snntorch (see :func:`snn.backends.snntorch.run`).

    Returns:
        :class:`SimulationResult`: ``outputs`` (T, N, K), spike counts per recorded node.

    Raises:
        SnnError: an unknown backend, option, encoding or precision; inputs of the wrong shape
            or with NaN; a graph the backend cannot simulate (naming the node, its type, the
            backend and its supported set).

    >>> import numpy as np, snn
    >>> from snn import ir
    >>> g = ir.Graph({"input": ir.Input((1,)), "fc": ir.Linear(np.ones((1, 1))), "if": ir.IF(),
    ...               "out": ir.Linear(np.ones((1, 1))), "readout": ir.Readout()},
    ...              [("input", "fc"), ("fc", "if"), ("if", "out"), ("out", "readout")], "input", "readout")
    >>> res = snn.simulate(g, np.array([[0.375]]), timesteps=6)
    >>> res.spike_counts_per_step["if"][:, 0].tolist()   # u = .375 .75 1.125* .5 .875 1.25*
    [0.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    >>> round(float(res.outputs[-1, 0, 0]), 6)          # 2 spikes in 6 steps
    0.333333
    """
    from snn.backends import check_graph, get_backend

    graph = getattr(net, "graph", net)
    if not isinstance(graph, ir.Graph):
        raise SnnError(f"expected a SpikingNetwork or an snn.ir.Graph, got {type(net).__name__}")
    if not isinstance(timesteps, (int, np.integer)) or isinstance(timesteps, bool) or timesteps < 1:
        raise SnnError(f"timesteps must be an integer >= 1, got {timesteps!r}")
    if precision not in PRECISIONS:
        raise SnnError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if record not in RECORD:
        raise SnnError(f"unknown record mode {record!r}; valid: {', '.join(RECORD)}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise SnnError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if cluster not in CLUSTERS:
        raise SnnError(f"unknown cluster {cluster!r}; valid: None (this process), 'ray'")
    mod = get_backend(backend)
    check_graph(graph, backend, mod.SUPPORTED)
    unknown = sorted(set(options) - set(mod.OPTIONS))
    if unknown:
        raise SnnError(f"unknown option(s) for backend {backend!r}: {', '.join(unknown)}; "
                       f"valid: {', '.join(mod.OPTIONS)}")
    bad = ir.nonfinite(graph)
    if bad:
        raise SnnError(f"layer {bad[0][0]!r} ({graph.nodes[bad[0][0]].kind}) has NaN or inf in its {bad[0][1]}; "
                       "nothing was simulated")
    xs = _to_numpy(x).astype(precision, copy=False)
    in_shape = graph.shapes[graph.input]
    if xs.ndim != len(in_shape) + 1 or xs.shape[1:] != in_shape:
        raise SnnError(f"inputs of shape {xs.shape} do not match the network input (N, {', '.join(map(str, in_shape))})")
    if len(xs) == 0:
        raise SnnError("no inputs to simulate")
    if not np.all(np.isfinite(xs)):
        raise SnnError("inputs contain NaN or inf")
    enc.check_encoding(encoding, xs)
    if cluster != "ray":  # a Ray cluster's workers each hold a shard: their memory is not this machine's
        check_memory(graph, len(xs), int(timesteps), int(batch_size), record, precision, device)

    if hasattr(mod, "prepare") and cluster != "ray":  # a build, not timed as simulation
        mod.prepare(device=device, **options)
    t0 = time.perf_counter()
    settings = dict(timesteps=int(timesteps), encoding=encoding, seed=int(seed), precision=precision,
                    device=device, record=record)
    info: dict[str, Any] = {"options": {k: str(v) for k, v in options.items()}}
    if cluster == "ray":
        from snn.shard import run_ray

        outs, sums, steps, info["cluster"] = run_ray(graph, xs, backend, int(batch_size), settings, options,
                                                     address=address, workers=workers, logs=ray_logs)
    else:
        outs, sums, steps = run_batches(mod, graph, xs, 0, int(batch_size), settings, options, progress, backend)
    if not np.isfinite(outs).all():
        raise SnnError(_nonfinite_report(graph, xs, outs, precision))
    return SimulationResult(
        outputs=outs, spike_sums=sums, step_sums=steps if record == "steps" else None,
        n_samples=len(xs), timesteps=int(timesteps), backend=backend, encoding=encoding, precision=precision,
        device=str(device), seed=int(seed), batch_size=int(batch_size), wall_time_s=time.perf_counter() - t0,
        info=info)


def _nonfinite_report(graph: ir.Graph, xs: np.ndarray, outs: np.ndarray, precision: str) -> str:
    """One line naming where a simulation's readout became NaN or inf: the first layer whose
    output (float64 evaluation of the first such sample, IF as ReLU), or whose largest row of
    |weights| (its current when all its inputs spike), summed over the ``T`` steps, leaves
    the range of ``precision``; else the readout's input layer."""
    t, i = (int(v[0]) for v in np.nonzero(~np.isfinite(outs))[:2])
    top = float(np.finfo(precision).max) / len(outs)
    vals = ir.evaluate(graph, xs[i:i + 1].astype(np.float64), keep=list(graph.nodes))
    first = next((n for n in graph.nodes if n in vals and not (np.abs(vals[n]) <= top).all()), None)
    if first is None:  # spikes are at most one per neuron and step: a row of |weights| bounds a layer's current
        first = next((n for n, v in graph.nodes.items() if isinstance(getattr(v, "weight", None), np.ndarray)
                      and v.weight.size and np.abs(v.weight).reshape(len(v.weight), -1).sum(1).max() > top), None)
    where = first or graph.inputs_of(graph.output)[0]
    node = graph.nodes[where]
    big = max((float(np.abs(getattr(node, f)).max()) for f in ("weight", "bias")
               if isinstance(getattr(node, f, None), np.ndarray) and getattr(node, f).size), default=0.0)
    return (f"the simulation gave NaN or inf (readout, step {t + 1}, sample {i}): layer {where!r} ({node.kind}) "
            + (f"overflows {precision} over {len(outs)} steps" if first else "feeds the readout")
            + (f" (largest |weight| {big:.3g})" if big else "") + "; check the model's weights"
            + ("" if precision == "float64" else " or simulate with precision='float64'"))


TILE_BYTES = 16 * 2**20
"""The largest tile of one node the snntorch engine makes (its ``_tiles`` budget)."""


def memory_estimate(graph: ir.Graph, n: int, timesteps: int, batch_size: int, record: str,
                    precision: str) -> dict[str, int]:
    """Bytes a simulation holds at its peak, by part (an estimate; shapes as in :class:`SimulationResult`):

    * ``outputs``: ``T x N x K`` readouts, twice (per batch, then joined);
    * ``records``: with ``record="steps"``, ``T x`` (recorded neurons) float64 counts, twice
      (per batch and summed); with ``"totals"`` one set of sums;
    * ``batch``: the working set of one batch: the state held for the whole batch,
      ``3 x B x`` (all node sizes) (membranes, last spikes, pooled counts), plus one tile per
      node (the snntorch engine runs tiles of steps x samples of at most ``TILE_BYTES`` per
      node; a tensor of ``min(T, 32) x B x`` the node's size when that is smaller).

    An upper bound, meant to refuse what cannot fit, not to be exact: at batch 256, T=32,
    ``record="steps"``, the peak resident set grew by 117, 170 and 111 MiB against estimates
    of 185, 416 and 2,323 MiB on MNIST LeNet-5, an average-pooling MNIST CNN and CIFAR
    ResNet-20 (the estimate before counted ``min(T, 32)`` steps of every node and refused
    the average-pooling CNN at 8 GiB).
    """
    item = np.dtype(precision).itemsize
    size = {k: int(np.prod(v)) for k, v in graph.shapes.items()}
    recorded = sum(size[r] for r in graph.recorded_nodes())
    b = min(batch_size, n)
    return {"outputs": 2 * timesteps * n * size[graph.output] * item,
            "records": 0 if record == "none" else 2 * (timesteps if record == "steps" else 1) * recorded * 8,
            "batch": 3 * b * sum(size.values()) * item
            + sum(min(TILE_BYTES, min(timesteps, 32) * b * v * item) for v in size.values())}


def available_memory(device: str) -> int | None:
    """Bytes this process can still allocate on ``device``: for the CPU the kernel's
    ``MemAvailable``, capped by the cgroup's limit when there is one; None if unknown."""
    if str(device).startswith("cuda"):
        try:
            import torch

            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        except Exception:  # no CUDA here: the device is refused elsewhere
            return None
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except OSError:
        return None
    try:
        with open("/sys/fs/cgroup/memory.max") as fh:
            limit = fh.read().strip()
        with open("/sys/fs/cgroup/memory.current") as fh:
            used = int(fh.read())
        if limit != "max":
            avail = min(avail if avail is not None else 1 << 62, int(limit) - used)
    except (OSError, ValueError):
        pass
    return avail


def check_memory(graph: ir.Graph, n: int, timesteps: int, batch_size: int, record: str, precision: str,
                 device: str) -> None:
    """Refuse, before any work, a simulation whose :func:`memory_estimate` exceeds what
    :func:`available_memory` reports, with the estimate and how to reduce it."""
    parts = memory_estimate(graph, n, timesteps, batch_size, record, precision)
    need, have = sum(parts.values()), available_memory(device)
    if have is None or need <= have:
        return
    gib = 2 ** 30
    raise SnnError(
        f"simulating {n} samples for {timesteps} steps with record={record!r} needs about {need / gib:.3g} GiB "
        f"(outputs T x N x K {parts['outputs'] / gib:.3g}, spike records {parts['records'] / gib:.3g}, "
        f"a batch of {min(batch_size, n)} {parts['batch'] / gib:.3g}); {device} has {have / gib:.3g} GiB available. "
        "Reduce timesteps, the number of samples or batch_size, or use record='totals' (no per-step records)")


def run_batches(mod: Any, graph: ir.Graph, xs: np.ndarray, offset: int, batch_size: int, settings: dict[str, Any],
                options: dict[str, Any], progress: bool = False, label: str = ""
                ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Simulate ``xs`` batch by batch with backend module ``mod``; ``offset`` is the global index of
    ``xs[0]`` (batches start at ``offset + k * batch_size``, so Poisson trains do not depend on how
    the samples are split across processes). Returns (outputs (T, N, K), spike sums, step sums).

    A backend with a ``session`` (see :mod:`snn.backends`) sets up once for all batches."""
    import contextlib

    if hasattr(mod, "session"):
        ctx = mod.session(graph, **settings, **options)
    else:
        def one(xb: np.ndarray, start: int) -> Any:
            return mod.run(graph, xb, start=start, **settings, **options)

        ctx = contextlib.nullcontext(one)
    outs, sums, steps = [], {}, {}
    starts: Any = range(0, len(xs), batch_size)
    if progress:
        from snn.util import progress as bar

        starts = bar(starts, f"simulate ({label})", "batch")
    with ctx as run_batch:
        for s in starts:
            rec = run_batch(xs[s:s + batch_size], offset + s)
            outs.append(rec.outputs)
            for k, v in rec.spike_sums.items():
                sums[k] = sums.get(k, 0) + v
            if rec.step_sums is not None:
                for k, v in rec.step_sums.items():
                    steps[k] = steps.get(k, 0) + v
    return np.concatenate(outs, axis=1), sums, steps
