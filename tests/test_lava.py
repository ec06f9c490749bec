"""Lava-DL netx export (snn.to_lava) and its reader.

Lava's CPU simulator runs on our files in experiments/bench/lava_check.py (a Python 3.10
environment with lava-nc 0.10; identical spikes). lava-dl's netx loader needs torch 2.3, whose
only PyPI build is CUDA's (several GB), so here the files are checked against
lava-dl's own reader code instead: ``netx/utils.py`` (``NetDict``, ``optimize_weight_bits``,
the code ``netx.hdf5.Network`` reads every layer with), taken from the real lava-dl 0.6.0
wheel that .ci/setup downloads, and the neuron parameters it hands to Lava's LIF are run
through Lava's fixed-point LIF equations; they spike as our backends do.
"""
from __future__ import annotations

import importlib.util
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import snn
from snn import ir
from snn.lava import EXPORT
from tests.test_nir import trained_mlp_cnn
from tests.test_node_types import CASES, _randomise_bn

WHEELS = Path(__file__).resolve().parents[1] / ".cache" / "wheels"
T = 16


def _lava_dl_utils():
    """lava-dl 0.6.0's netx/utils.py, loaded from the wheel (it needs h5py and numpy only)."""
    wheels = sorted(WHEELS.glob("lava_dl-0.6.0-*.whl"))
    if not wheels:
        pytest.skip("the lava-dl 0.6.0 wheel is not in .cache/wheels (.ci/setup downloads it)")
    src = zipfile.ZipFile(wheels[0]).read("lava/lib/dl/netx/utils.py")
    spec = importlib.util.spec_from_loader("lava_dl_netx_utils", loader=None)
    mod = importlib.util.module_from_spec(spec)
    exec(compile(src, "lava/lib/dl/netx/utils.py", "exec"), mod.__dict__)
    return mod


@pytest.fixture(scope="module")
def nets(digits):
    """The MLP and CNN of the NIR tests (reset to zero, v_init 0), quantised to 8 bits."""
    return {k: (snn.quantize(net, 8), x) for k, (net, x) in trained_mlp_cnn(digits).items()}


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_round_trip_is_exact(which, nets, tmp_path):
    net, x = nets[which]
    snn.to_lava(net, tmp_path / "n.net")
    back = snn.from_lava(tmp_path / "n.net")
    assert list(back.graph.nodes) == list(net.graph.nodes)
    for name, node in net.graph.nodes.items():
        for f in ("weight", "bias", "threshold"):
            if getattr(node, f, None) is not None:
                np.testing.assert_array_equal(getattr(back.graph.nodes[name], f), getattr(node, f), err_msg=name)
    a, b = (snn.simulate(n, x, T, precision="float64") for n in (net, back))
    for k in a.step_sums:
        assert int(a.step_sums[k].sum()) > 0
        np.testing.assert_array_equal(b.step_sums[k], a.step_sums[k])
    np.testing.assert_array_equal(b.outputs, a.outputs)


