"""Experiment configuration: a pydantic schema read from YAML, ``--set`` overrides, sweeps.

A config has the sections ``data``, ``model``, ``train``, ``convert``, ``sim``,
``energy``, ``output`` and, for a grid of runs, ``sweep`` (see ``experiments/*.yaml``)::

    name: quickstart
    seed: 0
    data:    {name: digits}
    model:   {name: mlp, kwargs: {hidden: [128, 64]}}
    train:   {epochs: 30, lr: 0.003}
    convert: {method: percentile, percentile: 99.99}
    sim:     {backend: snntorch, timesteps: 32}
    sweep:                        # optional: the cartesian product of these lists
      sim.timesteps: [8, 16, 32, 64]
      convert.method: [max, percentile]

Every section rejects unknown keys, and every error names its key path
(``sim.timesteps: must be >= 1 (got -4)``). ``--set key.path=value`` overrides are parsed
as YAML scalars/lists and validated the same way. Only the ``sweep`` section holds lists
to sweep over: a list elsewhere (``energy.hardware``) is an ordinary value.

The config hash (:func:`config_hash`) is the SHA-256 of the resolved config minus the
fields that cannot change a result (``description``, ``output``, ``sweep``, ``threads``,
``data.root``, ``train.cache_dir``, ``sim.cluster``/``address``/``workers``);
it names the run directory and is how a sweep recognises runs that already finished.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Collection, Literal, Mapping, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from snn.errors import ConfigError, SnnError

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
HASH_EXCLUDE: dict[str, Any] = {"description": True, "output": True, "sweep": True, "threads": True,
                                "data": {"root"}, "train": {"cache_dir"}, "sim": {"cluster", "address", "workers"}}


def _one_of(v: str, valid: Collection[str], what: str) -> str:
    """``v`` if it is a key of the registry ``valid``, else a ValueError that lists them."""
    if v not in valid:
        raise ValueError(f"unknown {what} {v!r}; valid: {', '.join(valid)}")
    return v


def _package_check(check: Any, *args: Any, **kwargs: Any) -> Any:
    """``check(*args, **kwargs)`` (a rule of the package: an IR node's constructor, the
    profiles loader) with the :class:`SnnError` it raises turned into the ValueError of a
    schema error, so a config is held to the very rule the package enforces later, in the
    same words, before any data is loaded."""
    try:
        return check(*args, **kwargs)
    except SnnError as e:
        raise ValueError(str(e)) from None


def check_device(v: str) -> str:
    """``v`` if it names a device of this machine (cpu, or an existing CUDA device); else ValueError."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", v):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {v!r}")
    if v != "cpu":  # named before any data is loaded or any model trained
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"device {v!r}: CUDA is not available on this machine (torch {torch.__version__}"
                             f"{'' if torch.version.cuda else ', a CPU-only build'}); use 'cpu'")
        index = int(v.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {v!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return v


def _module_folder(module: str, search: Sequence[str | Path]) -> Path | None:
    """The first of the working directory and ``search`` that holds the top-level package or
    module of ``module`` (``mymodels.py`` or ``mymodels/__init__.py``), or None."""
    top = module.split(".")[0]
    for folder in (Path.cwd(), *map(Path, search)):
        if (folder / f"{top}.py").is_file() or (folder / top / "__init__.py").is_file():
            return folder.resolve()
    return None


def user_class(path: str, search: Sequence[str | Path] = ()) -> type:
    """``package.module:Class`` -> the class; ValueError (a schema error) if it cannot be imported.

    The module is imported from ``sys.path``, else from the working directory or a folder
    of ``search`` (the config file's folder), as Python does for a script's own folder:
    the folder that holds it is appended to ``sys.path``, so worker processes started
    from this one find it too. No ``PYTHONPATH=.`` needed."""
    import importlib
    import sys

    module, _, name = path.partition(":")
    try:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            folder = _module_folder(module, search)
            if folder is None or e.name != module.split(".")[0]:
                raise
            if str(folder) not in sys.path:
                sys.path.append(str(folder))
            mod = importlib.import_module(module)
    except ImportError as e:
        where = ", ".join(dict.fromkeys(str(Path(f).resolve()) for f in (Path.cwd(), *search)))
        raise ValueError(f"cannot import module {module!r} ({e}; looked on sys.path and in {where})") from None
    if not hasattr(mod, name):
        raise ValueError(f"module {module!r} has no attribute {name!r}")
    return getattr(mod, name)


INT_LIMIT = 2**63 - 1  # every integer setting fits a signed 64-bit integer (seeds, counts)
MAX_SWEEP_RUNS = 10_000  # a larger grid is almost certainly a typo; split it into several sweeps


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="after")
    @classmethod
    def _finite(cls, v: Any) -> Any:
        """No setting is an infinite or NaN float or an integer beyond 64 bits (out of range)."""
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"must be a finite number, got {v}")
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > INT_LIMIT:
            raise ValueError(f"out of range: at most {INT_LIMIT} (a signed 64-bit integer), got {v:.3g}")
        return v


