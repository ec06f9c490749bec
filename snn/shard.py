"""Sharded simulation: one evaluation split across the workers of a Ray cluster.

``snn.simulate(net, x, T, cluster="ray")`` cuts the inputs into shards of whole batches,
simulates each shard in a Ray task (one CPU each) and merges the records: outputs are
concatenated in sample order, spike counts (totals and per step) are summed. A shard keeps
the global index of its first sample, so every batch starts where it would in one process
and sees the same Poisson trains (:mod:`snn.encode` seeds them with the batch's ``start``):
the result is identical to simulating in one process with the same ``batch_size``.

The cluster is the one at ``address`` (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``),
the one this process is already connected to, or a local cluster of ``workers`` CPUs
started for the call and stopped after it (:func:`ray_session`: quietly, its logs moved to
``logs``, nothing left in ``/tmp``); workers' output is not forwarded to this process. The
graph and the inputs travel through Ray's object store, so the workers need ``snn`` (and the
backend's simulator) installed, but no shared file system.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from snn import ir
from snn.errors import MissingExtra, SnnError

ENV = ("SNN_CACHE",)
"""Environment variables the driver passes to its workers (where compiled code is cached)."""


def shards(n: int, batch_size: int, k: int) -> list[tuple[int, int]]:
    """``k`` (or fewer) contiguous ranges ``(start, stop)`` of whole batches covering ``n`` samples,
    balanced to within one batch."""
    n_batches = -(-n // batch_size)
    k = max(1, min(k, n_batches))
    bounds = [round(i * n_batches / k) * batch_size for i in range(k + 1)]
    return [(a, min(b, n)) for a, b in zip(bounds[:-1], bounds[1:]) if a < n]


def _shard(graph: ir.Graph, xs: np.ndarray, offset: int, backend: str, batch_size: int,
           settings: dict[str, Any], options: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """One shard, in a Ray worker: the records of ``xs`` whose first sample has global index ``offset``."""
    from snn.backends import get_backend
    from snn.simulate import run_batches

    for k, v in env.items():
        os.environ.setdefault(k, v)
    t0 = time.perf_counter()
    outs, sums, steps = run_batches(get_backend(backend), graph, xs, offset, batch_size, settings, options)
    return {"outputs": outs, "sums": sums, "steps": steps, "wall_s": time.perf_counter() - t0,
            "node": os.uname().nodename, "pid": os.getpid()}


def require_ray(what: str = "cluster='ray'") -> Any:
    """The ``ray`` module; :class:`MissingExtra` naming ``snn[ray]`` if it is not installed."""
    try:
        import ray
    except ImportError as e:
        raise MissingExtra(what, "ray", "Ray") from e
    return ray


def default_logs() -> Path:
    """Where the logs of a local cluster go when no folder is given: ``$SNN_CACHE/ray-logs``
    (default ``~/.cache/snn/ray-logs``)."""
    base = os.environ.get("SNN_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "snn") / "ray-logs"


@contextlib.contextmanager
def ray_session(address: str | None, workers: int | None, logs: str | Path | None,
                what: str = "cluster='ray'", forward: bool = False) -> Iterator[tuple[Any, bool]]:
    """Ray, connected for the block: yields ``(ray, started)``. Unless this process is already
    connected, it connects to ``address`` or starts a local cluster of ``workers`` CPUs
    (``started``), quietly (no dashboard, Ray's own messages at ERROR level; ``forward``:
    print the workers' output here). A local cluster keeps its session in a private
    temporary folder (short: Ray's socket paths are limited to 107 characters); when it
    stops, its ``logs`` folder is moved to ``logs/<session>/`` (default :func:`default_logs`)
    and the rest removed, so nothing is left in ``/tmp``."""
    ray = require_ray(what)
    started = not ray.is_initialized()
    tmp = None
    if started:
        kw: dict[str, Any] = dict(log_to_driver=forward, logging_level=logging.ERROR, include_dashboard=False)
        try:
            if address:
                ray.init(address=address, **kw)
            else:
                tmp = tempfile.mkdtemp(prefix="snn-ray-")
                ray.init(num_cpus=workers, _temp_dir=tmp, **kw)
        except (ConnectionError, RuntimeError, ValueError) as e:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
            raise SnnError(f"cannot start or reach a Ray cluster at {address or 'a local cluster'}: {e}") from None
    try:
        yield ray, started
    finally:
        if started:
            ray.shutdown()
        if tmp:
            dest = Path(logs) if logs is not None else default_logs()
            for session in Path(tmp).glob("session_2*"):
                if (session / "logs").is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(session / "logs"), str(dest / session.name))
            shutil.rmtree(tmp, ignore_errors=True)


def run_ray(graph: ir.Graph, xs: np.ndarray, backend: str, batch_size: int, settings: dict[str, Any],
            options: dict[str, Any], address: str | None = None, workers: int | None = None,
            logs: str | Path | None = None
            ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
    """Simulate ``xs`` in shards on Ray; returns (outputs, spike sums, step sums, info).

    ``workers``: the shards (default: the cluster's CPUs), and the CPUs of a local cluster
    started here when ``address`` is None and this process is not connected to one;
    ``logs``: where that local cluster's logs are kept (:func:`ray_session`)."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer))
                                or workers < 1):
        raise SnnError(f"workers must be a positive integer, got {workers!r}")
    t0 = time.perf_counter()
    with ray_session(address, workers, logs) as (ray, started):
        t_up = time.perf_counter() - t0
        cpus = int(ray.cluster_resources().get("CPU", 1))
        parts = shards(len(xs), batch_size, workers or cpus)
        env = {k: os.environ[k] for k in ENV if k in os.environ}
        task = ray.remote(num_cpus=1, max_retries=0)(_shard)
        g = ray.put(graph)
        refs = [task.remote(g, xs[a:b], a, backend, batch_size, settings, options, env) for a, b in parts]
        try:
            done = ray.get(refs)
        except ray.exceptions.RayTaskError as e:
            cause = e.cause if isinstance(e.cause, BaseException) else None
            if isinstance(cause, SnnError):
                raise SnnError(str(cause)) from None
            raise
        sums: dict[str, np.ndarray] = {}
        steps: dict[str, np.ndarray] = {}
        for d in done:
            for k, v in d["sums"].items():
                sums[k] = sums[k] + v if k in sums else v
            for k, v in d["steps"].items():
                steps[k] = steps[k] + v if k in steps else v
        outputs = np.concatenate([d["outputs"] for d in done], axis=1)
        info = {"cluster": "ray", "address": address or ("local" if started else "connected"),
                "cluster_cpus": cpus, "cluster_start_s": t_up if started else 0.0,
                "shards": [{"start": a, "stop": b, "wall_s": d["wall_s"], "node": d["node"], "pid": d["pid"]}
                           for (a, b), d in zip(parts, done)]}
        return outputs, sums, steps, info
