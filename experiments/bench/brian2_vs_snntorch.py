"""Benchmark: the brian2 backend against the snntorch backend on MNIST LeNet-5.

The same converted network (the MNIST LeNet-5 of the core issue, shared by the benchmarks:
``common.mnist_lenet()``, converted with :func:`snn.convert`) simulates the first ``--n`` MNIST test images for
``--timesteps`` steps in both backends, float64, constant encoding, ``record="steps"``.
Checks: equal accuracy at every step, identical per-neuron spike counts (totals and per
step) in every recorded layer, identical energy reports (:func:`snn.energy_report`).
Prints the wall times and their ratio (both single process on the same cores; torch uses
its default intra-op threads, brian2's generated code is single-threaded) and writes JSON
to ``results/reference/brian2_vs_snntorch.json``.

Both backends are warmed up before the timed runs (snntorch loads its compiled kernels;
brian2 compiles its code on one batch of 2 steps, filling the cache), so the timed runs
measure simulation, brian2's network construction included.

    SNN_DATA=/work/shared/data python experiments/bench/brian2_vs_snntorch.py
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

import common
import snn
from snn import data
from snn.util import atomic_write_text

ROOT = Path(__file__).resolve().parents[2]


def _energy(net, res) -> dict | None:
    """The energy report as plain data without its run metadata, or None where snn.energy is missing."""
    try:
        rep = snn.energy_report(net, res)
    except ImportError:
        return None
    from snn.energy.report import jsonable

    d = jsonable(dataclasses.asdict(rep))
    d.pop("meta", None)
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="test images")
    ap.add_argument("--timesteps", type=int, default=32)
    ap.add_argument("--batch", type=int, default=100, help="brian2 samples per network run")
    ap.add_argument("--target", default="cython", help="brian2 code generation target")
    ap.add_argument("--out", default=str(ROOT / "results" / "reference" / "brian2_vs_snntorch.json"))
    args = ap.parse_args()

    common.setup()
    model, info = common.mnist_lenet()
    x_cal, _ = data.load_dataset("mnist", "train", limit=2048)
    net = snn.convert(model, x_cal)
    x, y = data.load_dataset("mnist", "test", limit=args.n)
    T = args.timesteps
    with torch.no_grad():
        ann_acc = float((model(torch.as_tensor(x)).argmax(1).numpy() == y).mean())

    same = dict(timesteps=T, precision="float64", encoding="constant", record="steps")
    snn.simulate(net, x[:8], backend="snntorch", **{**same, "timesteps": 2})  # loads/compiles its kernels
    t0 = time.perf_counter()
    a = snn.simulate(net, x, backend="snntorch", **same)
    t_torch = time.perf_counter() - t0

    t0 = time.perf_counter()
    snn.simulate(net, x[:args.batch], backend="brian2", target=args.target, batch_size=args.batch,
                 **{**same, "timesteps": 2})
    t_warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    b = snn.simulate(net, x, backend="brian2", target=args.target, batch_size=args.batch, **same)
    t_brian = time.perf_counter() - t0

    acc_a, acc_b = a.accuracy(y), b.accuracy(y)
    layers = {}
    for k in a.spike_sums:
        layers[k] = {"spikes_snntorch": int(a.spike_sums[k].sum()), "spikes_brian2": int(b.spike_sums[k].sum()),
                     "identical_totals": bool(np.array_equal(a.spike_sums[k], b.spike_sums[k])),
                     "identical_per_step": bool(np.array_equal(a.step_sums[k], b.step_sums[k]))}
    same_layers = sorted(a.spike_sums) == sorted(b.spike_sums) and all(
        v["identical_totals"] and v["identical_per_step"] for v in layers.values())
    e_a, e_b = _energy(net, a), _energy(net, b)
    out = {
        "benchmark": "brian2_vs_snntorch", "model": "lenet5", "dataset": "mnist", "n_images": len(x),
        "timesteps": T, "precision": "float64", "encoding": "constant", "record": "steps",
        "ann_accuracy": ann_acc, "train": {**common.MNIST_LENET_TRAIN, "test_acc": info.get("test_acc")},
        "accuracy_snntorch": float(acc_a[-1]), "accuracy_brian2": float(acc_b[-1]),
        "accuracy_equal_every_step": bool(np.array_equal(acc_a, acc_b)),
        "predictions_identical": bool(np.array_equal(a.predictions, b.predictions)),
        "max_abs_output_diff": float(np.abs(a.outputs - b.outputs).max()),
        "layers": layers, "spike_counts_identical": same_layers,
        "energy_report_identical": None if e_a is None else e_a == e_b,
        "wall_s": {"snntorch": t_torch, "brian2": t_brian, "brian2_warmup_compile": t_warm},
        "ratio_brian2_over_snntorch": t_brian / t_torch, "target_ratio": 20.0,
        "brian2": {"target": args.target, "batch_size": args.batch},
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "brian2": __import__("brian2").__version__,
                    "load_avg_1min": os.getloadavg()[0]},
    }
    print(f"LeNet-5 / MNIST, {len(x)} test images, T={T}, float64, constant encoding")
    print(f"{'':12s} {'accuracy':>9s} {'wall [s]':>9s}")
    print(f"{'ANN':12s} {ann_acc:9.4f}")
    print(f"{'snntorch':12s} {acc_a[-1]:9.4f} {t_torch:9.2f}")
    print(f"{'brian2':12s} {acc_b[-1]:9.4f} {t_brian:9.2f}   ({args.target}; warm-up/compile {t_warm:.1f} s)")
    print(f"ratio brian2/snntorch: {t_brian / t_torch:.1f}x (target <= 20x)")
    for k, v in layers.items():
        print(f"  {k:12s} spikes {v['spikes_snntorch']:>10d} vs {v['spikes_brian2']:>10d}  "
              f"identical totals {v['identical_totals']}, per step {v['identical_per_step']}")
    print(f"accuracy equal at every step: {out['accuracy_equal_every_step']}; "
          f"energy reports identical: {out['energy_report_identical']}")
    atomic_write_text(args.out, json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
