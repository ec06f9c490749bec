"""Trace a PyTorch ``nn.Module`` into an ANN :class:`snn.ir.Graph` with torch.fx.

One table maps torch operations to IR nodes (:data:`MODULE_RULES`, :data:`FUNCTION_RULES`,
:data:`METHOD_RULES`); anything else raises :class:`ConversionError` naming the node, its
op and the supported list. BatchNorm is folded into the preceding Linear/Conv2d when that
layer feeds only the BatchNorm (``w' = w * g / s``, ``b' = (b - mu) * g / s + beta`` with
``s = sqrt(var + eps)``); otherwise it becomes an ``Affine`` node. Dropout and Identity
are removed (the model is traced in eval mode). The user's model is never modified: a
deep copy is traced.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import operator
import os
from typing import Any, Callable

import numpy as np
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

from snn import ir
from snn.errors import ConversionError


def _np(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().double().numpy()


class _Tracer(torch.fx.Tracer):
    """Keeps the project's own composite layers (see :data:`LEAF_TYPES`) as leaves."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LEAF_TYPES) or super().is_leaf_module(m, qualname)


# --------------------------------------------------------------------------- rules
# A rule takes (builder, fx node, module or None) and returns the IR node to add, or
# None when the op is an alias of its input (dropout, identity).
Rule = Callable[["_Builder", torch.fx.Node, Any], "ir.Node | None"]


