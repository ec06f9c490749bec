"""Shared pieces of the benchmark scripts: the trained MNIST LeNet-5 of the core issue,
the machine's measured matrix-multiply rate, and result writing.

The LeNet-5 (BatchNorm + max-pooling) is trained with :func:`snn.train.train_cached` and
cached under ``.cache/models`` (git-ignored), so every benchmark uses the same weights.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "models"
REFERENCE = ROOT / "results" / "reference"

# The training settings of experiments/mnist_lenet.yaml (99.13 % on the MNIST test set).
MNIST_LENET_TRAIN = {"epochs": 3, "lr": 0.003, "batch_size": 128, "seed": 0, "optimizer": "adam",
                     "schedule": "onecycle"}


def setup() -> None:
    """Point at the bundled data if SNN_DATA is unset; print the machine."""
    os.environ.setdefault("SNN_DATA", str(ROOT.parent / "shared" / "data"))
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__} with {torch.get_num_threads()} threads, python {sys.version.split()[0]}")


def mnist_lenet() -> tuple[torch.nn.Module, dict]:
    """The trained LeNet-5 of the core issue and its training info (see train_cached)."""
    from snn import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # LeNet-5 trains faster on one thread (and much faster on a shared CPU)
    try:
        return train.train_cached("lenet5", {}, "mnist", MNIST_LENET_TRAIN, CACHE, progress=False)
    finally:
        torch.set_num_threads(threads)


def mnist_lenet_snn() -> tuple[torch.nn.Module, dict, "snn.SpikingNetwork"]:  # noqa: F821
    """The trained LeNet-5, its training info, and its SNN converted with the defaults on the
    first 2,048 MNIST training images."""
    import snn
    from snn import data

    model, info = mnist_lenet()
    x_cal, _ = data.load_dataset("mnist", "train", limit=2048)
    return model, info, snn.convert(model, x_cal)


def matmul_rate(n: int = 1024, reps: int = 20, device: str = "cpu") -> float:
    """Measured float32 multiply-accumulates per second of an n x n matrix product on ``device``
    (4096 x 4096 on a GPU, where 1024 is too small to fill it)."""
    n = 4096 if device.startswith("cuda") else n
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return reps * n ** 3 / (time.perf_counter() - t0)


def sync(device: str) -> None:
    """Wait for the device's queued work (timing on a GPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def dense_macs(graph) -> int:
    """Dense multiply-accumulates of one forward pass of an IR graph (Linear/Conv1d/Conv2d/Affine/Add)."""
    from snn import ir

    total = 0
    for name, node in graph.nodes.items():
        out = int(np.prod(graph.shapes[name]))
        if isinstance(node, (ir.Linear, ir.Conv1d, ir.Conv2d)):
            total += out * int(np.prod(node.weight.shape[1:]))
        elif isinstance(node, (ir.Affine, ir.Add)):
            total += out * (len(node.gains) if isinstance(node, ir.Add) else 1)
    return total


def write_json(name: str, payload: dict) -> Path:
    from snn.util import atomic_write_text

    REFERENCE.mkdir(parents=True, exist_ok=True)
    path = REFERENCE / name
    atomic_write_text(path, json.dumps(payload, indent=2, default=float) + "\n")
    print(f"wrote {_shown(path)}")
    return path


def write_figure(name: str, fig, dpi: int = 110) -> Path:
    """Save a matplotlib figure as ``results/reference/<name>`` (tight layout) and close it."""
    import matplotlib.pyplot as plt

    path = REFERENCE / name
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    print(f"wrote {_shown(path)}")
    return path


def _shown(path: Path) -> Path:
    """``path`` relative to the repository where it lies inside it (an absolute ``--out`` may not)."""
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
