"""Run one experiment: dataset -> model -> train or load -> convert -> simulate -> energy -> results.

:func:`run_experiment` runs the pipeline in one pass. Everything a config can get wrong
is caught when it is validated (:mod:`snn.config`), before any data is loaded; each data
split is then loaded once (:func:`load_data`) and handed down, the model is built once
(trained models are cached under one key, :func:`snn.train.cache_key`), everything is
computed in memory, and the run directory is written from memory: every file once,
atomically, into the temporary directory that :func:`snn.results.new_run` renames into
place at the end. The report is rendered from the in-memory run (:func:`snn.report.write_report`).

One simulation of ``T`` steps gives the accuracy after every step ``t <= T`` (the
network is causal), so the accuracy-vs-timesteps curve costs one run; likewise the energy
report prices the spikes of the first ``t`` steps for every ``t`` (its ``per_step``), which
gives the energy-vs-accuracy curve.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from snn.config import ExperimentConfig, config_hash, load_config, to_dict, to_yaml, user_class
from snn.energy.totals import Totals
from snn.errors import ConfigError
from snn.results import Run, RunData, clean_partials, environment, experiment_dir, new_run, write_results
from snn.util import atomic_write_text

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data
@dataclasses.dataclass
class Data:
    """The data of a run, each split loaded once.

    ``x_train, y_train``: the first ``data.train_limit`` training samples (training and
    calibration). ``x_test_split, y_test_split``: the test split as loaded: all of it when
    a zoo model is trained here (it validates on the whole split, which is part of its cache
    key), else the first ``data.test_limit`` samples. ``x_test, y_test``: the run's test
    samples (evaluation and simulation), the first ``test_limit`` of the split.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test_split: np.ndarray
    y_test_split: np.ndarray
    label: str
    test_limit: int | None = None

    @property
    def x_test(self) -> np.ndarray:
        return self.x_test_split[:self.test_limit]

    @property
    def y_test(self) -> np.ndarray:
        return self.y_test_split[:self.test_limit]


def _trains_zoo_model(cfg: ExperimentConfig) -> bool:
    m = cfg.model
    return not m.pretrained and not m.checkpoint and ":" not in m.name


def load_data(cfg: ExperimentConfig) -> Data:
    """Load the splits ``cfg`` needs, once each (see :class:`Data`)."""
    from snn import data as dmod

    d = cfg.data
    x_tr, y_tr = dmod.load_dataset(d.name, "train", root=d.root, limit=d.train_limit)
    x_te, y_te = dmod.load_dataset(d.name, "test", root=d.root,
                                   limit=None if _trains_zoo_model(cfg) else d.test_limit)
    return Data(x_tr, y_tr, x_te, y_te, dmod.dataset_label(d.name, root=d.root), d.test_limit)


