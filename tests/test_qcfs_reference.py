"""The committed QCFS LeNet-5 checkpoints (results/reference/checkpoints/) reproduce the
README's low-latency figures without retraining: the MNIST network through its experiment
config (experiments/mnist_lenet5_qcfs.yaml) on all 10,000 test images, converted for T=4
and simulated 4 steps: the issue's target, >= 99.0 % (about 30 s). Needs the real MNIST
files ($SNN_DATA)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import snn

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SNN_DATA", ROOT.parent / "shared" / "data"))
CHECKPOINT = ROOT / "results" / "reference" / "checkpoints" / "lenet5-mnist-qcfs4.safetensors"

pytestmark = pytest.mark.skipif(not (SHARED / "mnist").is_dir(),
                                reason=f"real MNIST not found in {SHARED} (set SNN_DATA to /work/shared/data)")


def test_committed_mnist_qcfs_checkpoint_reaches_its_snn_accuracy_at_T4(tmp_path, monkeypatch):
    monkeypatch.setenv("SNN_DATA", str(SHARED))
    run = snn.run_experiment(ROOT / "experiments" / "mnist_lenet5_qcfs.yaml",
                             overrides={"model.checkpoint": str(CHECKPOINT), "energy.enabled": False, "output.report": False,
                                        "output.save_network": False},
                             results_dir=tmp_path, progress=False, log=lambda *a: None)
    s = run.summary
    assert run.config["convert"]["timesteps"] == 4 and len(run.data.accuracy) == 4
    # measured: ANN 99.03 %; SNN 99.07 % with plain spikes, 99.06 % with burst-2 spikes in the
    # fully connected layers (what convert(timesteps=4) picks where burst spikes are automatic)
    assert s["ann_accuracy"] == pytest.approx(0.9903, abs=1e-4)
    assert s["snn_accuracy"] >= 0.990


CIFAR_CHECKPOINT = ROOT / "results" / "reference" / "checkpoints" / "resnet20-cifar10-qcfs4.safetensors"


@pytest.mark.skipif(not (SHARED / "cifar10-jpeg").is_dir(), reason=f"CIFAR-10 JPEG copy not found in {SHARED}")
def test_committed_cifar_qcfs_resnet20_at_T4(monkeypatch):
    """The committed QCFS ResNet-20 through experiments/cifar10_resnet20_qcfs.yaml's model
    section, converted with timesteps=4 (512 calibration images drawn with seed 0, as
    experiments/bench/low_latency.py does), which picks burst-4 signed spikes, on the first
    500 test images: at least its ANN - 3.0 points, the issue's T=4 target (all 10,000:
    87.76 % against its ANN's 84.83 %)."""
    import numpy as np

    from snn import data, runner, train
    from snn.config import load_config

    monkeypatch.setenv("SNN_DATA", str(SHARED))
    cfg = load_config(ROOT / "experiments" / "cifar10_resnet20_qcfs.yaml",
                      overrides={"model.checkpoint": str(CIFAR_CHECKPOINT)})
    model, info = runner.build_model(cfg, progress=False, log=lambda *a: None)
    assert info["source"].startswith("checkpoint")
    xtr, _ = data.load_dataset("cifar10", "train")
    x, y = data.load_dataset("cifar10", "test", limit=500)
    calib = xtr[np.random.default_rng(0).permutation(len(xtr))[:512]]
    net = snn.convert(model, calib, timesteps=4)
    assert (net.meta["choices"]["burst"], net.meta["choices"]["signed"]) == (4, True)
    ann = train.evaluate(model, x, y)
    acc = snn.simulate(net, x, 4, record="none", batch_size=250).accuracy(y)[-1]
    assert acc >= ann - 0.03, (ann, acc)


# ANN accuracy of each committed deeper QCFS ResNet (fine-tuned 3 epochs by
# experiments/bench/low_latency.py --models resnetN-qcfs4) on the first 1,000 test images,
# measured when it was written
DEEP_QCFS_ANN = {32: 0.836, 44: 0.838, 56: 0.837}


@pytest.mark.skipif(not (SHARED / "cifar10-jpeg").is_dir(), reason=f"CIFAR-10 JPEG copy not found in {SHARED}")
@pytest.mark.parametrize("depth", sorted(DEEP_QCFS_ANN))
def test_committed_deep_qcfs_resnets_load_through_the_config(depth, monkeypatch):
    """The committed QCFS ResNet-32/44/56 checkpoints load through the ResNet-20 QCFS config
    with ``model.name`` and ``model.checkpoint`` overridden (the README's command) and give
    the ANN accuracy they were written with (their SNN figures, on all 10,000 test images,
    are in results/reference/low_latency.json)."""
    from snn import data, runner, train
    from snn.config import load_config

    monkeypatch.setenv("SNN_DATA", str(SHARED))
    ck = ROOT / "results" / "reference" / "checkpoints" / f"resnet{depth}-cifar10-qcfs4.safetensors"
    cfg = load_config(ROOT / "experiments" / "cifar10_resnet20_qcfs.yaml",
                      overrides={"model.name": f"resnet{depth}", "model.checkpoint": str(ck)})
    model, info = runner.build_model(cfg, progress=False, log=lambda *a: None)
    assert info["source"].startswith("checkpoint")
    x, y = data.load_dataset("cifar10", "test", limit=1000)
    assert train.evaluate(model, x, y) == pytest.approx(DEEP_QCFS_ANN[depth], abs=1e-9)
