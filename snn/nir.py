"""NIR export and import (the Neuromorphic Intermediate Representation, package ``nir`` 1.0.x).

One rule per IR node type in each direction; a node is written exactly or refused.

Discretisation. NIR is written in continuous time; this project's step is forward Euler
with ``dt = 1`` (one timestep) and resistance ``r = 1``. NIR's ``IF`` (nir 1.0.8, reset
potential since 2025)::

    dv/dt = r I;   z = 1 if v > v_threshold (strict);   v <- v_reset after a spike

which at ``dt = 1`` is exactly our ``IF`` with ``reset="zero"`` and ``v_init = 0``:
``u[t] = v[t-1] + I[t]``, spike iff ``u > theta``, ``v = 0`` after a spike. NIR has no
subtractive reset since 2025 and no initial membrane, so an ``IF`` with ``reset="subtract"``
or ``v_init > 0`` (the converter's defaults) is refused; convert with
``snn.convert(..., reset="zero", v_init=0.0)`` for an exact file. Our ``Readout`` (integrate
without spiking, report ``v[t] / t``) is NIR's integrator ``I`` with ``r = 1`` (same
argmax at every step); it feeds the graph's ``Output``.

Mapping (export; the import is its inverse and takes the same NIR types):

=================  ==========================================================================
IR node            NIR
=================  ==========================================================================
Input              Input (per-sample shape)
Linear             Affine (bias) or Linear (no bias)
Conv1d, Conv2d     Conv1d, Conv2d (bias of zeros when there is none)
Affine             Scale (no shift); with a shift: Affine with a diagonal matrix on vectors,
                   a depthwise 1x1 convolution on (C, L) and (C, H, W); a depthwise 1x1
                   convolution is read back as an Affine
IF                 IF(r=1, v_threshold=theta, v_reset=0); exact only for reset="zero", v_init=0
AvgPool2d          AvgPool2d (zero padding counted in the divisor, as NIR's SumPool + Scale)
MaxPool2d          refused (NIR has no max-pooling); allow_lossy=True writes an AvgPool2d
Flatten            Flatten(start_dim=0): a whole sample, NIR's shapes having no batch axis
Add                one Scale per input (its gains) into an all-ones Scale named after the Add:
                   NIR sums the edges that enter a node
Readout            I(r=1), then Output
=================  ==========================================================================

Not expressible in NIR 1.0 and refused by name: 1-D pooling, upsampling, padding,
concatenation, reshapes other than a flatten, and ANN activations. ``allow_lossy=True``
writes the inexact cases (subtractive reset written as reset to zero, ``v_init`` dropped,
max-pooling written as average pooling), records each loss in the graph's metadata
(``snn_losses``, JSON) and warns.

Import: any NIR file whose nodes are in :data:`IMPORT` (ours, or another library's) becomes
a :class:`~snn.network.SpikingNetwork`. ``IF`` with ``r != 1`` gets an ``Affine`` scaling of
its input (exact); a node with several inputs gets an ``Add`` (Scale nodes feeding it fold
into its gains); a graph whose output is not an integrator gets a ``Readout`` appended (the
prediction is then the output with the largest count). Unknown node types, non-uniform
thresholds, reset potentials other than 0, mismatched shapes, missing parameters, cycles,
several inputs or outputs: an :class:`SnnError` naming the node. A truncated or corrupt
file: an :class:`SnnError` naming the file. Nothing is half-built: the graph is checked as
a whole before it is returned.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from snn import ir
from snn.errors import MissingExtra, SnnError
from snn.network import SpikingNetwork
from snn.util import atomic_path

INTERPRETER = "the NIR exporter"
IMPORTER = "the NIR importer"


def _nir():
    try:
        import nir
    except ImportError as e:  # pragma: no cover - the test extra installs it
        raise MissingExtra("NIR export/import", "nir", "the 'nir' package") from e
    return nir


class LossyWarning(UserWarning):
    """A NIR export with ``allow_lossy=True`` wrote something inexactly (see the graph's metadata)."""


# --------------------------------------------------------------------------- export
@dataclass
class _Export:
    graph: ir.Graph
    allow_lossy: bool
    nodes: dict[str, Any] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)
    exits: dict[str, str] = field(default_factory=dict)  # our node -> the NIR node carrying its output
    losses: list[dict[str, str]] = field(default_factory=list)

    def lossy(self, name: str, node: ir.Node, why: str, instead: str, written: str) -> None:
        """Refuse ``node`` (``why``, with the exact alternative ``instead``), or record that it
        was ``written`` inexactly."""
        if not self.allow_lossy:
            raise SnnError(ir.unsupported_message(name, node, INTERPRETER, EXPORT.kinds(),
                                                  f"{why}; {instead}, or pass allow_lossy=True to write it "
                                                  "inexactly"))
        self.losses.append({"node": name, "kind": node.kind, "loss": f"{why}: {written}"})

    def chain(self, name: str, parts: list[tuple[str, Any]]) -> None:
        """Add NIR nodes in sequence; the first takes this node's inputs, the last carries its output."""
        for n, v in parts:
            self.nodes[n] = v
        for (a, _), (b, _) in zip(parts, parts[1:]):
            self.edges.append((a, b))
        for i in self.graph.inputs_of(name):
            self.edges.append((self.exits[i], parts[0][0]))
        self.exits[name] = parts[-1][0]