# --------------------------------------------------------------------------- model
def build_model(cfg: ExperimentConfig, progress: bool = True, log: Log = _stderr,
                data: Data | None = None) -> tuple[Any, dict[str, Any]]:
    """The trained ANN (eval mode) and how it was obtained: ``{"source": ..., "metrics": [...]}``.

    The model is built once. Weights come from ``model.checkpoint``, ``model.pretrained``
    or training: zoo models through :func:`snn.train.train_cached` (cached by the hash of
    everything that affects them; concurrent runs needing the same model wait for one
    another), a user's ``module:Class`` trained directly. ``data``: the run's data
    (:func:`load_data`), loaded here when needed and not given.
    """
    import torch

    from snn import data as dmod
    from snn import train as tr
    from snn import zoo

    m, t, d = cfg.model, cfg.train, cfg.data
    qcfs = t.activation == "qcfs"
    if m.pretrained and not qcfs:
        log(f"[{cfg.name}] loading the pretrained {m.name} weights")
        return zoo.load_pretrained(m.name, root=d.root).eval(), {"source": f"pretrained {m.name}", "metrics": []}
    train_cfg = {"epochs": t.epochs, "lr": t.lr, "batch_size": t.batch_size, "optimizer": t.optimizer,
                 "schedule": t.schedule, "weight_decay": t.weight_decay, "device": t.device, "seed": cfg.seed,
                 "augment": t.augment}
    if qcfs:  # conversion-aware training (fine-tuning with model.pretrained)
        train_cfg.update(activation="qcfs", levels=t.levels, pretrained=m.pretrained)
    if _trains_zoo_model(cfg) or (m.pretrained and qcfs):
        data = data or load_data(cfg)
        cache = Path(t.cache_dir).expanduser() if t.cache_dir else dmod.cache_dir() / "models"
        model, info = tr.train_cached(m.name, m.kwargs, d.name, {**train_cfg, "limit": d.train_limit}, cache,
                                      root=d.root, progress=progress, dataset_label=data.label,
                                      data=(data.x_train, data.y_train, data.x_test_split, data.y_test_split))
        log(f"[{cfg.name}] {m.name}: " + (f"trained weights loaded from the cache ({info['path']})" if info["cached"]
                                          else f"trained in {info['train_seconds']:.1f} s, cached in {info['path']}"))
        return model.eval(), {"source": "trained",  # cached or not: the same weights, the same summary
                              "metrics": info.get("metrics") or [], "checkpoint": info["path"]}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if ":" in m.name:
            try:
                model = user_class(m.name)(**m.kwargs)
            except TypeError as e:
                raise ConfigError(f"model.kwargs: {m.name} rejected them ({e})") from None
        else:
            ds = dmod.info(d.name)
            model = zoo.create_model(m.name, **{**zoo.dataset_kwargs(m.name, ds.shape, ds.num_classes), **m.kwargs})
    if m.checkpoint:
        if qcfs:  # a checkpoint of a QCFS model: make the activations QCFS, then load the thresholds too
            model = zoo.qcfs(model, t.levels)
        tr.load_checkpoint(model, m.checkpoint)
        return model.eval(), {"source": f"checkpoint {m.checkpoint}", "metrics": []}
    data = data or load_data(cfg)
    log(f"[{cfg.name}] training {m.name} for {t.epochs} epochs (a user model: not cached)")
    model = tr.prepare_model(model, tr.resolve_train_config(train_cfg), data.x_train)
    metrics = tr.train(model, data.x_train, data.y_train, **{k: v for k, v in train_cfg.items()
                                                             if k not in ("activation", "levels", "pretrained")},
                       progress=progress)
    return model.to("cpu").eval(), {"source": "trained", "metrics": metrics}


# --------------------------------------------------------------------------- the ANN in the run folder
MODEL_FILE = "model.safetensors"
"""The run's ANN: its state dict (safetensors), with :func:`model_spec` in the header's
``snn_meta`` (also in ``config.yaml``), so it can be rebuilt without the run's cache."""


def model_spec(cfg: ExperimentConfig) -> dict[str, Any]:
    """What rebuilds the run's ANN around its state dict: ``{"model", "kwargs", "dataset",
    "activation", "levels"}``: ``model`` a zoo name or ``module:Class``, built with ``kwargs``
    (for zoo models the arguments the dataset fills in included), its ReLUs swapped for QCFS
    of ``levels`` levels when ``activation`` is ``qcfs`` (:func:`snn.zoo.qcfs`)."""
    from snn import data as dmod
    from snn import zoo

    m, t = cfg.model, cfg.train
    if ":" in m.name:
        kwargs = dict(m.kwargs)
    elif m.pretrained and t.activation != "qcfs":
        kwargs = {}  # snn.zoo.load_pretrained builds the zoo's defaults
    else:
        ds = dmod.info(cfg.data.name)
        kwargs = {**zoo.dataset_kwargs(m.name, ds.shape, ds.num_classes), **m.kwargs}
    return {"model": m.name, "kwargs": kwargs, "dataset": cfg.data.name, "activation": t.activation,
            "levels": t.levels}


