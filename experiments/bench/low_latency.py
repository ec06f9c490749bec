"""Low-latency conversion on CIFAR-10 (JPEG q75 copy): snn against SpikingJelly's ann2snn
recipes, on the same pretrained CIFAR ResNets, in the same run.

Peers, each simulated on the same test images with constant input:

* ``snn default``: ``snn.convert(model, calib)`` (percentile 99.99, one scale per layer,
  half-charged membranes), one run of ``max(T)`` steps (its accuracy after every step);
* ``snn timesteps=T``: ``snn.convert(model, calib, timesteps=T)``, tuned for each ``T``
  (scales minimising the T-step quantisation error, channel-wise, layer-wise bias
  correction on ``--calib-steps-samples`` simulated samples, burst spikes for T <= 16:
  :func:`snn.conversion.auto_burst`, or burst 4 and signed where burst 2 disagrees with
  the ANN on the calibration samples: :data:`snn.conversion.AUTO_AGREEMENT`), simulated
  ``T`` steps, with the SynOps per image of its first ``--synops-n`` test images
  (``snn.energy_report``);
* ``snn timesteps=T, burst=1`` (``ours-plain``, T <= 16): the same with plain 0/1 spikes;
* ``snn timesteps=T, burst=2`` (``ours-b2``, T <= 16): the same with burst 2 named;
* ``snn timesteps=T, burst=4, signed`` (``ours-b4s``): up to 4 spikes per step and
  negative spikes (the deep ResNets);
* ``SJ rate 99.9%`` and ``SJ rate max``: ``FXConverter(RateCodingRecipe(mode="99.9%"))``
  and ``mode="max"`` (per-layer scale at the 99.9th percentile or at the maximum);
* ``SJ LTB``: ``FXConverter(LocalThresholdBalancingRecipe())`` (channel-wise thresholds,
  half-threshold IF neurons; Bu et al. CVPR 2025), read out from step 1. Its thresholds
  are learnt by an iterative rule, one update per calibration batch from zero (each adds
  twice the mean overflow above the threshold), so it is calibrated on
  ``--sj-ltb-calib`` training images (default all 50,000, as SpikingJelly's ImageNet LTB
  example; batches of 128): with the 512 images of the other peers it stays at chance;
* ``SJ LTB + delay``: the same network read out after SpikingJelly's delay-start estimate
  ``estimate_delay_start(net, loader, T)`` for each ``T`` (delayed evaluation).

``resnetN-qcfsL`` (for example ``resnet20-qcfs4``) is the pretrained ResNet-N with its ReLUs
made QCFS with L levels and fine-tuned (:func:`load_model`, :func:`qcfs_recipe`; the committed
checkpoint is loaded where it exists); SpikingJelly's recipes do not run on it (they convert
ReLUs, not QCFS activations).

SpikingJelly's networks run their own step loop (``functional.reset_net`` then ``T``
calls); their outputs after every step are kept, so one run of ``max(T)`` steps gives the
plain read-out at every ``T`` and the delayed one for every (T, delay). Calibration: 512
training images (seed 0) for every peer but SJ LTB. Results accumulate in
``results/reference/low_latency.json`` (a rerun skips what is there for the same test
size), with an accuracy-vs-T plot per model.

    python experiments/bench/low_latency.py --models resnet20 --timesteps 4 8 16 32 64 [--n-test 10000]
        [--peers ours ours-plain ours-b2 ours-b4s default sj-rate sj-max sj-ltb] [--sj-n-test 2000] [--early-exit]

Early exit (``--early-exit``, :mod:`snn.early_exit`): the network converted for T=32
(``--ee-steps``; ``--ee-convert 16``: converted with ``timesteps=16`` and run for at most
``--ee-steps``), the trust factor ``beta`` picked on 2,000 training images (the smallest
whose accuracy there is not below the full T steps'), then the test set; the energy saved
from re-simulating each exit-step group of the first 2,000 test images, priced by
``snn.energy_report``.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

import common

RESULTS = "low_latency.json"
SJ_RATE_MODES = {"sj-rate": "99.9%", "sj-max": "max"}
# QCFS fine-tuning of a pretrained CIFAR ResNet (model name "resnetN-qcfsL"): SGD with momentum
# 0.9, cosine from lr 0.01, weight decay 5e-4, batch 128, mirror and 4-pixel shift augmentation.
QCFS_FT = {"epochs": 12, "lr": 0.01, "batch_size": 128, "seed": 0, "optimizer": "sgd", "schedule": "cosine",
           "weight_decay": 5e-4, "augment": "flip_crop"}
# Epochs for the deeper ResNets, sized for 2 CPU cores (one epoch of ResNet-56 takes about
# 2.8x ResNet-20's ~285 s on one thread); ResNet-20's test accuracy was 81.8 % after its first
# epoch and 84.8 % after 12.
QCFS_EPOCHS = {"resnet32": 3, "resnet44": 3, "resnet56": 3}


def qcfs_recipe(base: str) -> dict:
    """The fine-tuning arguments of ``snn.train.train`` for the QCFS ``base`` network."""
    return {**QCFS_FT, "epochs": QCFS_EPOCHS.get(base, QCFS_FT["epochs"])}


def qcfs_checkpoint(name: str) -> Path:
    """``results/reference/checkpoints/resnetN-cifar10-qcfsL.safetensors`` for ``resnetN-qcfsL``."""
    base, levels = name.split("-qcfs")
    return common.REFERENCE / "checkpoints" / f"{base}-cifar10-qcfs{levels}.safetensors"


def load_model(name: str) -> torch.nn.Module:
    """The pretrained CIFAR ResNet ``name`` (``resnetN``), or for ``resnetN-qcfsL`` that network
    with its ReLUs made QCFS with L levels (thresholds from 256 training images) and fine-tuned
    on the training split (:func:`qcfs_recipe`); its committed checkpoint is loaded where it holds
    this very recipe (its ``how``), else it is fine-tuned and written."""
    from snn import data, train, zoo

    if "-qcfs" not in name:
        return zoo.load_pretrained(name)
    base, levels = name.split("-qcfs")
    recipe = qcfs_recipe(base)
    how = (f"{base} pretrained (snn.zoo.load_pretrained), snn.zoo.qcfs(levels={levels}, thresholds from the first 256 "
           f"training images), fine-tuned on the CIFAR-10 JPEG q75 training split ({recipe}) by "
           f"experiments/bench/low_latency.py")
    ck = qcfs_checkpoint(name)
    if ck.is_file() and train._read_checkpoint(ck)[1].get("how") == how:
        model = zoo.qcfs(zoo.load_pretrained(base), int(levels))
        train.load_checkpoint(model, ck)
        return model.eval()
    xtr, ytr = data.load_dataset("cifar10", "train")
    x, y = data.load_dataset("cifar10", "test")
    model = zoo.qcfs(zoo.load_pretrained(base), int(levels), calibration=torch.tensor(xtr[:256]))
    print(f"fine-tuning {name}: {recipe}", flush=True)
    t0 = time.perf_counter()
    hist = train.train(model, xtr, ytr, **recipe, x_val=x, y_val=y)
    seconds = time.perf_counter() - t0
    ck.parent.mkdir(parents=True, exist_ok=True)
    train.save_checkpoint(model, ck, {"how": how, "levels": int(levels), "train_seconds": seconds,
                                      "threads": torch.get_num_threads(), "history": hist})
    print(f"fine-tuned {name} in {seconds:.0f} s: test accuracy {hist[-1]['val_acc']:.4f}; wrote {ck}", flush=True)
    return model.eval()


def _load() -> dict:
    path = common.REFERENCE / RESULTS
    return json.loads(path.read_text()) if path.is_file() else {"benchmark": "low-latency conversion", "runs": {}}


def _save(doc: dict, key: str) -> None:
    """Write the run ``key`` of ``doc``, merged peer by peer into the file as it is now, so
    that runs of this script for different peers or models in parallel processes keep each
    other's results (a process writes only the run it is measuring)."""
    now = _load()
    _merge(now["runs"], {key: doc["runs"][key]})
    common.write_json(RESULTS, now)