EXPORT = ir.Table(INTERPRETER)
"""``rule(ctx, name, node)`` adds ``node``'s NIR nodes to ``ctx`` (:class:`_Export`)."""

WHY_NOT = {
    "maxpool1d": "NIR 1.0 has no 1-D pooling", "avgpool1d": "NIR 1.0 has no 1-D pooling",
    "upsample": "NIR 1.0 has no upsampling node", "pad": "NIR 1.0 has no padding node",
    "concat": "NIR 1.0 has no concatenation node", "reshape": "NIR 1.0 has no reshape node (only Flatten)",
    "relu": "an ANN activation; convert the model first (snn.convert)",
    "clip": "an ANN activation; convert the model first (snn.convert)",
}
"""Why NIR cannot hold the node types that :data:`EXPORT` lacks (for the refusal message)."""


def _shape(ctx: _Export, name: str) -> tuple[int, ...]:
    return ctx.graph.shapes[name]


@EXPORT.register(ir.Input)
def _x_input(ctx: _Export, name: str, node: ir.Input) -> None:
    nir = _nir()
    ctx.nodes[name] = nir.Input(input_type={"input": np.array(node.shape)})
    ctx.exits[name] = name


@EXPORT.register(ir.Linear)
def _x_linear(ctx: _Export, name: str, node: ir.Linear) -> None:
    nir = _nir()
    v = nir.Affine(weight=node.weight, bias=node.bias) if node.bias is not None else nir.Linear(weight=node.weight)
    ctx.chain(name, [(name, v)])


def _conv(nir: Any, rank: int, in_shape: tuple[int, ...], weight: np.ndarray, bias: np.ndarray | None,
          stride: tuple[int, ...], padding: tuple[int, ...], dilation: tuple[int, ...], groups: int) -> Any:
    bias = np.zeros(weight.shape[0]) if bias is None else bias
    if rank == 1:
        return nir.Conv1d(input_shape=int(in_shape[1]), weight=weight, stride=int(stride[0]),
                          padding=int(padding[0]), dilation=int(dilation[0]), groups=int(groups), bias=bias)
    return nir.Conv2d(input_shape=tuple(int(s) for s in in_shape[1:]), weight=weight, stride=tuple(stride),
                      padding=tuple(padding), dilation=tuple(dilation), groups=int(groups), bias=bias)


@EXPORT.register(ir.Conv1d, ir.Conv2d)
def _x_conv(ctx: _Export, name: str, node: ir.Conv2d) -> None:
    nir = _nir()
    (src,) = ctx.graph.inputs_of(name)
    rank = node.weight.ndim - 2
    ctx.chain(name, [(name, _conv(nir, rank, _shape(ctx, src), node.weight, node.bias, node.stride, node.padding,
                                  node.dilation, node.groups))])


