"""Run one experiment: dataset -> model -> train or load -> convert -> simulate -> energy -> results.

:func:`run_experiment` does every step that can fail on the user's input (config, data,
checkpoint) before it creates anything under the results directory, computes everything
in memory, and then writes the run directory atomically (:func:`snn.results.new_run`).

One simulation of ``T`` steps gives the accuracy after every step ``t <= T`` (the
network is causal), so the accuracy-vs-timesteps curve costs one run. For the energy-vs-
accuracy curve the simulation result is truncated to its first ``t`` steps
(:func:`truncate`), which is exactly what a run of ``t`` steps would have recorded.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from snn.config import ExperimentConfig, config_hash, load_config, to_dict, to_yaml
from snn.errors import ConfigError, SnnError
from snn.results import Run, RunData, environment, new_run, read_run, write_results
from snn.util import atomic_write_text

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- model
def _user_class(path: str) -> type:
    """``package.module:Class`` -> the class; import errors name the config key."""
    module, _, cls = path.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"model.name: cannot import module {module!r} ({e})") from None
    if not hasattr(mod, cls):
        raise ConfigError(f"model.name: module {module!r} has no attribute {cls!r}")
    return getattr(mod, cls)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if needed): concurrent sweep workers that need
    the same trained model wait for the first one instead of training it twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_model(cfg: ExperimentConfig, x: np.ndarray, y: np.ndarray, progress: bool = True,
                log: Log = _stderr) -> tuple[Any, dict[str, Any]]:
    """The trained ANN (eval mode) and how it was obtained: ``{"source": ..., "history": [...]}``.

    Weights come from ``model.checkpoint``, ``model.pretrained`` or training on ``(x, y)``
    (cached: see :func:`snn.train.train_cached`).
    """
    import torch

    from snn import train as tr
    from snn import zoo

    m = cfg.model
    torch.manual_seed(cfg.seed)
    if ":" in m.name:
        try:
            model = _user_class(m.name)(**m.kwargs)
        except TypeError as e:
            raise ConfigError(f"model.kwargs: {m.name} rejected them ({e})") from None
    elif m.pretrained:
        log(f"loading pretrained {m.name} weights")
        return zoo.load_pretrained(m.name).eval(), {"source": f"pretrained {m.name}", "history": []}
    else:
        model = zoo.create_model(m.name, **_zoo_kwargs(cfg))
    if m.checkpoint:
        tr.load_checkpoint(model, m.checkpoint)
        return model.eval(), {"source": f"checkpoint {m.checkpoint}", "history": []}
    t = cfg.train
    train_cfg = {"epochs": t.epochs, "lr": t.lr, "batch_size": t.batch_size, "optimizer": t.optimizer,
                 "weight_decay": t.weight_decay, "seed": cfg.seed, "limit": cfg.data.train_limit}
    cache = Path(t.cache_dir).expanduser()
    key = hashlib.sha256(json.dumps([m.name, m.kwargs, cfg.data.name, train_cfg], sort_keys=True,
                                    default=str).encode()).hexdigest()[:16]
    with _file_lock(cache / f".lock-{key}"):
        model, info = tr.train_cached(m.name, _zoo_kwargs(cfg), cfg.data.name, train_cfg, cache,
                                      root=cfg.data.root, progress=progress)
    return model.eval(), {"source": "trained", **info}


def _zoo_kwargs(cfg: ExperimentConfig) -> dict[str, Any]:
    """Zoo arguments: the dataset's input shape and class count, then the config's kwargs."""
    from snn.data import DATASETS

    ds = DATASETS[cfg.data.name]
    return {"in_shape": ds.shape, "num_classes": ds.num_classes, **cfg.model.kwargs}


# --------------------------------------------------------------------------- simulation helpers
def truncate(res: Any, t: int) -> Any:
    """The :class:`snn.SimulationResult` of the first ``t`` steps of ``res`` (which must
    hold per-step spike counts): what a run of ``t`` steps would have returned."""
    import dataclasses

    if res.step_sums is None:
        raise SnnError("truncate needs per-step spike counts (record='steps')")
    steps = {k: v[:t] for k, v in res.step_sums.items()}
    return dataclasses.replace(res, outputs=res.outputs[:t], step_sums=steps,
                               spike_sums={k: v.sum(axis=0) for k, v in steps.items()}, timesteps=int(t))


def curve_points(T: int, n: int = 8) -> list[int]:
    """About ``n`` timesteps spread geometrically over 1..T, always including T."""
    pts = sorted({int(round(v)) for v in np.geomspace(1, T, num=min(n, T))} | {T})
    return [p for p in pts if p >= 1]


# --------------------------------------------------------------------------- the pipeline
def run_experiment(config: str | Path | Mapping[str, Any] | ExperimentConfig, overrides: Sequence[str] | Mapping = (),
                   results_dir: str | Path | None = None, *, progress: bool = True, log: Log = _stderr,
                   sweep_point: Mapping[str, Any] | None = None) -> Run:
    """Run one experiment and store it; return the stored :class:`snn.results.Run`.

    ``config``: a YAML path, a dict or an :class:`ExperimentConfig`; ``overrides``:
    ``["key.path=value", ...]`` or ``{"key.path": value}``; ``results_dir``: the results
    root (default: the config's ``output.dir``). Runs go to
    ``<results_dir>/<name>/<timestamp>-<hash>/``. A config with a ``sweep`` section is
    rejected: run it with :func:`snn.sweep.run_sweep`.
    """
    import torch

    import snn
    from snn import data as dmod
    from snn import train as tr

    cfg = load_config(config, overrides)
    if cfg.sweep:
        n = int(np.prod([len(v) for v in cfg.sweep.values()]))
        raise ConfigError(f"config {cfg.name!r} has a sweep section ({n} runs): run it with `snn sweep`")
    h = config_hash(cfg)
    root = Path(results_dir if results_dir is not None else cfg.output.dir)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def stage(name: str, t0: float) -> float:
        timings[name] = round(time.perf_counter() - t0, 3)
        return time.perf_counter()

    t0 = time.perf_counter()
    d = cfg.data
    x_tr, y_tr = dmod.load_dataset(d.name, "train", root=d.root, limit=d.train_limit)
    x_te, y_te = dmod.load_dataset(d.name, "test", root=d.root, limit=d.test_limit)
    label = dmod.dataset_label(d.name, root=d.root)
    log(f"[{cfg.name}] data: {label}, {len(x_tr)} train / {len(x_te)} test samples")
    t0 = stage("data", t0)

    model, model_info = build_model(cfg, x_tr, y_tr, progress=progress, log=log)
    t0 = stage("model", t0)
    ann_acc = float(tr.evaluate(model, x_te, y_te))
    log(f"[{cfg.name}] ANN ({cfg.model.name}, {model_info['source']}): test accuracy {100 * ann_acc:.2f}%")

    c = cfg.convert
    net = snn.convert(model, x_tr[:c.calibration_samples], method=c.method, percentile=c.percentile,
                      channelwise=c.channelwise, reset=c.reset, v_init=c.v_init,
                      max_calibration=c.calibration_samples)
    t0 = stage("convert", t0)

    s = cfg.sim
    torch.manual_seed(cfg.seed)
    res = snn.simulate(net, x_te, timesteps=s.timesteps, backend=s.backend, encoding=s.encoding,
                       batch_size=s.batch_size, device=s.device, precision=s.precision, seed=cfg.seed,
                       record="steps", progress=progress, **s.options)
    acc = res.accuracy(y_te)
    log(f"[{cfg.name}] SNN ({s.backend}, T={s.timesteps}): test accuracy {100 * acc[-1]:.2f}% "
        f"(simulated in {res.wall_time_s:.1f} s)")
    t0 = stage("simulate", t0)

    energy = _energy(cfg, net, res, acc) if cfg.energy.enabled else None
    t0 = stage("energy", t0)

    graph = net.graph
    spikes = {k: v.reshape(v.shape[0], -1).sum(axis=1) / res.n_samples for k, v in res.step_sums.items()}
    neurons = {k: int(np.prod(graph.shapes[k])) for k in spikes}
    data = RunData(accuracy=acc, ann_accuracy=ann_acc, spikes=spikes, neurons=neurons,
                   energy=energy["data"] if energy else None, training=model_info.get("history", []),
                   environment=environment(s.device), n_samples=res.n_samples)
    summary = {
        "experiment": cfg.name, "config_hash": h, "description": cfg.description,
        "dataset": d.name, "dataset_label": label, "model": cfg.model.name, "model_source": model_info["source"],
        "backend": s.backend, "encoding": s.encoding, "timesteps": s.timesteps,
        "method": c.method, "percentile": c.percentile if c.method == "percentile" else 100.0,
        "n_test": res.n_samples, "ann_accuracy": ann_acc, "snn_accuracy": float(acc[-1]),
        "accuracy_gap": float(ann_acc - acc[-1]),
        "accuracy_at": {str(t): float(acc[t - 1]) for t in curve_points(s.timesteps)},
        "firing_rates": data.firing_rates(), "energy": energy["totals"] if energy else None,
        "sweep_point": dict(sweep_point or {}), "timings_s": timings,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - (time.perf_counter() - t_start))),
    }

    with new_run(root, cfg.name, h) as run:
        atomic_write_text(run.path / "config.yaml", f"# config hash: {h}\n" + to_yaml(cfg))
        write_results(run.path / "results.h5", data)
        if cfg.output.save_network:
            net.save(run.path / "network.h5")
        if energy:
            energy["report"].to_json(run.path / "energy.json")
        summary["timings_s"]["total"] = round(time.perf_counter() - t_start, 3)
        atomic_write_text(run.path / "summary.json", json.dumps(summary, indent=2))
        if cfg.output.report:
            from snn.report import build_report

            build_report(run.path, complete=False)
    log(f"[{cfg.name}] run complete in {time.perf_counter() - t_start:.1f} s: {run.final}")
    return read_run(run.final)


def _energy(cfg: ExperimentConfig, net: Any, res: Any, acc: np.ndarray) -> dict[str, Any]:
    """The energy report of the whole run, and energy per inference at several timesteps
    (for the energy-vs-accuracy curve): ``{"report", "data", "totals"}``."""
    import snn

    kwargs = {} if cfg.energy.grid_intensity is None else {"grid_intensity": cfg.energy.grid_intensity}
    report = snn.energy_report(net, res, hardware=cfg.energy.hardware, **kwargs)
    curve: dict[str, Any] = {"t": [], "accuracy": [], "energy_j": {}}
    for t in curve_points(res.timesteps):
        r = snn.energy_report(net, truncate(res, t), hardware=cfg.energy.hardware, **kwargs)
        curve["t"].append(t)
        curve["accuracy"].append(float(acc[t - 1]))
        for hw, e in _per_inference(r).items():
            curve["energy_j"].setdefault(hw, []).append(e)
    totals = _per_inference(report)
    return {"report": report, "totals": totals,
            "data": {"report": json.loads(report.to_json()), "curve": curve, "per_inference_j": totals}}


def _per_inference(report: Any) -> dict[str, float]:
    """{hardware: energy per inference in joules} from an energy report."""
    return {hw: float(v) for hw, v in report.energy.items()}