class DataConfig(_Section):
    """Dataset (see :mod:`snn.data`): ``name``; ``root`` overrides ``$SNN_DATA``;
    ``train_limit``/``test_limit`` use the first N samples of each split (training and
    calibration / evaluation and simulation)."""

    name: str = Field(default="digits",
        description="dataset (its files under data.root; digits ships with scikit-learn)")
    root: str | None = Field(default=None,
        description="folder holding the datasets; null: $SNN_DATA, else ~/.cache/snn/data")
    train_limit: int | None = Field(default=None, ge=1,
        description="use the first N training samples (training and calibration); null: all")
    test_limit: int | None = Field(default=None, ge=1,
        description="use the first N test samples (evaluation and simulation); null: all")

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        from snn.data import DATASETS

        return _one_of(v, DATASETS, "dataset")


class ModelConfig(_Section):
    """The ANN: a zoo name (:data:`snn.zoo.MODELS`) or ``package.module:Class`` of the
    user's own ``nn.Module``, built with ``kwargs``. Its weights come from ``checkpoint``
    (a state dict: ``.safetensors`` or ``torch.save``, loaded with ``weights_only=True``),
    from the zoo's ``pretrained`` weights, or from training (section ``train``)."""

    name: str = Field(default="mlp",
        description=("zoo model, or package.module:Class of your own nn.Module (found in the working directory or the "
                     "config's folder)"))
    kwargs: dict[str, Any] = Field(default_factory=dict,
        description="arguments of the model's constructor (zoo models: those the dataset fills in may be left out)")
    checkpoint: str | None = Field(default=None,
        description=("state dict to load (.safetensors, or torch.save loaded with weights_only=True); null: train or "
                     "pretrained"))
    pretrained: bool = Field(default=False, description="load the zoo's published weights instead of training")

    @field_validator("name")
    @classmethod
    def _known_model(cls, v: str, info: ValidationInfo) -> str:
        if ":" in v:
            if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", v):
                raise ValueError(f"{v!r} is not of the form package.module:Class")
            user_class(v, (info.context or {}).get("search", ()))
            return v
        from snn.zoo import MODELS

        if v not in MODELS:
            raise ValueError(f"unknown model {v!r}; valid: {', '.join(MODELS)} or package.module:Class")
        return v

    @field_validator("kwargs")
    @classmethod
    def _accepted_kwargs(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """The arguments must fit the model's signature (zoo models: the arguments a dataset
        fills in, such as ``num_classes``, may be left out)."""
        import inspect

        name = info.data.get("name")
        if name is None:
            return v
        if ":" in name:
            try:
                inspect.signature(user_class(name, (info.context or {}).get("search", ()))).bind(**v)
            except TypeError as e:
                raise ValueError(f"{name} does not accept them ({e})") from None
            return v
        from snn.zoo import check_arguments

        _package_check(check_arguments, name, v)
        return v

    @model_validator(mode="after")
    def _one_source(self) -> "ModelConfig":
        if self.pretrained and self.checkpoint:
            raise ValueError("give either checkpoint or pretrained: true, not both")
        return self


class TrainConfig(_Section):
    """ANN training (:func:`snn.train.train`) when the weights come from neither a checkpoint
    nor ``pretrained``. Zoo models are cached in ``cache_dir`` (default
    ``$SNN_CACHE/models``, i.e. ``~/.cache/snn/models``) by the hash of everything that
    affects their weights, so re-running an experiment does not retrain; a user's own
    ``module:Class`` is trained every time. The training data are ``data.train_limit``
    samples (default: all) of the training split.

    ``activation: qcfs`` trains with quantised clip-floor-shift activations of ``levels``
    levels and trainable thresholds (conversion-aware training, Bu et al. ICLR 2022;
    :func:`snn.zoo.qcfs`); with ``model.pretrained`` it fine-tunes the published weights
    (zoo models with pretrained weights only)."""

    epochs: int = Field(default=10, ge=1, description="training epochs")
    lr: float = Field(default=1e-3, gt=0, description="learning rate")
    batch_size: int = Field(default=128, ge=1, description="training batch size")
    optimizer: Literal["adam", "adamw", "sgd"] = Field(default="adam", description="optimiser")
    schedule: Literal["constant", "cosine", "onecycle"] = Field(default="constant",
        description="learning-rate schedule")
    weight_decay: float = Field(default=0.0, ge=0, description="weight decay (L2)")
    device: str = Field(default="cpu", description="training device: cpu, cuda or cuda:N")
    cache_dir: str | None = Field(default=None,
        description="cache of trained zoo models; null: $SNN_CACHE/models (~/.cache/snn/models)")
    activation: Literal["relu", "qcfs"] = Field(default="relu",
        description="ANN activation: relu, or qcfs (conversion-aware training, Bu et al. 2022)")
    levels: int = Field(default=8, ge=1, description="quantisation levels of the QCFS activation")
    augment: Literal["none", "flip_crop"] = Field(default="none",
        description="training augmentation: none, or flip_crop (random mirror and 4-pixel shift, CIFAR's standard)")

    _device = field_validator("device")(lambda cls, v: check_device(v))


class ConvertConfig(_Section):
    """ANN -> SNN conversion (:func:`snn.conversion.convert`); ``calibration_samples``
    training samples set the activation scales. ``reset`` and ``v_init`` (the initial
    membrane, a fraction of the threshold) are checked by the IR's own rule for IF neurons
    (:class:`snn.ir.IF`: ``0 <= v_init < 1``).

    ``timesteps: T`` tunes the network for ``T`` steps (low-latency conversion): the
    options left unset (null) are then picked for ``T`` (``method: mse``, ``channelwise:
    true``, ``calibrate: bias``), and the run's summary records the choices. Without it,
    ``method`` is ``percentile`` and ``channelwise`` false. ``calibrate: bias`` (Li et al.
    2021's layer-wise bias correction on ``calibrate_samples`` simulated samples),
    ``method: mse`` and ``readout_delay: auto`` need ``timesteps``."""

    method: str | None = Field(default=None,
        description="normalisation method; null: percentile, or mse with convert.timesteps")
    percentile: float = Field(default=99.99, gt=0, le=100,
        description="percentile of the activations that sets each scale (method: percentile), in percent (0, 100]")
    channelwise: bool | None = Field(default=None,
        description="one scale per channel; null: false, or true with convert.timesteps")
    reset: str = Field(default="subtract", description="IF reset after a spike")
    v_init: float = Field(default=0.5, description="initial membrane potential, a fraction of the threshold, in [0, 1)")
    calibration_samples: int = Field(default=2048, ge=1, description="training samples that set the activation scales")
    timesteps: int | None = Field(default=None, ge=1,
        description="tune the conversion for this many steps (low-latency conversion); null: untuned")
    calibrate: str | None = Field(default=None,
        description=("layer-wise calibration on simulated spikes (bias: Li et al. 2021); null: none, or bias with "
                     "convert.timesteps"))
    calibrate_samples: int = Field(default=256, ge=1, description="samples simulated for calibrate: bias")
    readout_delay: int | Literal["auto"] = Field(default=0,
        description="steps before the readout starts integrating, or auto (SpikingJelly's delay-start estimate)")

    @field_validator("percentile")
    @classmethod
    def _in_percent(cls, v: float) -> float:
        from snn.conversion import check_percentile

        _package_check(check_percentile, v)  # the converter's own rule: in percent, 1..100
        return v

    @field_validator("reset")
    @classmethod
    def _known_reset(cls, v: str) -> str:
        from snn.ir import IF

        return _one_of(v, IF.RESETS, "reset")

    @field_validator("v_init")
    @classmethod
    def _if_v_init(cls, v: float) -> float:
        from snn.ir import IF

        _package_check(IF, v_init=v)  # the IR's range for IF neurons: [0, 1) of the threshold
        return v

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str | None) -> str | None:
        from snn.conversion import METHODS

        return v if v is None else _one_of(v, METHODS, "normalisation method")

    @field_validator("calibrate")
    @classmethod
    def _known_calibration(cls, v: str | None) -> str | None:
        from snn.conversion import CALIBRATIONS

        return v if v is None else _one_of(v, CALIBRATIONS, "calibration")

    @field_validator("readout_delay")
    @classmethod
    def _delay(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 0:
            raise ValueError(f"must be an integer >= 0 or 'auto', got {v}")
        return v

    @model_validator(mode="after")
    def _needs_timesteps(self) -> "ConvertConfig":
        needs = [f"{k}: {v}" for k, v in (("method", self.method), ("calibrate", self.calibrate),
                                           ("readout_delay", self.readout_delay)) if v in ("mse", "bias", "auto")]
        if needs and self.timesteps is None:
            raise ValueError(f"{', '.join(needs)} tune the network for a number of steps: set convert.timesteps")
        if self.timesteps is not None and isinstance(self.readout_delay, int) and self.readout_delay >= self.timesteps:
            raise ValueError(f"readout_delay {self.readout_delay} leaves none of the {self.timesteps} steps for the "
                             "readout")
        return self


class SimConfig(_Section):
    """Simulation (:func:`snn.simulate`): one run of ``timesteps`` steps gives the accuracy
    after every step. ``options`` go to the backend (e.g. ``target`` for brian2).
    ``cluster: ray`` shards the samples across a Ray cluster (``address``, else a local
    cluster of ``workers`` CPUs) with results identical to one process (:mod:`snn.shard`)."""

    backend: str = Field(default="snntorch", description="simulator")
    timesteps: int = Field(default=64, ge=1,
        description="simulation steps T (the accuracy is recorded after every step)")
    encoding: str = Field(default="constant", description="input encoding")
    batch_size: int = Field(default=256, ge=1, description="simulation batch size")
    device: str = Field(default="cpu", description="simulation device: cpu, cuda or cuda:N")
    precision: Literal["float32", "float64"] = Field(default="float32",
        description="floating-point precision of the simulation")
    options: dict[str, Any] = Field(default_factory=dict,
        description="backend options, e.g. {target: cython} for brian2")
    cluster: Literal["none", "ray"] = Field(default="none",
        description="ray: shard the samples across a Ray cluster (needs snn[ray])")
    address: str | None = Field(default=None, description="Ray cluster address; null: start a local cluster")
    workers: int | None = Field(default=None, ge=1,
        description="shards / CPUs of the local Ray cluster; null: the cluster's CPUs")

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        from snn.backends import BACKENDS

        return _one_of(v, BACKENDS, "backend")

    @field_validator("cluster")
    @classmethod
    def _cluster_installed(cls, v: str) -> str:
        if v == "ray":  # named before any work, with the extra that brings it
            from snn.shard import require_ray

            _package_check(require_ray, "cluster: ray")
        return v

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, v: str) -> str:
        from snn.encode import ENCODINGS

        return _one_of(v, ENCODINGS, "encoding")

    _device = field_validator("device")(lambda cls, v: check_device(v))

    @model_validator(mode="after")
    def _known_options(self) -> "SimConfig":
        from snn.backends import get_backend

        valid = get_backend(self.backend).OPTIONS
        unknown = sorted(set(self.options) - set(valid))
        if unknown:
            raise ValueError(f"options: unknown option(s) for backend {self.backend!r}: {', '.join(map(str, unknown))}; "
                             f"valid: {', '.join(valid)}")
        return self


