"""Run one experiment: dataset -> model -> train or load -> convert -> simulate -> energy -> results.

:func:`run_experiment` does every step that can fail on the user's input (config, data,
checkpoint) before it creates anything under the results directory, computes everything
in memory, and then writes the run directory atomically (:func:`snn.results.new_run`).

One simulation of ``T`` steps gives the accuracy after every step ``t <= T`` (the
network is causal), so the accuracy-vs-timesteps curve costs one run; likewise the energy
report prices the spikes of the first ``t`` steps for every ``t`` (its ``per_step``), which
gives the energy-vs-accuracy curve.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from snn.config import ExperimentConfig, config_hash, load_config, to_yaml
from snn.errors import ConfigError
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


def build_model(cfg: ExperimentConfig, progress: bool = True, log: Log = _stderr) -> tuple[Any, dict[str, Any]]:
    """The trained ANN (eval mode) and how it was obtained: ``{"source": ..., "metrics": [...]}``.

    Weights come from ``model.checkpoint``, ``model.pretrained`` or training: zoo models
    through :func:`snn.train.train_cached` (cached by the hash of everything that affects
    them; concurrent runs needing the same model wait for one another), a user's
    ``module:Class`` trained directly.
    """
    import torch

    from snn import data as dmod
    from snn import train as tr
    from snn import zoo

    m, t, d = cfg.model, cfg.train, cfg.data
    if m.pretrained:
        log(f"[{cfg.name}] loading the pretrained {m.name} weights")
        return zoo.load_pretrained(m.name, root=d.root).eval(), {"source": f"pretrained {m.name}", "metrics": []}
    ds = dmod.info(d.name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if ":" in m.name:
            try:
                model = _user_class(m.name)(**m.kwargs)
            except TypeError as e:
                raise ConfigError(f"model.kwargs: {m.name} rejected them ({e})") from None
        else:
            model = zoo.create_model(m.name, **{**zoo.dataset_kwargs(m.name, ds.shape, ds.num_classes), **m.kwargs})
    if m.checkpoint:
        tr.load_checkpoint(model, m.checkpoint)
        return model.eval(), {"source": f"checkpoint {m.checkpoint}", "metrics": []}
    train_cfg = {"epochs": t.epochs, "lr": t.lr, "batch_size": t.batch_size, "optimizer": t.optimizer,
                 "schedule": t.schedule, "weight_decay": t.weight_decay, "device": t.device, "seed": cfg.seed,
                 "limit": d.train_limit}
    if ":" in m.name:
        x, y = dmod.load_dataset(d.name, "train", root=d.root, limit=d.train_limit)
        log(f"[{cfg.name}] training {m.name} for {t.epochs} epochs (a user model: not cached)")
        metrics = tr.train(model, x, y, **{k: v for k, v in train_cfg.items() if k != "limit"}, progress=progress)
        return model.to("cpu").eval(), {"source": "trained", "metrics": metrics}
    cache = Path(t.cache_dir).expanduser() if t.cache_dir else dmod.cache_dir() / "models"
    key = hashlib.sha256(json.dumps([m.name, m.kwargs, d.name, train_cfg], sort_keys=True,
                                    default=str).encode()).hexdigest()[:16]
    with _file_lock(cache / f".lock-{key}"):
        model, info = tr.train_cached(m.name, m.kwargs, d.name, train_cfg, cache, root=d.root, progress=progress)
    log(f"[{cfg.name}] {m.name}: " + (f"trained weights loaded from the cache ({info['path']})" if info["cached"]
                                      else f"trained in {info['train_seconds']:.1f} s, cached in {info['path']}"))
    return model.eval(), {"source": "trained (cached)" if info["cached"] else "trained",
                          "metrics": info.get("metrics") or [], "checkpoint": info["path"]}


# --------------------------------------------------------------------------- simulation helpers
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
    cfg = load_config(config, overrides)
    if cfg.sweep:
        n = int(np.prod([len(v) for v in cfg.sweep.values()]))
        raise ConfigError(f"config {cfg.name!r} has a sweep section ({n} runs): run it with `snn sweep`")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or threads)
    try:
        return _run(cfg, results_dir, progress, log, sweep_point)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: ExperimentConfig, results_dir: str | Path | None, progress: bool, log: Log,
         sweep_point: Mapping[str, Any] | None) -> Run:
    import snn
    from snn import data as dmod
    from snn import train as tr

    h = config_hash(cfg)
    root = Path(results_dir if results_dir is not None else cfg.output.dir)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t_start = t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def stage(name: str) -> None:
        nonlocal t0
        timings[name] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()

    d, c, s = cfg.data, cfg.convert, cfg.sim
    x_tr, _ = dmod.load_dataset(d.name, "train", root=d.root, limit=d.train_limit)
    x_te, y_te = dmod.load_dataset(d.name, "test", root=d.root, limit=d.test_limit)
    label = dmod.dataset_label(d.name, root=d.root)
    log(f"[{cfg.name}] data: {label}, {len(x_tr)} train / {len(x_te)} test samples")
    stage("data")

    model, model_info = build_model(cfg, progress=progress, log=log)
    ann_acc = float(tr.evaluate(model, x_te, y_te))
    log(f"[{cfg.name}] ANN {cfg.model.name} ({model_info['source']}): test accuracy {100 * ann_acc:.2f}%")
    stage("model")

    net = snn.convert(model, x_tr[:c.calibration_samples], method=c.method, percentile=c.percentile,
                      channelwise=c.channelwise, reset=c.reset, v_init=c.v_init,
                      max_calibration=c.calibration_samples)
    stage("convert")

    res = snn.simulate(net, x_te, timesteps=s.timesteps, backend=s.backend, encoding=s.encoding,
                       batch_size=s.batch_size, device=s.device, precision=s.precision, seed=cfg.seed,
                       record="steps", progress=progress, **s.options)
    acc = res.accuracy(y_te)
    log(f"[{cfg.name}] SNN {s.backend}, T={s.timesteps}: test accuracy {100 * acc[-1]:.2f}% "
        f"(simulated in {res.wall_time_s:.1f} s)")
    stage("simulate")

    energy = None
    if cfg.energy.enabled:
        e = cfg.energy
        energy = snn.energy_report(net, res, hardware=e.hardware, x=x_te, labels=y_te, profiles_file=e.profiles_file,
                                   grid_g_per_kwh=e.grid_g_per_kwh, pue=e.pue, name=cfg.name)
        stage("energy")

    spikes = {k: v.reshape(v.shape[0], -1).sum(axis=1) / res.n_samples for k, v in res.step_sums.items()}
    data = RunData(accuracy=acc, ann_accuracy=ann_acc, spikes=spikes,
                   neurons={k: int(np.prod(net.graph.shapes[k])) for k in spikes},
                   energy=energy.to_dict() if energy else None, training=model_info["metrics"],
                   environment=environment(s.device), n_samples=res.n_samples)
    summary = {
        "experiment": cfg.name, "config_hash": h, "description": cfg.description, "started": started,
        "dataset": d.name, "dataset_label": label, "model": cfg.model.name, "model_source": model_info["source"],
        "backend": s.backend, "encoding": s.encoding, "timesteps": s.timesteps, "method": c.method,
        "percentile": c.percentile if c.method == "percentile" else 100.0, "n_test": res.n_samples,
        "ann_accuracy": ann_acc, "snn_accuracy": float(acc[-1]), "accuracy_gap": float(ann_acc - acc[-1]),
        "accuracy_at": {str(t): float(acc[t - 1]) for t in curve_points(s.timesteps)},
        "firing_rates": data.firing_rates(),
        "energy": {p: {k: v.get(k) for k in ("ann_j", "snn_j", "ratio", "break_even_rate")}
                   for p, v in energy.energy.items()} if energy else None,
        "sweep_point": dict(sweep_point or {}), "timings_s": timings,
    }

    with new_run(root, cfg.name, h) as run:
        atomic_write_text(run.path / "config.yaml", f"# config hash: {h}\n" + to_yaml(cfg))
        write_results(run.path / "results.h5", data)
        if cfg.output.save_network:
            net.save(run.path / "network.h5")
        if energy:
            energy.to_json(run.path / "energy.json")
        if cfg.output.report:
            from snn.report import build_report

            if energy:
                energy.to_html(run.path / "energy.html")
            atomic_write_text(run.path / "summary.json", json.dumps(summary, indent=2))
            build_report(run.path, complete=False)
            stage("report")
        timings["total"] = round(time.perf_counter() - t_start, 3)
        atomic_write_text(run.path / "summary.json", json.dumps(summary, indent=2))
    log(f"[{cfg.name}] run complete in {timings['total']:.1f} s: {run.final}")
    return read_run(run.final)
