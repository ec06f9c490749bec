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

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch

from snn import ir
from snn import ir_torch
from snn.errors import ConversionError
from snn.network import SpikingNetwork
from snn.trace import trace

METHODS = ("max", "percentile", "mse")
AUTO_BURST_STEPS = 16
"""``convert(timesteps=T)`` gives burst spikes (2 per step at most) for ``T`` up to this."""


def auto_burst(timesteps: int) -> int:
    """The burst size that ``convert(timesteps=T)`` picks: 2 for ``T <= 16``, else 1.

    Chosen by measurement (``experiments/bench/low_latency.py``, CIFAR-10 ResNet-20, JPEG
    q75 copy, 1,000 test images, ANN 80.9 %): at T=16 plain spikes reach 75.8 % and burst-2
    spikes 81.2 %; a burst-2 network at T steps fires about as many spikes as a plain one
    at 2T (each counts in SynOps and energy), and is more accurate than a plain one at 2T
    at T <= 8. Above 16 steps plain spikes are within the ANN's reach already."""
    return 2 if timesteps <= AUTO_BURST_STEPS else 1


# --------------------------------------------------------------------------- options
def check_percentile(percentile: float) -> None:
    """``percentile`` is in percent, ``1 <= percentile <= 100``; raise :class:`ConversionError` otherwise.

    A value below 1 is refused: it is almost always a fraction written for a tool that takes
    one (0.9999 for 99.99 %), and as a percentile it would set every scale at the lowest
    1 % of the activations (the network then saturates: 33 % instead of 91 % on MNIST)."""
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float, np.integer, np.floating)):
        raise ConversionError(f"percentile must be a number in percent, got {percentile!r}")
    if 0 < percentile < 1:
        raise ConversionError(f"percentile is in percent: {100 * percentile:g}, not {percentile:g} (a value below 1 "
                              "would scale every layer at its lowest 1 % of activations)")
    if not 1 <= percentile <= 100:
        raise ConversionError(f"percentile must be in percent, 1 <= percentile <= 100, got {percentile}")


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
def _quantised(a: torch.Tensor, lam: torch.Tensor, timesteps: int, v_init: float) -> torch.Tensor:
    """What an IF layer at scale ``lam`` with initial membrane ``v_init`` represents after
    ``timesteps`` steps of a constant input ``a``: ``lam / T * clip(floor(T a / lam + v_init), 0, T)``."""
    return lam / timesteps * torch.clamp(torch.floor(a * timesteps / lam + v_init), 0, timesteps)


MSE_GRID = 64
MSE_SAMPLES = 16384


def _mse_scale(a: torch.Tensor, timesteps: int, v_init: float, generator: torch.Generator) -> float:
    """The scale minimising the mean squared error between activations ``a`` (>= 0) and
    their ``T``-step quantisation (:func:`_quantised`): a grid over ``(0, max]`` refined
    once around its best point. Values above the scale are clipped, values below it lose
    at most half a level: a smaller scale than the maximum trades the first for the second,
    which is what makes few timesteps work (Li et al. 2021, section 4.1)."""
    if len(a) > MSE_SAMPLES:
        a = a[torch.randint(len(a), (MSE_SAMPLES,), generator=generator)]
    top = float(a.max())
    if top <= 0:
        return 0.0

    def best(grid: torch.Tensor) -> tuple[float, float]:
        err = ((a[None, :] - _quantised(a[None, :], grid[:, None], timesteps, v_init)) ** 2).mean(dim=1)
        i = int(torch.argmin(err))
        return float(grid[i]), float(grid[1] - grid[0]) if len(grid) > 1 else 0.0

    lam, step = best(torch.linspace(top / MSE_GRID, top, MSE_GRID, dtype=a.dtype))
    lam, _ = best(torch.linspace(max(lam - step, top / MSE_GRID / 4), min(lam + step, top), 33, dtype=a.dtype))
    return lam


