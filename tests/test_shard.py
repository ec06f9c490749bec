"""Sharded simulation (snn.simulate(..., cluster="ray")): shards of whole batches, and on a
real local 2-CPU Ray cluster results identical to one process (outputs bit for bit, spike
counts per neuron and per step), for both backends."""
from __future__ import annotations

import numpy as np
import pytest

import snn
from snn.config import load_config
from snn.errors import ConfigError, SnnError
from snn.shard import shards


@pytest.mark.parametrize("n,batch,k", [(100, 16, 2), (100, 16, 3), (5, 16, 2), (64, 16, 8), (1000, 100, 3)])
def test_shards_are_whole_batches_covering_every_sample(n, batch, k):
    parts = shards(n, batch, k)
    assert parts[0][0] == 0 and parts[-1][1] == n
    assert all(b == c for (_, b), (c, _) in zip(parts[:-1], parts[1:]))  # contiguous
    assert all(a % batch == 0 for a, _ in parts)                          # batches start where they would
    n_batches = [-(-(b - a) // batch) for a, b in parts]
    assert len(parts) == min(k, -(-n // batch)) and max(n_batches) - min(n_batches) <= 1


def test_unknown_cluster_is_refused(mlp_net, digits):
    with pytest.raises(SnnError, match="unknown cluster 'dask'"):
        snn.simulate(mlp_net, digits[2][:2], 2, cluster="dask")
    with pytest.raises(ConfigError, match="sim.cluster"):
        load_config({"sim": {"cluster": "dask"}})


def _same(a, b) -> None:
    assert sorted(a.spike_sums) == sorted(b.spike_sums)
    assert all(int(v.sum()) > 0 for v in a.spike_sums.values()), "a layer never spikes: the test would be weak"
    for k in a.spike_sums:
        np.testing.assert_array_equal(b.spike_sums[k], a.spike_sums[k], err_msg=k)
        np.testing.assert_array_equal(b.step_sums[k], a.step_sums[k], err_msg=k)
    np.testing.assert_array_equal(b.outputs, a.outputs)


@pytest.mark.ray
def test_sharded_on_a_local_ray_cluster_equals_one_process(cnn_net, digits, tmp_path):
    """A local cluster of 2 CPUs started for the call: 2 shards in 2 worker processes."""
    pytest.importorskip("ray")
    x = digits[2][:150].reshape(-1, 1, 8, 8)
    kw = dict(encoding="poisson", batch_size=16, seed=7, precision="float64")
    one = snn.simulate(cnn_net, x, 12, **kw)
    sharded = snn.simulate(cnn_net, x, 12, cluster="ray", workers=2, ray_logs=str(tmp_path / "logs"), **kw)
    _same(one, sharded)
    assert list((tmp_path / "logs").glob("session_*/raylet.out"))  # the local cluster's logs, kept there
    info = sharded.info["cluster"]
    assert [(s["start"], s["stop"]) for s in info["shards"]] == [(0, 80), (80, 150)]
    assert len({s["pid"] for s in info["shards"]}) == 2 and info["address"] == "local"


@pytest.mark.ray
def test_sharded_brian2_on_a_connected_cluster_equals_one_process(mlp_net, digits):
    """A cluster this process is connected to (as with ``address=``): the brian2 backend's
    network is built in each worker; 3 shards on 2 CPUs."""
    ray = pytest.importorskip("ray")
    import logging

    x = digits[2][:60]
    kw = dict(backend="brian2", target="numpy", encoding="poisson", batch_size=8, seed=2, precision="float64")
    one = snn.simulate(mlp_net, x, 8, **kw)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        sharded = snn.simulate(mlp_net, x, 8, cluster="ray", workers=3, **kw)
        assert ray.is_initialized(), "a cluster the caller started must stay up"
    finally:
        ray.shutdown()
    _same(one, sharded)
    assert [(s["start"], s["stop"]) for s in sharded.info["cluster"]["shards"]] == [(0, 24), (24, 40), (40, 60)]
    assert sharded.info["cluster"]["address"] == "connected"
