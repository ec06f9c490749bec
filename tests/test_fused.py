"""The fused CPU kernels give exactly the spikes and outputs of the reference torch ops
(issue 6: results identical before and after the speed work)."""
from __future__ import annotations

import numpy as np
import pytest

import snn
from snn.backends import kernels

pytestmark = pytest.mark.skipif(kernels.load() is None, reason="no C++ toolchain to build the fused kernels")


@pytest.mark.parametrize("which", ["mlp_net", "cnn_net", "resnet_net"])
@pytest.mark.parametrize("encoding", ["constant", "poisson"])
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_fused_equals_reference(which, encoding, precision, request, digits):
    net = request.getfixturevalue(which)
    x = digits[2][:48]
    if which != "mlp_net":
        x = x.reshape(-1, 1, 8, 8)
    kw = dict(timesteps=24, encoding=encoding, precision=precision, seed=5, batch_size=20, chunk=9)
    ref = snn.simulate(net, x, impl="torch", **kw)
    got = snn.simulate(net, x, impl="fused", **kw)
    assert ref.step_sums.keys() == got.step_sums.keys()
    for k in ref.step_sums:
        np.testing.assert_array_equal(ref.step_sums[k], got.step_sums[k], err_msg=k)
    np.testing.assert_array_equal(ref.outputs, got.outputs)


def test_fused_zero_reset_and_padding_pool(digits):
    import torch.nn as nn

    from tests.conftest import _fit

    x, y = digits[0].reshape(-1, 1, 8, 8), digits[1]
    m = _fit(nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),
                           nn.Flatten(), nn.Linear(6 * 4 * 4, 10)), x, y, epochs=3)
    net = snn.convert(m, x, reset="zero")
    xt = digits[2][:30].reshape(-1, 1, 8, 8)
    ref = snn.simulate(net, xt, timesteps=16, impl="torch", precision="float64")
    got = snn.simulate(net, xt, timesteps=16, impl="fused", precision="float64")
    for k in ref.step_sums:
        np.testing.assert_array_equal(ref.step_sums[k], got.step_sums[k], err_msg=k)


def test_unknown_impl(mlp_net, digits):
    with pytest.raises(snn.SnnError, match="unknown impl 'fast'.*valid: auto, fused, torch"):
        snn.simulate(mlp_net, digits[2][:2], timesteps=2, impl="fast")


@pytest.mark.parametrize("impl", ["fused", "torch"])
def test_totals_equal_the_sum_of_per_step_counts(impl, cnn_net, digits):
    x = digits[2][:30].reshape(-1, 1, 8, 8)
    steps = snn.simulate(cnn_net, x, timesteps=20, chunk=6, impl=impl, record="steps")
    totals = snn.simulate(cnn_net, x, timesteps=20, chunk=6, impl=impl, record="totals")
    assert totals.step_sums is None and totals.spike_sums.keys() == steps.spike_sums.keys()
    for k, v in steps.step_sums.items():
        np.testing.assert_array_equal(totals.spike_sums[k], v.sum(axis=0), err_msg=k)
