"""brian2 backend: a converted network as an explicit, clock-driven ``brian2.Network``.

The same equations as :mod:`snn.ir` and the same arithmetic as the snntorch backend,
so that with ``precision="float64"`` both give identical spikes (see
``tests/test_brian2_equivalence.py``).

Model (one object per stateful node, ``B`` independent copies of each: neuron index
``b * n + i`` for sample ``b``, neuron ``i`` of the node, C-order):

* ``IF`` layer: a ``NeuronGroup`` with variables ``v`` (membrane ``u``), ``I`` (synaptic
  input of this step), ``Ib`` (constant input: bias, and under constant encoding the
  static current of the first layer, computed once), ``sp`` (spike of the previous step)
  and ``count`` (cumulative spikes). Each step runs, in this association (snntorch's)::

      Itot = I + Ib
      v = v + Itot;  v = v - theta * sp          # reset="subtract"
      v = v * (1 - sp);  v = v + Itot            # reset="zero"
      spike if v > theta  (tie rule: strictly above); then sp = 1, count += 1

  with ``v`` starting at ``v_init * theta``. Each assignment is its own statement so
  that code generation cannot re-associate the sums.
* Every stateless node between stateful ones is affine, so a layer's input current is
  ``sum_src A_src @ s_src + c`` (:mod:`snn.backends.brian2_forms`): one ``Synapses``
  object per source group with ``on_pre: I_post += w`` (dense for Linear, the full
  sparse connectivity for Conv2d, composed with pooling, Add gains, concatenation,
  flatten/reshape by index arithmetic).
* Spiking max-pool, 1-D or 2-D (cumulative-count rule): a group with ``mx`` (largest input
  count seen) and ``count``; synapses from the pooled neurons run
  ``mx_post = max(mx_post, count_pre)`` for each input spike, and the pool spikes when
  ``mx > count``, so its count is always the maximum of the window's counts.
* Poisson input: a group that spikes where the :func:`snn.encode.encode_step` trains
  (held in a ``TimedArray``) are 1. ``Readout``: ``v = v + (I + Ib)``, recorded by a
  ``StateMonitor`` and reported as ``v / t``.

Zero synaptic delay: all objects share one clock and the ``start`` slot, ordered by
``order`` in the topological order of the graph (for each node: the synapses into it,
then its update, threshold and reset), so a spike of layer ``l`` at step ``t`` is in
layer ``l+1``'s input at step ``t``. Spike counts are counters: ``count`` per neuron for
the totals and, with ``record="steps"``, a counter group of one neuron per node neuron
(zeroed every step, fed by one synapse per neuron and sample) whose ``StateMonitor``
holds (T, neurons) counts summed over the batch; no spike times are stored. Memory:
the synapses are replicated per sample (B times the per-sample connectivity), so choose
``batch_size`` for the network's size.

Code generation: ``target="cython"`` (default), ``"numpy"`` or ``"cpp_standalone"``.
Compiled code is cached under ``$SNN_CACHE/brian2`` (default ``~/.cache/snn/brian2``):
Cython extensions in ``cython/`` (object names are fixed, so a rerun of the same network
hits the cache), and standalone projects in ``standalone/<key>`` where the key hashes
what shapes the generated code (graph structure, batch size, T, encoding, record,
precision); brian2 rewrites only changed files, so a repeat builds without recompiling.
Repeated standalone runs in one process: each call activates a fresh standalone device
(``set_device``), builds and runs, then ``device.reinit()`` and ``reset_device()``
restore the previous (runtime) device; a file lock serialises runs that share a project
directory. Every brian2 preference this backend sets is restored after the call; code
is compiled without ``-ffast-math`` and with ``-ffp-contract=off`` so floating-point
operations are done exactly as written.
"""
from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from snn import encode as enc
from snn import ir
from snn.backends import brian2_forms as bf
from snn.errors import SnnError
from snn.backends import BatchRecord, check_graph

TARGETS = ("cython", "numpy", "cpp_standalone")
SUPPORTED = bf.SUPPORTED
OPTIONS = ("target", "cache_dir")
SLOT = "start"
COMPILE_ARGS = ["-w", "-O3", "-ffp-contract=off", "-march=native", "-std=c++11"]
_PREF_KEYS = ("codegen.target", "core.default_float_dtype", "codegen.runtime.cython.cache_dir",
              "codegen.cpp.extra_compile_args_gcc")


