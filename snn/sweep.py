"""Sweeps: every combination of the lists in a config's ``sweep`` section, one run each.

``sweep`` maps key paths to lists of values; the runs are the cartesian product, first
key slowest (:func:`snn.config.expand_sweep`)::

    sweep:
      sim.timesteps: [8, 16, 32, 64]
      convert.method: [max, percentile]      # 4 x 2 = 8 runs

Each run is an ordinary experiment run (:func:`snn.runner.run_experiment`) stored in
``<results>/<name>/<timestamp>-<hash>/``, its hash that of its own resolved config. That
makes a sweep resumable: a run whose hash already has a complete directory is skipped,
and partial directories left by killed processes are removed and their runs redone, so
killing a sweep (even with SIGKILL) loses only the runs in flight.

Runs execute in this process (``workers=1``), in local worker processes
(``workers=N``), or as Ray tasks (``use_ray=True``) on the cluster at ``address`` or on a
local cluster started for the sweep (on a remote cluster, the results directory and the
data must be on a file system every node sees, at the same path). A worker that dies
while running a point (a local worker process or a Ray worker: killed, out of memory, its
node lost) loses only the points in flight: they are submitted again, up to
:data:`LOST_RETRIES` times, unless the lost worker had already published its run. When
all runs are done, partial directories of dead processes are removed and a comparison of
the runs is written to ``<results>/<name>/sweep/`` (:func:`snn.report.compare_runs`).
"""
from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from snn.config import ExperimentConfig, config_hash, expand_sweep, load_config, to_dict
from snn.errors import SnnError
from snn.results import clean_partials, experiment_dir, find_run, safe_child

Log = Callable[[str], None]
LOST_RETRIES = 2
"""Times a point is submitted again after the Ray worker running it died."""


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class SweepResult:
    """Outcome of a sweep: run directories of the points that were run now (``ran``),
    found complete (``skipped``), and the points that failed with their error (``failed``)."""

    name: str
    total: int
    ran: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    compare_dir: Path | None = None

    @property
    def runs(self) -> list[Path]:
        return self.skipped + self.ran


def _label(point: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in point.items()) or "(single run)"


# --------------------------------------------------------------------------- one point (any process)
def _die_with_parent() -> None:
    """Local workers get SIGKILL when the sweep process dies (Linux), so a killed sweep
    leaves no orphan that could still finish a run behind a restarted one."""
    import signal

    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _init_worker(threads: int) -> None:
    _die_with_parent()
    import torch

    torch.set_num_threads(threads)


def run_point(config: dict[str, Any], point: dict[str, Any], results_dir: str,
              cwd: str | None = None, env: Mapping[str, str] | None = None) -> tuple[str, dict[str, Any]]:
    """Run one sweep point (in a worker process or a Ray task); return (run dir, summary).

    ``cwd`` and ``env`` (``SNN_DATA``, ``SNN_CACHE``) carry the driver's working directory
    and data locations to workers of a local Ray cluster; a ``cwd`` that does not exist on
    the worker's machine is ignored."""
    from snn.runner import run_experiment

    for k, v in (env or {}).items():
        os.environ[k] = v
    if cwd and Path(cwd).is_dir():
        os.chdir(cwd)
    run = run_experiment(config, results_dir=results_dir, progress=False, sweep_point=point,
                         log=lambda m: None)
    return str(run.path), run.summary


# --------------------------------------------------------------------------- the sweep
def plan(cfg: ExperimentConfig, results_dir: Path) -> tuple[list[tuple[dict, ExperimentConfig]], list[Path]]:
    """(points still to run, run directories of points already complete); points that
    resolve to the same config (a value listed twice) are run once."""
    todo, done, seen = [], [], set()
    for point, pcfg in expand_sweep(cfg):
        h = config_hash(pcfg)
        if h in seen:
            continue
        seen.add(h)
        hit = find_run(results_dir, pcfg.name, h)
        if hit is None:
            todo.append((point, pcfg))
        else:
            done.append(hit)
    return todo, done


