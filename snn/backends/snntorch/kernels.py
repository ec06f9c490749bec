"""Fused CPU kernels of the snntorch backend: their build, cache and load.

The C++ source is ``csrc/fused.cpp`` in this package (a complete torch extension). It is
compiled for this CPU (``-march=native``, OpenMP) with ``torch.utils.cpp_extension``
(a one-line message and a seconds counter on stderr while it compiles, then its time)
into ``$SNN_CACHE/torch_extensions/<key>`` (default ``~/.cache/snn/torch_extensions``),
where ``key`` is a hash of everything the compile command depends on (:func:`key_parts`:
the source text, the flags, torch's version and install directory, the Python prefix and
version, the compiler and the CPU). Each environment (virtual environment, torch install,
compiler, machine) thus has its own build directory: a build is reused, without starting
the compiler or ninja, until something in its command changes, and two environments on
one machine never rebuild each other's. Where the kernels cannot be built (no compiler,
no ninja), :func:`load` warns once and returns None, and the backend runs its reference
torch ops.

The IF and pooling kernels compute exactly what the reference torch ops in
:mod:`snn.backends.snntorch.engine` compute (same float operations in the same order, no fused
multiply-adds, so the spikes are bit-identical; tests check it), in one pass over memory
instead of several:

``if_scan(I, I2, gains, u, prev, theta, subtract, static, k, steps, bytes)``
    IF layer over ``k`` steps. ``I`` is (k, B, N) or, if ``static``, (B, N); with ``I2``
    (k, B, N) and ``gains`` (2, C), the input is the residual sum
    ``gains[0, c] * I + gains[1, c] * I2`` of an ``Add`` node (channel ``c`` of neuron
    ``n``: ``n // (N / C)``). ``u`` and ``prev`` (B, N) are the membrane and the previous
    spikes, updated in place. Per element and step (snntorch's association)::

        zero reset:  u = u * (1 - prev)
        u = u + I[t]
        subtract:    u = u - theta * prev
        s[t] = u > theta;  prev = s[t]

    Returns the spikes (k, B, N), of the membranes' type or, with ``bytes``, as uint8 0/1
    (for readers that are all event-driven layers: a quarter of the memory traffic). If
    ``steps`` (k, N) float64 is given, adds the spikes
    summed over the batch to it; a (1, N) ``steps`` receives the sum over all k steps.
    Neurons are walked in blocks of 512 whose ``u`` and ``prev`` stay in L1 over the steps.

``spike_maxpool(s, cum, prev, kernel, stride, padding, dilation, steps)``
    Cumulative-count max-pooling of spikes ``s`` (k, B, C, H, W): ``cum`` (B, C, H, W)
    += s[t]; ``m`` = max of ``cum`` over each window (padding never wins);
    ``out[t] = m - prev``; ``prev = m`` (B, C, Ho, Wo). Returns ``out`` (k, B, C, Ho, Wo);
    ``steps`` receives its batch sums as in ``if_scan``.

``if_maxpool(I, u, prev, theta, subtract, static, k, steps, cum, pooled, kernel, ..., pool_steps)``
    ``if_scan`` followed by ``spike_maxpool``, channel plane by plane, for an IF layer
    whose spikes only the pool reads: the spikes are never stored. ``pool_steps`` (1 or k
    rows) receives the pooled spikes' batch sums as ``steps`` does the IF's.

``if_avgpool(I, u, prev, theta, subtract, static, k, steps, kernel, stride, padding, Ho, Wo)``
    ``if_scan`` followed by a non-overlapping average pool (kernel <= stride), channel
    plane by plane, for an IF layer whose spikes only the pool reads: the spikes are never
    stored. Returns the windows' spike sums (k, B, C, Ho, Wo) (padding adds nothing; the
    pool's value is these over the window's area), integers, so exact in any order.

``event_conv2d(x, wt, bias, Co, Ho, Wo, stride, padding, dilation)``
    Event-driven ``conv2d`` (a Linear layer is a 1x1 one) of a sparse input ``x``
    (M, Cin, H, W; of the weights' type, or spikes as uint8), output-stationary: per sample, the nonzero inputs are listed plane by
    plane (branch-free, 16 at a time with AVX-512, 8 with AVX2) and bucketed by input
    position (a counting sort that keeps channel order); then each output position sums in
    registers, block of output channels by block, the weight rows ``wt[a, e, c, :]`` of the
    events ``c`` at the input position of each tap ``(a, e)`` (``x * w`` for graded inputs)
    and stores them once; or (the row scatter, chosen per sample) each output row's events
    add their weight rows to the row's accumulators, which for 3 tap columns at stride 1
    and 2 to 8 vectors of output channels slide along the row in registers (the same sums
    in the same order on either path). ``wt`` is (kh, kw, Cin, Co rounded up to 16). Work ~ nonzeros *
    kh * kw / (sh * sw) * Co loads and adds instead of inputs * kh * kw * Co MACs, with no
    accumulator traffic through memory. Floating-point sums are in a different order than
    the dense op's (last-bit differences in the currents; the bound is in
    :mod:`snn.backends.snntorch.event_cost`).

``event_conv2d_if(x, wt, bias, Co, Ho, Wo, stride, padding, dilation, path, u, prev, theta, subtract, k, steps, bytes)``
    ``event_conv2d`` of ``x`` (k * B, Cin, H, W), rows t * B + b, followed by ``if_scan``
    of its output for the IF layer that alone reads it, as one kernel parallel over the B
    samples: each sample's rows are integrated step by step as they are made, so the
    currents are never stored. ``u``, ``prev`` (B, Co, Ho, Wo) and ``steps`` as in
    ``if_scan``; returns the spikes (k, B, Co, Ho, Wo) (as uint8 with ``bytes``), bit for
    bit those of the two kernels in turn (each thread sums its samples' spikes apart, added to ``steps`` at the
    end).

``event_conv2d_if_avgpool(x, wt, bias, Co, Ho, Wo, stride, padding, dilation, path, u, prev, theta, subtract, k, steps, kernel, pstride, ppadding, Hp, Wp)``
    ``event_conv2d_if`` for an IF layer whose spikes only a non-overlapping average pool
    reads (kernel <= pstride): the spikes are summed over the pool's windows as they are
    made and never stored. Returns the windows' spike sums (k, B, Co, Hp, Wp), bit for bit
    ``event_conv2d`` then ``if_avgpool``.

``event_pool_conv2d(x, wt, bias, Co, Ho, Wo, stride, padding, dilation, pool)``
    The same on the input of a non-overlapping average pool ``pool`` = {Kh, Kw, Sh, Sw,
    Ph, Pw, Hp, Wp}: a nonzero input at (iy, ix) is an event of the pooled map at
    ((iy + Ph) / Sh, (ix + Pw) / Sw) (dropped outside every window), with ``wt`` holding
    the layer's weights divided by Kh * Kw; the pooled map is never made.

``sampled_nonzeros(x, every)``
    Mean number of nonzeros per sample over samples 0, every, 2 * every, ... of ``x``.

Parallel with ATen's (OpenMP) thread pool: over neuron blocks (IF), channels (pooling,
IF + pooling) or samples (events), so batch sums need no atomics.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import warnings
from pathlib import Path
from types import ModuleType

import torch

CSRC = Path(__file__).with_name("csrc")
SOURCES = ("fused.cpp",)
"""The C++ files in :data:`CSRC`, compiled as one translation unit in this order."""
CFLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fopenmp")
"""Compile flags; ``-ffp-contract=off``: no fused multiply-adds, so the IF update rounds
exactly like the torch ops."""
LDFLAGS = ("-fopenmp",)
KEY_VERSION = 5
"""Bumped when the way the kernels are built changes outside the parts of the key."""

_module: ModuleType | None = None
_failed: str | None = None


def _cpu_tag() -> str:
    """A short hash of this CPU's model and instruction-set flags: the kernels are built
    with ``-march=native``, so a cache shared by different machines keeps one build each."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags"))][:2]
    except OSError:
        import platform

        lines = [platform.machine(), platform.processor()]
    return hashlib.sha1("\n".join(lines).encode()).hexdigest()[:10]