def _lava_lif_run(layers: list, x: np.ndarray, steps: int) -> dict[str, np.ndarray]:
    """Lava's fixed-point LIF (lava.proc.lif PyLifModelBitAcc) on the parameters netx reads:
    u = (u (4096 - du - 1)) >> 12 + a, v = (v (4096 - dv)) >> 12 + u + (bias << 6), spike iff
    v > vth << 6, v = 0 after a spike; synaptic input a = W s << 6. The first layer's input is
    the sample times 2^6 (graded), as the other layers' spikes are 1 << 6."""
    out: dict[str, list[np.ndarray]] = {}
    state: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for _ in range(steps):
        s = x.reshape(len(x), -1).astype(np.float64)
        shape = x.shape[1:]
        for i, L in enumerate(layers):
            if L["type"] == "flatten":
                s, shape = s.reshape(len(s), -1), (s.shape[1],)
                continue
            if L["type"] == "dense":
                a = (s.reshape(len(s), -1) @ L["weight"].T) * 64
            else:
                a = torch.nn.functional.conv2d(torch.as_tensor(s.reshape((len(s),) + tuple(shape)), dtype=torch.float64),
                                               torch.as_tensor(L["weight"], dtype=torch.float64), None,
                                               tuple(L["stride"]), tuple(L["padding"]), tuple(L["dilation"]),
                                               L["groups"]).numpy() * 64
            a = np.round(a).astype(np.int64)
            shape = a.shape[1:]
            u, v = state.get(i, (np.zeros_like(a), np.zeros_like(a)))
            u = np.sign(u * (4096 - L["du"] - 1)) * (np.abs(u * (4096 - L["du"] - 1)) >> 12) + a
            v = np.sign(v * (4096 - L["dv"])) * (np.abs(v * (4096 - L["dv"])) >> 12) + u + \
                (L["bias"].reshape((-1,) + (1,) * (a.ndim - 2)) << 6)
            spk = v > (L["vth"] << 6)
            v = np.where(spk, 0, v)
            state[i] = (u, v)
            out.setdefault(L["name"], []).append(spk.sum(0) if i < len(layers) - 1 else v.astype(np.float64))
            s = spk.astype(np.float64)
    return {k: np.stack(v) for k, v in out.items()}


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_lava_dl_reader_reads_our_file_and_its_lif_spikes_as_ours(which, nets, tmp_path):
    """Read as ``netx.hdf5.Network._create`` does (NetDict; optimize_weight_bits for the
    synapses; du = iDecay - 1, dv = vDecay, vth = vThMant, bias_exp = 6 for the neurons), then
    run Lava's fixed-point LIF equations on what it read: the same spikes as our backends.
    The first layer's input is graded (the sample x 2^6, integers for digits' sixteenths)."""
    utils = _lava_dl_utils()
    net, x = nets[which]
    snn.to_lava(net, tmp_path / "n.net")
    cfg = utils.NetDict(str(tmp_path / "n.net"))["layer"]
    layers = []
    assert cfg[0]["type"] == "input" and "neuron" not in cfg[0].keys()
    for i in range(1, len(cfg)):
        lc = cfg[i]
        t = lc["type"]
        assert t in ("dense", "conv", "flatten")
        if t == "flatten":
            layers.append({"type": t})
            continue
        w = lc["weight"]  # NetDict: .astype(int)
        if t == "dense":
            w2, bits, wexp, sign = utils.optimize_weight_bits(w.reshape(int(np.prod(lc["shape"])), -1))
            np.testing.assert_array_equal(w2 >> -wexp if wexp < 0 else w2 << wexp, w)  # shift undone: no clipping
            assert bits <= 8
        L = {"type": t, "weight": w.reshape(w.shape[:4]) if t == "conv" else w,
             "bias": lc["bias"] if "bias" in lc.keys() else np.zeros(w.shape[0], int),
             "name": lc.f.attrs["snn_neuron_name"]}
        if t == "conv":  # netx: stride/padding/dilation stored (y, x), groups scalar
            L.update(stride=lc["stride"], padding=lc["padding"], dilation=lc["dilation"], groups=int(lc["groups"]))
        if "neuron" in lc.keys():
            n = lc["neuron"]
            assert n["type"] == "CUBA"
            L.update(neuron=True, du=int(n["iDecay"]) - 1, dv=int(n["vDecay"]), vth=int(n["vThMant"]))
        layers.append(L)
    res = snn.simulate(net, x, T, precision="float64")
    lava = _lava_lif_run(layers, x, T)
    ifs = [n for n, v in net.graph.nodes.items() if isinstance(v, ir.IF)]
    for k in ifs:
        assert lava[k].sum() > 0
        np.testing.assert_array_equal(lava[k], res.step_sums[k], err_msg=k)
    e = net.meta["quantization"]["layers"][next(n for n in reversed(net.graph.nodes) if n in
                                                 net.meta["quantization"]["layers"])]["exponent"]
    assert lava["readout"].max() < 2 ** 23  # no spike, no saturation: the readout is the integral
    readout = lava["readout"] * 2.0 ** e / 64 / np.arange(1, T + 1)[:, None, None]
    np.testing.assert_allclose(readout, res.outputs, rtol=1e-12, atol=1e-12)