class EnergyConfig(_Section):
    """Energy estimate (:func:`snn.energy_report`): the hardware profiles to price the run
    on (names in :data:`snn.energy.PROFILES`, or defined in ``profiles_file``), the batch
    size the network is served at on GPUs and CPUs (``batch_size``, inferences per call;
    event chips run one at a time), and the carbon figures: grid intensity in gCO2e/kWh
    and the data-centre PUE.

    ``profiles_file`` is read and checked here (:func:`snn.energy.load_profiles`: a missing
    or malformed file, a value out of range, a key that no pricing tier uses are errors), and
    every name in ``hardware`` must be a built-in profile or one of the file's."""

    enabled: bool = Field(default=True, description="price the run on the hardware profiles")
    profiles_file: str | None = Field(default=None,
        description="YAML/JSON file of your own hardware profiles (see snn.energy.load_profiles)")
    hardware: list[str] = Field(default_factory=lambda: ["45nm-fp32", "loihi", "gpu-h100"], min_length=1,
        description="hardware profiles to price the run on (`snn hardware` lists them)")
    batch_size: int = Field(default=1, ge=1,
        description="inferences per call on GPUs and CPUs (event chips run one at a time)")
    grid_g_per_kwh: float = Field(default=475.0, gt=0, description="carbon intensity of the electricity, gCO2e per kWh")
    pue: float = Field(default=1.0, ge=1, description="data-centre power usage effectiveness (>= 1)")

    @field_validator("profiles_file")
    @classmethod
    def _valid_profiles_file(cls, v: str | None) -> str | None:
        if v is not None:
            _file_profiles(v)
        return v

    @field_validator("hardware")
    @classmethod
    def _known_profiles(cls, v: list[str], info: ValidationInfo) -> list[str]:
        from snn.energy import PROFILES

        if "profiles_file" not in info.data:  # the file itself is wrong: that error is reported
            return v
        path = info.data["profiles_file"]
        valid = [*PROFILES, *(_file_profiles(path) if path is not None else [])]
        unknown = [h for h in v if h not in valid]
        if unknown:
            raise ValueError(f"unknown hardware profile(s) {', '.join(map(repr, unknown))}; valid: "
                             f"{', '.join(valid)} " + ("(or define them in energy.profiles_file)" if path is None
                                                       else f"(built in, or defined in {path})"))
        return v


