"""Golden IF trajectories, computed by hand, for both reset modes, on every backend (snntorch
with the reference torch ops and with the fused kernels, brian2) and in the exported
snntorch module; spiking max-pool and readout semantics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import snn
from snn import ir


BACKENDS = {"snntorch-torch": ("snntorch", {"impl": "torch"}), "snntorch-fused": ("snntorch", {"impl": "auto"}),
            "brian2": ("brian2", {"target": "numpy"})}


def _simulate(variant: str, g: ir.Graph, x: np.ndarray, timesteps: int, **kw) -> snn.SimulationResult:
    backend, options = BACKENDS[variant]
    return snn.simulate(g, x, timesteps=timesteps, backend=backend, **options, **kw)


def one_neuron(reset: str, v_init: float = 0.0, threshold: float = 1.0) -> ir.Graph:
    """input (1,) -> Linear(w=1) -> IF -> Linear(w=1) -> Readout."""
    nodes = {
        "input": ir.Input((1,)),
        "fc": ir.Linear(np.ones((1, 1))),
        "if": ir.IF(threshold=threshold, reset=reset, v_init=v_init),
        "out": ir.Linear(np.ones((1, 1))),
        "readout": ir.Readout(),
    }
    edges = [("input", "fc"), ("fc", "if"), ("if", "out"), ("out", "readout")]
    return ir.Graph(nodes, edges, "input", "readout")


# I = 0.375 each step (exact in binary), threshold 1. u[t] = v[t-1] + I; spike iff u > 1.
# subtract: u = .375 .75 1.125* .5 .875 1.25* .625 1.0(tie: no spike) 1.375* .75 1.125* .5
GOLDEN_SUBTRACT = [0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 1, 0]
U_SUBTRACT = [.375, .75, 1.125, .5, .875, 1.25, .625, 1.0, 1.375, .75, 1.125, .5]
# zero:     u = .375 .75 1.125* .375 .75 1.125* ...
GOLDEN_ZERO = [0, 0, 1] * 4
U_ZERO = [.375, .75, 1.125] * 4


@pytest.mark.parametrize("reset, spikes, u", [("subtract", GOLDEN_SUBTRACT, U_SUBTRACT),
                                              ("zero", GOLDEN_ZERO, U_ZERO)])
@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("variant", list(BACKENDS))
def test_golden_if_trajectory(reset, spikes, u, precision, variant):
    g = one_neuron(reset)
    x = np.array([[0.375]])
    res = _simulate(variant, g, x, 12, precision=precision)
    assert res.spike_counts_per_step["if"][:, 0].tolist() == spikes
    # readout = mean of the output current so far = cumulative spikes / t
    np.testing.assert_allclose(res.outputs[:, 0, 0], np.cumsum(spikes) / np.arange(1, 13))
    # the exported snntorch module: same spikes, membrane u[t] exactly
    step = snn.SpikingNetwork(g).to_snntorch(precision)
    step.reset()
    got_s, got_u = [], []
    for _ in range(12):
        y, _ = step(torch.tensor(x, dtype=step.mods["n1"].layer.weight.dtype))
        got_s.append(int(y.item()))
        got_u.append(float(step.mem["if"].item()))
    assert got_s == spikes
    assert got_u == u


@pytest.mark.parametrize("variant", list(BACKENDS))
def test_v_init_starts_at_a_fraction_of_threshold(variant):
    # v_init=0.5, I=0.25: u = .75 1.0(tie) 1.25* .5 .75 1.0 1.25* ...
    res = _simulate(variant, one_neuron("subtract", v_init=0.5), np.array([[0.25]]), 8)
    assert res.spike_counts_per_step["if"][:, 0].tolist() == [0, 0, 1, 0, 0, 0, 1, 0]


@pytest.mark.parametrize("variant", list(BACKENDS))
def test_threshold_other_than_one(variant):
    # threshold 2, I=0.75: u = .75 1.5 2.25* 1.0 1.75 2.5* 1.25 2.0(tie)
    res = _simulate(variant, one_neuron("subtract", threshold=2.0), np.array([[0.75]]), 8)
    assert res.spike_counts_per_step["if"][:, 0].tolist() == [0, 0, 1, 0, 0, 1, 0, 0]


@pytest.mark.parametrize("variant", list(BACKENDS))
def test_spiking_maxpool_counts_max_of_cumulative_counts(variant):
    """Two IF neurons with rates 1/2 and 1/3 pooled: output count = max of input counts."""
    nodes = {
        "input": ir.Input((1, 1, 2)),
        "conv": ir.Conv2d(np.ones((1, 1, 1, 1))),
        "if": ir.IF(),
        "pool": ir.MaxPool2d(kernel=(1, 2), stride=(1, 2)),
        "flat": ir.Flatten(),
        "out": ir.Linear(np.ones((1, 1))),
        "readout": ir.Readout(),
    }
    edges = [("input", "conv"), ("conv", "if"), ("if", "pool"), ("pool", "flat"), ("flat", "out"),
             ("out", "readout")]
    g = ir.Graph(nodes, edges, "input", "readout")
    assert g.recorded_nodes() == ["if", "pool"]
    x = np.array([[[[0.5 + 1e-9, 0.34]]]])
    res = _simulate(variant, g, x, 12, precision="float64")
    s = res.spike_counts_per_step["if"][:, 0, 0]  # (T, 2)
    p = res.spike_counts_per_step["pool"][:, 0, 0, 0]
    cum_max = np.maximum(np.cumsum(s[:, 0]), np.cumsum(s[:, 1]))
    np.testing.assert_array_equal(np.cumsum(p), cum_max)
    assert set(np.unique(p)) <= {0, 1}
    assert p.sum() == 6  # rate 1/2 over 12 steps, not the average of the two rates
    # exported module agrees step by step
    step = snn.SpikingNetwork(g).to_snntorch("float64")
    step.reset()
    outs = [float(step(torch.tensor(x))[0].item()) for _ in range(12)]
    np.testing.assert_array_equal(outs, p)


def test_chunked_simulation_equals_unchunked(cnn_net, digits):
    x = digits[2][:40].reshape(-1, 1, 8, 8)
    a = snn.simulate(cnn_net, x, timesteps=20, chunk=1, precision="float64")
    b = snn.simulate(cnn_net, x, timesteps=20, chunk=7, precision="float64")
    # spikes identical; outputs equal up to matmul blocking (batch k*B differs by chunk)
    np.testing.assert_allclose(a.outputs, b.outputs, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(a.predictions, b.predictions)
    for k in a.step_sums:
        np.testing.assert_array_equal(a.step_sums[k], b.step_sums[k])
