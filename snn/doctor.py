"""``snn doctor``: check an install once and say what works and what to fix.

Each check prints one line ``status  what: detail`` as it finishes, then a summary:

* ``ok``: works;
* ``note``: absent but optional (no GPU, an optional extra not installed, a dataset not
  downloaded): reported with how to get it, never an error;
* ``warn``: works, but slower or with less than it could (no fused kernels: the torch
  reference ops run instead; brian2's cython target unusable: use ``target: numpy``);
* ``FAIL``: the CPU install does not work (a core package missing, torch unusable, a
  tiny network that does not convert and simulate).

The exit code is 0 unless a check failed (then 1). The fused kernels are compiled here if
they are not built yet (a message and a seconds counter while it compiles), so a first
``snn run`` does not wait for them; brian2's code generation is checked with a tiny cython
run (compiled once, then cached by brian2).
"""
from __future__ import annotations

import importlib
import platform
import sys
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Callable

CORE = ("numpy", "torch", "snntorch", "brian2", "cython", "h5py", "scipy", "scikit-learn", "pydantic", "pyyaml",
        "matplotlib", "tqdm", "safetensors", "ninja")
"""The packages every install has (``[project] dependencies`` of pyproject.toml)."""
EXTRAS: dict[str, tuple[tuple[str, str], ...]] = {
    "ray": (("ray", "ray"),),
    "gpu": (("nvidia-ml-py", "pynvml"), ("zeus", "zeus.monitor")),
    "nir": (("nir", "nir"),),
    "onnx": (("onnx", "onnx"),),
    "test": (("pytest", "pytest"), ("nirtorch", "nirtorch")),
}
"""Optional extra -> (distribution, module to import) it installs; what each is for is in
:data:`PURPOSE`."""
PURPOSE = {"ray": "sweeps and sharded simulation on a Ray cluster (snn sweep --ray, sim.cluster: ray)",
           "gpu": "energy measured on NVIDIA GPUs and Intel/AMD CPUs (NVML, RAPL) through Zeus",
           "nir": "NIR export/import (snn export --nir, snn.to_nir)",
           "onnx": "ONNX models as input (snn convert model.onnx)",
           "test": "the test suite"}


@dataclass
class Check:
    """One finding: ``status`` (ok, note, warn, FAIL), ``what`` was checked, ``detail``."""

    status: str
    what: str
    detail: str


def _dist_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def check_python() -> list[Check]:
    return [Check("ok", "python", f"{sys.version.split()[0]} ({platform.platform()}), snn "
                                  f"{_dist_version('snn') or 'not installed (run from a source tree)'}")]


def check_core() -> list[Check]:
    missing = [n for n in CORE if _dist_version(n) is None]
    if missing:
        return [Check("FAIL", "core packages", f"missing: {', '.join(missing)}; reinstall: pip install -e . "
                                               "(torch first: see README)")]
    return [Check("ok", "core packages", ", ".join(f"{n} {_dist_version(n)}" for n in CORE if n != "torch"))]


def check_torch() -> list[Check]:
    try:
        import torch
    except Exception as e:  # ImportError, or a broken binary
        return [Check("FAIL", "torch", f"cannot import ({type(e).__name__}: {e})")]
    cuda = torch.version.cuda
    build = f"CUDA {cuda} build" if cuda else "CPU build"
    out = [Check("ok", "torch", f"{torch.__version__}, {build}, {torch.get_num_threads()} CPU threads")]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        out.append(Check("ok", "GPU", f"{len(names)} visible: {', '.join(names)} (sim.device: cuda)"))
    elif cuda:
        out.append(Check("note", "GPU", "this torch is a CUDA build, but no GPU is visible (driver, "
                                        "CUDA_VISIBLE_DEVICES); everything runs on the CPU"))
    else:
        out.append(Check("note", "GPU", "none usable: this torch is the CPU build (for a GPU, install a CUDA build "
                                        "of torch: README, 'GPU install'); everything runs on the CPU"))
    return out


def check_kernels() -> list[Check]:
    from snn.backends.snntorch import kernels

    t0 = time.perf_counter()
    module = kernels.load()  # compiles here, with its own message, if not built yet
    if module is None:
        return [Check("warn", "fused CPU kernels", f"cannot be built ({kernels._failed}); the snntorch backend runs "
                                                   "its torch reference ops (same results, slower). Install a C++ "
                                                   "compiler and ninja")]
    return [Check("ok", "fused CPU kernels", f"ready in {time.perf_counter() - t0:.1f} s ({kernels.build_dir()})")]


