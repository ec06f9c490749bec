"""ANN -> SNN conversion: calibration, data-based normalisation, ReLU -> IF.

Method. Trace the model (:mod:`snn.trace`), run the calibration inputs through the ANN
graph and take, for every ReLU ``r``, an activation scale ``lambda_r``:

* ``"max"``: the largest activation (Diehl et al. 2015);
* ``"percentile"``: the ``percentile``-th percentile of the positive activations
  (Rueckauer et al. 2017; default 99.99), robust to outliers;
* ``channelwise=True``: the same per channel (axis 0 of a sample).

Every tensor of the SNN then represents an ANN tensor up to a per-channel factor ``f``
(``ann ~= f * snn``, as a rate for spike trains): ``f = 1`` for the input, ``f = lambda``
for the spikes of an IF layer. A Linear/Conv2d/Affine node with input factor ``f_in``
whose output feeds an IF layer of scale ``lambda`` (possibly through pooling, flatten or
concatenation) gets ``W'[o, i] = W[o, i] * f_in[i] / lambda[o]`` and ``b' = b / lambda``,
so the IF threshold is 1 and spikes are exactly 0/1; an ``Add`` gets per-input gains
``f_k / f_out``, which puts a residual spike train and a current in the same units. The
output layer keeps ``f = 1``: the readout is in the ANN's units. Where a scale cannot be
folded into a producer (an IF fed directly by another IF or by the input), an ``Affine``
rescaling node named ``<if name>.scale`` is inserted.

Max-pooling. A max-pool (1-D or 2-D) that feeds an activation is moved after it
(``relu(max(x)) = max(relu(x))``, as for any monotone activation), so it pools spikes; the spiking max-pool emits the increments of the
maximum cumulative spike count in each window (see :mod:`snn.ir`), whose rate is exactly
the maximum input rate: accuracy is kept and it is never average pooling in disguise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch

from snn import ir
from snn import ir_torch
from snn.errors import ConversionError
from snn.network import SpikingNetwork
from snn.trace import trace

METHODS = ("max", "percentile")


# --------------------------------------------------------------------------- calibration data
def _calibration_tensor(calibration: Any, limit: int | None) -> torch.Tensor:
    """A float32 (N, ...) tensor from a tensor, array, or iterable of batches (x or (x, y))."""
    if isinstance(calibration, (torch.Tensor, np.ndarray)):
        x = torch.as_tensor(np.asarray(calibration) if isinstance(calibration, np.ndarray) else calibration)
    elif isinstance(calibration, Iterable) and not isinstance(calibration, (str, bytes)):
        parts, n = [], 0
        for batch in calibration:
            xb = batch[0] if isinstance(batch, (tuple, list)) else batch
            try:
                xb = torch.as_tensor(np.asarray(xb, dtype=np.float32))
            except (TypeError, ValueError) as e:
                raise ConversionError(f"calibration batch is not numeric data ({e})") from e
            parts.append(xb)
            n += len(xb)
            if limit is not None and n >= limit:
                break
        if not parts:
            raise ConversionError("calibration data is empty")
        x = torch.cat(parts)
    else:
        raise ConversionError(f"calibration must be a tensor, array or DataLoader, got {type(calibration).__name__}")
    if limit is not None:
        x = x[:limit]
    if x.ndim < 2 or len(x) == 0:
        raise ConversionError(f"calibration data is empty or has no batch axis (shape {tuple(x.shape)})")
    x = x.detach().to("cpu", torch.float32)
    if not torch.isfinite(x).all():
        raise ConversionError("calibration data contains NaN or inf")
    return x


# --------------------------------------------------------------------------- canonical form
def _commute_maxpool_relu(g: ir.Graph) -> ir.Graph:
    """Rewrite ``X -> MaxPool -> ReLU`` (pool feeding only the ReLU) as ``X -> ReLU -> MaxPool``
    (exact for any monotone activation)."""
    for name, node in g.nodes.items():
        cons = g.consumers_of(name)
        if node.spike_route == "pool" and len(cons) == 1 and isinstance(g.nodes[cons[0]], ir.ACTIVATIONS):
            relu = cons[0]
            (src,) = g.inputs_of(name)
            order = list(g.nodes)
            i, j = order.index(name), order.index(relu)
            order[i], order[j] = relu, name
            edges = []
            for a, b in g.edges:
                if (a, b) == (src, name):
                    edges.append((src, relu))
                elif (a, b) == (name, relu):
                    edges.append((relu, name))
                elif a == relu:
                    edges.append((name, b))
                else:
                    edges.append((a, b))
            out = name if g.output == relu else g.output
            return _commute_maxpool_relu(ir.Graph({n: g.nodes[n] for n in order}, edges, g.input, out))
    return g


# --------------------------------------------------------------------------- scales
def _scales(g: ir.Graph, x: torch.Tensor, method: str, percentile: float, channelwise: bool,
            batch_size: int = 256) -> dict[str, np.ndarray]:
    """Per-channel activation scale ``lambda`` of every activation node (shape (C,)), before
    its :class:`Spike` rule's bound."""
    relus = [n for n, v in g.nodes.items() if isinstance(v, ir.ACTIVATIONS)]
    params = ir_torch.Params(g, "cpu", torch.float32)
    acts: dict[str, list[torch.Tensor]] = {n: [] for n in relus}
    for s in range(0, len(x), batch_size):
        vals = ir_torch.evaluate_ann(g, x[s:s + batch_size], keep=relus, params=params)
        for n in relus:
            a = vals[n]
            acts[n].append(a.transpose(0, 1).reshape(a.shape[1], -1) if channelwise else a.reshape(1, -1))
    q = 100.0 if method == "max" else percentile
    out = {}
    for n in relus:
        a = torch.cat(acts[n], dim=1).numpy()
        lam = np.zeros(a.shape[0])
        for c in range(a.shape[0]):
            pos = a[c][a[c] > 0]
            lam[c] = np.percentile(pos, q) if len(pos) else 0.0
        fallback = lam.max() if lam.max() > 0 else 1.0  # a channel that never fired: any scale works
        lam[lam <= 0] = fallback
        channels = g.shapes[n][0]
        out[n] = np.broadcast_to(lam, (channels,)).copy() if not channelwise else lam
    return out


