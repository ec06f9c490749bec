"""The results store: one directory per run, written atomically.

Layout::

    results/<experiment>/<timestamp>-<hash>/
        config.yaml      the resolved config (every default filled in) and its hash
        results.h5       accuracy per timestep, per-layer spike counts, energy tables,
                         training history, environment (versions, git commit, device)
        summary.json     the headline numbers
        network.h5       the converted network (``output.save_network``)
        energy.json      the energy report (``energy.enabled``; also inside results.h5)
        report.md, report.html, *.png     (``output.report``; see :mod:`snn.report`)
        COMPLETE         written last

A run is built in ``results/<experiment>/.partial-<timestamp>-<hash>-<token>-<host>-<pid>/``
and renamed into place only when everything (``COMPLETE`` included) is written, each
file once and atomically, so a failed or killed run never leaves a directory that looks
complete. Partial directories
of dead processes are removed by :func:`clean_partials`. Readers count a directory as a
run only if its name is not hidden and ``COMPLETE`` is in it (:func:`is_complete`).

Where runs may go (checked by :func:`experiment_dir` before any data is loaded, and again
when the run is published):

- The results root (``output.dir``, or ``--results`` / ``results_dir``) is resolved once;
  a root that is itself a symbolic link is followed (that is where the user keeps results).
- The experiment name is one plain path component (no ``/``, ``..``, leading ``.``, NUL);
  the run name is generated (``<timestamp>-<hash>``), never taken from input.
- Below the root nothing is written through a symbolic link: an experiment directory or a
  sweep's comparison folder that is a link is refused, with the error naming the link and
  its target; readers skip links, so a link cannot make a sweep skip a point.
- A name already taken (same config, same second, even by a concurrent process) gets the
  next free ``-N`` suffix; a complete run is never replaced.
- A disk that fills up, a read-only or unwritable root: one :class:`SnnError` naming the
  place and the cause; the partial directory is removed and earlier runs are untouched.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from snn import ir
from snn.errors import SnnError
from snn.util import atomic_path, atomic_write_text

MARKER = "COMPLETE"
PARTIAL = ".partial-"
RESULTS_FORMAT = "snn.results/1"


# --------------------------------------------------------------------------- directories
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class RunDir:
    """A run being written: ``path`` is the temporary directory to write into; ``final`` is
    set to the complete run's directory once :func:`new_run` has renamed it."""

    path: Path
    final: Path | None = None


def safe_child(parent: Path, name: str, what: str) -> Path:
    """``parent / name`` for a plain name (one path component, not hidden), refusing a
    symbolic link there: :class:`SnnError` naming the link and its target."""
    if not name or name.startswith(".") or any(c in name for c in "/\\\0") or Path(name).is_absolute():
        raise SnnError(f"{what} {name!r} is not a plain folder name (no '/', '..', leading '.')")
    p = parent / name
    if p.is_symlink():
        raise SnnError(f"{p} is a symbolic link (to {os.readlink(p)}); nothing is written through a link below the "
                       "results root: remove the link, or make the results root itself the link")
    return p


def experiment_dir(results_dir: str | Path, experiment: str) -> Path:
    """``<results root>/<experiment>``, checked (see the module docstring): the root
    resolved (a linked root followed), the name one plain component, no link at it, and
    the deepest existing folder on the way a writable directory. Creates nothing, so a run
    that fails later writes nothing; raises :class:`SnnError` before any work."""
    root = Path(results_dir).expanduser().resolve()
    exp = safe_child(root, experiment, "experiment")
    probe = exp
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise SnnError(f"cannot write results under {exp}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        why = "read-only file system" if _read_only(probe) else "no write permission"
        raise SnnError(f"cannot write results under {exp}: {probe} is not writable ({why})")
    return exp


def _read_only(path: Path) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def write_error(e: BaseException) -> int | None:
    """The errno of a failed write (disk full, quota, file size limit, read-only, permission,
    I/O) in ``e`` or the libraries' wrappers of it (h5py, safetensors: "os error 28"), or None."""
    code = getattr(e, "errno", None)
    if code in WRITE_ERRORS:
        return code
    m = re.search(r"(?:os error|errno =) (\d+)", str(e))
    return int(m.group(1)) if m and int(m.group(1)) in WRITE_ERRORS else None


@contextlib.contextmanager
def new_run(results_dir: str | Path, experiment: str, config_hash: str) -> Iterator[RunDir]:
    """Yield a :class:`RunDir` with an empty temporary directory; on success write the
    marker and rename it to ``<results_dir>/<experiment>/<UTC timestamp>-<hash>`` (the first
    free ``-N`` suffix if taken); on any exception (KeyboardInterrupt included) delete it.
    A write that fails for want of space or permission becomes one :class:`SnnError`."""
    exp_dir = experiment_dir(results_dir, experiment)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    token = secrets.token_hex(3)  # runs of one process at once (threads) get folders of their own
    run = RunDir(exp_dir / f"{PARTIAL}{stamp}-{config_hash}-{token}-{socket.gethostname()}-{os.getpid()}")
    try:
        run.path.mkdir(parents=True)
    except OSError as e:
        raise SnnError(f"cannot write results under {exp_dir}: {e.strerror or e}") from None
    try:
        yield run
        atomic_write_text(run.path / MARKER, json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                   time.gmtime())}))
        run.final = _publish(run.path, exp_dir, f"{stamp}-{config_hash}")
    except BaseException as e:
        shutil.rmtree(run.path, ignore_errors=True)
        code = write_error(e) if isinstance(e, Exception) and not isinstance(e, SnnError) else None
        if code is not None:
            raise SnnError(f"cannot write the run into {exp_dir}: {os.strerror(code)}; the unfinished run was "
                           "removed, earlier runs are untouched") from None
        raise


