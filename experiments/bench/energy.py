"""Energy benchmark (issue 4): the MNIST LeNet-5 (BatchNorm + max-pooling) of the core issue,
converted and simulated at T = 8, 32, 128 on the first ``--n-test`` test images.

Prints, per T: accuracy, SynOps, first-layer MACs, ANN MACs (dense, effective), joules per
inference of the SNN and the ANN on every hardware profile, dynamic and total (batch 1 on
GPUs/CPUs), and their ratio (ANN J / SNN J) on each profile's basis (total where the
profile has a platform tier, else dynamic).
Writes ``results/reference/energy_lenet5_mnist_T{T}.{json,md,html}``, a side-by-side
``energy_lenet5_mnist_compare.md`` and ``energy_lenet5_mnist.json`` (the summary).

Also measures what counting spikes costs: the same simulation with ``record="none"`` and
``record="steps"``, alternated ``--reps`` times, best of each; prints the ratio (target:
at most 1.10).

    python experiments/bench/energy.py [--n-test 1000] [--reps 3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

TIMESTEPS = (8, 32, 128)


def counting_overhead(net, x, timesteps: int, batch: int, reps: int) -> dict:
    """Best-of-``reps`` wall time of simulate(record="none") and (record="steps"), alternated."""
    import snn

    best = {"none": float("inf"), "steps": float("inf")}
    for _ in range(reps):
        for mode in ("none", "steps"):
            t0 = time.perf_counter()
            snn.simulate(net, x, timesteps=timesteps, batch_size=batch, record=mode)
            best[mode] = min(best[mode], time.perf_counter() - t0)
    return {"timesteps": timesteps, "n": len(x), "record_none_s": best["none"], "record_steps_s": best["steps"],
            "ratio": best["steps"] / best["none"], "reps": reps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--overhead-timesteps", type=int, default=32)
    args = ap.parse_args()
    common.setup()
    import snn
    from snn import data, train
    from snn.energy import PROFILES, compare, energy_report

    xtr, _ = data.load_dataset("mnist", "train")
    x, y = data.load_dataset("mnist", "test", limit=args.n_test)
    calib = xtr[np.random.default_rng(0).permutation(len(xtr))[:2048]]
    model, info = common.mnist_lenet()
    ann_acc = train.evaluate(model, x, y)
    print(f"LeNet-5 (max-pool): {'loaded from cache' if info['cached'] else 'trained'}; "
          f"ANN accuracy on {len(x)} test images {100 * ann_acc:.2f} %")
    net = snn.convert(model, calib, method="percentile", percentile=99.99)

    out = common.REFERENCE
    reports, rows = [], []
    for T in TIMESTEPS:
        res = snn.simulate(net, x, timesteps=T, batch_size=args.batch, record="steps")
        rep = energy_report(net, res, hardware=list(PROFILES), x=x, labels=y, target_accuracy=ann_acc - 0.01,
                            name=f"lenet5-mnist-T{T}")
        stem = f"energy_lenet5_mnist_T{T}"
        rep.to_json(out / f"{stem}.json")
        rep.to_markdown(out / f"{stem}.md")
        rep.to_html(out / f"{stem}.html")
        reports.append(rep)
        t = rep.totals
        print(f"\n## T = {T}: SNN accuracy {100 * rep.meta['accuracy']:.2f} % (ANN {100 * ann_acc:.2f} %), "
              f"SynOps {t.synops:.4g}, first-layer MACs {t.input_macs:.4g} (effective "
              f"{t.input_macs_effective:.4g}), ANN MACs {t.macs_dense:.4g} (effective {t.macs_effective:.4g}), "
              f"IF firing rate {t.firing_rate:.4f}, simulated in {res.wall_time_s:.1f} s")
        print(f"{'profile':16s} {'ANN dyn J':>10s} {'ANN tot J':>10s} {'SNN dyn J':>10s} {'SNN tot J':>10s} "
              f"{'ANN/SNN':>8s} {'basis':>8s} {'break-even':>10s}")
        g = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
        for p, e in rep.energy.items():
            be, b = e["break_even_rate"], e["basis"]
            print(f"{p:16s} {g(e['ann_dynamic_j']):>10s} {g(e['ann_total_j']):>10s} {g(e['snn_dynamic_j']):>10s} "
                  f"{g(e['snn_total_j']):>10s} {g(e[f'ratio_{b}']):>8s} {b:>8s} {g(be):>10s}")
            rows.append({"T": T, "profile": p, "accuracy": rep.meta["accuracy"], "synops": t.synops,
                         "input_macs": t.input_macs, "macs_dense": t.macs_dense, "macs_effective": t.macs_effective,
                         **{k: e[k] for k in ("ann_dynamic_j", "ann_total_j", "snn_dynamic_j", "snn_total_j",
                                              "snn_latency_s", "ratio_dynamic", "ratio_total", "basis",
                                              f"snn_{b}_range")}, "break_even_rate": be})
        cheap = rep.per_step["cheapest"]
        print("cheapest T reaching ANN accuracy - 1 %: " + ", ".join(
            f"{p} T={c['timesteps']} ({c['basis']})" if c else f"{p} not reached" for p, c in cheap.items()
            if p in ("loihi", "45nm-fp32")))
    compare(reports).to_markdown(out / "energy_lenet5_mnist_compare.md")

    ov = counting_overhead(net, x, args.overhead_timesteps, args.batch, args.reps)
    print(f"\nspike counting overhead at T={ov['timesteps']}, {ov['n']} images: record='none' {ov['record_none_s']:.2f} s, "
          f"record='steps' {ov['record_steps_s']:.2f} s, ratio {ov['ratio']:.3f} (target <= 1.10; best of "
          f"{ov['reps']}, machine shared with other jobs: noisy)")
    common.write_json("energy_lenet5_mnist.json", {
        "benchmark": "energy per inference, MNIST LeNet-5 (BN + max-pool)", "n_test": len(x), "ann_accuracy": ann_acc,
        "train": info["train_cfg"], "rows": rows, "counting_overhead": ov,
        "files": [f"energy_lenet5_mnist_T{T}.{ext}" for T in TIMESTEPS for ext in ("json", "md", "html")]})


if __name__ == "__main__":
    main()
