"""Benchmark: one evaluation sharded across a local Ray cluster against one process.

The MNIST LeNet-5 of the benchmarks (``common.mnist_lenet()``, converted with
:func:`snn.convert`) simulates ``--n`` test images at T=``--timesteps`` with each backend,
once in this process and once with ``cluster="ray"`` on a local cluster of ``--workers``
CPUs started for the call (its start-up is timed apart). Checks that the sharded run is
identical: outputs bit for bit, spike counts per neuron (totals and per step). Writes
``results/reference/sharded_ray.json``.

On this project's 2-core machine the cluster has 2 one-CPU workers: the snntorch backend
already uses both cores in one process (torch threads), brian2's generated code uses one.

    SNN_DATA=/work/shared/data python experiments/bench/sharded.py
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

import common
import snn
from snn import data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--timesteps", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--n-snntorch", type=int, default=10000)
    ap.add_argument("--n-brian2", type=int, default=1000)
    args = ap.parse_args()
    common.setup()
    _, _, net = common.mnist_lenet_snn()
    T = args.timesteps
    rows = []
    for backend, n, kw in (("snntorch", args.n_snntorch, {}),
                           ("brian2", args.n_brian2, {"precision": "float64", "batch_size": 100})):
        x, y = data.load_dataset("mnist", "test", limit=n)
        snn.simulate(net, x[:kw.get("batch_size", 8)], T, backend=backend, **kw)  # compile / load kernels
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        one = snn.simulate(net, x, T, backend=backend, **kw)
        t_one = time.perf_counter() - t0
        t0 = time.perf_counter()
        sh = snn.simulate(net, x, T, backend=backend, cluster="ray", workers=args.workers, **kw)
        t_sh = time.perf_counter() - t0
        info = sh.info["cluster"]
        same = (np.array_equal(one.outputs, sh.outputs)
                and all(np.array_equal(one.spike_sums[k], sh.spike_sums[k])
                        and np.array_equal(one.step_sums[k], sh.step_sums[k]) for k in one.spike_sums))
        rows.append({"backend": backend, "n_images": n, "timesteps": T, **kw,
                     "one_process_s": t_one, "sharded_s": t_sh, "cluster_start_s": info["cluster_start_s"],
                     "sharded_without_start_s": t_sh - info["cluster_start_s"], "shards": info["shards"],
                     "identical": bool(same), "accuracy": float(sh.accuracy(y)[-1]),
                     "load_avg_1min": [load0, os.getloadavg()[0]]})
        r = rows[-1]
        walls = ", ".join("%.2f" % s["wall_s"] for s in info["shards"])
        print(f"{backend:9s} {n:6d} images: one process {t_one:7.2f} s, sharded on {len(info['shards'])} workers "
              f"{t_sh:7.2f} s ({r['sharded_without_start_s']:.2f} s without the cluster start of "
              f"{r['cluster_start_s']:.1f} s; shards {walls} s), "
              f"identical {same}, load {r['load_avg_1min'][0]:.1f}-{r['load_avg_1min'][1]:.1f}", flush=True)
    common.write_json("sharded_ray.json", {"benchmark": "sharded_ray", "model": "lenet5", "dataset": "mnist",
                                           "workers": args.workers, "cpu_count": os.cpu_count(), "rows": rows})


if __name__ == "__main__":
    main()
