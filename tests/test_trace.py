"""The tracer is exact: the float64 IR evaluation equals the torch model for every supported layer."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from snn import ir
from snn.errors import ConversionError
from snn.trace import OptionAShortcut, trace


def _check_exact(model: nn.Module, shape: tuple[int, ...], n: int = 4) -> ir.Graph:
    torch.manual_seed(1)
    model = model.eval()
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            if m.weight is not None:
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.uniform_(m.bias, -0.3, 0.3)
    x = torch.randn((n,) + shape)
    g = trace(model, x)
    want = copy.deepcopy(model).double()(x.double()).detach().numpy()
    got = ir.evaluate(g, x.numpy())["output"]
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) < 1e-5
    return g


class Functional(nn.Module):
    """Every ReLU spelling, view/reshape/flatten, residual add, torch.add and torch.cat."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.c = nn.Conv2d(4, 4, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        x = self.relu(self.a(x))
        y = F.relu(self.b(x))
        y = torch.relu(y + x)
        z = torch.add(self.c(y), y).relu()
        z = F.relu(z, inplace=True)
        w = torch.cat([z, y], dim=1)
        w = F.max_pool2d(w, 2)
        w = w.view(w.size(0), -1)
        return self.fc(w)


class Reshapes(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(48, 48)
        self.conv = nn.Conv2d(3, 2, 3)

    def forward(self, x):
        h = torch.flatten(x, 1)
        h = self.fc1(h).relu_()
        h = h.reshape(-1, 3, 4, 4)
        h = self.conv(h)
        return torch.flatten(h, 1)


LAYER_MODELS = {
    "linear": (lambda: nn.Sequential(nn.Linear(10, 7), nn.ReLU(), nn.Linear(7, 3, bias=False)), (10,)),
    "conv_stride_pad_dil": (lambda: nn.Sequential(
        nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(6, 4, 3, padding=2, dilation=2, bias=False)), (3, 9, 9)),
    "conv_groups_depthwise": (lambda: nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1, groups=2), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
        nn.Conv2d(8, 4, (1, 3), padding="same")), (4, 6, 6)),
    "bn_folded": (lambda: nn.Sequential(
        nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.Flatten(),
        nn.Linear(5 * 4 * 4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2)), (3, 6, 6)),
    "bn_affine": (lambda: nn.Sequential(
        nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3)), (3, 6, 6)),
    "pools": (lambda: nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
        nn.AvgPool2d(2), nn.Conv2d(4, 4, 1), nn.ReLU(), nn.MaxPool2d(3, stride=1, padding=1),
        nn.AvgPool2d(3, stride=1, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)), (2, 8, 8)),
    "dropout_identity": (lambda: nn.Sequential(
        nn.Linear(6, 6), nn.Dropout(0.5), nn.ReLU(), nn.Identity(), nn.AlphaDropout(0.2), nn.Linear(6, 2)), (6,)),
    "functional": (Functional, (3, 8, 8)),
    "reshapes": (Reshapes, (3, 4, 4)),
    "option_a_shortcut": (lambda: nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(),
                                                OptionAShortcut(4, 8, 2), nn.Flatten()), (2, 6, 6)),
}


@pytest.mark.parametrize("name", sorted(LAYER_MODELS))
def test_trace_is_exact(name):
    make, shape = LAYER_MODELS[name]
    _check_exact(make(), shape)


def test_bn_is_folded_into_the_preceding_layer():
    g = _check_exact(LAYER_MODELS["bn_folded"][0](), (3, 6, 6))
    kinds = [v.kind for v in g.nodes.values()]
    assert "affine" not in kinds  # both BNs folded into conv / linear
    assert list(g.nodes) == ["input", "0", "2", "3", "4", "6", "7"]


def test_bn_without_predecessor_becomes_affine():
    g = _check_exact(LAYER_MODELS["bn_affine"][0](), (3, 6, 6))
    assert [g.nodes[n].kind for n in ("0", "3")] == ["affine", "affine"]


def test_bn_fold_equation():
    conv, bn = nn.Conv2d(1, 2, 1, bias=True), nn.BatchNorm2d(2)
    with torch.no_grad():
        conv.weight[:] = torch.tensor([2.0, 3.0]).reshape(2, 1, 1, 1)
        conv.bias[:] = torch.tensor([1.0, -1.0])
        bn.running_mean[:] = torch.tensor([0.5, 1.0])
        bn.running_var[:] = torch.tensor([4.0 - bn.eps, 1.0 - bn.eps])
        bn.weight[:] = torch.tensor([1.0, 2.0])
        bn.bias[:] = torch.tensor([0.0, 0.5])
    g = trace(nn.Sequential(conv, bn).eval(), torch.zeros(2, 1, 2, 2))
    node = g.nodes["0"]
    # w' = w g / s ; b' = (b - mu) g / s + beta, s = sqrt(var + eps)
    np.testing.assert_allclose(node.weight.ravel(), [2.0 * 1 / 2, 3.0 * 2 / 1])
    np.testing.assert_allclose(node.bias, [(1 - 0.5) / 2, (-1 - 1.0) * 2 + 0.5])


