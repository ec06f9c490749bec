"""Simulation speed: snn's snntorch backend against SpikingJelly, and against the machine's floor.

In one run, on the same machine and threads, for each network (the MNIST LeNet-5 of the
core issue, a CIFAR ResNet-20 with its pretrained weights, an MNIST MLP) both libraries
convert the same trained ANN (snn: ``snn.convert``; SpikingJelly: ``RateCodingRecipe``,
mode "99.9%") and simulate it at T = 8, 32, 128 with batch 1, 32 and 256. Printed per
case: images/s of both, their ratio, and the dense floor ``T x dense MACs / measured
matmul rate`` (the matmul rate of a 1024x1024 float32 product, measured in this run),
with our time as a multiple of that floor. Peak memory is measured in fresh subprocesses
(batch 256, T = 8 and 128): the growth of the resident set during the simulation.

    python experiments/bench/speed.py [--quick] [--models lenet5,resnet20,mlp] [--device cuda]

With ``--device cuda`` both libraries run on the GPU (named in the output), the floor uses
the GPU's measured matmul rate, and the results go to ``speed_cuda.json``/``.png``.

Acceptance (issue 6): batch 256, T = 32: snn >= 2x SpikingJelly on the MNIST CNN and on
ResNet-20, and within 1.5x of the floor; batch 1: >= 5x SpikingJelly; peak memory at
T = 128 <= 1.2x that at T = 8.
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import common

MLP_TRAIN = {"epochs": 1, "lr": 0.002, "batch_size": 128, "seed": 0, "optimizer": "adam"}


def load_model(name: str):
    """(model, calibration inputs, test inputs) for one benchmark network."""
    from snn import data, train, zoo

    if name == "lenet5":
        model, _ = common.mnist_lenet()
        ds = "mnist"
    elif name == "mlp":
        model, _ = train.train_cached("mlp", {"hidden": [512, 256]}, "mnist", MLP_TRAIN, common.CACHE, progress=False)
        ds = "mnist"
    elif name == "resnet20":
        model = zoo.load_pretrained("resnet20")
        ds = "cifar10"
    else:
        raise SystemExit(f"unknown model {name}")
    x, _ = data.load_dataset(ds, "test", limit=512)
    xtr, _ = data.load_dataset(ds, "train", limit=5000)
    return model.eval(), xtr[np.random.default_rng(0).permutation(len(xtr))[:512]], x


class _ModuleBlock(torch.nn.Module):
    """A zoo BasicBlock with its ReLUs as modules and its option-A shortcut as the exact
    fixed 1x1 stride-2 convolution our tracer also makes of it: SpikingJelly's step-mode
    adapter rejects F.relu and F.pad. Same function, same weights."""

    def __init__(self, block):
        super().__init__()
        from snn import ir
        from snn.trace import OptionAShortcut, _option_a_rule

        nn = torch.nn
        self.conv1, self.bn1, self.conv2, self.bn2 = block.conv1, block.bn1, block.conv2, block.bn2
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()
        self.shortcut = block.shortcut
        if isinstance(block.shortcut, OptionAShortcut):
            node: ir.Conv2d = _option_a_rule(None, None, block.shortcut)
            self.shortcut = nn.Conv2d(node.weight.shape[1], node.weight.shape[0], 1, stride=node.stride, bias=False)
            self.shortcut.weight.data = torch.tensor(node.weight, dtype=torch.float32)

    def forward(self, x):
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + self.shortcut(x))


class _ModuleResNet(torch.nn.Module):
    """The zoo's CIFAR ResNet re-expressed with module ReLUs for SpikingJelly (same weights)."""

    def __init__(self, m):
        super().__init__()
        nn = torch.nn
        self.normalize, self.conv1, self.bn1, self.relu = m.normalize, m.conv1, m.bn1, nn.ReLU()
        self.layers = nn.Sequential(*[_ModuleBlock(b) for layer in (m.layer1, m.layer2, m.layer3) for b in layer])
        self.pool, self.flatten, self.linear = m.pool, nn.Flatten(), m.linear

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(self.normalize(x))))
        return self.linear(self.flatten(self.pool(self.layers(x))))


