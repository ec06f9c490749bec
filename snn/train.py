"""ANN training: seeded mini-batch training with per-epoch metrics and a progress bar,
accuracy, safe checkpoints, and a cache keyed by everything that affects the weights.

Training minimises the mean cross-entropy ``-log softmax(f(x))[y]`` over shuffled
mini-batches (Adam, AdamW or SGD with momentum 0.9), with the learning rate per step
following ``schedule``: ``"constant"``, ``"cosine"`` (``lr * (1 + cos(pi t / T)) / 2``
over all ``T`` steps) or ``"onecycle"`` (Smith 2018: cosine warm-up from ``lr / 25`` to
``lr`` over the first 30 % of steps, then cosine annealing to ``lr / 2.5e5``). The seed
fixes the shuffling and any random layer (dropout) inside a private RNG scope: the same
model, data and seed give the same weights, and the caller's global RNG state is left
untouched.

Checkpoints hold a state dict only: safetensors where installed (``meta`` as JSON in
its header), else ``torch.save({"state_dict", "meta"})`` read back with
``torch.load(weights_only=True)``, which refuses pickles that carry code. The checkpoints
written here carry a SHA-256 digest of every tensor (:func:`tensor_digest`), checked on
load; a checkpoint without digests (another tool's, or an older snn's) loads unverified.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from snn.errors import SnnError
from snn.util import atomic_path, interactive

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "onecycle")
AUGMENTS = ("none", "flip_crop")
CACHE_VERSION = 1


# --------------------------------------------------------------------------- training
def _tensors(x: Any, y: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    xt = torch.as_tensor(np.asarray(x, np.float32) if not isinstance(x, torch.Tensor) else x).float()
    yt = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).long()
    if xt.ndim < 2 or yt.ndim != 1 or len(xt) != len(yt) or len(xt) == 0:
        raise SnnError(f"{what}: expected x of shape (N, ...) and y of shape (N,) with N > 0, got "
                       f"{tuple(xt.shape)} and {tuple(yt.shape)}")
    if not torch.isfinite(xt).all():
        raise SnnError(f"{what}: x contains NaN or inf")
    return xt, yt


def _check_positive(name: str, value: Any, integer: bool = False, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.number))
    if not ok or isinstance(value, bool) or value < 0 or (value == 0 and not allow_zero):
        kind = "integer" if integer else "number"
        raise SnnError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} {kind}, got {value!r}")


def _optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    raise SnnError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def _scheduler(name: str, opt: torch.optim.Optimizer, lr: float, total: int):
    if name == "constant":
        return None
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total, 1))
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(total, 1), pct_start=0.3)
    raise SnnError(f"unknown learning-rate schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


def flip_crop(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """The standard CIFAR augmentation of a batch ``x`` (B, C, H, W): each image mirrored
    left-right with probability 1/2, then shifted by ``(dy, dx)``, each uniform in
    ``[-pad, pad]``, with zeros filling the border (a random ``H x W`` crop of the image
    zero-padded by ``pad``)."""
    b, c, h, w = x.shape
    flip = torch.rand(b, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = (torch.randint(0, 2 * pad + 1, (b,), generator=generator) for _ in range(2))
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (B, 1, 1, W)
    return padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def train(model: nn.Module, x: Any, y: Any, *, epochs: int, lr: float = 1e-3, batch_size: int = 128,
          seed: int = 0, optimizer: str = "adam", weight_decay: float = 0.0, schedule: str = "constant",
          device: str = "cpu", progress: bool = True, x_val: Any = None, y_val: Any = None,
          augment: str = "none") -> list[dict]:
    """Train ``model`` in place on ``x`` (N, ...) float, ``y`` (N,) class indices.

    ``augment``: ``"none"``, or ``"flip_crop"`` (:func:`flip_crop`, images (N, C, H, W) only),
    drawn from the seeded generator that shuffles.

    Returns one dict per epoch: ``epoch`` (1-based), ``loss`` (mean training cross-entropy),
    ``train_acc`` (accuracy on the training batches as seen during the epoch), ``val_acc``
    (on ``x_val, y_val`` after the epoch, or ``None``), ``lr`` (at the epoch's end),
    ``seconds``. The model is left in eval mode on ``device``.
    """
    _check_positive("epochs", epochs, integer=True, allow_zero=True)
    _check_positive("lr", lr)
    _check_positive("batch_size", batch_size, integer=True)
    _check_positive("weight_decay", weight_decay, allow_zero=True)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise SnnError(f"seed must be an integer, got {seed!r}")
    if augment not in AUGMENTS:
        raise SnnError(f"unknown augmentation {augment!r}; choose one of {', '.join(AUGMENTS)}")
    xt, yt = _tensors(x, y, "training data")
    if augment == "flip_crop" and xt.dim() != 4:
        raise SnnError(f"augment 'flip_crop' needs images (N, C, H, W), got training data of shape {tuple(xt.shape)}")
    val = _tensors(x_val, y_val, "validation data") if x_val is not None else None
    try:
        dev = torch.device(device)
        model.to(dev)
    except (RuntimeError, AssertionError) as e:
        raise SnnError(f"cannot train on device {device!r}: {e}") from e
    steps = (len(xt) + batch_size - 1) // batch_size
    opt = _optimizer(optimizer, model.parameters(), lr, weight_decay)
    sched = _scheduler(schedule, opt, lr, epochs * steps)
    history: list[dict] = []
    from tqdm.auto import tqdm

    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        shuffle = torch.Generator().manual_seed(seed)
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            model.train()
            perm = torch.randperm(len(xt), generator=shuffle)
            loss_sum, correct = 0.0, 0
            bar = tqdm(range(steps), desc=f"epoch {epoch}/{epochs}", disable=not (progress and interactive()),
                       leave=False, unit="batch")  # in a log file: only the line per epoch below
            for s in bar:
                idx = perm[s * batch_size:(s + 1) * batch_size]
                xb = flip_crop(xt[idx], shuffle) if augment == "flip_crop" else xt[idx]
                xb, yb = xb.to(dev, non_blocking=True), yt[idx].to(dev, non_blocking=True)
                out = model(xb)
                loss = F.cross_entropy(out, yb)
                if not torch.isfinite(loss):
                    raise SnnError(f"training diverged (loss {loss.item()}) at epoch {epoch}, batch {s}; "
                                   f"lower the learning rate (lr={lr})")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                loss_sum += loss.item() * len(idx)
                correct += int((out.argmax(1) == yb).sum())
                if s % 20 == 0:
                    bar.set_postfix(loss=f"{loss.item():.3f}")
            bar.close()
            row = {"epoch": epoch, "loss": loss_sum / len(xt), "train_acc": correct / len(xt),
                   "val_acc": evaluate(model, *val) if val is not None else None,
                   "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
            history.append(row)
            if progress:
                val_txt = f", val acc {row['val_acc']:.4f}" if row["val_acc"] is not None else ""
                tqdm.write(f"epoch {epoch}/{epochs}: loss {row['loss']:.4f}, train acc {row['train_acc']:.4f}"
                           f"{val_txt} ({row['seconds']:.1f} s)")
    model.eval()
    return history


def evaluate(model: nn.Module, x: Any, y: Any, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` (put in eval mode) on ``x`` (N, ...), ``y`` (N,)."""
    xt, yt = _tensors(x, y, "evaluation data")
    _check_positive("batch_size", batch_size, integer=True)
    model.eval()
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    correct = 0
    with torch.no_grad():
        for s in range(0, len(xt), batch_size):
            correct += int((model(xt[s:s + batch_size].to(dev)).argmax(1).cpu() == yt[s:s + batch_size]).sum())
    return correct / len(xt)


# --------------------------------------------------------------------------- checkpoints
def _has_safetensors() -> bool:
    try:
        import safetensors.torch  # noqa: F401
    except ImportError:
        return False
    return True


DIGESTS = "snn_sha256"  # checkpoint metadata: {tensor name: tensor_digest}


def tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 (hex) of a tensor's dtype, shape and bytes."""
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(model: nn.Module, path: str | Path, meta: dict | None = None) -> Path:
    """Write ``model``'s state dict and ``meta`` (JSON-serialisable) to ``path``, atomically:
    safetensors if installed, else ``torch.save`` of ``{"state_dict", "meta"}``; with the
    :func:`tensor_digest` of every tensor, checked when it is loaded."""
    path = Path(path)
    sd = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    try:
        meta_json = json.dumps(meta or {})
    except TypeError as e:
        raise SnnError(f"checkpoint metadata must be JSON-serialisable: {e}") from e
    digests = json.dumps({k: tensor_digest(v) for k, v in sd.items()})
    with atomic_path(path) as tmp:
        if _has_safetensors():
            from safetensors.torch import save_file

            save_file(sd, str(tmp), metadata={"snn_meta": meta_json, DIGESTS: digests})
        else:
            torch.save({"state_dict": sd, "meta": meta_json, DIGESTS: digests}, tmp)
    return path


def _verify(path: Path, sd: dict[str, torch.Tensor], digests: Any) -> None:
    """Check the tensors of a checkpoint against the digests stored with them (if any)."""
    if digests is None:
        return  # another tool's (or an older snn's) checkpoint: nothing to check against
    try:
        want = json.loads(digests) if isinstance(digests, str) else None
    except ValueError:
        want = None
    if not isinstance(want, dict) or set(want) != set(sd):
        raise SnnError(f"checkpoint {path} is corrupted: its tensor checksums are damaged or do not list its tensors")
    for k, t in sd.items():
        if tensor_digest(t) != want[k]:
            raise SnnError(f"checkpoint {path} is corrupted: tensor {k!r} fails its checksum (restore or rewrite it)")


def _check_zip(path: Path) -> None:
    """Check the CRC-32 of every member of a ``torch.save`` zip archive (torch does not)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise SnnError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: "
                       f"{' '.join(str(e).split())[:200]})") from None
    if bad is not None:
        raise SnnError(f"checkpoint {path} is corrupted: its member {bad!r} fails its CRC-32 check")


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    if not path.is_file():
        raise SnnError(f"checkpoint {path} does not exist")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(9)
    # safetensors: an 8-byte little-endian header length, then the JSON header ("{"); its first
    # byte can be 0x80 like a pickle's, so it is recognised first
    safetensors = len(head) == 9 and head[8:] == b"{" and int.from_bytes(head[:8], "little") + 8 <= size
    if not safetensors and (head[:2] == b"PK" or head[:1] == b"\x80"):  # torch.save zip archive or legacy pickle
        if head[:2] == b"PK":
            _check_zip(path)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # UnpicklingError for code, RuntimeError/EOFError for damage
            refused = "weights_only" in str(e) or "Unsupported global" in str(e)
            raise SnnError(f"checkpoint {path} " + (
                "refused: it is a pickle that holds more than tensors (code could run when it is "
                "loaded); only state dicts are accepted" if refused else f"is corrupt or unreadable ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''})")) from e
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            meta = obj.get("meta", "{}")
            _verify(path, obj["state_dict"], obj.get(DIGESTS))
            return obj["state_dict"], json.loads(meta) if isinstance(meta, str) else dict(meta)
        if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj, {}
        raise SnnError(f"checkpoint {path} does not hold a state dict")
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open
    except ImportError as e:
        raise SnnError(f"checkpoint {path} is not a torch.save file, and safetensors is not installed "
                       f"to read it as one (pip install safetensors)") from e
    try:
        sd = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
            meta = json.loads(header.get("snn_meta", "{}"))
    except (SafetensorError, OSError, ValueError) as e:
        raise SnnError(f"checkpoint {path} is corrupt or not a checkpoint ({' '.join(str(e).split())})") from e
    if DIGESTS not in header and "snn_meta" in header:
        if len(header) > 1:  # ours, with its checksum entry renamed by damage
            raise SnnError(f"checkpoint {path} is corrupted: its metadata keys {sorted(header)} are damaged")
        warnings.warn(f"checkpoint {path} was written without checksums (by an older snn): its tensors cannot be "
                      "verified; save it again to add them", UserWarning, stacklevel=3)
    _verify(path, sd, header.get(DIGESTS))
    return sd, meta


def load_checkpoint(model: nn.Module, path: str | Path) -> dict:
    """Load the state dict in ``path`` into ``model`` (strictly); return the stored ``meta``.
    A missing, corrupt, unsafe or mismatching checkpoint raises :class:`SnnError`."""
    path = Path(path)
    sd, meta = _read_checkpoint(path)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise SnnError(f"checkpoint {path} does not fit {type(model).__name__}: "
                       f"{detail[:300]}{'...' if len(detail) > 300 else ''}") from e
    return meta


# --------------------------------------------------------------------------- cached training
_TRAIN_KEYS = ("epochs", "lr", "batch_size", "seed", "optimizer", "weight_decay", "schedule", "device")
_EXTRA_KEYS = ("limit", "activation", "levels", "pretrained", "augment")
# limit: number of training samples (the first ones), default all; activation: "relu" or
# "qcfs" (conversion-aware training, :func:`snn.zoo.qcfs`) with ``levels``; pretrained:
# start from the published weights (:func:`snn.zoo.load_pretrained`), i.e. fine-tune.
QCFS_CALIBRATION = 256  # training samples that set the QCFS thresholds' initial values


def resolve_train_config(train_cfg: dict) -> dict:
    """``train_cfg`` with :func:`train`'s defaults filled in; unknown keys raise SnnError."""
    unknown = sorted(set(train_cfg) - set(_TRAIN_KEYS) - set(_EXTRA_KEYS))
    if unknown:
        raise SnnError(f"unknown training setting(s) {', '.join(unknown)}; "
                       f"valid: {', '.join(_TRAIN_KEYS + _EXTRA_KEYS)}")
    if "epochs" not in train_cfg:
        raise SnnError("the training settings need 'epochs'")
    params = inspect.signature(train).parameters
    cfg = {k: params[k].default for k in _TRAIN_KEYS if params[k].default is not inspect.Parameter.empty}
    cfg.update({"limit": None}, **train_cfg)
    from snn.zoo import ACTIVATIONS

    if cfg.get("activation", "relu") not in ACTIVATIONS:
        raise SnnError(f"unknown activation {cfg['activation']!r}; valid: {', '.join(ACTIVATIONS)}")
    if cfg.get("activation", "relu") == "relu":  # the plain case keeps the cache keys it always had
        cfg.pop("activation", None)
        cfg.pop("levels", None)
    else:
        cfg["levels"] = cfg.get("levels", 8)
        _check_positive("levels", cfg["levels"], integer=True)
    if not cfg.get("pretrained"):
        cfg.pop("pretrained", None)
    if cfg.get("augment", "none") == "none":  # as for relu: the keys of unaugmented training stay as they were
        cfg.pop("augment", None)
    elif cfg["augment"] not in AUGMENTS:
        raise SnnError(f"unknown augmentation {cfg['augment']!r}; valid: {', '.join(AUGMENTS)}")
    return cfg


def prepare_model(model: nn.Module, cfg: dict, x: Any, model_name: str | None = None,
                  root: str | Path | None = None) -> nn.Module:
    """Apply what a resolved training config (:func:`resolve_train_config`) says about the
    model before training: the published weights (``pretrained``, zoo ``model_name``), then
    QCFS activations (``activation: qcfs``, ``levels``) whose thresholds start from the first
    :data:`QCFS_CALIBRATION` training samples ``x``."""
    from snn import zoo

    if cfg.get("pretrained"):
        if model_name is None:
            raise SnnError("pretrained weights exist for zoo models only")
        model.load_state_dict(zoo.load_pretrained(model_name, root=root).state_dict())
    if cfg.get("activation") == "qcfs":
        xt = torch.as_tensor(np.asarray(x[:QCFS_CALIBRATION], np.float32))
        model = zoo.qcfs(model, cfg["levels"], calibration=xt)
    return model


def cache_key(model_name: str, model_kwargs: dict, dataset: str, dataset_label: str, n_train: int,
              n_val: int, train_cfg: dict) -> str:
    """sha256 (first 16 hex digits) of everything that affects trained weights."""
    blob = json.dumps({"v": CACHE_VERSION, "model": model_name, "model_kwargs": model_kwargs, "dataset": dataset,
                       "data": dataset_label, "n_train": n_train, "n_val": n_val, "train": train_cfg,
                       "torch": torch.__version__}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_cached(model_name: str, model_kwargs: dict | None, dataset: str, train_cfg: dict,
                 cache_dir: str | Path, root: str | Path | None = None, progress: bool = True, *,
                 data: tuple[Any, Any, Any, Any] | None = None,
                 dataset_label: str | None = None) -> tuple[nn.Module, dict]:
    """Train zoo model ``model_name`` on ``dataset``'s train split, or load the checkpoint a
    previous identical run left in ``cache_dir``.

    Model arguments the dataset determines (input channels and size, classes) are filled in
    when not given (:func:`snn.zoo.dataset_kwargs`). The model is built once, under the
    training seed. The test split serves as validation data (accuracy after each epoch; it
    never steers training). ``data``: ``(x_train, y_train, x_test, y_test)`` already loaded
    (the first ``train_cfg["limit"]`` training samples and the whole test split) and
    ``dataset_label`` (:func:`snn.data.dataset_label`), so a caller that holds them does not
    load them again; by default they are loaded from ``root``. The checkpoint is named by
    :func:`cache_key`, and concurrent calls for the same key wait for one another (a lock
    file beside it). Returns ``(model in eval mode, info)``, ``info`` holding ``key``,
    ``path``, ``cached`` (True when loaded), ``metrics`` (per epoch), ``train_seconds``,
    ``model_kwargs`` (resolved), ``n_train``, ``test_acc`` and ``dataset_label``.
    """
    from snn import data as dmod
    from snn import zoo
    from snn.util import file_lock

    cfg = resolve_train_config(dict(train_cfg))
    ds = dmod.info(dataset)
    kwargs = {**zoo.dataset_kwargs(model_name, ds.shape, ds.num_classes), **(model_kwargs or {})}
    if data is None:
        data = (*dmod.load_dataset(dataset, "train", root=root, limit=cfg["limit"]),
                *dmod.load_dataset(dataset, "test", root=root))
    x, y, xv, yv = data
    label = dataset_label if dataset_label is not None else dmod.dataset_label(dataset, root)
    key = cache_key(model_name, kwargs, dataset, label, len(x), len(xv), cfg)
    path = Path(cache_dir) / f"{model_name}-{dataset}-{key}.ckpt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["seed"])
        model = prepare_model(zoo.create_model(model_name, **kwargs), cfg, x, model_name, root)
    base = {"key": key, "path": str(path), "model": model_name, "model_kwargs": kwargs, "dataset": dataset,
            "dataset_label": label, "n_train": len(x), "train_cfg": cfg}
    with file_lock(Path(cache_dir) / f".lock-{key}"):
        if path.is_file():
            try:
                meta = load_checkpoint(model, path)
                model.eval()
                return model, {**base, **{k: meta.get(k) for k in ("metrics", "train_seconds", "test_acc")},
                               "cached": True}
            except SnnError as e:
                warnings.warn(f"ignoring unreadable cached checkpoint, retraining: {e}", stacklevel=2)
        t0 = time.perf_counter()
        train_args = {k: cfg[k] for k in _TRAIN_KEYS}
        metrics = train(model, x, y, **train_args, progress=progress, x_val=xv, y_val=yv,
                        augment=cfg.get("augment", "none"))
        seconds = time.perf_counter() - t0
        model.to("cpu").eval()
        test_acc = metrics[-1]["val_acc"] if metrics else evaluate(model, xv, yv)
        info = {**base, "metrics": metrics, "train_seconds": seconds, "test_acc": test_acc}
        save_checkpoint(model, path, {k: info[k] for k in ("key", "model", "model_kwargs", "dataset",
                                                            "dataset_label", "n_train", "train_cfg", "metrics",
                                                            "train_seconds", "test_acc")})
    return model, {**info, "cached": False}
