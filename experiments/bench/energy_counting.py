"""Energy counting time against simulation time, on the benchmark networks and a ResNet-50.

For each network: convert with ``snn.convert`` (calibration inputs below), simulate
``n`` samples for ``T`` steps with ``record="steps"`` (per-step counts, the heaviest
input to the counting), then time ``snn.energy_report(net, res)`` on that result (the
operation counts of ``snn.energy.counting.count_ops`` plus pricing on the default
profiles; ``x`` not given, so no ANN forward pass is timed). Both are timed ``--runs``
times, alternating, and the medians are printed with the counting time as a fraction of
the simulation time. The first count of a network also makes its fan-out maps and the
other parts of the counting that no result changes (kept for the network's later counts:
several results, profiles or timesteps), so it is printed apart; the median is over the
later counts.

Networks: ResNet-50 (224x224, bottleneck blocks, seeded random weights, converted with
``method="max"`` on 4 random images; 2 samples, T=4), the MNIST LeNet-5 of
``common.py`` (256 images, T=32), the CIFAR ResNet-20 of ``snn.zoo`` (64 images, T=32,
batches of 16: ``snn.simulate`` checks the memory a batch needs) and an MNIST
average-pooling CNN (conv-BN-ReLU-AvgPool2d(2) x 2, two linear layers, seeded random
weights; 256 images, T=32).

    python experiments/bench/energy_counting.py [--runs 5] [--models resnet50,lenet5,resnet20,avgcnn]

Acceptance (issue 14): counting under 10 % of simulation time on every network; ResNet-50
counting under 5 s on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import time

import numpy as np
import torch

import common


def avg_cnn() -> torch.nn.Module:
    """MNIST CNN of conv-BN-ReLU-AvgPool2d(2) blocks and two linear layers (seeded weights)."""
    nn = torch.nn
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10)).eval()


def build(name: str):
    """(net, simulation inputs, T, batch size) of one benchmark network."""
    import snn
    from snn import data, zoo

    if name == "resnet50":
        from energy_validation import resnet50

        torch.manual_seed(0)
        x = torch.rand(4, 3, 224, 224)
        return snn.convert(resnet50(), x, method="max"), x[:2].numpy(), 4, 2
    if name == "lenet5":
        _, _, net = common.mnist_lenet_snn()
        x, _ = data.load_dataset("mnist", "test", limit=256)
        return net, x, 32, 256
    if name == "resnet20":
        xtr, _ = data.load_dataset("cifar10", "train", limit=512)
        x, _ = data.load_dataset("cifar10", "test", limit=64)
        return snn.convert(zoo.load_pretrained("resnet20").eval(), xtr), x, 32, 16
    if name == "avgcnn":
        xtr, _ = data.load_dataset("mnist", "train", limit=512)
        x, _ = data.load_dataset("mnist", "test", limit=256)
        return snn.convert(avg_cnn(), xtr), x, 32, 256
    raise SystemExit(f"unknown model {name}")


def measure(name: str, runs: int) -> dict:
    import snn

    net, x, T, batch = build(name)
    sim, count, res = [], [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        res = snn.simulate(net, x, timesteps=T, batch_size=batch, record="steps")
        sim.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        rep = snn.energy_report(net, res)
        count.append(time.perf_counter() - t0)
    row = {"network": name, "samples": len(x), "timesteps": T, "batch_size": batch,
           "simulation_s": float(np.median(sim)), "counting_s": float(np.median(count[1:] or count)),
           "counting_first_s": count[0], "simulation_runs_s": sim, "counting_runs_s": count,
           "synops": rep.totals.synops, "spike_connections": rep.totals.spike_connections}
    row["fraction"] = row["counting_s"] / row["simulation_s"]
    row["fraction_first"] = row["counting_first_s"] / row["simulation_s"]
    print(f"{name:9s} {len(x):4d} samples T={T:3d}: simulation {row['simulation_s']:8.3f} s "
          f"(range {min(sim):.3f}-{max(sim):.3f}), counting {row['counting_s']:7.3f} s "
          f"(range {min(count[1:] or count):.3f}-{max(count[1:] or count):.3f}) = {100 * row['fraction']:5.1f} % of "
          f"simulation; first count {row['counting_first_s']:.3f} s ({100 * row['fraction_first']:.1f} %: it makes "
          f"the network's fan-out maps, kept for the later counts); SynOps/inference {row['synops']:.6g}", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--models", default="resnet50,lenet5,resnet20,avgcnn")
    ap.add_argument("--out", default="energy_counting.json", help="file name under results/reference/")
    args = ap.parse_args()
    common.setup()
    load0 = os.getloadavg()
    rows = [measure(m, args.runs) for m in args.models.split(",")]
    load1 = os.getloadavg()
    print(f"# load average (1, 5, 15 min) before {load0}, after {load1}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=common.ROOT, capture_output=True,
                            text=True).stdout.strip()
    common.write_json(args.out, {"commit": commit, "runs": args.runs, "torch_threads": torch.get_num_threads(),
                                 "cores": os.cpu_count(), "load_before": load0, "load_after": load1,
                                 "rows": rows})


if __name__ == "__main__":
    main()
