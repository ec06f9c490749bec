"""Fan-out maps and operation counts of the energy model against a brute-force reference.

The reference (``tests.test_node_types._brute_fanouts``) propagates one-hot spikes of each
source neuron through the float64 evaluator with the weights replaced by ones (non-zero
weights only, or every weight for the structural count) and counts the distinct outputs
reached. :data:`GRAPHS` adds to the conversion catalogue of ``test_node_types`` (checked
there) the layer families it lacks or has only in one form: strided convolutions without
pooling (with inputs no window reads), depthwise and grouped dilated convolutions, 1-D
convolutions after 1-D average pooling, overlapping and global average pooling into
convolutions and linear layers with zero weights, reshapes of a flat spike source into an
image, upsampling, padding, concatenation, residual adds and affine layers with zero gains,
and a max-pool of spikes that routes. For each graph and spike source the fan-out maps
equal the reference, and ``count_ops``' per-layer SynOps, spike connections and per-step
SynOps equal the spike counts weighted by the reference maps.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

from snn import ir
from snn.energy import count_ops
from snn.energy.counting import ENERGY, Synapse, source_fanout
from tests.test_node_types import _brute_fanouts

RNG = np.random.default_rng(7)


def _w(*shape: int, zeros: float = 0.0) -> np.ndarray:
    """Seeded normal weights, a fraction ``zeros`` of them set to zero."""
    w = RNG.normal(size=shape)
    w[RNG.random(shape) < zeros] = 0.0
    return w


def _graph(in_shape: tuple[int, ...], layers: list[tuple[str, ir.Node, tuple[str, ...]]]) -> ir.Graph:
    """``x -> s`` (IF, a spike source) followed by ``layers`` (name, node, inputs); the last
    layer feeds the readout."""
    nodes: dict[str, ir.Node] = {"x": ir.Input(in_shape), "s": ir.IF()}
    edges = [("x", "s")]
    for name, node, ins in layers:
        nodes[name] = node
        edges += [(i, name) for i in ins]
    nodes["readout"] = ir.Readout()
    edges.append((layers[-1][0], "readout"))
    return ir.Graph(nodes, edges, "x", "readout")


def _head(after: str, n_in: int) -> list[tuple[str, ir.Node, tuple[str, ...]]]:
    return [("flat", ir.Flatten(), (after,)), ("fc", ir.Linear(_w(3, n_in)), ("flat",))]


GRAPHS: dict[str, Callable[[], ir.Graph]] = {
    "strided_conv_no_pool": lambda: _graph((4, 9, 9), [
        ("c1", ir.Conv2d(_w(6, 4, 3, 3), stride=2, padding=1), ("s",)), ("h1", ir.IF(), ("c1",)),
        ("c2", ir.Conv2d(_w(5, 6, 2, 2, zeros=0.3), stride=3), ("h1",)), ("h2", ir.IF(), ("c2",)),
        *_head("h2", 5 * 2 * 2)]),
    "depthwise_grouped_dilated": lambda: _graph((6, 8, 8), [
        ("dw", ir.Conv2d(_w(6, 1, 3, 3, zeros=0.2), padding=2, dilation=2, groups=6), ("s",)), ("h1", ir.IF(), ("dw",)),
        ("gc", ir.Conv2d(_w(8, 3, 3, 3), stride=(2, 1), padding=(1, 0), groups=2), ("h1",)), ("h2", ir.IF(), ("gc",)),
        *_head("h2", 8 * 4 * 6)]),
    "conv1d_avgpool1d": lambda: _graph((4, 20), [
        ("c1", ir.Conv1d(_w(6, 2, 3), stride=2, padding=1, groups=2), ("s",)), ("h1", ir.IF(), ("c1",)),
        ("p", ir.AvgPool1d(3, 2, 1), ("h1",)), ("c2", ir.Conv1d(_w(5, 6, 3), dilation=2), ("p",)),
        ("h2", ir.IF(), ("c2",)), *_head("h2", 5 * 1)]),
    "avgpool_into_conv_and_linear": lambda: _graph((3, 8, 8), [
        ("p1", ir.AvgPool2d(3, 1, 1), ("s",)), ("c1", ir.Conv2d(_w(4, 3, 3, 3), stride=2, padding=1), ("p1",)),
        ("h1", ir.IF(), ("c1",)), ("p2", ir.AvgPool2d(3, 1), ("h1",)), ("flat", ir.Flatten(), ("p2",)),
        ("fc", ir.Linear(_w(5, 4 * 2 * 2, zeros=0.6)), ("flat",))]),
    "global_pool_into_linear": lambda: _graph((5, 4, 4), [
        ("p", ir.AvgPool2d(4, 4), ("s",)), ("flat", ir.Flatten(), ("p",)), ("fc", ir.Linear(_w(7, 5, zeros=0.5)),
                                                                            ("flat",))]),
    "reshape_flat_to_image": lambda: _graph((48,), [
        ("r", ir.Reshape((3, 4, 4)), ("s",)), ("c1", ir.Conv2d(_w(4, 3, 3, 3, zeros=0.3), padding=1), ("r",)),
        ("h1", ir.IF(), ("c1",)), ("f1", ir.Flatten(), ("h1",)), ("r2", ir.Reshape((8, 8)), ("f1",)),
        ("c2", ir.Conv1d(_w(2, 8, 3), stride=2), ("r2",)), ("h2", ir.IF(), ("c2",)), *_head("h2", 2 * 3)]),
    "upsample_pad": lambda: _graph((2, 4, 4), [
        ("up", ir.Upsample((2, 3)), ("s",)), ("pad", ir.Pad((1, 0, 0, 2)), ("up",)),
        ("c1", ir.Conv2d(_w(3, 2, 3, 3), stride=2), ("pad",)), ("h1", ir.IF(), ("c1",)),
        ("pad2", ir.Pad((2, 1, 0, 0)), ("h1",)), ("c2", ir.Conv2d(_w(2, 3, 1, 1, zeros=0.3)), ("pad2",)),
        ("h2", ir.IF(), ("c2",)), *_head("h2", 2 * 7 * 6)]),
    "concat_then_pool": lambda: _graph((2, 4, 4), [
        ("cb", ir.Conv2d(_w(3, 2, 1, 1)), ("s",)), ("hb", ir.IF(), ("cb",)), ("cat", ir.Concat(), ("s", "hb")),
        ("p", ir.AvgPool2d(2, 2), ("cat",)), ("c1", ir.Conv2d(_w(4, 5, 3, 3), padding=1), ("p",)),
        ("h1", ir.IF(), ("c1",)), ("cat2", ir.Concat(), ("h1", "p")), ("flat", ir.Flatten(), ("cat2",)),
        ("fc", ir.Linear(_w(3, 9 * 2 * 2, zeros=0.5)), ("flat",))]),
    "residual_add_affine": lambda: _graph((4, 6, 6), [
        ("c1", ir.Conv2d(_w(4, 4, 3, 3), padding=1), ("s",)),
        ("add", ir.Add(np.array([[1.0, 0.5, 2.0, 1.0], [1.0, 0.0, 1.0, 0.5]])), ("c1", "s")),
        ("h1", ir.IF(), ("add",)), ("aff", ir.Affine(np.array([1.0, 0.0, 2.0, 0.5]), np.zeros(4)), ("h1",)),
        ("h2", ir.IF(), ("aff",)), ("p", ir.AvgPool2d(2, 2), ("h2",)),
        ("c3", ir.Conv2d(_w(4, 4, 3, 3), stride=2, padding=1), ("h1",)), ("add2", ir.Add(np.ones((2, 4))), ("p", "c3")),
        ("h3", ir.IF(), ("add2",)), *_head("h3", 4 * 3 * 3)]),
    "maxpool_routes": lambda: _graph((3, 6, 6), [
        ("mp", ir.MaxPool2d(2, 2), ("s",)), ("c1", ir.Conv2d(_w(4, 3, 3, 3, zeros=0.2), padding=1), ("mp",)),
        ("h1", ir.IF(), ("c1",)), *_head("h1", 4 * 3 * 3)]),
}


@pytest.fixture(scope="module", params=list(GRAPHS))
def graph(request) -> ir.Graph:
    return GRAPHS[request.param]()


def test_fanout_maps_equal_brute_force(graph):
    stop = set(graph.recorded_nodes())
    for src in graph.recorded_nodes() + [graph.input]:
        fan = source_fanout(graph, src, stop)
        brute = _brute_fanouts(graph, src, stop)
        dense = _brute_fanouts(graph, src, stop, every_weight=True)
        assert sorted(fan.maps) == sorted(fan.dense) == sorted(brute), src
        for k in brute:
            np.testing.assert_array_equal(fan.maps[k], brute[k], err_msg=f"{src} -> {k}")
            np.testing.assert_array_equal(fan.dense[k], dense[k], err_msg=f"{src} -> {k} (every weight)")


def test_counts_equal_spikes_times_brute_force_maps(graph):
    """count_ops' per-layer and per-step SynOps and spike connections against the reference."""
    stop = graph.recorded_nodes()
    T, N = 5, 3
    steps = {s: RNG.integers(0, N + 1, size=(T,) + graph.shapes[s]) for s in stop + [graph.input]}
    sums = {s: v.sum(axis=0) for s, v in steps.items()}
    c = count_ops(graph, sums, steps, N, T, "poisson")
    rows = {r["node"]: r for r in c.layers}
    synops: dict[str, float] = {}
    per_step = np.zeros(T)
    conns: dict[str, int] = {}
    for src in stop + [graph.input]:
        for k, m in source_fanout(graph, src, set(stop)).maps.items():
            synops[k] = synops.get(k, 0.0) + float((sums[src] * m).sum()) / N
            per_step += (steps[src] * m).reshape(T, -1).sum(axis=1) / N
        for k, m in _brute_fanouts(graph, src, set(stop), every_weight=True).items():
            conns[k] = conns.get(k, 0) + int(m.sum())
    synapses = [k for k, v in graph.nodes.items() if isinstance(ENERGY.get(type(v)), Synapse)]
    assert synapses and set(synapses) <= set(synops)
    for k in synapses:
        assert rows[k]["synops"] == pytest.approx(synops[k], rel=1e-12), k
        assert rows[k]["spike_connections"] == conns[k], k
    np.testing.assert_allclose(c.per_step["synops"], np.cumsum(per_step), rtol=1e-12)


