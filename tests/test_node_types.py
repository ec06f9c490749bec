"""Tests generated over every IR node type x every interpreter table x every backend.

:data:`CASES` is a catalogue of small torch models, together exercising every node type
(a test fails when a node type has no case). For each case: the trace is exact (float64
IR against the float64 torch model), the torch evaluator equals the float64 evaluator,
every backend gives the same spikes as the others (snntorch with the reference torch ops,
snntorch with the fused kernels, brian2), and the energy model's fan-out maps equal a
brute-force count through the graph. For every (node type, backend) pair that a backend
does not support, simulating a graph with that node raises the named error. Adding a node
type means adding a case here, not a test per backend.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import snn
from snn import ir, ir_torch
from snn.backends import BACKENDS, get_backend
from snn.conversion import RULES
from snn.energy.counting import ENERGY, Neuron, Synapse, source_fanout

T, N = 12, 8


# --------------------------------------------------------------------------- the catalogue
class _Residual(nn.Module):
    """Add and Concat: conv -> relu -> (conv -> relu) + identity, cat with itself, pooled."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(8 * 16, 10)

    def forward(self, x):
        h = F.relu(self.c1(x))
        h = F.relu(self.c2(h) + h)
        h = torch.cat([h, F.max_pool2d(F.relu(self.c2(h)), 1)], dim=1)
        return self.fc(torch.flatten(F.avg_pool2d(h, 2), 1))


class _ResidualAdd(nn.Module):
    """Add without Concat (a residual network NIR can express): conv -> relu -> (conv + identity) -> relu."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16, 10)

    def forward(self, x):
        h = F.relu(self.c1(x))
        h = F.relu(self.c2(h) + h)
        return self.fc(torch.flatten(F.avg_pool2d(h, 2), 1))


class _ViewInput(nn.Module):
    """Reshape: a flat input viewed as an image; strided conv without pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, stride=2, padding=1)
        self.fc = nn.Linear(6 * 16, 10)

    def forward(self, x):
        h = F.relu(self.conv(x.view(-1, 1, 8, 8)))
        return self.fc(h.reshape(h.size(0), -1))


