"""Input currents of the brian2 backend's neuron groups as sparse matrices of spike sources.

Between two stateful nodes of an SNN graph (IF layers, spiking max-pools, the Poisson
input, the readout) every node is affine, so the value of a stateless node ``x`` at any
step is an *affine form* of the spike trains of its sources::

    x[t] = sum_src A_src @ s_src[t] + c          (per sample; C-order flattened neurons)

with ``A_src`` a sparse (n_x, n_src) matrix and ``c`` a constant: a per-neuron bias
(n_x,), or, where the static part of the graph (nodes that depend only on a constant
encoded input) contributes, a per-sample current (B, n_x). :func:`forms` computes the
form of every node; a neuron group's input current is the form of its input node, which
the backend turns into one ``Synapses`` object per source (weights ``A_src``) and a
constant current ``c``. Matrices are built with vectorised index arithmetic.

numpy and scipy only (no brian2), so the connectivity can be tested on its own.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from snn import ir

BACKEND = "brian2"


@dataclass
class Form:
    """``x = sum_src A[src] @ s_src + c``; ``A`` values are csr (n_x, n_src), ``c`` None,
    (n_x,) or (B, n_x)."""

    A: dict[str, sp.csr_matrix]
    c: np.ndarray | None
    n: int


def unsupported(name: str, node: ir.Node, why: str) -> NotImplementedError:
    return NotImplementedError(
        f"node {name!r} ({node.kind}) cannot be expressed in backend {BACKEND!r}: {why}. "
        "Supported: input, linear, conv2d, affine, avgpool2d, maxpool2d (on spikes or on the static input), "
        "flatten, reshape, add, concat, if, readout")


# --------------------------------------------------------------------------- operator matrices
def _grid(c: int, h: int, w: int) -> np.ndarray:
    return np.arange(c * h * w).reshape(c, h, w)


def conv_matrix(node: ir.Conv2d, in_shape: tuple[int, int, int], out_shape: tuple[int, int, int]) -> sp.csr_matrix:
    """(C_out*Ho*Wo, C_in*H*W) matrix of a Conv2d (bias excluded); zero weights dropped."""
    co, cig, kh, kw = node.weight.shape
    _, h, w = in_shape
    _, ho, wo = out_shape
    g = node.groups
    o, y, x, ci, i, j = np.ix_(np.arange(co), np.arange(ho), np.arange(wo), np.arange(cig), np.arange(kh), np.arange(kw))
    iy = y * node.stride[0] - node.padding[0] + i * node.dilation[0]
    ix = x * node.stride[1] - node.padding[1] + j * node.dilation[1]
    cin = (o // (co // g)) * cig + ci
    shape = (co, ho, wo, cig, kh, kw)
    iy, ix, cin = (np.broadcast_to(a, shape) for a in (iy, ix, cin))
    val = np.broadcast_to(node.weight[:, None, None], shape)
    rows = np.broadcast_to(_grid(co, ho, wo)[:, :, :, None, None, None], shape)
    ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w) & (val != 0)
    cols = (cin * h + iy) * w + ix
    return sp.csr_matrix((val[ok], (rows[ok], cols[ok])), shape=(co * ho * wo, int(np.prod(in_shape))))


def pool_matrix(node: ir.AvgPool2d | ir.MaxPool2d, in_shape: tuple[int, int, int],
                out_shape: tuple[int, int, int], value: float) -> sp.csr_matrix:
    """(C*Ho*Wo, C*H*W) matrix with ``value`` at every (window, input in the window) pair;
    padded positions are left out."""
    c, h, w = in_shape
    _, ho, wo = out_shape
    kh, kw = node.kernel
    d = getattr(node, "dilation", (1, 1))
    ch, y, x, i, j = np.ix_(np.arange(c), np.arange(ho), np.arange(wo), np.arange(kh), np.arange(kw))
    shape = (c, ho, wo, kh, kw)
    iy = np.broadcast_to(y * node.stride[0] - node.padding[0] + i * d[0], shape)
    ix = np.broadcast_to(x * node.stride[1] - node.padding[1] + j * d[1], shape)
    rows = np.broadcast_to(_grid(c, ho, wo)[:, :, :, None, None], shape)
    chb = np.broadcast_to(ch, shape)
    ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    cols = (chb * h + iy) * w + ix
    return sp.csr_matrix((np.full(int(ok.sum()), value), (rows[ok], cols[ok])), shape=(c * ho * wo, c * h * w))


def _channel_diag(v: np.ndarray, shape: tuple[int, ...]) -> sp.csr_matrix:
    """Diagonal matrix scaling channel ``k`` (axis 0 of a sample) by ``v[k]``."""
    per = int(np.prod(shape[1:]))
    return sp.diags(np.repeat(v, per)).tocsr()


# --------------------------------------------------------------------------- forms
def _apply(M: sp.csr_matrix, f: Form) -> Form:
    """The form of ``M @ x`` for ``x`` of form ``f``."""
    A = {s: clean(M @ a) for s, a in f.A.items()}
    c = None if f.c is None else np.asarray(M @ f.c.T).T
    return Form(A, c, M.shape[0])


def clean(a: sp.spmatrix) -> sp.csr_matrix:
    a = sp.csr_matrix(a)
    a.eliminate_zeros()
    return a


def _add_const(c: np.ndarray | None, v: np.ndarray | None) -> np.ndarray | None:
    if v is None:
        return c
    return v.copy() if c is None else c + v


def _combine(parts: list[Form], n: int) -> Form:
    """Sum of forms of equal size."""
    A: dict[str, sp.csr_matrix] = {}
    c = None
    for f in parts:
        for s, a in f.A.items():
            A[s] = clean(A[s] + a) if s in A else a
        c = _add_const(c, f.c)
    return Form(A, c, n)


def forms(graph: ir.Graph, sources: set[str], static: dict[str, np.ndarray]) -> dict[str, Form]:
    """Affine form of every stateless node that is not static.

    ``sources``: names of nodes that are spike sources (neuron groups); ``static``:
    values (B, *shape) of the static nodes (float64). Raises NotImplementedError for a
    node that is not affine in its inputs (a max-pool or ReLU of currents).
    """
    out: dict[str, Form] = {}

    def form_of(name: str) -> Form:
        if name in out:
            return out[name]
        n = int(np.prod(graph.shapes[name]))
        if name in sources:
            return Form({name: sp.identity(n, format="csr")}, None, n)
        v = static[name]
        return Form({}, v.reshape(len(v), -1).astype(np.float64), n)

    for name, node in graph.nodes.items():
        if name in sources or name in static or isinstance(node, (ir.Input, ir.IF, ir.Readout)):
            continue
        ins = graph.inputs_of(name)
        shape, in_shapes = graph.shapes[name], [graph.shapes[i] for i in ins]
        fs = [form_of(i) for i in ins]
        n = int(np.prod(shape))
        if isinstance(node, (ir.Flatten, ir.Reshape)):
            f = Form(fs[0].A, fs[0].c, n)
        elif isinstance(node, ir.Linear):
            f = _apply(sp.csr_matrix(node.weight), fs[0])
            f.c = _add_const(f.c, node.bias)
        elif isinstance(node, ir.Conv2d):
            f = _apply(conv_matrix(node, in_shapes[0], shape), fs[0])
            f.c = _add_const(f.c, None if node.bias is None else np.repeat(node.bias, n // len(node.bias)))
        elif isinstance(node, ir.AvgPool2d):
            f = _apply(pool_matrix(node, in_shapes[0], shape, 1.0 / (node.kernel[0] * node.kernel[1])), fs[0])
        elif isinstance(node, ir.Affine):
            f = _apply(_channel_diag(node.scale, shape), fs[0])
            f.c = _add_const(f.c, np.repeat(node.shift, n // len(node.shift)))
        elif isinstance(node, ir.Add):
            f = _combine([_apply(_channel_diag(g, shape), fk) for g, fk in zip(node.gains, fs)], n)
        elif isinstance(node, ir.Concat):
            f = _concat(fs, n)
        else:
            raise unsupported(name, node, "it is not affine in its (non-static) inputs")
        out[name] = f
    return out


def _concat(fs: list[Form], n: int) -> Form:
    srcs = sorted({s for f in fs for s in f.A})
    A = {}
    for s in srcs:
        n_src = next(f.A[s].shape[1] for f in fs if s in f.A)
        A[s] = sp.vstack([f.A.get(s, sp.csr_matrix((f.n, n_src))) for f in fs], format="csr")
    if all(f.c is None for f in fs):
        c = None
    else:
        batch = max((len(f.c) for f in fs if f.c is not None and f.c.ndim == 2), default=None)
        parts = []
        for f in fs:
            v = np.zeros(f.n) if f.c is None else f.c
            parts.append(v if batch is None else np.broadcast_to(v, (batch, f.n)))
        c = np.concatenate(parts, axis=-1)
    return Form(A, c, n)


def input_form(graph: ir.Graph, name: str, sources: set[str], static: dict[str, np.ndarray],
               fs: dict[str, Form]) -> Form:
    """The form of the single input of node ``name`` (an IF, readout or spiking max-pool)."""
    (src,) = graph.inputs_of(name)
    n = int(np.prod(graph.shapes[src]))
    if src in sources:
        return Form({src: sp.identity(n, format="csr")}, None, n)
    if src in static:
        v = static[src]
        return Form({}, v.reshape(len(v), -1).astype(np.float64), n)
    return fs[src]


def routing(form: Form, name: str, node: ir.Node) -> dict[str, sp.csr_matrix]:
    """Check that ``form`` only routes spikes (one unit entry per row, no constant) and return it."""
    if form.c is not None and np.any(form.c != 0):
        raise unsupported(name, node, "its input is not a pure spike train")
    for a in form.A.values():
        if a.nnz and not np.all(a.data == 1.0):
            raise unsupported(name, node, "its input is not a pure spike train")
    per_row = sum(np.diff(a.indptr) for a in form.A.values())
    if np.any(np.asarray(per_row) != 1):
        raise unsupported(name, node, "its input is not a pure spike train")
    return form.A
