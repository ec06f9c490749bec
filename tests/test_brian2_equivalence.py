"""brian2 and snntorch give the same spikes: identical per-neuron spike counts (totals and
per step) in every recorded node and identical predictions, for the same SNN graph and
encoded input in float64, for an MLP, a CNN with BN + max-pooling and a residual CNN
(option-A shortcut), both reset modes, constant and Poisson encodings; plus float32.

The default suite runs a few of these on brian2's numpy target (no compilation); the
full matrix on the cython target (compiled once, then cached) and the cpp_standalone
runs are marked slow. Readout values may differ in the last bits (the synaptic sums are
added in another order than torch's BLAS/oneDNN kernels), so outputs are compared to
1e-9 relative; spike counts and predictions must be exactly equal.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

import snn

pytestmark = pytest.mark.brian2

N, T = 20, 16


@pytest.fixture(scope="module")
def zero_nets(digits, digits_mlp, digits_cnn, digits_resnet):
    """The three fixture ANNs converted with reset to zero."""
    x, x4 = digits[0], digits[0].reshape(-1, 1, 8, 8)
    return {"mlp": snn.convert(digits_mlp, x, reset="zero"), "cnn": snn.convert(digits_cnn, x4, reset="zero"),
            "resnet": snn.convert(digits_resnet, x4, reset="zero")}


def _net(request, which: str, reset: str):
    if reset == "zero":
        return request.getfixturevalue("zero_nets")[which]
    return request.getfixturevalue(f"{which}_net")


def _inputs(digits, which: str) -> np.ndarray:
    x = digits[2][:N]
    return x if which == "mlp" else x.reshape(-1, 1, 8, 8)


def assert_equivalent(net, x, encoding: str, precision: str = "float64", timesteps: int = T, **brian2_options):
    a = snn.simulate(net, x, timesteps, backend="snntorch", encoding=encoding, precision=precision, seed=3)
    b = snn.simulate(net, x, timesteps, backend="brian2", encoding=encoding, precision=precision, seed=3,
                     **brian2_options)
    assert sorted(b.spike_sums) == sorted(a.spike_sums)
    assert all(int(v.sum()) > 0 for v in a.spike_sums.values()), "a layer never spikes: the test would be weak"
    for k in a.spike_sums:
        np.testing.assert_array_equal(b.spike_sums[k], a.spike_sums[k], err_msg=f"spike counts of {k!r}")
        np.testing.assert_array_equal(b.step_sums[k], a.step_sums[k], err_msg=f"per-step spike counts of {k!r}")
    np.testing.assert_array_equal(b.predictions, a.predictions)
    rtol = 1e-9 if precision == "float64" else 1e-4
    np.testing.assert_allclose(b.outputs, a.outputs, rtol=rtol, atol=rtol)
    assert b.outputs.dtype == np.dtype(precision)
    return a, b


# --------------------------------------------------------------------------- default suite (numpy target)
@pytest.mark.parametrize("which,reset,encoding", [
    ("mlp", "subtract", "constant"),
    ("cnn", "subtract", "poisson"),
    ("resnet", "zero", "constant"),
])
def test_equivalent_numpy_target(request, digits, which, reset, encoding):
    assert_equivalent(_net(request, which, reset), _inputs(digits, which), encoding, target="numpy")


def test_equivalent_float32_numpy_target(mlp_net, digits):
    assert_equivalent(mlp_net, _inputs(digits, "mlp"), "constant", precision="float32", target="numpy")


# --------------------------------------------------------------------------- full matrix (cython)
@pytest.mark.slow
@pytest.mark.parametrize("encoding", ["constant", "poisson"])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("which", ["mlp", "cnn", "resnet"])
def test_equivalent_cython(request, digits, which, reset, encoding):
    assert_equivalent(_net(request, which, reset), _inputs(digits, which), encoding, target="cython",
                      timesteps=32)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["cnn", "resnet"])
def test_equivalent_float32_cython(request, digits, which):
    assert_equivalent(_net(request, which, "subtract"), _inputs(digits, which), "constant", precision="float32",
                      target="cython")


# --------------------------------------------------------------------------- standalone and caches
@pytest.mark.slow
def test_cpp_standalone_equivalent_and_repeatable(cnn_net, digits, tmp_path):
    """Two standalone runs in one process; the second reuses the compiled project."""
    x = _inputs(digits, "cnn")
    _, b1 = assert_equivalent(cnn_net, x, "poisson", target="cpp_standalone", cache_dir=tmp_path)
    objs = {p: p.stat().st_mtime_ns for p in (tmp_path / "standalone").rglob("*.o")}
    assert objs, "no compiled objects in the standalone project"
    t0 = time.perf_counter()
    _, b2 = assert_equivalent(cnn_net, x, "poisson", target="cpp_standalone", cache_dir=tmp_path)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "standalone").rglob("*.o")} == objs, "recompiled"
    for k in b1.spike_sums:
        np.testing.assert_array_equal(b1.spike_sums[k], b2.spike_sums[k])
    assert time.perf_counter() - t0 < 600


@pytest.mark.slow
def test_cython_cache_reused(mlp_net, digits, tmp_path):
    """A second run of the same network compiles nothing new into the cache."""
    x = _inputs(digits, "mlp")
    snn.simulate(mlp_net, x, 4, backend="brian2", target="cython", cache_dir=tmp_path, precision="float64")
    files = set((tmp_path / "cython").rglob("*"))
    assert any(f.suffix in (".so", ".pyd") for f in files)
    snn.simulate(mlp_net, x, 4, backend="brian2", target="cython", cache_dir=tmp_path, precision="float64")
    assert set((tmp_path / "cython").rglob("*")) == files


@pytest.mark.slow
@pytest.mark.parametrize("encoding", ["constant", "poisson"])
@pytest.mark.parametrize("target", ["cython", "cpp_standalone"])
def test_compiled_targets_reuse_one_network_across_runs(cnn_net, digits, tmp_path, target, encoding):
    """Groups of 3 samples, runs of 9 (3 epochs): 20 samples take three runs of one network (the
    standalone binary, built once, is run three times with new currents or input trains)."""
    assert_equivalent(cnn_net, _inputs(digits, "cnn"), encoding, target=target, group=3, run_samples=7,
                      cache_dir=tmp_path)