@EXPORT.register(ir.Affine)
def _x_affine(ctx: _Export, name: str, node: ir.Affine) -> None:
    nir = _nir()
    shape = _shape(ctx, name)
    rank = len(shape) - 1
    if not node.shift.any():
        v = nir.Scale(scale=np.broadcast_to(node.scale.reshape((-1,) + (1,) * rank), shape).copy())
    elif rank == 0:
        v = nir.Affine(weight=np.diag(node.scale), bias=node.shift)
    else:
        c = shape[0]
        v = _conv(nir, rank, shape, node.scale.reshape((c, 1) + (1,) * rank), node.shift, (1,) * rank, (0,) * rank,
                  (1,) * rank, c)
    ctx.chain(name, [(name, v)])


@EXPORT.register(ir.IF)
def _x_if(ctx: _Export, name: str, node: ir.IF) -> None:
    nir = _nir()
    if not node.plain:
        raise SnnError(ir.unsupported_message(name, node, INTERPRETER, EXPORT.kinds(),
                                              f"NIR's IF emits one 0/1 spike per step (burst={node.burst}, "
                                              f"signed={node.signed}); convert with burst=1, signed=False"))
    if node.reset != "zero":
        ctx.lossy(name, node, "NIR's IF resets to a potential (nir >= 1.0.5); it has no subtractive reset",
                  'convert with reset="zero" for an exact file', "written as reset to 0")
    if node.v_init != 0.0:
        ctx.lossy(name, node, f"NIR has no initial membrane potential (v_init={node.v_init})",
                  "convert with v_init=0.0 for an exact file", "written starting from 0")
    shape = _shape(ctx, name)
    ctx.chain(name, [(name, nir.IF(r=np.ones(shape), v_threshold=np.full(shape, node.threshold),
                                   v_reset=np.zeros(shape)))])


@EXPORT.register(ir.AvgPool2d, ir.MaxPool2d)
def _x_pool(ctx: _Export, name: str, node: ir.AvgPool2d) -> None:
    nir = _nir()
    if isinstance(node, ir.MaxPool2d):
        if node.dilation != (1, 1):
            raise SnnError(ir.unsupported_message(name, node, INTERPRETER, EXPORT.kinds(),
                                                  "NIR has no max-pooling, nor a dilated pooling to stand for it"))
        ctx.lossy(name, node, "NIR has no max-pooling", "use average pooling in the ANN for an exact file",
                  "written as average pooling (the mean spike rate of the window, not the maximum)")
    ctx.chain(name, [(name, nir.AvgPool2d(kernel_size=np.array(node.kernel), stride=np.array(node.stride),
                                          padding=np.array(node.padding)))])


@EXPORT.register(ir.Flatten)
def _x_flatten(ctx: _Export, name: str, node: ir.Flatten) -> None:
    nir = _nir()
    (src,) = ctx.graph.inputs_of(name)
    ctx.chain(name, [(name, nir.Flatten(input_type={"input": np.array(_shape(ctx, src))}, start_dim=0, end_dim=-1))])


@EXPORT.register(ir.Add)
def _x_add(ctx: _Export, name: str, node: ir.Add) -> None:
    nir = _nir()
    shape = _shape(ctx, name)
    rank = len(shape) - 1
    ctx.nodes[name] = nir.Scale(scale=np.ones(shape))
    for k, src in enumerate(ctx.graph.inputs_of(name)):
        if f"{name}.{k}" in ctx.graph.nodes:
            raise SnnError(f"node {name!r} (add): the NIR name {name}.{k} of its input scaling is taken by "
                           "another node; rename that node")
        gain = np.broadcast_to(node.gains[k].reshape((-1,) + (1,) * rank), shape).copy()
        ctx.nodes[f"{name}.{k}"] = nir.Scale(scale=gain)
        ctx.edges += [(ctx.exits[src], f"{name}.{k}"), (f"{name}.{k}", name)]
    ctx.exits[name] = name