def _conv_rule(b: "_Builder", n: torch.fx.Node, m: nn.Conv2d) -> ir.Node:
    """A torch convolution of any spatial rank -> the IR node of the same rank (:data:`CONV_NODES`)."""
    if m.padding_mode != "zeros":
        b.fail(n, f"{type(m).__name__} padding_mode={m.padding_mode!r} (only 'zeros' is supported)")
    rank = len(m.kernel_size)
    pad = m.padding
    if isinstance(pad, str):
        if pad == "valid":
            pad = (0,) * rank
        else:  # 'same' with stride 1: symmetric only when d*(k-1) is even
            tot = [m.dilation[i] * (m.kernel_size[i] - 1) for i in range(rank)]
            if any(t % 2 for t in tot):
                b.fail(n, f"{type(m).__name__} padding='same' with asymmetric padding")
            pad = tuple(t // 2 for t in tot)
    return CONV_NODES[type(m)](weight=_np(m.weight), bias=_np(m.bias), stride=m.stride, padding=pad,
                               dilation=m.dilation, groups=m.groups)


def _bn_rule(b: "_Builder", n: torch.fx.Node, m: nn.modules.batchnorm._BatchNorm) -> ir.Node | None:
    if m.running_mean is None or m.running_var is None:
        b.fail(n, f"{type(m).__name__} without running statistics (track_running_stats=False)")
    s = torch.sqrt(m.running_var.double() + m.eps)
    g = m.weight.double() if m.weight is not None else torch.ones_like(s)
    beta = m.bias.double() if m.bias is not None else torch.zeros_like(s)
    scale = (g / s).detach().numpy()
    shift = (beta - m.running_mean.double() * g / s).detach().numpy()
    return b.fold_affine(n, scale, shift)


POOL_NODES: dict[tuple[str, int], type[ir.Node]] = {("avg", 1): ir.AvgPool1d, ("avg", 2): ir.AvgPool2d,
                                                  ("max", 1): ir.MaxPool1d, ("max", 2): ir.MaxPool2d}
"""(pooling, spatial rank) -> IR node."""


def _rank(b: "_Builder", n: torch.fx.Node, what: str, want: int | None = None) -> int:
    """Spatial rank of the node's input sample ((C, L): 1, (C, H, W): 2), checked against ``want``."""
    r = len(b.shape_of(n.args[0])) - 1
    if r not in (1, 2) or (want is not None and r != want):
        b.fail(n, f"{what} of a sample of shape {b.shape_of(n.args[0])}")
    return r


def _tuple(x: Any, r: int) -> tuple[int, ...]:
    return tuple(int(v) for v in x) if isinstance(x, (tuple, list)) else (int(x),) * r


def _adaptive_avg(b: "_Builder", n: torch.fx.Node, out_size: Any, want: int) -> ir.Node:
    in_shape = b.shape_of(n.args[0])
    r = _rank(b, n, "adaptive average pooling", want)
    osz = tuple(in_shape[1 + i] if o is None else int(o) for i, o in enumerate(
        out_size if isinstance(out_size, (tuple, list)) else (out_size,) * r))
    if any(in_shape[1 + i] % osz[i] for i in range(r)):
        b.fail(n, f"adaptive average pooling from {in_shape[1:]} to {osz} (sizes must divide)")
    k = tuple(in_shape[1 + i] // osz[i] for i in range(r))
    return POOL_NODES["avg", r](kernel=k, stride=k)


def _avgpool(b: "_Builder", n: torch.fx.Node, want: int, kernel: Any, stride: Any, padding: Any,
             ceil_mode: bool, count_include_pad: bool, divisor_override: Any = None) -> ir.Node:
    r = _rank(b, n, "average pooling", want)
    what = f"AvgPool{r}d"
    if ceil_mode:
        b.fail(n, f"{what} with ceil_mode=True")
    if divisor_override is not None:
        b.fail(n, f"{what} with divisor_override")
    if not count_include_pad and any(_tuple(padding, r)):
        b.fail(n, f"{what} with count_include_pad=False and padding")
    return POOL_NODES["avg", r](kernel=_tuple(kernel, r),
                                stride=_tuple(kernel if stride in (None, []) else stride, r), padding=_tuple(padding, r))


def _maxpool(b: "_Builder", n: torch.fx.Node, want: int, kernel: Any, stride: Any, padding: Any,
             dilation: Any, ceil_mode: bool, return_indices: bool) -> ir.Node:
    r = _rank(b, n, "max pooling", want)
    if ceil_mode or return_indices:
        b.fail(n, f"MaxPool{r}d with ceil_mode or return_indices")
    return POOL_NODES["max", r](kernel=_tuple(kernel, r), stride=_tuple(kernel if stride in (None, []) else stride, r),
                                padding=_tuple(padding, r), dilation=_tuple(dilation, r))


def _mean(b: "_Builder", n: torch.fx.Node, _m: Any = None) -> list[ir.Node]:
    """``x.mean(dims)`` over all spatial axes: a global average pool (then a flatten unless
    ``keepdim``)."""
    in_shape = b.shape_of(n.args[0])
    r = _rank(b, n, "mean")
    dims = _arg(n, 1, "dim", None)
    dims = {(int(d) + len(in_shape) + 1) % (len(in_shape) + 1) for d in (dims if isinstance(dims, (tuple, list))
                                                                         else [dims])} if dims is not None else None
    if dims != set(range(2, 2 + r)) or _arg(n, 3, "dtype", None) is not None:
        b.fail(n, f"mean over dims {_arg(n, 1, 'dim', None)} of a (N, {', '.join(map(str, in_shape))}) tensor "
                  f"(only over all spatial dims, {tuple(range(2, 2 + r))})")
    pool = POOL_NODES["avg", r](kernel=in_shape[1:], stride=in_shape[1:])
    return [pool] if _arg(n, 2, "keepdim", False) else [pool, ir.Flatten()]


def _clip(b: "_Builder", n: torch.fx.Node, low: float, high: float) -> ir.Node:
    if low != 0:
        b.fail(n, f"a clip to [{low}, {high}] (only [0, a]: ReLU6, Hardtanh(0, a))")
    return ir.Clip(ceiling=high)


def _upsample(b: "_Builder", n: torch.fx.Node, size: Any, scale: Any, mode: str, **extra: Any) -> ir.Node:
    in_shape, out_shape = b.shape_of(n.args[0]), b.shape_of(n)
    r = _rank(b, n, "upsampling")
    if mode != "nearest":
        b.fail(n, f"upsampling with mode={mode!r} (only 'nearest')")
    factors = tuple(o // i for o, i in zip(out_shape[1:], in_shape[1:]))
    if any(o != i * k for o, i, k in zip(out_shape[1:], in_shape[1:], factors)) or min(factors) < 1:
        b.fail(n, f"upsampling from {in_shape[1:]} to {out_shape[1:]} (only integer scale factors)")
    return ir.Upsample(scale=factors[:r])


def _pad(b: "_Builder", n: torch.fx.Node, pad: Any, mode: str = "constant", value: Any = 0.0) -> ir.Node:
    r = len(b.shape_of(n.args[0])) - 1
    pad = [int(v) for v in pad]
    if mode != "constant" or (value or 0.0) != 0.0:
        b.fail(n, f"padding with mode={mode!r}, value={value} (only zero padding)")
    if len(pad) > 2 * r or min(pad) < 0:
        b.fail(n, f"padding {tuple(pad)} (only non-negative padding of the {r} spatial axes)")
    pad = pad + [0] * (2 * r - len(pad))  # torch lists the last axis first
    return ir.Pad(padding=tuple(v for a in reversed(range(r)) for v in (pad[2 * a], pad[2 * a + 1])))


def _reshape_rule(b: "_Builder", n: torch.fx.Node, _m: Any = None) -> ir.Node | None:
    src = n.args[0]
    if n.meta["tensor_meta"].shape[0] != src.meta["tensor_meta"].shape[0]:
        b.fail(n, "a reshape that mixes the batch axis into the sample")
    in_shape, out_shape = b.shape_of(src), b.shape_of(n)
    if in_shape == out_shape:
        return None
    if len(out_shape) == 1:
        return ir.Flatten()
    return ir.Reshape(shape=out_shape)


def _flatten_module(b: "_Builder", n: torch.fx.Node, m: nn.Flatten) -> ir.Node | None:
    """``nn.Flatten(start_dim, end_dim)``: a reshape (a partial flatten, e.g. (C, H, W) -> (C * H, W),
    included); one that takes in the batch axis is refused by :func:`_reshape_rule`."""
    return _reshape_rule(b, n)


def _relu(b: "_Builder", n: torch.fx.Node, _m: Any = None) -> ir.Node:
    return ir.ReLU()


def _alias(b: "_Builder", n: torch.fx.Node, _m: Any = None) -> None:
    return None


def _add(b: "_Builder", n: torch.fx.Node, _m: Any = None) -> ir.Node:
    args = [a for a in n.args]
    if len(args) != 2 or not all(isinstance(a, torch.fx.Node) for a in args) or n.kwargs.get("alpha", 1) != 1:
        b.fail(n, "add of anything but two tensors (scalars and alpha are not supported)")
    if b.shape_of(args[0]) != b.shape_of(args[1]):
        b.fail(n, "add with broadcasting")
    c = b.shape_of(n)[0]
    return ir.Add(gains=np.ones((2, c)))


def _cat(b: "_Builder", n: torch.fx.Node, _m: Any = None) -> ir.Node:
    tensors = n.args[0]
    dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
    nd = len(b.shape_of(n)) + 1
    if dim < 0:
        dim += nd
    if dim != 1:
        b.fail(n, f"torch.cat along dim {dim} (only the channel axis, dim=1)")
    if not isinstance(tensors, (list, tuple)) or not all(isinstance(t, torch.fx.Node) for t in tensors):
        b.fail(n, "torch.cat of anything but a list of tensors")
    return ir.Concat()


def _arg(n: torch.fx.Node, i: int, key: str, default: Any) -> Any:
    return n.args[i] if len(n.args) > i else n.kwargs.get(key, default)


CONV_NODES: dict[type, type[ir.Node]] = {nn.Conv2d: ir.Conv2d, nn.Conv1d: ir.Conv1d}
"""Torch convolution module -> IR node of the same spatial rank."""

MODULE_RULES: dict[type, Rule] = {
    nn.Linear: lambda b, n, m: ir.Linear(weight=_np(m.weight), bias=_np(m.bias)),
    nn.Conv2d: _conv_rule,
    nn.Conv1d: _conv_rule,
    nn.BatchNorm1d: _bn_rule,
    nn.BatchNorm2d: _bn_rule,
    nn.ReLU: _relu,
    nn.AvgPool2d: lambda b, n, m: _avgpool(b, n, 2, m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                           m.count_include_pad, m.divisor_override),
    nn.AvgPool1d: lambda b, n, m: _avgpool(b, n, 1, m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                           m.count_include_pad),
    nn.AdaptiveAvgPool2d: lambda b, n, m: _adaptive_avg(b, n, m.output_size, 2),
    nn.AdaptiveAvgPool1d: lambda b, n, m: _adaptive_avg(b, n, m.output_size, 1),
    nn.MaxPool2d: lambda b, n, m: _maxpool(b, n, 2, m.kernel_size, m.stride, m.padding, m.dilation,
                                           m.ceil_mode, m.return_indices),
    nn.MaxPool1d: lambda b, n, m: _maxpool(b, n, 1, m.kernel_size, m.stride, m.padding, m.dilation,
                                           m.ceil_mode, m.return_indices),
    nn.ReLU6: lambda b, n, m: ir.Clip(ceiling=6.0),
    nn.Hardtanh: lambda b, n, m: _clip(b, n, m.min_val, m.max_val),
    nn.Upsample: lambda b, n, m: _upsample(b, n, m.size, m.scale_factor, m.mode),
    nn.ZeroPad1d: lambda b, n, m: _pad(b, n, m.padding), nn.ZeroPad2d: lambda b, n, m: _pad(b, n, m.padding),
    nn.ConstantPad1d: lambda b, n, m: _pad(b, n, m.padding, value=m.value),
    nn.ConstantPad2d: lambda b, n, m: _pad(b, n, m.padding, value=m.value),
    nn.Flatten: _flatten_module,
    nn.Dropout: _alias, nn.Dropout1d: _alias, nn.Dropout2d: _alias, nn.AlphaDropout: _alias,
    nn.Identity: _alias,
}

FUNCTION_RULES: dict[Any, Rule] = {
    F.relu: _relu, torch.relu: _relu, torch.relu_: _relu, F.relu_: _relu,
    F.dropout: _alias,
    torch.flatten: _reshape_rule,
    torch.reshape: _reshape_rule,
    operator.add: _add, operator.iadd: _add, torch.add: _add,
    torch.cat: _cat, torch.concat: _cat,
    F.avg_pool2d: lambda b, n, m: _avgpool(b, n, 2, _arg(n, 1, "kernel_size", None), _arg(n, 2, "stride", None),
                                           _arg(n, 3, "padding", 0), _arg(n, 4, "ceil_mode", False),
                                           _arg(n, 5, "count_include_pad", True),
                                           _arg(n, 6, "divisor_override", None)),
    F.avg_pool1d: lambda b, n, m: _avgpool(b, n, 1, _arg(n, 1, "kernel_size", None), _arg(n, 2, "stride", None),
                                           _arg(n, 3, "padding", 0), _arg(n, 4, "ceil_mode", False),
                                           _arg(n, 5, "count_include_pad", True)),
    F.adaptive_avg_pool2d: lambda b, n, m: _adaptive_avg(b, n, _arg(n, 1, "output_size", None), 2),
    F.adaptive_avg_pool1d: lambda b, n, m: _adaptive_avg(b, n, _arg(n, 1, "output_size", None), 1),
    F.max_pool2d: lambda b, n, m: _maxpool(b, n, 2, _arg(n, 1, "kernel_size", None), _arg(n, 2, "stride", None),
                                           _arg(n, 3, "padding", 0), _arg(n, 4, "dilation", 1),
                                           _arg(n, 5, "ceil_mode", False), _arg(n, 6, "return_indices", False)),
    F.max_pool1d: lambda b, n, m: _maxpool(b, n, 1, _arg(n, 1, "kernel_size", None), _arg(n, 2, "stride", None),
                                           _arg(n, 3, "padding", 0), _arg(n, 4, "dilation", 1),
                                           _arg(n, 5, "ceil_mode", False), _arg(n, 6, "return_indices", False)),
    F.relu6: lambda b, n, m: ir.Clip(ceiling=6.0),
    F.hardtanh: lambda b, n, m: _clip(b, n, _arg(n, 1, "min_val", -1.0), _arg(n, 2, "max_val", 1.0)),
    F.interpolate: lambda b, n, m: _upsample(b, n, _arg(n, 1, "size", None), _arg(n, 2, "scale_factor", None),
                                             _arg(n, 3, "mode", "nearest")),
    F.pad: lambda b, n, m: _pad(b, n, _arg(n, 1, "pad", None), _arg(n, 2, "mode", "constant"),
                                _arg(n, 3, "value", None)),
    torch.mean: _mean,
}

METHOD_RULES: dict[str, Rule] = {
    "relu": _relu, "relu_": _relu,
    "view": _reshape_rule, "reshape": _reshape_rule, "flatten": _reshape_rule,
    "add": _add, "add_": _add,
    "mean": _mean,
}


def _supported() -> str:
    mods = sorted(t.__name__ for t in list(MODULE_RULES) + list(LEAF_TYPES))
    funcs = sorted({getattr(f, "__module__", "") + "." + getattr(f, "__name__", str(f)) for f in FUNCTION_RULES})
    funcs = [f.replace("torch.nn.functional.", "F.").replace("_operator.", "operator.") for f in funcs]
    return (f"modules: {', '.join(mods)}; functions: {', '.join(funcs)}; "
            f"tensor methods: {', '.join(sorted(METHOD_RULES))}")


# --------------------------------------------------------------------------- builder
class _Builder:
    """Walks the fx graph once, appending IR nodes and recording fx-node -> IR-name aliases."""

    def __init__(self, gm: torch.fx.GraphModule):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.nodes: dict[str, ir.Node] = {}
        self.edges: list[tuple[str, str]] = []
        self.alias: dict[torch.fx.Node, str] = {}

    # helpers used by the rules
    def fail(self, n: torch.fx.Node, what: str) -> None:
        raise ConversionError(f"cannot convert node {self.where(n)}: {what} is not supported. "
                              f"Supported: {_supported()}")

    def where(self, n: torch.fx.Node) -> str:
        if n.op == "call_module":
            return f"'{n.target}' ({type(self.modules[n.target]).__name__})"
        if n.op == "call_function":
            return f"'{n.name}' (function {getattr(n.target, '__name__', n.target)})"
        if n.op == "call_method":
            return f"'{n.name}' (tensor method .{n.target}())"
        return f"'{n.name}' ({n.op} {n.target})"

    def shape_of(self, n: Any) -> tuple[int, ...]:
        meta = n.meta.get("tensor_meta") if isinstance(n, torch.fx.Node) else None
        if meta is None or not hasattr(meta, "shape"):
            raise ConversionError(f"node {n} does not produce a single tensor")
        return tuple(meta.shape)[1:]

    def fold_affine(self, n: torch.fx.Node, scale: np.ndarray, shift: np.ndarray) -> ir.Node | None:
        """Fold ``y = scale*x + shift`` into the producing Linear/Conv2d if it feeds only ``n``."""
        src = n.args[0]
        src_name = self.alias.get(src)
        prev = self.nodes.get(src_name) if src_name else None
        if isinstance(prev, (ir.Linear,) + tuple(CONV_NODES.values())) and len(src.users) == 1 and \
                not any(a == src_name for a, _ in self.edges):
            shape = (-1,) + (1,) * (prev.weight.ndim - 1)
            bias = prev.bias if prev.bias is not None else np.zeros(prev.weight.shape[0])
            self.nodes[src_name] = dataclasses.replace(prev, weight=prev.weight * scale.reshape(shape),
                                                       bias=bias * scale + shift)
            return None  # the BN becomes an alias of the folded layer
        return ir.Affine(scale=scale, shift=shift)

    def tensor_inputs(self, n: torch.fx.Node) -> list[torch.fx.Node]:
        if n.op == "call_function" and n.target in (torch.cat, torch.concat):
            return list(n.args[0])
        if n.op == "call_function" and n.target in (operator.add, operator.iadd, torch.add) or \
                (n.op == "call_method" and n.target in ("add", "add_")):
            return [a for a in n.args if isinstance(a, torch.fx.Node)]
        first = n.args[0] if n.args else None
        return [first] if isinstance(first, torch.fx.Node) else []

    def add(self, n: torch.fx.Node, name: str, node: ir.Node | list[ir.Node] | None) -> None:
        """Add the IR node(s) a rule made for fx node ``n``: one node, a chain of nodes (named
        ``name``, ``name.1``, ...), or None for an alias of its input."""
        if isinstance(node, list):
            first, *rest = node
            self.add(n, name, first)
            base = prev = self.alias[n]
            for k, part in enumerate(rest, 1):
                self.nodes[f"{base}.{k}"] = part
                self.edges.append((prev, f"{base}.{k}"))
                prev = f"{base}.{k}"
            self.alias[n] = prev
            return
        ins = self.tensor_inputs(n)
        for i in ins:
            if i not in self.alias:
                raise ConversionError(f"node {self.where(n)} takes {i.name!r}, which is not a traced tensor")
        if node is None:
            if len(ins) != 1:
                self.fail(n, "an identity op with several inputs")
            self.alias[n] = self.alias[ins[0]]
            return
        for field in ("weight", "bias", "scale", "shift"):
            v = getattr(node, field, None)
            if v is not None and not np.all(np.isfinite(v)):
                raise ConversionError(f"node {self.where(n)}: {field} contains NaN or inf")
        base, k = name, 1
        while name in self.nodes:  # a module called twice gets name, name_1, ...
            name = f"{base}_{k}"
            k += 1
        self.nodes[name] = node
        self.edges += [(self.alias[i], name) for i in ins]
        self.alias[n] = name

    def build(self) -> ir.Graph:
        inp, out = None, None
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                if inp is not None:
                    raise ConversionError(f"model takes more than one input ({n.name!r}); only one is supported")
                inp = "input"
                self.nodes[inp] = ir.Input(shape=self.shape_of(n))
                self.alias[n] = inp
            elif n.op == "output":
                res = n.args[0]
                if not isinstance(res, torch.fx.Node):
                    raise ConversionError("the model must return a single tensor")
                out = self.alias[res]
            elif n.op == "call_module" and not isinstance(self.modules[n.target], LEAF_TYPES) and not any(
                    type(self.modules[n.target]) is t for t in MODULE_RULES):  # by its name, even if it returns a tuple
                m = self.modules[n.target]
                self.fail(n, f"module type {type(m).__name__}" + (
                    " (a recurrent layer: its state across a sequence has no IF-neuron equivalent)"
                    if isinstance(m, nn.RNNBase) else ""))
            elif "tensor_meta" not in n.meta or not hasattr(n.meta["tensor_meta"], "shape"):
                continue  # shape arithmetic (x.size(0), getitem on sizes): used only as arguments
            elif n.op == "call_module":
                m = self.modules[n.target]
                rule = next((r for t, r in MODULE_RULES.items() if type(m) is t), None)
                if isinstance(m, LEAF_TYPES):
                    rule = LEAF_RULES[type(m)]
                if rule is None:
                    self.fail(n, f"module type {type(m).__name__}")
                self.add(n, str(n.target), rule(self, n, m))
            elif n.op == "call_function":
                rule = FUNCTION_RULES.get(n.target)
                if rule is None:
                    self.fail(n, f"function {getattr(n.target, '__module__', '')}.{getattr(n.target, '__name__', n.target)}")
                self.add(n, n.name, rule(self, n, None))
            elif n.op == "call_method":
                rule = METHOD_RULES.get(n.target)
                if rule is None:
                    self.fail(n, f"tensor method .{n.target}()")
                self.add(n, n.name, rule(self, n, None))
            else:
                self.fail(n, f"{n.op} (a parameter or buffer used directly in forward)")
        if inp is None or out is None:
            raise ConversionError("the model has no input or no output")
        return _prune(ir.Graph(nodes=self.nodes, edges=self.edges, input=inp, output=out))


def _prune(g: ir.Graph) -> ir.Graph:
    """Drop nodes the output does not depend on (e.g. shape helpers left after aliasing)."""
    live, stack = set(), [g.output]
    while stack:
        n = stack.pop()
        if n not in live:
            live.add(n)
            stack += g.inputs_of(n)
    live.add(g.input)
    return ir.Graph(nodes={n: v for n, v in g.nodes.items() if n in live},
                    edges=[e for e in g.edges if e[0] in live and e[1] in live], input=g.input, output=g.output)


# --------------------------------------------------------------------------- leaves
class OptionAShortcut(nn.Module):
    """ResNet "option A" shortcut (He et al. 2016): ``x[:, :, ::s, ::s]`` zero-padded with
    ``pad`` channels on each side. Traced as a fixed 1x1 convolution with stride ``s``
    whose weights route input channel ``c`` to output channel ``c + pad`` (exact)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 2):
        super().__init__()
        self.in_planes, self.planes, self.stride = in_planes, planes, stride
        self.pad = (planes - in_planes) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x[:, :, ::self.stride, ::self.stride]
        return F.pad(y, (0, 0, 0, 0, self.pad, self.planes - self.in_planes - self.pad))


def _option_a_rule(b: _Builder, n: torch.fx.Node, m: OptionAShortcut) -> ir.Node:
    w = np.zeros((m.planes, m.in_planes, 1, 1))
    w[np.arange(m.in_planes) + m.pad, np.arange(m.in_planes), 0, 0] = 1.0
    return ir.Conv2d(weight=w, bias=None, stride=m.stride)


class _FloorSTE(torch.autograd.Function):
    """``floor`` whose gradient is the identity (straight-through estimator)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return torch.floor(x)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return g


class QCFS(nn.Module):
    """Quantisation clip-floor-shift activation (Bu, Fang, Ding, Dai, Yu, Huang, "Optimal
    ANN-SNN conversion for high-accuracy and ultra-low-latency spiking neural networks",
    ICLR 2022) with ``levels = L`` and a trainable threshold ``theta``::

        y = theta / L * floor(L * clip(x / theta, 0, 1) + 1/2)

    The floor has a straight-through gradient, so ``theta`` and the weights learn through
    the clip. An IF layer at threshold ``theta`` that starts half-charged gives exactly
    this in ``L`` steps of a constant input, and its expected error vanishes at any T;
    :func:`snn.convert` converts it at ``theta`` (traced to :class:`snn.ir.Clip` with
    ``levels``). Make a model's ReLUs QCFS with :func:`snn.zoo.qcfs`.
    """

    def __init__(self, levels: int = 8, threshold: float = 8.0):
        super().__init__()
        if not isinstance(levels, int) or isinstance(levels, bool) or levels < 1:
            raise ConversionError(f"QCFS levels must be an integer >= 1, got {levels!r}")
        if not threshold > 0:
            raise ConversionError(f"QCFS threshold must be > 0, got {threshold!r}")
        self.levels = levels
        self.threshold = nn.Parameter(torch.tensor(float(threshold)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.clamp(x / self.threshold, 0.0, 1.0)
        return _FloorSTE.apply(y * self.levels + 0.5) / self.levels * self.threshold

    def extra_repr(self) -> str:
        return f"levels={self.levels}, threshold={float(self.threshold.detach()):.4g}"


def _qcfs_rule(b: _Builder, n: torch.fx.Node, m: QCFS) -> ir.Node:
    theta = float(m.threshold.detach())
    if not theta > 0:
        b.fail(n, f"a QCFS threshold of {theta} (it must stay > 0)")
    return ir.Clip(ceiling=theta, levels=m.levels)


LEAF_RULES: dict[type, Rule] = {OptionAShortcut: _option_a_rule, QCFS: _qcfs_rule}
LEAF_TYPES: tuple[type, ...] = tuple(LEAF_RULES)


# --------------------------------------------------------------------------- entry
def trace(model: nn.Module, example: torch.Tensor) -> ir.Graph:
    """Trace ``model`` (any mode; a copy is put in eval mode) into an ANN graph.

    ``example``: a batch of inputs, ``(N, *sample shape)``, used for shape propagation.
    ``model`` may also be the path of an ONNX file, read by :func:`snn.onnx.read_onnx`.
    """
    if isinstance(model, (str, os.PathLike)):
        from snn.onnx import read_onnx

        return read_onnx(model, tuple(torch.as_tensor(example).shape[1:]))
    if not isinstance(model, nn.Module):
        raise ConversionError(f"expected a torch.nn.Module, got {type(model).__name__}")
    m = copy.deepcopy(model).eval().to("cpu", torch.float32)
    try:
        gm = torch.fx.GraphModule(m, _Tracer().trace(m))
    except Exception as e:  # fx raises many types for data-dependent control flow
        raise ConversionError(f"torch.fx could not trace {type(model).__name__}: {e}") from e
    full = torch.as_tensor(example, dtype=torch.float32)
    ex = full[:2].cpu()
    if len(ex) < 2:
        ex = torch.cat([ex, ex])
    with torch.no_grad():
        try:  # the model itself first: fx's ShapeProp prints a traceback of its own on failure
            m(ex)
            with contextlib.redirect_stderr(io.StringIO()):
                ShapeProp(gm).propagate(ex)
        except Exception as e:
            raise ConversionError(input_mismatch(model, tuple(full.shape[1:]), e, f"data of shape {tuple(full.shape)}"))\
                from None
    return _Builder(gm).build()


def expected_input(model: nn.Module) -> str | None:
    """What the first layer with weights of ``model`` takes (``"its first layer 'fc1' (Linear)
    takes 784 input features"``), or None when it has none of the known kinds."""
    for name, m in model.named_modules():
        size = (f"{m.in_features} input features" if isinstance(m, nn.Linear) else
                f"{m.in_channels} input channels" if isinstance(m, nn.modules.conv._ConvNd) else
                f"{m.input_size} input features per step" if isinstance(m, nn.RNNBase) else None)
        if size:
            return f"its first layer '{name}' ({type(m).__name__}) takes {size}"
    return None


def input_mismatch(model: nn.Module, sample_shape: tuple[int, ...], error: BaseException, what: str) -> str:
    """One line: ``model`` cannot run on samples of ``sample_shape``: what it expects and
    the first line of torch's own reason (the root of fx's wrapped errors)."""
    root = error
    while root.__cause__ is not None:
        root = root.__cause__
    reason = (str(root).strip().splitlines() or [type(root).__name__])[0]
    if "ShapeProp error" in reason:  # fx's wrapper without a cause: keep only torch's message
        reason = type(root).__name__
    expects = expected_input(model)
    return (f"{type(model).__name__} does not accept samples of shape {sample_shape} ({what})"
            + (f": {expects}" if expects else "") + f" (torch: {reason[:200]})")