def run_sweep(config: str | Path | Mapping[str, Any] | ExperimentConfig, overrides: Sequence[str] | Mapping = (),
              results_dir: str | Path | None = None, workers: int = 1, use_ray: bool = False,
              address: str | None = None, log: Log = _stderr, compare: bool = True) -> SweepResult:
    """Run (or resume) a sweep; see the module docstring.

    ``workers``: local worker processes (``1``: in this process); with ``use_ray``, the
    number of CPUs of the local Ray cluster started when no ``address`` is given.
    A failed run is reported in the result and does not stop the others.
    """
    cfg = load_config(config, overrides)
    if workers < 1:
        raise SnnError(f"--workers must be >= 1, got {workers}")
    if use_ray:  # before any work
        from snn.shard import require_ray

        require_ray("`--ray`")
    root = Path(results_dir if results_dir is not None else cfg.output.dir).resolve()
    exp = experiment_dir(root, cfg.name)  # where the runs (and their comparison) will go: checked before any work
    if compare:
        safe_child(exp, "sweep", "comparison folder")
    for p in clean_partials(root, cfg.name):
        log(f"removed the unfinished run {p.name}")
    todo, done = plan(cfg, root)
    from snn.runner import check_model

    checked = set()
    for _, pcfg in todo:  # each user model once, before any run starts (see check_model)
        key = (pcfg.model.model_dump_json(), pcfg.data.name, pcfg.seed)
        if key not in checked:
            checked.add(key)
            check_model(pcfg)
    res = SweepResult(cfg.name, total=len(todo) + len(done), skipped=done)
    log(f"sweep {cfg.name}: {res.total} runs, {len(done)} already complete, {len(todo)} to run"
        + (f" on Ray ({address or 'local cluster'})" if use_ray else f" with {workers} worker(s)"))
    jobs = [(to_dict(pcfg), point) for point, pcfg in todo]
    t0 = time.perf_counter()

    def finished(point: dict, outcome: tuple[str, dict] | BaseException) -> None:
        n = len(res.ran) + len(res.failed) + 1
        if isinstance(outcome, BaseException):
            res.failed.append((point, f"{type(outcome).__name__}: {outcome}"))
            log(f"[{n}/{len(jobs)}] FAILED {_label(point)}: {outcome}")
        else:
            res.ran.append(Path(outcome[0]))
            log(f"[{n}/{len(jobs)}] {_label(point)}: SNN {100 * outcome[1]['snn_accuracy']:.2f}% "
                f"(ANN {100 * outcome[1]['ann_accuracy']:.2f}%) -> {outcome[0]} ({time.perf_counter() - t0:.0f} s)")

    if jobs and use_ray:
        _run_ray(jobs, str(root), cfg.name, workers, address, finished, log)
    elif jobs and workers > 1:
        _run_local(jobs, str(root), workers, finished, log)
    else:
        for cfg_dict, point in jobs:
            try:
                outcome: Any = run_point(cfg_dict, point, str(root))
            except Exception as e:  # reported with the point; the other points still run
                outcome = e
            finished(point, outcome)
    clean_partials(root, cfg.name)  # those of workers that died during this sweep
    if compare and res.runs:
        from snn.report import compare_runs

        res.compare_dir = compare_runs(res.runs, safe_child(exp, "sweep", "comparison folder"),
                                       title=f"Sweep {cfg.name}")
        log(f"sweep comparison: {res.compare_dir / 'compare.html'}")
    return res


def _run_local(jobs: list[tuple[dict, dict]], root: str, workers: int,
               finished: Callable[[dict, Any], None], log: Log = _stderr) -> None:
    """Run the jobs in ``workers`` spawned processes. A worker that dies breaks the pool
    (every job not yet finished fails with BrokenProcessPool): those jobs run again in a
    new pool, each up to :data:`LOST_RETRIES` times, unless its run was published."""
    import multiprocessing as mp
    from concurrent.futures.process import BrokenProcessPool

    threads = max(1, (os.cpu_count() or 1) // workers)
    todo, retries = list(range(len(jobs))), [0] * len(jobs)
    while todo:
        lost = []
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker, initargs=(threads,)) as ex:
            futures = {ex.submit(run_point, *jobs[i], root): i for i in todo}
            for fut in as_completed(futures):
                i, exc = futures[fut], fut.exception()
                if isinstance(exc, BrokenProcessPool):
                    lost.append(i)
                else:
                    finished(jobs[i][1], exc if exc is not None else fut.result())
        todo = []
        for i in sorted(lost):
            c, p = jobs[i]
            outcome = _published(c, root)
            if outcome is None and retries[i] < LOST_RETRIES:
                retries[i] += 1
                log(f"a worker process died while {_label(p)} was in flight; running it again "
                    f"(retry {retries[i]}/{LOST_RETRIES})")
                todo.append(i)
            else:
                finished(p, outcome or BrokenProcessPool(f"worker processes died {LOST_RETRIES + 1} times"))


def _published(cfg_dict: dict[str, Any], root: str) -> tuple[str, dict[str, Any]] | None:
    """(run dir, summary) of a point's complete run, if one exists (its worker published it
    and died before reporting back), else None."""
    import json

    cfg = load_config(cfg_dict)
    hit = find_run(root, cfg.name, config_hash(cfg))
    return (str(hit), json.loads((hit / "summary.json").read_text())) if hit else None


def _run_ray(jobs: list[tuple[dict, dict]], root: str, name: str, workers: int, address: str | None,
             finished: Callable[[dict, Any], None], log: Log = _stderr) -> None:
    """Run the jobs as Ray tasks (1 CPU each); starts (and stops) a local cluster when
    ``address`` is None, its logs kept in ``<root>/<name>/ray-logs/`` (:func:`snn.shard.ray_session`).
    A task whose worker died is submitted again (:data:`LOST_RETRIES`)."""
    from snn.shard import ray_session

    env = {k: os.environ[k] for k in ("SNN_DATA", "SNN_CACHE") if k in os.environ}
    with ray_session(address, workers if workers > 1 else None, Path(root) / name / "ray-logs", what="`--ray`") \
            as (ray, _):
        task = ray.remote(num_cpus=1, max_retries=0)(run_point)  # retried here, after a look for its run
        lost = (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.OutOfMemoryError,
                ray.exceptions.LocalRayletDiedError)
        refs = {task.remote(c, p, root, os.getcwd(), env): (c, p, 0) for c, p in jobs}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            c, p, retries = refs.pop(ready[0])
            try:
                outcome: Any = ray.get(ready[0])
            except ray.exceptions.RayTaskError as e:
                outcome = e.cause if isinstance(e.cause, BaseException) else e
            except lost as e:
                outcome = _published(c, root) or e
                if outcome is e and retries < LOST_RETRIES:
                    log(f"the Ray worker running {_label(p)} died ({type(e).__name__}); running it again "
                        f"(retry {retries + 1}/{LOST_RETRIES})")
                    refs[task.remote(c, p, root, os.getcwd(), env)] = (c, p, retries + 1)
                    continue
            except ray.exceptions.RayError as e:
                outcome = e
            finished(p, outcome)
