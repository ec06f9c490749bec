"""Shared fixtures: load_digits data and small trained ANNs (MLP, CNN with BN + max-pooling,
residual CNN), each trained once per test session in a few seconds."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from snn.trace import OptionAShortcut


@pytest.fixture(scope="session")
def digits():
    """(x_train, y_train, x_test, y_test): load_digits scaled to [0, 1], flat (N, 64)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(x))
    tr, te = idx[:1400], idx[1400:]
    return x[tr], y[tr], x[te], y[te]


def _fit(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float = 1e-2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=g)
        for s in range(0, len(xt), 128):
            b = perm[s:s + 128]
            opt.zero_grad()
            F.cross_entropy(model(xt[b]), yt[b]).backward()
            opt.step()
    return model.eval()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.as_tensor(x)).argmax(1).numpy() == y).mean())


class TinyResNet(nn.Module):
    """conv-BN-ReLU stem, one identity block, one option-A downsampling block, GAP, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c3, self.b3 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c4, self.b4 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16)
        self.c5, self.b5 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.short = OptionAShortcut(8, 16, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.b2(self.c2(x)))
        x = (self.b3(self.c3(h)) + x).relu()
        h = F.relu(self.b4(self.c4(x)))
        x = F.relu(self.b5(self.c5(h)) + self.short(x))
        return self.linear(torch.flatten(self.pool(x), 1))


@pytest.fixture(scope="session")
def digits_mlp(digits):
    """A trained MLP 64-128-64-10 on digits (eval mode)."""
    x, y = digits[0], digits[1]
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 64), nn.ReLU(),
                      nn.Linear(64, 10))
    return _fit(m, x, y, epochs=30)


@pytest.fixture(scope="session")
def digits_cnn(digits):
    """A trained CNN with BatchNorm and max-pooling on digits (input (1, 8, 8))."""
    x, y = digits[0].reshape(-1, 1, 8, 8), digits[1]
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Flatten(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    return _fit(m, x, y, epochs=30)


@pytest.fixture(scope="session")
def digits_resnet(digits):
    """A trained small residual CNN (identity and option-A shortcuts) on digits."""
    x, y = digits[0].reshape(-1, 1, 8, 8), digits[1]
    torch.manual_seed(0)
    return _fit(TinyResNet(), x, y, epochs=30)


@pytest.fixture(scope="session")
def mlp_net(digits, digits_mlp):
    import snn

    return snn.convert(digits_mlp, digits[0])


@pytest.fixture(scope="session")
def cnn_net(digits, digits_cnn):
    import snn

    return snn.convert(digits_cnn, digits[0].reshape(-1, 1, 8, 8))


@pytest.fixture(scope="session")
def resnet_net(digits, digits_resnet):
    import snn

    return snn.convert(digits_resnet, digits[0].reshape(-1, 1, 8, 8))
