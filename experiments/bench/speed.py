"""Simulation speed: snn's snntorch backend against SpikingJelly, and against the machine's floor.

In one run, on the same machine and threads, for each network (the MNIST LeNet-5 of the
core issue, a CIFAR ResNet-20 with its pretrained weights, an MNIST CNN of
conv-BN-ReLU-AvgPool2d(2) blocks and two linear layers, a VGG-style CIFAR-10 net with
average pooling, two networks the kernels were not designed for: a CIFAR CNN of strided
convolutions without pooling and a 1-D CNN on MNIST's rows, optionally an MNIST MLP) both
libraries convert the same trained ANN
(snn: ``snn.convert``; SpikingJelly: ``RateCodingRecipe``, mode "99.9%") and simulate it
(default T = 32 at batch 256 and 1). Each case is timed in ``--rounds`` (default 5)
rounds; a round measures the matmul rate, then runs ours and SpikingJelly one after the
other, alternating which goes first. Printed per case: the medians of both libraries'
images/s, the median of the per-round ratios with their range, and our time as a fraction
of the dense floor ``T x dense MACs / matmul rate`` of the same round (the rate of a
1024x1024 float32 product), with its range, and the load average (``uptime``) before and
after the case: the machine may be shared, so the side-by-side ratios are what counts.
Peak memory is measured in fresh subprocesses (batch 256, T = 8 and 128): the growth of
the resident set during the simulation (``--no-memory``: not measured; the JSON then
carries the previous run's memory entries, labelled as such).

    python experiments/bench/speed.py [--rounds 5] [--models lenet5,resnet20,avgcnn,vgg_avg,strided,conv1d]
        [--timesteps 32] [--batches 256,1] [--no-memory] [--device cuda] [--out speed.json]
    python experiments/bench/speed.py --merge a.json b.json [--out speed.json]   # runs made apart, one file

With ``--device cuda`` both libraries run on the GPU (named in the output), the floor uses
the GPU's measured matmul rate, and the results go to ``speed_cuda.json``/``.png``. A CPU
run on a machine without a CUDA GPU says so in ``speed.json``.

Acceptance (issue 14): batch 256, T = 32, medians: snn >= 3x SpikingJelly on the
average-pooling MNIST CNN and VGG, with our time <= 0.7x the dense floor on both; >= 2x on
LeNet-5 and ResNet-20; batch 1: >= 5x on all. (Issue 6: peak memory at T = 128 <= 1.2x
that at T = 8.)
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import common

MLP_TRAIN = {"epochs": 1, "lr": 0.002, "batch_size": 128, "seed": 0, "optimizer": "adam"}
AVG_CNN = {"cfg": [32, "A", 64, "A"], "hidden": [128]}
"""The average-pooling MNIST CNN: conv3x3(32)-BN-ReLU-AvgPool2d(2), conv3x3(64)-BN-ReLU-AvgPool2d(2),
Linear(3136, 128)-ReLU-Linear(128, 10) (the zoo's VGG with average pools)."""
AVG_CNN_TRAIN = {"epochs": 1, "lr": 0.003, "batch_size": 128, "seed": 0, "optimizer": "adam", "schedule": "onecycle",
                 "limit": 20000}
VGG_AVG = {"cfg": [16, 16, "A", 32, 32, "A", 64, 64, "A"], "hidden": [128]}
"""The VGG-style CIFAR-10 net: two conv3x3-BN-ReLU per stage (16, 32, 64 channels), each
stage ending in AvgPool2d(2), then Linear(1024, 128)-ReLU-Linear(128, 10)."""
VGG_AVG_TRAIN = {"epochs": 1, "lr": 0.003, "batch_size": 128, "seed": 0, "optimizer": "adam", "schedule": "onecycle",
                 "limit": 10000}
EXTRA_TRAIN = {"epochs": 1, "lr": 0.003, "batch_size": 128, "seed": 0, "optimizer": "adam", "schedule": "onecycle"}
"""Training of the two networks below (a short run: their speed, not their accuracy, is measured)."""


def strided_cnn() -> torch.nn.Module:
    """A CIFAR-10 CNN of strided convolutions and no pooling: conv3x3(32), conv3x3(64, stride 2),
    conv3x3(64), conv3x3(128, stride 2), each with BN and ReLU, then Linear(8192, 10)."""
    nn = torch.nn
    layers, c = [], 3
    for co, s in ((32, 1), (64, 2), (64, 1), (128, 2)):
        layers += [nn.Conv2d(c, co, 3, stride=s, padding=1, bias=False), nn.BatchNorm2d(co), nn.ReLU()]
        c = co
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(128 * 8 * 8, 10))


def conv1d_net() -> torch.nn.Module:
    """A 1-D CNN on MNIST's rows as a sequence: the (1, 28, 28) image reshaped to 28 channels x
    28 steps, conv1d(64)-BN-ReLU-AvgPool1d(2), conv1d(128)-BN-ReLU-AvgPool1d(2), Linear(896, 10)."""
    nn = torch.nn
    return nn.Sequential(nn.Flatten(1, 2), nn.Conv1d(28, 64, 3, padding=1, bias=False), nn.BatchNorm1d(64), nn.ReLU(),
                         nn.AvgPool1d(2), nn.Conv1d(64, 128, 3, padding=1, bias=False), nn.BatchNorm1d(128),
                         nn.ReLU(), nn.AvgPool1d(2), nn.Flatten(), nn.Linear(128 * 7, 10))