def _brian2():
    try:
        import brian2
    except ImportError as e:
        raise SnnError("the brian2 backend needs brian2: install it with `pip install brian2` "
                       "(and `pip install cython` plus a C++ compiler for the cython target)") from e
    return brian2


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where compiled code is kept: ``cache_dir``, else ``$SNN_CACHE/brian2``, else ``~/.cache/snn/brian2``."""
    if cache_dir is not None:
        return Path(cache_dir)
    base = os.environ.get("SNN_CACHE")
    return Path(base) / "brian2" if base else Path.home() / ".cache" / "snn" / "brian2"


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise SnnError(f"unknown brian2 code generation target {target!r}; valid: {', '.join(TARGETS)}")
    if target == "numpy":
        return
    cxx = os.environ.get("CXX", "g++").split()[0]
    if shutil.which(cxx) is None and shutil.which("c++") is None:
        raise SnnError(f"brian2 target {target!r} needs a C++ compiler ({cxx} not found): install one "
                       "(e.g. `apt install g++`) or use target='numpy'")
    if target == "cython":
        try:
            import Cython  # noqa: F401
        except ImportError as e:
            raise SnnError("brian2 target 'cython' needs Cython: `pip install cython`, or use target='numpy'") from e
    if target == "cpp_standalone" and shutil.which("make") is None:
        raise SnnError("brian2 target 'cpp_standalone' needs `make`: install it (e.g. `apt install make`)")


@contextlib.contextmanager
def _prefs(b2, target: str, precision: str, root: Path) -> Iterator[None]:
    """Set the brian2 preferences for one run and restore every one of them afterwards."""
    prefs = b2.prefs
    old = {k: prefs[k] for k in _PREF_KEYS}
    try:
        prefs["codegen.target"] = "cython" if target == "cpp_standalone" else target
        prefs["core.default_float_dtype"] = np.dtype(precision).type
        prefs["codegen.runtime.cython.cache_dir"] = str(root / "cython")
        prefs["codegen.cpp.extra_compile_args_gcc"] = list(COMPILE_ARGS)
        yield
    finally:
        for k, v in old.items():
            prefs[k] = v


POOL_CODE = "mx_post = mx_post + int(count_pre > mx_post)*(count_pre - mx_post)"


class _PoolNotice(logging.Filter):
    """Drops brian2's notices about the max-pool update: it warns that a statement on
    ``mx_post`` may depend on the order of the synapses (a running maximum does not) and,
    on the numpy target, that it runs as a Python loop."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "mx_post" not in record.getMessage()


@contextlib.contextmanager
def _quiet_pool_notices() -> Iterator[None]:
    f = _PoolNotice()
    loggers = [logging.getLogger("brian2.codegen.generators.base"),
               logging.getLogger("brian2.codegen.generators.numpy_generator")]
    for lg in loggers:
        lg.addFilter(f)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(f)


