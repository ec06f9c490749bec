"""Intermediate representation: a network as named nodes of numpy data plus edges.

The IR is data (DESIGN.md, rule 1). Every node is a small frozen dataclass whose
array fields are numpy arrays; a :class:`Graph` holds the nodes in topological order
and the edges ``(source, target)``; a node with several inputs (``Add``, ``Concat``)
takes them in the order of its incoming edges. Shapes are per sample (no batch axis):
``(C, H, W)`` for images, ``(F,)`` for vectors.

Two kinds of graph share these nodes:

* an **ANN graph** (from :mod:`snn.trace`) uses ``ReLU`` and is evaluated exactly, in
  float64, by :func:`evaluate`;
* an **SNN graph** (from :mod:`snn.convert`) replaces each ``ReLU`` by an ``IF`` neuron
  layer and ends in a non-spiking ``Readout``.

Neuron equations (written here once; every backend implements exactly these)
---------------------------------------------------------------------------
For an ``IF`` layer with input current ``I[t]`` (the sum over its incoming synaptic
path at step ``t``), threshold ``theta`` and initial membrane ``v[0] = v_init * theta``::

    u[t] = v[t-1] + I[t]
    s[t] = 1 if u[t] > theta else 0             # tie rule: strictly above (as snntorch)
    v[t] = u[t] - s[t] * theta                  # reset="subtract"
    v[t] = u[t] * (1 - s[t])                    # reset="zero"

This is exactly snntorch's ``Leaky(beta=1)`` with its default delayed reset, whose
``mem`` equals ``u`` above, so an exported snntorch model spikes identically.

``Readout`` integrates without spiking, ``v[t] = v[t-1] + I[t]``, and reports
``v[t] / t`` (the mean input current, in the ANN's units); the prediction after
step ``t`` is ``argmax v[t]``.

All layers advance in the same timestep: a spike emitted by layer ``l`` at step ``t``
is part of layer ``l+1``'s input at step ``t`` (no synaptic delay).

``MaxPool2d`` applied to spikes keeps the cumulative counts ``C[t] = sum_{k<=t} s[k]``
of its input and emits ``maxpool(C[t]) - maxpool(C[t-1])``: a 0/1 spike train whose
count up to any step equals the maximum of the input counts in the window, so the
output rate is exactly the max of the input rates (no averaging, no gate ties).
Applied to analog values (an ANN graph, or an analog input) it is the usual max.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Iterable

import numpy as np

from snn.errors import SnnError

IR_VERSION = 1


def _arr(x: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, dtype=np.float64))


def _pair(x: Any) -> tuple[int, int]:
    if isinstance(x, (tuple, list)):
        return (int(x[0]), int(x[1]))
    return (int(x), int(x))


# --------------------------------------------------------------------------- nodes
@dataclass(frozen=True, eq=False)
class Node:
    """Base class. ``kind`` names the node type in files and messages."""

    kind: ClassVar[str] = "node"
    spiking: ClassVar[bool] = False  # output is a 0/1 spike train in an SNN graph


@dataclass(frozen=True, eq=False)
class Input(Node):
    """Network input; ``shape`` is per sample, e.g. ``(1, 28, 28)`` or ``(64,)``."""

    shape: tuple[int, ...]
    kind: ClassVar[str] = "input"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))


@dataclass(frozen=True, eq=False)
class Linear(Node):
    """``y = W x + b``; ``weight`` (out, in), ``bias`` (out,) or None."""

    weight: np.ndarray
    bias: np.ndarray | None = None
    kind: ClassVar[str] = "linear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight", _arr(self.weight))
        if self.bias is not None:
            object.__setattr__(self, "bias", _arr(self.bias))


@dataclass(frozen=True, eq=False)
class Conv2d(Node):
    """2-D convolution (cross-correlation, as torch).

    ``weight`` (C_out, C_in / groups, kh, kw); ``bias`` (C_out,) or None. Output size
    per axis: ``floor((H + 2p - d (k - 1) - 1) / s) + 1``.
    """

    weight: np.ndarray
    bias: np.ndarray | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    kind: ClassVar[str] = "conv2d"

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight", _arr(self.weight))
        if self.bias is not None:
            object.__setattr__(self, "bias", _arr(self.bias))
        for name in ("stride", "padding", "dilation"):
            object.__setattr__(self, name, _pair(getattr(self, name)))
        object.__setattr__(self, "groups", int(self.groups))


@dataclass(frozen=True, eq=False)
class Affine(Node):
    """Channel-wise ``y[c] = scale[c] * x[c] + shift[c]`` (a BatchNorm with nothing to fold into)."""

    scale: np.ndarray
    shift: np.ndarray
    kind: ClassVar[str] = "affine"

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", _arr(self.scale))
        object.__setattr__(self, "shift", _arr(self.shift))


@dataclass(frozen=True, eq=False)
class ReLU(Node):
    """``y = max(x, 0)`` (ANN graphs only)."""

    kind: ClassVar[str] = "relu"


@dataclass(frozen=True, eq=False)
class IF(Node):
    """Integrate-and-fire neurons; equations in the module docstring.

    ``threshold`` is a scalar (the converter folds scales into weights, so it is 1.0
    and spikes are exactly 0/1); ``v_init`` is the initial membrane as a fraction of
    the threshold.
    """

    threshold: float = 1.0
    reset: str = "subtract"
    v_init: float = 0.0
    kind: ClassVar[str] = "if"
    spiking: ClassVar[bool] = True
    RESETS: ClassVar[tuple[str, ...]] = ("subtract", "zero")

    def __post_init__(self) -> None:
        object.__setattr__(self, "threshold", float(self.threshold))
        object.__setattr__(self, "v_init", float(self.v_init))
        if self.reset not in self.RESETS:
            raise SnnError(f"unknown reset {self.reset!r}; valid: {', '.join(self.RESETS)}")
        if not self.threshold > 0:
            raise SnnError(f"IF threshold must be > 0, got {self.threshold}")
        if not 0.0 <= self.v_init < 1.0:
            raise SnnError(f"IF v_init must be in [0, 1) (a fraction of the threshold), got {self.v_init}")


@dataclass(frozen=True, eq=False)
class AvgPool2d(Node):
    """Average pooling; zero padding counted in the divisor (torch's default)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    kind: ClassVar[str] = "avgpool2d"

    def __post_init__(self) -> None:
        for name in ("kernel", "stride", "padding"):
            object.__setattr__(self, name, _pair(getattr(self, name)))


@dataclass(frozen=True, eq=False)
class MaxPool2d(Node):
    """Max pooling (padding with -inf); on spikes, the cumulative-count rule above."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    kind: ClassVar[str] = "maxpool2d"

    def __post_init__(self) -> None:
        for name in ("kernel", "stride", "padding", "dilation"):
            object.__setattr__(self, name, _pair(getattr(self, name)))


@dataclass(frozen=True, eq=False)
class Flatten(Node):
    """Reshape a sample to one axis, ``(C, H, W) -> (C*H*W,)``."""

    kind: ClassVar[str] = "flatten"


@dataclass(frozen=True, eq=False)
class Reshape(Node):
    """Reshape a sample to ``shape`` (same number of elements, C order)."""

    shape: tuple[int, ...]
    kind: ClassVar[str] = "reshape"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))


@dataclass(frozen=True, eq=False)
class Add(Node):
    """``y = sum_k gains[k] * x_k``; ``gains`` (n_inputs, C) per channel (axis 0 of a sample).

    In an ANN graph the gains are all ones; the converter sets them so that inputs of
    different scales (a spike train and a current, say) add in the same units.
    """

    gains: np.ndarray
    kind: ClassVar[str] = "add"

    def __post_init__(self) -> None:
        g = _arr(self.gains)
        if g.ndim != 2:
            raise SnnError(f"Add gains must be (n_inputs, channels), got shape {g.shape}")
        object.__setattr__(self, "gains", g)


@dataclass(frozen=True, eq=False)
class Concat(Node):
    """Concatenate the inputs along the channel axis (axis 0 of a sample)."""

    kind: ClassVar[str] = "concat"


@dataclass(frozen=True, eq=False)
class Readout(Node):
    """Non-spiking output integrator (SNN graphs): reports the mean input so far."""

    kind: ClassVar[str] = "readout"


NODE_TYPES: dict[str, type[Node]] = {
    cls.kind: cls
    for cls in (Input, Linear, Conv2d, Affine, ReLU, IF, AvgPool2d, MaxPool2d, Flatten,
                Reshape, Add, Concat, Readout)
}


# --------------------------------------------------------------------------- shapes
def _conv_out(size: int, k: int, s: int, p: int, d: int = 1) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def output_shape(node: Node, in_shapes: list[tuple[int, ...]], name: str = "?") -> tuple[int, ...]:
    """Per-sample output shape of ``node`` given its input shapes; raises on mismatch."""

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise SnnError(f"node {name!r} ({node.kind}): {msg}")

    if isinstance(node, Input):
        return node.shape
    if isinstance(node, Concat):
        need(len(in_shapes) >= 1 and len({s[1:] for s in in_shapes}) == 1,
             f"inputs {in_shapes} differ outside the channel axis")
        return (sum(s[0] for s in in_shapes),) + in_shapes[0][1:]
    if isinstance(node, Add):
        need(len(set(in_shapes)) == 1, f"inputs have different shapes {in_shapes}")
        need(node.gains.shape == (len(in_shapes), in_shapes[0][0]),
             f"gains shape {node.gains.shape} does not match {len(in_shapes)} inputs of {in_shapes[0][0]} channels")
        return in_shapes[0]
    need(len(in_shapes) == 1, f"expects one input, got {len(in_shapes)}")
    (s,) = in_shapes
    if isinstance(node, Linear):
        need(len(s) == 1 and s[0] == node.weight.shape[1],
             f"input shape {s} does not match weight {node.weight.shape}")
        need(node.bias is None or node.bias.shape == (node.weight.shape[0],), "bad bias shape")
        return (node.weight.shape[0],)
    if isinstance(node, Conv2d):
        need(len(s) == 3, f"needs (C, H, W) input, got {s}")
        co, ci_g, kh, kw = node.weight.shape
        need(s[0] == ci_g * node.groups and co % node.groups == 0,
             f"input channels {s[0]} do not match weight {node.weight.shape} with groups={node.groups}")
        need(node.bias is None or node.bias.shape == (co,), "bad bias shape")
        h = _conv_out(s[1], kh, node.stride[0], node.padding[0], node.dilation[0])
        w = _conv_out(s[2], kw, node.stride[1], node.padding[1], node.dilation[1])
        need(h > 0 and w > 0, f"kernel larger than padded input {s}")
        return (co, h, w)
    if isinstance(node, Affine):
        need(node.scale.shape == (s[0],) and node.shift.shape == (s[0],),
             f"scale/shift of {node.scale.shape} for {s[0]} channels")
        return s
    if isinstance(node, (ReLU, IF, Readout)):
        return s
    if isinstance(node, (AvgPool2d, MaxPool2d)):
        need(len(s) == 3, f"needs (C, H, W) input, got {s}")
        d = getattr(node, "dilation", (1, 1))
        h = _conv_out(s[1], node.kernel[0], node.stride[0], node.padding[0], d[0])
        w = _conv_out(s[2], node.kernel[1], node.stride[1], node.padding[1], d[1])
        need(h > 0 and w > 0, f"window larger than input {s}")
        return (s[0], h, w)
    if isinstance(node, Flatten):
        return (int(np.prod(s)),)
    if isinstance(node, Reshape):
        need(int(np.prod(s)) == int(np.prod(node.shape)), f"cannot reshape {s} to {node.shape}")
        return node.shape
    raise SnnError(f"node {name!r}: unknown node type {type(node).__name__}")


# --------------------------------------------------------------------------- graph
@dataclass
class Graph:
    """Named nodes in topological order, edges ``(source, target)``, one input, one output.

    ``shapes`` (per-sample output shape of every node) is computed and checked on
    construction, so a graph that exists is a valid graph.
    """

    nodes: dict[str, Node]
    edges: list[tuple[str, str]]
    input: str
    output: str
    shapes: dict[str, tuple[int, ...]] = field(init=False)

    def __post_init__(self) -> None:
        self.edges = [(str(a), str(b)) for a, b in self.edges]
        self.shapes = self._check()

    def _check(self) -> dict[str, tuple[int, ...]]:
        names = list(self.nodes)
        if self.input not in self.nodes or not isinstance(self.nodes[self.input], Input):
            raise SnnError(f"graph input {self.input!r} is not an Input node")
        if self.output not in self.nodes:
            raise SnnError(f"graph output {self.output!r} is not a node")
        pos = {n: i for i, n in enumerate(names)}
        for a, b in self.edges:
            if a not in pos or b not in pos:
                raise SnnError(f"edge ({a!r}, {b!r}) names a missing node")
            if pos[a] >= pos[b]:
                raise SnnError(f"edge ({a!r}, {b!r}) goes against the topological node order")
        shapes: dict[str, tuple[int, ...]] = {}
        for n in names:
            ins = self.inputs_of(n)
            node = self.nodes[n]
            if isinstance(node, Input) != (len(ins) == 0):
                raise SnnError(f"node {n!r} ({node.kind}) has {len(ins)} inputs")
            shapes[n] = output_shape(node, [shapes[i] for i in ins], n)
        return shapes

    def inputs_of(self, name: str) -> list[str]:
        """Sources of the edges into ``name``, in edge order."""
        return [a for a, b in self.edges if b == name]

    def consumers_of(self, name: str) -> list[str]:
        return [b for a, b in self.edges if a == name]

    def spiking_nodes(self) -> list[str]:
        """Names of nodes whose output is a 0/1 spike train: IF layers, and max-pools,
        flattens, reshapes and concatenations whose inputs are all spike trains."""
        out: list[str] = []
        for n, node in self.nodes.items():
            if node.spiking or (isinstance(node, (MaxPool2d, Flatten, Reshape, Concat))
                                and all(i in out for i in self.inputs_of(n))):
                out.append(n)
        return out

    def recorded_nodes(self) -> list[str]:
        """Nodes whose spikes a backend records: IF layers and max-pools of spikes (the
        nodes that emit new spike trains; flatten/reshape/concat only re-index them)."""
        return [n for n in self.spiking_nodes() if isinstance(self.nodes[n], (IF, MaxPool2d))]


def write_graph(g: "h5py.Group", graph: Graph) -> None:  # noqa: F821
    """Store ``graph`` in an open h5py group: one subgroup per node, in order."""
    g.attrs["ir_version"] = IR_VERSION
    g.attrs["input"] = graph.input
    g.attrs["output"] = graph.output
    g.attrs["order"] = json.dumps(list(graph.nodes))
    g.attrs["edges"] = json.dumps(graph.edges)
    for i, (name, node) in enumerate(graph.nodes.items()):
        ng = g.create_group(f"n{i:05d}")
        ng.attrs["name"] = name
        ng.attrs["kind"] = node.kind
        for f in fields(node):
            v = getattr(node, f.name)
            if isinstance(v, np.ndarray):
                ng.create_dataset(f.name, data=v)
            elif v is None:
                ng.attrs[f.name] = "__none__"
            else:
                ng.attrs[f.name] = json.dumps(v)


def read_graph(g: "h5py.Group") -> Graph:  # noqa: F821
    version = int(g.attrs.get("ir_version", -1))
    if version != IR_VERSION:
        raise SnnError(f"unsupported IR version {version} (this snn reads version {IR_VERSION})")
    order = json.loads(g.attrs["order"])
    nodes: dict[str, Node] = {}
    for i, name in enumerate(order):
        ng = g[f"n{i:05d}"]
        kind = ng.attrs["kind"]
        cls = NODE_TYPES.get(kind)
        if cls is None:
            raise SnnError(f"node {name!r} has unknown kind {kind!r}")
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in ng:
                kw[f.name] = ng[f.name][()]
            elif f.name in ng.attrs:
                raw = ng.attrs[f.name]
                kw[f.name] = None if raw == "__none__" else json.loads(raw)
        nodes[name] = cls(**kw)
    return Graph(nodes=nodes, edges=[tuple(e) for e in json.loads(g.attrs["edges"])],
                 input=str(g.attrs["input"]), output=str(g.attrs["output"]))


# --------------------------------------------------------------------------- evaluation
def _pad(x: np.ndarray, p: tuple[int, int], value: float = 0.0) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])), constant_values=value)


def _windows(x: np.ndarray, k: tuple[int, int], s: tuple[int, int], d: tuple[int, int]) -> np.ndarray:
    """(N, C, H, W) -> (N, C, Ho, Wo, kh, kw) strided windows."""
    span = (d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1)
    v = np.lib.stride_tricks.sliding_window_view(x, span, axis=(2, 3))
    return v[:, :, ::s[0], ::s[1], ::d[0], ::d[1]]


def eval_node(node: Node, xs: list[np.ndarray]) -> np.ndarray:
    """Evaluate one ANN node on a batch in float64 (``IF`` acts as ReLU, ``Readout`` as identity)."""
    if isinstance(node, Linear):
        y = xs[0] @ node.weight.T
        return y + node.bias if node.bias is not None else y
    if isinstance(node, Conv2d):
        x = _pad(xs[0], node.padding)
        g = node.groups
        co, cig, kh, kw = node.weight.shape
        win = _windows(x, (kh, kw), node.stride, node.dilation)  # N, C, Ho, Wo, kh, kw
        n, _, ho, wo = win.shape[:4]
        win = win.reshape(n, g, cig, ho, wo, kh, kw)
        w = node.weight.reshape(g, co // g, cig, kh, kw)
        y = np.einsum("ngchwij,gocij->ngohw", win, w, optimize=True).reshape(n, co, ho, wo)
        return y + node.bias[None, :, None, None] if node.bias is not None else y
    if isinstance(node, Affine):
        shp = (1, -1) + (1,) * (xs[0].ndim - 2)
        return xs[0] * node.scale.reshape(shp) + node.shift.reshape(shp)
    if isinstance(node, (ReLU, IF)):
        return np.maximum(xs[0], 0.0)
    if isinstance(node, AvgPool2d):
        return _windows(_pad(xs[0], node.padding), node.kernel, node.stride, (1, 1)).mean(axis=(4, 5))
    if isinstance(node, MaxPool2d):
        x = _pad(xs[0], node.padding, -np.inf)
        return _windows(x, node.kernel, node.stride, node.dilation).max(axis=(4, 5))
    if isinstance(node, Flatten):
        return xs[0].reshape(len(xs[0]), -1)
    if isinstance(node, Reshape):
        return xs[0].reshape((len(xs[0]),) + node.shape)
    if isinstance(node, Add):
        shp = (-1,) + (1,) * (xs[0].ndim - 2)
        return sum(g.reshape(shp) * x for g, x in zip(node.gains, xs))
    if isinstance(node, Concat):
        return np.concatenate(xs, axis=1)
    if isinstance(node, Readout):
        return xs[0]
    raise SnnError(f"cannot evaluate node type {node.kind}")


def evaluate(graph: Graph, x: np.ndarray, keep: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Float64 reference evaluation of an ANN graph on a batch ``x`` (N, *input shape).

    Returns ``{"output": y}`` plus the outputs of the nodes named in ``keep``.
    """
    keep = set(keep)
    x = np.asarray(x, dtype=np.float64)
    if x.shape[1:] != graph.shapes[graph.input]:
        raise SnnError(f"input of shape {x.shape[1:]} per sample, graph expects {graph.shapes[graph.input]}")
    vals: dict[str, np.ndarray] = {}
    remaining = {n: len(graph.consumers_of(n)) for n in graph.nodes}
    out: dict[str, np.ndarray] = {}
    for name, node in graph.nodes.items():
        ins = graph.inputs_of(name)
        vals[name] = x if isinstance(node, Input) else eval_node(node, [vals[i] for i in ins])
        if name in keep:
            out[name] = vals[name]
        for i in ins:
            remaining[i] -= 1
            if remaining[i] == 0 and i != graph.output:
                del vals[i]
    out["output"] = vals[graph.output]
    return out


def node_to_dict(node: Node) -> dict[str, Any]:
    """Parameters of a node as a plain dict (for messages and reports)."""
    return {f.name: getattr(node, f.name) for f in dataclasses.fields(node)}