@EXPORT.register(ir.Readout)
def _x_readout(ctx: _Export, name: str, node: ir.Readout) -> None:
    nir = _nir()
    if node.delay:
        ctx.lossy(name, node, f"NIR's integrator has no readout warm-up (delay={node.delay})",
                  "convert with readout_delay=0", "written integrating from the first step")
    ctx.chain(name, [(name, nir.I(r=np.ones(_shape(ctx, name))))])


def _refuse_unsupported(graph: ir.Graph) -> None:
    for name, node in graph.nodes.items():
        if type(node) not in EXPORT:
            raise SnnError(ir.unsupported_message(name, node, INTERPRETER, EXPORT.kinds(), WHY_NOT.get(node.kind, "")))


def to_nir_graph(net: SpikingNetwork | ir.Graph, allow_lossy: bool = False) -> Any:
    """The network as a ``nir.NIRGraph`` (see the module docstring for the mapping).

    Raises:
        SnnError: a node NIR cannot hold exactly (named, with the reason and the exact
            alternative), unless ``allow_lossy``; an ANN graph or one without a Readout.
    """
    nir = _nir()
    graph = net.graph if isinstance(net, SpikingNetwork) else net
    if not isinstance(graph, ir.Graph):
        raise SnnError(f"to_nir takes a SpikingNetwork or an ir.Graph, got {type(net).__name__}")
    _refuse_unsupported(graph)
    if not isinstance(graph.nodes[graph.output], ir.Readout):
        raise SnnError(f"the output node {graph.output!r} ({graph.nodes[graph.output].kind}) is not a readout: "
                       "NIR export takes a converted spiking network (snn.convert)")
    ctx = _Export(graph, allow_lossy)
    for name, node in graph.nodes.items():
        EXPORT.rule(node, name)(ctx, name, node)
    out = "output"
    while out in ctx.nodes:
        out += "_"
    ctx.nodes[out] = nir.Output(output_type={"output": np.array(graph.shapes[graph.output])})
    ctx.edges.append((ctx.exits[graph.output], out))
    meta = {"producer": "snn", "discretisation": "forward Euler, dt = 1 timestep, r = 1",
            "snn_input": graph.input}
    if ctx.losses:
        meta["snn_losses"] = json.dumps(ctx.losses)
        warnings.warn("NIR export is lossy: " + "; ".join(f"{d['node']} ({d['kind']}): {d['loss']}"
                                                           for d in ctx.losses), LossyWarning, stacklevel=3)
    # nir 1.0.8's type inference takes a convolution's input channels as weight.shape[1],
    # ignoring groups, so a graph with a grouped convolution is built without it (our own
    # shape rules checked every node above, and the importer checks them again).
    grouped = any(getattr(v, "groups", 1) > 1 for v in graph.nodes.values()) or \
        any(isinstance(v, ir.Affine) and v.shift.any() and len(graph.shapes[n]) > 1 for n, v in graph.nodes.items())
    return nir.NIRGraph(nodes=ctx.nodes, edges=ctx.edges, metadata=meta, type_check=not grouped)


def to_nir(net: SpikingNetwork | ir.Graph, path: str | Path, allow_lossy: bool = False) -> Path:
    """Write ``net`` as a NIR file (HDF5, atomically); returns the path. See :func:`to_nir_graph`.

    >>> import os, tempfile, torch, snn
    >>> net = snn.convert(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)),
    ...                   torch.rand(16, 3), reset="zero", v_init=0.0)
    >>> path = snn.to_nir(net, os.path.join(tempfile.mkdtemp(), "net.nir"))
    >>> [v.kind for v in snn.from_nir(path).graph.nodes.values()]
    ['input', 'linear', 'if', 'linear', 'readout']
    """
    nir = _nir()
    g = to_nir_graph(net, allow_lossy)
    path = Path(path)
    with atomic_path(path) as tmp:
        nir.write(tmp, g)
    return path


# --------------------------------------------------------------------------- import
def _uniform(name: str, kind: str, what: str, v: Any) -> float:
    a = np.asarray(v, dtype=np.float64)
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise SnnError(f"node {name!r} ({kind}): parameter {what} is empty or not finite")
    if not np.all(a == a.flat[0]):
        raise SnnError(f"node {name!r} ({kind}): {what} differs between neurons; our IF layers have one value")
    return float(a.flat[0])