def _file_profiles(path: str) -> list[str]:
    """The names of the profiles in a profiles file; ValueError if it is missing or invalid."""
    from snn.energy import load_profiles

    return list(_package_check(load_profiles, path))


class OutputConfig(_Section):
    """What a run writes besides ``results.h5`` and ``summary.json``. ``dir``: the results
    root (runs go to ``<dir>/<name>/<timestamp>-<hash>/``), a folder inside the working
    directory; ``--results DIR`` (``results_dir=``) chooses any other root."""

    dir: str = Field(default="results", description="results root: runs go to <dir>/<name>/<timestamp>-<hash>/")
    report: bool = Field(default=True, description="write report.html")
    save_network: bool = Field(default=True, description="write the converted network as network.h5")

    @field_validator("dir")
    @classmethod
    def _inside_working_dir(cls, v: str) -> str:
        """A config (often someone else's) cannot send results outside the working
        directory; the person running it names another root with ``--results DIR``."""
        if not v.strip() or Path(v).is_absolute() or v.startswith("~") or ".." in Path(v).parts or "\0" in v:
            raise ValueError(f"must be a folder inside the working directory (relative, no '..' or '~'), got {v!r}; "
                             "to write elsewhere, give the results root on the command line: --results DIR")
        return v


class ExperimentConfig(_Section):
    """One experiment: dataset -> model -> train/load -> convert -> simulate -> energy -> report.

    ``threads``: torch CPU threads for the run (``null``: torch's default, one per core).
    Small networks run fastest on one thread: their layers are too small to split, and
    spare threads spin-wait when the cores are shared."""

    name: str = Field(pattern=NAME_RE, max_length=128,
        description="experiment name (required): letters, digits, _ . -")
    description: str = Field(default="", description="free text, shown in the report")
    seed: int = Field(default=0, ge=0, description="seed of training, encoding and sampling")
    threads: int | None = Field(default=None, ge=1,
        description="torch CPU threads; null: torch's default (one per core)")
    data: DataConfig = Field(default_factory=DataConfig, description="dataset")
    model: ModelConfig = Field(default_factory=ModelConfig, description="the ANN")
    train: TrainConfig = Field(default_factory=TrainConfig, description="ANN training")
    convert: ConvertConfig = Field(default_factory=ConvertConfig, description="ANN -> SNN conversion")
    sim: SimConfig = Field(default_factory=SimConfig, description="simulation")
    energy: EnergyConfig = Field(default_factory=EnergyConfig, description="energy estimate")
    output: OutputConfig = Field(default_factory=OutputConfig, description="what a run writes")
    sweep: dict[str, list[Any]] = Field(default_factory=dict,
        description="key.path: [values, ...]: run every combination (snn sweep)")

    @field_validator("sweep")
    @classmethod
    def _sweep_lists(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if key.split(".")[0] in ("sweep", "name", "output"):
                raise ValueError(f"{key!r} cannot be swept")
            if not values:
                raise ValueError(f"{key!r} has an empty list")
        runs = math.prod(len(values) for values in v.values())
        if runs > MAX_SWEEP_RUNS:
            raise ValueError(f"{runs} runs (the product of the list lengths {' x '.join(str(len(x)) for x in v.values())})"
                             f" is more than {MAX_SWEEP_RUNS}; split it into several sweeps")
        return v


# --------------------------------------------------------------------------- errors
def _keys_at(loc: tuple) -> list[str]:
    """The valid keys of the section at ``loc`` (empty if ``loc`` is not a section)."""
    model: Any = ExperimentConfig
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        model = field.annotation if field is not None else None
    return list(getattr(model, "model_fields", {}))


def _format_error(e: ValidationError, source: str) -> str:
    """One line: ``source: key.path: message (got value)`` for each error, joined by '; '."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            valid = _keys_at(err["loc"][:-1])
            msg = "unknown key" + (f" (valid: {', '.join(valid)})" if valid else "")
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] != "value_error" and "input" in err and not isinstance(err["input"], (dict, list)):
            got = repr(err["input"])
            msg += f" (got {got[:80] + '...' if len(got) > 80 else got})"
        parts.append(f"{loc}: {msg}" if loc else msg)
    more = f"; and {len(parts) - MAX_ERRORS} more" if len(parts) > MAX_ERRORS else ""
    return f"{source}: " + "; ".join(parts[:MAX_ERRORS]) + more


MAX_ERRORS = 5  # errors listed in the one line; the rest are counted
MAX_VALUES = 100_000  # keys and values in a config, aliases expanded: more is not a hand-written config
MAX_DEPTH = 64


def _bounded(raw: Any, source: str) -> None:
    """Refuse a config with more than :data:`MAX_VALUES` keys and values or nested deeper than
    :data:`MAX_DEPTH`, counted as they expand (YAML aliases make a small file a huge or
    cyclic structure), before anything walks it in full."""
    budget = MAX_VALUES

    def walk(obj: Any, depth: int) -> None:
        nonlocal budget
        budget -= 1
        if budget < 0 or depth > MAX_DEPTH:
            raise ConfigError(f"{source}: more than {MAX_VALUES} values or nested deeper than {MAX_DEPTH} "
                              "(YAML aliases that expand, or not a config)")
        if isinstance(obj, Mapping):
            for k, v in obj.items():
                walk(k, depth + 1)
                walk(v, depth + 1)
        elif isinstance(obj, (list, tuple, set, frozenset)):
            for v in obj:
                walk(v, depth + 1)

    walk(raw, 0)


def validate(raw: Mapping[str, Any], source: str = "config", search: Sequence[str | Path] = ()) -> ExperimentConfig:
    """Validate a config dict; raise :class:`ConfigError` (one line naming each key path).
    ``search``: folders where a user's ``model.name: module:Class`` may be (see :func:`user_class`)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: a config must be a mapping of sections, got {type(raw).__name__}")
    _bounded(raw, source)
    try:
        cfg = ExperimentConfig.model_validate(dict(raw), context={"search": tuple(search)})
    except ValidationError as e:
        raise ConfigError(_format_error(e, source)) from None
    for key, values in cfg.sweep.items():
        for value in values:  # every swept value must be valid where it goes
            point = apply_overrides(cfg.model_dump(exclude={"sweep"}), {key: value}, source=f"{source}: sweep")
            try:
                ExperimentConfig.model_validate(point)
            except ValidationError as e:
                raise ConfigError(_format_error(e, f"{source}: sweep {key}={value!r}")) from None
    return cfg


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file; missing, unreadable, empty or malformed files raise ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        what = "YAML tag not allowed" if isinstance(e, yaml.constructor.ConstructorError) else "YAML syntax error"
        raise ConfigError(f"{path}: {what}{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e})") from None
    if raw is None:
        raise ConfigError(f"{path}: the config file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got a {type(raw).__name__}")
    return raw


# --------------------------------------------------------------------------- overrides
def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``["sim.timesteps=64", "convert.method=max"]`` -> ``{"sim.timesteps": 64, ...}`` (values as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        try:
            out[key] = yaml.safe_load(text) if text.strip() else ""
        except (yaml.YAMLError, RecursionError):
            shown = text if len(text) <= 80 else text[:80] + "..."
            raise ConfigError(f"--set {key}: cannot parse value {shown!r}") from None
    return out


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any], source: str = "--set") -> dict[str, Any]:
    """A deep copy of ``raw`` with each dotted key path set (``sweep.<key.path>`` sets one sweep list).

    A path through a non-mapping value is an error; an unknown key is left for validation
    to reject, so it is reported with its full path.
    """
    out = copy.deepcopy(dict(raw))
    for path, value in overrides.items():
        parts = path.split(".")
        if parts[0] == "sweep" and len(parts) > 1:
            parts = ["sweep", ".".join(parts[1:])]
        node: Any = out
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part) if isinstance(node, dict) else None
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"{source} {path}: {'.'.join(parts[:i + 1])} is not a section")
            node = nxt
        node[parts[-1]] = value
    return out


