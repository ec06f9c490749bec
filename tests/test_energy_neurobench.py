"""Our counts against NeuroBench's SynapticOperations on the same converted network, run
through ``neurobench.models.SNNTorchModel(net.to_snntorch())``.

NeuroBench hooks ``nn.Linear``/``nn.Conv2d`` at every step: binary inputs are ACs (input
spikes x non-zero-weight fan-out), other inputs MACs. So, per inference:

* Effective_ACs == our SynOps (MLP, CNN: no zero weights, max-pooled spikes are binary);
* Effective_MACs == T x our effective first-layer MACs (the constant input is recomputed
  every step there; we count it once and say so);
* Dense == T x (our spike-fed connections + first-layer connections).

Where definitions differ (residual CNN): a spike entering an ``Add`` through its gain is
one SynOp for us and invisible to NeuroBench (no Linear/Conv hook); after an average pool
of spikes NeuroBench sees non-binary values and counts MACs of non-zero pooled values,
we count each spike's distinct targets as SynOps.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import snn
from snn.energy import energy_report

neurobench = pytest.importorskip("neurobench")
from neurobench.metrics.workload import SynapticOperations  # noqa: E402
from neurobench.models import SNNTorchModel  # noqa: E402

T = 6


def _neurobench(net, x: np.ndarray, y: np.ndarray) -> dict:
    model = SNNTorchModel(net.to_snntorch())
    model.register_hooks()
    xt = torch.as_tensor(x)
    data = xt.unsqueeze(1).expand((len(x), T) + tuple(xt.shape[1:])).contiguous()
    with torch.no_grad():
        preds = model(data)
    return SynapticOperations()(model, preds, (data, torch.as_tensor(y)))


def _ours(net, x):
    res = snn.simulate(net, x, timesteps=T)
    return energy_report(net, res, hardware=["loihi"], x=x)


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_synops_and_macs_equal_neurobench(which, mlp_net, cnn_net, digits):
    net = mlp_net if which == "mlp" else cnn_net
    x = digits[2][:16] if which == "mlp" else digits[2][:16].reshape(-1, 1, 8, 8)
    nb = _neurobench(net, x, digits[3][:16])
    rep = _ours(net, x)
    t = rep.totals
    assert t.synops > 0
    assert nb["Effective_ACs"] == pytest.approx(t.synops, rel=1e-12)
    assert nb["Effective_MACs"] == pytest.approx(T * t.input_macs_effective, rel=1e-12)
    assert nb["Dense"] == pytest.approx(T * (t.spike_connections + t.input_macs), rel=1e-12)


def test_residual_network_differences_are_the_documented_ones(resnet_net, digits):
    x = digits[2][:16].reshape(-1, 1, 8, 8)
    nb = _neurobench(resnet_net, x, digits[3][:16])
    rep = _ours(resnet_net, x)
    rows = {r["node"]: r for r in rep.layers}
    adds = sum(r["synops"] for r in rep.layers if r["kind"] == "add")
    after_pool = rows["linear"]["synops"]  # spikes -> global avg pool -> flatten -> linear
    assert adds > 0 and after_pool > 0
    # ACs: everything except the Add gains and the pooled path
    assert nb["Effective_ACs"] == pytest.approx(rep.totals.synops - adds - after_pool, rel=1e-12)
    # MACs: NeuroBench's MACs beyond the first layer are the linear layer on non-zero pooled
    # values: at most one per spike-reached target, so at most our SynOps there
    pooled_macs = nb["Effective_MACs"] - T * rep.totals.input_macs_effective
    assert 0 < pooled_macs <= after_pool


def test_1d_cnn_with_clip_pool_and_padding_equals_neurobench(digits):
    """A 1-D CNN (Conv1d, ReLU6, spiking MaxPool1d, zero padding): NeuroBench hooks nn.Conv1d
    in the exported module, and a padded spike train stays binary, so the SynOps and MACs
    agree. Dense counts differ by the explicit padding: NeuroBench counts the second conv's
    connections from the 2 padded positions (1 tap each, 6 channels x 8 outputs) at every
    step; for us padding is never a connection."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv1d(4, 6, 3, padding=1), torch.nn.ReLU6(), torch.nn.MaxPool1d(2),
                                torch.nn.ConstantPad1d((1, 1), 0.0), torch.nn.Conv1d(6, 8, 3), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 8, 10))
    net = snn.convert(model, digits[0][:200].reshape(-1, 4, 16))
    assert {"conv1d", "maxpool1d", "pad"} <= {v.kind for v in net.graph.nodes.values()}
    x = digits[2][:16].reshape(-1, 4, 16)
    nb = _neurobench(net, x, digits[3][:16])
    t = _ours(net, x).totals
    assert t.synops > 0
    assert nb["Effective_ACs"] == pytest.approx(t.synops, rel=1e-12)
    assert nb["Effective_MACs"] == pytest.approx(T * t.input_macs_effective, rel=1e-12)
    assert nb["Dense"] == pytest.approx(T * (t.spike_connections + t.input_macs + 2 * 6 * 8), rel=1e-12)
