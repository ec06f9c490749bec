"""Fixed-point weights as a neuromorphic chip stores them (:func:`quantize`).

Per layer (every node with weights), one shared exponent ``e`` and a signed ``b``-bit
mantissa per weight, as Loihi stores a synapse group's weights (mantissa x 2^exponent)::

    m_max = 2^(b-1) - 1
    e     = ceil(log2(max|W| / m_max))         # the smallest exponent at which max|W| fits
    W_q   = clip(round(W / 2^e), -m_max, m_max) * 2^e
    b_q   = round(b / 2^e) * 2^e               # biases on the same grid (a wider mantissa)

Rounding is to nearest (ties to even). The quantised network is an ordinary SNN graph whose
weights are exact multiples of ``2^e``: both backends simulate it like any network (their
float64 sums of such values are exact), and the energy model prices it like any network. The
mantissas and exponents per layer are in ``meta["quantization"]``.

One rule per node type (:data:`RULES`); the supported set is its keys: every node type of a
converted (SNN) graph. ANN activations are refused (quantise a converted network).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

from snn import ir
from snn.errors import SnnError
from snn.network import SpikingNetwork

BITS = (2, 16)
"""The accepted weight widths, inclusive (Loihi: 1 to 8 bits; 8, 6 and 4 in the reference table)."""


def mantissa_max(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def exponent(w: np.ndarray, bits: int) -> int:
    """The shared exponent of one layer's weights ``w`` at ``bits`` bits."""
    peak = float(np.max(np.abs(w))) if w.size else 0.0
    if peak == 0.0:
        return 0
    e = math.ceil(math.log2(peak / mantissa_max(bits)))
    while peak / 2.0 ** e > mantissa_max(bits) + 0.5:  # guard log2 rounding
        e += 1
    return e


def _q(w: np.ndarray, e: int, bits: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(quantised values, integer mantissas) of ``w`` at exponent ``e``; ``bits=None``: no clipping."""
    m = np.round(w / 2.0 ** e)
    if bits is not None:
        m = np.clip(m, -mantissa_max(bits), mantissa_max(bits))
    return m * 2.0 ** e, m.astype(np.int64)


Rule = Callable[[ir.Node, int], tuple[ir.Node, dict[str, Any] | None]]
RULES = ir.Table("the weight quantiser")
"""``rule(node, bits) -> (quantised node, record or None)`` per SNN node type."""


def _same(node: ir.Node, bits: int) -> tuple[ir.Node, None]:
    return node, None


RULES.register(ir.Input, ir.IF, ir.Readout, ir.AvgPool2d, ir.MaxPool2d, ir.AvgPool1d, ir.MaxPool1d, ir.Upsample,
               ir.Pad, ir.Flatten, ir.Reshape, ir.Concat)(_same)


def _record(e: int, m: np.ndarray, w: np.ndarray, wq: np.ndarray, bias_m: np.ndarray | None) -> dict[str, Any]:
    return {"exponent": e, "max_mantissa": int(np.abs(m).max()) if m.size else 0,
            "zero_weights": float(np.mean(m == 0)) if m.size else 0.0,
            "max_abs_error": float(np.abs(wq - w).max()) if w.size else 0.0,
            "bias_max_mantissa": None if bias_m is None else int(np.abs(bias_m).max())}


@RULES.register(ir.Linear, ir.Conv1d, ir.Conv2d)
def _weights(node: ir.Node, bits: int) -> tuple[ir.Node, dict[str, Any]]:
    e = exponent(node.weight, bits)
    wq, m = _q(node.weight, e, bits)
    bq, bm = (None, None) if node.bias is None else _q(node.bias, e, None)
    return dataclasses.replace(node, weight=wq, bias=bq), _record(e, m, node.weight, wq, bm)


@RULES.register(ir.Affine)
def _affine(node: ir.Affine, bits: int) -> tuple[ir.Node, dict[str, Any]]:
    e = exponent(node.scale, bits)
    sq, m = _q(node.scale, e, bits)
    hq, hm = _q(node.shift, e, None)
    return ir.Affine(sq, hq), _record(e, m, node.scale, sq, hm)


@RULES.register(ir.Add)
def _add(node: ir.Add, bits: int) -> tuple[ir.Node, dict[str, Any]]:
    e = exponent(node.gains, bits)
    gq, m = _q(node.gains, e, bits)
    return ir.Add(gq), _record(e, m, node.gains, gq, None)


def quantize(net: SpikingNetwork | ir.Graph, weight_bits: int = 8) -> SpikingNetwork:
    """``net`` with every layer's weights in ``weight_bits``-bit fixed point (module docstring).

    Args:
        net: a converted network (or its SNN graph).
        weight_bits: mantissa width including the sign, 2 to 16 (Loihi: up to 8).

    Returns:
        a new :class:`SpikingNetwork`: same graph structure and names, quantised weights,
        ``meta["quantization"]`` = ``{"weight_bits", "layers": {name: {"exponent",
        "max_mantissa", "zero_weights", "max_abs_error", "bias_max_mantissa"}}}``.

    Raises:
        SnnError: a bit width out of range; a node type without a rule (an ANN activation).

    >>> import torch, snn
    >>> net = snn.convert(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)),
    ...                   torch.rand(32, 4))
    >>> q = snn.quantize(net, weight_bits=4)
    >>> w, e = q.graph.nodes["0"].weight, q.meta["quantization"]["layers"]["0"]["exponent"]
    >>> bool(((w / 2.0 ** e) == (w / 2.0 ** e).round()).all()), int(abs(w / 2.0 ** e).max()) <= 7
    (True, True)
    """
    if isinstance(weight_bits, bool) or not isinstance(weight_bits, (int, np.integer)) or \
            not BITS[0] <= weight_bits <= BITS[1]:
        raise SnnError(f"weight_bits must be an integer in [{BITS[0]}, {BITS[1]}], got {weight_bits!r}")
    base = net if isinstance(net, SpikingNetwork) else SpikingNetwork(net)
    if not isinstance(base.graph, ir.Graph):
        raise SnnError(f"quantize takes a SpikingNetwork or an ir.Graph, got {type(net).__name__}")
    g = base.graph
    for name, node in g.nodes.items():
        RULES.rule(node, name)
    nodes: dict[str, ir.Node] = {}
    layers: dict[str, dict[str, Any]] = {}
    for name, node in g.nodes.items():
        nodes[name], rec = RULES[type(node)](node, int(weight_bits))
        if rec is not None:
            layers[name] = rec
    meta = dict(base.meta)
    meta["quantization"] = {"weight_bits": int(weight_bits), "scheme": "per-layer shared exponent, signed mantissa, "
                            "round to nearest; biases on the weights' grid", "layers": layers}
    return SpikingNetwork(graph=ir.Graph(nodes, list(g.edges), g.input, g.output), ann=base.ann, meta=meta)
