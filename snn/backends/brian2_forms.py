"""Input currents of the brian2 backend's neuron groups as sparse matrices of spike sources.

Between two stateful nodes of an SNN graph (IF layers, spiking max-pools, the Poisson
input, the readout) every node is affine, so the value of a stateless node ``x`` at any
step is an *affine form* of the spike trains of its sources::

    x[t] = sum_src A_src @ s_src[t] + c          (per sample; C-order flattened neurons)

with ``A_src`` a sparse (n_x, n_src) matrix and ``c`` a per-neuron constant (n_x,) (the
biases). Under a constant encoding the static part of the graph (nodes that depend only on
the input) is evaluated per sample; the static nodes it feeds the rest through are sources
too, so their matrices turn a sample's static values into constant currents. :func:`forms`
computes the form of every node; a neuron group's input current is the form of its input
node, which the backend turns into one ``Synapses`` object per spike source (weights
``A_src``) and a constant current (``c`` plus the static sources' terms). The forms do not
depend on the samples, so they are computed once per graph. Matrices are built with
vectorised index arithmetic.

numpy and scipy only (no brian2), so the connectivity can be tested on its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Collection

import numpy as np
import scipy.sparse as sp

from snn import ir
from snn.errors import SnnError

BACKEND = "brian2"


@dataclass
class Form:
    """``x = sum_src A[src] @ s_src + c``; ``A`` values are csr (n_x, n_src), ``c`` None or (n_x,)."""

    A: dict[str, sp.csr_matrix]
    c: np.ndarray | None
    n: int


def unsupported(name: str, node: ir.Node, why: str) -> SnnError:
    return SnnError(ir.unsupported_message(name, node, f"backend {BACKEND!r}", SUPPORTED, why))


# --------------------------------------------------------------------------- operator matrices
def _taps(node: ir.Node, in_shape: tuple[int, ...], out_shape: tuple[int, ...]
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every (output position, kernel tap): the flat input position it reads (within one
    channel plane), whether that position is inside the input (not padding), and the flat
    output position. Arrays of shape (P_out, K) over the spatial axes of any rank."""
    g = ir.spatial(node)
    r = len(g["kernel"])
    outs = np.indices(out_shape[1:]).reshape(r, -1)          # (r, P_out)
    taps = np.indices(g["kernel"]).reshape(r, -1)            # (r, K)
    pos = [outs[a][:, None] * g["stride"][a] - g["padding"][a] + taps[a][None, :] * g["dilation"][a]
           for a in range(r)]
    ok = np.all([(pos[a] >= 0) & (pos[a] < in_shape[1 + a]) for a in range(r)], axis=0)
    flat = np.zeros_like(pos[0])
    for a in range(r):
        flat = flat * in_shape[1 + a] + np.clip(pos[a], 0, in_shape[1 + a] - 1)
    return flat, ok, np.arange(outs.shape[1])