class Weird(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.Sigmoid()

    def forward(self, x):
        return self.act(self.fc(x))


class WithGelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return F.gelu(self.fc(x))


class WithMul(nn.Module):
    def forward(self, x):
        return x * 2


class WithCatBatch(nn.Module):
    def forward(self, x):
        return torch.cat([x, x], dim=0)


@pytest.mark.parametrize("model, where, op", [
    (Weird(), "'act'", "Sigmoid"),
    (WithGelu(), "'gelu'", "gelu"),
    (WithMul(), "'mul'", "mul"),
    (WithCatBatch(), "'cat'", "dim 0"),
    (nn.Sequential(nn.Linear(4, 4), nn.LeakyReLU()), "'1'", "LeakyReLU"),
    (nn.Sequential(nn.Conv2d(1, 1, 3), nn.MaxPool2d(2, ceil_mode=True)), "'1'", "ceil_mode"),
])
def test_unsupported_layers_name_the_node_and_op(model, where, op):
    shape = (1, 6, 6) if isinstance(model[0] if isinstance(model, nn.Sequential) else None, nn.Conv2d) else (4,)
    with pytest.raises(ConversionError) as e:
        trace(model, torch.randn((2,) + shape))
    msg = str(e.value)
    assert where in msg and op in msg and "Supported:" in msg and "Conv2d" in msg


class _Fn(nn.Module):
    """Applies ``fn`` to the output of a 1x1 conv (so the op is traced as a function call)."""

    def __init__(self, fn):
        super().__init__()
        self.conv, self.fn = nn.Conv2d(2, 2, 1), fn

    def forward(self, x):
        return self.fn(self.conv(x))


@pytest.mark.parametrize("model, where, op", [
    (nn.Sequential(nn.Conv2d(2, 2, 1), nn.Hardtanh(-1.0, 1.0)), "'1' (Hardtanh)", "a clip to [-1.0, 1.0]"),
    (nn.Sequential(nn.Conv2d(2, 2, 1), nn.Upsample(scale_factor=2, mode="bilinear")), "'1' (Upsample)",
     "mode='bilinear'"),
    (nn.Sequential(nn.Conv2d(2, 2, 1), nn.Upsample(size=(9, 9))), "'1' (Upsample)", "only integer scale factors"),
    (_Fn(lambda h: F.pad(h, (1, 1, 1, 1), mode="replicate")), "'pad'", "mode='replicate'"),
    (_Fn(lambda h: F.pad(h, (-1, 0))), "'pad'", "only non-negative padding"),
    (_Fn(lambda h: h.mean(1)), "'mean'", "only over all spatial dims"),
    (_Fn(lambda h: torch.mean(h, (1, 2, 3))), "'mean'", "only over all spatial dims"),
    (nn.Sequential(nn.Conv2d(2, 2, 1), nn.AdaptiveAvgPool2d(3)), "'1' (AdaptiveAvgPool2d)", "sizes must divide"),
])
def test_new_layers_refuse_what_they_cannot_express(model, where, op):
    with pytest.raises(ConversionError) as e:
        trace(model, torch.randn((2, 2, 4, 4)))
    msg = str(e.value)
    assert where in msg and op in msg and "Supported:" in msg


def test_mean_over_spatial_dims_is_a_global_average_pool():
    g = trace(_Fn(lambda h: h.mean((-2, -1), keepdim=True).flatten(1) + h.mean((2, 3))), torch.randn(2, 2, 4, 4))
    kinds = [v.kind for v in g.nodes.values()]
    assert kinds.count("avgpool2d") == 2 and "flatten" in kinds
    assert g.nodes["mean"].kernel == (4, 4)


def test_nan_weights_are_rejected():
    m = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        m[2].weight[0, 0] = float("inf")
    with pytest.raises(ConversionError, match=r"'2'.*weight contains NaN or inf"):
        trace(m, torch.randn(2, 4))


def test_trace_leaves_user_model_untouched():
    m = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Dropout(), nn.Linear(3, 2)).train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    trace(m, torch.randn(8, 4))
    assert m.training and all(mod.training for mod in m.modules())
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k
