"""Model zoo: every registry entry traces exactly (float64 IR vs torch) and converts; argument
errors; the ResNet architecture and layer names; the pretrained CIFAR-10 weights."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import snn
from snn import ir, zoo
from snn.errors import DataError, SnnError
from snn.trace import OptionAShortcut, trace

SHARED = Path(os.environ.get("SNN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_weights = pytest.mark.skipif(not (SHARED / "cifar10-resnet").is_dir(),
                                   reason=f"pretrained ResNets not found in {SHARED} (set SNN_DATA)")

INPUTS = {"mlp": (1, 8, 8), "lenet5": (1, 28, 28), "vgg": (3, 32, 32)}


def input_shape(name: str) -> tuple[int, ...]:
    return INPUTS.get(name, (3, 32, 32))


def with_batch_stats(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Give every trainable BatchNorm non-trivial statistics and affine parameters (one
    pass in train mode over ``x``), so the test does not trace identities."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.affine:
            m.momentum = None
            m.weight.data = 0.5 + torch.rand(m.weight.shape, generator=g)
            m.bias.data = 0.1 * torch.randn(m.bias.shape, generator=g)
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_every_model_traces_exactly_and_converts(name):
    torch.manual_seed(0)
    x = torch.rand(16, *input_shape(name))
    model = with_batch_stats(zoo.create_model(name), x)
    g = trace(model, x)
    with torch.no_grad():
        ref = model(x[:4]).double().numpy()
    out = ir.evaluate(g, x[:4].double().numpy())["output"]
    assert ref.shape == (4, 10) and np.abs(ref).max() > 0.1
    assert np.abs(out - ref).max() < 1e-5
    net = snn.convert(model, x)
    assert isinstance(net, snn.SpikingNetwork)
    assert any(isinstance(n, ir.IF) for n in net.graph.nodes.values())


def test_normalisation_stays_frozen_in_training():
    m = zoo.create_model("resnet20")
    m.train()
    assert not m.normalize.training and m.bn1.training
    x = torch.rand(8, 3, 32, 32)
    before = m.normalize.running_mean.clone()
    m(x)
    torch.testing.assert_close(m.normalize.running_mean, before)
    mean, std = torch.tensor(zoo.CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(zoo.CIFAR_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(m.normalize(x), (x - mean) / std)
    g = trace(m, x)
    assert isinstance(g.nodes["normalize"], ir.Affine)
    np.testing.assert_allclose(g.nodes["normalize"].scale, 1 / np.array(zoo.CIFAR_STD), rtol=1e-6)


@pytest.mark.parametrize("depth,blocks", [(20, 3), (32, 5), (44, 7), (56, 9)])
def test_resnet_structure(depth, blocks):
    m = zoo.create_model(f"resnet{depth}")
    for i, layer in enumerate((m.layer1, m.layer2, m.layer3)):
        assert len(layer) == blocks
        assert isinstance(layer[0].shortcut, OptionAShortcut) == (i > 0)
    names = {k for k, _ in m.named_parameters()}
    assert {"conv1.weight", "bn1.weight", "layer3.0.conv2.weight", "layer2.1.bn1.bias", "linear.weight"} <= names
    n_params = sum(p.numel() for p in m.parameters())
    n = blocks  # by hand: stem, stage 1, stage 2 (first block widens), stage 3, linear
    expected = (27 * 16 + 32) + n * (2 * 16 * 16 * 9 + 64) + (16 * 32 * 9 + 32 * 32 * 9 + 128) + \
        (n - 1) * (2 * 32 * 32 * 9 + 128) + (32 * 64 * 9 + 64 * 64 * 9 + 256) + (n - 1) * (2 * 64 * 64 * 9 + 256) + 650
    assert n_params == expected  # 269,722 for ResNet-20 (He et al.: "0.27M")


def test_lenet_shapes_and_sizes():
    assert zoo.create_model("lenet5")(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert zoo.create_model("lenet5", in_channels=3, input_size=32, num_classes=5)(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    assert zoo.create_model("lenet5", channels=[16, 32], hidden=[64])(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
    m = zoo.create_model("lenet5")
    assert sum(isinstance(x, nn.BatchNorm2d) for x in m.modules()) == 2
    assert sum(isinstance(x, nn.MaxPool2d) for x in m.modules()) == 2
    assert sum(isinstance(x, nn.Linear) for x in m.modules()) == 3


def test_vgg_with_average_pools():
    m = zoo.create_model("vgg", in_channels=1, input_size=28, cfg=[8, "A", 16, "A"], hidden=[32])
    assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert sum(isinstance(x, nn.AvgPool2d) for x in m.modules()) == 2 and m.classifier[1].in_features == 16 * 7 * 7


def test_mlp_starts_with_flatten():
    m = zoo.create_model("mlp", in_shape=[1, 8, 8], hidden=[32])
    assert isinstance(m[0], nn.Flatten) and m[1].in_features == 64 and m[-1].out_features == 10


@pytest.mark.parametrize("name,kwargs,match", [
    ("resnet18", {}, "unknown model 'resnet18'; available: mlp, lenet5, vgg, resnet20"),
    ("lenet5", {"widht": 3}, "unknown argument.*widht.*accepts: in_channels=1"),
    ("lenet5", {"input_size": 8}, "input_size >= 12"),
    ("mlp", {"hidden": [64, -1]}, "hidden must be a list of positive integers"),
    ("mlp", {"num_classes": 0}, "num_classes must be a positive integer"),
    ("vgg", {"cfg": [32, "X"]}, "vgg cfg must be"),
    ("vgg", {"cfg": [8, "M"] * 6}, "below 1 pixel"),
    ("resnet20", {"in_channels": 1}, "mean/std need 1 values"),
])
def test_bad_arguments(name, kwargs, match):
    with pytest.raises(SnnError, match=match):
        zoo.create_model(name, **kwargs)


def test_resnet_without_normalisation_on_digits():
    m = zoo.create_model("resnet20", in_channels=1, mean=None, std=None)
    assert isinstance(m.normalize, nn.Identity)
    assert m(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_pretrained_missing_and_corrupt(tmp_path):
    with pytest.raises(SnnError, match="no pretrained weights for 'lenet5'"):
        zoo.load_pretrained("lenet5", root=tmp_path)
    with pytest.raises(DataError, match="resnet20-12fca82f.th is missing.*akamaster"):
        zoo.load_pretrained("resnet20", root=tmp_path)
    (tmp_path / "cifar10-resnet").mkdir()
    (tmp_path / "cifar10-resnet" / "resnet20-12fca82f.th").write_bytes(b"not weights")
    with pytest.raises(DataError, match="md5 .* does not match"):
        zoo.load_pretrained("resnet20", root=tmp_path)


@needs_weights
def test_pretrained_loads_and_traces():
    m = zoo.load_pretrained("resnet20", root=SHARED)
    assert not m.training
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        ref = m(x).double().numpy()
    assert np.abs(ir.evaluate(trace(m, x), x.double().numpy())["output"] - ref).max() < 1e-5


@needs_weights
@pytest.mark.slow
def test_pretrained_resnet20_accuracy_on_jpeg_copy():
    """README: 81.03 % on all 10,000 JPEG test images; 1,000 of them give about the same."""
    from snn.data import load_dataset

    x, y = load_dataset("cifar10", "test", root=SHARED, limit=1000)
    m = zoo.load_pretrained("resnet20", root=SHARED)
    with torch.no_grad():
        pred = torch.cat([m(torch.as_tensor(x[i:i + 250])).argmax(1) for i in range(0, 1000, 250)]).numpy()
    acc = float((pred == y).mean())
    assert 0.78 <= acc <= 0.84, acc
