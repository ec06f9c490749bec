"""Life-cycle report of ``experiments/mnist_lenet.yaml`` (issue 11): the energy and carbon
of training the LeNet-5, converting it, serving it at a deployment volume, and the
embodied carbon of the hardware, for the SNN and the ANN on each deployment profile.

The model is trained here, in a fresh cache (so the training is timed, and measured
with RAPL through Zeus where this machine allows; elsewhere it is estimated from its
FLOPs and labelled so), then the config runs as ``snn run`` would run it, and
``snn.lifecycle`` prices the rest. Writes ``results/reference/lifecycle_mnist_lenet.
{json,md,html}``.

    python experiments/bench/lifecycle.py [--per-day 100000] [--years 3]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

CONFIG = common.ROOT / "experiments" / "mnist_lenet.yaml"
HARDWARE = ["45nm-fp32", "loihi", "loihi2", "gpu-h100", "jetson-agx-orin", "xeon-e5-2630"]
TRAIN_PROFILE = "xeon-e5-2630"  # no profile of this VM's CPU (2 cores of an AMD EPYC): the nearest sourced CPU


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-day", type=float, default=1e5, help="deployment volume: inferences per day")
    ap.add_argument("--years", type=float, default=3.0, help="deployment years")
    args = ap.parse_args()
    common.setup()
    import snn
    from snn.config import load_config
    from snn.energy import Deployment, EnergyReport, Training
    from snn.energy import measure as ms
    from snn.runner import build_model

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(CONFIG, [f"train.cache_dir={tmp}/models", f"energy.hardware={HARDWARE}"])
        why = ms.unavailable("cpu")
        t0 = time.perf_counter()
        if why is None:
            _, meas = ms.measure_run(lambda: build_model(cfg, progress=False), "cpu", "training")
            measured, how = meas.total_j_per_item, f"RAPL through Zeus, {meas.device}, {meas.seconds:.1f} s"
        else:
            build_model(cfg, progress=False)
            measured, how = None, ""
        train_s = time.perf_counter() - t0
        print(f"trained LeNet-5 in {train_s:.1f} s (incl. loading MNIST); training energy "
              + (f"measured: {measured:.4g} J" if measured is not None else f"not measured: {why}"))
        run = snn.run_experiment(cfg, results_dir=Path(tmp) / "results", progress=False)
        rep = EnergyReport.from_json(run.path / "energy.json")
    s = run.summary
    macs = rep.totals.macs_dense
    n_train, n_val, epochs = 60000, 10000, cfg.train.epochs
    # training: forward + backward on every training image, one forward pass of the test split per epoch
    flops = 6.0 * macs * n_train * epochs + 2.0 * macs * n_val * epochs
    training = Training(flops=flops, seconds=train_s, measured_j=measured, measured_how=how)
    lc = snn.lifecycle(rep, deployment=Deployment(args.per_day, args.years), training=training,
                       calibration_samples=cfg.convert.calibration_samples, train_profile=TRAIN_PROFILE,
                       ann_accuracy=s["ann_accuracy"], name="mnist_lenet")
    lc.notes.insert(0, f"Config experiments/mnist_lenet.yaml (energy.hardware set to {', '.join(HARDWARE)}), "
                       f"trained here in {train_s:.1f} s on a 2-core AMD EPYC VM, one thread; ANN "
                       f"{100 * s['ann_accuracy']:.2f} %, SNN {100 * s['snn_accuracy']:.2f} % at T={s['timesteps']} on "
                       f"{s['n_test']} test images. Training FLOPs = 6 x {macs:,} MACs x {n_train:,} images x {epochs} "
                       f"epochs + a {n_val:,}-image test pass per epoch.")
    if measured is None:
        lc.notes.insert(1, f"Training energy not measured: {why}. Every figure is estimated.")
    out = common.REFERENCE
    lc.to_json(out / "lifecycle_mnist_lenet.json")
    lc.to_markdown(out / "lifecycle_mnist_lenet.md")
    lc.to_html(out / "lifecycle_mnist_lenet.html")
    print(lc.markdown())
    print(f"wrote {out.relative_to(common.ROOT)}/lifecycle_mnist_lenet.{{json,md,html}}")


if __name__ == "__main__":
    main()