def check_pipeline() -> list[Check]:
    """A tiny MLP converted and simulated on the snntorch backend (CPU)."""
    try:
        import numpy as np
        import torch

        import snn

        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
        x = np.random.default_rng(0).random((16, 4), dtype=np.float32)
        net = snn.convert(model, x)
        res = snn.simulate(net, x, timesteps=8)
        assert res.outputs.shape == (8, 16, 3)
    except Exception as e:
        return [Check("FAIL", "convert + simulate", f"a tiny MLP fails: {type(e).__name__}: {e}")]
    return [Check("ok", "convert + simulate", "a tiny MLP converts and simulates on the snntorch backend (CPU)")]


def check_brian2() -> list[Check]:
    """brian2's cython code generation, by a tiny run (one neuron, 1 ms)."""
    try:
        import brian2 as b2
    except Exception as e:
        return [Check("FAIL", "brian2", f"cannot import ({type(e).__name__}: {e})")]
    t0 = time.perf_counter()
    try:
        b2.prefs.codegen.target = "cython"
        group = b2.NeuronGroup(1, "dv/dt = (1 - v) / (10*ms) : 1", method="exact")
        net = b2.Network(group)
        net.run(1 * b2.ms)
        assert 0 < float(group.v[0]) < 1
    except Exception as e:
        return [Check("warn", "brian2 cython", f"code generation fails ({type(e).__name__}: "
                                               f"{' '.join(str(e).split())[:200]}); the brian2 backend still runs "
                                               "with sim.options: {target: numpy} (slower)")]
    finally:
        b2.prefs.codegen.target = "auto"
    return [Check("ok", "brian2 cython", f"brian2 {b2.__version__} compiled and ran a neuron group "
                                         f"({time.perf_counter() - t0:.1f} s)")]


def check_data(root: str | None) -> list[Check]:
    from snn import data
    from snn.errors import SnnError

    where = data.data_root(root)
    out = [Check("ok" if where.is_dir() else "note", "data root",
                 f"{where}" + ("" if where.is_dir() else " does not exist (set SNN_DATA, or `snn data download "
                                                         "NAME` creates it)"))]
    for name in data.DATASETS:
        try:
            out.append(Check("ok", f"dataset {name}", data.dataset_label(name, root)))
        except SnnError:
            out.append(Check("note", f"dataset {name}", f"not present (`snn data download {name}`, or copy it "
                                                       f"under {where})"))
    return out


def check_extras() -> list[Check]:
    out = []
    for extra, items in EXTRAS.items():
        missing = []
        for dist, module in items:
            try:
                importlib.import_module(module)
            except Exception:  # ImportError, or a package that breaks when imported
                missing.append(dist)
        if missing:
            out.append(Check("note", f"extra [{extra}]", f"not installed ({', '.join(missing)}): "
                                                         f"pip install -e '.[{extra}]' for {PURPOSE[extra]}"))
        else:
            out.append(Check("ok", f"extra [{extra}]", PURPOSE[extra]))
    return out


def run_checks(data_root: str | None = None, brian2: bool = True, out: Callable[[str], None] = print) -> int:
    """Run every check, print each line and a summary; return 0 unless one failed (then 1)."""
    steps: list[Callable[[], list[Check]]] = [check_python, check_core, check_torch, check_kernels, check_pipeline]
    if brian2:
        steps.append(check_brian2)
    steps += [lambda: check_data(data_root), check_extras]
    found: list[Check] = []
    for step in steps:
        for c in step():
            found.append(c)
            out(f"{c.status:4s}  {c.what}: {c.detail}")
            sys.stdout.flush()  # in order with the build messages on stderr
    count = {s: sum(c.status == s for c in found) for s in ("ok", "note", "warn", "FAIL")}
    out("")
    if count["FAIL"]:
        out(f"summary: the install does NOT work: {count['FAIL']} failed check(s); fix the FAIL lines above "
            f"({count['ok']} ok, {count['warn']} warnings, {count['note']} notes)")
        return 1
    verdict = "the CPU install works" + (" (with the warnings above)" if count["warn"] else "")
    out(f"summary: {verdict}; {count['ok']} ok, {count['warn']} warnings, {count['note']} notes "
        "(notes are optional parts: a GPU, extras, datasets)")
    return 0
