"""Training: learning on digits, seeding, schedules, argument errors, accuracy, checkpoints
(safetensors and torch.save, unsafe and corrupt files), and the training cache."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
import torch.nn as nn

from snn import train, zoo
from snn.data import load_dataset
from snn.errors import SnnError


@pytest.fixture(scope="module")
def dig():
    x, y = load_dataset("digits", "train")
    xv, yv = load_dataset("digits", "test")
    return x, y, xv, yv


def fresh(seed=0, name="mlp", **kw):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return zoo.create_model(name, **kw)


def state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_learns_digits_with_metrics(dig):
    x, y, xv, yv = dig
    m = fresh()
    hist = train.train(m, x, y, epochs=8, lr=1e-2, progress=False, x_val=xv, y_val=yv)
    assert [r["epoch"] for r in hist] == list(range(1, 9))
    assert set(hist[0]) == {"epoch", "loss", "train_acc", "val_acc", "lr", "seconds"}
    assert hist[-1]["loss"] < hist[0]["loss"] and hist[-1]["train_acc"] > 0.9
    assert hist[-1]["val_acc"] == train.evaluate(m, xv, yv) > 0.9
    assert not m.training


def test_cnn_trains_on_digits(dig):
    x, y, xv, yv = dig
    m = fresh(name="vgg", in_channels=1, input_size=8, cfg=[16, "M", 32, "M"], hidden=[32])
    hist = train.train(m, x, y, epochs=4, lr=3e-3, schedule="onecycle", progress=False, x_val=xv, y_val=yv)
    assert hist[-1]["val_acc"] > 0.85


def test_same_seed_same_weights_and_no_global_rng_change(dig):
    x, y, _, _ = dig
    rng_before = torch.get_rng_state()
    a, b, c = fresh(), fresh(), fresh()
    train.train(a, x, y, epochs=2, seed=3, progress=False)
    train.train(b, x, y, epochs=2, seed=3, progress=False)
    train.train(c, x, y, epochs=2, seed=4, progress=False)
    assert torch.equal(torch.get_rng_state(), rng_before)
    sa, sb, sc = state(a), state(b), state(c)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize("schedule,final", [("constant", 1e-2), ("cosine", 0.0), ("onecycle", 0.0)])
def test_schedules(dig, schedule, final):
    x, y, _, _ = dig
    hist = train.train(fresh(), x[:640], y[:640], epochs=2, lr=1e-2, batch_size=32, schedule=schedule,
                       progress=False)
    assert hist[-1]["lr"] == pytest.approx(final, abs=1e-4)
    if schedule == "onecycle":  # warm-up: the first epoch ends near the peak
        assert hist[0]["lr"] > 5e-3


def test_flip_crop_mirrors_and_shifts_each_image():
    """Each augmented image is its source, mirrored or not, shifted by at most ``pad`` pixels
    with zeros filling the border; both mirrors and several shifts occur; the generator fixes it."""
    x = torch.rand(64, 2, 6, 7) + 0.1  # no zeros inside: a zero marks the border
    a = train.flip_crop(x, torch.Generator().manual_seed(1), pad=2)
    assert torch.equal(a, train.flip_crop(x, torch.Generator().manual_seed(1), pad=2))
    seen = set()
    for i in range(len(x)):
        found = [(f, dy, dx) for f in (False, True) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(a[i], torch.roll(torch.nn.functional.pad(x[i].flip(-1) if f else x[i], (2, 2, 2, 2)),
                                                 (-dy, -dx), (-2, -1))[:, 2:8, 2:9])]
        assert len(found) == 1, i
        seen.add(found[0])
    assert {f for f, _, _ in seen} == {False, True} and len(seen) > 10


def test_augmented_training_runs_and_is_part_of_the_cache_key(dig, tmp_path):
    x, y, xv, yv = dig
    m = fresh(name="vgg", in_channels=1, input_size=8, cfg=[8, "M"], hidden=[16])
    plain = fresh(name="vgg", in_channels=1, input_size=8, cfg=[8, "M"], hidden=[16])
    img = (x.reshape(-1, 1, 8, 8), y)  # already images; the flat form is refused below
    train.train(m, *img, epochs=1, lr=3e-3, progress=False, augment="flip_crop")
    train.train(plain, *img, epochs=1, lr=3e-3, progress=False)
    assert not torch.equal(m.features[0].weight, plain.features[0].weight)
    with pytest.raises(SnnError, match="augment 'flip_crop' needs images"):
        train.train(fresh(), x[:32].reshape(32, -1), y[:32], epochs=1, progress=False, augment="flip_crop")
    with pytest.raises(SnnError, match="unknown augmentation 'mixup'; choose one of none, flip_crop"):
        train.train(fresh(), x[:32], y[:32], epochs=1, progress=False, augment="mixup")
    cfg = {"epochs": 1, "lr": 0.003}
    assert train.resolve_train_config({**cfg, "augment": "none"}) == train.resolve_train_config(cfg)
    assert train.resolve_train_config({**cfg, "augment": "flip_crop"})["augment"] == "flip_crop"


@pytest.mark.parametrize("kwargs,match", [
    ({"epochs": -1}, "epochs must be a non-negative integer"),
    ({"epochs": 1.5}, "epochs must be"),
    ({"epochs": 1, "lr": 0}, "lr must be a positive number"),
    ({"epochs": 1, "batch_size": 0}, "batch_size must be a positive integer"),
    ({"epochs": 1, "optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'; choose one of adam, adamw, sgd"),
    ({"epochs": 1, "schedule": "step"}, "unknown learning-rate schedule 'step'"),
    ({"epochs": 1, "device": "tpu"}, "cannot train on device 'tpu'"),
])
def test_bad_arguments(dig, kwargs, match):
    x, y, _, _ = dig
    with pytest.raises(SnnError, match=match):
        train.train(fresh(), x[:32], y[:32], progress=False, **kwargs)


def test_bad_data():
    with pytest.raises(SnnError, match="training data: expected x of shape"):
        train.train(fresh(), np.zeros((4, 1, 8, 8)), np.zeros(3), epochs=1, progress=False)
    with pytest.raises(SnnError, match="validation data: x contains NaN"):
        train.train(fresh(), np.zeros((4, 1, 8, 8)), np.zeros(4), epochs=1, progress=False,
                    x_val=np.full((2, 1, 8, 8), np.nan), y_val=np.zeros(2))


def test_divergence_is_reported(dig):
    x, y, _, _ = dig
    with pytest.raises(SnnError, match="training diverged"):
        train.train(fresh(), x, y, epochs=3, lr=1e8, optimizer="sgd", progress=False)


def test_evaluate_counts_exactly():
    m = nn.Linear(3, 3, bias=False)
    m.weight.data = torch.eye(3)
    x = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], np.float32)
    assert train.evaluate(m, x, np.array([0, 1, 1, 2]), batch_size=3) == 0.5


# --------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("backend", ["safetensors", "torch"])
def test_checkpoint_round_trip(tmp_path, monkeypatch, backend):
    if backend == "torch":
        monkeypatch.setattr(train, "_has_safetensors", lambda: False)
    elif not train._has_safetensors():
        pytest.skip("safetensors is not installed")
    m = fresh(name="lenet5")
    m.features[1].running_mean.add_(0.5)  # buffers travel too
    p = train.save_checkpoint(m, tmp_path / "m.ckpt", {"acc": 0.5, "cfg": {"lr": 1e-3}})
    assert (p.read_bytes()[:2] == b"PK") == (backend == "torch")
    m2 = fresh(seed=1, name="lenet5")
    assert train.load_checkpoint(m2, p) == {"acc": 0.5, "cfg": {"lr": 1e-3}}
    s1, s2 = state(m), state(m2)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert [f.name for f in tmp_path.iterdir()] == ["m.ckpt"]  # no temporary left behind


def test_safetensors_header_length_ending_in_0x80_is_not_a_pickle(tmp_path):
    """A safetensors file starts with its header length: a first byte 0x80 (a pickle's
    protocol marker) must still be read as safetensors, metadata included."""
    if not train._has_safetensors():
        pytest.skip("safetensors is not installed")
    m = fresh(name="lenet5")
    for pad in range(256):
        p = train.save_checkpoint(m, tmp_path / "m.ckpt", {"pad": "x" * pad})
        if p.read_bytes()[:1] == b"\x80":
            break
    assert p.read_bytes()[:1] == b"\x80"
    assert train.load_checkpoint(fresh(seed=1, name="lenet5"), p) == {"pad": "x" * pad}


def test_unsafe_pickle_is_refused(tmp_path):
    marker = tmp_path / "code-ran"

    class Evil:
        def __reduce__(self):
            return (pathlib.Path.touch, (marker,))

    torch.save({"state_dict": {"w": Evil()}}, tmp_path / "evil.ckpt")
    with pytest.raises(SnnError, match="refused: it is a pickle that holds more than tensors"):
        train.load_checkpoint(fresh(), tmp_path / "evil.ckpt")
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
@pytest.mark.parametrize("backend", ["safetensors", "torch"])
def test_corrupt_checkpoint(tmp_path, monkeypatch, damage, backend):
    if backend == "torch":
        monkeypatch.setattr(train, "_has_safetensors", lambda: False)
    p = train.save_checkpoint(fresh(), tmp_path / "m.ckpt", {})
    b = p.read_bytes()
    p.write_bytes({"truncate": b[:len(b) // 2], "garbage": b"\x13" * 100, "empty": b""}[damage])
    with pytest.raises(SnnError, match="corrupt|not a checkpoint"):
        train.load_checkpoint(fresh(), p)


def test_checkpoint_mismatch_and_missing(tmp_path):
    p = train.save_checkpoint(fresh(), tmp_path / "m.ckpt", {})
    with pytest.raises(SnnError, match="does not fit LeNet5"):
        train.load_checkpoint(fresh(name="lenet5"), p)
    with pytest.raises(SnnError, match="does not exist"):
        train.load_checkpoint(fresh(), tmp_path / "none.ckpt")


# --------------------------------------------------------------------------- cache
def test_train_cached_trains_once(tmp_path):
    cfg = {"epochs": 3, "lr": 1e-2, "seed": 1}
    m1, info1 = train.train_cached("mlp", {"hidden": [32]}, "digits", cfg, tmp_path, progress=False)
    assert not info1["cached"] and info1["test_acc"] > 0.85 and len(info1["metrics"]) == 3
    assert info1["model_kwargs"] == {"num_classes": 10, "in_shape": [1, 8, 8], "hidden": [32]}
    assert info1["n_train"] == 1400 and info1["dataset_label"].startswith("digits")
    m2, info2 = train.train_cached("mlp", {"hidden": [32]}, "digits", {**cfg, "batch_size": 128}, tmp_path,
                                   progress=False)  # a default written out: same key
    assert info2["cached"] and info2["key"] == info1["key"] and info2["metrics"] == info1["metrics"]
    s1, s2 = state(m1), state(m2)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    _, info3 = train.train_cached("mlp", {"hidden": [32]}, "digits", {**cfg, "lr": 5e-3}, tmp_path, progress=False)
    _, info4 = train.train_cached("mlp", {"hidden": [32]}, "digits", {**cfg, "limit": 500}, tmp_path, progress=False)
    assert len({info1["key"], info3["key"], info4["key"]}) == 3 and info4["n_train"] == 500
    assert len(list(tmp_path.glob("*.ckpt"))) == 3


def test_train_cached_recovers_from_corrupt_cache(tmp_path):
    cfg = {"epochs": 1}
    _, info = train.train_cached("mlp", {}, "digits", cfg, tmp_path, progress=False)
    pathlib.Path(info["path"]).write_bytes(b"damaged")
    with pytest.warns(UserWarning, match="retraining"):
        _, again = train.train_cached("mlp", {}, "digits", cfg, tmp_path, progress=False)
    assert not again["cached"]
    assert train.train_cached("mlp", {}, "digits", cfg, tmp_path, progress=False)[1]["cached"]


@pytest.mark.parametrize("cfg,match", [({"epochs": 1, "lerning_rate": 1}, "unknown training setting.*lerning_rate"),
                                       ({"lr": 1e-3}, "need 'epochs'")])
def test_train_cached_bad_config(tmp_path, cfg, match):
    with pytest.raises(SnnError, match=match):
        train.train_cached("mlp", {}, "digits", cfg, tmp_path, progress=False)