def _scales(g: ir.Graph, x: torch.Tensor, method: str, percentile: float, channelwise: bool,
            timesteps: int | None = None, v_init: float = 0.5, batch_size: int = 256,
            only: set[str] | None = None, inactive: set[str] | None = None) -> dict[str, np.ndarray]:
    """Per-channel activation scale ``lambda`` of every activation node (of those in
    ``only`` if given; shape (C,)), before its :class:`Spike` rule's bound. A node that is
    never positive on ``x`` gets the scale 1 and is added to ``inactive``."""
    relus = [n for n, v in g.nodes.items() if isinstance(v, ir.ACTIVATIONS) and (only is None or n in only)]
    params = ir_torch.Params(g, "cpu", torch.float32)
    acts: dict[str, list[torch.Tensor]] = {n: [] for n in relus}
    for s in range(0, len(x), batch_size):
        vals = ir_torch.evaluate_ann(g, x[s:s + batch_size], keep=relus, params=params)
        for n in relus:
            a = vals[n]
            acts[n].append(a.transpose(0, 1).reshape(a.shape[1], -1) if channelwise else a.reshape(1, -1))
    q = 100.0 if method == "max" else percentile
    gen = torch.Generator().manual_seed(0)
    out = {}
    for n in relus:
        a = torch.cat(acts[n], dim=1)
        acts[n] = []
        lam = np.zeros(a.shape[0])
        for c in range(a.shape[0]):
            pos = a[c][a[c] > 0]
            if not len(pos):
                continue
            lam[c] = _mse_scale(pos, timesteps, v_init, gen) if method == "mse" else np.percentile(pos.numpy(), q)
        if lam.max() <= 0 and inactive is not None:
            inactive.add(n)
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
RULES[ir.Clip] = Spike(lambda node, lam: np.full_like(lam, node.ceiling) if node.levels
                       else np.minimum(lam, node.ceiling))
"""A clip converts at scale ``min(lambda, ceiling)``; a quantised clip (QCFS) exactly at its
trained threshold ``ceiling``, whatever the calibration says."""


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


def to_snn(g: ir.Graph, lam: dict[str, np.ndarray], reset: str, v_init: float,
           neurons: dict[str, dict[str, Any]] | None = None) -> ir.Graph:
    """Build the SNN graph from a canonical ANN graph and per-activation scales (after
    each :class:`Spike` rule's bound); ``neurons``: extra IF fields per activation
    (``burst``, ``signed``)."""
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
            nodes[name] = ir.IF(threshold=1.0, reset=reset, v_init=v_init, **(neurons or {}).get(name, {}))
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


def _feeds_pool(g: ir.Graph, name: str) -> bool:
    """Whether activation ``name`` reaches a max-pool through re-indexing nodes only (its
    spikes would be pooled: such layers keep plain 0/1 spikes)."""
    stack, seen = list(g.consumers_of(name)), set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if g.nodes[n].spike_route == "pool":
            return True
        if g.nodes[n].spike_route == "copy":
            stack += g.consumers_of(n)
    return False


# --------------------------------------------------------------------------- layer-wise calibration
CALIBRATIONS = ("none", "bias")


def _channel_mean(v: torch.Tensor, lead: int) -> torch.Tensor:
    """Mean over the ``lead`` leading axes and every axis after the channel axis."""
    return v.transpose(0, lead).reshape(v.shape[lead], -1).mean(dim=1) if v.ndim > lead + 1 else \
        v.reshape(-1, v.shape[lead]).mean(dim=0)


def _chan_view(d: torch.Tensor, ndim: int, lead: int) -> torch.Tensor:
    return d.reshape((1,) * lead + (-1,) + (1,) * (ndim - lead - 1))