def conv_matrix(node: ir.Conv2d, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> sp.csr_matrix:
    """(C_out*P_out, C_in*P_in) matrix of a convolution of any spatial rank (bias excluded);
    zero weights dropped."""
    co, cig = node.weight.shape[:2]
    p_in, p_out = int(np.prod(in_shape[1:])), int(np.prod(out_shape[1:]))
    flat, ok, outs = _taps(node, in_shape, out_shape)                     # (P_out, K)
    w = node.weight.reshape(co, cig, -1)                                  # (co, cig, K)
    o = np.arange(co)[:, None, None, None]
    ci = np.arange(cig)[None, :, None, None]
    cin = (o // (co // node.groups)) * cig + ci                           # (co, cig, 1, 1)
    shape = (co, cig, p_out, flat.shape[1])
    val = np.broadcast_to(w[:, :, None, :], shape)
    rows = np.broadcast_to(o * p_out + outs[None, None, :, None], shape)
    cols = np.broadcast_to(cin * p_in + flat[None, None], shape)
    keep = np.broadcast_to(ok[None, None], shape) & (val != 0)
    return sp.csr_matrix((val[keep], (rows[keep], cols[keep])), shape=(co * p_out, in_shape[0] * p_in))


def pool_matrix(node: ir.Node, in_shape: tuple[int, ...], out_shape: tuple[int, ...], value: float) -> sp.csr_matrix:
    """(C*P_out, C*P_in) matrix with ``value`` at every (window, input in the window) pair,
    any spatial rank; padded positions are left out."""
    c = in_shape[0]
    p_in, p_out = int(np.prod(in_shape[1:])), int(np.prod(out_shape[1:]))
    flat, ok, outs = _taps(node, in_shape, out_shape)
    ch = np.arange(c)[:, None, None]
    shape = (c, p_out, flat.shape[1])
    rows = np.broadcast_to(ch * p_out + outs[None, :, None], shape)
    cols = np.broadcast_to(ch * p_in + flat[None], shape)
    keep = np.broadcast_to(ok[None], shape)
    return sp.csr_matrix((np.full(int(keep.sum()), value), (rows[keep], cols[keep])), shape=(c * p_out, c * p_in))


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


FormRule = Callable[[ir.Node, list[Form], list[tuple[int, ...]], tuple[int, ...]], Form]
FORMS = ir.Table(f"backend {BACKEND!r}")
"""``rule(node, input forms, input shapes, shape) -> form``: the affine form of a stateless
node's output from its inputs' forms (C-order flattened neurons)."""


@FORMS.register(ir.Flatten, ir.Reshape)
def _reindex_form(node: ir.Node, fs: list[Form], ins: list[tuple[int, ...]], shape: tuple[int, ...]) -> Form:
    return Form(fs[0].A, fs[0].c, int(np.prod(shape)))


@FORMS.register(ir.Linear)
def _linear_form(node: ir.Linear, fs: list[Form], ins: list[tuple[int, ...]], shape: tuple[int, ...]) -> Form:
    f = _apply(sp.csr_matrix(node.weight), fs[0])
    f.c = _add_const(f.c, node.bias)
    return f


@FORMS.register(ir.Conv2d, ir.Conv1d)
def _conv_form(node: ir.Conv2d, fs: list[Form], ins: list[tuple[int, ...]], shape: tuple[int, ...]) -> Form:
    f = _apply(conv_matrix(node, ins[0], shape), fs[0])
    n = int(np.prod(shape))
    f.c = _add_const(f.c, None if node.bias is None else np.repeat(node.bias, n // len(node.bias)))
    return f


@FORMS.register(ir.Upsample, ir.Pad)
def _copy_form(node: ir.Node, fs: list[Form], ins: list[tuple[int, ...]], shape: tuple[int, ...]) -> Form:
    """A node that copies each output from at most one input (or writes a zero): its matrix
    is read off the float64 evaluator applied to the 1-based input indices."""
    n_in = int(np.prod(ins[0]))
    src = ir.eval_node(node, [np.arange(1, n_in + 1, dtype=np.float64).reshape((1,) + ins[0])])
    src = np.rint(src.reshape(-1)).astype(np.int64)
    rows = np.nonzero(src)[0]
    M = sp.csr_matrix((np.ones(len(rows)), (rows, src[rows] - 1)), shape=(len(src), n_in))
    return _apply(M, fs[0])


@FORMS.register(ir.AvgPool2d, ir.AvgPool1d)
def _avgpool_form(node: ir.Node, fs: list[Form], ins: list[tuple[int, ...]], shape: tuple[int, ...]) -> Form:
    return _apply(pool_matrix(node, ins[0], shape, 1.0 / int(np.prod(node.kernel))), fs[0])


@FORMS.register(ir.Affine)
def _affine_form(node: ir.Affine, fs: list[Form], ins: list[tuple[int, ...]], shape: tuple[int, ...]) -> Form:
    f = _apply(_channel_diag(node.scale, shape), fs[0])
    f.c = _add_const(f.c, np.repeat(node.shift, int(np.prod(shape)) // len(node.shift)))
    return f


@FORMS.register(ir.Add)
def _add_form(node: ir.Add, fs: list[Form], ins: list[tuple[int, ...]], shape: tuple[int, ...]) -> Form:
    return _combine([_apply(_channel_diag(g, shape), fk) for g, fk in zip(node.gains, fs)], int(np.prod(shape)))


@FORMS.register(ir.Concat)
def _concat_form(node: ir.Concat, fs: list[Form], ins: list[tuple[int, ...]], shape: tuple[int, ...]) -> Form:
    return _concat(fs, int(np.prod(shape)))


STATEFUL = (ir.Input, ir.IF, ir.Readout, ir.MaxPool2d, ir.MaxPool1d)
"""Nodes the backend makes neuron groups of (the input under a spiking encoding, IF layers,
the readout, max-pools of spikes); a max-pool on the constant input is evaluated once."""
SUPPORTED: tuple[str, ...] = tuple(dict.fromkeys(tuple(t.kind for t in STATEFUL) + FORMS.kinds()))


def forms(graph: ir.Graph, sources: set[str], static: Collection[str] = ()) -> dict[str, Form]:
    """Affine form of every stateless node that is neither a source nor static.

    ``sources``: names of the nodes whose values the forms are written in: spike sources
    (neuron groups) and, under a constant encoding, the static nodes that feed the others
    (their values enter the forms through matrices too, and become constant currents);
    ``static``: the nodes computed from a constant input alone (no form). Raises
    :class:`SnnError` for a node that is not affine in its inputs (a max-pool of currents).
    """
    out: dict[str, Form] = {}
    static = set(static)

    def form_of(name: str) -> Form:
        if name in out:
            return out[name]
        if name not in sources:
            raise SnnError(f"internal: node {name!r} is read by a simulated node but is neither a source "
                           "nor a computed form")
        n = int(np.prod(graph.shapes[name]))
        return Form({name: sp.identity(n, format="csr")}, None, n)

    for name, node in graph.nodes.items():
        if name in sources or name in static or isinstance(node, (ir.Input, ir.IF, ir.Readout)):
            continue
        if type(node) not in FORMS:
            raise unsupported(name, node, "it is not affine in its (non-static) inputs")
        ins = graph.inputs_of(name)
        out[name] = FORMS[type(node)](node, [form_of(i) for i in ins], [graph.shapes[i] for i in ins],
                                      graph.shapes[name])
    return out


def _concat(fs: list[Form], n: int) -> Form:
    srcs = sorted({s for f in fs for s in f.A})
    A = {}
    for s in srcs:
        n_src = next(f.A[s].shape[1] for f in fs if s in f.A)
        A[s] = sp.vstack([f.A.get(s, sp.csr_matrix((f.n, n_src))) for f in fs], format="csr")
    c = None if all(f.c is None for f in fs) else np.concatenate([np.zeros(f.n) if f.c is None else f.c for f in fs])
    return Form(A, c, n)


def input_form(graph: ir.Graph, name: str, sources: set[str], fs: dict[str, Form]) -> Form:
    """The form of the single input of node ``name`` (an IF, readout or spiking max-pool)."""
    (src,) = graph.inputs_of(name)
    n = int(np.prod(graph.shapes[src]))
    if src in sources:
        return Form({src: sp.identity(n, format="csr")}, None, n)
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