EXTRA = {"strided": (strided_cnn, "cifar10", 10000), "conv1d": (conv1d_net, "mnist", 20000)}
"""Networks not designed for this benchmark's kernels: (builder, dataset, training images)."""
MODELS = "lenet5,resnet20,avgcnn,vgg_avg,strided,conv1d"


def _trained_extra(name: str) -> torch.nn.Module:
    """One of :data:`EXTRA`, trained with :data:`EXTRA_TRAIN` once and then loaded from the cache."""
    from snn import data, train

    build, ds, limit = EXTRA[name]
    torch.manual_seed(EXTRA_TRAIN["seed"])
    model = build()
    path = common.CACHE / f"speed-{name}-{limit}.safetensors"
    if path.exists():
        train.load_checkpoint(model, path)
        return model.eval()
    x, y = data.load_dataset(ds, "train", limit=limit)
    train.train(model, x, y, progress=False, **EXTRA_TRAIN)
    xt, yt = data.load_dataset(ds, "test", limit=2000)
    print(f"# {name}: trained on {limit} {ds} images, test accuracy {100 * train.evaluate(model, xt, yt):.1f} % "
          "(first 2,000)")
    common.CACHE.mkdir(parents=True, exist_ok=True)
    train.save_checkpoint(model, path)
    return model.eval()


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
    elif name in ("avgcnn", "vgg_avg"):
        ds = "mnist" if name == "avgcnn" else "cifar10"
        kwargs, cfg = (AVG_CNN, AVG_CNN_TRAIN) if name == "avgcnn" else (VGG_AVG, VGG_AVG_TRAIN)
        model, _ = train.train_cached("vgg", kwargs, ds, cfg, common.CACHE, progress=False)
    elif name in EXTRA:
        model, ds = _trained_extra(name), EXTRA[name][1]
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


