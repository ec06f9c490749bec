"""Accuracy of the MNIST LeNet-5 SNN with fixed-point weights (snn.quantize) against T.

Trains (or loads from cache) the LeNet-5 of the core issue (BatchNorm + max-pooling),
converts it with the defaults (percentile 99.99, reset by subtraction, v_init 0.5), and
simulates the float network and its 8-, 6- and 4-bit quantisations (per-layer shared
exponent, signed mantissa, round to nearest) on the full 10,000-image test set.

Acceptance (issue 13): 8-bit weights within 0.2 points of float at T=32.

    python experiments/bench/quantization.py [--n-test 10000] [--timesteps 64]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import common

BITS = (8, 6, 4)
REPORT_T = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-test", type=int, default=10000)
    ap.add_argument("--timesteps", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=500)
    a = ap.parse_args()
    common.setup()
    import snn
    from snn import data, train

    model, info = common.mnist_lenet()
    x_cal, _ = data.load_dataset("mnist", "train", limit=2048)
    x, y = data.load_dataset("mnist", "test", limit=a.n_test)
    ann = train.evaluate(model, x, y)
    net = snn.convert(model, x_cal)
    nets = {"float": net, **{f"{b}-bit": snn.quantize(net, weight_bits=b) for b in BITS}}
    ts = [t for t in REPORT_T if t <= a.timesteps]
    rows, layers = {}, {}
    for label, n in nets.items():
        t0 = time.perf_counter()
        res = snn.simulate(n, x, a.timesteps, batch_size=a.batch_size, record="totals")
        acc = res.accuracy(y)
        rows[label] = {"accuracy": {str(t): float(acc[t - 1]) for t in ts},
                       "spikes_per_sample": float(sum(v.sum() for v in res.spike_sums.values()) / len(x)),
                       "seconds": time.perf_counter() - t0}
        if label != "float":
            layers[label] = n.meta["quantization"]["layers"]
        print(f"{label:6s} " + " ".join(f"T={t}:{100 * acc[t - 1]:.2f}" for t in ts), flush=True)
    d8 = 100 * (rows["8-bit"]["accuracy"]["32"] - rows["float"]["accuracy"]["32"]) if 32 in ts else None
    print(f"\nANN {100 * ann:.2f} %; 8-bit minus float at T=32: {d8:+.2f} points (acceptance: within 0.2)")
    head = "| weights | " + " | ".join(f"T={t}" for t in ts) + " | spikes/sample |"
    print("\n" + head + "\n|" + "---|" * (len(ts) + 2))
    for label, r in rows.items():
        print(f"| {label} | " + " | ".join(f"{100 * r['accuracy'][str(t)]:.2f}" for t in ts) +
              f" | {r['spikes_per_sample']:.0f} |")
    common.write_json("quantization_mnist.json", {
        "model": "lenet5 (BatchNorm, max-pooling)", "train": info if isinstance(info, dict) else str(info),
        "conversion": {k: net.meta[k] for k in ("method", "percentile", "reset", "v_init")},
        "n_test": len(x), "ann_accuracy": float(ann), "results": rows, "delta_8bit_T32_points": d8,
        "exponents": {label: {n: v["exponent"] for n, v in ls.items()} for label, ls in layers.items()},
        "layers": layers})


if __name__ == "__main__":
    main()
