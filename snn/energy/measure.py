"""Measured energy on this machine: a workload (the ANN, the SNN simulation, training) on
the CPU package (RAPL) or a CUDA GPU (NVML), read through Zeus's energy monitor
(``zeus.monitor.ZeusMonitor``), an optional dependency: ``pip install 'snn[measure]'``.

Method, per workload: an idle window of ``idle_seconds`` gives the idle power ``P_idle``;
then the workload (each call blocking until the device is done) runs in a loop until
``min_seconds`` have passed, ``n`` items in ``t`` seconds with energy ``E``::

    total J per item   = E / n
    dynamic J per item = (E - P_idle * t) / n

NVML's energy counter updates about every 100 ms and A100/H100 power readings are 1-s
averages, so windows must last seconds. Where Zeus, RAPL or NVML is missing, every
function raises :class:`SnnError` with one line saying so, and reports keep their
figures labelled "estimated".
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from snn.errors import SnnError

ZEUS_MISSING = ("energy measurement needs the optional package zeus (pip install 'snn[measure]'); "
                "figures stay estimated")


@dataclass(frozen=True)
class Measurement:
    """One measured workload: energy per item, total and with idle power subtracted."""

    method: str
    device: str
    workload: str
    batch_size: int
    dynamic_j_per_item: float
    total_j_per_item: float
    items: int
    seconds: float
    avg_power_w: float
    idle_power_w: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_device(device: str) -> None:
    """Raise :class:`SnnError` (one line) unless Zeus is installed and ``device`` ('cpu',
    'cuda' or 'cuda:N') exists; whether RAPL is readable shows when the monitor starts."""
    try:
        import zeus.monitor  # noqa: F401
    except ImportError:
        raise SnnError(ZEUS_MISSING) from None
    if device != "cpu":
        import torch

        if not device.startswith("cuda") or not torch.cuda.is_available():
            raise SnnError(f"no CUDA GPU for device {device!r}: GPU energy can only be estimated here")


def _monitor(device: str) -> tuple[Any, str, Callable[[Any], float], str]:
    """A Zeus monitor for ``device``, its method, the window energy reader and the
    device's name; :class:`SnnError` where it cannot measure."""
    check_device(device)
    from zeus.monitor import ZeusMonitor

    if device == "cpu":
        mon = ZeusMonitor(gpu_indices=[])
        if not mon.cpu_indices:
            raise SnnError("RAPL is not readable here (no /sys/class/powercap/intel-rapl, no permission, or a "
                           "container): CPU energy can only be estimated")
        return mon, "rapl", lambda m: sum(m.cpu_energy.values()) + sum((m.dram_energy or {}).values()), "cpu package"
    import torch

    index = torch.device(device).index or 0
    mon = ZeusMonitor(gpu_indices=[index], cpu_indices=[])
    return mon, "nvml", lambda m: sum(m.gpu_energy.values()), torch.cuda.get_device_name(index)


def unavailable(device: str = "cpu") -> str | None:
    """Why energy cannot be measured on ``device`` here (one line), or None when it can."""
    try:
        _monitor(device)
    except SnnError as e:
        return str(e)
    return None


def measure_run(fn: Callable[[], Any], device: str = "cpu", workload: str = "run", idle_seconds: float = 1.0
                ) -> tuple[Any, Measurement]:
    """Run ``fn`` once (a long job such as training) in one measured window, after an idle
    window; returns its result and the energy of the whole run (``items`` = 1)."""
    mon, method, energy, name = _monitor(device)
    mon.begin_window("idle")
    time.sleep(idle_seconds)
    m = mon.end_window("idle")
    idle_w = energy(m) / m.time
    mon.begin_window("run")
    out = fn()
    m = mon.end_window("run")
    e = energy(m)
    return out, Measurement(method=method, device=name, workload=workload, batch_size=1,
                            dynamic_j_per_item=max(0.0, e - idle_w * m.time), total_j_per_item=e, items=1,
                            seconds=m.time, avg_power_w=e / m.time, idle_power_w=idle_w)


def measure(fn: Callable[[], None], items_per_call: int, device: str = "cpu", workload: str = "workload",
            min_seconds: float = 2.0, idle_seconds: float = 1.0) -> Measurement:
    """Energy per item of ``fn`` (which must block until the device is done) on ``device``."""
    mon, method, energy, name = _monitor(device)
    mon.begin_window("idle")
    time.sleep(idle_seconds)
    m = mon.end_window("idle")
    idle_w = energy(m) / m.time
    fn()  # warm-up (allocation, kernel selection)
    calls = 0
    mon.begin_window("work")
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < min_seconds or calls == 0:
        fn()
        calls += 1
    m = mon.end_window("work")
    items = calls * items_per_call
    e = energy(m)
    return Measurement(method=method, device=name, workload=workload, batch_size=items_per_call,
                       dynamic_j_per_item=max(0.0, e - idle_w * m.time) / items, total_j_per_item=e / items,
                       items=items, seconds=m.time, avg_power_w=e / m.time, idle_power_w=idle_w)


def measure_ann(ann: Any, x: np.ndarray, batch_sizes: tuple[int, ...] = (1, 64), device: str = "cpu",
                min_seconds: float = 2.0, idle_seconds: float = 1.0) -> list[Measurement]:
    """The ANN graph's inference energy per sample at several batch sizes (float32 torch,
    inputs resident on ``device``)."""
    import torch

    from snn.ir_torch import Params, evaluate_ann

    check_device(device)
    dev = torch.device(device)
    params = Params(ann, dev, torch.float32)
    out = []
    for b in batch_sizes:
        xb = torch.as_tensor(np.ascontiguousarray(np.resize(x, (b,) + x.shape[1:])), device=dev, dtype=torch.float32)

        def run() -> None:
            with torch.no_grad():
                evaluate_ann(ann, xb, params=params)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)

        out.append(measure(run, b, device, "ann", min_seconds, idle_seconds))
    return out