def uptime() -> str:
    """The ``uptime`` line (load averages over 1, 5 and 15 minutes)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def time_case(net, sj, x: np.ndarray, T: int, batch: int, macs: int, rounds: int, dev: str) -> dict:
    """``rounds`` alternating rounds of one case: per round the matmul rate, then ours and
    SpikingJelly (ours first in even rounds, SpikingJelly first in odd ones). Medians, ranges
    and every round's times."""
    n = n_images(batch, T)
    xs = x[:n] if len(x) >= n else np.concatenate([x] * (n // len(x) + 1))[:n]
    load_before, started = uptime(), time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    per = []
    for r in range(rounds):
        rate = common.matmul_rate(device=dev)
        order = ("snn", "sj") if r % 2 == 0 else ("sj", "snn")
        t = {lib: (run_ours(net, xs, T, batch, dev) if lib == "snn" else run_sj(sj, xs, T, batch, dev))
             for lib in order}
        floor = T * macs * n / rate
        per.append({"first": order[0], "snn_s": t["snn"], "sj_s": t["sj"], "matmul_gmac_s": rate / 1e9,
                    "ratio_snn_over_sj": t["sj"] / t["snn"], "snn_time_over_floor": t["snn"] / floor})

    def stat(key: str) -> dict:
        v = [p[key] for p in per]
        return {"median": float(np.median(v)), "min": float(min(v)), "max": float(max(v))}

    return {"T": T, "batch": batch, "images": n, "rounds": rounds, "started": started,
            "snn_img_s": n / stat("snn_s")["median"], "sj_img_s": n / stat("sj_s")["median"],
            "ratio_snn_over_sj": stat("ratio_snn_over_sj"), "snn_time_over_floor": stat("snn_time_over_floor"),
            "matmul_gmac_s": stat("matmul_gmac_s"), "floor_img_s": stat("matmul_gmac_s")["median"] * 1e9 / (T * macs),
            "uptime_before": load_before, "uptime_after": uptime(),
            "per_round": per}


def _memory(models: list[str], skip: bool, dev: str) -> tuple[list[dict], str]:
    """Peak-memory entries, and where they come from."""
    if skip or dev != "cpu":
        old = common.REFERENCE / "speed.json"
        prev = json.loads(old.read_text()).get("memory", []) if skip and dev == "cpu" and old.exists() else []
        return prev, ("not measured in this run; the entries are the previous speed.json's" if prev else
                      "not measured")
    memory = []
    print("\n## peak memory, batch 256 (fresh process per case; growth of the resident set during simulation)")
    for name in models:
        for lib in ("snn", "spikingjelly"):
            m8, m128 = measure_memory(lib, name, 8, 256), measure_memory(lib, name, 128, 256)
            ratio = (m128.get("peak_rss_mib", 0) / m8["peak_rss_mib"]) if "peak_rss_mib" in m8 else None
            memory.append({"model": name, "lib": lib, "T8": m8, "T128": m128, "peak_ratio_T128_over_T8": ratio})
            print(f"{name:9s} {lib:12s} T=8: peak {m8.get('peak_rss_mib', float('nan')):7.0f} MiB "
                  f"(+{m8.get('growth_mib', float('nan')):5.0f})   T=128: peak "
                  f"{m128.get('peak_rss_mib', float('nan')):7.0f} MiB (+{m128.get('growth_mib', float('nan')):5.0f})"
                  f"   peak ratio {ratio if ratio else float('nan'):.2f}")
    return memory, "measured in this run"


def merge(names: list[str], out: str) -> None:
    """One JSON (and plot) from several runs' JSONs: their cases, each with its own time and load."""
    runs = [json.loads((common.REFERENCE / n).read_text()) for n in names]
    first = next((r for r in runs if r.get("memory")), runs[0])
    payload = {**runs[0], "cases": [c for r in runs for c in r["cases"]], "merged_from": names,
               "memory": first.get("memory", []), "memory_source": first.get("memory_source", "not measured"),
               "uptime_end": [r.get("uptime_end") for r in runs]}
    common.write_json(out, payload)
    _plot(payload["cases"], Path(out).with_suffix(".png").name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=MODELS, help=f"comma-separated, of {MODELS},mlp")
    ap.add_argument("--timesteps", default="32")
    ap.add_argument("--batches", default="256,1")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per case (medians over them)")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: both libraries and the matmul rate on it")
    ap.add_argument("--out", default=None, help="name of the JSON under results/reference (default speed.json, "
                                                "speed_cuda.json on a GPU); the plot is named after it")
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="no timing: write --out from the cases of these "
                    "runs' JSONs under results/reference (the memory entries of the first that has them)")
    ap.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    common.setup() if not args.memory_child else None
    if args.memory_child:
        os.environ.setdefault("SNN_DATA", str(common.ROOT.parent / "shared" / "data"))
        lib, m, T, b = args.memory_child
        print(json.dumps(memory_child(lib, m, int(T), int(b))))
        return
    if args.merge:
        return merge(args.merge, args.out or "speed.json")
    if args.rounds < 1:
        raise SystemExit("--rounds must be >= 1")
    import snn

    dev = args.device
    where = torch.cuda.get_device_name() if dev.startswith("cuda") else f"{torch.get_num_threads()} CPU threads"
    cuda = (f"measured on {torch.cuda.get_device_name()}" if dev.startswith("cuda") else
            "not measured: no CUDA GPU was available in this session, so speed_cuda.json was not measured"
            if not torch.cuda.is_available() else "not measured in this run (use --device cuda)")
    print(f"# {where}; CUDA: {cuda}\n# {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} {uptime()}")
    cases = [(int(t), int(b)) for t in args.timesteps.split(",") for b in args.batches.split(",")]
    models = args.models.split(",")
    rows = []
    for name in models:
        model, calib, x = load_model(name)
        net = snn.convert(model, calib)
        sj = spikingjelly_model(model, calib, dev)
        macs = common.dense_macs(net.ann)
        run_ours(net, x[:2], 2, 2, dev)  # warm-up (kernel build/load, allocator, CUDA context)
        run_sj(sj, x[:2], 2, 2, dev)
        print(f"\n## {name}: {macs / 1e6:.2f} M dense MACs per image per step; {args.rounds} alternating rounds")
        print(f"{'T':>4} {'batch':>5} {'snn img/s':>10} {'SJ img/s':>9} {'snn/SJ [range]':>19} "
              f"{'snn/floor [range]':>19} {'GMAC/s':>7}  load before -> after")
        for T, b in cases:
            row = {"model": name, **time_case(net, sj, x, T, b, macs, args.rounds, dev)}
            rows.append(row)
            q, f = row["ratio_snn_over_sj"], row["snn_time_over_floor"]
            load = lambda u: u.split("load average:")[-1].strip()  # noqa: E731
            print(f"{T:4d} {b:5d} {row['snn_img_s']:10.1f} {row['sj_img_s']:9.1f} "
                  f"{q['median']:6.2f} [{q['min']:.2f}-{q['max']:.2f}] "
                  f"{f['median']:6.2f} [{f['min']:.2f}-{f['max']:.2f}] "
                  f"{row['matmul_gmac_s']['median']:7.1f}  {load(row['uptime_before'])} -> {load(row['uptime_after'])}")
    memory, memory_source = _memory(models, args.no_memory, dev)
    out = args.out or ("speed.json" if dev == "cpu" else "speed_cuda.json")
    common.write_json(out, {
        "benchmark": "simulation speed vs SpikingJelly and the dense floor (medians of alternating rounds)",
        "device": where, "cuda": cuda, "threads": torch.get_num_threads(), "rounds": args.rounds,
        "uptime_end": uptime(), "cases": rows, "memory": memory, "memory_source": memory_source})
    _plot(rows, Path(out).with_suffix(".png").name)


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
    common.write_figure(name, fig)


if __name__ == "__main__":
    main()