def layer_corrections(snn: ir.Graph, canon: ir.Graph, lam: dict[str, np.ndarray], x: torch.Tensor, timesteps: int,
                      iterations: int = 2, ann: dict[str, torch.Tensor] | None = None
                      ) -> tuple[dict[str, np.ndarray], torch.Tensor]:
    """Bias correction of Li et al. 2021 ("A Free Lunch From ANN: Towards Efficient,
    Accurate Spiking Neural Networks Calibration", ICML 2021), layer by layer in one
    simulated pass over ``x`` (:func:`snn.ir_torch.simulate_steps`): for each IF layer, in
    order, with the layers before it already corrected, the per-channel mean error between
    the ANN activation in spike units (``relu(a) / lambda``) and the layer's spike rate over
    ``T`` steps is added to its input current at every step; ``iterations`` re-measurements
    of the layer refine it. ``ann``: :func:`snn.ir_torch.evaluate_ann` of ``canon`` on ``x``
    keeping every IF layer's activation, where the caller has it already. Returns ``{IF
    name: (C,) current}`` in threshold units and the corrected network's readout on ``x``
    after every step, (T, N, K)."""
    ifs = [n for n, v in snn.nodes.items() if isinstance(v, ir.IF)]
    ann = ann if ann is not None else ir_torch.evaluate_ann(canon, x, keep=ifs)
    target = {n: _channel_mean(ann[n], 1) / torch.as_tensor(lam[n], dtype=x.dtype) for n in ifs}
    found: dict[str, np.ndarray] = {}

    def adjust(name: str, cur: torch.Tensor) -> torch.Tensor:
        node = snn.nodes[name]
        shape = tuple(cur.shape[1:])
        total = torch.zeros(shape[1], dtype=x.dtype)
        for _ in range(iterations + 1):
            u = torch.full(shape, node.v_init * node.threshold, dtype=x.dtype)
            spikes = ir_torch.if_scan(cur + _chan_view(total, cur.ndim, 2), u, torch.zeros(shape, dtype=x.dtype),
                                      node.threshold, node.reset == "subtract", False, timesteps, burst=node.burst,
                                      count=torch.zeros(shape, dtype=x.dtype) if node.signed else None)
            total += target[name] - _channel_mean(spikes, 2)
        found[name] = total.double().numpy()
        return cur + _chan_view(total, cur.ndim, 2)

    output = ir_torch.simulate_steps(snn, x, timesteps, adjust=adjust)["output"]
    return found, output


def _add_current(g: ir.Graph, deltas: dict[str, np.ndarray]) -> ir.Graph:
    """``g`` with ``deltas[n]`` (per channel) added to the input current of each IF layer
    ``n`` at every step: into the bias of the Linear/Conv/Affine node that feeds it alone,
    directly or as a term of an ``Add`` (divided by its gain), else through a new
    ``Affine`` node ``<n>.bias``."""
    nodes, edges = dict(g.nodes), list(g.edges)

    def sole(name: str, consumer: str) -> bool:
        return g.consumers_of(name) == [consumer] and isinstance(g.nodes[name], (ir.Linear, ir.Conv2d, ir.Conv1d,
                                                                                 ir.Affine))

    def shifted(node: ir.Node, d: np.ndarray) -> ir.Node:
        if isinstance(node, ir.Affine):
            return ir.Affine(node.scale, node.shift + d)
        return dataclasses.replace(node, bias=(node.bias if node.bias is not None else 0.0) + d)

    for n, d in deltas.items():
        (src,) = g.inputs_of(n)
        if sole(src, n):
            nodes[src] = shifted(nodes[src], d)
            continue
        if isinstance(g.nodes[src], ir.Add) and g.consumers_of(src) == [n]:
            k = next((k for k, i in enumerate(g.inputs_of(src)) if sole(i, src)), None)
            gains = g.nodes[src].gains[k] if k is not None else None
            if k is not None and np.all(gains != 0):
                i = g.inputs_of(src)[k]
                nodes[i] = shifted(nodes[i], d / gains)
                continue
        name = f"{n}.bias"
        order = list(nodes)
        order.insert(order.index(n), name)
        nodes[name] = ir.Affine(np.ones(len(d)), d)
        nodes = {k: nodes[k] for k in order}
        edges = [(a, name) if (a, b) == (src, n) else (a, b) for a, b in edges] + [(name, n)]
    return ir.Graph(nodes, edges, g.input, g.output)