# --------------------------------------------------------------------------- entry points
def load_config(config: str | Path | Mapping[str, Any] | ExperimentConfig,
                overrides: Sequence[str] | Mapping[str, Any] = ()) -> ExperimentConfig:
    """A validated config from a YAML path, a dict or a config object, with overrides applied.

    ``overrides``: ``["key.path=value", ...]`` (as on the command line) or a mapping
    ``{"key.path": value}``.
    """
    search: tuple[Path, ...] = ()
    if isinstance(config, ExperimentConfig):
        raw, source = config.model_dump(), "config"
    elif isinstance(config, Mapping):
        raw, source = dict(config), "config"
    elif isinstance(config, (str, Path)):
        raw, source = read_yaml(config), str(config)
        search = (Path(config).resolve().parent,)
    else:
        raise ConfigError(f"a config must be a path, a mapping or an ExperimentConfig, got {type(config).__name__}")
    ov = dict(overrides) if isinstance(overrides, Mapping) else parse_set(overrides)
    if ov:
        raw = apply_overrides(raw, ov)
    return validate(raw, source + (" (with --set)" if ov else ""), search)


def to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """The resolved config as plain data (every default filled in)."""
    return cfg.model_dump(mode="json")


def to_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def config_hash(cfg: ExperimentConfig, length: int = 12) -> str:
    """Hex prefix of the SHA-256 of the canonical JSON of the result-relevant fields."""
    data = cfg.model_dump(mode="json", exclude=HASH_EXCLUDE)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:length]


