"""Model zoo: a registry ``name -> factory`` of ANNs that :func:`snn.convert` accepts.

==============  ===========================================  ===================
name            architecture                                 input ``(C, H, W)``
==============  ===========================================  ===================
``mlp``         Flatten, (Linear-ReLU) x len(hidden), Linear   any (``in_shape``)
``lenet5``      (conv5x5-BN-ReLU-maxpool2) x2, FC-ReLU-FC-ReLU-FC   ``(C, s, s)``, s >= 12
``vgg``         small VGG: (conv3x3-BN-ReLU)+ blocks with max-pooling, FC head  ``(3, 32, 32)``
``resnet20..56``  CIFAR ResNets (He et al. 2016), option-A shortcuts  ``(3, 32, 32)``
==============  ===========================================  ===================

The CIFAR ResNets follow ``shared/data/README.md``: conv3x3(3->16)-BN-ReLU; three stages
of ``n`` BasicBlocks (n = 3/5/7/9 for 20/32/44/56) with 16/32/64 channels and strides
1/2/2; a block is ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` with the
parameter-free option-A shortcut (:class:`snn.trace.OptionAShortcut`) where the shape
changes; global average pooling; ``Linear(64 -> classes)`` named ``linear``. The input
normalisation ``(x - mean) / std`` is the model's first layer, ``normalize``: a frozen
``BatchNorm2d`` (no affine, ``eps=0``, running mean = mean, running var = std^2) that
stays in eval mode when the model trains, and traces to an ``Affine`` node.

>>> m = create_model("lenet5")
>>> m(torch.zeros(2, 1, 28, 28)).shape
torch.Size([2, 10])
"""
from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from snn.data import FileInfo, data_root
from snn.errors import DataError, SnnError
from snn.trace import QCFS, OptionAShortcut

CIFAR_MEAN = (0.485, 0.456, 0.406)  # the normalisation the pretrained ResNets were trained with
CIFAR_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- helpers
def _ints(name: str, value: object, min_len: int = 0) -> tuple[int, ...]:
    seq = (value,) if isinstance(value, int) else value
    if not isinstance(seq, (list, tuple)) or len(seq) < min_len or \
            not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in seq):
        raise SnnError(f"{name} must be a list of positive integers (at least {min_len}), got {value!r}")
    return tuple(seq)


def _positive(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SnnError(f"{name} must be a positive integer, got {value!r}")
    return value


def normalization(mean: Sequence[float], std: Sequence[float]) -> nn.BatchNorm2d:
    """``(x - mean) / std`` per channel as a frozen ``BatchNorm2d`` (eps 0, no affine); keep
    it in eval mode (see :class:`_FrozenNormMixin`)."""
    if len(mean) != len(std) or any(s <= 0 for s in std):
        raise SnnError(f"normalisation needs one mean and one positive std per channel, got mean={mean}, std={std}")
    bn = nn.BatchNorm2d(len(mean), eps=0.0, affine=False)
    bn.running_mean.copy_(torch.tensor(mean, dtype=torch.float32))
    bn.running_var.copy_(torch.tensor(std, dtype=torch.float32) ** 2)
    return bn.eval()


class _FrozenNormMixin(nn.Module):
    """Keeps the ``normalize`` layer (if any) in eval mode whatever mode the model is put in."""

    normalize: nn.Module

    def train(self, mode: bool = True):
        super().train(mode)
        self.normalize.eval()
        return self


# --------------------------------------------------------------------------- models
def mlp(in_shape: Sequence[int] = (1, 8, 8), hidden: Sequence[int] = (128, 64), num_classes: int = 10) -> nn.Module:
    """Multi-layer perceptron: ``Flatten``, ``(Linear-ReLU)`` per entry of ``hidden``, ``Linear``."""
    in_shape, hidden = _ints("in_shape", in_shape, 1), _ints("hidden", hidden)
    layers: list[nn.Module] = [nn.Flatten()]
    width = 1
    for d in in_shape:
        width *= d
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, _positive("num_classes", num_classes)))
    return nn.Sequential(*layers)