def _broadcast_factor(f: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.broadcast_to(f.reshape((-1,) + (1,) * (len(shape) - 1)), shape)


def _as_channel(full: np.ndarray) -> np.ndarray | None:
    """Compress a full-shape factor to per-channel, or None if it varies within a channel."""
    flat = full.reshape(full.shape[0], -1)
    return flat[:, 0].copy() if np.allclose(flat, flat[:, :1]) else None


# --------------------------------------------------------------------------- rules
Shapes = list[tuple[int, ...]]


@dataclass(frozen=True)
class Spike:
    """An ANN activation: becomes a layer of IF neurons (threshold 1) whose spikes stand for
    ``lambda * rate``; ``bound(node, lam)`` is the scale used, from the calibrated ``lam``."""

    bound: Callable[[ir.Node, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Rescale:
    """A node with weights: rebuilt by ``fn(node, fins, fout)`` so that inputs carried at
    factors ``fins`` give an output at factor ``fout`` (``ann ~= f * snn``)."""

    fn: Callable[[ir.Node, list[np.ndarray], np.ndarray], ir.Node]


@dataclass(frozen=True)
class Route:
    """A node without weights (pooling, re-indexing): kept as it is. ``forward(node, in
    shapes, shape, fins)`` is its output factor; ``backward(node, in shapes, shape, f)`` the
    factor each input would need for the output to be at ``f`` (None: not expressible
    per channel, so the producer is not asked)."""

    forward: Callable[[ir.Node, Shapes, tuple[int, ...], list[np.ndarray]], np.ndarray | None]
    backward: Callable[[ir.Node, Shapes, tuple[int, ...], np.ndarray], list[np.ndarray | None]]


RULES = ir.Table("the converter")
"""One conversion rule per ANN node type: :class:`Spike`, :class:`Rescale` or :class:`Route`."""

RULES[ir.ReLU] = Spike(lambda node, lam: lam)
RULES[ir.Clip] = Spike(lambda node, lam: np.minimum(lam, node.ceiling))


@RULES.register(ir.Linear)
@Rescale
def _rescale_linear(node: ir.Linear, fins: list[np.ndarray], fout: np.ndarray) -> ir.Node:
    w = node.weight * fins[0][None, :] / fout[:, None]
    return ir.Linear(w, None if node.bias is None else node.bias / fout)


@RULES.register(ir.Conv2d, ir.Conv1d)
@Rescale
def _rescale_conv(node: ir.Conv2d, fins: list[np.ndarray], fout: np.ndarray) -> ir.Node:
    co, cig = node.weight.shape[:2]
    extra = (None,) * (node.weight.ndim - 2)
    fin = fins[0].reshape(node.groups, cig)[np.arange(co) // (co // node.groups)]  # (co, cig)
    w = node.weight * fin[(...,) + extra] / fout[(slice(None), None) + extra]
    return type(node)(w, None if node.bias is None else node.bias / fout, node.stride, node.padding,
                      node.dilation, node.groups)


@RULES.register(ir.Affine)
@Rescale
def _rescale_affine(node: ir.Affine, fins: list[np.ndarray], fout: np.ndarray) -> ir.Node:
    return ir.Affine(node.scale * fins[0] / fout, node.shift / fout)


@RULES.register(ir.Add)
@Rescale
def _rescale_add(node: ir.Add, fins: list[np.ndarray], fout: np.ndarray) -> ir.Node:
    return ir.Add(np.stack([g * f / fout for g, f in zip(node.gains, fins)]))


def _same_forward(node: ir.Node, ins: Shapes, shape: tuple[int, ...], fins: list[np.ndarray]) -> np.ndarray:
    return fins[0]


def _same_backward(node: ir.Node, ins: Shapes, shape: tuple[int, ...], f: np.ndarray) -> list[np.ndarray | None]:
    return [f]


RULES.register(ir.AvgPool2d, ir.MaxPool2d, ir.AvgPool1d, ir.MaxPool1d, ir.Upsample, ir.Pad)(
    Route(_same_forward, _same_backward))


def _reshape_forward(node: ir.Node, ins: Shapes, shape: tuple[int, ...], fins: list[np.ndarray]) -> np.ndarray | None:
    return _as_channel(_broadcast_factor(fins[0], ins[0]).reshape(shape))


def _reshape_backward(node: ir.Node, ins: Shapes, shape: tuple[int, ...], f: np.ndarray) -> list[np.ndarray | None]:
    return [_as_channel(_broadcast_factor(f, shape).reshape(ins[0]))]


RULES.register(ir.Flatten, ir.Reshape)(Route(_reshape_forward, _reshape_backward))


def _concat_backward(node: ir.Node, ins: Shapes, shape: tuple[int, ...], f: np.ndarray) -> list[np.ndarray | None]:
    sizes = np.cumsum([0] + [s[0] for s in ins])
    return [f[a:b] for a, b in zip(sizes[:-1], sizes[1:])]


RULES[ir.Concat] = Route(lambda node, ins, shape, fins: np.concatenate(fins), _concat_backward)


def _requirements(g: ir.Graph, lam: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Wanted output factor of each rescalable node: that of the IF/readout it feeds,
    pushed back through routes and through additions (so a residual branch's current is
    scaled in its conv weights and enters the sum with gain 1)."""
    req: dict[str, np.ndarray] = {}

    def push(name: str, f: np.ndarray) -> None:
        node = g.nodes[name]
        rule = RULES.get(type(node))
        ins = g.inputs_of(name)
        if isinstance(rule, Rescale):
            if name in req:
                return
            req[name] = f
            if isinstance(node, ir.Add):  # let current branches scale in their weights: gain 1
                for i in ins:
                    push(i, f)
        elif isinstance(rule, Route):
            for i, fi in zip(ins, rule.backward(node, [g.shapes[i] for i in ins], g.shapes[name], f)):
                if fi is not None:
                    push(i, fi)

    for name in reversed(list(g.nodes)):
        if isinstance(RULES.get(type(g.nodes[name])), Spike):
            push(g.inputs_of(name)[0], lam[name])
    push(g.output, np.ones(g.shapes[g.output][0]))
    return req


def to_snn(g: ir.Graph, lam: dict[str, np.ndarray], reset: str, v_init: float) -> ir.Graph:
    """Build the SNN graph from a canonical ANN graph and per-activation scales (after
    each :class:`Spike` rule's bound)."""
    for name, node in g.nodes.items():
        if not isinstance(node, ir.Input):
            RULES.rule(node, name)
    req = _requirements(g, lam)
    nodes: dict[str, ir.Node] = {}
    edges: list[tuple[str, str]] = []
    f: dict[str, np.ndarray] = {}

    def feed(src: str, want: np.ndarray, target: str) -> str:
        """Return a node carrying ``src`` at factor ``want``, inserting a rescale if needed."""
        if np.allclose(f[src], want, rtol=1e-12, atol=0):
            return src
        sname = f"{target}.scale"
        shp = g.shapes[src]
        nodes[sname] = ir.Affine(scale=f[src] / want, shift=np.zeros(shp[0]))
        edges.append((src, sname))
        return sname

    for name, node in g.nodes.items():
        ins = g.inputs_of(name)
        fins = [f[i] for i in ins]
        if isinstance(node, ir.Input):
            nodes[name], f[name] = node, np.ones(node.shape[0])
            continue
        rule = RULES[type(node)]
        if isinstance(rule, Spike):
            src = feed(ins[0], lam[name], name)
            nodes[name] = ir.IF(threshold=1.0, reset=reset, v_init=v_init)
            edges.append((src, name))
            f[name] = lam[name]
            continue
        if isinstance(rule, Rescale):
            fout = req.get(name, np.ones(g.shapes[name][0]))
            nodes[name], f[name] = rule.fn(node, fins, fout), fout
        else:
            fout = rule.forward(node, [g.shapes[i] for i in ins], g.shapes[name], fins)
            if fout is None:
                raise ConversionError(f"node {name!r} ({node.kind}): activation scales vary inside a channel "
                                      "after this re-indexing; use channelwise=False")
            nodes[name], f[name] = node, fout
        edges += [(i, name) for i in ins]
    out = feed(g.output, np.ones(g.shapes[g.output][0]), "readout")
    nodes["readout"] = ir.Readout()
    edges.append((out, "readout"))
    return ir.Graph(nodes, edges, g.input, "readout")


# --------------------------------------------------------------------------- entry
def convert(model: torch.nn.Module, calibration: Any, method: str = "percentile", percentile: float = 99.99,
            channelwise: bool = False, reset: str = "subtract", v_init: float = 0.5,
            max_calibration: int | None = 2048) -> SpikingNetwork:
    """Convert a trained ANN into a :class:`SpikingNetwork` of IF neurons.

    ``calibration``: inputs (N, *sample shape) as a tensor/array, or a DataLoader of
    ``x`` or ``(x, y)`` batches; at most ``max_calibration`` samples are used.
    ``method``: ``"max"`` or ``"percentile"``; ``channelwise``: one scale per channel.
    ``reset``: ``"subtract"`` (default) or ``"zero"``. ``v_init``: initial membrane as a
    fraction of the threshold (0.5 halves the rate quantisation error at small T).
    The model is not modified (a copy is traced in eval mode).
    """
    if method not in METHODS:
        raise ConversionError(f"unknown normalisation method {method!r}; valid: {', '.join(METHODS)}")
    if not 0 < percentile <= 100:
        raise ConversionError(f"percentile must be in (0, 100], got {percentile}")
    if reset not in ir.IF.RESETS:
        raise ConversionError(f"unknown reset {reset!r}; valid: {', '.join(ir.IF.RESETS)}")
    x = _calibration_tensor(calibration, max_calibration)
    ann = trace(model, x)
    if x.shape[1:] != ann.shapes[ann.input]:  # pragma: no cover - trace already ran the model on x
        raise ConversionError(f"calibration samples of shape {tuple(x.shape[1:])}, model expects {ann.shapes[ann.input]}")
    canon = _commute_maxpool_relu(ann)
    lam = {n: RULES[type(canon.nodes[n])].bound(canon.nodes[n], v)
           for n, v in _scales(canon, x, method, percentile, channelwise).items()}
    graph = to_snn(canon, lam, reset, v_init)
    meta = {
        "method": method, "percentile": percentile if method == "percentile" else 100.0,
        "channelwise": channelwise, "reset": reset, "v_init": v_init, "calibration_samples": len(x),
        "model": type(model).__name__, "scales": {k: v.tolist() for k, v in lam.items()},
    }
    return SpikingNetwork(graph=graph, ann=ann, meta=meta)