def expand_sweep(cfg: ExperimentConfig) -> list[tuple[dict[str, Any], ExperimentConfig]]:
    """The runs of a sweep: ``[(point, config), ...]`` over the cartesian product of the
    ``sweep`` lists, in order (first key slowest); a config without ``sweep`` is one run."""
    base = cfg.model_dump(exclude={"sweep"})
    keys = list(cfg.sweep)
    runs = []
    for values in itertools.product(*(cfg.sweep[k] for k in keys)):
        point = dict(zip(keys, values))
        runs.append((point, validate(apply_overrides(base, point), f"sweep point {point}")))
    return runs


# --------------------------------------------------------------------------- self-documentation
def _registry(module: str, name: str) -> Callable[[], list[str]]:
    def names() -> list[str]:
        import importlib

        return list(getattr(importlib.import_module(module), name))
    return names


VALID: dict[str, Callable[[], list[str]]] = {
    "data.name": _registry("snn.data", "DATASETS"),
    "model.name": lambda: [*_registry("snn.zoo", "MODELS")(), "package.module:Class"],
    "convert.method": _registry("snn.conversion", "METHODS"),
    "convert.calibrate": _registry("snn.conversion", "CALIBRATIONS"),
    "convert.reset": lambda: list(__import__("snn.ir", fromlist=["IF"]).IF.RESETS),
    "sim.backend": _registry("snn.backends", "BACKENDS"),
    "sim.encoding": _registry("snn.encode", "ENCODINGS"),
    "energy.hardware": _registry("snn.energy", "PROFILES"),
}
"""Key path -> its valid values, read from the registry that the validator checks against
(``Literal`` fields list theirs from their type)."""