def _merge(old: dict, new: dict) -> None:
    """``old`` updated with ``new`` recursively: dicts merged key by key, other values replaced."""
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(old.get(k), dict):
            _merge(old[k], v)
        else:
            old[k] = v


def sj_model(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` that SpikingJelly's FX recipes accept: each option-A shortcut
    (slice + ``F.pad``, a function node its step-mode adapter refuses) becomes the fixed
    1x1 strided convolution that computes the same thing exactly (as snn's tracer reads it)."""
    from snn.trace import OptionAShortcut

    m = copy.deepcopy(model)
    for name, mod in list(m.named_modules()):
        if isinstance(mod, OptionAShortcut):
            conv = torch.nn.Conv2d(mod.in_planes, mod.planes, 1, stride=mod.stride, bias=False)
            w = torch.zeros_like(conv.weight)
            w[torch.arange(mod.in_planes) + mod.pad, torch.arange(mod.in_planes), 0, 0] = 1.0
            conv.weight.data.copy_(w)
            parent, _, child = name.rpartition(".")
            setattr(m.get_submodule(parent) if parent else m, child, conv)
    return m.eval()


def sj_outputs(model: torch.nn.Module, recipe: str, calib: np.ndarray, x: np.ndarray, T: int, batch: int) -> tuple:
    """SpikingJelly's converted network's output at every step (T, N, K), its delay-start
    estimate for every T (LTB) and the seconds it took."""
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.ann2snn import (FXConverter, LocalThresholdBalancingRecipe,
                                                       RateCodingRecipe, estimate_delay_start)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.tensor(calib)), batch_size=128)
    rec = RateCodingRecipe(dataloader=loader, mode=SJ_RATE_MODES[recipe]) if recipe in SJ_RATE_MODES else \
        LocalThresholdBalancingRecipe(dataloader=loader)
    t0 = time.perf_counter()
    net = FXConverter(rec, device="cpu").convert(sj_model(model)).eval()
    delays = {}
    if recipe == "sj-ltb":
        for t in range(1, T + 1):
            delays[t] = int(estimate_delay_start(net, loader, "cpu", t))  # its default: one calibration batch
    outs = np.zeros((T, len(x), 10), np.float32)
    with torch.no_grad():
        for s in range(0, len(x), batch):
            functional.reset_net(net)
            xb = torch.tensor(x[s:s + batch])
            for t in range(T):
                outs[t, s:s + batch] = net(xb).numpy()
    functional.reset_net(net)
    return outs, delays, time.perf_counter() - t0


def run_model(name: str, args, doc: dict) -> None:
    import snn
    from snn import data, train
    from snn.conversion import auto_burst

    key = f"{name}-n{args.n_test}"
    run = doc["runs"].setdefault(key, {"model": name, "n_test": args.n_test, "peers": {}})
    model = load_model(name)
    xtr, _ = data.load_dataset("cifar10", "train")
    x, y = data.load_dataset("cifar10", "test", limit=args.n_test)
    perm = np.random.default_rng(0).permutation(len(xtr))
    calib = xtr[perm[:512]]
    if "ann_acc" not in run:
        run["ann_acc"] = train.evaluate(model, x, y)
        run["dataset"] = data.dataset_label("cifar10")
        _save(doc, key)
    print(f"\n## {name}: ANN {100 * run['ann_acc']:.2f} % on {args.n_test} test images ({run['dataset']})", flush=True)
    Tmax = max(args.timesteps)
    peers = run["peers"]
    if "default" in args.peers and len(peers.get("default", {}).get("curve", [])) < Tmax:
        t0 = time.perf_counter()
        net = snn.convert(model, calib)
        acc = snn.simulate(net, x, Tmax, record="none", batch_size=args.batch).accuracy(y)
        peers["default"] = {"curve": acc.tolist(), "seconds": time.perf_counter() - t0,
                            "settings": "snn.convert(model, calib): percentile 99.99, layer-wise, v_init 0.5"}
        _save(doc, key)
    for peer, kw in (("ours", {}), ("ours-plain", {"burst": 1}), ("ours-b2", {"burst": 2}),
                     ("ours-b4s", {"burst": 4, "signed": True})):
        if peer not in args.peers:
            continue
        ours = peers.setdefault(peer, {"at": {}, "seconds": {}, "choices": {}, "curve": {}, "synops": {}})
        for T in args.timesteps:
            if str(T) in ours["at"] or (peer in ("ours-plain", "ours-b2") and auto_burst(T) == 1):
                continue
            t0 = time.perf_counter()
            net = snn.convert(model, calib, timesteps=T, calibrate_samples=args.calib_steps_samples, **kw)
            t1 = time.perf_counter()
            res = snn.simulate(net, x, T, record="none", batch_size=args.batch)
            acc = res.accuracy(y)
            ours["at"][str(T)] = float(acc[-1])
            ours["curve"][str(T)] = acc.tolist()
            ours["seconds"][str(T)] = {"convert": t1 - t0, "simulate": res.wall_time_s}
            ours["choices"][str(T)] = net.meta["choices"]
            if args.synops_n:
                counted = snn.simulate(net, x[:args.synops_n], T, record="totals", batch_size=args.batch)
                ours["synops"][str(T)] = float(snn.energy_report(net, counted, hardware=["45nm-fp32"]).totals.synops)
                ours["synops_images"] = args.synops_n
            print(f"  snn {peer} timesteps={T}: {100 * acc[-1]:.2f} % (convert {t1 - t0:.0f} s, simulate "
                  f"{res.wall_time_s:.0f} s), burst {net.meta['choices']['burst']}"
                  + (", signed" if net.meta["choices"]["signed"] else ""), flush=True)
            _save(doc, key)
    sj_x, sj_y = x[:args.sj_n_test], y[:args.sj_n_test]
    for recipe in ("sj-rate", "sj-max", "sj-ltb"):
        n_calib = args.sj_ltb_calib if recipe == "sj-ltb" else len(calib)
        have = peers.get(recipe, {})
        if recipe not in args.peers or "-qcfs" in name or (
                len(have.get("curve", [])) >= Tmax and have.get("calibration_images", 512) == n_calib):
            continue
        sj_calib = xtr[perm[:n_calib]] if recipe == "sj-ltb" else calib
        outs, delays, secs = sj_outputs(model, recipe, sj_calib, sj_x, Tmax, args.batch)
        cum = np.cumsum(outs, axis=0)
        entry = {"n_test": len(sj_x), "seconds": secs, "calibration_images": n_calib,
                 "curve": [float((cum[t].argmax(-1) == sj_y).mean()) for t in range(Tmax)]}
        if recipe == "sj-ltb":
            entry["delay"] = {str(t): d for t, d in delays.items()}
            entry["delayed_curve"] = [float(((cum[t] - (cum[delays[t + 1] - 1] if delays[t + 1] else 0)).argmax(-1)
                                             == sj_y).mean()) for t in range(Tmax)]
        peers[recipe] = entry
        print(f"  {recipe}: done in {secs:.0f} s on {len(sj_x)} images", flush=True)
        _save(doc, key)
    table(run, args.timesteps)
    plot(run, name)


BETAS = (1.0, 0.5, 0.3, 0.2, 0.15, 0.1, 0.07, 0.05, 0.03, 0.02, 0.01)


def early_exit_run(name: str, args, doc: dict) -> None:
    """Early exit on the network tuned for T = --ee-steps: the trust factor beta is picked on
    training images (the smallest whose accuracy there is not below that of the full T
    steps), then applied to the test images; energy from the per-group re-simulation."""
    import snn
    from snn import data
    from snn import early_exit as ee

    T, conv = args.ee_steps, args.ee_convert or args.ee_steps
    key = f"{name}-n{args.n_test}"
    run = doc["runs"][key]
    slot = "early_exit" if conv == T else f"early_exit_convert{conv}"
    if run.get(slot, {}).get("steps") == T:
        return
    model = load_model(name)
    xtr, ytr = data.load_dataset("cifar10", "train")
    x, y = data.load_dataset("cifar10", "test", limit=args.n_test)
    perm = np.random.default_rng(0).permutation(len(xtr))
    calib = xtr[perm[:512]]
    xs, ys = xtr[perm[512:512 + args.ee_pick]], ytr[perm[512:512 + args.ee_pick]]
    t0 = time.perf_counter()
    net = snn.convert(model, calib, timesteps=conv, calibrate_samples=args.calib_steps_samples)
    bound = ee.readout_bound(net.graph)
    delay = net.graph.nodes[net.graph.output].delay
    pick_out = snn.simulate(net, xs, T, record="none", batch_size=args.batch).outputs
    full_pick = float((pick_out[-1].argmax(-1) == ys).mean())
    pick = {}
    for b in BETAS:
        t = ee.exit_steps(pick_out, bound, b, delay)
        pick[b] = (float((pick_out[t - 1, np.arange(len(xs))].argmax(-1) == ys).mean()), float(t.mean()))
    beta = min(b for b in BETAS if pick[b][0] >= full_pick)
    out = snn.simulate(net, x, T, record="none", batch_size=args.batch).outputs
    test = {}
    for b in BETAS:
        t = ee.exit_steps(out, bound, b, delay)
        test[str(b)] = {"accuracy": float((out[t - 1, np.arange(len(x))].argmax(-1) == y).mean()),
                        "mean_steps": float(t.mean())}
    n_e = min(args.ee_energy_n, len(x))
    res = ee.early_exit(net, x[:n_e], T, beta, y[:n_e], outputs=out[:, :n_e], hardware=["45nm-fp32", "loihi"],
                        batch_size=args.batch)
    t_all = ee.exit_steps(out, bound, beta, delay)
    run[slot] = {
        "steps": T, "convert_timesteps": conv, "choices": net.meta["choices"], "beta": beta,
        "pick_images": len(xs), "pick_full_accuracy": full_pick,
        "pick": {str(b): {"accuracy": a, "mean_steps": m} for b, (a, m) in pick.items()},
        "full_accuracy": float((out[-1].argmax(-1) == y).mean()), "test": test,
        "accuracy": test[str(beta)]["accuracy"], "mean_steps": float(t_all.mean()),
        "median_steps": float(np.median(t_all)),
        "steps_histogram": {int(k): int(v) for k, v in zip(*np.unique(t_all, return_counts=True))},
        "energy_images": n_e, "energy": res.energy, "energy_subset": res.to_dict(), "seconds": time.perf_counter() - t0}
    e = run[slot]
    print(f"  early exit, converted for T={conv}, at most {T} steps, beta={beta} (picked on {len(xs)} training "
          f"images): accuracy {100 * e['accuracy']:.2f} % (full T: {100 * e['full_accuracy']:.2f} %), "
          f"mean steps {e['mean_steps']:.2f}, "
          f"energy saved " + ", ".join(f"{p} {100 * v['saved_dynamic']:.1f} %" for p, v in res.energy.items()),
          flush=True)
    _save(doc, key)


def table(run: dict, ts: list[int]) -> None:
    p = run["peers"]
    cols = [("snn default", lambda t: p["default"]["curve"][t - 1] if "default" in p else None),
            ("snn timesteps=T", lambda t: p.get("ours", {}).get("at", {}).get(str(t))),
            ("snn timesteps=T, burst=1", lambda t: p.get("ours-plain", {}).get("at", {}).get(str(t))),
            ("snn timesteps=T, burst=2", lambda t: p.get("ours-b2", {}).get("at", {}).get(str(t))),
            ("snn timesteps=T, burst=4, signed", lambda t: p.get("ours-b4s", {}).get("at", {}).get(str(t))),
            ("SJ rate 99.9%", lambda t: p["sj-rate"]["curve"][t - 1] if "sj-rate" in p else None),
            ("SJ rate max", lambda t: p["sj-max"]["curve"][t - 1] if "sj-max" in p else None),
            ("SJ LTB", lambda t: p["sj-ltb"]["curve"][t - 1] if "sj-ltb" in p else None),
            ("SJ LTB + delay", lambda t: p["sj-ltb"]["delayed_curve"][t - 1] if "sj-ltb" in p else None)]
    print(f"| T | {' | '.join(c for c, _ in cols)} |")
    print("|---|" + "---|" * len(cols))
    for t in ts:
        vals = [f(t) for _, f in cols]
        print(f"| {t} | " + " | ".join("-" if v is None else f"{100 * v:.2f}" for v in vals) + " |")


def plot(run: dict, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = run["peers"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if "default" in p:
        c = p["default"]["curve"]
        ax.plot(range(1, len(c) + 1), [100 * v for v in c], label="snn default (percentile 99.99)")
    if "ours" in p:
        ts = sorted(int(t) for t in p["ours"]["at"])
        ax.plot(ts, [100 * p["ours"]["at"][str(t)] for t in ts], "o-", label="snn timesteps=T")
    for k, mark, lab in (("ours-plain", "s-", "snn timesteps=T, burst=1"),
                         ("ours-b2", "d-", "snn timesteps=T, burst=2"),
                         ("ours-b4s", "^-", "snn timesteps=T, burst=4, signed")):
        if k in p:
            ts = sorted(int(t) for t in p[k]["at"])
            ax.plot(ts, [100 * p[k]["at"][str(t)] for t in ts], mark, label=lab)
    for k, lab in (("sj-rate", "SpikingJelly rate 99.9%"), ("sj-max", "SpikingJelly rate max"),
                   ("sj-ltb", "SpikingJelly LTB")):
        if k in p:
            c = p[k]["curve"]
            ax.plot(range(1, len(c) + 1), [100 * v for v in c], "--", label=f"{lab} (n={p[k]['n_test']})")
    if "sj-ltb" in p:
        c = p["sj-ltb"]["delayed_curve"]
        ax.plot(range(1, len(c) + 1), [100 * v for v in c], ":", label="SpikingJelly LTB + delay-start")
    ax.axhline(100 * run["ann_acc"], color="k", lw=0.8, label=f"ANN {100 * run['ann_acc']:.2f} %")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("timesteps T")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{name}, CIFAR-10 (JPEG q75 copy), {run['n_test']} test images")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    common.write_figure(f"low_latency_{name}.png", fig, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["resnet20"])
    ap.add_argument("--timesteps", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    ap.add_argument("--n-test", type=int, default=10000)
    ap.add_argument("--sj-n-test", type=int, default=None, help="test images for SpikingJelly (default: n-test)")
    ap.add_argument("--sj-ltb-calib", type=int, default=50000,
                    help="training images that calibrate SpikingJelly's LTB recipe (its ImageNet example's default)")
    ap.add_argument("--peers", nargs="+", default=["ours", "ours-plain", "default", "sj-rate", "sj-max", "sj-ltb"])
    ap.add_argument("--batch", type=int, default=50,
                    help="simulation batch (snn.simulate refuses batches its memory estimate says do not fit)")
    ap.add_argument("--calib-steps-samples", type=int, default=256)
    ap.add_argument("--synops-n", type=int, default=200, help="test images whose SynOps are counted (0: none)")
    ap.add_argument("--early-exit", action="store_true", help="also run early exit (network tuned for --ee-steps)")
    ap.add_argument("--ee-steps", type=int, default=32, help="early exit: at most this many steps")
    ap.add_argument("--ee-convert", type=int, default=None,
                    help="early exit: the network converted with timesteps= this (default: --ee-steps)")
    ap.add_argument("--ee-pick", type=int, default=2000, help="training images that pick beta")
    ap.add_argument("--ee-energy-n", type=int, default=2000, help="test images re-simulated for the energy")
    args = ap.parse_args()
    args.sj_n_test = args.sj_n_test or args.n_test
    common.setup()
    doc = _load()
    for name in args.models:
        run_model(name, args, doc)
        if args.early_exit:
            early_exit_run(name, args, doc)


if __name__ == "__main__":
    main()