# --------------------------------------------------------------------------- entry
AUTO_AGREEMENT = 0.90
"""``convert(timesteps=T)`` keeps its burst-2 coding where the converted network's prediction
agrees with the ANN's on at least this fraction of the bias-calibration samples, else it also
builds :data:`STRONG_CODING` (QCFS layers included) and keeps the coding that agrees more.
Only where the burst size is picked for T (T <= 16) and the bias correction simulates.

Set by measurement (``experiments/bench/low_latency.py``, CIFAR-10 JPEG q75 copy, 512
calibration images, 256 of them simulated; agreement of burst 2 / of burst 4 + signed, then
test accuracy on the first 1,000 images of burst 2 / burst 4 + signed, ANN 80.9 %):
ResNet-20 at T=16 0.914 / 0.992, 81.3 / 80.8 % (burst 2 is as accurate with 2.5x fewer
SynOps: kept); at T=8 0.895 / 0.980, 75.7 / 80.5 %; at T=4 0.809 / 0.945, 71.4 / 80.0 % (the
stronger coding at T=4 beats burst 2 at T=8 in accuracy with 1.2x its SynOps); ResNet-56 at
T=16 0.852 / 0.984, 76.7 / 83.8 % (ANN 84.5 %); ResNet-32 at T=16 0.914 / 0.988, 81.1 /
84.1 % (ANN 83.7 %: 256 samples do not separate it from ResNet-20, and burst 2 is kept)."""
STRONG_CODING = (4, True)
"""(burst, signed) of the stronger coding that ``convert(timesteps=T)`` tries: up to 4 spikes per
step and negative spikes."""


def _coding_name(burst: int, signed: bool) -> str:
    return f"burst {burst}" + (", signed" if signed else "")


@dataclass
class _Built:
    """An SNN graph built for one coding, with what :func:`convert` records about it."""
    graph: ir.Graph
    lam: dict[str, np.ndarray]
    corrections: dict[str, np.ndarray]
    inactive: list[str]
    coded: bool  # some layer uses the burst/signed coding
    output: torch.Tensor | None  # (T, n, K) readout on the calibration samples that bias correction simulated

    def agreement(self, ref: torch.Tensor) -> float:
        """Fraction of the ``len(ref)`` samples whose prediction after the last step is the ANN's ``ref``."""
        return float((self.output[-1, :len(ref)].argmax(-1) == ref).double().mean())


def _build(canon: ir.Graph, acts: list[str], x: torch.Tensor, *, method: str, percentile: float, channelwise: bool,
           timesteps: int | None, v_init: float, reset: str, burst: int, signed: bool, calibrate: str,
           calibrate_samples: int, keep_qcfs: bool, ann: dict[str, torch.Tensor] | None) -> _Built:
    """Scales, IF graph and bias correction of :func:`convert` for one coding (``burst``,
    ``signed``) of the activation layers ``acts``; ``keep_qcfs``: QCFS layers stay plain (the
    burst size was picked for T); ``ann``: the ANN's activations on the bias-calibration
    samples (:func:`layer_corrections`)."""
    # layers whose spikes are max-pooled stay plain; so do QCFS layers when the burst size was picked
    # for T (trained for their levels, they convert at their trained threshold, one spike per step)
    spiking = [n for n in acts if not _feeds_pool(canon, n)
               and not (keep_qcfs and getattr(canon.nodes[n], "levels", None))] if burst > 1 or signed else []
    bursting = set(spiking) if burst > 1 and method == "mse" else set()
    # a burst layer represents [0, lambda] with burst * T levels (threshold lambda / burst): the mse scale is
    # chosen for burst * T levels; every other layer for T
    inactive: set[str] = set()
    raw = _scales(canon, x, method, percentile, channelwise, timesteps * burst, v_init, only=bursting,
                  inactive=inactive) if bursting else {}
    if len(bursting) < len(acts):
        raw.update(_scales(canon, x, method, percentile, channelwise, timesteps, v_init,
                           only=set(acts) - bursting if bursting else None, inactive=inactive))
    lam = {n: RULES[type(canon.nodes[n])].bound(canon.nodes[n], raw[n]) for n in acts}
    for n in spiking:
        lam[n] = lam[n] / burst
    graph = to_snn(canon, lam, reset, v_init, {n: {"burst": burst, "signed": signed} for n in spiking})
    corrections: dict[str, np.ndarray] = {}
    output = None
    if calibrate != "none":
        corrections, output = layer_corrections(graph, canon, lam, x[:calibrate_samples], timesteps, ann=ann)
        graph = _add_current(graph, corrections)
    return _Built(graph, lam, corrections, [n for n in acts if n in inactive], bool(spiking), output)