def _publish(partial: Path, exp_dir: Path, name: str) -> Path:
    """Rename ``partial`` to ``exp_dir/name``, or to the first free ``name-N``. A rename
    onto a complete run fails (the target is not empty), so a concurrent process that
    took the name between the check and the rename only moves this run to the next suffix."""
    n = 0
    while True:
        final = exp_dir / (name if n == 0 else f"{name}-{n}")
        n += 1
        if final.exists() or final.is_symlink():
            continue
        try:
            os.rename(partial, final)
            return final
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise


def is_complete(run_dir: str | Path) -> bool:
    """True for a finished run directory (not partial, not a link, marker present)."""
    p = Path(run_dir)
    return p.is_dir() and not p.is_symlink() and not p.name.startswith(".") and (p / MARKER).is_file()


def list_runs(results_dir: str | Path, experiment: str | None = None) -> list[Path]:
    """Complete run directories under ``results_dir`` (of one experiment, or all), oldest
    first; symbolic links below the root are skipped (see the module docstring)."""
    root = Path(results_dir)
    exps = [root / experiment] if experiment else [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    runs = [r for e in exps if e.is_dir() and not e.is_symlink() for r in e.iterdir() if is_complete(r)]
    return sorted(runs, key=lambda r: (r.name, str(r)))


def find_run(results_dir: str | Path, experiment: str, config_hash: str) -> Path | None:
    """The newest complete run of ``experiment`` whose config hash is ``config_hash``, or None."""
    hits = [r for r in list_runs(results_dir, experiment) if r.name.split("-")[2] == config_hash]
    return hits[-1] if hits else None


def clean_partials(results_dir: str | Path, experiment: str) -> list[Path]:
    """Remove partial run directories left by processes on this host that no longer exist."""
    exp_dir = Path(results_dir) / experiment
    removed = []
    if not exp_dir.is_dir():
        return removed
    host = socket.gethostname()
    for p in exp_dir.glob(PARTIAL + "*"):
        head, _, pid = p.name.rpartition("-")
        if head.endswith("-" + host) and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


# --------------------------------------------------------------------------- environment
def environment(device: str = "cpu") -> dict[str, str]:
    """Package versions, git commit, Python, platform, CPU and (when used) GPU name."""
    import importlib.metadata as md
    import platform
    import subprocess

    env = {"python": platform.python_version(), "platform": platform.platform(), "hostname": socket.gethostname(),
           "cpu_count": str(os.cpu_count())}
    for pkg in ("snn", "torch", "snntorch", "brian2", "numpy", "h5py", "pydantic", "ray"):
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            env[pkg] = "not installed"
    try:
        repo = Path(__file__).resolve().parent.parent
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        env["git_commit"] = commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") \
            if commit.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = "unknown"
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    env["cpu"] = cpu or "unknown"
    env["device"] = device
    if device.startswith("cuda"):
        import torch

        env["gpu"] = torch.cuda.get_device_name(torch.device(device)) if torch.cuda.is_available() else "unavailable"
    return env


# --------------------------------------------------------------------------- results.h5
@dataclass
class RunData:
    """What ``results.h5`` holds, as numpy arrays and plain dicts.

    ``accuracy`` (T,): SNN test accuracy after each step; ``ann_accuracy``: the ANN's.
    ``spikes``: {node: (T,) mean spikes per sample at each step, summed over the node's
    neurons}; ``neurons``: {node: neuron count}. ``energy``: the energy report as JSON
    data (or None); ``training``: per-epoch metrics; ``environment``: str -> str.
    """

    accuracy: np.ndarray
    ann_accuracy: float
    spikes: dict[str, np.ndarray]
    neurons: dict[str, int]
    energy: dict[str, Any] | None
    training: list[dict[str, Any]]
    environment: dict[str, str]
    n_samples: int

    @property
    def timesteps(self) -> int:
        return len(self.accuracy)

    def firing_rates(self) -> dict[str, float]:
        """Mean spikes per neuron per step for each spiking node."""
        T = self.timesteps
        return {k: float(v.sum() / (self.neurons[k] * T)) for k, v in self.spikes.items()}


def write_results(path: str | Path, data: RunData) -> None:
    """Write ``data`` to ``path`` (HDF5, atomically). Node names are kept as attributes, so any name works.
    The file and every array carry a SHA-256 checksum (:func:`snn.ir.seal_file`)."""
    with atomic_path(path) as tmp:
        with ir.create_h5(tmp, 1 + len(data.spikes)) as f:
            f.attrs["format"] = RESULTS_FORMAT
            f.attrs["ann_accuracy"] = data.ann_accuracy
            f.attrs["n_samples"] = data.n_samples
            f.create_dataset("accuracy", data=np.asarray(data.accuracy, dtype=np.float64))
            sp = f.create_group("spikes")
            for i, (name, counts) in enumerate(data.spikes.items()):
                d = sp.create_dataset(f"{i:04d}", data=np.asarray(counts, dtype=np.float64))
                d.attrs["node"] = name
                d.attrs["neurons"] = int(data.neurons[name])
            f.attrs["energy"] = json.dumps(data.energy)
            f.attrs["training"] = json.dumps(data.training)
            env = f.create_group("environment")
            for k, v in data.environment.items():
                env.attrs[k] = str(v)
        ir.seal_file(tmp)


def read_results(path: str | Path) -> RunData:
    """Read a ``results.h5``; a missing, truncated, corrupted or foreign file raises
    :class:`SnnError`, a checksum mismatch naming the dataset. A file written before
    checksums existed is read unverified, with a warning (:func:`snn.ir.verify_file`)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise SnnError(f"no results file: {path}")
    try:
        ir.verify_file(path, "results file")
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != RESULTS_FORMAT:
                raise SnnError(f"{path} is not an snn results file (format {f.attrs.get('format')!r})")
            spikes, neurons = {}, {}
            for key in sorted(f["spikes"]):
                d = f["spikes"][key]
                spikes[str(d.attrs["node"])] = ir.read_array(d)
                neurons[str(d.attrs["node"])] = int(d.attrs["neurons"])
            data = RunData(accuracy=ir.read_array(f["accuracy"]), ann_accuracy=float(f.attrs["ann_accuracy"]),
                           spikes=spikes, neurons=neurons, energy=json.loads(f.attrs["energy"]),
                           training=json.loads(f.attrs["training"]),
                           environment={k: str(v) for k, v in f["environment"].attrs.items()},
                           n_samples=int(f.attrs["n_samples"]))
    except SnnError:
        raise
    except OSError as e:
        raise SnnError(f"{path} is corrupted or not an snn results file ({' '.join(str(e).split())})") from None
    except Exception as e:  # a damaged file that still opens: any parsing error, one line
        raise SnnError(f"{path} is corrupted or not an snn results file ({type(e).__name__}: "
                       f"{' '.join(str(e).split())[:200]})") from None
    if data.accuracy.ndim != 1 or not isinstance(data.training, list) or not (
            data.energy is None or isinstance(data.energy, dict)):
        raise SnnError(f"{path} is corrupted or not an snn results file (unexpected accuracy shape or metadata types)")
    return data


# --------------------------------------------------------------------------- a stored run
@dataclass
class Run:
    """A complete run directory read back: its config (dict), summary and data."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    data: RunData


def read_run(run_dir: str | Path, require_complete: bool = True) -> Run:
    """Read a run directory; anything missing or corrupt raises :class:`SnnError` naming the file.
    ``require_complete=False`` also reads a run still being written (no marker yet)."""
    import yaml

    p = Path(run_dir)
    if not p.is_dir():
        raise SnnError(f"no such run directory: {p}")
    if require_complete and not (p / MARKER).is_file():
        raise SnnError(f"{p} is not a complete run (no {MARKER} marker: it failed, was interrupted, or is not a run)")
    try:
        config = yaml.safe_load((p / "config.yaml").read_text())
        summary = json.loads((p / "summary.json").read_text())
    except FileNotFoundError as e:
        raise SnnError(f"{p}: missing {Path(e.filename).name}") from None
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise SnnError(f"{p}: corrupted config.yaml or summary.json ({e})") from None
    if not isinstance(config, dict) or not isinstance(summary, dict):
        raise SnnError(f"{p}: config.yaml or summary.json does not hold a mapping")
    return Run(path=p, config=config, summary=summary, data=read_results(p / "results.h5"))


# --------------------------------------------------------------------------- determinism
VOLATILE = ("started", "timings_s")
"""The keys of ``summary.json`` that differ between two runs of one config and seed: when
the run started and how long its stages took. ``model_source`` also says whether the
weights were trained now or loaded from the model cache (the same weights either way)."""


def stable_summary(summary: dict[str, Any]) -> str:
    """``summary.json`` without :data:`VOLATILE`, as written (``json.dumps(indent=2)``):
    byte for byte the same for every run of one config and seed, whether run alone, in a
    sweep with one or more workers, or on Ray (tests/test_determinism.py)."""
    return json.dumps({k: v for k, v in summary.items() if k not in VOLATILE}, indent=2)