class _ClipUpsamplePad(nn.Module):
    """Clip (Hardtanh(0, a), ReLU6), nearest upsampling, zero padding and a spatial mean."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 4, 3, stride=2), nn.Conv2d(4, 6, 3)
        self.up, self.pad = nn.Upsample(scale_factor=2, mode="nearest"), nn.ZeroPad2d((1, 0, 1, 0))
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        h = self.pad(self.up(F.hardtanh(self.c1(x), 0.0, 2.0)))
        return self.fc(F.relu6(self.c2(h)).mean((2, 3)))


def _image(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, 1, 8, 8)


CASES = {
    "mlp": (lambda: nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 10)), None),
    "cnn_bn_maxpool": (lambda: nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 16, 10)), _image),
    "affine_avgpool": (lambda: nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.BatchNorm2d(6),
                                             nn.AvgPool2d(2, 1), nn.Flatten(), nn.Linear(6 * 25, 10)), _image),
    "residual_concat": (_Residual, _image),
    "residual_add": (_ResidualAdd, _image),
    "view_input": (_ViewInput, None),
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(4, 6, 3, stride=2, padding=1), nn.BatchNorm1d(6), nn.ReLU(),
                                     nn.Conv1d(6, 4, 3, dilation=2, groups=2), nn.ReLU(), nn.Flatten(),
                                     nn.Linear(4 * 4, 10)), lambda x: x.reshape(-1, 4, 16)),
    "pool1d": (lambda: nn.Sequential(nn.Conv1d(4, 6, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2),
                                     nn.Conv1d(6, 6, 3, padding=1), nn.ReLU(), nn.AvgPool1d(2),
                                     nn.Conv1d(6, 8, 3, padding=1), nn.ReLU6(), nn.AdaptiveAvgPool1d(1),
                                     nn.Flatten(), nn.Linear(8, 10)), lambda x: x.reshape(-1, 4, 16)),
    "clip_upsample_pad": (_ClipUpsamplePad, _image),
    "rows_as_sequence": (lambda: nn.Sequential(nn.Flatten(1, 2), nn.Conv1d(8, 6, 3, padding=1), nn.ReLU(),
                                               nn.AvgPool1d(2), nn.Conv1d(6, 6, 3, padding=1), nn.ReLU(),
                                               nn.Flatten(), nn.Linear(6 * 4, 10)), _image),
}


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Give BatchNorms non-trivial statistics (so folding is tested) and return eval mode."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.2)
    return model.eval()


def build_cases(digits, **convert_kw) -> dict:
    """{case: (model, x_calibration, x_test, net)}: the catalogue with seeded random weights,
    converted with ``convert_kw`` (other test modules use it with other conversion options)."""
    out = {}
    for name, (factory, prep) in CASES.items():
        torch.manual_seed(0)
        model = _randomise_bn(factory())
        xc, xt = digits[0][:200], digits[2][:N]
        if prep is not None:
            xc, xt = prep(xc), prep(xt)
        out[name] = (model, xc, xt, snn.convert(model, xc, **convert_kw))
    return out


@pytest.fixture(scope="module")
def cases(digits):
    """{case: (model, x_calibration, x_test, net)} with seeded random weights."""
    return build_cases(digits)


def _kinds(g: ir.Graph) -> set[str]:
    return {v.kind for v in g.nodes.values()}


# --------------------------------------------------------------------------- the tables
SNN_KINDS = [t.kind for t in ir.NODE_TYPES.values() if t not in ir.ACTIVATIONS]
ANN_KINDS = [t.kind for t in ir.NODE_TYPES.values() if t not in (ir.IF, ir.Readout)]


@pytest.mark.parametrize("kind", list(ir.NODE_TYPES))
def test_every_node_type_has_its_rules(kind):
    t = ir.NODE_TYPES[kind]
    assert t in ir.SHAPES, "shape rule"
    if t is not ir.Input:
        assert t in ir.EVAL, "float64 evaluation"
        assert t in ir_torch.OPS, "torch op"
        assert t in ENERGY, "energy rule"
        if kind in ANN_KINDS:
            assert t in RULES, "conversion rule"


def test_every_node_type_is_exercised_by_a_case(cases):
    seen = set().union(*(_kinds(net.graph) | _kinds(net.ann) for _, _, _, net in cases.values()))
    assert set(ir.NODE_TYPES) - seen == set()


@pytest.mark.parametrize("case", list(CASES))
def test_trace_is_exact(case, cases):
    model, _, xt, net = cases[case]
    with torch.no_grad():
        want = model.double()(torch.as_tensor(xt, dtype=torch.float64)).numpy()
    model.float()
    got = ir.evaluate(net.ann, xt)["output"]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * np.abs(want).max())


@pytest.mark.parametrize("case", list(CASES))
def test_torch_evaluator_equals_float64(case, cases):
    _, _, xt, net = cases[case]
    for g in (net.ann, net.graph):
        keep = list(g.nodes)
        want = ir.evaluate(g, xt, keep=keep)
        got = ir_torch.evaluate_ann(g, torch.as_tensor(xt, dtype=torch.float64), keep=keep)
        for k in keep:
            np.testing.assert_allclose(got[k].numpy(), want[k], rtol=1e-12, atol=1e-12, err_msg=k)


VARIANTS = {"snntorch-torch": ("snntorch", {"impl": "torch"}), "snntorch-fused": ("snntorch", {"impl": "auto"}),
            "brian2": ("brian2", {"target": "numpy"})}


@pytest.mark.parametrize("encoding", ["constant", "poisson"])
@pytest.mark.parametrize("case", list(CASES))
def test_backends_give_identical_spikes(case, encoding, cases):
    _, _, xt, net = cases[case]
    if encoding == "poisson":
        xt = xt / xt.max()
    res = {v: snn.simulate(net, xt, T, backend=b, encoding=encoding, precision="float64", seed=2, **kw)
           for v, (b, kw) in VARIANTS.items()}
    ref = res["snntorch-torch"]
    assert all(int(v.sum()) > 0 for v in ref.spike_sums.values()), "a layer never spikes: the test would be weak"
    for v, r in res.items():
        assert sorted(r.step_sums) == sorted(ref.step_sums), v
        for k in ref.step_sums:
            np.testing.assert_array_equal(r.step_sums[k], ref.step_sums[k], err_msg=f"{v}: {k}")
        np.testing.assert_array_equal(r.predictions, ref.predictions, err_msg=v)


@pytest.mark.parametrize("case", list(CASES))
def test_exported_snntorch_module_equals_the_backend(case, cases):
    """``net.to_snntorch()`` (one step per call) gives the backend's readout at every step."""
    _, _, xt, net = cases[case]
    res = snn.simulate(net, xt, 6, precision="float64", impl="torch")
    step = net.to_snntorch("float64")
    step.reset()
    with torch.no_grad():
        mems = [step(torch.as_tensor(xt, dtype=torch.float64))[1].numpy() / (t + 1) for t in range(6)]
    np.testing.assert_allclose(np.stack(mems), res.outputs, rtol=1e-9, atol=1e-9)