def _auto_delay(canon: ir.Graph, lam: dict[str, np.ndarray], x: torch.Tensor, v_init: float, timesteps: int) -> int:
    """SpikingJelly 2.0's delay-start estimate (``ann2snn.estimate_delay_start``): each IF
    layer needs about ``(1 - v_init) / r`` steps to charge from its initial membrane to
    the threshold, ``r`` being the largest per-channel mean rate ``E[relu(a) / lambda]``
    of the layer on the calibration data; the warm-up is their sum, rounded up, and keeps
    at least :data:`MIN_READOUT_STEPS` steps for the readout."""
    names = list(lam)
    ann = ir_torch.evaluate_ann(canon, x, keep=names)
    total = 0.0
    for n in names:
        rate = float((_channel_mean(ann[n], 1) / torch.as_tensor(lam[n], dtype=x.dtype)).max())
        total += (1.0 - v_init) / rate if rate > 0 else 0.0
    return int(max(0, min(int(np.ceil(total)), timesteps - MIN_READOUT_STEPS)))


MIN_READOUT_STEPS = 4


def convert(model: torch.nn.Module, calibration: Any, method: str | None = None, percentile: float = 99.99,
            channelwise: bool | None = None, reset: str = "subtract", v_init: float = 0.5,
            max_calibration: int | None = 2048, timesteps: int | None = None, calibrate: str | None = None,
            calibrate_samples: int = 256, readout_delay: int | str = 0, burst: int | None = None,
            signed: bool | None = None) -> SpikingNetwork:
    """Convert a trained ANN into a :class:`SpikingNetwork` of IF neurons.

    ``calibration``: inputs (N, *sample shape) as a tensor/array, or a DataLoader of
    ``x`` or ``(x, y)`` batches; at most ``max_calibration`` samples are used.

    ``timesteps=T``: tune the network for ``T`` steps with everything that needs no
    retraining; options left at None are then picked for ``T``: ``method="mse"``,
    ``channelwise=True``, ``calibrate="bias"``, and ``burst=2`` for ``T <= 16`` with
    ``reset="subtract"`` (:func:`auto_burst`; else 1; QCFS layers keep one spike per step
    and their trained threshold). With ``burst`` and ``signed`` both left at None, the
    coding is then checked by measurement: where the burst-2 network, bias-corrected, agrees
    with the ANN's prediction on fewer than :data:`AUTO_AGREEMENT` (90 %) of the
    ``calibrate_samples`` samples, the stronger :data:`STRONG_CODING` (burst 4, signed) is
    built as well and kept if it agrees more (both agreements in
    ``net.meta["choices"]["coding_agreement"]``; the conversion then costs both builds).
    The stronger coding includes QCFS layers, so a QCFS network whose plain spikes disagree
    with its ANN gets it too. The choices are in
    ``net.meta["choices"]`` (and ``net.meta["auto"]`` lists those that ``timesteps``
    picked). Each option:

    * ``method``: ``"max"`` (Diehl et al. 2015), ``"percentile"`` (Rueckauer et al. 2017;
      default without ``timesteps``) or ``"mse"`` (needs ``T``): the scale that minimises
      the squared error between the activations and their ``T``-step quantisation (Li et
      al. 2021, "A Free Lunch From ANN", ICML 2021).
    * ``channelwise``: one scale per channel instead of per layer.
    * ``calibrate`` (needs ``T``): ``"bias"``, Li et al. 2021's layer-wise bias
      correction (:func:`layer_corrections`): on the first ``calibrate_samples``
      calibration inputs, simulated for ``T`` steps, each IF layer in turn (the layers
      before it already corrected) gets the per-channel mean error between the ANN
      activation and its spike rate added to its input current at every step, folded into
      the bias of the layer that feeds it. ``"none"``: no correction.
    * ``readout_delay``: delayed evaluation (a readout warm-up): the readout reports the
      mean over the steps after the first ``readout_delay`` (:class:`snn.ir.Readout`);
      ``"auto"`` (needs ``T``) is SpikingJelly 2.0's delay-start estimate.
    * ``v_init``: initial membrane as a fraction of the threshold (0.5 halves the rate
      quantisation error at small T; Bu et al. 2022); ``reset``: ``"subtract"`` or ``"zero"``.
    * ``burst`` and ``signed``: the neuron-coding extension of :class:`snn.ir.IF`. ``burst =
      B`` lets a neuron emit up to ``B`` spikes per step (Li & Zeng, IJCAI 2022): its layer
      represents ``[0, lambda]`` with ``B * T`` levels (threshold ``lambda / B``; with
      ``method="mse"`` the scale is chosen for ``B * T`` levels). ``signed`` adds negative
      spikes with memory (Wang et al., IJCAI 2022), which undo spikes that early input made
      too many. Each spike costs its synaptic events in the energy report. Layers whose
      spikes are max-pooled stay plain. Without ``timesteps`` the default is 1; give
      ``burst=1`` with ``timesteps`` for plain 0/1 spikes (what the snntorch, NIR and
      Lava exporters take).

    A QCFS activation (:class:`snn.trace.QCFS`, conversion-aware training) converts at its
    trained threshold, whatever the calibration says. The model is not modified (a copy
    is traced in eval mode).
    """
    if timesteps is not None and (not isinstance(timesteps, (int, np.integer)) or isinstance(timesteps, bool)
                                  or timesteps < 1):
        raise ConversionError(f"timesteps must be an integer >= 1 or None, got {timesteps!r}")
    auto = [k for k, v in (("method", method), ("channelwise", channelwise), ("calibrate", calibrate),
                           ("burst", burst), ("signed", signed)) if v is None and timesteps]
    signed = False if signed is None else signed
    if burst is None:
        burst = auto_burst(timesteps) if timesteps and reset == "subtract" else 1
    method = method or ("mse" if timesteps else "percentile")
    channelwise = bool(timesteps) if channelwise is None else channelwise
    calibrate = calibrate or ("bias" if timesteps else "none")
    if method not in METHODS:
        raise ConversionError(f"unknown normalisation method {method!r}; valid: {', '.join(METHODS)}")
    if calibrate not in CALIBRATIONS:
        raise ConversionError(f"unknown calibration {calibrate!r}; valid: {', '.join(CALIBRATIONS)}")
    needs_t = [f"{k}={v!r}" for k, v in (("method", method), ("calibrate", calibrate), ("readout_delay", readout_delay))
               if v in ("mse", "bias", "auto")]
    if needs_t and not timesteps:
        raise ConversionError(f"{', '.join(needs_t)} tune the network for a number of timesteps: give timesteps=T")
    if not (readout_delay == "auto" or (isinstance(readout_delay, (int, np.integer)) and not isinstance(
            readout_delay, bool) and readout_delay >= 0)):
        raise ConversionError(f"readout_delay must be an integer >= 0 or 'auto', got {readout_delay!r}")
    if timesteps and isinstance(readout_delay, (int, np.integer)) and readout_delay >= timesteps:
        raise ConversionError(f"readout_delay={readout_delay} leaves no step of the {timesteps} for the readout")
    if not isinstance(calibrate_samples, (int, np.integer)) or isinstance(calibrate_samples, bool) or \
            calibrate_samples < 1:
        raise ConversionError(f"calibrate_samples must be an integer >= 1, got {calibrate_samples!r}")
    check_percentile(percentile)
    if reset not in ir.IF.RESETS:
        raise ConversionError(f"unknown reset {reset!r}; valid: {', '.join(ir.IF.RESETS)}")
    if not 0.0 <= v_init < 1.0:
        raise ConversionError(f"v_init must be in [0, 1) (a fraction of the threshold), got {v_init}")
    if isinstance(burst, bool) or not isinstance(burst, (int, np.integer)) or burst < 1:
        raise ConversionError(f"burst must be an integer >= 1 (spikes per step at most), got {burst!r}")
    if not isinstance(signed, bool):
        raise ConversionError(f"signed must be True or False, got {signed!r}")
    if (burst > 1 or signed) and reset != "subtract":
        raise ConversionError(f"burst/signed spikes need reset='subtract', got reset={reset!r}")
    x = _calibration_tensor(calibration, max_calibration)
    ann = trace(model, x)
    if x.shape[1:] != ann.shapes[ann.input]:  # pragma: no cover - trace already ran the model on x
        raise ConversionError(f"calibration samples of shape {tuple(x.shape[1:])}, model expects {ann.shapes[ann.input]}")
    canon = _commute_maxpool_relu(ann)
    acts = [n for n, v in canon.nodes.items() if isinstance(v, ir.ACTIVATIONS)]
    # the ANN on the bias-calibration samples, once for every coding built
    ann_calib = ir_torch.evaluate_ann(canon, x[:calibrate_samples], keep=acts) if calibrate != "none" else None
    options = dict(method=method, percentile=percentile, channelwise=channelwise, timesteps=timesteps, v_init=v_init,
                   reset=reset, calibrate=calibrate, calibrate_samples=calibrate_samples,
                   keep_qcfs="burst" in auto, ann=ann_calib)
    built = _build(canon, acts, x, burst=burst, signed=signed, **options)
    agreement: dict[str, float] = {}
    if "burst" in auto and "signed" in auto and burst > 1 and built.output is not None:
        # the coding picked by measurement: the stronger one (QCFS layers included) only where the
        # cheaper one disagrees with the ANN
        ref = ann_calib["output"].argmax(-1)
        cheap = _coding_name(burst if built.coded else 1, signed)
        agreement[cheap] = built.agreement(ref)
        if agreement[cheap] < AUTO_AGREEMENT:
            strong = _build(canon, acts, x, burst=STRONG_CODING[0], signed=STRONG_CODING[1],
                            **{**options, "keep_qcfs": False})
            agreement[_coding_name(*STRONG_CODING)] = strong.agreement(ref)
            if agreement[_coding_name(*STRONG_CODING)] > agreement[cheap]:
                built, (burst, signed) = strong, STRONG_CODING
    if "burst" in auto and not built.coded:
        burst = 1
    graph, lam, corrections, inactive_layers = built.graph, built.lam, built.corrections, built.inactive
    for n in inactive_layers:
        warnings.warn(f"layer {n!r} never activates on the {len(x)} calibration samples: its scale is a default "
                      "(1.0), so its neurons may never spike; recorded in net.meta['inactive_layers']",
                      UserWarning, stacklevel=2)
    delay = _auto_delay(canon, lam, x[:calibrate_samples], v_init, timesteps) if readout_delay == "auto" \
        else int(readout_delay)
    if delay:
        graph = ir.Graph({**graph.nodes, graph.output: ir.Readout(delay=delay)}, graph.edges, graph.input,
                         graph.output)
    choices = {"method": method, "percentile": percentile if method == "percentile" else None,
               "channelwise": channelwise, "calibrate": calibrate, "readout_delay": delay, "v_init": v_init,
               "reset": reset, "burst": burst, "signed": signed}
    if agreement:
        choices["coding_agreement"] = agreement
    meta = {
        "method": method, "percentile": percentile if method == "percentile" else 100.0,
        "channelwise": channelwise, "reset": reset, "v_init": v_init, "calibration_samples": len(x),
        "timesteps": int(timesteps) if timesteps else None, "choices": choices, "auto": auto,
        "calibrate": calibrate, "calibrate_samples": min(calibrate_samples, len(x)) if calibrate != "none" else 0,
        "readout_delay": delay, "corrections": {k: v.tolist() for k, v in corrections.items()},
        "model": type(model).__name__, "scales": {k: v.tolist() for k, v in lam.items()},
        "inactive_layers": inactive_layers,
    }
    return SpikingNetwork(graph=graph, ann=ann, meta=meta)