def test_lava_dl_files_are_read_or_refused_by_layer(tmp_path):
    """lava-dl's own test networks: its mnist.net has leaky neurons (vDecay=123), which an IF
    network cannot express: refused, naming the layer."""
    utils = _lava_dl_utils()  # noqa: F841 (skips without the wheel)
    wheel = sorted(WHEELS.glob("lava_dl-0.6.0-*.whl"))[0]
    (tmp_path / "mnist.net").write_bytes(zipfile.ZipFile(wheel).read("tests/lava/lib/dl/netx/mnist.net"))
    with pytest.raises(snn.SnnError, match=r"mnist\.net: layer 0 \(layer0\): an input layer with neurons"):
        snn.from_lava(tmp_path / "mnist.net")


def test_float_weights_and_inexpressible_options_are_refused(nets, mlp_net, zero_graph_with_pool, tmp_path):
    net = nets["mlp"][0]
    float_net = snn.SpikingNetwork(net.graph, meta={})
    with pytest.raises(snn.SnnError, match=r"node '0' \(linear\) is not supported by the Lava-DL netx exporter: its "
                                           r"weights are floating point .* snn.quantize\(net, weight_bits=8\)"):
        snn.to_lava(float_net, tmp_path / "a.net")
    with pytest.raises(snn.SnnError, match=r"\(if\) is not supported by the Lava-DL netx exporter: Lava's LIF resets "
                                           r"to 0"):
        snn.to_lava(snn.quantize(mlp_net, 8), tmp_path / "a.net")
    with pytest.raises(snn.SnnError, match=r"mantissas span .* quantise with weight_bits <= 8"):
        snn.to_lava(snn.quantize(snn.SpikingNetwork(net.graph, meta={}), 12), tmp_path / "a.net")
    g = zero_graph_with_pool
    first = next(n for n, v in g.nodes.items() if type(v) not in EXPORT)
    with pytest.raises(snn.SnnError, match=rf"node '{first}' \(maxpool2d\) .* netx does not implement pooling"):
        snn.to_lava(snn.quantize(g, 8), tmp_path / "a.net")
    assert not (tmp_path / "a.net").exists()


@pytest.fixture
def zero_graph_with_pool(digits):
    factory, prep = CASES["cnn_bn_maxpool"]
    torch.manual_seed(0)
    return snn.convert(_randomise_bn(factory()), prep(digits[0][:100]), reset="zero", v_init=0.0).graph


@pytest.mark.parametrize("damage", ["truncated", "garbage", "no layers", "missing weight", "leaky neuron", "missing"])
def test_bad_netx_files_are_named(damage, nets, tmp_path):
    path = tmp_path / "d.net"
    snn.to_lava(nets["mlp"][0], path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    elif damage == "garbage":
        path.write_bytes(b"garbage!" * 64)
    elif damage == "missing":
        path.unlink()
    else:
        with h5py.File(path, "r+") as f:
            if damage == "no layers":
                del f["layer"]
            elif damage == "missing weight":
                del f["layer/1/weight"]
            else:
                del f["layer/1/neuron/vDecay"]
                f["layer/1/neuron/vDecay"] = 100
    pattern = {"missing weight": r"d\.net: layer 1 \(0\): missing or malformed parameter",
               "leaky neuron": r"d\.net: layer 1 \(0\): neuron CUBA with iDecay=4096.0, vDecay=100.0 is not an "
                               r"integrate-and-fire neuron"}.get(damage, r"d\.net")
    with pytest.raises(snn.SnnError, match=pattern):
        snn.from_lava(path)


def test_supported_set_is_the_table():
    assert set(EXPORT.kinds()) == {"input", "linear", "conv2d", "if", "flatten", "readout"}
    assert "lava_dl" not in sys.modules
