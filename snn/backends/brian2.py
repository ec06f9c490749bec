"""brian2 backend: a converted network as an explicit, clock-driven ``brian2.Network``.

The same equations as :mod:`snn.ir` and the same arithmetic as the snntorch backend,
so that with ``precision="float64"`` both give identical spikes (see
``tests/test_brian2_equivalence.py``).

Model (one object per stateful node, ``G`` independent copies of each: neuron index
``g * n + i`` for sample ``g`` of the group, neuron ``i`` of the node, C-order):

* ``IF`` layer: a ``NeuronGroup`` with variables ``v`` (membrane ``u``), ``I`` (synaptic
  input of this step), ``Ib`` (constant input: bias, and under constant encoding the
  static current of the layers the input feeds, computed once per sample), ``sp`` (spike
  of the previous step) and, where a max-pool reads it, ``count`` (cumulative spikes).
  Each step runs, in this association (snntorch's)::

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
  flatten/reshape by index arithmetic), its synapses numbered by source.
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
layer ``l+1``'s input at step ``t``.

One network per simulation (:func:`session`): it is built at the first batch for ``G``
samples (option ``group``) and simulates a run of ``E * G`` samples per ``Network.run``
as ``E`` consecutive *epochs* of ``T`` steps (option ``run_samples``): at the start of each
epoch every group resets its state and loads the epoch's constant currents (a
``TimedArray`` with one row per epoch). Between runs the network is ``restore``-d (runtime
targets) or its compiled binary is run again with new ``run_args`` (cpp_standalone).
Spikes of the recorded groups are read from ``SpikeMonitor`` objects (at most one run's worth)
and binned into per-neuron totals and per-step counts. Memory is the network of ``G``
samples plus one run's records, whatever the batch size.

Code generation: ``target="cython"`` (default), ``"numpy"`` or ``"cpp_standalone"``.
Compiled code is cached under ``$SNN_CACHE/brian2`` (default ``~/.cache/snn/brian2``):
Cython extensions in ``cython/`` (object names are fixed, so a rerun of the same network
hits the cache), and standalone projects in ``standalone/<key>`` where the key hashes
what shapes the generated code (graph structure, ``G``, ``E``, T, encoding, record,
precision); brian2 rewrites only changed files, so a repeat builds without recompiling,
and within a simulation the binary is built once and run once per run of samples.
Standalone: each simulation activates a fresh standalone device (``set_device``); on exit
``device.reinit()`` and ``reset_device()`` restore the previous (runtime) device; a file
lock serialises simulations that share a project directory. Every brian2 preference this
backend sets is restored after the simulation; code is compiled without ``-ffast-math``
and with ``-ffp-contract=off`` so floating-point operations are done exactly as written.
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
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from snn import encode as enc
from snn import ir
from snn.backends import brian2_forms as bf
from snn.errors import SnnError
from snn.backends import BatchRecord, check_graph

TARGETS = ("cython", "numpy", "cpp_standalone")
SUPPORTED = bf.SUPPORTED
OPTIONS = ("target", "group", "run_samples", "cache_dir")
GROUP_SYNAPSES = 1_500_000
"""Synapses in one network under ``group="auto"``: the samples of a batch are simulated in groups
of about this many synapses (4 MNIST LeNet-5 samples), one network reused for all. Small groups
keep the synapses in the CPU's caches; larger ones spread brian2's per-step overhead."""
RUN_SAMPLES = 100
"""Samples simulated per ``Network.run`` under ``run_samples="auto"`` (as consecutive epochs of
``G`` samples): each run costs brian2 a code generation pass, and records at most this many
samples' spikes."""
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