def spikingjelly_model(model, calib, device: str = "cpu"):
    from spikingjelly.activation_based.ann2snn import FXConverter, RateCodingRecipe
    from snn.zoo import CifarResNet

    if isinstance(model, CifarResNet):
        model = _ModuleResNet(copy.deepcopy(model)).eval()

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.tensor(calib)), batch_size=128)
    return FXConverter(RateCodingRecipe(dataloader=loader, mode="99.9%"), device="cpu").convert(
        copy.deepcopy(model)).eval().to(device)


def run_sj(sj, x: np.ndarray, T: int, batch: int, device: str = "cpu") -> float:
    from spikingjelly.activation_based import functional

    t0 = time.perf_counter()
    with torch.no_grad():
        for s in range(0, len(x), batch):
            xb = torch.tensor(x[s:s + batch], device=device)
            functional.reset_net(sj)
            out = 0
            for _ in range(T):
                out = out + sj(xb)
            out = out.cpu()  # the prediction reaches the host, as snn.simulate's outputs do
    return time.perf_counter() - t0


def run_ours(net, x: np.ndarray, T: int, batch: int, device: str = "cpu") -> float:
    import snn

    t0 = time.perf_counter()
    snn.simulate(net, x, timesteps=T, batch_size=batch, record="totals", device=device)
    return time.perf_counter() - t0


