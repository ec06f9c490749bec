"""Lava-DL netx export (``snn.to_lava``): the HDF5 network format that ``lava.lib.dl.netx``
loads for Loihi 2 and Lava's CPU simulator, and a reader for the same files.

The format (lava-dl 0.6, ``netx/hdf5.py``): a group ``layer`` with one subgroup per layer,
``"0"``, ``"1"``, ... in order; each has ``type`` (``input``, ``conv``, ``flatten``,
``dense``), ``shape`` (C, H, W, as PyTorch), integer-valued ``weight`` (dense: (out, in);
conv: (out, in / groups, kH, kW, 1) with ``stride``, ``padding``, ``dilation`` (H, W) and
``groups``), ``bias`` mantissas, and ``neuron``: ``type="CUBA"``, ``iDecay``, ``vDecay``,
``vThMant``, ``refDelay``, ``gradedSpike``. netx builds Lava's fixed-point LIF from it
(``du = iDecay - 1``, ``dv = vDecay``, ``vth = vThMant``, ``bias_exp = 6``):

    u[t] = u[t-1] (4096 - du - 1) / 4096 + a[t];  v[t] = v[t-1] (4096 - dv) / 4096 + u[t] + bias
    spike iff v[t] > vth (strict), then v = 0

with ``a`` the weighted input in the same 2^6 units as bias and threshold. ``iDecay = 4096``
(the current lasts one step) and ``vDecay = 0`` (no leak) make it our IF with
``reset="zero"``: ``v[t] = v[t-1] + W s[t] + b``, spike iff ``v > theta``.

Weights must be integers (Loihi's synapses): export a network quantised by
:func:`snn.quantize` with ``weight_bits <= 8``. Each layer is written in units of its shared
exponent ``2^e``: weight and bias mantissas, and ``vThMant = theta / 2^e`` (an integer, since
``e <= 0`` for weights below 1). The readout is written as the same neuron with the largest
threshold (``vThMant = 2^17 - 1``), so that it integrates input and bias every step, as ours
does; netx's default for a dense layer without a neuron (``iDecay=0, vDecay=4096``) would
integrate the input but add the bias only once. Its 24-bit membrane saturates at ``2^23``
(in units of ``2^(e-6)``). The exponent is kept in the layer group's ``snn_exponent``
attribute so that :func:`from_lava` gives back the same network; netx does not read it (spikes
do not depend on it; the readout's scale does).

What the format can hold of our options: IF layers with ``reset="zero"`` and ``v_init=0``
(Lava's LIF resets to 0 and netx sets no initial voltage), one threshold per layer, biases,
Linear and Conv2d (stride, padding, dilation, groups), Flatten, the Readout. Not: subtractive
reset, ``v_init``, pooling (netx raises NotImplementedError for ``pool`` and ``average``
layers), residual Add and Concat (netx networks are sequential), Affine, Conv1d, Upsample, Pad,
Reshape, and float weights. Each is refused by name. Timing: Lava's Dense and Conv processes
deliver a layer's spikes one step later than ours (no synaptic delay here), so layer ``l``'s
spikes appear ``l - 1`` steps later in Lava; with biases the two also differ during that
delay. The input is the caller's: netx's network input port takes (graded) spikes, so the
first layer's weights are in units of the input values.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from snn import ir
from snn.errors import SnnError
from snn.network import SpikingNetwork
from snn.util import atomic_path

INTERPRETER = "the Lava-DL netx exporter"
V_TH_MAX = 2 ** 17 - 1  # Loihi's 17-bit threshold mantissa
W_MAX, W_MIN = 254, -256  # what netx's optimize_weight_bits fits into a synapse without clipping

EXPORT = ir.Table(INTERPRETER)
"""``rule`` per IR node type: the kind of netx layer the node becomes (its keys are the
supported set); the writer walks the chain input -> (synapse -> IF)* -> synapse -> Readout."""
EXPORT.update({ir.Input: "input", ir.Linear: "dense", ir.Conv2d: "conv", ir.IF: "neuron", ir.Flatten: "flatten",
               ir.Readout: "readout"})

WHY_NOT = {
    "maxpool2d": "netx does not implement pooling layers", "avgpool2d": "netx does not implement pooling layers",
    "maxpool1d": "netx does not implement pooling layers", "avgpool1d": "netx does not implement pooling layers",
    "add": "netx networks are sequential (no residual sums)", "concat": "netx networks are sequential",
    "affine": "netx has no channel-wise affine layer", "conv1d": "netx convolutions are 2-D",
    "upsample": "netx has no upsampling layer", "pad": "netx has no padding layer",
    "reshape": "netx has no reshape layer (only flatten)",
    "relu": "an ANN activation; convert the model first (snn.convert)",
    "clip": "an ANN activation; convert the model first (snn.convert)",
}


def _refuse(name: str, node: ir.Node, why: str) -> SnnError:
    return SnnError(ir.unsupported_message(name, node, INTERPRETER, EXPORT.kinds(), why))


def _mantissas(name: str, node: ir.Node, arr: np.ndarray, e: int, what: str, lo: int | None, hi: int | None
               ) -> np.ndarray:
    m = arr / 2.0 ** e
    if not np.all(m == np.round(m)):
        raise _refuse(name, node, f"its {what} are not integers times one exponent (Loihi stores fixed-point "
                                  "weights); quantise first: snn.quantize(net, weight_bits=8)")
    if lo is not None and (m.min() < lo or m.max() > hi):
        raise _refuse(name, node, f"its {what} mantissas span [{int(m.min())}, {int(m.max())}], beyond Loihi's "
                                  f"[{lo}, {hi}]; quantise with weight_bits <= 8")
    return m.astype(np.float32)


def _exponent(net: SpikingNetwork, name: str, node: ir.Node) -> int:
    layers = net.meta.get("quantization", {}).get("layers", {})
    if name not in layers:
        raise _refuse(name, node, "its weights are floating point (Loihi stores fixed-point weights); quantise "
                                  "first: snn.quantize(net, weight_bits=8)")
    return int(layers[name]["exponent"])


def _chain(graph: ir.Graph) -> list[str]:
    order, cur = [graph.input], graph.input
    while True:
        nxt = graph.consumers_of(cur)
        if not nxt:
            break
        if len(nxt) > 1 or len(graph.inputs_of(nxt[0])) > 1:
            n = nxt[0] if len(nxt) == 1 else cur
            raise _refuse(n, graph.nodes[n], "netx networks are sequential (a node with several inputs or outputs)")
        order.append(nxt[0])
        cur = nxt[0]
    return order


def to_lava(net: SpikingNetwork, path: str | Path) -> Path:
    """Write a quantised network as a lava-dl netx HDF5 file (format in the module docstring).

    Raises:
        SnnError: a node type or option the format cannot hold (named, with the reason);
            float weights (quantise first); weights beyond 8 bits.

    >>> import os, tempfile, torch, snn
    >>> net = snn.convert(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)),
    ...                   torch.rand(16, 3), reset="zero", v_init=0.0)
    >>> path = snn.to_lava(snn.quantize(net, 8), os.path.join(tempfile.mkdtemp(), "net.net"))
    >>> [v.kind for v in snn.from_lava(path).graph.nodes.values()]
    ['input', 'linear', 'if', 'linear', 'readout']
    """
    import h5py

    if not isinstance(net, SpikingNetwork):
        raise SnnError(f"to_lava takes a SpikingNetwork (quantised: snn.quantize), got {type(net).__name__}")
    g = net.graph
    for name, node in g.nodes.items():
        if type(node) not in EXPORT:
            raise _refuse(name, node, WHY_NOT.get(node.kind, ""))
    if not isinstance(g.nodes[g.output], ir.Readout):
        raise SnnError(f"the output node {g.output!r} is not a readout: netx export takes a converted network")
    order = _chain(g)
    layers: list[dict[str, Any]] = []
    pending: dict[str, Any] | None = None
    for name in order:
        node = g.nodes[name]
        kind = EXPORT[type(node)]
        if pending is not None and kind not in ("neuron", "readout"):
            raise _refuse(name, node, f"netx needs a neuron layer (IF) or the readout after the synapses of "
                                      f"{pending['snn_name']!r}")
        if kind == "input":
            layers.append({"type": "input", "shape": np.array(g.shapes[name]), "snn_name": name})
        elif kind == "flatten":
            layers.append({"type": "flatten", "shape": np.array(g.shapes[name]), "snn_name": name})
        elif kind in ("dense", "conv"):
            e = _exponent(net, name, node)
            w = _mantissas(name, node, node.weight, e, "weights", W_MIN, W_MAX)
            pending = {"type": kind, "shape": np.array(g.shapes[name]), "snn_name": name, "snn_exponent": e,
                       "weight": w if kind == "dense" else w[..., None]}
            if node.bias is not None:
                pending["bias"] = _mantissas(name, node, node.bias, e, "biases", None, None)
            if kind == "dense":
                pending.update(inFeatures=node.weight.shape[1], outFeatures=node.weight.shape[0])
            else:
                pending.update(stride=np.array(node.stride), padding=np.array(node.padding),
                               dilation=np.array(node.dilation), groups=node.groups, inChannels=node.weight.shape[1]
                               * node.groups, outChannels=node.weight.shape[0], kernelSize=np.array(node.weight.shape[2:]))
        elif kind == "neuron":
            if pending is None:
                raise _refuse(name, node, "an IF layer must follow a dense or conv layer in netx")
            if not node.plain:
                raise _refuse(name, node, f"Loihi's neurons emit one 0/1 spike per step (burst={node.burst}, "
                                          f"signed={node.signed}); convert with burst=1, signed=False")
            if node.reset != "zero":
                raise _refuse(name, node, 'Lava\'s LIF resets to 0; it has no subtractive reset; convert with '
                                          'reset="zero"')
            if node.v_init != 0.0:
                raise _refuse(name, node, f"netx sets no initial voltage (v_init={node.v_init}); convert with "
                                          "v_init=0.0")
            vth = node.threshold / 2.0 ** pending["snn_exponent"]
            if vth != round(vth) or not 1 <= vth <= V_TH_MAX:
                raise _refuse(name, node, f"its threshold is {vth} in the weights' units, not an integer in "
                                          f"[1, {V_TH_MAX}] (Loihi's threshold mantissa)")
            pending["neuron"] = {"type": "CUBA", "iDecay": 4096, "vDecay": 0, "vThMant": int(vth), "refDelay": 1,
                                 "gradedSpike": False}
            pending["snn_neuron_name"] = name
            layers.append(pending)
            pending = None
        else:  # readout: integrate without leak and (practically) without spiking
            if node.delay:
                raise _refuse(name, node, f"a netx readout integrates from the first step (delay={node.delay}); "
                                          "convert with readout_delay=0")
            if pending is None:
                raise _refuse(name, node, "the readout must follow a dense layer in netx")
            pending["neuron"] = {"type": "CUBA", "iDecay": 4096, "vDecay": 0, "vThMant": V_TH_MAX, "refDelay": 1,
                                 "gradedSpike": False}
            pending["snn_neuron_name"] = name
            layers.append(pending)
            pending = None
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        grp = f.create_group("layer")
        for i, layer in enumerate(layers):
            lg = grp.create_group(str(i))
            for k, v in layer.items():
                if k.startswith("snn_"):
                    lg.attrs[k] = v
                elif k == "type":
                    lg.create_dataset("type", data=np.array([v.encode()], dtype="S10"))
                elif k == "neuron":
                    ng = lg.create_group("neuron")
                    for nk, nv in v.items():
                        ng.create_dataset(nk, data=np.array(nv.encode(), dtype=object) if nk == "type" else nv)
                else:
                    lg.create_dataset(k, data=v)
        sim = f.create_group("simulation")
        sim.create_dataset("Ts", data=1)
        sim.create_dataset("tSample", data=int(net.meta.get("timesteps") or 32))
        f.attrs["snn"] = json.dumps({"producer": "snn", "weight_bits": net.meta["quantization"]["weight_bits"]})
    return path


def _s(v: Any) -> str:
    v = v[()] if hasattr(v, "shape") else v
    v = v[0] if isinstance(v, np.ndarray) and v.shape else v
    return v.decode() if isinstance(v, bytes) else str(v)


def from_lava(path: str | Path) -> SpikingNetwork:
    """Read a netx file (ours, or a non-leaky CUBA network of lava-dl) as a :class:`SpikingNetwork`.

    Raises:
        SnnError: a missing, truncated or corrupt file (named); a layer type or neuron the
            IR cannot express exactly, a missing parameter or mismatched shapes (the layer named).
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise SnnError(f"no such netx file: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise SnnError(f"{path} is not a readable netx file ({e})") from e
    with f:
        if "layer" not in f:
            raise SnnError(f"{path} is not a netx file (no 'layer' group)")
        nodes: dict[str, ir.Node] = {}
        edges: list[tuple[str, str]] = []
        prev: str | None = None
        count = len(f["layer"])
        for i in range(count):
            key = str(i)
            if key not in f["layer"]:
                raise SnnError(f"{path}: layer {i} of {count} is missing")
            lg = f["layer"][key]
            try:
                nodes_i = _read_layer(lg, i, path, prev is None, i == count - 1)
            except SnnError:
                raise
            except (KeyError, ValueError, TypeError, OSError) as e:
                raise SnnError(f"{path}: layer {i} ({lg.attrs.get('snn_name', key)}): missing or malformed "
                               f"parameter ({type(e).__name__}: {e})") from e
            for name, node in nodes_i:
                if name in nodes:
                    raise SnnError(f"{path}: layer {i}: the node name {name!r} is used twice")
                nodes[name] = node
                if prev is not None:
                    edges.append((prev, name))
                prev = name
    if not nodes or not isinstance(next(iter(nodes.values())), ir.Input):
        raise SnnError(f"{path}: the first layer is not an input layer with a shape")
    if not isinstance(nodes[prev], ir.Readout):
        nodes["readout"] = ir.Readout()
        edges.append((prev, "readout"))
        prev = "readout"
    graph = ir.Graph(nodes, edges, next(iter(nodes)), prev)
    return SpikingNetwork(graph=graph, ann=None, meta={"source": "netx", "file": str(path)})


def _read_layer(lg: Any, i: int, path: Path, first: bool, last: bool) -> list[tuple[str, ir.Node]]:
    kind = _s(lg["type"])
    name = str(lg.attrs.get("snn_name", f"layer{i}"))
    if kind == "input":
        if not first:
            raise SnnError(f"{path}: layer {i} ({name}): an input layer after the first")
        if "neuron" in lg:
            raise SnnError(f"{path}: layer {i} ({name}): an input layer with neurons (input encoding) is not "
                           "supported; only a shape")
        return [(name, ir.Input(tuple(int(v) for v in np.atleast_1d(lg["shape"][()]))))]
    if first:
        raise SnnError(f"{path}: layer {i} ({name}) is a {kind!r} layer; the first layer must be an input")
    if kind == "flatten":
        return [(name, ir.Flatten())]
    if kind not in ("dense", "conv"):
        raise SnnError(f"{path}: layer {i} ({name}): layer type {kind!r} is not supported; supported: input, "
                       "flatten, dense, conv")
    e = int(lg.attrs.get("snn_exponent", 0))
    scale = 2.0 ** e
    w = np.asarray(lg["weight"][()], np.float64) * scale
    b = np.asarray(lg["bias"][()], np.float64) * scale if "bias" in lg else None
    if kind == "dense":
        syn: ir.Node = ir.Linear(w.reshape(int(np.prod(lg["shape"][()])), -1), b)
    else:
        w = w.reshape(w.shape[:4])

        def pair(k: str, default: int) -> tuple[int, int]:
            v = np.atleast_1d(lg[k][()]) if k in lg else np.array([default])
            return (int(v[0]), int(v[-1]))

        syn = ir.Conv2d(w, b, pair("stride", 1), pair("padding", 0), pair("dilation", 1),
                        int(lg["groups"][()]) if "groups" in lg else 1)
    out_name = str(lg.attrs.get("snn_neuron_name", f"{name}.neuron"))
    if "neuron" not in lg:
        return [(name, syn), (out_name, ir.Readout())]
    ng = lg["neuron"]
    ntype = _s(ng["type"])
    vals = {k: float(np.asarray(ng[k][()])) for k in ("iDecay", "vDecay", "vThMant") if k in ng}
    if ntype not in ("CUBA", "LOIHI") or vals.get("iDecay") != 4096 or vals.get("vDecay") != 0 or "vThMant" not in vals:
        raise SnnError(f"{path}: layer {i} ({name}): neuron {ntype} with iDecay={vals.get('iDecay')}, "
                       f"vDecay={vals.get('vDecay')} is not an integrate-and-fire neuron (needs CUBA, iDecay=4096, "
                       "vDecay=0, vThMant)")
    if last and vals.get("vThMant") == V_TH_MAX:
        return [(name, syn), (out_name, ir.Readout())]
    ref = int(np.asarray(ng["refDelay"][()])) if "refDelay" in ng else 1
    if ref != 1:
        raise SnnError(f"{path}: layer {i} ({name}): a refractory delay is not supported")
    return [(name, syn), (out_name, ir.IF(threshold=vals["vThMant"] * scale, reset="zero", v_init=0.0))]