@contextlib.contextmanager
def _standalone(b2, directory: Path) -> Iterator[Any]:
    """A fresh cpp_standalone device for one build; the previous device is restored after."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".snn.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        b2.set_device("cpp_standalone", build_on_run=False)
        dev = b2.get_device()
        try:
            yield dev
        finally:
            from brian2.devices.device import reset_device

            dev.reinit()
            reset_device()


def _standalone_key(graph: ir.Graph, B: int, T: int, encoding: str, record: str, precision: str) -> str:
    desc = {"nodes": [(n, v.kind, graph.shapes[n], getattr(v, "reset", None)) for n, v in graph.nodes.items()],
            "edges": graph.edges, "B": B, "T": T, "enc": encoding, "rec": record, "prec": precision}
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- network
class _Builder:
    """Creates the brian2 objects of one batch, in schedule order."""

    def __init__(self, b2, graph: ir.Graph, B: int, dtype: np.dtype):
        self.b2, self.graph, self.B, self.dtype = b2, graph, B, dtype
        self.clock = b2.Clock(dt=1 * b2.ms, name="snn_clock")
        self.objects: list[Any] = []
        self.order = 0
        self.ids = {n: i for i, n in enumerate(graph.nodes)}

    def sched(self, *objs: Any) -> None:
        """Run ``objs`` next in the step, one after another."""
        for o in objs:
            if o is None:  # a group without state updater
                continue
            o.when, o.order = SLOT, self.order
            self.order += 1

    def name(self, node: str, what: str) -> str:
        return f"snn{self.ids[node]}_{what}"

    def lit(self, x: float) -> str:
        """A float literal holding ``x`` rounded to the working precision."""
        return repr(float(self.dtype.type(x)))

    def group(self, node: str, n: int, model: str, threshold: str | None, reset: str | None,
              namespace: dict | None = None):
        g = self.b2.NeuronGroup(self.B * n, model, threshold=threshold, reset=reset, clock=self.clock,
                                name=self.name(node, "g"), namespace=namespace or {})
        self.objects.append(g)
        return g

    def neuron(self, node: str, n: int, counting: bool):
        """IF or Readout group and its runners in step order (update, threshold, reset), to be scheduled."""
        nd = self.graph.nodes[node]
        if isinstance(nd, ir.Readout):
            g = self.group(node, n, "v : 1\nI : 1\nIb : 1\nItot : 1", None, None)
            upd = g.run_regularly("Itot = I + Ib\nv = v + Itot\nI = 0", name=self.name(node, "update"))
            return g, [g.state_updater, upd]
        th = self.lit(nd.threshold)
        reset = "sp = 1\ncount += 1" if counting else "sp = 1"
        g = self.group(node, n, "v : 1\nI : 1\nIb : 1\nItot : 1\nsp : 1\ncount : integer", f"v > {th}", reset)
        if nd.reset == "subtract":
            code = f"Itot = I + Ib\nv = v + Itot\nv = v - {th}*sp\nI = 0\nsp = 0"
        else:
            code = "Itot = I + Ib\nv = v*(1 - sp)\nv = v + Itot\nI = 0\nsp = 0"
        upd = g.run_regularly(code, name=self.name(node, "update"))
        g.v = self.dtype.type(nd.v_init * nd.threshold)
        return g, [g.state_updater, upd, g.thresholder["spike"], g.resetter["spike"]]

    def synapses(self, src, tgt, A, on_pre: str, weighted: bool, name: str, batched_target: bool = True):
        """``Synapses`` from ``src`` to ``tgt`` for the per-sample matrix ``A`` (n_tgt, n_src), replicated over
        the batch (sample ``b``'s copy targets sample ``b``'s neurons, or, if not ``batched_target``, the
        one shared target neuron)."""
        coo = A.tocoo()
        n_tgt, n_src = A.shape
        b = np.arange(self.B, dtype=np.int64)[:, None]
        i = (b * n_src + coo.col[None, :]).ravel()
        j = ((b * n_tgt if batched_target else 0 * b) + coo.row[None, :]).ravel()
        s = self.b2.Synapses(src, tgt, model="w : 1" if weighted else "", on_pre=on_pre, clock=self.clock,
                             name=name, namespace={})
        s.connect(i=i.astype(np.int32), j=j.astype(np.int32))
        if weighted:
            s.w = np.tile(coo.data, self.B).astype(self.dtype)
        self.objects.append(s)
        return s


def _static_values(graph: ir.Graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Float64 values of the nodes that depend only on a constant-encoded input."""
    vals: dict[str, np.ndarray] = {graph.input: np.asarray(x, dtype=np.float64)}
    for name, node in graph.nodes.items():
        ins = graph.inputs_of(name)
        if ins and all(i in vals for i in ins) and not isinstance(node, (ir.IF, ir.Readout) + ir.ACTIVATIONS):
            vals[name] = ir.eval_node(node, [vals[i] for i in ins])
    return vals


def _build(b, graph: ir.Graph, x: np.ndarray, T: int, encoding: str, seed: int, start: int, record: str):
    """All objects of one batch; returns (monitors, groups, counter monitors)."""
    b2, B = b.b2, b.B
    static_input = enc.is_static(encoding)
    spiking = set(graph.spiking_nodes())
    pools = {n for n, v in graph.nodes.items() if v.spike_route == "pool" and n in spiking}
    neurons = {n for n, v in graph.nodes.items() if isinstance(v, (ir.IF, ir.Readout))}
    sources = {n for n, v in graph.nodes.items() if isinstance(v, ir.IF)} | pools
    if not static_input:
        sources.add(graph.input)
    static = _static_values(graph, x) if static_input else {}
    fs = bf.forms(graph, sources, static)
    recorded = [] if record == "none" else graph.recorded_nodes() + ([] if static_input else [graph.input])
    # a node's count is needed for its own record and by the max-pools it feeds
    pooled_srcs = {s for p in pools for s in bf.input_form(graph, p, sources, static, fs).A}
    counting = set(recorded) | pooled_srcs

    groups: dict[str, Any] = {}
    step_mons: dict[str, Any] = {}

    def incoming(tgt: str, A_by_src: dict, pool: bool) -> None:
        """Synapses into ``tgt``, run after their sources' spikes and before ``tgt`` updates."""
        for src, A in A_by_src.items():
            name = f"{b.name(src, 'to')}{b.ids[tgt]}"
            if pool:
                s = b.synapses(groups[src], groups[tgt], A, POOL_CODE, False, name)
            else:
                s = b.synapses(groups[src], groups[tgt], A, "I_post += w", True, name)
            b.sched(s.state_updater, s.pre)

    def counter(src: str) -> None:
        """Per-step spike counts of ``src`` summed over the batch: (T, neurons) in a StateMonitor."""
        n = int(np.prod(graph.shapes[src]))
        cnt = b2.NeuronGroup(n, "c : integer", clock=b.clock, name=b.name(src, "counter"), namespace={})
        zero = cnt.run_regularly("c = 0", name=b.name(src, "counter_zero"))
        zero.when, zero.order = SLOT, -1
        syn = b.synapses(groups[src], cnt, _identity(n), "c_post += 1", False, b.name(src, "counter_syn"),
                         batched_target=False)
        b.sched(syn.state_updater, syn.pre)
        mon = b2.StateMonitor(cnt, "c", record=True, when="end", clock=b.clock, name=b.name(src, "counter_mon"))
        b.objects += [cnt, mon]
        step_mons[src] = mon

    out_mon = None
    for name, node in graph.nodes.items():
        n = int(np.prod(graph.shapes[name]))
        if name == graph.input and not static_input:
            stim = np.stack([enc.encode_step(x, t, encoding, seed, start).reshape(B * n) for t in range(T)])
            ta = b2.TimedArray(stim.astype(b.dtype), dt=b.clock.dt, name="snn_stim")
            reset = "count += 1" if name in counting else None
            g = groups[name] = b.group(name, n, "count : integer", "stim(t, i) > 0.5", reset, namespace={"stim": ta})
            b.sched(g.state_updater, g.thresholder["spike"], *([g.resetter["spike"]] if reset else []))
        elif name in neurons:
            g, runners = b.neuron(name, n, name in counting)
            groups[name] = g
            form = bf.input_form(graph, name, sources, static, fs)
            if form.c is not None:
                g.Ib = np.broadcast_to(form.c, (B, n)).reshape(-1).astype(b.dtype)
            incoming(name, form.A, pool=False)
            b.sched(*runners)
            if isinstance(node, ir.Readout):
                out_mon = b2.StateMonitor(g, "v", record=True, when="end", clock=b.clock, name="snn_readout_mon")
                b.objects.append(out_mon)
        elif name in pools:
            g = groups[name] = b.group(name, n, "mx : integer\ncount : integer", "mx > count", "count += 1")
            route = bf.routing(bf.input_form(graph, name, sources, static, fs), name, node)
            P = bf.pool_matrix(node, graph.shapes[graph.inputs_of(name)[0]], graph.shapes[name], 1.0)
            incoming(name, {src: bf.clean(P @ A) for src, A in route.items()}, pool=True)
            b.sched(g.state_updater, g.thresholder["spike"], g.resetter["spike"])
        else:
            continue
        if name in recorded and record == "steps":
            counter(name)
    return out_mon, groups, step_mons, recorded