def _standalone_key(graph: ir.Graph, G: int, E: int, T: int, encoding: str, record: str, precision: str) -> str:
    desc = {"nodes": [(n, v.kind, graph.shapes[n], getattr(v, "reset", None)) for n, v in graph.nodes.items()],
            "edges": graph.edges, "G": G, "E": E, "T": T, "enc": encoding, "rec": record, "prec": precision}
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- plan (per graph)
@dataclass
class _Plan:
    """What the network of a graph is made of, independent of the samples simulated.

    ``static``: the nodes computed once per sample from a constant-encoded input (float64,
    in graph order); the static nodes that feed a simulated node (the *frontier*) are
    pseudo-sources of the affine forms, so that ``inputs[node]`` (the input form of every
    neuron group and spiking max-pool) holds synaptic matrices from the spike sources and
    constant-current matrices from the frontier, and the samples' constant currents are
    ``sum_f A_f @ static_f + c`` for each group of samples (:meth:`currents`)."""

    graph: ir.Graph
    static: list[str]
    frontier: set[str]
    sources: set[str]
    pools: set[str]
    inputs: dict[str, bf.Form]
    recorded: list[str]
    counting: set[str]  # groups that keep a cumulative spike count (read by max-pools)

    @property
    def synapses_per_sample(self) -> int:
        """Synapses of one sample's copy of the network (spike-routing and weighted)."""
        return sum(a.nnz for node, f in self.inputs.items() for s, a in f.A.items() if s not in self.frontier)

    def currents(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """{node: (G, n) float64} constant input currents that depend on the samples ``x`` (G, ...)."""
        if not self.static:
            return {}
        vals = _static_values(self.graph, x, self.static)
        out = {}
        for node, f in self.inputs.items():
            parts = [np.asarray(a @ vals[s].reshape(len(x), -1).T).T for s, a in f.A.items() if s in self.frontier]
            if parts:
                c = parts[0]
                for p in parts[1:]:
                    c = c + p
                out[node] = c if f.c is None else c + f.c
        return out


def _static_names(graph: ir.Graph, encoding: str) -> list[str]:
    """Nodes that depend only on a constant-encoded input (none under a spiking encoding)."""
    if not enc.is_static(encoding):
        return []
    out = {graph.input: None}
    for name, node in graph.nodes.items():
        ins = graph.inputs_of(name)
        if ins and all(i in out for i in ins) and not isinstance(node, (ir.IF, ir.Readout) + ir.ACTIVATIONS):
            out[name] = None
    return list(out)


def _static_values(graph: ir.Graph, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """Float64 values of the static nodes ``names`` (graph order, input first) for samples ``x``."""
    vals: dict[str, np.ndarray] = {graph.input: np.asarray(x, dtype=np.float64)}
    for name in names[1:]:
        vals[name] = ir.eval_node(graph.nodes[name], [vals[i] for i in graph.inputs_of(name)])
    return vals


def _plan(graph: ir.Graph, encoding: str, record: str) -> _Plan:
    static = _static_names(graph, encoding)
    spiking = set(graph.spiking_nodes())
    pools = {n for n, v in graph.nodes.items() if v.spike_route == "pool" and n in spiking}
    sources = {n for n, v in graph.nodes.items() if isinstance(v, ir.IF)} | pools
    if not static:
        sources.add(graph.input)
    frontier = {s for s in static if any(c not in static for c in graph.consumers_of(s))}
    pseudo = sources | frontier
    fs = bf.forms(graph, pseudo, set(static))
    groups = [n for n, v in graph.nodes.items() if isinstance(v, (ir.IF, ir.Readout)) or n in pools]
    inputs = {n: bf.input_form(graph, n, pseudo, fs) for n in groups}
    for p in pools:
        route = bf.routing(inputs[p], p, graph.nodes[p])
        P = bf.pool_matrix(graph.nodes[p], graph.shapes[graph.inputs_of(p)[0]], graph.shapes[p], 1.0)
        inputs[p] = bf.Form({s: bf.clean(P @ a) for s, a in route.items()}, None, P.shape[0])
    recorded = [] if record == "none" else graph.recorded_nodes() + ([] if static else [graph.input])
    counting = {s for p in pools for s in inputs[p].A}  # cumulative counts, read by the max-pools they feed
    return _Plan(graph, static, frontier, sources, pools, inputs, recorded, counting)


# --------------------------------------------------------------------------- network
def _clock(b2, steps: int, name: str):
    """A ``Clock`` of ``steps`` ms whose hash is a function of its name: brian2 keeps a network's
    clocks in a set and writes cpp_standalone code in the set's order, which with the default
    (address-based) hash changes from process to process, and with it the code (a recompile)."""

    fixed = zlib.crc32(name.encode())
    # brian2 lets only attributes in the class's own __dict__ bypass its variables: the properties
    ns = {k: v for k, v in vars(b2.Clock).items() if isinstance(v, property)}
    ns["__hash__"] = lambda self: fixed  # from construction on (brian2 tracks instances in a weak set)
    return type("NamedClock", (b2.Clock,), ns)(dt=steps * b2.ms, name=name)


def _no_state_updater(obj) -> None:
    """Switch off the state updater of a group or synapses without differential equations (all of
    this backend's: their updates are explicit statements): it would do nothing, yet cost a code
    object per step and a code generation per run."""
    if obj.equations.diff_eq_names:
        raise SnnError(f"internal: {obj.name} has differential equations")
    if obj.state_updater is not None:
        obj.state_updater.active = False


class _Builder:
    """Creates the brian2 objects of one network of ``G`` samples, in schedule order."""

    def __init__(self, b2, graph: ir.Graph, G: int, T: int, dtype: np.dtype):
        self.b2, self.graph, self.G, self.dtype = b2, graph, G, dtype
        self.clock = _clock(b2, 1, "snn_clock")
        self.epoch = _clock(b2, T, "snn_epoch_clock")
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

    def group(self, node: str, n: int, model: str, threshold: str | None, reset: str | None, initial: str):
        """A group of ``G * n`` neurons whose state is set by ``initial`` at the start of every epoch."""
        g = self.b2.NeuronGroup(self.G * n, model, threshold=threshold, reset=reset, clock=self.clock,
                                name=self.name(node, "g"), namespace={})
        _no_state_updater(g)
        init = g.run_regularly(initial, clock=self.epoch, when=SLOT, order=-1, name=self.name(node, "epoch")) \
            if initial else None
        self.objects.append(g)
        return g, init

    def neuron(self, node: str, n: int, counting: bool, ib: str | None):
        """IF or Readout group and its runners in step order (update, threshold, reset), to be scheduled.
        ``ib``: the function of (t, i) that holds the group's constant currents in each epoch, if they
        depend on the samples."""
        nd = self.graph.nodes[node]
        set_ib = f"\nIb = {ib}(t, i)" if ib else ""
        if isinstance(nd, ir.Readout):
            g, _ = self.group(node, n, "v : 1\nI : 1\nIb : 1\nItot : 1", None, None, "v = 0" + set_ib)
            upd = g.run_regularly("Itot = I + Ib\nv = v + Itot\nI = 0", name=self.name(node, "update"))
            return g, [upd]
        th = self.lit(nd.threshold)
        if not nd.plain:
            return self._extended(node, nd, n, counting, set_ib)
        reset = "sp = 1\ncount += 1" if counting else "sp = 1"
        init = f"v = {self.lit(nd.v_init * nd.threshold)}\nsp = 0" + ("\ncount = 0" if counting else "") + set_ib
        model = "v : 1\nI : 1\nIb : 1\nItot : 1\nsp : 1" + ("\ncount : integer" if counting else "")
        g, _ = self.group(node, n, model, f"v > {th}", reset, init)
        if nd.reset == "subtract":
            code = f"Itot = I + Ib\nv = v + Itot\nv = v - {th}*sp\nI = 0\nsp = 0"
        else:
            code = "Itot = I + Ib\nv = v*(1 - sp)\nv = v + Itot\nI = 0\nsp = 0"
        upd = g.run_regularly(code, name=self.name(node, "update"))
        return g, [upd, g.thresholder["spike"], g.resetter["spike"]]

    def _extended(self, node: str, nd: ir.IF, n: int, counting: bool, set_ib: str):
        """An IF group with burst and/or signed spikes (:mod:`snn.ir`): the update computes the
        step's signed spike count ``sp`` (comparisons with ``k * theta`` as literals of the
        working precision, as the torch ops compare), a neuron with ``sp != 0`` emits one
        event, and its synapses add ``w * sp`` (``SYNAPSE_CODE_COUNT``); ``C`` is the net count
        of the steps before (signed)."""
        th = self.lit(nd.threshold)
        pos = " + ".join(f"int(v > {self.lit(k * nd.threshold)})" for k in range(1, nd.burst + 1))
        spikes = f"sp = {pos}"
        if nd.signed:
            neg = " + ".join(["int(v < 0)"] + [f"int(v < {self.lit(-k * nd.threshold)})" for k in range(1, nd.burst)])
            spikes += f" - clip({neg}, 0, C)"
        init = f"v = {self.lit(nd.v_init * nd.threshold)}\nsp = 0" + ("\nC = 0" if nd.signed else "") + \
            ("\ncount = 0" if counting else "") + set_ib
        model = "v : 1\nI : 1\nIb : 1\nItot : 1\nsp : 1" + ("\nC : 1" if nd.signed else "") + \
            ("\ncount : integer" if counting else "")
        g, _ = self.group(node, n, model, "sp != 0", "count += int(abs(sp))" if counting else "sp = sp", init)
        code = f"Itot = I + Ib\nv = v + Itot\nv = v - {th}*sp\n" + ("C = C + sp\n" if nd.signed else "") + \
            f"I = 0\n{spikes}"
        upd = g.run_regularly(code, name=self.name(node, "update"))
        return g, [upd, g.thresholder["spike"], g.resetter["spike"]]

    def synapses(self, src, tgt, A, on_pre: str, weighted: bool, name: str):
        """``Synapses`` from ``src`` to ``tgt`` for the per-sample matrix ``A`` (n_tgt, n_src), one copy per
        sample (sample ``b``'s copy connects sample ``b``'s neurons). Synapses are numbered by source, so
        each spike's synapses are contiguous in memory; the order in which a target's inputs are summed
        (by source index) does not depend on it."""
        coo = A.tocsc().tocoo()
        n_tgt, n_src = A.shape
        b = np.arange(self.G, dtype=np.int64)[:, None]
        i = (b * n_src + coo.col[None, :]).ravel()
        j = (b * n_tgt + coo.row[None, :]).ravel()
        s = self.b2.Synapses(src, tgt, model="w : 1" if weighted else "", on_pre=on_pre, clock=self.clock,
                             name=name, namespace={})
        _no_state_updater(s)
        s.connect(i=i.astype(np.int32), j=j.astype(np.int32))
        if weighted:
            s.w = np.tile(coo.data.astype(self.dtype), self.G)
        self.objects.append(s)
        return s


class _Net:
    """The brian2 network of one graph for ``G`` samples at a time, built once, run for ``E``
    epochs of ``T`` steps per ``Network.run``: epoch ``e`` simulates samples ``e*G .. e*G+G-1``
    of the run.

    At the start of every epoch (``snn_epoch_clock``, before anything else in the step) every
    group sets its initial state and, where they depend on the samples, its constant currents
    ``Ib`` from a ``TimedArray`` with one row per epoch; Poisson input trains are a
    ``TimedArray`` with one row per step. Runtime targets (cython, numpy) store the network
    after building and ``restore`` it before each run, passing the run's ``TimedArray``\\ s in
    the run namespace; cpp_standalone builds (and compiles, cached) one project for ``E``
    epochs and runs its binary once per run with the arrays as ``run_args``. Records: the
    readout's ``v`` (``StateMonitor``) and the spikes of the recorded groups (``SpikeMonitor``;
    at most ``E * G`` samples' worth), binned per neuron and step after the run."""

    def __init__(self, b2, plan: _Plan, G: int, E: int, T: int, record: str, dtype: np.dtype,
                 standalone: Path | None):
        self.b2, self.plan, self.G, self.E, self.T, self.dtype = b2, plan, G, E, T, dtype
        self.standalone = standalone
        graph = plan.graph
        b = self.builder = _Builder(b2, graph, G, T, dtype)
        self.groups: dict[str, Any] = {}
        self.spike_mons: dict[str, Any] = {}
        self.arrays: dict[str, tuple[int, ...]] = {}  # TimedArray name -> shape (rows, columns)
        self.ib: dict[str, str] = {}  # node -> its TimedArray's name
        for name, node in graph.nodes.items():
            n = int(np.prod(graph.shapes[name]))
            if name == graph.input and name in plan.sources:
                counting = name in plan.counting
                g, _ = b.group(name, n, "count : integer" if counting else "", "snn_stim(t, i) > 0.5",
                               "count += 1" if counting else "", "count = 0" if counting else "")
                b.sched(g.thresholder["spike"], *([g.resetter["spike"]] if counting else []))
                self.arrays["snn_stim"] = (E * T, G * n)
            elif isinstance(node, (ir.IF, ir.Readout)):
                f = plan.inputs[name]
                if any(s in plan.frontier for s in f.A):
                    self.ib[name] = b.name(name, "ib")
                    self.arrays[self.ib[name]] = (E, G * n)
                g, runners = b.neuron(name, n, name in plan.counting, self.ib.get(name))
                if f.c is not None and name not in self.ib:
                    g.Ib = np.tile(np.asarray(f.c, dtype=np.float64).reshape(-1), G).astype(dtype)
                self._incoming(g, name, f, "I_post += w", True)
                b.sched(*runners)
                if isinstance(node, ir.Readout):
                    self.out_mon = b2.StateMonitor(g, "v", record=True, when="end", clock=b.clock,
                                                   name="snn_readout_mon")
                    b.objects.append(self.out_mon)
            elif name in plan.pools:
                g, _ = b.group(name, n, "mx : integer\ncount : integer", "mx > count", "count += 1",
                               "mx = 0\ncount = 0")
                self._incoming(g, name, plan.inputs[name], POOL_CODE, False)
                b.sched(g.thresholder["spike"], g.resetter["spike"])
            else:
                continue
            self.groups[name] = g
            if name in plan.recorded:
                extended = isinstance(node, ir.IF) and not node.plain  # events of |sp| spikes each
                mon = b2.SpikeMonitor(g, variables=["sp"] if extended else [], record=True, when="end",
                                      name=b.name(name, "spikes"))
                b.objects.append(mon)
                self.spike_mons[name] = mon
        self.net = b2.Network(b.objects, name="snn_network")
        if standalone is None:
            self.net.store("snn_init")
        else:  # one project for E epochs, built and compiled once (make recompiles only what changed)
            self.timed = self._timed({k: np.zeros(s) for k, s in self.arrays.items()})
            self.net.run(E * T * b.clock.dt, namespace=dict(self.timed))
            b2.get_device().build(directory=str(standalone), compile=True, run=False, with_output=False)

    def _incoming(self, tgt, name: str, form: bf.Form, on_pre: str, weighted: bool) -> None:
        """Synapses into ``name`` from its spike sources, run after their spikes and before ``name`` updates."""
        b = self.builder
        for src, A in form.A.items():
            if src in self.plan.frontier:
                continue
            node = self.plan.graph.nodes[src]
            code = on_pre
            if isinstance(node, ir.IF) and not node.plain:  # an event carries sp spikes (burst, signed)
                if on_pre == POOL_CODE:
                    raise SnnError(ir.unsupported_message(
                        name, self.plan.graph.nodes[name], "backend 'brian2'", SUPPORTED,
                        f"a max-pool of the burst/signed spikes of {src!r}: brian2 pools 0/1 events"))
                code = "I_post += w * sp_pre"
            s = b.synapses(self.groups[src], tgt, A, code, weighted, f"{b.name(src, 'to')}{b.ids[name]}")
            b.sched(s.pre)

    def _timed(self, values: dict[str, np.ndarray]) -> dict[str, Any]:
        b = self.builder
        return {k: self.b2.TimedArray(v, dt=(b.clock.dt if k == "snn_stim" else b.epoch.dt), name=k)
                for k, v in values.items()}

    def run(self, x: np.ndarray, stim: np.ndarray | None, real: int):
        """Simulate the samples ``x`` (E*G, ...) with Poisson input ``stim`` (T, E*G, ...) or None, in
        ``ceil(real / G)`` epochs; the records of the first ``real`` samples: (readout v (T, real, K),
        spike totals {node: shape}, per-step counts {node: (T, *shape)})."""
        b2, G, T = self.b2, self.G, self.T
        epochs = -(-real // G) if self.standalone is None else self.E
        values = {}
        if "snn_stim" in self.arrays:
            # (T, E, G, n) -> rows e*T + t, columns g*n + i
            s = stim.reshape(T, self.E, -1).transpose(1, 0, 2)
            values["snn_stim"] = np.ascontiguousarray(s, dtype=np.float64).reshape(self.arrays["snn_stim"])
        if self.ib:
            currents = self.plan.currents(x)
            for node, k in self.ib.items():
                values[k] = np.ascontiguousarray(currents[node], dtype=np.float64).reshape(self.arrays[k])
        if self.standalone is None:
            self.net.restore("snn_init")
            self.net.run(epochs * T * self.builder.clock.dt, namespace=self._timed(values))
        else:
            dev = b2.get_device()
            dev.run(directory=str(self.standalone), with_output=False,
                    run_args={self.timed[k]: v for k, v in values.items()})
        graph = self.plan.graph
        K = int(np.prod(graph.shapes[graph.output]))
        v = np.array(self.out_mon.v[:], dtype=self.dtype).reshape(G, K, epochs, T)
        v = v.transpose(3, 2, 0, 1).reshape(T, epochs * G, K)[:, :real]
        sums, steps = {}, {}
        for n, mon in self.spike_mons.items():  # int32 (the flat indices stay below G * n * T < 2**31)
            size = int(np.prod(graph.shapes[n]))
            i = np.asarray(mon.i[:], dtype=np.int32)
            step = np.rint(np.asarray(mon.t_[:]) / float(self.builder.clock.dt_)).astype(np.int32)
            bins = (step % T) * size + i % size
            weights = np.abs(np.asarray(mon.sp[:])) if "sp" in mon.record_variables else None
            if real < epochs * G:  # padded samples: drop their spikes (sample = epoch * G + i // size)
                keep = (step // T) * G + i // size < real
                bins, weights = bins[keep], (weights[keep] if weights is not None else None)
            del i, step
            counts = np.bincount(bins, weights=weights, minlength=T * size)
            steps[n] = (np.rint(counts).astype(np.int64) if weights is not None else counts).reshape(
                (T,) + graph.shapes[n])
            sums[n] = steps[n].sum(0)
        if self.standalone is not None:
            b2.get_device().delete(code=False, data=False, run_args=True, directory=False)
        return v, sums, steps


# --------------------------------------------------------------------------- the backend
def _positive(name: str, v: Any, auto: int) -> int:
    if v == "auto":
        return auto
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise SnnError(f"brian2 option {name} must be a positive integer or 'auto', got {v!r}")
    return int(v)


@contextlib.contextmanager
def session(graph: ir.Graph, *, timesteps: int, encoding: str, seed: int, precision: str, device: str,
            record: str, target: str = "cython", group: int | str = "auto", run_samples: int | str = "auto",
            cache_dir: str | os.PathLike | None = None) -> Iterator[Callable[[np.ndarray, int], BatchRecord]]:
    """Set up the brian2 simulation of ``graph`` and yield ``run_batch(x, start) -> BatchRecord``.

    The network is built at the first batch, for ``G = min(group, batch)`` samples at a time,
    and reused for every later batch: each ``Network.run`` simulates up to ``run_samples``
    samples (rounded to a multiple of ``G``) as consecutive epochs of ``T`` steps; a run that
    is not full is padded (runtime targets stop after its last epoch; padded samples are not
    recorded). ``group="auto"`` holds about :data:`GROUP_SYNAPSES` synapses, and
    ``run_samples="auto"`` is :data:`RUN_SAMPLES`, so memory does not grow with the batch size.
    brian2's preferences and device are restored on exit."""
    if str(device) != "cpu":
        raise SnnError(f"the brian2 backend runs on the CPU only; got device={device!r}, use device='cpu'")
    _check_target(target)
    check_graph(graph, "brian2", SUPPORTED)
    b2 = _brian2()
    plan = _plan(graph, encoding, record)
    G_max = _positive("group", group, max(1, GROUP_SYNAPSES // max(1, plan.synapses_per_sample)))
    per_run = _positive("run_samples", run_samples, RUN_SAMPLES)
    T, dtype = int(timesteps), np.dtype(precision)
    root = cache_root(cache_dir)
    nets: list[_Net] = []
    in_shape = graph.shapes[graph.input]
    K = int(np.prod(graph.shapes[graph.output]))

    def run_batch(x: np.ndarray, start: int) -> BatchRecord:
        B = len(x)
        if not nets:
            G = min(G_max, B)
            E = -(-min(per_run, B) // G)
            where = root / "standalone" / _standalone_key(graph, G, E, T, encoding, record, precision) \
                if target == "cpp_standalone" else None
            if where is not None:
                stack.enter_context(_standalone(b2, where))
            nets.append(_Net(b2, plan, G, E, T, record, dtype, where))
            # brian2 runs gc.collect() at every Network.run; without the objects that exist now (the
            # network, torch, ...) it has little to scan
            if gc.get_freeze_count() == 0:
                gc.freeze()
                stack.callback(gc.unfreeze)
        net = nets[0]
        n_run = net.E * net.G
        stim = None
        if "snn_stim" in net.arrays:
            stim = np.stack([enc.encode_step(x, t, encoding, seed, start) for t in range(T)]).astype(bool)
        outputs = np.empty((T, B, K), dtype=dtype)
        sums: dict[str, np.ndarray] = {}
        steps: dict[str, np.ndarray] = {}
        for r0 in range(0, B, n_run):
            real = min(n_run, B - r0)
            xr = np.zeros((n_run,) + in_shape, dtype=np.float64)
            xr[:real] = x[r0:r0 + real]
            sr = None
            if stim is not None:
                sr = np.zeros((T, n_run) + in_shape, dtype=bool)
                sr[:, :real] = stim[:, r0:r0 + real]
            v, s, st = net.run(xr, sr, real)
            outputs[:, r0:r0 + real] = v
            for k in s:
                sums[k] = sums[k] + s[k] if k in sums else s[k]
                steps[k] = steps[k] + st[k] if k in steps else st[k]
        outputs = ir.readout_means(outputs, graph.nodes[graph.output].delay)
        return BatchRecord(outputs=outputs, spike_sums=sums, step_sums=steps if record == "steps" else None)

    with contextlib.ExitStack() as stack:
        stack.enter_context(_prefs(b2, target, precision, root))
        stack.enter_context(_quiet_pool_notices())
        # objects of an earlier run (reference cycles) still hold their names; free them so that
        # this run's objects and code objects get the same names, hence the same (cached) code
        gc.collect()
        yield run_batch


def run(graph: ir.Graph, x: np.ndarray, *, timesteps: int, encoding: str, seed: int, start: int,
        precision: str, device: str, record: str, **options: Any) -> BatchRecord:
    """Simulate one batch ``x`` (B, *input shape) in brian2; see :mod:`snn.simulate` for the record.
    A simulation of several batches should use :func:`session`, which builds the network once."""
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise SnnError(f"unknown option(s) for backend 'brian2': {', '.join(sorted(unknown))}; "
                       f"valid: {', '.join(OPTIONS)}")
    with session(graph, timesteps=timesteps, encoding=encoding, seed=seed, precision=precision, device=device,
                 record=record, **options) as run_batch:
        return run_batch(np.asarray(x), start)
