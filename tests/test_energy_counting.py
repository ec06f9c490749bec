"""Operation counts computed by hand, checked by brute force, and the bad inputs of issue 4."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from snn import ir
from snn.energy import count_ops
from snn.energy.counting import source_fanout
from snn.errors import SnnError
from snn.simulate import SimulationResult


def _result(spikes: dict[str, np.ndarray], steps: dict[str, np.ndarray] | None, n: int, T: int,
            encoding: str) -> SimulationResult:
    return SimulationResult(outputs=np.zeros((T, n, 2)), spike_sums=spikes, step_sums=steps, n_samples=n,
                            timesteps=T, backend="hand", encoding=encoding, precision="float64", device="cpu",
                            seed=0, batch_size=n, wall_time_s=0.0)


def _net_232():
    """x(2) -> fc1 (3x2) -> h (IF) -> fc2 (2x3) -> readout; and the ANN it came from."""
    w1, w2 = np.arange(1, 7).reshape(3, 2) / 10, np.arange(1, 7).reshape(2, 3) / 10
    snn_g = ir.Graph({"x": ir.Input((2,)), "fc1": ir.Linear(w1), "h": ir.IF(), "fc2": ir.Linear(w2),
                      "readout": ir.Readout()},
                     [("x", "fc1"), ("fc1", "h"), ("h", "fc2"), ("fc2", "readout")], "x", "readout")
    ann = ir.Graph({"x": ir.Input((2,)), "fc1": ir.Linear(w1), "h": ir.ReLU(), "fc2": ir.Linear(w2)},
                   [("x", "fc1"), ("fc1", "h"), ("h", "fc2")], "x", "fc2")
    return snn_g, ann


def test_232_poisson_by_hand():
    g, ann = _net_232()
    # 2 samples, 4 steps; summed over samples: input neurons spiked 3 and 1 times, hidden 2, 0, 5
    steps = {"x": np.array([[1, 0], [1, 1], [0, 0], [1, 0]]), "h": np.array([[0, 0, 1], [1, 0, 2], [1, 0, 1], [0, 0, 1]])}
    sums = {k: v.sum(0) for k, v in steps.items()}
    c = count_ops(g, sums, steps, n_samples=2, timesteps=4, encoding="poisson", ann=ann)
    rows = {r["node"]: r for r in c.layers}
    assert rows["fc1"]["synops"] == (3 + 1) * 3 / 2       # each input spike reaches 3 hidden neurons
    assert rows["fc2"]["synops"] == (2 + 0 + 5) * 2 / 2   # each hidden spike reaches 2 outputs
    t = c.totals
    assert t.synops == 13.0 and t.input_macs == 0
    assert t.neuron_updates == (3 + 2) * 4 and t.active_updates == 7 / 2
    assert t.macs_dense == 12 and t.ann_neurons == 3
    assert t.spikes == 7 / 2 and t.firing_rate == 3.5 / (3 * 4)
    # memory: weight read per synop, membrane read+write per update, one write per IF spike
    assert t.snn_memory() == {"weight_reads": 13.0, "input_reads": 0.0, "state_reads_writes": 40, "spike_writes": 3.5}
    np.testing.assert_allclose(c.per_step["synops"], np.cumsum([3 + 1 * 2, 2 * 3 + 3 * 2, 0 + 2 * 2, 1 * 3 + 1 * 2]) / 2)


def test_network_structure_is_made_once_per_graph(monkeypatch):
    """The fan-out maps are made at a graph's first count and reused by its later counts (of
    other results: the same numbers as counted afresh); another graph object gets its own."""
    from snn.energy import counting

    calls = []
    real = counting.source_fanout
    monkeypatch.setattr(counting, "source_fanout", lambda g, s, stop: calls.append(s) or real(g, s, stop))
    monkeypatch.setattr(counting, "_STRUCTURES", {})
    g, ann = _net_232()
    steps = [{"x": np.array([[1, 0], [1, 1]]), "h": np.array([[0, 0, 1], [1, 0, 2]])},
             {"x": np.array([[0, 2], [1, 0]]), "h": np.array([[1, 1, 0], [0, 0, 3]])}]
    counts = [count_ops(g, {k: v.sum(0) for k, v in st.items()}, st, 2, 2, "poisson", ann=ann) for st in steps]
    assert len(calls) == 2  # sources x and h, once
    g2, _ = _net_232()
    fresh = count_ops(g2, {k: v.sum(0) for k, v in steps[1].items()}, steps[1], 2, 2, "poisson", ann=ann)
    assert len(calls) == 4 and fresh.totals == counts[1].totals and fresh.totals != counts[0].totals
    np.testing.assert_array_equal(fresh.per_step["synops"], counts[1].per_step["synops"])


def test_232_constant_input_is_macs_once():
    g, ann = _net_232()
    sums = {"h": np.array([2, 0, 5])}
    x = np.array([[0.5, 0.0], [0.2, 0.3]])
    c = count_ops(g, sums, None, n_samples=2, timesteps=4, encoding="constant", ann=ann, x=x)
    t = c.totals
    assert t.synops == 7.0 and t.input_macs == 6
    assert t.input_macs_effective == (3 + 6) / 2  # sample 1 has one zero input
    assert any("once per inference" in n for n in c.notes)
    # ANN effective MACs: fc1 inputs nonzero 3 of 4 -> 9/2 per sample; fc2 relu outputs
    relu = np.maximum(x @ g.nodes["fc1"].weight.T, 0)
    assert t.macs_effective == pytest.approx((3 + 6) / 2 + (relu != 0).sum() * 2 / 2)
    assert t.activation_sparsity == pytest.approx((relu == 0).mean())


def _conv_net(conv: ir.Conv2d, in_shape, pool: ir.AvgPool2d | None = None):
    nodes = {"x": ir.Input(in_shape), "s": ir.IF()}
    edges = [("x", "s")]
    last = "s"
    if pool is not None:
        nodes["pool"] = pool
        edges.append(("s", "pool"))
        last = "pool"
    nodes.update({"conv": conv, "h": ir.IF(), "readout": ir.Readout()})
    edges += [(last, "conv"), ("conv", "h"), ("h", "readout")]
    return ir.Graph(nodes, edges, "x", "readout")


def test_conv_3x3_padding_1_fanout_map_by_hand():
    co = 5
    g = _conv_net(ir.Conv2d(np.ones((co, 1, 3, 3)), padding=1), (1, 4, 4))
    fan = source_fanout(g, "s", set(g.recorded_nodes())).dense["conv"]
    expect = np.array([[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]]) * co
    np.testing.assert_array_equal(fan[0], expect)
    spikes = np.zeros((1, 4, 4), dtype=np.int64)
    spikes[0, 0, 0], spikes[0, 0, 1], spikes[0, 2, 2] = 2, 1, 3   # corner, edge, interior
    c = count_ops(g, {"s": spikes, "h": np.zeros((co, 4, 4), np.int64)}, None, 1, 8, "constant")
    assert c.totals.synops == (2 * 4 + 1 * 6 + 3 * 9) * co


def _brute_fanout(g: ir.Graph, src: str, target: str) -> np.ndarray:
    """Distinct outputs of ``target`` reached by each source neuron: one-hot inputs through
    the path with every non-zero weight set to one (float64 evaluator)."""
    shape = g.shapes[src]
    n = int(np.prod(shape))
    vals = np.eye(n).reshape((n,) + shape)
    name = src
    while name != target:
        (name,) = g.consumers_of(name)
        node = g.nodes[name]
        if isinstance(node, ir.Conv2d):
            node = ir.Conv2d((node.weight != 0) * 1.0, None, node.stride, node.padding, node.dilation, node.groups)
        elif isinstance(node, ir.Linear):
            node = ir.Linear((node.weight != 0) * 1.0)
        vals = ir.eval_node(node, [vals])
    return (vals.reshape(n, -1) > 0).sum(axis=1).reshape(shape)


@pytest.mark.parametrize("kw", [dict(stride=2, padding=1), dict(stride=(2, 1), padding=(0, 2), dilation=(1, 2)),
                                dict(padding=1, groups=2), dict(stride=3, padding=2, dilation=2)])
def test_conv_fanout_matches_brute_force(kw):
    groups = kw.get("groups", 1)
    g = _conv_net(ir.Conv2d(np.ones((6, 4 // groups, 3, 3)), **kw), (4, 7, 9))
    fan = source_fanout(g, "s", set(g.recorded_nodes())).maps["conv"]
    np.testing.assert_array_equal(fan, _brute_fanout(g, "s", "conv"))


@pytest.mark.parametrize("kw", [dict(padding=1), dict(stride=2, padding=2, dilation=2, groups=2)])
def test_zero_weights_are_no_synapses(kw):
    w = np.random.default_rng(1).normal(size=(6, 4 // kw.get("groups", 1), 3, 3))
    w[np.random.default_rng(2).random(w.shape) < 0.4] = 0.0   # pruned taps
    w[:, :, 1, :] = 0.0                                          # a dead kernel row
    g = _conv_net(ir.Conv2d(w, **kw), (4, 7, 9))
    fan = source_fanout(g, "s", set(g.recorded_nodes()))
    np.testing.assert_array_equal(fan.maps["conv"], _brute_fanout(g, "s", "conv"))
    assert (fan.dense["conv"] >= fan.maps["conv"]).all() and fan.dense["conv"].sum() > fan.maps["conv"].sum()


def test_zero_weights_after_global_pool_into_linear():
    w = np.random.default_rng(0).normal(size=(5, 3))
    w[w < 0] = 0.0
    g = ir.Graph({"x": ir.Input((3, 4, 4)), "s": ir.IF(), "pool": ir.AvgPool2d(4, 4), "f": ir.Flatten(),
                  "fc": ir.Linear(w), "readout": ir.Readout()},
                 [("x", "s"), ("s", "pool"), ("pool", "f"), ("f", "fc"), ("fc", "readout")], "x", "readout")
    fan = source_fanout(g, "s", set(g.recorded_nodes()))
    np.testing.assert_array_equal(fan.maps["fc"], _brute_fanout(g, "s", "fc"))
    np.testing.assert_array_equal(fan.dense["fc"], np.full((3, 4, 4), 5))


@pytest.mark.parametrize("pool", [ir.AvgPool2d(2, 2), ir.AvgPool2d(3, 1, 1), ir.AvgPool2d(3, 2)])
def test_avgpool_then_conv_counts_distinct_targets(pool):
    g = _conv_net(ir.Conv2d(np.ones((3, 2, 3, 3)), padding=1), (2, 8, 8), pool)
    fan = source_fanout(g, "s", set(g.recorded_nodes())).maps["conv"]
    brute = _brute_fanout(g, "s", "conv")
    np.testing.assert_array_equal(fan, brute)


def test_maxpool_of_spikes_routes_and_its_spikes_are_counted():
    g = ir.Graph({"x": ir.Input((1, 4, 4)), "s": ir.IF(), "mp": ir.MaxPool2d(2, 2), "f": ir.Flatten(),
                  "fc": ir.Linear(np.ones((3, 4))), "h": ir.IF(), "readout": ir.Readout()},
                 [("x", "s"), ("s", "mp"), ("mp", "f"), ("f", "fc"), ("fc", "h"), ("h", "readout")], "x", "readout")
    assert set(g.recorded_nodes()) == {"s", "mp", "h"}
    sums = {"s": np.full((1, 4, 4), 2), "mp": np.array([[[1, 0], [2, 0]]]), "h": np.zeros(3, np.int64)}
    c = count_ops(g, sums, None, 1, 4, "constant")
    rows = {r["node"]: r for r in c.layers}
    assert rows["fc"]["synops"] == 3 * 3
    assert rows["mp"]["routed_spikes"] == 32 and c.totals.synops == 9


def test_residual_spikes_enter_add_one_synapse_each():
    g = ir.Graph({"x": ir.Input((2, 3, 3)), "a": ir.IF(), "conv": ir.Conv2d(np.ones((2, 2, 1, 1))),
                  "add": ir.Add(np.ones((2, 2))), "b": ir.IF(), "f": ir.Flatten(), "fc": ir.Linear(np.ones((4, 18))),
                  "readout": ir.Readout()},
                 [("x", "a"), ("a", "conv"), ("conv", "add"), ("a", "add"), ("add", "b"), ("b", "f"), ("f", "fc"),
                  ("fc", "readout")], "x", "readout")
    a = np.arange(18).reshape(2, 3, 3)
    c = count_ops(g, {"a": a, "b": np.zeros((2, 3, 3), np.int64)}, None, 1, 5, "constant")
    rows = {r["node"]: r for r in c.layers}
    assert rows["conv"]["synops"] == a.sum() * 2 and rows["add"]["synops"] == a.sum()


def test_no_recorded_spikes_is_an_error():
    g, _ = _net_232()
    with pytest.raises(SnnError, match="recorded no spikes"):
        count_ops(g, {}, None, 1, 4, "constant")
    with pytest.raises(SnnError, match="no spike counts for x"):
        count_ops(g, {"h": np.zeros(3, np.int64)}, None, 1, 4, "poisson")


def test_report_of_a_record_none_simulation_is_a_clear_error(mlp_net, digits):
    import snn

    res = snn.simulate(mlp_net, digits[2][:8], timesteps=4, record="none")
    with pytest.raises(SnnError, match="recorded no spikes"):
        snn.energy_report(mlp_net, res)


def test_energy_never_imports_torch_even_when_pricing():
    code = ("import sys, numpy as np\n"
            "from snn import ir\nfrom snn.energy import energy_report\nfrom snn.simulate import SimulationResult\n"
            "g = ir.Graph({'x': ir.Input((2,)), 'fc': ir.Linear(np.ones((3, 2))), 'h': ir.IF(), 'o': ir.Linear("
            "np.ones((2, 3))), 'r': ir.Readout()}, [('x','fc'),('fc','h'),('h','o'),('o','r')], 'x', 'r')\n"
            "s = np.array([[1, 0, 1], [0, 1, 1]])\n"
            "res = SimulationResult(np.zeros((2, 1, 2)), {'h': s.sum(0)}, {'h': s}, 1, 2, 'x', 'constant', "
            "'float64', 'cpu', 0, 1, 0.0)\n"
            "rep = energy_report(g, res, hardware=['loihi', 'gpu-h100', '45nm-int8'])\n"
            "assert rep.totals.synops == 8\n"
            "bad = [m for m in ('torch', 'brian2', 'snntorch') if m in sys.modules]\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr[-800:]


@pytest.mark.brian2
@pytest.mark.skipif(importlib.util.find_spec("snn.backends.brian2") is None, reason="brian2 backend not written yet")
def test_counts_identical_whichever_backend_recorded(cnn_net, digits):
    import snn

    x = digits[2][:6].reshape(-1, 1, 8, 8)
    reps = {}
    for backend in ("snntorch", "brian2"):
        res = snn.simulate(cnn_net, x, timesteps=6, backend=backend, precision="float64")
        reps[backend] = (res, snn.energy_report(cnn_net, res, hardware=["loihi"]))
    (r1, e1), (r2, e2) = reps["snntorch"], reps["brian2"]
    assert r1.spike_sums.keys() == r2.spike_sums.keys()
    for k in r1.spike_sums:
        np.testing.assert_array_equal(r1.spike_sums[k], r2.spike_sums[k])
    assert e1.totals.synops == e2.totals.synops
    assert [r["synops"] for r in e1.layers] == [r["synops"] for r in e2.layers]
    np.testing.assert_array_equal(e1.per_step["synops"], e2.per_step["synops"])
