"""Operation counts of a spiking network and of the ANN it came from (tier 1 of the
energy model, DESIGN.md rule 4): a pure function of the graphs and the spike counts.

Definitions (per inference, i.e. per sample; ``T`` timesteps)
---------------------------------------------------------------
*Synaptic layer*: a ``Linear``, ``Conv2d``, ``Affine`` or ``Add`` node. A spike of
neuron ``i`` of a spike source ``S`` (an IF layer, a max-pool of spikes, or the input
under Poisson encoding) travels through re-indexing nodes (``Flatten``, ``Reshape``,
``Concat``) and pooling of spikes (``AvgPool2d``) to the first synaptic layer ``W`` on
each path, and costs there

    SynOps(W) = sum_t sum_i s_S[t, i] * fanout_{S->W}[i]

where ``fanout_{S->W}[i]`` is the number of distinct outputs of ``W`` that the spike
reaches through the composite path over non-zero weights (the synapses a chip holds;
NeuroBench counts the same): ``Linear``: non-zero entries of the weight column;
``Conv2d``: ``sum_{co, ky, kx} [w[co, ci, ky, kx] != 0] * [tap (ky, kx) of some output
reads i]``, exact at borders, for any stride, padding, dilation and groups (with all
weights non-zero: output channels of the group x output positions whose window covers
``i``, the "transposed convolution of ones"); ``Affine``: 1 (0 for a zero scale);
``Add``: 1 per input the spike enters (a residual spike enters through its per-channel
gain); after an ``AvgPool2d`` the distinct targets of all pool windows covering ``i``
(a union, not a sum, when windows overlap; structural, zero weights included, except
for a ``Linear`` after the pool). ``spike_connections`` is the structural count (every
weight, as a dense GPU computes it). A ``MaxPool2d`` of spikes only routes spikes: 0 SynOps; its output spikes are
recorded and are a source in their own right. When one spike reaches a layer by several
paths (a residual block's two branches, a spike source concatenated twice), the fan-outs
of the paths add.

*How the maps are computed* (exact, per layer, never per pair of channels): a path from
a source to a layer keeps, per axis, how the source's index moves: the channel axis by an
offset (a concatenation), each spatial axis by a small boolean relation (image side x
image side) that pooling, upsampling and padding compose. A convolution's map is the
transposed convolution of ones in closed form, separable along the axes: the number of
outputs whose window covers a position is a product of per-axis counts (computed once
per axis geometry), and with zero weights a depthwise sum of each input channel's
non-zero taps over the per-axis tap matrices.

*Analog input* (``encoding="constant"``): the first synaptic layer sees the same analog
input at every step; the backend computes it once, so it costs
``input_macs`` = its structural connections, multiply-accumulates once per inference
(dense), and ``input_macs_effective = mean over samples of sum_{i: x_i != 0} fanout[i]``
when the inputs ``x`` are given.

*Current-fed layers*: a ``Linear``/``Conv2d`` whose input is a current (a synaptic
layer's output, not spikes) computes every connection at every step:
``current_macs = connections * T`` (``* 1`` when its input is constant over time).
Element-wise ``Affine``/``Add`` on currents are part of the dendritic sum: not counted.

*Neuron updates*: every ``IF`` and ``Readout`` neuron at every step (dense,
``neurons * T``); *active updates*: updates that emit a spike (= IF spikes).

*ANN MACs* (``net.ann``, BN folded): ``macs_dense`` = structural connections of every
``Linear``/``Conv2d``/``Affine`` (padding excluded); ``macs_effective`` = connections
from non-zero inputs through non-zero weights (sparsity-aware hardware), measured on ``x``. Element-wise
adds and pooling of the ANN are not counted as MACs.

*Memory* (accesses per inference): derived from these counts by the memory model of
:class:`snn.energy.totals.Totals`, written once there.

*GPU work* (:func:`fused_kernels`): a dense processor runs a synaptic layer and the
element-wise nodes after it (activation, IF update, residual add) as one kernel, so an
intermediate output is not written twice; ``ann_io_elements`` and
``snn_io_elements_per_step`` are the tensor elements those kernels read and write.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from snn import ir
from snn.energy.totals import LayerLoad, Totals
from snn.errors import SnnError
from snn.util import made_once

Shape = tuple[int, ...]


# --------------------------------------------------------------------------- 1-D connectivity
def tap_matrix(n_in: int, n_out: int, k: int, s: int, p: int, d: int = 1) -> np.ndarray:
    """Boolean (k, n_in): ``A[m, i]`` when kernel tap ``m`` of some output reads input ``i``,
    i.e. ``o = (i + p - d m) / s`` is an integer in ``0..n_out-1`` (that ``o`` is unique, so
    ``A.sum(axis=0)[i]`` is the number of outputs whose window covers ``i``: the transposed
    convolution of ones along this axis)."""
    q = np.arange(n_in)[None, :] + p - d * np.arange(k)[:, None]
    return (q % s == 0) & (q >= 0) & (q // s < n_out)


def window_matrix(n_in: int, n_out: int, k: int, s: int, p: int, d: int = 1) -> np.ndarray:
    """Boolean (n_out, n_in): ``M[o, i]`` is True when input ``i`` lies in output ``o``'s
    window ``{o*s - p + d*m : m = 0..k-1}`` (padding positions fall outside ``0..n_in-1``).
    One spatial axis only (sizes of an image side)."""
    m = np.zeros((n_out, n_in + 1), dtype=bool)  # column n_in collects the padding positions
    idx = np.arange(n_out)[:, None] * s - p + d * np.arange(k)[None, :]  # (n_out, k)
    m[np.arange(n_out)[:, None], np.where((idx >= 0) & (idx < n_in), idx, n_in)] = True
    return m[:, :n_in]


def _taps(node: ir.Node, in_shape: Shape, out_shape: Shape) -> list[np.ndarray]:
    """One :func:`tap_matrix` per spatial axis of a convolution."""
    g = ir.spatial(node)
    return [tap_matrix(in_shape[1 + a], out_shape[1 + a], g["kernel"][a], g["stride"][a], g["padding"][a],
                       g["dilation"][a]) for a in range(len(g["kernel"]))]


def _windows(node: ir.Node, in_shape: Shape, out_shape: Shape) -> list[np.ndarray]:
    """One :func:`window_matrix` per spatial axis of a convolution or pooling node."""
    g = ir.spatial(node)
    return [window_matrix(in_shape[1 + a], out_shape[1 + a], g["kernel"][a], g["stride"][a], g["padding"][a],
                          g["dilation"][a]) for a in range(len(g["kernel"]))]


def _compose(m: np.ndarray, f: np.ndarray | None) -> np.ndarray:
    """Boolean relation product along one spatial axis: ``(m o f)[o, j] = any_i m[o, i] f[i, j]``
    (``f`` None: the identity). Exact in float32 (at most ``n_in`` < 2**24 terms)."""
    return m if f is None else (m.astype(np.float32) @ f.astype(np.float32)) > 0


def _outer(counts: list[np.ndarray]) -> np.ndarray:
    """``out[i0, i1, ...] = prod_a counts[a][i_a]`` (int64)."""
    out = np.ones((), dtype=np.int64)
    for c in counts:
        out = np.multiply.outer(out, np.asarray(c, dtype=np.int64))
    return out


# --------------------------------------------------------------------------- composite paths
@dataclass(frozen=True, eq=False)
class _Path:
    """Structural connectivity from a spike source to a node's output.

    Channel axis: source channel ``c`` reaches channel ``c + offset`` of ``channels`` (a
    concatenation shifts it, no route mixes channels). Spatial axis ``a``: a boolean
    ``(node axis x source axis)`` relation ``spatial[a]``, or None for the identity. Output
    element ``(c', a', b', ...)`` of the row space ``rows`` is reached from source element
    ``(c, a, b, ...)`` iff ``c' = c + offset`` and every ``spatial[k][a'_k, a_k]``.
    ``shape`` is the node's own shape, a C-order reshape of ``rows`` (a flatten or reshape
    changes the shape, not the relations); ops that need the spatial layout (pooling, a
    convolution after pooling, concatenation) need the two to agree (``aligned``).
    """

    source: Shape
    offset: int
    channels: int
    spatial: tuple[np.ndarray | None, ...]
    shape: Shape

    @staticmethod
    def identity(shape: Shape) -> "_Path":
        return _Path(tuple(shape), 0, shape[0], (None,) * (len(shape) - 1), tuple(shape))

    @property
    def rows(self) -> Shape:
        return (self.channels,) + tuple(n if f is None else f.shape[0] for n, f in zip(self.source[1:], self.spatial))

    @property
    def aligned(self) -> bool:
        return self.rows == self.shape

    @property
    def is_identity(self) -> bool:
        return self.offset == 0 and self.rows == self.source and all(f is None for f in self.spatial)

    def reached(self) -> np.ndarray:
        """Per source neuron (source shape): number of distinct node outputs reached."""
        counts = [np.ones(self.source[0], dtype=np.int64)]
        counts += [np.ones(n, dtype=np.int64) if f is None else f.sum(axis=0) for n, f in zip(self.source[1:],
                                                                                           self.spatial)]
        return _outer(counts)

    def selection(self) -> tuple[np.ndarray, ...] | None:
        """If the path is an index map (each source element reaches exactly one element,
        no two the same): the row of each source index per axis; else None."""
        sel = [self.offset + np.arange(self.source[0])]
        for n, f in zip(self.source[1:], self.spatial):
            if f is None:
                sel.append(np.arange(n))
            elif (f.sum(axis=0) == 1).all() and not (f.sum(axis=1) > 1).any():
                sel.append(f.argmax(axis=0))
            else:
                return None
        return tuple(sel)

    def step(self, shape: Shape, maps: list[np.ndarray]) -> "_Path":
        """Through a node that maps each spatial axis by a boolean (out, in) relation."""
        return _Path(self.source, self.offset, self.channels,
                     tuple(_compose(m, f) for m, f in zip(maps, self.spatial)), shape)


class _Refused(Exception):
    """A path a rule cannot follow; turned into an :class:`SnnError` naming the node."""


def _need_aligned(path: _Path, rank: int | None = None) -> None:
    if not path.aligned:
        raise _Refused(f"its input is a reshape ({path.shape}) of a spike source laid out as {path.rows}")
    if rank is not None and len(path.spatial) != rank:
        raise _Refused(f"a {rank}-D spatial op on a spike source with {len(path.spatial) + 1} axes")


# --------------------------------------------------------------------------- the rules
@dataclass(frozen=True)
class Synapse:
    """A node whose inputs reach its outputs through weights (a spike costs SynOps here).

    ``connections(node, in_shapes, shape)``: structural connections from all inputs
    (padding excluded). ``nonzero(node, in_shape, shape, slot)``: fan-out map (input shape)
    through the non-zero weights only, the synapses a chip holds. ``structural(...)``: the
    same through every weight. ``pooled(path, node, in_shape, shape)``: structural fan-out
    per source neuron through a path that is not an index map (after pooling).
    ``ann_mac``: counted as ANN MACs; ``current_mac``: counted as MACs (every connection,
    every step) when fed by a current instead of spikes. Element-wise ``Affine``/``Add`` on
    currents are part of the dendritic sum.
    """

    connections: Callable[[ir.Node, list[Shape], Shape], int]
    nonzero: Callable[[ir.Node, Shape, Shape, int], np.ndarray]
    structural: Callable[[ir.Node, Shape, Shape, int], np.ndarray]
    pooled: Callable[[_Path, ir.Node, Shape, Shape], np.ndarray]
    ann_mac: bool
    current_mac: bool


@dataclass(frozen=True)
class Route:
    """A node that moves or pools values without weights: ``step(path, node, in_shapes,
    shape, slot)`` extends a spike path through it (0 SynOps). ``view``: a re-indexing
    that a GPU does without a kernel (no tensor traffic)."""

    step: Callable[[_Path, ir.Node, list[Shape], Shape, int], _Path]
    view: bool = False


@dataclass(frozen=True)
class Neuron:
    """A neuron layer (IF, readout; ReLU in an ANN): one update per neuron and step."""


ENERGY = ir.Table("the energy model")
"""One counting rule per node type: :class:`Synapse`, :class:`Route` or :class:`Neuron`."""


def _linear_connections(node: ir.Linear, ins: list[Shape], shape: Shape) -> int:
    return int(node.weight.size)


def _linear_nonzero(node: ir.Linear, in_shape: Shape, shape: Shape, slot: int) -> np.ndarray:
    return np.count_nonzero(node.weight, axis=0).reshape(in_shape).astype(np.int64)


def _linear_structural(node: ir.Linear, in_shape: Shape, shape: Shape, slot: int) -> np.ndarray:
    return np.full(in_shape, node.weight.shape[0], dtype=np.int64)


def _linear_pooled(path: _Path, node: ir.Linear, in_shape: Shape, shape: Shape) -> np.ndarray:
    return np.where(path.reached() > 0, node.weight.shape[0], 0).astype(np.int64)


def _linear_pooled_nonzero(path: _Path, node: ir.Linear, chunk: int = 1 << 22) -> np.ndarray:
    """Per source neuron, the rows of ``node`` with a non-zero weight on any input the
    pooled path reaches (a union, not a sum). Source positions with the same reached set
    along an axis (every position, under a global pool) are computed once: the relation's
    distinct columns; channels in chunks of about ``chunk`` weights."""
    w = (node.weight != 0).reshape((-1,) + path.rows)[:, path.offset:path.offset + path.source[0]]
    inverse = []
    for a, f in enumerate(path.spatial):
        if f is None:
            inverse.append(np.arange(w.shape[2 + a]))
            continue
        pats, inv = np.unique(f, axis=1, return_inverse=True)
        inverse.append(inv.reshape(-1))
        per = max(1, chunk // (w[:, :1].size // w.shape[2 + a] * pats.shape[1]))  # channels per chunk
        parts = [np.moveaxis(_compose(np.moveaxis(w[:, c:c + per], 2 + a, -1), pats), -1, 2 + a)
                 for c in range(0, w.shape[1], per)]
        w = np.concatenate(parts, axis=1)
    counts = w.sum(axis=0, dtype=np.int64)
    return counts[np.ix_(np.arange(counts.shape[0]), *inverse)]


ENERGY[ir.Linear] = Synapse(_linear_connections, _linear_nonzero, _linear_structural, _linear_pooled,
                            ann_mac=True, current_mac=True)


def _conv_connections(node: ir.Conv2d, ins: list[Shape], shape: Shape) -> int:
    """``c_out * c_in / groups * prod_axes (taps of outputs that fall inside the input)``."""
    n = int(node.weight.shape[0]) * int(node.weight.shape[1])
    for a in _taps(node, ins[0], shape):
        n *= int(a.sum())
    return n


@functools.lru_cache(maxsize=1024)
def _coverage(n_in: int, n_out: int, k: int, s: int, p: int, d: int) -> np.ndarray:
    """Per input position of one axis, the outputs whose window covers it (int64, read-only;
    computed once per axis geometry)."""
    out = tap_matrix(n_in, n_out, k, s, p, d).sum(axis=0, dtype=np.int64)
    out.flags.writeable = False
    return out


def _conv_structural(node: ir.Conv2d, in_shape: Shape, shape: Shape, slot: int) -> np.ndarray:
    """The transposed convolution of ones, in closed form: output channels of the group x,
    per spatial axis, the outputs whose window covers the position (:func:`_coverage`)."""
    g = ir.spatial(node)
    counts = [np.full(in_shape[0], node.weight.shape[0] // node.groups)]
    counts += [_coverage(in_shape[1 + a], shape[1 + a], g["kernel"][a], g["stride"][a], g["padding"][a],
                         g["dilation"][a]) for a in range(len(g["kernel"]))]
    return _outer(counts)


def _conv_nonzero(node: ir.Conv2d, in_shape: Shape, shape: Shape, slot: int) -> np.ndarray:
    """The transposed convolution of ones through the non-zero weights: per input channel
    ``ci``, ``F[ci, y, x] = sum_{ky, kx} NZ[ci, ky, kx] A_y[ky, y] A_x[kx, x]`` with
    ``NZ[ci, taps] = sum_{co in ci's group} [w[co, ci, taps] != 0]`` and ``A`` the
    :func:`tap_matrix` of each axis (a depthwise transposed convolution of ones with
    kernel ``NZ``, separable along the axes). All weights non-zero: the structural map."""
    if np.all(node.weight):
        return _conv_structural(node, in_shape, shape, slot)
    co, cig = node.weight.shape[:2]
    kernel = node.weight.shape[2:]
    nz = (node.weight != 0).reshape((node.groups, co // node.groups, cig) + kernel).sum(axis=1, dtype=np.int64)
    out = nz.reshape((node.groups * cig,) + kernel)
    for taps in _taps(node, in_shape, shape):  # contract the leading tap axis; its positions go last
        out = np.moveaxis(out, 1, -1) @ taps.astype(np.int64)
    return out.reshape(in_shape)


def _conv_pooled(path: _Path, node: ir.Conv2d, in_shape: Shape, shape: Shape) -> np.ndarray:
    _need_aligned(path, len(shape) - 1)
    counts = [np.full(path.source[0], node.weight.shape[0] // node.groups)]
    counts += [_compose(m, f).sum(axis=0) for m, f in zip(_windows(node, in_shape, shape), path.spatial)]
    return _outer(counts)


ENERGY[ir.Conv2d] = ENERGY[ir.Conv1d] = Synapse(_conv_connections, _conv_nonzero, _conv_structural, _conv_pooled,
                                                ann_mac=True, current_mac=True)


def _elementwise_connections(node: ir.Node, ins: list[Shape], shape: Shape) -> int:
    return int(np.prod(shape)) * len(ins)


def _elementwise_nonzero(node: ir.Node, in_shape: Shape, shape: Shape, slot: int) -> np.ndarray:
    gain = node.scale if isinstance(node, ir.Affine) else node.gains[slot]
    return np.ones(in_shape, dtype=np.int64) * (gain != 0).reshape((-1,) + (1,) * (len(in_shape) - 1))


def _elementwise_structural(node: ir.Node, in_shape: Shape, shape: Shape, slot: int) -> np.ndarray:
    return np.ones(in_shape, dtype=np.int64)


def _elementwise_pooled(path: _Path, node: ir.Node, in_shape: Shape, shape: Shape) -> np.ndarray:
    return path.reached()


ENERGY[ir.Affine] = Synapse(_elementwise_connections, _elementwise_nonzero, _elementwise_structural,
                            _elementwise_pooled, ann_mac=True, current_mac=False)
ENERGY[ir.Add] = Synapse(_elementwise_connections, _elementwise_nonzero, _elementwise_structural,
                         _elementwise_pooled, ann_mac=False, current_mac=False)


def _reshape_step(path: _Path, node: ir.Node, ins: list[Shape], shape: Shape, slot: int) -> _Path:
    return dataclasses.replace(path, shape=shape)


def _concat_step(path: _Path, node: ir.Node, ins: list[Shape], shape: Shape, slot: int) -> _Path:
    _need_aligned(path)
    return dataclasses.replace(path, offset=path.offset + sum(s[0] for s in ins[:slot]), channels=shape[0],
                               shape=shape)


def _spatial_step(path: _Path, shape: Shape, maps: list[np.ndarray]) -> _Path:
    _need_aligned(path, len(shape) - 1)
    return path.step(shape, maps)


def _pool_step(path: _Path, node: ir.Node, ins: list[Shape], shape: Shape, slot: int) -> _Path:
    return _spatial_step(path, shape, _windows(node, ins[0], shape))


def _upsample_step(path: _Path, node: ir.Upsample, ins: list[Shape], shape: Shape, slot: int) -> _Path:
    return _spatial_step(path, shape, [np.arange(o)[:, None] // k == np.arange(i)[None, :]
                                       for o, i, k in zip(shape[1:], ins[0][1:], node.scale)])


def _pad_step(path: _Path, node: ir.Pad, ins: list[Shape], shape: Shape, slot: int) -> _Path:
    return _spatial_step(path, shape, [np.eye(o, i, k=-node.padding[2 * a], dtype=bool)
                                       for a, (o, i) in enumerate(zip(shape[1:], ins[0][1:]))])


ENERGY.register(ir.Flatten, ir.Reshape)(Route(_reshape_step, view=True))
ENERGY[ir.Concat] = Route(_concat_step)
ENERGY.register(ir.AvgPool2d, ir.MaxPool2d, ir.AvgPool1d, ir.MaxPool1d)(Route(_pool_step))
ENERGY[ir.Upsample] = Route(_upsample_step)
ENERGY[ir.Pad] = Route(_pad_step)
ENERGY.register(ir.IF, ir.Readout, ir.ReLU, ir.Clip)(Neuron())


def _rule(node: ir.Node, cls: type) -> Any:
    """The node's rule if it is a ``cls`` (Synapse, Route, Neuron), else None."""
    r = ENERGY.get(type(node))
    return r if isinstance(r, cls) else None


def _fanout(path: _Path, node: ir.Node, name: str, graph: ir.Graph, slot: int) -> tuple[np.ndarray, np.ndarray]:
    """(structural, non-zero-weight) distinct outputs of node ``name`` reached per source neuron."""
    in_shape = graph.shapes[graph.inputs_of(name)[slot]]
    shape = graph.shapes[name]
    rule = ENERGY[type(node)]
    if isinstance(rule, Neuron):
        return path.reached(), path.reached()
    if path.is_identity:  # the node reads the source as it is
        return (rule.structural(node, in_shape, shape, slot).reshape(path.source),
                rule.nonzero(node, in_shape, shape, slot).reshape(path.source))
    sel = path.selection()
    if sel is not None:  # an index map: read the node's own maps back, in the path's row layout
        maps = [m(node, in_shape, shape, slot).reshape(path.rows) for m in (rule.structural, rule.nonzero)]
        return tuple(m[np.ix_(*sel)] for m in maps)
    structural = rule.pooled(path, node, in_shape, shape)
    if isinstance(node, ir.Linear):  # after pooling: union of the non-zero rows over reached inputs
        return structural, _linear_pooled_nonzero(path, node)
    return structural, structural  # pooled path into conv/affine/add: structural (documented)


@dataclass
class _SourceFan:
    """Fan-out maps of one spike source, {synaptic node: int64 (source shape)}: through
    non-zero weights (``maps``, for SynOps) and structural (``dense``, every weight)."""

    maps: dict[str, np.ndarray] = field(default_factory=dict)
    dense: dict[str, np.ndarray] = field(default_factory=dict)
    routed_to: list[str] = field(default_factory=list)  # spike max-pools fed (routing, 0 SynOps)


def source_fanout(graph: ir.Graph, source: str, stop: set[str]) -> _SourceFan:
    """Walk every path from ``source`` to its first synaptic layers; ``stop`` holds the
    recorded spike nodes (a max-pool of spikes there is routing, not a synapse)."""
    fan = _SourceFan()
    stack = [(source, _Path.identity(graph.shapes[source]))]
    while stack:
        name, path = stack.pop()
        for c in dict.fromkeys(graph.consumers_of(name)):
            node = graph.nodes[c]
            ins = graph.inputs_of(c)
            for slot, i in enumerate(ins):
                if i != name:
                    continue
                try:
                    if c in stop and node.spike_route == "pool":
                        fan.routed_to.append(c)
                    elif isinstance(ENERGY.rule(node, c), (Synapse, Neuron)):
                        dense, nz = _fanout(path, node, c, graph, slot)
                        fan.maps[c] = fan.maps.get(c, 0) + nz
                        fan.dense[c] = fan.dense.get(c, 0) + dense
                    else:
                        stack.append((c, ENERGY[type(node)].step(path, node, [graph.shapes[k] for k in ins],
                                                                 graph.shapes[c], slot)))
                except _Refused as e:
                    raise SnnError(f"energy counting: node {c!r} ({node.kind}) on the path from {source!r}: "
                                   f"{e}") from None
    return fan


def connections(node: ir.Node, in_shapes: list[tuple[int, ...]], out_shape: tuple[int, ...]) -> int:
    """Structural connections of a synaptic node from all its inputs (padding excluded)."""
    rule = _rule(node, Synapse)
    return rule.connections(node, in_shapes, out_shape) if rule else 0


def nonzero_fanout(node: ir.Node, in_shape: tuple[int, ...], out_shape: tuple[int, ...], slot: int = 0
                   ) -> np.ndarray:
    """Fan-out map (input shape) through the non-zero weights only: the synapses a chip instantiates."""
    return ENERGY[type(node)].nonzero(node, in_shape, out_shape, slot)


def _params(node: ir.Node) -> int:
    return int(sum(np.asarray(getattr(node, f)).size for f in ("weight", "bias", "scale", "shift", "gains")
                   if isinstance(getattr(node, f, None), np.ndarray)))


def _zero_weights(node: ir.Node) -> tuple[int, int]:
    w = getattr(node, "weight", None)
    if w is None:
        w = getattr(node, "scale", None)
    if w is None:
        return 0, 0
    return int(w.size - np.count_nonzero(w)), int(w.size)


# --------------------------------------------------------------------------- GPU kernels
@dataclass(frozen=True)
class Kernel:
    """Nodes a GPU runs as one fused kernel, with the tensor elements it reads and writes."""

    nodes: tuple[str, ...]
    reads: int
    writes: int


def fused_kernels(graph: ir.Graph) -> list[Kernel]:
    """The kernels of one forward pass (one step) of ``graph`` with kernel fusion.

    A synaptic layer and the chain of element-wise nodes after it (an activation or IF
    update, an ``Affine``, an ``Add`` of a residual) that are each the only consumer of
    the one before are one kernel: intermediate outputs are never written (conv + BN +
    ReLU writes once; BN is already folded). Re-indexing nodes (``Flatten``, ``Reshape``)
    are views, not kernels. A kernel reads every input that comes from outside it and
    writes its last node's output.
    """
    size = {n: int(np.prod(s)) for n, s in graph.shapes.items()}
    owner: dict[str, int] = {}
    groups: list[list[str]] = []
    for n, node in graph.nodes.items():
        rule = ENERGY.get(type(node))
        if isinstance(node, ir.Input) or (isinstance(rule, Route) and rule.view):
            continue
        fusable = isinstance(rule, Neuron) or (isinstance(rule, Synapse) and not rule.current_mac)
        first = graph.inputs_of(n)[0]
        if fusable and first in owner and groups[owner[first]][-1] == first and graph.consumers_of(first) == [n]:
            groups[owner[first]].append(n)
            owner[n] = owner[first]
        else:
            owner[n] = len(groups)
            groups.append([n])
    out = []
    for g in groups:
        inside = set(g)
        reads = sum(size[i] for n in g for i in graph.inputs_of(n) if i not in inside)
        out.append(Kernel(tuple(g), reads, size[g[-1]]))
    return out


# --------------------------------------------------------------------------- the counts
@dataclass
class Counts:
    """Operation counts per inference: ``totals`` (:class:`Totals`), ``layers`` (one row
    per synaptic or neuron node), ``per_step`` (cumulative spike-dependent counts after
    each step, for the energy-vs-T curve), ``notes`` (what the counts assumed here)."""

    totals: Totals
    layers: list[dict[str, Any]]
    per_step: dict[str, np.ndarray] | None
    notes: list[str]


def _static_nodes(graph: ir.Graph, static_input: bool) -> set[str]:
    """Nodes whose value is the same at every step (computed once by the backends)."""
    out: set[str] = set()
    if not static_input:
        return out
    for n, node in graph.nodes.items():
        if isinstance(node, ir.Input) or (not _rule(node, Neuron)
                                          and graph.inputs_of(n) and all(i in out for i in graph.inputs_of(n))):
            out.add(n)
    return out


def _ann_counts(ann: ir.Graph | None, x: np.ndarray | None, max_samples: int, batch: int = 256
                ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per-node ANN MACs (dense, effective) and ReLU activation sparsity; totals, and the
    kernels of one forward pass."""
    rows: dict[str, dict[str, Any]] = {}
    tot: dict[str, Any] = {"macs_dense": 0, "macs_effective": None, "ann_neurons": 0, "ann_activation_writes": 0,
                           "ann_io_elements": 0, "ann_kernels": 0, "activation_sparsity": None}
    if ann is None:
        return rows, tot
    ir.check_supported(ann, ENERGY.kinds() + (ir.Input.kind,), ENERGY.interpreter)
    mac_nodes = [n for n, v in ann.nodes.items() if _rule(v, Synapse) and _rule(v, Synapse).ann_mac]
    relus = [n for n, v in ann.nodes.items() if isinstance(v, ir.ACTIVATIONS + (ir.IF,))]
    for n in mac_nodes:
        node = ann.nodes[n]
        ins = [ann.shapes[i] for i in ann.inputs_of(n)]
        rows[n] = {"macs_dense": connections(node, ins, ann.shapes[n]), "macs_effective": None}
    kernels = fused_kernels(ann)
    tot["macs_dense"] = sum(r["macs_dense"] for r in rows.values())
    tot["ann_neurons"] = int(sum(np.prod(ann.shapes[n]) for n in relus))
    tot["ann_activation_writes"] = int(sum(np.prod(ann.shapes[n]) for n in mac_nodes + relus))
    tot["ann_io_elements"] = sum(k.reads + k.writes for k in kernels)
    tot["ann_kernels"] = len(kernels)
    if x is None:
        return rows, tot
    xs = np.asarray(x, dtype=np.float64)[:max_samples]
    feeds = sorted({ann.inputs_of(n)[0] for n in mac_nodes})
    eff = {n: 0.0 for n in mac_nodes}
    zeros = {n: 0 for n in relus}
    fan = {n: nonzero_fanout(ann.nodes[n], ann.shapes[ann.inputs_of(n)[0]], ann.shapes[n]) for n in mac_nodes}
    for s in range(0, len(xs), batch):
        vals = ir.evaluate(ann, xs[s:s + batch], keep=set(feeds) | set(relus))
        for n in mac_nodes:
            nz = vals[ann.inputs_of(n)[0]] != 0
            eff[n] += float((nz * fan[n]).sum())
        for n in relus:
            zeros[n] += int((vals[n] == 0).sum())
    for n in mac_nodes:
        rows[n]["macs_effective"] = eff[n] / len(xs)
    for n in relus:
        rows.setdefault(n, {})["activation_sparsity"] = zeros[n] / (len(xs) * np.prod(ann.shapes[n]))
    tot["macs_effective"] = sum(eff.values()) / len(xs)
    tot["activation_sparsity"] = sum(zeros.values()) / (len(xs) * max(1, tot["ann_neurons"]))
    return rows, tot


def _loads(graph: ir.Graph, rows: dict[str, dict[str, Any]]) -> tuple[LayerLoad, ...]:
    """Per neuron layer, the synaptic events, ANN MACs and synapses of the synaptic layers
    that feed it (each synaptic layer is charged to the first neuron layer downstream)."""
    acc: dict[str, list[float]] = {n: [0.0, 0.0, 0] for n, v in graph.nodes.items() if _rule(v, Neuron)}
    for n, r in rows.items():
        if r["connections"] == 0:
            continue
        stack, seen = [n], set()
        while stack:
            c = stack.pop(0)
            if c in acc and c != n:
                a = acc[c]
                a[0] += r["synops"] + r["current_macs"]
                a[1] += r["macs_dense"]
                a[2] += r["connections"]
                break
            for k in graph.consumers_of(c):
                if k not in seen:
                    seen.add(k)
                    stack.append(k)
    return tuple(LayerLoad(n, int(np.prod(graph.shapes[n])), a[0], a[1], int(a[2])) for n, a in acc.items())


@dataclass(frozen=True)
class _Structure:
    """What counting needs of a graph that no simulation result changes: per spike source (and
    the input), each synaptic node it reaches with its fan-out map through non-zero weights
    (flat, int64) and its structural total, and the spiking max-pools it feeds; per synaptic
    node, its structural connections and (zero, all) weights; the fused kernels of one step."""

    flat: dict[str, list[tuple[str, np.ndarray, int]]]  # per source: (node, flat int64 map, structural total)
    routed: dict[str, list[str]]
    connections: dict[str, int]
    zero_weights: dict[str, tuple[int, int]]
    kernels: list[Kernel]


_STRUCTURES: dict[int, tuple[ir.Graph, _Structure]] = {}
STRUCTURES_KEPT = 4
"""Graphs whose :class:`_Structure` is kept for the next count (the most recent ones)."""


def _structure(graph: ir.Graph) -> _Structure:
    """The graph's :class:`_Structure`, made once per graph object and reused while it is among
    the last :data:`STRUCTURES_KEPT` counted (energy reports of several results, profiles or
    timesteps of one network; :func:`snn.util.made_once`). Like the snntorch backend's
    weights, it assumes the graph's arrays are not changed in place: a changed network is a
    new graph (``snn.quantize``, a new ``snn.convert``)."""
    return made_once(_STRUCTURES, id(graph), graph, lambda: _make_structure(graph), STRUCTURES_KEPT)


def _make_structure(graph: ir.Graph) -> _Structure:
    """:class:`_Structure` of ``graph``, made afresh."""
    stop = set(graph.recorded_nodes())
    fans = {s: source_fanout(graph, s, stop) for s in dict.fromkeys(graph.recorded_nodes() + [graph.input])}
    syn = {n: v for n, v in graph.nodes.items() if _rule(v, Synapse)}
    flat = {s: [(w, np.ascontiguousarray(m, dtype=np.int64).reshape(-1), int(f.dense[w].sum()))
                for w, m in f.maps.items()] for s, f in fans.items()}
    return _Structure(flat=flat, routed={s: f.routed_to for s, f in fans.items()},
                      connections={n: connections(v, [graph.shapes[i] for i in graph.inputs_of(n)], graph.shapes[n])
                                   for n, v in syn.items()},
                      zero_weights={n: _zero_weights(v) for n, v in syn.items()}, kernels=fused_kernels(graph))


def count_ops(graph: ir.Graph, spike_sums: dict[str, np.ndarray], step_sums: dict[str, np.ndarray] | None,
              n_samples: int, timesteps: int, encoding: str, ann: ir.Graph | None = None,
              x: np.ndarray | None = None, max_samples: int = 2000) -> Counts:
    """Count operations per inference (see the module docstring for every definition).

    ``spike_sums``/``step_sums``: as in :class:`snn.simulate.SimulationResult` (summed
    over samples). ``x`` (N, *input shape), optional: the simulated inputs, for effective
    MACs of the ANN and of the analog first layer (at most ``max_samples`` are used).
    """
    from snn.encode import is_static

    static_input = is_static(encoding)
    ir.check_supported(graph, ENERGY.kinds() + (ir.Input.kind,), ENERGY.interpreter)
    sources = graph.recorded_nodes() + ([] if static_input else [graph.input])
    if not spike_sums:
        raise SnnError("the simulation result recorded no spikes (simulated with record='none'?); "
                       "simulate with record='steps' (energy per step) or record='totals'")
    missing = [s for s in sources if s not in spike_sums]
    if missing:
        raise SnnError(f"the simulation result has no spike counts for {', '.join(missing)}; "
                       f"it holds {', '.join(spike_sums)} (was it simulated with this network and encoding?)")
    for s in sources:
        if spike_sums[s].shape != graph.shapes[s]:
            raise SnnError(f"spike counts of {s!r} have shape {spike_sums[s].shape}, node shape is {graph.shapes[s]}")
    N, T = int(n_samples), int(timesteps)
    stop = set(graph.recorded_nodes())
    statics = _static_nodes(graph, static_input)
    struct = _structure(graph)
    notes: list[str] = []

    syn: dict[str, float] = {}
    syn_t: dict[str, np.ndarray] = {}
    conn_spk: dict[str, int] = {}
    routed: dict[str, float] = {}
    by_step = {n: step_sums[n].reshape(T, -1).sum(axis=1) for n in stop if n in step_sums} \
        if step_sums is not None else {}  # per node, its spikes at each step (summed once)
    total = {n: float(by_step[n].sum()) if n in by_step else float(v.sum()) for n, v in spike_sums.items()}
    for s in sources:  # integer products: exact
        per_step = step_sums[s].reshape(T, -1) if step_sums is not None else None
        for w, m, dense in struct.flat[s]:
            conn_spk[w] = conn_spk.get(w, 0) + dense
            if per_step is None:
                syn[w] = syn.get(w, 0.0) + float(spike_sums[s].reshape(-1) @ m) / N
                continue
            st = per_step @ m  # the per-step events; their sum is the total's
            syn[w] = syn.get(w, 0.0) + float(st.sum()) / N
            syn_t[w] = syn_t.get(w, 0.0) + st.astype(np.float64) / N
        for p in struct.routed[s]:
            routed[p] = routed.get(p, 0.0) + total[s] / N

    # analog input (constant encoding): first synaptic layers, once per inference
    in_macs: dict[str, float] = {}
    in_macs_eff: dict[str, float | None] = {}
    if static_input:
        nz = None
        if x is not None:
            xs = np.asarray(x)[:max_samples]
            nz = (xs != 0).mean(axis=0).reshape(-1)
        for w, m, dense in struct.flat[graph.input]:
            in_macs[w] = float(dense)
            in_macs_eff[w] = float(nz @ m) if nz is not None else None
        notes.append("Constant (analog) input: the first synaptic layer(s) "
                     f"({', '.join(in_macs) or 'none'}) see the same input at every step; the backend computes "
                     "them once, so they are counted as MACs once per inference, not as SynOps.")
    else:
        notes.append(f"{encoding} input: input spikes are synaptic events of the first layer (SynOps).")

    spike_fed = set(syn) | set(in_macs)
    ann_rows, ann_tot = _ann_counts(ann, x, max_samples)
    layers: list[dict[str, Any]] = []
    syn_rows: dict[str, dict[str, Any]] = {}
    cur_macs = 0.0
    cur_macs_static = 0.0
    n_neurons = 0
    n_if = 0
    zero_weights = struct.zero_weights
    for n, node in graph.nodes.items():
        rule = ENERGY[type(node)] if not isinstance(node, ir.Input) else None
        if isinstance(rule, Synapse):
            conns = struct.connections[n]
            c_macs = 0.0
            if n not in spike_fed and rule.current_mac:
                c_macs = float(conns) * (1 if n in statics else T)
                notes.append(f"{n!r} ({node.kind}) is fed by a current, not spikes: counted as {conns} MACs "
                             f"{'once' if n in statics else 'per step'}.")
            cur_macs += c_macs
            cur_macs_static += c_macs if n in statics else 0.0
            zero_w, n_w = zero_weights[n]
            a = ann_rows.get(n, {})
            syn_rows[n] = {
                "node": n, "kind": node.kind, "synops": syn.get(n, 0.0), "input_macs": in_macs.get(n, 0.0),
                "input_macs_effective": in_macs_eff.get(n, 0.0 if n not in in_macs else None),
                "current_macs": c_macs, "connections": conns, "spike_connections": conn_spk.get(n, 0),
                "macs_dense": a.get("macs_dense", 0), "macs_effective": a.get("macs_effective"),
                "params": _params(node), "connection_sparsity": zero_w / n_w if n_w else None,
                "neurons": 0, "neuron_updates": 0, "spikes": 0.0, "firing_rate": None,
                "activation_sparsity": None, "routed_spikes": 0.0}
            layers.append(syn_rows[n])
        elif isinstance(rule, Neuron) or n in stop or (n == graph.input and not static_input):
            k = int(np.prod(graph.shapes[n]))
            is_neuron = isinstance(rule, Neuron)
            spikes = total[n] / N if n in spike_sums else 0.0
            n_neurons += k if is_neuron else 0
            n_if += k if isinstance(node, ir.IF) else 0
            layers.append({
                "node": n, "kind": node.kind, "synops": 0.0, "input_macs": 0.0, "input_macs_effective": 0.0,
                "current_macs": 0.0, "connections": 0, "spike_connections": 0, "macs_dense": 0,
                "macs_effective": None, "params": 0, "connection_sparsity": None,
                "neurons": k if is_neuron else 0, "neuron_updates": k * T if is_neuron else 0, "spikes": spikes,
                "firing_rate": spikes / (k * T) if n in spike_sums else None,
                "activation_sparsity": ann_rows.get(n, {}).get("activation_sparsity"),
                "routed_spikes": routed.get(n, 0.0) if node.spike_route == "pool" else 0.0})

    if_spikes = sum(total[n] / N for n in graph.nodes if isinstance(graph.nodes[n], ir.IF))
    synops = sum(syn.values())
    input_macs = sum(in_macs.values())
    eff_vals = list(in_macs_eff.values())
    zw = [zero_weights[n] for n, v in graph.nodes.items() if _rule(v, Synapse) and _rule(v, Synapse).ann_mac]
    kernels = struct.kernels
    per_step = [k for k in kernels if not set(k.nodes) <= statics]
    once = [k for k in kernels if set(k.nodes) <= statics]
    totals = Totals(
        timesteps=T, encoding=encoding, n_samples=N, synops=synops, input_macs=input_macs,
        input_macs_effective=(sum(eff_vals) if all(v is not None for v in eff_vals) else None) if static_input
        else 0.0,
        current_macs=cur_macs, current_macs_static=cur_macs_static, neurons=n_neurons, if_neurons=n_if,
        neuron_updates=n_neurons * T, active_updates=if_spikes,
        spikes=sum(total[n] / N for n in stop), routed_spikes=sum(routed.values()),
        firing_rate=if_spikes / (n_if * T) if n_if else 0.0, spike_connections=sum(conn_spk.values()),
        macs_dense=ann_tot["macs_dense"], macs_effective=ann_tot["macs_effective"],
        ann_neurons=ann_tot["ann_neurons"], activation_sparsity=ann_tot["activation_sparsity"],
        connection_sparsity=sum(z for z, _ in zw) / max(1, sum(n for _, n in zw)),
        ann_activation_writes=ann_tot["ann_activation_writes"], ann_io_elements=ann_tot["ann_io_elements"],
        ann_kernels=ann_tot["ann_kernels"],
        snn_io_elements_per_step=sum(k.reads + k.writes for k in per_step) + 2 * n_neurons,
        snn_io_elements_static=sum(k.reads + k.writes for k in once), snn_kernels_per_step=len(per_step),
        snn_kernels_static=len(once), params=sum(_params(v) for v in graph.nodes.values()),
        loads=_loads(graph, syn_rows))
    if synops == 0 and input_macs == 0:
        notes.append("No synaptic events: the network did not spike on these inputs.")

    steps = None
    if step_sums is not None:
        missing = [s for s in sources if s not in step_sums]
        if missing:
            raise SnnError(f"per-step spike counts missing for {', '.join(missing)}")
        syn_steps = sum(syn_t.values()) if syn_t else np.zeros(T)
        if_t = sum(by_step[n] if n in by_step else step_sums[n].reshape(T, -1).sum(axis=1) for n in graph.nodes
                   if isinstance(graph.nodes[n], ir.IF)) / N
        em_t = sum(by_step[n] for n in stop) / N
        steps = {"synops": np.cumsum(np.broadcast_to(syn_steps, (T,))),
                 "active_updates": np.cumsum(np.broadcast_to(if_t, (T,))),
                 "spikes": np.cumsum(np.broadcast_to(em_t, (T,)))}
    return Counts(totals=totals, layers=layers, per_step=steps, notes=notes)


def counts_at(counts: Counts, t: int) -> Totals:
    """The totals of a run stopped after ``t`` steps (1 <= t <= T), from the per-step
    cumulative counts (see :meth:`Totals.at_step`)."""
    if counts.per_step is None:
        raise SnnError("energy per timestep needs per-step spike counts: simulate with record='steps'")
    ps = counts.per_step
    return counts.totals.at_step(t, float(ps["synops"][t - 1]), float(ps["active_updates"][t - 1]),
                                 float(ps["spikes"][t - 1]))