def schema_keys(model: type[BaseModel] = ExperimentConfig, prefix: str = "") -> list[tuple[str, Any, bool]]:
    """Every key of the schema, depth first: ``(key.path, pydantic field, is_section)``."""
    out: list[tuple[str, Any, bool]] = []
    for name, f in model.model_fields.items():
        path = f"{prefix}{name}"
        section = isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)
        out.append((path, f, section))
        if section:
            out += schema_keys(f.annotation, path + ".")
    return out


def valid_values(path: str, field: Any) -> list[str]:
    """The valid values of the key at ``path`` (empty where any value of its type goes)."""
    import typing

    if path in VALID:
        return [str(v) for v in VALID[path]()]
    ann = field.annotation
    args = [ann] if typing.get_origin(ann) is Literal else [a for a in typing.get_args(ann) if a is not type(None)]
    if not args or not all(typing.get_origin(a) is Literal for a in args):
        return []  # e.g. ``int | Literal["auto"]``: its description says it
    return [str(v) for a in args for v in typing.get_args(a)]


def describe_key(path: str, field: Any) -> str:
    """The key's one-line description, with its valid values."""
    valid = valid_values(path, field)
    return (field.description or "") + (f" (one of: {', '.join(valid)})" if valid else "")


def _flow(v: Any) -> str:
    """``v`` as one line of YAML (flow style)."""
    text = yaml.safe_dump(v, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("...").strip()


def describe(cfg: ExperimentConfig | None = None, width: int = 44) -> str:
    """The resolved config ``cfg`` (default: every default, ``name`` left to fill in) as
    YAML, each key followed by a comment with its description and valid values."""
    data = to_dict(cfg if cfg is not None else ExperimentConfig(name="x"))
    if cfg is None:
        data["name"] = None
    lines = []
    for path, f, section in schema_keys():
        parts = path.split(".")
        value: Any = data
        for p in parts:
            value = value[p]
        indent = "  " * (len(parts) - 1)
        if section:
            lines.append(f"{indent}{parts[-1]}:{' ' * max(1, width - len(indent) - len(parts[-1]) - 1)}"
                         f"# {describe_key(path, f)}")
            continue
        text = f"{indent}{parts[-1]}: {_flow(value)}"
        lines.append(f"{text.ljust(width - 1)} # {describe_key(path, f)}")
    return "\n".join(lines) + "\n"


def _rst_to_md(text: str) -> str:
    """A docstring paragraph as one Markdown line (``x`` and :role:`x` -> `x`)."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", " ".join(text.split()))
    return text.replace("``", "`")


def docs_markdown() -> str:
    """``docs/config.md``: every key of the schema with its default and description
    (generated from the schema; ``snn config docs`` writes it, a test keeps it in sync)."""
    defaults = to_dict(ExperimentConfig(name="x"))
    head = ["| key | default | description |", "|---|---|---|"]

    def row(path: str, f: Any, default: str) -> str:
        return f"| `{path}` | {default} | {describe_key(path, f).replace('|', '/')} |"

    top = [row(path, f, "required" if path == "name" else f"`{_flow(defaults[path])}`")
           for path, f, section in schema_keys() if "." not in path and not section]
    out = ["# Experiment config reference", "",
           "Generated from the schema in `snn/config.py` by `snn config docs --out docs/config.md`; "
           "a test keeps it in sync. `snn config show FILE` prints a config resolved with every default, "
           "each key with its description. Unknown keys are errors; override any key on the command line "
           "with `--set key.path=value`.", "", "## Top-level keys", "", *head, *top, ""]
    for path, f, section in schema_keys():
        if section and "." not in path:
            doc = [_rst_to_md(par) for par in re.split(r"\n\s*\n", f.annotation.__doc__ or "") if par.strip()]
            out += [f"## `{path}`: {f.description}", "", "\n\n".join(doc), "", *head]
            out += [row(sub, sf, f"`{_flow(defaults[path][sub.split('.')[-1]])}`")
                    for sub, sf, _ in schema_keys(f.annotation, path + ".")]
            out.append("")
    return "\n".join(out).rstrip() + "\n"
