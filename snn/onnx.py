"""ONNX models in: an ONNX file -> ANN :class:`snn.ir.Graph`, with the ``onnx`` package alone.

``snn.convert("model.onnx", calibration)`` traces the file here instead of through torch.fx;
everything after the trace (calibration, ReLU -> IF) is the same. One table maps ONNX ops to
IR nodes (:data:`OPS`), the counterpart of :mod:`snn.trace`'s tables for torch ops; an op
outside it raises the same :class:`ConversionError` a torch model gets, naming the node and
the op. Shape arithmetic that exporters write around reshapes (``Shape``, ``Gather``,
``Concat`` of constants, ...) is folded as constants (:data:`CONSTANT_OPS`).

Why not onnx2torch: onnx2torch 1.5.15 imports torchvision when it is imported (its NMS
converter), and no torchvision build on PyPI loads with the CPU build of torch this project
installs (its compiled ops link against torch's CUDA libraries). The ``onnx`` package is
enough to read the graph and its weights, which is all a conversion needs.

Weights are read in the file's precision (float32 for torch exports) and carried in float64,
as the torch tracer does, so an ONNX export of a model converts to the same network as the
model itself, except where the exporter already folded BatchNorm into a convolution in
float32 (torch does in eval mode): that network differs from ours by float32 rounding.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import numpy as np

from snn import ir
from snn.errors import ConversionError

_POOL = {("avg", 1): ir.AvgPool1d, ("avg", 2): ir.AvgPool2d, ("max", 1): ir.MaxPool1d, ("max", 2): ir.MaxPool2d}
_CONV = {1: ir.Conv1d, 2: ir.Conv2d}
BATCH = -(2 ** 40)
"""The value a folded ``Shape`` gives the batch axis (any batch size)."""


def _onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:  # pragma: no cover - the test extra installs it
        raise ConversionError("reading ONNX models needs the 'onnx' package: pip install 'snn[onnx]'") from e
    return onnx, numpy_helper


class _Reader:
    """Walks the ONNX graph once: constants are folded with numpy, tensors become IR nodes."""

    def __init__(self, model: Any, path: Path):
        _, self.nh = _onnx()
        self.path = path
        self.g = model.graph
        self.const: dict[str, np.ndarray] = {t.name: self.nh.to_array(t).copy() for t in self.g.initializer}
        self.live: dict[str, str] = {}  # tensor -> IR node carrying it
        self.nodes: dict[str, ir.Node] = {}
        self.edges: list[tuple[str, str]] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.users: dict[str, int] = {}
        for n in self.g.node:
            for i in n.input:
                self.users[i] = self.users.get(i, 0) + 1

    # helpers for the rules
    def fail(self, n: Any, what: str) -> None:
        raise ConversionError(f"cannot convert node {self.where(n)}: {what} is not supported. "
                              f"Supported ONNX ops: {', '.join(sorted(OPS))}; constant shape arithmetic: "
                              f"{', '.join(sorted(CONSTANT_OPS))}")

    def where(self, n: Any) -> str:
        return f"'{self.ir_name(n)}' (ONNX op {n.op_type})"

    def ir_name(self, n: Any) -> str:
        """A module-path-like name: ``/features/features.0/Conv`` -> ``features.0``."""
        parts = [p for p in (n.name or "").split("/") if p]
        return parts[-2] if len(parts) >= 2 else (parts[0] if parts else n.op_type).lower()

    def attrs(self, n: Any) -> dict[str, Any]:
        import onnx

        return {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}

    def c(self, n: Any, i: int, default: Any = None) -> Any:
        """Input ``i`` of ``n`` as a constant (``default`` when absent)."""
        if i >= len(n.input) or not n.input[i]:
            return default
        name = n.input[i]
        if name not in self.const:
            self.fail(n, f"a non-constant input {i} ({name!r}) where a constant is needed")
        return self.const[name]

    def x(self, n: Any, i: int = 0) -> str:
        name = n.input[i]
        if name not in self.live:
            self.fail(n, f"input {name!r}, which is neither a network tensor nor a constant,")
        return self.live[name]

    def shape(self, n: Any, i: int = 0) -> tuple[int, ...]:
        return self.shapes[self.x(n, i)]

    def add(self, n: Any, node: ir.Node | None, ins: list[str] | None = None) -> None:
        """Add ``node`` for ONNX node ``n`` (its inputs: ``ins``, default the first input);
        None makes the output an alias of the input."""
        ins = [self.x(n, 0)] if ins is None else ins
        if node is None:
            self.live[n.output[0]] = ins[0]
            return
        for f in ("weight", "bias", "scale", "shift"):
            v = getattr(node, f, None)
            if v is not None and not np.all(np.isfinite(v)):
                raise ConversionError(f"node {self.where(n)}: {f} contains NaN or inf")
        base = name = self.ir_name(n)
        k = 1
        while name in self.nodes:
            name = f"{base}_{k}"
            k += 1
        self.nodes[name] = node
        self.edges += [(i, name) for i in ins]
        self.shapes[name] = ir.output_shape(node, [self.shapes[i] for i in ins], name)
        self.live[n.output[0]] = name

    def only_user(self, src: str, n: Any) -> bool:
        """Whether ONNX node ``n`` is the only consumer of its first input, IR node ``src`` (for folding)."""
        return self.users.get(n.input[0], 0) == 1 and not any(a == src for a, _ in self.edges) and \
            n.input[0] not in [o.name for o in self.g.output]

    # the walk
    def read(self, example_shape: tuple[int, ...] | None) -> ir.Graph:
        inputs = [i for i in self.g.input if i.name not in self.const]
        if len(inputs) != 1:
            raise ConversionError(f"{self.path}: the model takes {len(inputs)} inputs ({[i.name for i in inputs]}); "
                                  "only one is supported")
        (inp,) = inputs
        dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
        shape = tuple(dims[1:])
        if any(d is None for d in shape):
            if example_shape is None:
                raise ConversionError(f"{self.path}: input {inp.name!r} has dynamic sample dimensions {dims}")
            shape = tuple(example_shape)
        if example_shape is not None and tuple(example_shape) != shape:
            raise ConversionError(f"calibration samples of shape {tuple(example_shape)}, the ONNX model expects {shape}")
        self.nodes["input"] = ir.Input(shape)
        self.shapes["input"] = shape
        self.live[inp.name] = "input"
        for n in self.g.node:
            if all((i in self.const) or not i for i in n.input) and n.op_type in CONSTANT_OPS:
                vals = CONSTANT_OPS[n.op_type](self, n)
                for o, v in zip(n.output, vals if isinstance(vals, list) else [vals]):
                    self.const[o] = np.asarray(v)
                continue
            if n.op_type == "Shape" and n.input[0] in self.live:
                self.const[n.output[0]] = np.array((BATCH,) + self.shape(n), dtype=np.int64)
                continue
            rule = OPS.get(n.op_type)
            if rule is None:
                self.fail(n, f"ONNX op {n.op_type}")
            rule(self, n)
        outs = [o.name for o in self.g.output]
        if len(outs) != 1 or outs[0] not in self.live:
            raise ConversionError(f"{self.path}: the model must return a single network tensor, got {outs}")
        return self._prune(ir.Graph(self.nodes, self.edges, "input", self.live[outs[0]]))

    @staticmethod
    def _prune(g: ir.Graph) -> ir.Graph:
        """Drop nodes the output does not depend on."""
        live, stack = {g.input}, [g.output]
        while stack:
            n = stack.pop()
            if n not in live:
                live.add(n)
                stack += g.inputs_of(n)
        live.add(g.output)
        return ir.Graph({n: v for n, v in g.nodes.items() if n in live},
                        [e for e in g.edges if e[0] in live and e[1] in live], g.input, g.output)


# --------------------------------------------------------------------------- constant folding
def _cattr(r: _Reader, n: Any) -> np.ndarray:
    a = r.attrs(n)
    if "value" in a:
        return r.nh.to_array(a["value"]).copy()
    for k in ("value_float", "value_int"):
        if k in a:
            return np.array(a[k])
    for k in ("value_floats", "value_ints"):
        if k in a:
            return np.array(a[k])
    r.fail(n, f"a Constant with attributes {sorted(a)}")


def _axes(r: _Reader, n: Any, i: int) -> list[int] | None:
    a = r.attrs(n).get("axes")
    v = r.c(n, i) if a is None else a
    return None if v is None else [int(x) for x in np.atleast_1d(v)]


def _slice(r: _Reader, n: Any) -> np.ndarray:
    data, starts, ends = r.c(n, 0), r.c(n, 1), r.c(n, 2)
    axes = r.c(n, 3, np.arange(len(starts)))
    steps = r.c(n, 4, np.ones(len(starts), dtype=np.int64))
    sl = [slice(None)] * data.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        sl[int(a)] = slice(int(s), int(e), int(st))
    return data[tuple(sl)]


def _binary(op: Callable) -> Callable:
    return lambda r, n: op(r.c(n, 0), r.c(n, 1))


CONSTANT_OPS: dict[str, Callable[[_Reader, Any], Any]] = {
    "Constant": _cattr,
    "Identity": lambda r, n: r.c(n, 0),
    "Shape": lambda r, n: np.array(np.shape(r.c(n, 0)), dtype=np.int64),
    "Gather": lambda r, n: np.take(r.c(n, 0), r.c(n, 1), axis=int(r.attrs(n).get("axis", 0))),
    "Unsqueeze": lambda r, n: np.expand_dims(r.c(n, 0), tuple(_axes(r, n, 1))),
    "Squeeze": lambda r, n: np.squeeze(r.c(n, 0), None if _axes(r, n, 1) is None else tuple(_axes(r, n, 1))),
    "Concat": lambda r, n: np.concatenate([r.c(n, i) for i in range(len(n.input))], axis=int(r.attrs(n)["axis"])),
    "ConstantOfShape": lambda r, n: np.full(tuple(int(v) for v in r.c(n, 0)),
                                            r.nh.to_array(r.attrs(n)["value"]).ravel()[0]
                                            if "value" in r.attrs(n) else 0.0),
    "Slice": _slice,
    "Transpose": lambda r, n: np.transpose(r.c(n, 0), r.attrs(n).get("perm")),
    "Cast": lambda r, n: r.c(n, 0),
    "Reshape": lambda r, n: r.c(n, 0).reshape([int(v) for v in r.c(n, 1)]),
    "Add": _binary(np.add), "Sub": _binary(np.subtract), "Mul": _binary(np.multiply), "Div": _binary(np.divide),
}
"""ONNX ops evaluated with numpy when all their inputs are constants (shape arithmetic)."""


# --------------------------------------------------------------------------- rules
Rule = Callable[[_Reader, Any], None]
OPS: dict[str, Rule] = {}
"""ONNX op type -> rule(reader, node), which adds the IR node(s) for it."""


def _op(*names: str) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        for nm in names:
            OPS[nm] = fn
        return fn
    return deco


@_op("Identity", "Dropout")
def _alias(r: _Reader, n: Any) -> None:
    r.add(n, None)


@_op("Relu")
def _relu(r: _Reader, n: Any) -> None:
    r.add(n, ir.ReLU())


@_op("Clip")
def _clip(r: _Reader, n: Any) -> None:
    a = r.attrs(n)
    lo = float(np.asarray(r.c(n, 1, a.get("min", -np.inf))))
    hi = float(np.asarray(r.c(n, 2, a.get("max", np.inf))))
    if lo != 0 or not np.isfinite(hi):
        r.fail(n, f"a clip to [{lo}, {hi}] (only [0, a]: ReLU6, Hardtanh(0, a))")
    r.add(n, ir.Clip(ceiling=hi))


@_op("Gemm")
def _gemm(r: _Reader, n: Any) -> None:
    a = r.attrs(n)
    if a.get("transA", 0):
        r.fail(n, "Gemm with transA=1")
    b = r.c(n, 1).astype(np.float64)
    w = (b if a.get("transB", 0) else b.T) * float(a.get("alpha", 1.0))
    c = r.c(n, 2)
    bias = None if c is None else np.broadcast_to(np.asarray(c, np.float64) * float(a.get("beta", 1.0)),
                                                  (w.shape[0],)).copy()
    r.add(n, ir.Linear(w, bias))


@_op("MatMul")
def _matmul(r: _Reader, n: Any) -> None:
    b = r.c(n, 1)
    if b.ndim != 2:
        r.fail(n, f"MatMul with a {b.ndim}-D constant")
    r.add(n, ir.Linear(np.asarray(b, np.float64).T))


def _spatial(r: _Reader, n: Any, rank: int) -> dict[str, tuple[int, ...]]:
    a = r.attrs(n)
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        r.fail(n, f"auto_pad={a['auto_pad']!r}")
    pads = [int(v) for v in a.get("pads", [0] * 2 * rank)]
    if pads[:rank] != pads[rank:]:
        r.fail(n, f"asymmetric padding {pads}")
    return {"stride": tuple(int(v) for v in a.get("strides", [1] * rank)), "padding": tuple(pads[:rank]),
            "dilation": tuple(int(v) for v in a.get("dilations", [1] * rank))}


@_op("Conv")
def _conv(r: _Reader, n: Any) -> None:
    w = np.asarray(r.c(n, 1), np.float64)
    rank = w.ndim - 2
    if rank not in _CONV:
        r.fail(n, f"a {rank}-D convolution")
    b = r.c(n, 2)
    g = _spatial(r, n, rank)
    r.add(n, _CONV[rank](w, None if b is None else np.asarray(b, np.float64), g["stride"], g["padding"],
                         g["dilation"], int(r.attrs(n).get("group", 1))))


@_op("BatchNormalization")
def _bn(r: _Reader, n: Any) -> None:
    gamma, beta, mean, var = (np.asarray(r.c(n, i), np.float64) for i in range(1, 5))
    s = np.sqrt(var + float(r.attrs(n).get("epsilon", 1e-5)))
    scale, shift = gamma / s, beta - mean * gamma / s
    src = r.x(n)
    prev = r.nodes.get(src)
    if isinstance(prev, (ir.Linear, ir.Conv1d, ir.Conv2d)) and r.only_user(src, n):
        shape = (-1,) + (1,) * (prev.weight.ndim - 1)
        bias = prev.bias if prev.bias is not None else np.zeros(prev.weight.shape[0])
        r.nodes[src] = dataclasses.replace(prev, weight=prev.weight * scale.reshape(shape), bias=bias * scale + shift)
        r.add(n, None)
        return
    r.add(n, ir.Affine(scale, shift))


def _pool(kind: str) -> Rule:
    def rule(r: _Reader, n: Any) -> None:
        a = r.attrs(n)
        k = tuple(int(v) for v in a["kernel_shape"])
        rank = len(k)
        if (kind, rank) not in _POOL:
            r.fail(n, f"{rank}-D pooling")
        if a.get("ceil_mode", 0):
            r.fail(n, f"{n.op_type} with ceil_mode=1")
        g = _spatial(r, n, rank)
        if kind == "avg":
            if any(g["padding"]) and not a.get("count_include_pad", 0):
                r.fail(n, "AveragePool with count_include_pad=0 and padding")
            r.add(n, _POOL[kind, rank](kernel=k, stride=g["stride"], padding=g["padding"]))
        else:
            if len(n.output) > 1 and n.output[1]:
                r.fail(n, "MaxPool with indices")
            r.add(n, _POOL[kind, rank](kernel=k, stride=g["stride"], padding=g["padding"], dilation=g["dilation"]))
    return rule


OPS["MaxPool"], OPS["AveragePool"] = _pool("max"), _pool("avg")


@_op("GlobalAveragePool")
def _gap(r: _Reader, n: Any) -> None:
    s = r.shape(n)
    if len(s) - 1 not in (1, 2):
        r.fail(n, f"global pooling of a sample of shape {s}")
    r.add(n, _POOL["avg", len(s) - 1](kernel=s[1:], stride=s[1:]))


@_op("ReduceMean")
def _mean(r: _Reader, n: Any) -> None:
    s = r.shape(n)
    axes = {(a + len(s) + 1) % (len(s) + 1) for a in (_axes(r, n, 1) or [])}
    if axes != set(range(2, len(s) + 1)) or len(s) - 1 not in (1, 2):
        r.fail(n, f"a mean over axes {sorted(axes)} of a (N, {', '.join(map(str, s))}) tensor (only over all "
                  "spatial axes)")
    r.add(n, _POOL["avg", len(s) - 1](kernel=s[1:], stride=s[1:]))
    if not r.attrs(n).get("keepdims", 1):
        pool = r.live[n.output[0]]
        r.nodes[f"{pool}.1"] = ir.Flatten()
        r.edges.append((pool, f"{pool}.1"))
        r.shapes[f"{pool}.1"] = (s[0],)
        r.live[n.output[0]] = f"{pool}.1"


@_op("Flatten")
def _flatten(r: _Reader, n: Any) -> None:
    if int(r.attrs(n).get("axis", 1)) != 1:
        r.fail(n, f"Flatten(axis={r.attrs(n).get('axis')}) (only flattening a whole sample, axis=1)")
    r.add(n, None if len(r.shape(n)) == 1 else ir.Flatten())


@_op("Reshape")
def _reshape(r: _Reader, n: Any) -> None:
    s = r.shape(n)
    target = [int(v) for v in r.c(n, 1)]
    if not target or target[0] not in (BATCH, 0, -1) or (target[0] == -1 and -1 in target[1:]):
        r.fail(n, f"a reshape to {target} that mixes the batch axis into the sample")
    rest = [s[i - 1] if v == 0 else v for i, v in enumerate(target[1:], 1)] if target[0] != -1 else target[1:]
    if -1 in rest:
        known = int(np.prod([v for v in rest if v != -1]))
        rest[rest.index(-1)] = int(np.prod(s)) // max(known, 1)
    rest = tuple(rest)
    if int(np.prod(rest)) != int(np.prod(s)):
        r.fail(n, f"a reshape of {s} to {rest}")
    r.add(n, None if rest == s else ir.Flatten() if len(rest) == 1 else ir.Reshape(shape=rest))


@_op("Add")
def _add(r: _Reader, n: Any) -> None:
    if all(i in r.live for i in n.input):
        if r.shape(n, 0) != r.shape(n, 1):
            r.fail(n, "Add with broadcasting")
        r.add(n, ir.Add(np.ones((2, r.shape(n, 0)[0]))), [r.x(n, 0), r.x(n, 1)])
        return
    live, const = (0, 1) if n.input[0] in r.live else (1, 0)
    src = r.x(n, live)
    c = np.asarray(r.c(n, const), np.float64)
    s = r.shapes[src]
    prev = r.nodes.get(src)
    if isinstance(prev, ir.Linear) and prev.bias is None and c.size == s[0] and r.users.get(n.input[live]) == 1:
        r.nodes[src] = dataclasses.replace(prev, bias=c.reshape(-1))  # MatMul + Add: one Linear
        r.live[n.output[0]] = src
        return
    full = np.broadcast_to(c, (1,) + s)[0] if c.ndim <= len(s) + 1 else None
    if full is None or not np.all(full.reshape(s[0], -1) == full.reshape(s[0], -1)[:, :1]):
        r.fail(n, "Add of a constant that is not per channel")
    r.add(n, ir.Affine(np.ones(s[0]), full.reshape(s[0], -1)[:, 0].copy()), [src])


@_op("Concat")
def _concat(r: _Reader, n: Any) -> None:
    axis = int(r.attrs(n)["axis"])
    nd = len(r.shape(n)) + 1
    if (axis + nd) % nd != 1:
        r.fail(n, f"Concat along axis {axis} (only the channel axis, 1)")
    r.add(n, ir.Concat(), [r.x(n, i) for i in range(len(n.input))])


@_op("Pad")
def _pad(r: _Reader, n: Any) -> None:
    a = r.attrs(n)
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    value = r.c(n, 2, np.zeros(1))
    pads = [int(v) for v in (r.c(n, 1) if len(n.input) > 1 else a["pads"])]
    if mode != "constant" or np.any(np.asarray(value) != 0):
        r.fail(n, f"padding with mode={mode!r}, value={np.asarray(value).ravel().tolist()} (only zero padding)")
    nd = len(pads) // 2
    if len(n.input) > 3 and n.input[3]:
        r.fail(n, "Pad with axes")
    begin, end = pads[:nd], pads[nd:]
    if begin[:2] != [0, 0] or end[:2] != [0, 0] or min(pads) < 0:
        r.fail(n, f"padding {pads} of the batch or channel axis, or negative")
    r.add(n, ir.Pad(padding=tuple(v for b, e in zip(begin[2:], end[2:]) for v in (b, e))))


@_op("Resize", "Upsample")
def _resize(r: _Reader, n: Any) -> None:
    a = r.attrs(n)
    mode = a.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "nearest":
        r.fail(n, f"resizing with mode={mode!r} (only 'nearest')")
    s = r.shape(n)
    scales = r.c(n, 2 if n.op_type == "Resize" else 1)
    sizes = r.c(n, 3) if n.op_type == "Resize" else None
    if sizes is not None and np.size(sizes):
        factors = [int(o) // int(i) for o, i in zip(np.asarray(sizes)[2:], s[1:])]
        exact = all(int(o) == i * f for o, i, f in zip(np.asarray(sizes)[2:], s[1:], factors))
    else:
        sc = np.asarray(scales, np.float64).ravel()
        factors = [int(round(v)) for v in sc[2:]]
        exact = len(sc) == len(s) + 1 and sc[0] == sc[1] == 1 and np.all(sc[2:] == factors)
    if not exact or min(factors, default=0) < 1:
        r.fail(n, "resizing by non-integer factors")
    r.add(n, ir.Upsample(scale=tuple(factors)))


def read_onnx(path: str | Path, example_shape: tuple[int, ...] | None = None) -> ir.Graph:
    """Read an ONNX file as an ANN graph; ``example_shape`` (a sample's shape) fills dynamic dims.

    Raises:
        ConversionError: a missing or unreadable file (named); an op outside :data:`OPS`
            (the node and op named, with the supported list).
    """
    onnx, _ = _onnx()
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"no such ONNX file: {path}")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:  # DecodeError, ValidationError, OSError
        raise ConversionError(f"{path} is not a readable ONNX model ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:200]})") from e
    return _Reader(model, path).read(example_shape)