def _identity(n: int):
    import scipy.sparse as sp

    return sp.identity(n, format="csr")


def run(graph: ir.Graph, x: np.ndarray, *, timesteps: int, encoding: str, seed: int, start: int,
        precision: str, device: str, record: str, target: str = "cython", **options: Any) -> BatchRecord:
    """Simulate one batch ``x`` (B, *input shape) in brian2; see :mod:`snn.simulate` for the record."""
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise SnnError(f"unknown option(s) for backend 'brian2': {', '.join(sorted(unknown))}; "
                       f"valid: {', '.join(OPTIONS)}")
    if str(device) != "cpu":
        raise SnnError(f"the brian2 backend runs on the CPU only; got device={device!r}, use device='cpu'")
    _check_target(target)
    check_graph(graph, "brian2", SUPPORTED)
    b2 = _brian2()
    # objects of an earlier run (reference cycles) still hold their names; free them so that
    # this run's objects and code objects get the same names, hence the same (cached) code
    gc.collect()
    B, T = len(x), int(timesteps)
    dtype = np.dtype(precision)
    root = cache_root(options.get("cache_dir"))
    K = int(np.prod(graph.shapes[graph.output]))
    with _prefs(b2, target, precision, root), _quiet_pool_notices():
        ctx = _standalone(b2, root / "standalone" / _standalone_key(graph, B, T, encoding, record, precision)) \
            if target == "cpp_standalone" else contextlib.nullcontext()
        with ctx as dev:
            b = _Builder(b2, graph, B, dtype)
            out_mon, groups, step_mons, recorded = _build(b, graph, x, T, encoding, seed, start, record)
            net = b2.Network(b.objects, name="snn_network")
            net.run(T * b.clock.dt, namespace={})
            if dev is not None:
                dev.build(directory=str(root / "standalone" / _standalone_key(graph, B, T, encoding, record, precision)),
                          compile=True, run=True, with_output=False)
            v = np.asarray(out_mon.v[:], dtype=dtype)  # (B*K, T)
            sums = {n: np.asarray(groups[n].count[:], dtype=np.int64).reshape((B,) + graph.shapes[n]).sum(0)
                    for n in recorded}
            steps = {n: np.asarray(m.c[:], dtype=np.int64).T.reshape((T,) + graph.shapes[n])
                     for n, m in step_mons.items()} if record == "steps" else None
    outputs = ir.readout_means(v.T.reshape(T, B, K), graph.nodes[graph.output].delay)
    return BatchRecord(outputs=outputs.astype(dtype, copy=False), spike_sums=sums, step_sums=steps)
