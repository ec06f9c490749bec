"""Conversion-aware training (QCFS, Bu et al. ICLR 2022) on MNIST and Fashion-MNIST: LeNet-5
with quantised clip-floor-shift activations, converted at its trained thresholds with
half-charged membranes, simulated on the full test sets; and early exit per sample on the
MNIST network.

For each dataset, two LeNet-5s:

* ``relu``: LeNet-5 trained with ReLUs with the settings of ``experiments/mnist_lenet.yaml``
  / ``fashion_lenet.yaml`` (3 epochs, Adam, one-cycle lr 0.003, batch 128, seed 0; cached
  by :func:`snn.train.train_cached` under ``.cache/models``);
* ``qcfs``: that network with its ReLUs made QCFS by :func:`snn.zoo.qcfs` (``--levels``
  levels, thresholds from the 99.9th percentile on 256 training images) and fine-tuned
  ``--ft-epochs`` epochs (Adam, cosine from lr 1e-3, batch 128, seed 0): the path for a
  user's own trained model. Its state dict is written to
  ``results/reference/checkpoints/lenet5-<dataset>-qcfs<L>.safetensors`` (the one that
  ``experiments/<dataset>_lenet5_qcfs.yaml`` and ``tests/test_qcfs_reference.py`` load);
  when that file holds this very recipe (its ``how``), it is loaded instead of trained
  again (``--retrain`` trains anyway).

Each is converted twice and simulated on the whole test split with constant input:
``snn.convert(model, calib)`` (QCFS layers at their thresholds, nothing tuned; one run of
``--timesteps`` steps gives the accuracy after every step) and ``snn.convert(model, calib,
timesteps=T)`` for each T of ``--at`` (adds MSE scales where there is no QCFS threshold and
the layer-wise bias correction on 512 simulated calibration images; ``burst=1``: plain 0/1
spikes), simulated T steps.
Calibration: 2,048 training images (seed 0).

Early exit (MNIST, :mod:`snn.early_exit`): the QCFS network converted for
``--ee-steps`` steps; the trust factor beta is picked on 2,000 training images other than
the calibration ones (the smallest whose accuracy there is not below the full run's), then
applied to the whole test set; the energy with and without early exit by re-simulating each
exit-step group, priced on 45nm-fp32 and Loihi, in the energy report
``results/reference/early_exit_lenet5_mnist.md``.

Acceptance (issue 12): MNIST >= 99.0 % at T=4 and within 0.1 point of its ANN at T=16;
Fashion-MNIST >= its ANN - 1.0 point at T=4 (the ``qcfs`` network converted with
``timesteps=T``).

    python experiments/bench/qcfs.py [--datasets mnist fashion_mnist] [--levels 4] [--ft-epochs 4]
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

import common

RESULTS = "qcfs_lenet5.json"
RELU_TRAIN = {"epochs": 3, "lr": 0.003, "batch_size": 128, "seed": 0, "optimizer": "adam", "schedule": "onecycle"}
FT = {"lr": 1e-3, "batch_size": 128, "seed": 0, "optimizer": "adam", "schedule": "cosine"}
BETAS = (1.0, 0.5, 0.3, 0.2, 0.15, 0.1, 0.07, 0.05, 0.03, 0.02, 0.01)


def measure(model, calib, x, y, args) -> dict:
    """Accuracy after every step of the default conversion, and at T of the network converted
    for T, for each T of ``args.at``."""
    import snn

    t0 = time.perf_counter()
    out = {"default": snn.simulate(snn.convert(model, calib), x, args.timesteps, record="none",
                                   batch_size=500).accuracy(y).tolist(), "tuned": {}}
    for t in args.at:
        net = snn.convert(model, calib, timesteps=t, calibrate_samples=512, burst=1)
        out["tuned"][str(t)] = float(snn.simulate(net, x, t, record="none", batch_size=500).accuracy(y)[-1])
    out["convert_simulate_seconds"] = time.perf_counter() - t0
    return out


def run(dataset: str, args) -> tuple[dict, torch.nn.Module, np.ndarray]:
    from snn import data, train, zoo

    xtr, ytr = data.load_dataset(dataset, "train")
    x, y = data.load_dataset(dataset, "test")
    perm = np.random.default_rng(0).permutation(len(xtr))
    calib = xtr[perm[:2048]]
    out = {"dataset": data.dataset_label(dataset), "n_test": len(x), "levels": args.levels, "models": {}}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # LeNet-5 trains fastest on one thread
    try:
        relu, info = train.train_cached("lenet5", {}, dataset, RELU_TRAIN, common.CACHE, progress=False,
                                        data=(xtr, ytr, x, y))
        torch.manual_seed(0)
        ft = zoo.qcfs(copy.deepcopy(relu), args.levels, calibration=torch.tensor(xtr[:256]))
        how = (f"lenet5 trained with ReLUs ({RELU_TRAIN}), then snn.zoo.qcfs(levels={args.levels}, thresholds from "
               f"256 training images) and fine-tuned {args.ft_epochs} epochs ({FT}) by experiments/bench/qcfs.py")
        ck = common.REFERENCE / "checkpoints" / f"lenet5-{dataset}-qcfs{args.levels}.safetensors"
        meta = train._read_checkpoint(ck)[1] if ck.is_file() and not args.retrain else {}
        if meta.get("how") == how:  # the committed checkpoint of this very recipe: not trained again
            train.load_checkpoint(ft, ck)
            ft_seconds, losses = meta["train_seconds"], meta["train_loss_per_epoch"]
        else:
            t0 = time.perf_counter()
            losses = [h["loss"] for h in train.train(ft, xtr, ytr, epochs=args.ft_epochs, **FT, progress=False)]
            ft_seconds = time.perf_counter() - t0
            ck.parent.mkdir(parents=True, exist_ok=True)
            train.save_checkpoint(ft, ck, {"how": how, "levels": args.levels, "train_seconds": ft_seconds,
                                           "train_loss_per_epoch": losses})
    finally:
        torch.set_num_threads(threads)
    print(f"{dataset}: relu trained in {info.get('train_seconds') or 0:.0f} s (cached: {info['cached']}), "
          f"QCFS fine-tuning {ft_seconds:.0f} s ({'loaded from' if meta.get('how') == how else 'wrote'} "
          f"{ck.relative_to(common.ROOT)})", flush=True)
    for name, model, extra in (
            ("relu", relu, {"train_cfg": info["train_cfg"], "train_seconds": info.get("train_seconds")}),
            ("qcfs", ft, {"from": "relu", "epochs": args.ft_epochs, **FT, "train_seconds": ft_seconds,
                          "how": how, "checkpoint": str(ck.relative_to(common.ROOT)),
                          "thresholds": {n: float(m.threshold.detach()) for n, m in ft.named_modules()
                                         if hasattr(m, "levels")},
                          "train_loss_per_epoch": losses})):
        row = {"ann_acc": train.evaluate(model, x, y), **extra, **measure(model, calib, x, y, args)}
        out["models"][name] = row
        print(f"{dataset} {name}: ANN {100 * row['ann_acc']:.2f} %; default " + ", ".join(
            f"T={t}: {100 * row['default'][t - 1]:.2f}" for t in args.at if t <= args.timesteps)
              + "; timesteps=T: " + ", ".join(f"T={t}: {100 * v:.2f}" for t, v in row["tuned"].items()), flush=True)
    q = out["models"]["qcfs"]
    a, tuned = q["ann_acc"], q["tuned"]
    out["checks"] = {"T4_at_least_99.0": tuned["4"] >= 0.99, "T16_within_0.1": tuned["16"] >= a - 0.001} \
        if dataset == "mnist" else {"T4_within_1.0": tuned["4"] >= a - 0.01}
    print("checks (qcfs, converted with timesteps=T):", out["checks"], flush=True)
    return out, ft, perm


def early_exit_run(model, perm: np.ndarray, args) -> dict:
    """Early exit on the QCFS MNIST network converted for ``args.ee_steps`` steps."""
    import snn
    from snn import data
    from snn import early_exit as ee

    T = args.ee_steps
    xtr, ytr = data.load_dataset("mnist", "train")
    x, y = data.load_dataset("mnist", "test")
    calib, xs, ys = xtr[perm[:2048]], xtr[perm[2048:4048]], ytr[perm[2048:4048]]
    t0 = time.perf_counter()
    net = snn.convert(model, calib, timesteps=T, calibrate_samples=512, burst=1)
    bound, delay = ee.readout_bound(net.graph), net.graph.nodes[net.graph.output].delay
    pick_out = snn.simulate(net, xs, T, record="none", batch_size=500).outputs
    full_pick = float((pick_out[-1].argmax(-1) == ys).mean())
    pick = {}
    for b in BETAS:
        t = ee.exit_steps(pick_out, bound, b, delay)
        pick[str(b)] = {"accuracy": float((pick_out[t - 1, np.arange(len(xs))].argmax(-1) == ys).mean()),
                        "mean_steps": float(t.mean())}
    beta = min(b for b in BETAS if pick[str(b)]["accuracy"] >= full_pick)
    res = ee.early_exit(net, x, T, beta, y, hardware=["45nm-fp32", "loihi"], batch_size=500)
    res.report.meta["name"] = f"QCFS LeNet-5 (L={args.levels}), MNIST, converted for T={T}, early exit"
    res.report.to_markdown(common.REFERENCE / "early_exit_lenet5_mnist.md")
    res.report.to_json(common.REFERENCE / "early_exit_lenet5_mnist.json")
    out = {"steps": T, "beta": beta, "pick_images": len(xs), "pick_full_accuracy": full_pick, "pick": pick,
           **res.to_dict(), "seconds": time.perf_counter() - t0,
           "report": "results/reference/early_exit_lenet5_mnist.{md,json}"}
    print(f"mnist early exit, T={T}, beta={beta} (picked on {len(xs)} training images): accuracy "
          f"{100 * res.accuracy:.2f} % (all {T} steps: {100 * res.full_accuracy:.2f} %), mean steps "
          f"{res.mean_steps:.2f}, energy saved " + ", ".join(
              f"{p} {100 * v['saved_dynamic']:.1f} % (dynamic)" for p, v in res.energy.items()), flush=True)
    return out


def plot(runs: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(5.2 * len(runs), 4.0), squeeze=False)
    for ax, r in zip(axes[0], runs):
        for (name, m), color in zip(r["models"].items(), ("tab:blue", "tab:red")):
            label = "ReLU" if name == "relu" else f"QCFS L={r['levels']}"
            c = m["default"]
            ax.plot(range(1, len(c) + 1), [100 * v for v in c], "--", color=color, label=f"{label}, default")
            ts = sorted(int(t) for t in m["tuned"])
            ax.plot(ts, [100 * m["tuned"][str(t)] for t in ts], "o-", color=color, label=f"{label}, timesteps=T")
            ax.axhline(100 * m["ann_acc"], color=color, lw=0.8, ls=":", label=f"{label} ANN {100 * m['ann_acc']:.2f} %")
        ax.set_xscale("log", base=2)
        ax.set_ylim(95 if r["dataset"] == "MNIST" else 85, 99.6 if r["dataset"] == "MNIST" else 91.5)
        ax.set_xlabel("timesteps T")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(f"LeNet-5, {r['dataset']}, {r['n_test']} test images")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    common.write_figure("qcfs_lenet5.png", fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist"])
    ap.add_argument("--levels", type=int, default=4)
    ap.add_argument("--ft-epochs", type=int, default=4)
    ap.add_argument("--timesteps", type=int, default=32, help="steps of the default conversion's run")
    ap.add_argument("--at", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32], help="T of timesteps=T")
    ap.add_argument("--ee-steps", type=int, default=32, help="early exit: at most this many steps (MNIST)")
    ap.add_argument("--no-early-exit", action="store_true")
    ap.add_argument("--retrain", action="store_true", help="fine-tune even where the committed checkpoint exists")
    args = ap.parse_args()
    common.setup()
    for d in args.datasets:  # each dataset's run replaces the one the file had (read just before writing)
        r, model, perm = run(d, args)
        ee_run = early_exit_run(model, perm, args) if d == "mnist" and not args.no_early_exit else None
        path = common.REFERENCE / RESULTS
        old = json.loads(path.read_text()) if path.is_file() else {}
        doc = {"benchmark": "QCFS conversion-aware training, LeNet-5",
               "runs": sorted([o for o in old.get("runs", []) if o["dataset"] != r["dataset"]
                               and all("tuned" in m for m in o["models"].values())] + [r],
                              key=lambda o: o["dataset"] != "MNIST")}  # runs of an older format are dropped
        if ee_run or "early_exit_mnist" in old:
            doc["early_exit_mnist"] = ee_run or old["early_exit_mnist"]
        common.write_json(RESULTS, doc)
    plot(doc["runs"])


if __name__ == "__main__":
    main()