class LeNet5(nn.Module):
    """LeNet-5 with BatchNorm: ``conv5x5(pad 2)-BN-ReLU-maxpool2``, ``conv5x5-BN-ReLU-maxpool2``,
    ``FC-ReLU-FC-ReLU-FC``. Input ``(in_channels, s, s)``; spatial sizes ``s -> s/2 -> (s/2-4)/2``."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 28,
                 channels: Sequence[int] = (6, 16), hidden: Sequence[int] = (120, 84)):
        super().__init__()
        c1, c2 = _ints("channels", channels, 2)[:2]
        hidden = _ints("hidden", hidden)
        s = (_positive("input_size", input_size) // 2 - 4) // 2
        if s < 1:
            raise SnnError(f"lenet5 needs input_size >= 12 (two 5x5 convolutions and two 2x2 poolings), got {input_size}")
        self.features = nn.Sequential(
            nn.Conv2d(_positive("in_channels", in_channels), c1, 5, padding=2, bias=False), nn.BatchNorm2d(c1),
            nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, bias=False), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2))
        layers: list[nn.Module] = [nn.Flatten()]
        width = c2 * s * s
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, _positive("num_classes", num_classes)))
        self.classifier = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def lenet5(in_channels: int = 1, num_classes: int = 10, input_size: int = 28,
           channels: Sequence[int] = (6, 16), hidden: Sequence[int] = (120, 84)) -> nn.Module:
    """LeNet-5 with BatchNorm and max-pooling (see :class:`LeNet5`)."""
    return LeNet5(in_channels, num_classes, input_size, channels, hidden)


class VGG(nn.Module):
    """Small VGG: for each entry of ``cfg``, an int ``c`` adds ``conv3x3(pad 1)-BN-ReLU`` with
    ``c`` channels, ``"M"`` a 2x2 max-pool and ``"A"`` a 2x2 average pool; then ``Flatten``,
    ``(Linear-ReLU)`` per entry of ``hidden`` and ``Linear``."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, input_size: int = 32,
                 cfg: Sequence[int | str] = (32, 32, "M", 64, 64, "M", 128, 128, "M"),
                 hidden: Sequence[int] = (256,)):
        super().__init__()
        if not isinstance(cfg, (list, tuple)) or not cfg or \
                not all(c in ("M", "A") or (isinstance(c, int) and not isinstance(c, bool) and c > 0) for c in cfg):
            raise SnnError(f"vgg cfg must be a list of positive channel counts, 'M' (max-pool) and 'A' (average "
                           f"pool), got {cfg!r}")
        layers: list[nn.Module] = []
        c, s = _positive("in_channels", in_channels), _positive("input_size", input_size)
        for v in cfg:
            if v in ("M", "A"):
                layers.append(nn.MaxPool2d(2) if v == "M" else nn.AvgPool2d(2))
                s //= 2
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU()]
                c = v
        if s < 1:
            raise SnnError(f"vgg cfg {list(cfg)} pools an input of size {input_size} below 1 pixel")
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        width = c * s * s
        for h in _ints("hidden", hidden):
            head += [nn.Linear(width, h), nn.ReLU()]
            width = h
        head.append(nn.Linear(width, _positive("num_classes", num_classes)))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def vgg(in_channels: int = 3, num_classes: int = 10, input_size: int = 32,
        cfg: Sequence[int | str] = (32, 32, "M", 64, 64, "M", 128, 128, "M"), hidden: Sequence[int] = (256,)) -> nn.Module:
    """A small VGG for CIFAR-10 (see :class:`VGG`)."""
    return VGG(in_channels, num_classes, input_size, cfg, hidden)


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; the shortcut is the identity,
    or :class:`OptionAShortcut` (subsample by 2, zero-pad channels) when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = OptionAShortcut(in_planes, planes, stride) if stride != 1 or in_planes != planes \
            else nn.Identity()

        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()  # modules, so that qcfs() can swap them

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(_FrozenNormMixin):
    """CIFAR ResNet-(6n+2) with option-A shortcuts (He et al. 2016, section 4.2)."""

    def __init__(self, n: int, num_classes: int = 10, in_channels: int = 3,
                 mean: Sequence[float] | None = CIFAR_MEAN, std: Sequence[float] | None = CIFAR_STD):
        super().__init__()
        in_channels = _positive("in_channels", in_channels)
        if (mean is None) != (std is None):
            raise SnnError("give both mean and std for the input normalisation, or neither")
        if mean is not None and len(mean) != in_channels:
            raise SnnError(f"mean/std need {in_channels} values (one per input channel), got {len(mean)}")
        self.normalize = normalization(mean, std) if mean is not None else nn.Identity()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        planes, layers = 16, []
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = [BasicBlock(planes, width, stride)] + [BasicBlock(width, width) for _ in range(n - 1)]
            layers.append(nn.Sequential(*blocks))
            planes = width
        self.layer1, self.layer2, self.layer3 = layers
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, _positive("num_classes", num_classes))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(self.normalize(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(torch.flatten(self.pool(x), 1))


def _resnet(depth: int) -> Callable[..., nn.Module]:
    def factory(num_classes: int = 10, in_channels: int = 3, mean: Sequence[float] | None = CIFAR_MEAN,
                std: Sequence[float] | None = CIFAR_STD) -> nn.Module:
        return CifarResNet((depth - 2) // 6, num_classes, in_channels, mean, std)

    factory.__name__ = factory.__qualname__ = f"resnet{depth}"
    factory.__doc__ = (f"CIFAR ResNet-{depth} ({(depth - 2) // 6} blocks per stage, option-A shortcuts, "
                       f"input normalisation built in); see :class:`CifarResNet`.")
    return factory


resnet20, resnet32, resnet44, resnet56 = (_resnet(d) for d in (20, 32, 44, 56))

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp, "lenet5": lenet5, "vgg": vgg,
    "resnet20": resnet20, "resnet32": resnet32, "resnet44": resnet44, "resnet56": resnet56,
}


def check_arguments(name: str, kwargs: Mapping[str, object]) -> None:
    """:class:`SnnError` unless ``name`` is a zoo model that accepts every key of ``kwargs``
    (checked by :func:`create_model` and by the config schema, before any data is loaded)."""
    if name not in MODELS:
        raise SnnError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    params = inspect.signature(MODELS[name]).parameters
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        raise SnnError(f"model {name!r} got unknown argument(s) {', '.join(unknown)}; it accepts: "
                       f"{', '.join(f'{k}={p.default!r}' for k, p in params.items())}")


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the zoo model ``name`` with ``kwargs`` (lists are accepted where tuples are
    expected, as YAML gives them). Unknown names and arguments raise :class:`SnnError`."""
    check_arguments(name, kwargs)
    return MODELS[name](**kwargs)


def dataset_kwargs(name: str, shape: Sequence[int], num_classes: int) -> dict:
    """The arguments of zoo model ``name`` that a dataset with samples of ``shape`` (C, H, W)
    and ``num_classes`` classes determines: ``in_shape``, ``in_channels``, ``input_size``
    (square inputs), ``num_classes``; for a ResNet on inputs that are not RGB, no built-in
    normalisation (``mean=std=None``: the default statistics are RGB ones)."""
    if name not in MODELS:
        raise SnnError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    params = inspect.signature(MODELS[name]).parameters
    out: dict = {"num_classes": num_classes}
    if "in_shape" in params:
        out["in_shape"] = list(shape)
    if "in_channels" in params:
        out["in_channels"] = shape[0]
    if "input_size" in params and len(shape) == 3 and shape[1] == shape[2]:
        out["input_size"] = shape[1]
    if "mean" in params and shape[0] != 3:
        out["mean"] = out["std"] = None
    return out


# --------------------------------------------------------------------------- QCFS
ACTIVATIONS = ("relu", "qcfs")
_RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_, F.relu_)


def _relu_sites(model: nn.Module) -> tuple[list[str], list[str]]:
    """(names of ``nn.ReLU`` submodules that ``forward`` calls, names of the fx nodes that call
    ReLU as a function or tensor method), from a torch.fx trace of ``model``."""
    from snn.trace import _Tracer

    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # fx raises many types for data-dependent control flow
        raise SnnError(f"cannot find the ReLUs of {type(model).__name__}: torch.fx could not trace it ({e})") from e
    mods = dict(model.named_modules())
    modules, functions = [], []
    for n in graph.nodes:
        if n.op == "call_module" and type(mods.get(n.target)) is nn.ReLU:
            modules.append(n.target)
        elif (n.op == "call_function" and n.target in _RELU_FUNCTIONS) or \
                (n.op == "call_method" and n.target in ("relu", "relu_")):
            functions.append(n.name)
    return list(dict.fromkeys(modules)), functions


def qcfs(model: nn.Module, levels: int = 8, calibration: torch.Tensor | None = None, percentile: float = 99.9,
         threshold: float = 8.0) -> nn.Module:
    """Make every ReLU of ``model`` a trainable :class:`snn.trace.QCFS` activation with
    ``levels`` quantisation levels (Bu et al. ICLR 2022), for conversion-aware training
    or fine-tuning; returns the model (changed in place).

    Every ``nn.ReLU`` submodule that ``forward`` calls is replaced by a ``QCFS`` of the
    same name. A ReLU called as a function (``F.relu(x)``, ``x.relu()``) cannot be
    swapped in place: write it as an ``nn.ReLU`` submodule (:class:`SnnError` names
    them). The thresholds start at the ``percentile``-th percentile of the positive
    activations of each ReLU on ``calibration`` (inputs ``(N, ...)``, the model in eval
    mode), or at ``threshold`` without calibration data.

    >>> m = qcfs(lenet5(), levels=4, calibration=torch.rand(16, 1, 28, 28))
    >>> type(m.features[2]).__name__, m.features[2].levels
    ('QCFS', 4)
    """
    if not isinstance(model, nn.Module):
        raise SnnError(f"qcfs needs a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(levels, int) or isinstance(levels, bool) or levels < 1:
        raise SnnError(f"qcfs levels must be an integer >= 1, got {levels!r}")
    if not 0 < percentile <= 100:
        raise SnnError(f"percentile must be in (0, 100], got {percentile}")
    modules, functions = _relu_sites(model)
    if functions:
        raise SnnError(f"{type(model).__name__} calls ReLU as a function at fx node(s) {', '.join(functions)}; "
                       "qcfs swaps nn.ReLU submodules: make each an nn.ReLU submodule of the model")
    if not modules:
        raise SnnError(f"{type(model).__name__} has no nn.ReLU to make QCFS")
    init = dict.fromkeys(modules, float(threshold))
    if calibration is not None:
        acts: dict[str, list[torch.Tensor]] = {n: [] for n in modules}
        mods = dict(model.named_modules())
        hooks = [mods[n].register_forward_hook(lambda m, i, o, n=n: acts[n].append(o.detach().flatten()))
                 for n in modules]
        was = model.training
        try:
            model.eval()
            with torch.no_grad():
                model(torch.as_tensor(calibration, dtype=torch.float32))
        finally:
            for h in hooks:
                h.remove()
            model.train(was)
        for n, parts in acts.items():
            a = torch.cat(parts)
            a = a[a > 0]
            if len(a):
                init[n] = max(float(torch.quantile(a[torch.randperm(len(a))[:1 << 24]].double(), percentile / 100)),
                              1e-3)
    for n in modules:
        parent, _, leaf = n.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, QCFS(levels, init[n]))
    return model


# --------------------------------------------------------------------------- pretrained weights
_WEIGHTS_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"
PRETRAINED: dict[str, FileInfo] = {
    n: FileInfo(f, m, _WEIGHTS_URL + f) for n, f, m in (
        ("resnet20", "resnet20-12fca82f.th", "1f38c81cdebd6bcce9b03d082161a36c"),
        ("resnet32", "resnet32-d509ac18.th", "1b290d0b1aad139b0f2be36cf1fa4846"),
        ("resnet44", "resnet44-014dd654.th", "953c35969bce8e16eba14f6de91ef262"),
        ("resnet56", "resnet56-4bfd9763.th", "48a2383e717f38f02934658ab8d4d9a2"))
}
PRETRAINED_FOLDER = "cifar10-resnet"


def load_pretrained(name: str, root: str | Path | None = None) -> nn.Module:
    """The CIFAR-10 ResNet ``name`` with its published weights (``<data root>/cifar10-resnet/
    resnetN-*.th``, md5 checked, loaded with ``weights_only=True``), in eval mode."""
    if name not in PRETRAINED:
        raise SnnError(f"no pretrained weights for {name!r}; available: {', '.join(PRETRAINED)}")
    f = PRETRAINED[name]
    path = data_root(root) / PRETRAINED_FOLDER / f.name
    if not path.is_file():
        raise DataError(f"pretrained weights for {name} not found: {path} is missing; download {f.url} "
                        f"into {path.parent}, or point SNN_DATA at a folder with {PRETRAINED_FOLDER}/")
    got = hashlib.md5(path.read_bytes()).hexdigest()
    if got != f.md5:
        raise DataError(f"{path}: md5 {got} does not match the published {f.md5}; the file is corrupt")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise DataError(f"{path}: cannot load the weights ({e})") from e
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict):
        raise DataError(f"{path}: expected a state dict, found {type(obj).__name__}")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    model = create_model(name)
    own = model.state_dict()
    for k, v in own.items():  # the built-in normalisation is not part of the published weights
        if k.startswith("normalize."):
            sd.setdefault(k, v)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise DataError(f"{path}: the weights do not fit {name}: {e}") from e
    return model.eval()