def source() -> str:
    """The C++ source that is compiled: the files :data:`SOURCES` of :data:`CSRC`, joined."""
    return "\n".join((CSRC / f).read_text() for f in SOURCES)


def compiler() -> str | None:
    """The C++ compiler torch's build runs (``$CXX``, else ``c++``) with the real path of its
    executable (which names its version, e.g. ``/usr/bin/x86_64-linux-gnu-g++-12``), or None
    if there is none on the ``PATH``."""
    cxx = os.environ.get("CXX", "c++")
    exe = shutil.which(cxx.split()[0]) if cxx.strip() else None
    return f"{cxx} ({os.path.realpath(exe)})" if exe else None


def key_parts(text: str | None = None) -> dict[str, str | None]:
    """What the compile command, and so the built library, depends on: the source text (its
    hash), the flags, torch's version and install directory (its include and library paths,
    its C++ ABI), the Python prefix and version (the interpreter the module is built for), the
    compiler and the CPU (``-march=native``)."""
    text = source() if text is None else text
    return {
        "version": str(KEY_VERSION),
        "source": hashlib.sha256(text.encode()).hexdigest(),
        "cflags": " ".join(CFLAGS),
        "ldflags": " ".join(LDFLAGS),
        "torch": torch.__version__,
        "torch_dir": str(Path(torch.__file__).resolve().parent),
        "prefix": sys.prefix,
        "python": sys.version,
        "compiler": compiler(),
        "cpu": _cpu_tag(),
    }


