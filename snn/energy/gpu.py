"""Measured baselines: the ANN's energy per inference on a GPU (NVML) or a CPU (RAPL).

NVML (``nvidia-ml-py``): ``nvmlDeviceGetTotalEnergyConsumption`` returns millijoules
since the driver loaded (Volta and newer) and updates about every 100 ms, so a window
must last seconds; A100/H100 power readings are 1-s averages. Method, per batch size:
idle energy over ``idle_seconds`` gives the idle power; the workload is called in a loop
(each call blocks until the device is done) until ``min_seconds`` have passed;

    J per inference = (E_end - E_start - P_idle * elapsed) / items

RAPL (``/sys/class/powercap/intel-rapl:N/energy_uj``, package domains, microjoules,
wrapping at ``max_energy_range_uj``): the same method for the CPU package.

These functions run only where the hardware exists; elsewhere they raise
:class:`SnnError` and the report keeps its figures labelled "estimated".
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from snn.errors import SnnError

RAPL_ROOT = Path("/sys/class/powercap")


@dataclass
class Measurement:
    """One measured window: energy per item with idle power subtracted."""

    method: str
    device: str
    batch_size: int
    joules_per_item: float
    items: int
    seconds: float
    avg_power_w: float
    idle_power_w: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _window(read_j: Callable[[], float], fn: Callable[[], None], items_per_call: int, min_seconds: float,
            idle_seconds: float, method: str, device: str) -> Measurement:
    e0, t0 = read_j(), time.perf_counter()
    time.sleep(idle_seconds)
    idle_w = (read_j() - e0) / (time.perf_counter() - t0)
    fn()  # warm-up (allocation, kernel selection)
    calls = 0
    e0, t0 = read_j(), time.perf_counter()
    while True:
        fn()
        calls += 1
        el = time.perf_counter() - t0
        if el >= min_seconds:
            break
    e1 = read_j()
    items = calls * items_per_call
    total = e1 - e0
    return Measurement(method=method, device=device, batch_size=items_per_call,
                       joules_per_item=max(0.0, total - idle_w * el) / items, items=items, seconds=el,
                       avg_power_w=total / el, idle_power_w=idle_w)


# --------------------------------------------------------------------------- NVML
def nvml_available(index: int = 0) -> bool:
    """True when NVML loads and device ``index`` reports a total-energy counter."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(pynvml.nvmlDeviceGetHandleByIndex(index))
            return True
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # pynvml.NVMLError, ImportError, OSError: no usable GPU
        return False


def measure_nvml(fn: Callable[[], None], items_per_call: int, min_seconds: float = 5.0, idle_seconds: float = 3.0,
                 index: int = 0) -> Measurement:
    """Energy per item of ``fn`` (which must block until the GPU is done) on GPU ``index``."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as e:
        raise SnnError(f"NVML is not available ({e}); GPU energy can only be estimated here") from e
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = pynvml.nvmlDeviceGetName(h)
        name = name.decode() if isinstance(name, bytes) else str(name)
        read = lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1e3  # noqa: E731  mJ -> J
        return _window(read, fn, items_per_call, min_seconds, idle_seconds, "nvml", name)
    except pynvml.NVMLError as e:
        raise SnnError(f"NVML measurement failed on GPU {index}: {e}") from e
    finally:
        pynvml.nvmlShutdown()


def measure_ann_gpu(ann: Any, x: np.ndarray, batch_sizes: tuple[int, ...] = (1, 32, 256), device: str = "cuda",
                    min_seconds: float = 5.0, idle_seconds: float = 3.0) -> list[Measurement]:
    """Measure the ANN graph's inference energy per sample with NVML at several batch sizes
    (float32, torch, inputs resident on the GPU). Needs CUDA and NVML."""
    import torch

    from snn.ir_torch import Params, evaluate_ann

    if not torch.cuda.is_available():
        raise SnnError("no CUDA GPU: GPU energy can only be estimated here")
    dev = torch.device(device)
    params = Params(ann, dev, torch.float32)
    out = []
    for b in batch_sizes:
        xb = torch.as_tensor(np.ascontiguousarray(np.resize(x, (b,) + x.shape[1:])), device=dev,
                             dtype=torch.float32)

        def run() -> None:
            evaluate_ann(ann, xb, params=params)
            torch.cuda.synchronize(dev)

        out.append(measure_nvml(run, b, min_seconds, idle_seconds, dev.index or 0))
    return out


# --------------------------------------------------------------------------- RAPL
def rapl_domains(root: Path = RAPL_ROOT) -> list[Path]:
    """Readable package-level RAPL domains (``intel-rapl:N``) under ``root``."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.glob("intel-rapl:*")):
        if d.name.count(":") == 1 and (d / "energy_uj").is_file():
            try:
                int((d / "energy_uj").read_text())
                out.append(d)
            except (OSError, ValueError):
                continue
    return out


def rapl_reader(root: Path = RAPL_ROOT) -> Callable[[], float]:
    """A function returning cumulative package energy in joules (wrap-arounds unrolled)."""
    doms = rapl_domains(root)
    if not doms:
        raise SnnError(f"RAPL is not readable under {root} (no permission, not an Intel/AMD host, or a container); "
                       "CPU energy can only be estimated here")
    span = []
    for d in doms:
        f = d / "max_energy_range_uj"
        span.append(int(f.read_text()) if f.is_file() else 2**32)
    last = [int((d / "energy_uj").read_text()) for d in doms]
    acc = [0] * len(doms)

    def read() -> float:
        for k, d in enumerate(doms):
            v = int((d / "energy_uj").read_text())
            acc[k] += v - last[k] if v >= last[k] else v + span[k] - last[k]
            last[k] = v
        return sum(acc) / 1e6

    return read


def measure_rapl(fn: Callable[[], None], items_per_call: int, min_seconds: float = 2.0, idle_seconds: float = 1.0,
                 root: Path = RAPL_ROOT) -> Measurement:
    """Energy per item of ``fn`` on the CPU package(s), idle power subtracted."""
    return _window(rapl_reader(root), fn, items_per_call, min_seconds, idle_seconds, "rapl", "cpu package")


def measure_ann_cpu(ann: Any, x: np.ndarray, batch_sizes: tuple[int, ...] = (1, 64), min_seconds: float = 2.0,
                    idle_seconds: float = 1.0, root: Path = RAPL_ROOT) -> list[Measurement]:
    """Measure the ANN graph's inference energy per sample on the CPU with RAPL (numpy float64 evaluator)."""
    from snn import ir

    out = []
    for b in batch_sizes:
        xb = np.resize(np.asarray(x, dtype=np.float64), (b,) + tuple(np.shape(x)[1:]))
        out.append(measure_rapl(lambda: ir.evaluate(ann, xb), b, min_seconds, idle_seconds, root))
    return out