def _per_channel(name: str, kind: str, what: str, v: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A parameter given per neuron (``shape``), per channel, or as a scalar, as one value per channel."""
    a = np.asarray(v, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise SnnError(f"node {name!r} ({kind}): parameter {what} is not finite")
    try:
        full = np.broadcast_to(a if a.ndim != 1 or len(shape) == 1 else a.reshape((-1,) + (1,) * (len(shape) - 1)),
                               shape)
    except ValueError:
        raise SnnError(f"node {name!r} ({kind}): {what} of shape {a.shape} does not fit its input {shape}") from None
    flat = full.reshape(shape[0], -1)
    if not np.all(flat == flat[:, :1]):
        raise SnnError(f"node {name!r} ({kind}): {what} varies inside a channel; only per-channel values are exact")
    return flat[:, 0].copy()


def _arr(name: str, kind: str, node: Any, attr: str) -> np.ndarray:
    v = getattr(node, attr, None)
    if v is None:
        raise SnnError(f"node {name!r} ({kind}): missing parameter {attr!r}")
    a = np.asarray(v, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise SnnError(f"node {name!r} ({kind}): parameter {attr!r} is not finite")
    return a


def _ints(v: Any, rank: int) -> tuple[int, ...]:
    a = np.atleast_1d(np.asarray(v)).astype(np.int64).ravel()
    return tuple(int(x) for x in (np.repeat(a, rank) if a.size == 1 else a))


Chain = list[tuple[str, ir.Node]]
IMPORT: dict[str, Callable[[str, Any, tuple[int, ...]], Chain]] = {}
"""NIR node type name -> ``rule(name, nir node, input shape) -> [(our name, IR node), ...]`` (a chain)."""


def _imports(*types: str) -> Callable:
    def deco(fn: Callable) -> Callable:
        for t in types:
            IMPORT[t] = fn
        return fn
    return deco


@_imports("Affine", "Linear")
def _i_affine(name: str, v: Any, s: tuple[int, ...]) -> Chain:
    kind = type(v).__name__
    w = _arr(name, kind, v, "weight")
    b = _arr(name, kind, v, "bias") if kind == "Affine" else None
    if w.ndim != 2 or (b is not None and b.shape != (w.shape[0],)):
        raise SnnError(f"node {name!r} ({kind}): weight {w.shape} / bias {None if b is None else b.shape} "
                       "are not (out, in) / (out,)")
    return [(name, ir.Linear(w, b))]


@_imports("Conv1d", "Conv2d")
def _i_conv(name: str, v: Any, s: tuple[int, ...]) -> Chain:
    kind = type(v).__name__
    rank = 1 if kind == "Conv1d" else 2
    w, b = _arr(name, kind, v, "weight"), _arr(name, kind, v, "bias")
    if w.ndim != rank + 2 or b.shape != (w.shape[0],):
        raise SnnError(f"node {name!r} ({kind}): weight {w.shape} / bias {b.shape} do not fit a {rank}-D convolution")
    stride, dil = _ints(v.stride, rank), _ints(v.dilation, rank)
    pad = v.padding
    if isinstance(pad, (str, bytes)):
        pad = pad.decode() if isinstance(pad, bytes) else pad
        if pad == "valid":
            pad = (0,) * rank
        elif pad == "same" and all(st == 1 for st in stride) and all(d * (k - 1) % 2 == 0 for d, k in
                                                                      zip(dil, w.shape[2:])):
            pad = tuple(d * (k - 1) // 2 for d, k in zip(dil, w.shape[2:]))
        else:
            raise SnnError(f"node {name!r} ({kind}): padding {pad!r} (only 'valid', or 'same' when it is symmetric)")
    pad, groups = _ints(pad, rank), int(np.asarray(v.groups))
    c = w.shape[0]
    if (groups == c and w.shape[1] == 1 and len(s) == rank + 1 and s[0] == c and all(k == 1 for k in w.shape[2:])
            and all(x == 1 for x in stride + dil) and not any(pad)):
        return [(name, ir.Affine(scale=w.reshape(c), shift=b))]  # depthwise 1x1: channel-wise affine, exact
    return [(name, (ir.Conv1d if rank == 1 else ir.Conv2d)(w, b, stride, pad, dil, groups))]


@_imports("Scale")
def _i_scale(name: str, v: Any, s: tuple[int, ...]) -> Chain:
    return [(name, ir.Affine(scale=_per_channel(name, "Scale", "scale", _arr(name, "Scale", v, "scale"), s),
                             shift=np.zeros(s[0])))]


def _r_scale(name: str, kind: str, v: Any, s: tuple[int, ...]) -> Chain:
    r = _per_channel(name, kind, "r", _arr(name, kind, v, "r"), s)
    return [] if np.all(r == 1.0) else [(f"{name}.r", ir.Affine(scale=r, shift=np.zeros(s[0])))]


@_imports("IF")
def _i_if(name: str, v: Any, s: tuple[int, ...]) -> Chain:
    theta = _uniform(name, "IF", "v_threshold", _arr(name, "IF", v, "v_threshold"))
    reset = getattr(v, "v_reset", None)
    if reset is not None and np.any(np.asarray(reset, dtype=np.float64) != 0.0):
        raise SnnError(f"node {name!r} (IF): reset potential v_reset={np.unique(reset)[:4]} is not 0; our IF "
                       "neurons reset to 0 or by subtraction")
    if theta <= 0:
        raise SnnError(f"node {name!r} (IF): v_threshold {theta} is not > 0")
    return _r_scale(name, "IF", v, s) + [(name, ir.IF(threshold=theta, reset="zero", v_init=0.0))]


@_imports("I")
def _i_integrator(name: str, v: Any, s: tuple[int, ...]) -> Chain:
    return _r_scale(name, "I", v, s) + [(name, ir.Readout())]


@_imports("AvgPool2d")
def _i_avgpool(name: str, v: Any, s: tuple[int, ...]) -> Chain:
    for f in ("kernel_size", "stride", "padding"):
        _arr(name, "AvgPool2d", v, f)
    return [(name, ir.AvgPool2d(_ints(v.kernel_size, 2), _ints(v.stride, 2), _ints(v.padding, 2)))]


@_imports("Flatten")
def _i_flatten(name: str, v: Any, s: tuple[int, ...]) -> Chain:
    start, end = int(v.start_dim), int(v.end_dim)
    if start != 0 or end not in (-1, len(s) - 1):
        raise SnnError(f"node {name!r} (Flatten): start_dim={start}, end_dim={end} flattens part of a sample of "
                       f"shape {s} (NIR shapes have no batch axis); only a whole-sample flatten (start_dim=0) is "
                       "supported")
    return [(name, ir.Flatten())]


NOT_IMPORTED = {
    "LIF": "a leaky neuron; our networks are integrate-and-fire (IF)",
    "CubaLIF": "a leaky neuron with a synaptic current; our networks are integrate-and-fire (IF)",
    "LI": "a leaky integrator; our readout integrates without leak (I)",
    "CubaLI": "a leaky integrator with a synaptic current; our readout integrates without leak (I)",
    "Delay": "synaptic delays are not simulated", "Threshold": "a stateless threshold is not simulated",
    "SumPool2d": "sum pooling is not an IR node (an average pool times k*k is not bit-exact)",
    "NIRGraph": "nested subgraphs are not supported",
}


def _topological(names: list[str], edges: list[tuple[str, str]], path: Path) -> list[str]:
    indeg = {n: 0 for n in names}
    for a, b in edges:
        for x in (a, b):
            if x not in indeg:
                raise SnnError(f"{path}: edge ({a!r}, {b!r}) names a node {x!r} that is not in the graph")
        indeg[b] += 1
    order, ready = [], [n for n in names if indeg[n] == 0]
    while ready:
        n = ready.pop(0)
        order.append(n)
        for a, b in edges:
            if a == n:
                indeg[b] -= 1
                if indeg[b] == 0:
                    ready.append(b)
    if len(order) != len(names):
        cyc = sorted(n for n in names if n not in order)
        raise SnnError(f"{path}: the graph has a cycle through nodes {', '.join(map(repr, cyc))} (recurrent "
                       "connections are not simulated)")
    return order


def _fold_scales(nodes: dict[str, ir.Node], edges: list[tuple[str, str]]) -> tuple[dict, list]:
    """Fold a shift-free Affine that feeds only an Add into that Add's gains (exact: one multiply either way)."""
    for name, node in list(nodes.items()):
        if not isinstance(node, ir.Add):
            continue
        gains = node.gains.copy()
        for k, (a, b) in enumerate([e for e in edges if e[1] == name]):
            src = nodes[a]
            users = [e for e in edges if e[0] == a]
            if isinstance(src, ir.Affine) and not src.shift.any() and len(users) == 1 and np.all(gains[k] == 1.0):
                (up,) = [e[0] for e in edges if e[1] == a]
                gains[k] = src.scale
                edges = [(up, name) if e == (a, name) else e for e in edges if e[1] != a]
                del nodes[a]
        nodes[name] = ir.Add(gains)
    return nodes, edges


def read_nir_graph(g: Any, path: str | Path = "<graph>") -> tuple[ir.Graph, dict]:
    """A ``nir.NIRGraph`` as an SNN :class:`ir.Graph` and notes for the network's ``meta``."""
    nir = _nir()
    path = Path(path)
    if not isinstance(g, nir.NIRGraph) or not isinstance(getattr(g, "nodes", None), dict):
        raise SnnError(f"{path}: not a NIR graph")
    inputs = [n for n, v in g.nodes.items() if isinstance(v, nir.Input)]
    outputs = [n for n, v in g.nodes.items() if isinstance(v, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise SnnError(f"{path}: the graph has {len(inputs)} Input and {len(outputs)} Output nodes; exactly one of "
                       "each is supported")
    edges = [(str(a), str(b)) for a, b in g.edges]
    order = _topological(list(g.nodes), edges, path)
    for name in order:
        v = g.nodes[name]
        t = type(v).__name__
        if v is None or (t not in IMPORT and not isinstance(v, (nir.Input, nir.Output))):
            why = NOT_IMPORTED.get(t, "unknown node type")
            raise SnnError(f"node {name!r} ({t}) is not supported by {IMPORTER}: {why}; supported: "
                           f"Input, Output, {', '.join(IMPORT)}")
    (inp,), (out,) = inputs, outputs
    notes: dict[str, Any] = {"source": "nir", "file": str(path)}
    raw = np.asarray(g.nodes[inp].input_type.get("input") if g.nodes[inp].input_type else None)
    if raw.ndim != 1 or raw.size == 0 or np.any(raw <= 0):
        raise SnnError(f"node {inp!r} (Input): shape {raw.tolist()} is not a sample shape")
    in_shape = tuple(int(x) for x in raw)
    first = [b for a, b in edges if a == inp]
    if len(in_shape) > 1 and in_shape[0] == 1 and first and _input_fits(g.nodes[first[0]], in_shape[1:]) and \
            not _input_fits(g.nodes[first[0]], in_shape):
        in_shape = in_shape[1:]
        notes["dropped_batch_axis"] = True  # some exporters write the example batch of 1 into the Input
    nodes: dict[str, ir.Node] = {inp: ir.Input(in_shape)}
    our_edges: list[tuple[str, str]] = []
    exit_of: dict[str, str] = {inp: inp}
    shapes: dict[str, tuple[int, ...]] = {inp: in_shape}
    out_src = None
    for name in order:
        v = g.nodes[name]
        if name == inp:
            continue
        srcs = [exit_of[a] for a, b in edges if b == name]
        if not srcs:
            raise SnnError(f"node {name!r} ({type(v).__name__}) has no input")
        if name == out:
            if len(srcs) != 1:
                raise SnnError(f"node {name!r} (Output) has {len(srcs)} inputs; one is supported")
            out_src = srcs[0]
            continue
        if isinstance(v, nir.Output):  # pragma: no cover - one Output checked above
            continue
        prev = srcs[0]
        if len(srcs) > 1:
            identity = isinstance(v, nir.Scale) and np.all(np.asarray(v.scale) == 1.0)
            add = name if identity else f"{name}.sum"
            nodes[add] = ir.Add(np.ones((len(srcs), shapes[srcs[0]][0])))
            our_edges += [(s_, add) for s_ in srcs]
            shapes[add] = ir.output_shape(nodes[add], [shapes[s_] for s_ in srcs], add)
            if identity:
                exit_of[name] = add
                continue
            prev = add
        if not shapes[prev]:
            raise SnnError(f"node {name!r} ({type(v).__name__}): its input has an empty shape")
        try:
            chain = IMPORT[type(v).__name__](name, v, shapes[prev])
        except SnnError:
            raise
        except Exception as e:  # malformed parameters: numpy/attribute errors
            raise SnnError(f"node {name!r} ({type(v).__name__}): malformed parameters ({type(e).__name__}: {e})") from e
        for n, node in chain:
            if n in nodes:
                raise SnnError(f"node {n!r}: the name is used twice")
            nodes[n] = node
            our_edges.append((prev, n))
            shapes[n] = ir.output_shape(node, [shapes[prev]], n)
            prev = n
        exit_of[name] = prev
    if out_src is None:  # pragma: no cover - Output has an input (checked above)
        raise SnnError(f"{path}: the Output node has no input")
    if not isinstance(nodes[out_src], ir.Readout):
        if any(isinstance(n, ir.Readout) for n in nodes.values()):
            raise SnnError(f"{path}: an integrator (I) is only supported as the graph's output")
        nodes["readout"] = ir.Readout()
        our_edges.append((out_src, "readout"))
        out_src = "readout"
        notes["readout_appended"] = True
    elif sum(isinstance(n, ir.Readout) for n in nodes.values()) > 1:
        raise SnnError(f"{path}: an integrator (I) is only supported as the graph's output")
    nodes, our_edges = _fold_scales(nodes, our_edges)
    graph = ir.Graph(nodes, our_edges, inp, out_src)
    meta = dict(g.metadata) if isinstance(getattr(g, "metadata", None), dict) else {}
    if meta:
        notes["nir_metadata"] = {k: (v.decode() if isinstance(v, bytes) else v.tolist() if isinstance(v, np.ndarray)
                                     else v) for k, v in meta.items()}
    return graph, notes


def _input_fits(v: Any, shape: tuple[int, ...]) -> bool:
    """Whether NIR node ``v`` (the Input's consumer) can take a sample of ``shape``."""
    w = getattr(v, "weight", None)
    if w is None:
        return True
    w = np.asarray(w)
    if type(v).__name__ in ("Affine", "Linear"):
        return shape == (w.shape[-1],)
    if type(v).__name__ in ("Conv1d", "Conv2d"):
        return len(shape) == w.ndim - 1 and shape[0] == w.shape[1] * int(np.asarray(v.groups))
    return True


def from_nir(path: str | Path) -> SpikingNetwork:
    """Read a NIR file (ours or another library's) as a :class:`SpikingNetwork` (example in :func:`to_nir`).

    Raises:
        SnnError: a missing, truncated or corrupt file (named); a node type, parameter,
            shape or cycle the importer cannot take exactly (the node named).
    """
    nir = _nir()
    path = Path(path)
    if not path.is_file():
        raise SnnError(f"no such NIR file: {path}")
    try:
        g = nir.read(path, type_check=False)
    except Exception as e:  # h5py OSError, KeyError for a missing field, ValueError/TypeError from a node
        raise SnnError(f"{path} is not a readable NIR file ({type(e).__name__}: "
                       f"{' '.join(str(e).split())[:200]})") from e
    graph, notes = read_nir_graph(g, path)
    return SpikingNetwork(graph=graph, ann=None, meta=notes)