def cache_key(parts: dict[str, str | None]) -> str:
    """The build's key: a hash of :func:`key_parts` (16 hex digits)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def cache_root() -> Path:
    """Where builds are kept, one directory per key: ``$SNN_CACHE/torch_extensions`` or
    ``~/.cache/snn/torch_extensions``."""
    base = os.environ.get("SNN_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "snn") / "torch_extensions"


def build_dir(parts: dict[str, str | None] | None = None) -> Path:
    """The build directory of this environment's kernels (of ``parts``, default :func:`key_parts`)."""
    return cache_root() / cache_key(key_parts() if parts is None else parts)


def _import(name: str, library: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, library)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {library}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load() -> ModuleType:
    """Import this environment's build if it is complete (its ``key.json`` is written, atomically,
    only after a build has loaded), else build it with torch (ninja and the compiler) and then
    write ``key.json``: the key's parts and the library's file name."""
    text = source()
    parts = key_parts(text)
    if parts["compiler"] is None:
        raise RuntimeError(f"no C++ compiler {os.environ.get('CXX', 'c++')!r} on the PATH")
    key = cache_key(parts)
    name, d = f"snn_kernels_{key}", cache_root() / key
    done = d / "key.json"
    if done.exists():
        try:
            return _import(name, d / json.loads(done.read_text())["library"])
        except (ImportError, OSError, ValueError, KeyError):
            pass  # an unreadable build: made again below
    from torch.utils.cpp_extension import load_inline

    from snn.util import activity

    d.mkdir(parents=True, exist_ok=True)
    with activity("snn: compiling the snntorch backend's fused CPU kernels (once per environment, about a minute; "
                  f"cached in {d})", done="built"):
        module = load_inline(name=name, cpp_sources=[text], build_directory=str(d), extra_cflags=list(CFLAGS),
                             extra_ldflags=list(LDFLAGS), verbose=False)
    tmp = d / f"key.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"parts": parts, "library": Path(module.__file__).name}, indent=1))
    os.replace(tmp, done)
    return module


def load() -> ModuleType | None:
    """The compiled extension, or None (with one warning) if it cannot be built here."""
    global _module, _failed
    if _module is not None or _failed is not None:
        return _module
    try:
        _module = _load()
    except Exception as e:  # no compiler, no ninja, ...
        _failed = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        warnings.warn(f"snn: fused CPU kernels unavailable ({_failed}); the snntorch backend uses its "
                      "torch reference ops (same results, slower). Install a C++ compiler and ninja to enable them.")
    return _module
