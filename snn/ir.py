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

Burst and signed spikes (a neuron-coding extension for few timesteps; ``reset="subtract"``
only). With ``burst = B`` a neuron emits up to ``B`` spikes in one step, and a ``signed``
neuron also emits negative spikes, but never more than its net count ``C`` so far
(Wang et al. 2022's signed neuron with memory), so that ``C`` tracks the rounded integral
of its input whatever order the input comes in::

    n_pos[t] = #{k in 1..B : u[t] > k theta}
    n_neg[t] = min(#{k in 0..B-1 : u[t] < -k theta}, C[t-1])     # signed; else 0
    s[t] = n_pos[t] - n_neg[t];  v[t] = u[t] - s[t] * theta;  C[t] = C[t-1] + s[t]

``s[t]`` is a count of spikes (an event of ``|s[t]|`` spikes, each costing its synaptic
events); downstream layers receive ``s[t]`` times their weights. ``B = 1`` without
``signed`` is the plain neuron above.

``Readout`` integrates without spiking, ``v[t] = v[t-1] + I[t]``, and reports
``v[t] / t`` (the mean input current, in the ANN's units); the prediction after
step ``t`` is ``argmax v[t]``. With a warm-up of ``delay = d`` steps (delayed evaluation)
it reports ``(v[t] - v[d]) / (t - d)`` after step ``t > d``, the mean over the steps after
the warm-up, and ``v[t] / t`` until then (:func:`readout_means`).

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
import hashlib
import json
import os
import warnings
from pathlib import Path
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar, Iterable

import numpy as np

from snn.errors import SnnError

IR_VERSION = 1


class Table(dict):
    """One interpreter's rules, keyed by IR node type (DESIGN.md: the node type is the unit).

    Every interpreter of the IR (shape rule, float64 evaluation, torch op, brian2 form,
    conversion rule, energy rule, NIR mapping) is a ``Table``; its supported set is its
    keys. ``rule(node, name)`` returns the node's rule or raises :class:`SnnError` naming
    the node, its type, the interpreter and what it supports.

    >>> t = Table("doubling")
    >>> @t.register(Input)
    ... def _double(node): return 2
    >>> t.kinds()
    ('input',)
    >>> t.rule(ReLU(), "act")
    Traceback (most recent call last):
    ...
    snn.errors.SnnError: node 'act' (relu) is not supported by doubling; supported: input
    """

    def __init__(self, interpreter: str, rules: dict[type, Any] | None = None):
        super().__init__(rules or {})
        self.interpreter = interpreter

    def register(self, *types: type) -> Callable[[Any], Any]:
        """Decorator: the decorated object becomes the rule of every type in ``types``."""
        def deco(rule: Any) -> Any:
            for t in types:
                self[t] = rule
            return rule
        return deco

    def kinds(self) -> tuple[str, ...]:
        """The supported node kinds, in registration order."""
        return tuple(t.kind for t in self)

    def rule(self, node: "Node", name: str = "?") -> Any:
        r = self.get(type(node))
        if r is None:
            raise SnnError(unsupported_message(name, node, self.interpreter, self.kinds()))
        return r


def unsupported_message(name: str, node: "Node", interpreter: str, kinds: Iterable[str], why: str = "") -> str:
    """The one message for a node an interpreter cannot take: node, type, interpreter, supported set."""
    return (f"node {name!r} ({node.kind}) is not supported by {interpreter}{': ' + why if why else ''}; "
            f"supported: {', '.join(kinds)}")


def check_supported(graph: "Graph", kinds: Iterable[str], interpreter: str) -> None:
    """Raise :class:`SnnError` for the first node of ``graph`` whose kind is not in ``kinds``."""
    kinds = tuple(kinds)
    for name, node in graph.nodes.items():
        if node.kind not in kinds:
            raise SnnError(unsupported_message(name, node, interpreter, kinds))


def _arr(x: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, dtype=np.float64))


def _single(x: Any) -> tuple[int]:
    return (int(x[0]) if isinstance(x, (tuple, list)) else int(x),)


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
    spike_route: ClassVar[str | None] = None
    """On spike-train inputs: ``"copy"`` when the output is the same spikes re-indexed
    (flatten, reshape, concat, upsample, zero padding), ``"pool"`` when it is a new spike
    train made from them (max-pooling, recorded by the backends), None when the output is
    not a spike train."""


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
class Conv1d(Node):
    """1-D convolution (cross-correlation, as torch) of ``(C, L)`` samples.

    ``weight`` (C_out, C_in / groups, k); ``bias`` (C_out,) or None. Output length:
    ``floor((L + 2p - d (k - 1) - 1) / s) + 1``.
    """

    weight: np.ndarray
    bias: np.ndarray | None = None
    stride: tuple[int] = (1,)
    padding: tuple[int] = (0,)
    dilation: tuple[int] = (1,)
    groups: int = 1
    kind: ClassVar[str] = "conv1d"

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight", _arr(self.weight))
        if self.bias is not None:
            object.__setattr__(self, "bias", _arr(self.bias))
        for name in ("stride", "padding", "dilation"):
            object.__setattr__(self, name, _single(getattr(self, name)))
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
class Clip(Node):
    """``y = min(max(x, 0), ceiling)`` (ReLU6, ``Hardtanh(0, a)``; ANN graphs only): an IF
    neuron's rate is bounded by one spike per step, so it converts exactly at scale ``ceiling``.

    ``levels = L > 0``: the quantised clip-floor-shift activation of conversion-aware
    training (QCFS, Bu et al. ICLR 2022), ``y = ceiling / L * floor(L * clip(x / ceiling,
    0, 1) + 1/2)``: what IF neurons at threshold ``ceiling``, starting half-charged, give
    in ``L`` steps of a constant input."""

    ceiling: float
    levels: int = 0
    kind: ClassVar[str] = "clip"

    def __post_init__(self) -> None:
        object.__setattr__(self, "ceiling", float(self.ceiling))
        object.__setattr__(self, "levels", int(self.levels))
        if not self.ceiling > 0:
            raise SnnError(f"Clip ceiling must be > 0, got {self.ceiling}")
        if self.levels < 0:
            raise SnnError(f"Clip levels must be >= 0 (0: not quantised), got {self.levels}")


@dataclass(frozen=True, eq=False)
class IF(Node):
    """Integrate-and-fire neurons; equations in the module docstring.

    ``threshold`` is a scalar (the converter folds scales into weights, so it is 1.0
    and spikes are exactly 0/1); ``v_init`` is the initial membrane as a fraction of
    the threshold. ``burst`` (spikes per step at most) and ``signed`` (negative spikes
    with memory): the extension in the module docstring.
    """

    threshold: float = 1.0
    reset: str = "subtract"
    v_init: float = 0.0
    burst: int = 1
    signed: bool = False
    kind: ClassVar[str] = "if"
    spiking: ClassVar[bool] = True
    RESETS: ClassVar[tuple[str, ...]] = ("subtract", "zero")

    @property
    def plain(self) -> bool:
        """One 0/1 spike per step (no burst, no negative spikes)."""
        return self.burst == 1 and not self.signed

    def __post_init__(self) -> None:
        object.__setattr__(self, "threshold", float(self.threshold))
        object.__setattr__(self, "v_init", float(self.v_init))
        if isinstance(self.burst, bool) or not isinstance(self.burst, (int, np.integer)) or self.burst < 1:
            raise SnnError(f"IF burst must be an integer >= 1 (spikes per step at most), got {self.burst!r}")
        object.__setattr__(self, "burst", int(self.burst))
        if not isinstance(self.signed, (bool, np.bool_)):
            raise SnnError(f"IF signed must be true or false, got {self.signed!r}")
        object.__setattr__(self, "signed", bool(self.signed))
        if not self.plain and self.reset != "subtract":
            raise SnnError(f"IF burst/signed spikes need reset='subtract' (a reset to zero loses the "
                           f"charge they carry), got reset={self.reset!r}")
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
    spike_route: ClassVar[str | None] = "pool"

    def __post_init__(self) -> None:
        for name in ("kernel", "stride", "padding", "dilation"):
            object.__setattr__(self, name, _pair(getattr(self, name)))


@dataclass(frozen=True, eq=False)
class AvgPool1d(Node):
    """Average pooling of ``(C, L)`` samples; zero padding counted in the divisor."""

    kernel: tuple[int]
    stride: tuple[int]
    padding: tuple[int] = (0,)
    kind: ClassVar[str] = "avgpool1d"

    def __post_init__(self) -> None:
        for name in ("kernel", "stride", "padding"):
            object.__setattr__(self, name, _single(getattr(self, name)))


@dataclass(frozen=True, eq=False)
class MaxPool1d(Node):
    """Max pooling of ``(C, L)`` samples; on spikes, the cumulative-count rule above."""

    kernel: tuple[int]
    stride: tuple[int]
    padding: tuple[int] = (0,)
    dilation: tuple[int] = (1,)
    kind: ClassVar[str] = "maxpool1d"
    spike_route: ClassVar[str | None] = "pool"

    def __post_init__(self) -> None:
        for name in ("kernel", "stride", "padding", "dilation"):
            object.__setattr__(self, name, _single(getattr(self, name)))


@dataclass(frozen=True, eq=False)
class Upsample(Node):
    """Nearest-neighbour upsampling by integer factors, one per spatial axis:
    ``y[c, i, j] = x[c, i // s0, j // s1]`` (a spike is copied to every output it covers)."""

    scale: tuple[int, ...]
    kind: ClassVar[str] = "upsample"
    spike_route: ClassVar[str | None] = "copy"

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", tuple(int(v) for v in self.scale))
        if not self.scale or min(self.scale) < 1:
            raise SnnError(f"Upsample scale must be integers >= 1, got {self.scale}")


@dataclass(frozen=True, eq=False)
class Pad(Node):
    """Zero padding of the spatial axes: ``padding = (before_0, after_0, before_1, after_1,
    ...)``, axis 0 being the first spatial axis (H of ``(C, H, W)``, L of ``(C, L)``)."""

    padding: tuple[int, ...]
    kind: ClassVar[str] = "pad"
    spike_route: ClassVar[str | None] = "copy"

    def __post_init__(self) -> None:
        object.__setattr__(self, "padding", tuple(int(v) for v in self.padding))
        if len(self.padding) % 2 or min(self.padding, default=-1) < 0:
            raise SnnError(f"Pad padding must be (before, after) pairs of integers >= 0, got {self.padding}")


@dataclass(frozen=True, eq=False)
class Flatten(Node):
    """Reshape a sample to one axis, ``(C, H, W) -> (C*H*W,)``."""

    kind: ClassVar[str] = "flatten"
    spike_route: ClassVar[str | None] = "copy"


@dataclass(frozen=True, eq=False)
class Reshape(Node):
    """Reshape a sample to ``shape`` (same number of elements, C order)."""

    shape: tuple[int, ...]
    kind: ClassVar[str] = "reshape"
    spike_route: ClassVar[str | None] = "copy"

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
    spike_route: ClassVar[str | None] = "copy"


@dataclass(frozen=True, eq=False)
class Readout(Node):
    """Non-spiking output integrator (SNN graphs): reports the mean input so far, or after
    a warm-up of ``delay`` steps the mean input since then (see the module docstring)."""

    delay: int = 0
    kind: ClassVar[str] = "readout"

    def __post_init__(self) -> None:
        if isinstance(self.delay, bool) or not isinstance(self.delay, (int, np.integer)) or self.delay < 0:
            raise SnnError(f"Readout delay must be an integer >= 0 (steps of warm-up), got {self.delay!r}")
        object.__setattr__(self, "delay", int(self.delay))


def readout_means(sums: np.ndarray, delay: int = 0) -> np.ndarray:
    """What a :class:`Readout` reports after each step, from its membrane ``sums`` (T, ...)
    after each step: ``v[t] / t``, and ``(v[t] - v[d]) / (t - d)`` after a warm-up of
    ``d = delay`` steps (every backend computes its outputs with this one function).

    >>> readout_means(np.array([1.0, 3.0, 6.0]), delay=1).tolist()
    [1.0, 2.0, 2.5]
    """
    steps = np.arange(1, len(sums) + 1, dtype=sums.dtype).reshape((-1,) + (1,) * (sums.ndim - 1))
    out = sums / steps
    if 0 < delay < len(sums):
        out[delay:] = (sums[delay:] - sums[delay - 1]) / (steps[delay:] - delay)
    return out


ACTIVATIONS: tuple[type[Node], ...] = (ReLU, Clip)
"""ANN activations: conversion turns each into a layer of IF neurons; no backend simulates them."""

NODE_TYPES: dict[str, type[Node]] = {
    cls.kind: cls
    for cls in (Input, Linear, Conv2d, Conv1d, Affine, ReLU, Clip, IF, AvgPool2d, MaxPool2d, AvgPool1d, MaxPool1d,
                Upsample, Pad, Flatten, Reshape, Add, Concat, Readout)
}


# --------------------------------------------------------------------------- shapes
def _conv_out(size: int, k: int, s: int, p: int, d: int = 1) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def spatial(node: Node) -> dict[str, tuple[int, ...]]:
    """Kernel, stride, padding and dilation of a convolution or pooling node, one entry
    per spatial axis (rank 1 for ``(C, L)`` samples, 2 for ``(C, H, W)``)."""
    kernel = tuple(node.weight.shape[2:]) if hasattr(node, "weight") else tuple(node.kernel)
    ones = (1,) * len(kernel)
    return {"kernel": kernel, "stride": tuple(node.stride), "padding": tuple(node.padding),
            "dilation": tuple(getattr(node, "dilation", ones))}


Need = Callable[[bool, str], None]
SHAPES = Table("the shape rules")
"""``rule(node, in_shapes, need) -> output shape`` (per sample); ``need(cond, msg)`` raises
an :class:`SnnError` naming the node when ``cond`` is false."""


@SHAPES.register(Input)
def _input_shape(node: Input, ins: list[tuple[int, ...]], need: Need) -> tuple[int, ...]:
    return node.shape


@SHAPES.register(Concat)
def _concat_shape(node: Concat, ins: list[tuple[int, ...]], need: Need) -> tuple[int, ...]:
    need(len(ins) >= 1 and len({s[1:] for s in ins}) == 1, f"inputs {ins} differ outside the channel axis")
    return (sum(s[0] for s in ins),) + ins[0][1:]


@SHAPES.register(Add)
def _add_shape(node: Add, ins: list[tuple[int, ...]], need: Need) -> tuple[int, ...]:
    need(len(set(ins)) == 1, f"inputs have different shapes {ins}")
    need(node.gains.shape == (len(ins), ins[0][0]),
         f"gains shape {node.gains.shape} does not match {len(ins)} inputs of {ins[0][0]} channels")
    return ins[0]


def _one(ins: list[tuple[int, ...]], need: Need) -> tuple[int, ...]:
    need(len(ins) == 1, f"expects one input, got {len(ins)}")
    return ins[0]


@SHAPES.register(Linear)
def _linear_shape(node: Linear, ins: list[tuple[int, ...]], need: Need) -> tuple[int, ...]:
    s = _one(ins, need)
    need(len(s) == 1 and s[0] == node.weight.shape[1], f"input shape {s} does not match weight {node.weight.shape}")
    need(node.bias is None or node.bias.shape == (node.weight.shape[0],), "bad bias shape")
    return (node.weight.shape[0],)


def _spatial_out(node: Node, s: tuple[int, ...], need: Need) -> tuple[int, ...]:
    g = spatial(node)
    r = len(g["kernel"])
    need(len(s) == r + 1, f"needs a (C, {', '.join('HW' if r == 2 else 'L')}) input, got {s}")
    out = tuple(_conv_out(s[1 + a], g["kernel"][a], g["stride"][a], g["padding"][a], g["dilation"][a])
                for a in range(r))
    need(all(o > 0 for o in out), f"kernel larger than padded input {s}")
    return out


@SHAPES.register(Conv2d, Conv1d)
def _conv_shape(node: Conv2d, ins: list[tuple[int, ...]], need: Need) -> tuple[int, ...]:
    s = _one(ins, need)
    co, ci_g = node.weight.shape[:2]
    out = _spatial_out(node, s, need)
    need(s[0] == ci_g * node.groups and co % node.groups == 0,
         f"input channels {s[0]} do not match weight {node.weight.shape} with groups={node.groups}")
    need(node.bias is None or node.bias.shape == (co,), "bad bias shape")
    return (co,) + out


@SHAPES.register(AvgPool2d, MaxPool2d, AvgPool1d, MaxPool1d)
def _pool_shape(node: Node, ins: list[tuple[int, ...]], need: Need) -> tuple[int, ...]:
    s = _one(ins, need)
    return (s[0],) + _spatial_out(node, s, need)


@SHAPES.register(Affine)
def _affine_shape(node: Affine, ins: list[tuple[int, ...]], need: Need) -> tuple[int, ...]:
    s = _one(ins, need)
    need(node.scale.shape == (s[0],) and node.shift.shape == (s[0],),
         f"scale/shift of {node.scale.shape} for {s[0]} channels")
    return s


@SHAPES.register(Upsample)
def _upsample_shape(node: Upsample, ins: list[tuple[int, ...]], need: Need) -> tuple[int, ...]:
    s = _one(ins, need)
    need(len(s) == len(node.scale) + 1, f"scale {node.scale} for a sample of shape {s}")
    return (s[0],) + tuple(n * k for n, k in zip(s[1:], node.scale))


@SHAPES.register(Pad)
def _pad_shape(node: Pad, ins: list[tuple[int, ...]], need: Need) -> tuple[int, ...]:
    s = _one(ins, need)
    need(len(s) == len(node.padding) // 2 + 1, f"padding {node.padding} for a sample of shape {s}")
    return (s[0],) + tuple(n + node.padding[2 * a] + node.padding[2 * a + 1] for a, n in enumerate(s[1:]))


@SHAPES.register(ReLU, Clip, IF, Readout)
def _same_shape(node: Node, ins: list[tuple[int, ...]], need: Need) -> tuple[int, ...]:
    return _one(ins, need)


@SHAPES.register(Flatten)
def _flatten_shape(node: Flatten, ins: list[tuple[int, ...]], need: Need) -> tuple[int, ...]:
    return (int(np.prod(_one(ins, need))),)


@SHAPES.register(Reshape)
def _reshape_shape(node: Reshape, ins: list[tuple[int, ...]], need: Need) -> tuple[int, ...]:
    s = _one(ins, need)
    need(int(np.prod(s)) == int(np.prod(node.shape)), f"cannot reshape {s} to {node.shape}")
    return node.shape


def output_shape(node: Node, in_shapes: list[tuple[int, ...]], name: str = "?") -> tuple[int, ...]:
    """Per-sample output shape of ``node`` given its input shapes; raises on mismatch."""

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise SnnError(f"node {name!r} ({node.kind}): {msg}")

    return SHAPES.rule(node, name)(node, list(in_shapes), need)


# --------------------------------------------------------------------------- graph
@dataclass
class Graph:
    """Named nodes in topological order, edges ``(source, target)``, one input, one output.

    ``shapes`` (per-sample output shape of every node) is computed and checked on
    construction, so a graph that exists is a valid graph.

    >>> g = Graph({"input": Input((1, 8)), "conv": Conv1d(np.ones((2, 1, 3)), padding=1), "act": ReLU(),
    ...            "pool": MaxPool1d(kernel=2, stride=2), "flat": Flatten()},
    ...           [("input", "conv"), ("conv", "act"), ("act", "pool"), ("pool", "flat")], "input", "flat")
    >>> g.shapes["pool"], g.shapes["flat"]
    ((2, 4), (8,))
    >>> Graph({"input": Input((3,)), "fc": Linear(np.ones((2, 4)))}, [("input", "fc")], "input", "fc")
    Traceback (most recent call last):
    ...
    snn.errors.SnnError: node 'fc' (linear): input shape (3,) does not match weight (2, 4)
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
        """Names of nodes whose output is a 0/1 spike train: IF layers, and nodes with a
        ``spike_route`` (max-pools, flattens, reshapes, ...) whose inputs are all spike trains."""
        out: list[str] = []
        for n, node in self.nodes.items():
            if node.spiking or (node.spike_route and all(i in out for i in self.inputs_of(n))):
                out.append(n)
        return out

    def recorded_nodes(self) -> list[str]:
        """Nodes whose spikes a backend records: IF layers and max-pools of spikes (the
        nodes that emit new spike trains; ``"copy"`` routes only re-index them)."""
        return [n for n in self.spiking_nodes() if self.nodes[n].spiking or self.nodes[n].spike_route == "pool"]


def nonfinite(graph: "Graph") -> list[tuple[str, str]]:
    """``(node, field)`` of every array of ``graph`` holding NaN or inf, in graph order."""
    return [(n, f.name) for n, v in graph.nodes.items() for f in fields(v)
            if isinstance(getattr(v, f.name), np.ndarray) and getattr(v, f.name).dtype.kind == "f"
            and not np.isfinite(getattr(v, f.name)).all()]


# --------------------------------------------------------------------------- HDF5 checksums
CHECKSUM_MAGIC = b"SNN-SHA256\n"  # first bytes of a file sealed by seal_file (its HDF5 user block)
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ENTRY_BYTES = 160  # user-block room per array in the manifest


def _sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def create_h5(path: str | os.PathLike, n_arrays: int) -> "h5py.File":  # noqa: F821
    """Open ``path`` for writing with an HDF5 user block large enough for :func:`seal_file`'s
    manifest of ``n_arrays`` arrays (a power of two >= 512 bytes, which HDF5 skips)."""
    import h5py

    need, block = 1024 + _ENTRY_BYTES * max(n_arrays, 1), 512
    while block < need:
        block *= 2
    return h5py.File(path, "w", userblock_size=block)


def seal_file(path: str | os.PathLike) -> None:
    """Write a checksum manifest into the user block of a closed HDF5 file made by :func:`create_h5`.

    The manifest (``SNN-SHA256`` then one line of JSON) holds the file's size, the
    SHA-256 of every byte after the user block (arrays, attributes and HDF5 metadata),
    and for every dataset its path, byte range and SHA-256, so :func:`verify_file` can
    name the damaged array without trusting the HDF5 structure.
    """
    import h5py

    arrays: list[list[Any]] = []
    with h5py.File(path, "r") as f:
        block = int(f.userblock_size)

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset) and obj.id.get_offset() is not None:
                owner = obj.parent.attrs.get("name", obj.attrs.get("node"))
                arrays.append([obj.name, int(obj.id.get_offset()), int(obj.id.get_storage_size()),
                               None if owner is None else str(owner)])

        f.visititems(visit)
    raw = Path(path).read_bytes()
    for entry in arrays:
        entry.append(_sha256(memoryview(raw)[entry[1]:entry[1] + entry[2]]))
    head = CHECKSUM_MAGIC + json.dumps({"size": len(raw), "block": block, "sha256": _sha256(memoryview(raw)[block:]),
                                        "arrays": arrays}).encode() + b"\n"
    if len(head) > block:  # pragma: no cover - create_h5 sizes the block for the arrays
        raise SnnError(f"{path}: checksum manifest of {len(head)} bytes does not fit the {block}-byte user block")
    with open(path, "r+b") as fh:
        fh.write(head.ljust(block, b" "))


def verify_file(path: str | os.PathLike, what: str = "file") -> bool:
    """Check an HDF5 file against the manifest :func:`seal_file` wrote, before HDF5 reads it
    (a damaged HDF5 header can make the library fail or hang, so nothing is parsed first).

    Returns True if verified, False for a file written before checksums existed (it
    starts with the HDF5 signature): such a file is read unverified, with a warning.
    Raises :class:`SnnError` naming the file and the damaged dataset (and its node), or
    saying that the damage is outside the arrays, or that the file is truncated.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(min(size, 1 << 22))
    if head.startswith(HDF5_SIGNATURE):
        warnings.warn(f"{path} was written without checksums (by an older snn): its arrays cannot be verified; "
                      "save it again to add them", UserWarning, stacklevel=3)
        return False
    bad = f"{path} is corrupted"
    end = head.find(b"\n", len(CHECKSUM_MAGIC))
    if not head.startswith(CHECKSUM_MAGIC) or end < 0:
        raise SnnError(f"{bad} or not an snn {what} (neither a checksum manifest nor an HDF5 signature at its start)")
    try:
        manifest = json.loads(head[len(CHECKSUM_MAGIC):end])
        want_size, block, digest = int(manifest["size"]), int(manifest["block"]), str(manifest["sha256"])
        arrays = list(manifest["arrays"])
    except (ValueError, KeyError, TypeError) as e:
        raise SnnError(f"{bad} (its checksum manifest is damaged: {type(e).__name__})") from None
    if size != want_size:
        raise SnnError(f"{bad}: {size} bytes where {want_size} were written ("
                       + ("truncated" if size < want_size else "bytes appended") + ")")
    raw = path.read_bytes()
    for entry in arrays:
        try:
            name, off, n, owner, sha = entry
            ok = _sha256(memoryview(raw)[int(off):int(off) + int(n)]) == sha
        except (ValueError, TypeError):
            raise SnnError(f"{bad} (its checksum manifest is damaged)") from None
        if not ok:
            raise SnnError(f"{bad}: dataset {name}" + (f" (node {owner!r})" if owner else "")
                           + " fails its checksum (restore or rewrite the file)")
    if _sha256(memoryview(raw)[block:]) != digest:
        raise SnnError(f"{bad}: it fails its checksum outside the arrays (HDF5 structure or attributes damaged)")
    return True


def read_array(d: "h5py.Dataset") -> np.ndarray:  # noqa: F821
    """The array of an HDF5 dataset, checked before reading: a numeric dtype, and no more
    bytes than the file holds (a header claiming a huge shape is refused, not allocated)."""
    import h5py

    path = d.file.filename
    if not isinstance(d, h5py.Dataset):
        raise SnnError(f"{path}: {d.name} is not a dataset")
    if d.dtype.kind not in "biuf":
        raise SnnError(f"{path}: dataset {d.name} holds {d.dtype}, not numbers")
    nbytes = float(np.prod(d.shape, dtype=np.float64)) * d.dtype.itemsize if d.shape is not None else 0.0
    size = os.path.getsize(path) if os.path.exists(path) else 0
    if nbytes > size:
        raise SnnError(f"{path}: dataset {d.name} claims shape {d.shape} ({nbytes:.3g} bytes), more than the "
                       f"file's {size} bytes: the file is corrupted")
    return d[()]


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


def n_arrays(graph: Graph) -> int:
    """The number of arrays :func:`write_graph` stores for ``graph``."""
    return sum(isinstance(getattr(v, f.name), np.ndarray) for v in graph.nodes.values() for f in fields(v))


def read_graph(g: "h5py.Group") -> Graph:  # noqa: F821
    """The graph stored by :func:`write_graph` (arrays read through :func:`read_array`)."""
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
                kw[f.name] = read_array(ng[f.name])
            elif f.name in ng.attrs:
                raw = ng.attrs[f.name]
                kw[f.name] = None if raw == "__none__" else json.loads(raw)
        nodes[name] = cls(**kw)
    return Graph(nodes=nodes, edges=[tuple(e) for e in json.loads(g.attrs["edges"])],
                 input=str(g.attrs["input"]), output=str(g.attrs["output"]))


# --------------------------------------------------------------------------- evaluation
def _pad(x: np.ndarray, p: tuple[int, ...], value: float = 0.0) -> np.ndarray:
    """Pad the last ``len(p)`` axes of ``x`` by ``p[a]`` on both sides."""
    return np.pad(x, ((0, 0),) * (x.ndim - len(p)) + tuple((q, q) for q in p), constant_values=value)


def _windows(x: np.ndarray, k: tuple[int, ...], s: tuple[int, ...], d: tuple[int, ...]) -> np.ndarray:
    """(N, C, *spatial) -> (N, C, *out, *k) strided windows over the last ``len(k)`` axes."""
    r = len(k)
    span = tuple(d[a] * (k[a] - 1) + 1 for a in range(r))
    v = np.lib.stride_tricks.sliding_window_view(x, span, axis=tuple(range(2, 2 + r)))
    return v[(slice(None), slice(None)) + tuple(slice(None, None, q) for q in s)
             + tuple(slice(None, None, q) for q in d)]


EVAL = Table("the float64 evaluator")
"""``rule(node, xs) -> y``: one ANN node on a batch in float64 (``IF`` acts as ReLU,
``Readout`` as identity), inputs and output (N, *sample shape)."""


@EVAL.register(Linear)
def _linear_eval(node: Linear, xs: list[np.ndarray]) -> np.ndarray:
    y = xs[0] @ node.weight.T
    return y + node.bias if node.bias is not None else y


@EVAL.register(Conv2d, Conv1d)
def _conv_eval(node: Conv2d, xs: list[np.ndarray]) -> np.ndarray:
    g = spatial(node)
    r = len(g["kernel"])
    win = _windows(_pad(xs[0], g["padding"]), g["kernel"], g["stride"], g["dilation"])  # N, C, *out, *k
    n, out = win.shape[0], win.shape[2:2 + r]
    co, cig = node.weight.shape[:2]
    groups = node.groups
    win = win.reshape((n, groups, cig) + win.shape[2:])
    w = node.weight.reshape((groups, co // groups, cig) + g["kernel"])
    o, k = "hwl"[:r], "ijk"[:r]
    y = np.einsum(f"ngc{o}{k},gqc{k}->ngq{o}", win, w, optimize=True).reshape((n, co) + out)
    return y + node.bias.reshape((1, -1) + (1,) * r) if node.bias is not None else y


def _chan(v: np.ndarray, ndim: int) -> np.ndarray:
    """A per-channel vector shaped to broadcast over (N, C, ...)."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


@EVAL.register(Affine)
def _affine_eval(node: Affine, xs: list[np.ndarray]) -> np.ndarray:
    return xs[0] * _chan(node.scale, xs[0].ndim) + _chan(node.shift, xs[0].ndim)


@EVAL.register(ReLU, IF)
def _relu_eval(node: Node, xs: list[np.ndarray]) -> np.ndarray:
    return np.maximum(xs[0], 0.0)


@EVAL.register(Clip)
def _clip_eval(node: Clip, xs: list[np.ndarray]) -> np.ndarray:
    if node.levels:
        return np.floor(np.clip(xs[0] / node.ceiling, 0.0, 1.0) * node.levels + 0.5) / node.levels * node.ceiling
    return np.clip(xs[0], 0.0, node.ceiling)


@EVAL.register(Upsample)
def _upsample_eval(node: Upsample, xs: list[np.ndarray]) -> np.ndarray:
    y = xs[0]
    for a, k in enumerate(node.scale):
        y = np.repeat(y, k, axis=2 + a)
    return y


@EVAL.register(Pad)
def _pad_eval(node: Pad, xs: list[np.ndarray]) -> np.ndarray:
    p = node.padding
    return np.pad(xs[0], ((0, 0), (0, 0)) + tuple((p[2 * a], p[2 * a + 1]) for a in range(len(p) // 2)))


@EVAL.register(AvgPool2d, AvgPool1d)
def _avgpool_eval(node: Node, xs: list[np.ndarray]) -> np.ndarray:
    g = spatial(node)
    axes = tuple(range(-len(g["kernel"]), 0))
    return _windows(_pad(xs[0], g["padding"]), g["kernel"], g["stride"], g["dilation"]).mean(axis=axes)


@EVAL.register(MaxPool2d, MaxPool1d)
def _maxpool_eval(node: Node, xs: list[np.ndarray]) -> np.ndarray:
    g = spatial(node)
    axes = tuple(range(-len(g["kernel"]), 0))
    return _windows(_pad(xs[0], g["padding"], -np.inf), g["kernel"], g["stride"], g["dilation"]).max(axis=axes)


@EVAL.register(Flatten)
def _flatten_eval(node: Flatten, xs: list[np.ndarray]) -> np.ndarray:
    return xs[0].reshape(len(xs[0]), -1)


@EVAL.register(Reshape)
def _reshape_eval(node: Reshape, xs: list[np.ndarray]) -> np.ndarray:
    return xs[0].reshape((len(xs[0]),) + node.shape)


@EVAL.register(Add)
def _add_eval(node: Add, xs: list[np.ndarray]) -> np.ndarray:
    return sum(_chan(g, x.ndim) * x for g, x in zip(node.gains, xs))


@EVAL.register(Concat)
def _concat_eval(node: Concat, xs: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(xs, axis=1)


@EVAL.register(Readout)
def _readout_eval(node: Readout, xs: list[np.ndarray]) -> np.ndarray:
    return xs[0]


def eval_node(node: Node, xs: list[np.ndarray], name: str = "?") -> np.ndarray:
    """Evaluate one ANN node on a batch in float64 (see :data:`EVAL`)."""
    return EVAL.rule(node, name)(node, xs)


def evaluate(graph: Graph, x: np.ndarray, keep: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Float64 reference evaluation of an ANN graph on a batch ``x`` (N, *input shape).

    Returns ``{"output": y}`` plus the outputs of the nodes named in ``keep``.

    >>> g = Graph({"input": Input((2,)), "fc": Linear([[1.0, -1.0]]), "act": Clip(ceiling=0.5)},
    ...           [("input", "fc"), ("fc", "act")], "input", "act")
    >>> evaluate(g, [[2.0, 1.0], [0.2, 0.0], [0.0, 1.0]])["output"].ravel().tolist()
    [0.5, 0.2, 0.0]
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
        vals[name] = x if isinstance(node, Input) else eval_node(node, [vals[i] for i in ins], name)
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