def _brute_fanouts(g: ir.Graph, src: str, stop: set[str], every_weight: bool = False) -> dict[str, np.ndarray]:
    """Distinct targets of each neuron of ``src`` in every first synaptic layer or neuron
    layer it reaches: one-hot inputs propagated through the float64 evaluator, weights
    replaced by 1 where non-zero (``every_weight``: every weight and gain by 1, the
    structural count), biases dropped, other inputs zero."""
    shape = g.shapes[src]
    n = int(np.prod(shape))
    vals = {src: np.eye(n).reshape((n,) + shape)}
    out: dict[str, np.ndarray] = {}
    for name, node in g.nodes.items():
        ins = g.inputs_of(name)
        if name == src or not any(i in vals for i in ins):
            continue
        rule = ENERGY[type(node)]
        if name in stop and node.spike_route == "pool":
            continue  # routing of spikes
        if isinstance(rule, (Synapse, Neuron)):
            for slot, i in enumerate(ins):
                if i not in vals:
                    continue
                x = vals[i]
                if hasattr(node, "weight"):
                    ones = np.ones_like(node.weight) if every_weight else (node.weight != 0) * 1.0
                    y = ir.eval_node(type(node)(**dict(ir.node_to_dict(node), weight=ones, bias=None)), [x])
                elif isinstance(node, (ir.Affine, ir.Add)):
                    gain = node.scale if isinstance(node, ir.Affine) else node.gains[slot]
                    y = x * (every_weight | (gain != 0)).reshape((1, -1) + (1,) * (x.ndim - 2))
                else:
                    y = x
                out[name] = out.get(name, 0) + (np.abs(y).reshape(n, -1) > 0).sum(axis=1).reshape(shape)
            continue
        xs = [vals[i] if i in vals else np.zeros((n,) + g.shapes[i]) for i in ins]
        vals[name] = np.abs(ir.eval_node(node, xs))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_energy_fanout_equals_brute_force(case, cases):
    g = cases[case][3].graph
    stop = set(g.recorded_nodes())
    for src in [g.input] + g.recorded_nodes():
        fan = source_fanout(g, src, stop)
        brute = _brute_fanouts(g, src, stop)
        dense = _brute_fanouts(g, src, stop, every_weight=True)
        assert sorted(fan.maps) == sorted(brute) == sorted(fan.dense), src
        for k in brute:
            np.testing.assert_array_equal(fan.maps[k], brute[k], err_msg=f"{src} -> {k}")
            np.testing.assert_array_equal(fan.dense[k], dense[k], err_msg=f"{src} -> {k} (every weight)")


@pytest.mark.parametrize("case", list(CASES))
def test_energy_report_prices_every_case(case, cases):
    _, _, xt, net = cases[case]
    res = snn.simulate(net, xt, 4, precision="float64")
    rep = snn.energy_report(net, res, hardware=["loihi", "45nm-fp32"], x=xt)
    assert rep.totals.macs_dense > 0 and rep.totals.neuron_updates > 0


# --------------------------------------------------------------------------- refusals
def _unsupported_pairs() -> list[tuple[str, str]]:
    return [(b, k) for b in BACKENDS for k in ir.NODE_TYPES if k not in get_backend(b).SUPPORTED]


@pytest.mark.parametrize("backend, kind", _unsupported_pairs())
def test_unsupported_node_is_refused_by_name(backend, kind, cases):
    """A graph holding a node the backend does not support (an ANN graph with a Readout
    appended holds them all) is refused before any work, naming node, type, backend and
    the supported set."""
    _, _, xt, net = next((c for c in cases.values() if kind in _kinds(c[3].ann)))
    ann = net.ann
    g = ir.Graph({**ann.nodes, "readout": ir.Readout()}, ann.edges + [(ann.output, "readout")], ann.input, "readout")
    first = next(n for n, v in g.nodes.items() if v.kind not in get_backend(backend).SUPPORTED)
    with pytest.raises(snn.SnnError, match=rf"node '{first}' \({g.nodes[first].kind}\) is not supported by "
                                           rf"backend '{backend}'.*supported: input"):
        snn.simulate(g, xt, 2, backend=backend)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_graph_without_readout_is_refused(backend):
    g = ir.Graph({"input": ir.Input((2,)), "fc": ir.Linear(np.eye(2)), "if": ir.IF()},
                 [("input", "fc"), ("fc", "if")], "input", "if")
    with pytest.raises(snn.SnnError, match=rf"output node 'if' \(if\) of the graph is not a readout: backend "
                                           rf"'{backend}' simulates spiking networks"):
        snn.simulate(g, np.ones((1, 2)), 2, backend=backend)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_ann_graph_is_refused_with_advice_to_convert(backend, cases):
    _, _, xt, net = cases["mlp"]
    with pytest.raises(snn.SnnError, match=r"node '1' \(relu\) is not supported by backend .*convert the model "
                                           r"first \(snn.convert\)"):
        snn.simulate(net.ann, xt, 2, backend=backend)