def load_run_model(run_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """The ANN a run saved (``<run_dir>/model.safetensors``), rebuilt from the spec in its
    header (:func:`model_spec`) and loaded safely, in eval mode; returns (model, spec)."""
    from snn import train as tr
    from snn import zoo
    from snn.errors import SnnError

    path = Path(run_dir) / MODEL_FILE
    if not path.is_file():
        raise SnnError(f"{run_dir} holds no {MODEL_FILE} (runs written before it was saved: convert their "
                       "checkpoint with --arch)")
    spec = tr._read_checkpoint(path)[1]
    if not {"model", "kwargs", "activation", "levels"} <= set(spec):
        raise SnnError(f"{path}: its header holds no model spec (snn_meta); not written by `snn run`")
    if ":" in spec["model"]:
        try:
            model = user_class(spec["model"], (Path(run_dir),))(**spec["kwargs"])
        except ValueError as e:
            raise SnnError(f"{path}: cannot rebuild model {spec['model']}: {e}") from None
    else:
        model = zoo.create_model(spec["model"], **spec["kwargs"])
    if spec["activation"] == "qcfs":
        model = zoo.qcfs(model, spec["levels"])
    tr.load_checkpoint(model, path)
    return model.eval(), spec


def check_model(cfg: ExperimentConfig) -> None:
    """A user's ``module:Class`` model, checked before any data is loaded or any training:
    it runs on two zero samples of the dataset's shape, gives one output per class, and,
    when it is to be trained, traces into layers the converter supports. Each failure is a
    one-line :class:`ConfigError` saying what the model expects and what it was given.
    Zoo models are built for the dataset and need no check."""
    import torch

    from snn import data as dmod
    from snn.errors import SnnError
    from snn.trace import input_mismatch, trace

    m, d = cfg.model, cfg.data
    if ":" not in m.name:
        return
    ds = dmod.info(d.name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        try:
            model = user_class(m.name)(**m.kwargs).eval()
        except TypeError as e:
            raise ConfigError(f"model.kwargs: {m.name} rejected them ({e})") from None
    x = torch.zeros((2, *ds.shape))
    try:
        with torch.no_grad():
            y = model(x)
    except Exception as e:  # the user's forward: any error means it does not fit the data
        raise ConfigError(f"model.name: {input_mismatch(model, tuple(ds.shape), e, f'dataset {d.name}')}") from None
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != (2, ds.num_classes):
        got = f"outputs of shape {tuple(y.shape[1:])}" if isinstance(y, torch.Tensor) else f"a {type(y).__name__}"
        raise ConfigError(f"model.name: {m.name} gives {got} per sample; dataset {d.name} has {ds.num_classes} "
                          "classes (one output per class expected)")
    if not m.checkpoint and not m.pretrained:
        try:
            trace(model, x)
        except SnnError as e:
            raise ConfigError(f"model.name: {m.name} cannot be converted, so it is not trained: {e}") from None


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


SUMMARY_ENERGY = ("ann_dynamic_j", "ann_total_j", "snn_dynamic_j", "snn_total_j", "snn_latency_s", "ratio_dynamic",
                  "ratio_total", "basis", "batch_size", "break_even_rate")
OP_KEYS = ("synops", "input_macs", "current_macs", "neuron_updates", "macs_dense", "op_ratio")


def op_counts(totals: Totals) -> dict[str, Any]:
    """The headline operation counts of an energy report's ``totals``, per inference.

    ``synops`` (spikes x fan-out), ``input_macs`` and ``current_macs`` (the SNN's
    multiply-accumulates: the first layer on analog input, layers fed by currents),
    ``neuron_updates`` (every neuron at every step), ``macs_dense`` (the ANN's MACs), and

        op_ratio = (synops + input_macs + current_macs) / macs_dense

    the SNN's synaptic operations per ANN multiply-accumulate (below 1: the SNN does fewer
    synaptic operations than the ANN). Neuron updates are left out of it, as the ANN's
    activations are left out of ``macs_dense``; None when ``macs_dense`` is 0 (no ANN graph).
    """
    ops = {k: getattr(totals, k) for k in OP_KEYS[:-1]}
    snn_ops = ops["synops"] + ops["input_macs"] + ops["current_macs"]
    ops["op_ratio"] = snn_ops / ops["macs_dense"] if ops["macs_dense"] else None
    return ops


def _run(cfg: ExperimentConfig, results_dir: str | Path | None, progress: bool, log: Log,
         sweep_point: Mapping[str, Any] | None) -> Run:
    import snn
    from snn import train as tr

    h = config_hash(cfg)
    root = Path(results_dir if results_dir is not None else cfg.output.dir)
    experiment_dir(root, cfg.name)  # where the run will go: checked before any work
    clean_partials(root, cfg.name)  # folders of runs killed earlier on this host
    check_model(cfg)  # a user's model fits the data and converts: checked before data loading and training
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t_start = t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def stage(name: str) -> None:
        nonlocal t0
        timings[name] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()

    d, c, s = cfg.data, cfg.convert, cfg.sim
    data = load_data(cfg)
    x_te, y_te = data.x_test, data.y_test
    log(f"[{cfg.name}] data: {data.label}, {len(data.x_train)} train / {len(x_te)} test samples")
    stage("data")

    model, model_info = build_model(cfg, progress=progress, log=log, data=data)
    ann_acc = float(tr.evaluate(model, x_te, y_te))
    log(f"[{cfg.name}] ANN {cfg.model.name} ({model_info['source']}): test accuracy {100 * ann_acc:.2f}%")
    stage("model")

    net = snn.convert(model, data.x_train[:c.calibration_samples], method=c.method, percentile=c.percentile,
                      channelwise=c.channelwise, reset=c.reset, v_init=c.v_init,
                      max_calibration=c.calibration_samples, timesteps=c.timesteps, calibrate=c.calibrate,
                      calibrate_samples=c.calibrate_samples, readout_delay=c.readout_delay)
    stage("convert")

    from snn.backends import get_backend

    backend = get_backend(s.backend)
    if hasattr(backend, "prepare") and s.cluster != "ray":  # compiled once per environment, timed apart
        backend.prepare(device=s.device, **s.options)
    stage("build")

    res = snn.simulate(net, x_te, timesteps=s.timesteps, backend=s.backend, encoding=s.encoding,
                       batch_size=s.batch_size, device=s.device, precision=s.precision, seed=cfg.seed,
                       record="steps", progress=progress, cluster=s.cluster,
                       address=s.address, workers=s.workers, ray_logs=str(root / cfg.name / "ray-logs"),
                       **s.options)
    acc = res.accuracy(y_te)
    log(f"[{cfg.name}] SNN {s.backend}, T={s.timesteps}: test accuracy {100 * acc[-1]:.2f}% "
        f"(simulated in {res.wall_time_s:.2f} s)")
    stage("simulate")

    energy = None
    if cfg.energy.enabled:
        e = cfg.energy
        log(f"[{cfg.name}] energy: counting operations and pricing on {', '.join(e.hardware)}")
        energy = snn.energy_report(net, res, hardware=e.hardware, x=x_te, labels=y_te, profiles_file=e.profiles_file,
                                   batch_size=e.batch_size, grid_g_per_kwh=e.grid_g_per_kwh, pue=e.pue, name=cfg.name)
        stage("energy")

    spikes = {k: v.reshape(v.shape[0], -1).sum(axis=1) / res.n_samples for k, v in res.step_sums.items()}
    run_data = RunData(accuracy=acc, ann_accuracy=ann_acc, spikes=spikes,
                       neurons={k: int(np.prod(net.graph.shapes[k])) for k in spikes},
                       energy=energy.to_dict() if energy else None, training=model_info["metrics"],
                       environment=environment(s.device), n_samples=res.n_samples)
    ops = op_counts(energy.totals) if energy else dict.fromkeys(OP_KEYS)  # None without energy
    summary = {
        "experiment": cfg.name, "config_hash": h, "description": cfg.description, "started": started,
        "dataset": d.name, "dataset_label": data.label, "model": cfg.model.name, "model_source": model_info["source"],
        "backend": s.backend, "encoding": s.encoding, "timesteps": s.timesteps, "method": net.meta["method"],
        "percentile": net.meta["percentile"], "n_test": res.n_samples,
        "conversion": {k: net.meta[k] for k in ("timesteps", "choices", "auto")},
        "ann_accuracy": ann_acc, "snn_accuracy": float(acc[-1]), "accuracy_gap": float(ann_acc - acc[-1]),
        "accuracy_at": {str(t): float(acc[t - 1]) for t in curve_points(s.timesteps)},
        "firing_rates": run_data.firing_rates(),
        **ops,
        "energy": {p: {k: v.get(k) for k in SUMMARY_ENERGY} for p, v in energy.energy.items()} if energy else None,
        "model_file": MODEL_FILE, "sweep_point": dict(sweep_point or {}), "timings_s": timings,
    }

    with new_run(root, cfg.name, h) as rd:
        atomic_write_text(rd.path / "config.yaml", f"# config hash: {h}\n" + to_yaml(cfg))
        write_results(rd.path / "results.h5", run_data)
        tr.save_checkpoint(model, rd.path / MODEL_FILE, meta=model_spec(cfg))
        if cfg.output.save_network:
            net.save(rd.path / "network.h5")
        if energy:
            energy.to_json(rd.path / "energy.json")
        run = Run(path=rd.path, config=to_dict(cfg), summary=summary, data=run_data)
        figures = None
        if cfg.output.report:
            from snn.report import report_figures

            figures = report_figures(run)
            stage("report")
        timings["total"] = round(time.perf_counter() - t_start, 3)
        if figures is not None:  # the text, after the total it shows (milliseconds)
            from snn.report import write_report

            write_report(run, figures)
        atomic_write_text(rd.path / "summary.json", json.dumps(summary, indent=2))
    log(f"[{cfg.name}] run complete in {timings['total']:.1f} s ("
        + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items() if k != "total") + f"): {rd.final}")
    return dataclasses.replace(run, path=rd.final)