def test_brute_force_reference_sees_zero_weights():
    """The reference itself: a pruned convolution reaches fewer outputs than its structure."""
    g = GRAPHS["strided_conv_no_pool"]()
    stop = set(g.recorded_nodes())
    brute, dense = _brute_fanouts(g, "h1", stop), _brute_fanouts(g, "h1", stop, every_weight=True)
    assert brute["c2"].sum() < dense["c2"].sum() and (brute["c2"] <= dense["c2"]).all()


def test_pooled_path_into_pruned_conv_counts_every_weight():
    """Documented: after an average pool a spike's targets in a convolution are its structural
    ones (zero weights included), so ``maps`` equals ``dense`` there, not the pruned count."""
    g = _graph((2, 6, 6), [("p", ir.AvgPool2d(2, 2), ("s",)),
                           ("c", ir.Conv2d(_w(3, 2, 3, 3, zeros=0.5), padding=1), ("p",)), ("h", ir.IF(), ("c",)),
                           *_head("h", 3 * 3 * 3)])
    stop = set(g.recorded_nodes())
    fan = source_fanout(g, "s", stop)
    np.testing.assert_array_equal(fan.maps["c"], fan.dense["c"])
    np.testing.assert_array_equal(fan.dense["c"], _brute_fanouts(g, "s", stop, every_weight=True)["c"])
    assert _brute_fanouts(g, "s", stop)["c"].sum() < fan.maps["c"].sum()