def n_images(batch: int, T: int) -> int:
    """Enough images for a stable timing, few enough to finish: whole batches."""
    return batch * max(1, min(4, (256 * 32) // (batch * T))) if batch > 1 else max(8, 512 // T)


def memory_child(lib: str, model_name: str, T: int, batch: int) -> dict:
    """Runs in a fresh process: resident-set growth during one simulation (MiB)."""
    model, calib, x = load_model(model_name)
    x = x[:batch]
    if lib == "snn":
        import snn

        net = snn.convert(model, calib)
        fn = lambda: run_ours(net, x, T, batch)  # noqa: E731
    else:
        sj = spikingjelly_model(model, calib)
        fn = lambda: run_sj(sj, x, T, batch)  # noqa: E731
    before = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak to now: conversion's memory is not counted
        f.write("5")
    fn()
    # VmHWM: this process's peak resident set (ru_maxrss would include the parent's, kept across exec)
    peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024
    return {"rss_before_mib": before, "peak_rss_mib": peak, "growth_mib": max(0.0, peak - before)}


def measure_memory(lib: str, model_name: str, T: int, batch: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--memory-child", lib, model_name, str(T), str(batch)],
                         capture_output=True, text=True, cwd=Path(__file__).parent)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="lenet5,resnet20,mlp")
    ap.add_argument("--timesteps", default="8,32,128")
    ap.add_argument("--batches", default="1,32,256")
    ap.add_argument("--quick", action="store_true", help="only the acceptance cases (T=32 b=256, T=32 b=1)")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: both libraries and the matmul rate on it")
    ap.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    common.setup() if not args.memory_child else None
    if args.memory_child:
        import os

        os.environ.setdefault("SNN_DATA", str(common.ROOT.parent / "shared" / "data"))
        lib, m, T, b = args.memory_child
        print(json.dumps(memory_child(lib, m, int(T), int(b))))
        return
    import snn

    dev = args.device
    rate = common.matmul_rate(device=dev)
    where = torch.cuda.get_device_name() if dev.startswith("cuda") else f"{torch.get_num_threads()} CPU threads"
    print(f"measured matmul rate: {rate / 1e9:.1f} GMAC/s (float32, {where})")
    cases = [(32, 256), (32, 1)] if args.quick else \
        [(int(t), int(b)) for t in args.timesteps.split(",") for b in args.batches.split(",")]
    rows = []
    for name in args.models.split(","):
        model, calib, x = load_model(name)
        net = snn.convert(model, calib)
        sj = spikingjelly_model(model, calib, dev)
        macs = common.dense_macs(net.ann)
        run_ours(net, x[:2], 2, 2, dev)  # warm-up (kernel build/load, allocator, CUDA context)
        run_sj(sj, x[:2], 2, 2, dev)
        print(f"\n## {name}: {macs / 1e6:.2f} M dense MACs per image per step")
        print(f"{'T':>4} {'batch':>5} {'snn img/s':>10} {'SJ img/s':>9} {'ratio':>6} {'floor img/s':>11} {'snn/floor':>9}")
        for T, b in cases:
            n = n_images(b, T)
            xs = x[:n] if len(x) >= n else np.concatenate([x] * (n // len(x) + 1))[:n]
            t_ours = run_ours(net, xs, T, b, dev)
            t_sj = run_sj(sj, xs, T, b, dev)
            floor = T * macs * n / rate
            row = {"model": name, "T": T, "batch": b, "images": n, "snn_img_s": n / t_ours, "sj_img_s": n / t_sj,
                   "ratio_snn_over_sj": t_sj / t_ours, "floor_img_s": n / floor, "snn_time_over_floor": t_ours / floor}
            rows.append(row)
            print(f"{T:4d} {b:5d} {row['snn_img_s']:10.1f} {row['sj_img_s']:9.1f} {row['ratio_snn_over_sj']:6.2f} "
                  f"{row['floor_img_s']:11.1f} {row['snn_time_over_floor']:9.2f}")
    memory = []
    if not args.no_memory and dev == "cpu":  # resident-set growth; GPU memory is not measured here
        print("\n## peak memory, batch 256 (fresh process per case; growth of the resident set during simulation)")
        for name in args.models.split(","):
            for lib in ("snn", "spikingjelly"):
                m8, m128 = measure_memory(lib, name, 8, 256), measure_memory(lib, name, 128, 256)
                ratio = (m128.get("peak_rss_mib", 0) / m8["peak_rss_mib"]) if "peak_rss_mib" in m8 else None
                memory.append({"model": name, "lib": lib, "T8": m8, "T128": m128, "peak_ratio_T128_over_T8": ratio})
                print(f"{name:9s} {lib:12s} T=8: peak {m8.get('peak_rss_mib', float('nan')):7.0f} MiB "
                      f"(+{m8.get('growth_mib', float('nan')):5.0f})   T=128: peak {m128.get('peak_rss_mib', float('nan')):7.0f} MiB "
                      f"(+{m128.get('growth_mib', float('nan')):5.0f})   peak ratio {ratio if ratio else float('nan'):.2f}")
    suffix = "" if dev == "cpu" else "_cuda"
    common.write_json(f"speed{suffix}.json", {"benchmark": "simulation speed vs SpikingJelly and the dense floor",
                                              "device": where, "matmul_gmac_s": rate / 1e9,
                                              "threads": torch.get_num_threads(), "cases": rows, "memory": memory})
    _plot(rows, f"speed{suffix}.png")


def _plot(rows: list[dict], name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, m in zip(axes[0], models):
        rs = [r for r in rows if r["model"] == m]
        labels = [f"T{r['T']}/b{r['batch']}" for r in rs]
        idx = np.arange(len(rs))
        ax.bar(idx - 0.3, [r["snn_img_s"] for r in rs], 0.3, label="snn")
        ax.bar(idx, [r["sj_img_s"] for r in rs], 0.3, label="SpikingJelly")
        ax.bar(idx + 0.3, [r["floor_img_s"] for r in rs], 0.3, label="dense floor")
        ax.set_xticks(idx, labels, rotation=60, fontsize=7)
        ax.set_yscale("log")
        ax.set_title(m)
        ax.set_ylabel("images / s")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = common.REFERENCE / name
    fig.savefig(path, dpi=110)
    print(f"wrote {path.relative_to(common.ROOT)}")


if __name__ == "__main__":
    main()
