"""Benchmark: the brian2 backend against the snntorch backend on MNIST LeNet-5.

The same converted network (the MNIST LeNet-5 of the core issue, shared by the benchmarks:
``common.mnist_lenet()``, converted with :func:`snn.convert`) simulates the first ``--n`` MNIST
test images for ``--timesteps`` steps in both backends, float64, constant encoding,
``record="steps"``. Checks, for every brian2 run: identical per-neuron spike counts (totals
and per step) in every recorded layer and identical predictions; once: equal accuracy at
every step and identical energy reports (:func:`snn.energy_report`).

Timing: both backends are warmed up (snntorch loads its compiled kernels; brian2 compiles its
code on one batch, filling the cache), then ``--repeats`` rounds each run both, alternating
which goes first, and snntorch once more with one torch thread (brian2's generated code runs
on one; on a loaded machine two torch threads can be several times slower than one, which
flatters brian2's ratio); the timed runs include brian2's network construction. Reported: the
median of the per-round ratios brian2/snntorch with their range, the median wall times, the
CPU times (all threads of the process) and the 1-minute load average around every round (the machine is shared; both single process,
torch with its default intra-op threads, brian2's generated code single-threaded).

Memory: for each of ``--memory-batches``, a fresh process simulates ``--memory-n`` images
with brian2 at that batch size and reports its peak resident set (``VmHWM``) and the growth
of the resident set during the simulation (the peak reset with ``/proc/self/clear_refs``
after loading and a first simulation of one batch, which compiles the code). ``--standalone`` also times the cpp_standalone target (build cached, then
one binary run per run of samples), outside the ratio. Writes JSON to
``results/reference/brian2_vs_snntorch.json``.

    SNN_DATA=/work/shared/data python experiments/bench/brian2_vs_snntorch.py
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import common
import snn
from snn import data
from snn.util import atomic_write_text

ROOT = Path(__file__).resolve().parents[2]
SAME = dict(precision="float64", encoding="constant", record="steps")


def _energy(net, res) -> dict | None:
    """The energy report as plain data without its run metadata, or None where snn.energy is missing."""
    try:
        rep = snn.energy_report(net, res)
    except ImportError:
        return None
    from snn.energy.report import jsonable

    d = jsonable(dataclasses.asdict(rep))
    d.pop("meta", None)
    return d


def _identical(a, b) -> bool:
    return (sorted(a.spike_sums) == sorted(b.spike_sums)
            and all(np.array_equal(a.spike_sums[k], b.spike_sums[k]) and np.array_equal(a.step_sums[k], b.step_sums[k])
                    for k in a.spike_sums)
            and np.array_equal(a.predictions, b.predictions))


def _timed(fn, cpu: list | None = None):
    """``(fn(), wall seconds)``; appends the process's CPU seconds (all threads) to ``cpu``."""
    t0, c0 = time.perf_counter(), time.process_time()
    res = fn()
    if cpu is not None:
        cpu.append(time.process_time() - c0)
    return res, time.perf_counter() - t0


def _spread(v: list[float]) -> dict:
    return {"median": float(np.median(v)), "min": float(np.min(v)), "max": float(np.max(v)), "runs": [float(x) for x in v]}


def memory_child(net_path: str, n: int, T: int, batch: int, target: str) -> dict:
    """In a fresh process: peak resident set of one brian2 simulation (MiB), after a first one
    that compiled or loaded its code."""
    net = snn.load(net_path)
    x, _ = data.load_dataset("mnist", "test", limit=n)
    # compiles (in this process, with Cython) or loads the code for this batch size: not counted
    snn.simulate(net, x[:batch], T, backend="brian2", target=target, batch_size=batch, **SAME)
    before = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak to now: loading is not counted
        f.write("5")
    t0 = time.perf_counter()
    snn.simulate(net, x, T, backend="brian2", target=target, batch_size=batch, **SAME)
    wall = time.perf_counter() - t0
    status = open("/proc/self/status").read().splitlines()
    peak = next(int(s.split()[1]) for s in status if s.startswith("VmHWM")) / 1024
    return {"batch_size": batch, "n_images": n, "rss_before_mib": before, "peak_rss_mib": peak,
            "growth_mib": max(0.0, peak - before), "wall_s": wall}


def measure_memory(net_path: str, n: int, T: int, batch: int, target: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--memory-child", net_path, str(n), str(T), str(batch), target],
                         capture_output=True, text=True, cwd=Path(__file__).parent)
    if out.returncode != 0:
        return {"batch_size": batch, "error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="test images")
    ap.add_argument("--timesteps", type=int, default=32)
    ap.add_argument("--batch", type=int, default=100, help="brian2's batch size in the timed runs (snntorch: its default)")
    ap.add_argument("--target", default="cython", help="brian2 code generation target")
    ap.add_argument("--repeats", type=int, default=5, help="alternating rounds of both backends")
    ap.add_argument("--memory-batches", default="10,100,1000",
                    help="brian2 batch sizes for the memory probes, smallest first ('' for none)")
    ap.add_argument("--memory-n", type=int, default=1000, help="images per memory probe")
    ap.add_argument("--standalone", action="store_true", help="also time the cpp_standalone target")
    ap.add_argument("--out", default=str(ROOT / "results" / "reference" / "brian2_vs_snntorch.json"))
    ap.add_argument("--memory-child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        os.environ.setdefault("SNN_DATA", str(common.ROOT.parent / "shared" / "data"))
        p, n, T, b, target = args.memory_child
        print(json.dumps(memory_child(p, int(n), int(T), int(b), target)))
        return

    common.setup()
    model, info, net = common.mnist_lenet_snn()
    x, y = data.load_dataset("mnist", "test", limit=args.n)
    T, B = args.timesteps, args.batch
    with torch.no_grad():
        ann_acc = float((model(torch.as_tensor(x)).argmax(1).numpy() == y).mean())

    def ours():
        return snn.simulate(net, x, T, backend="snntorch", **SAME)  # its default batch size

    def ours_1thread():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return ours()
        finally:
            torch.set_num_threads(threads)

    def brian(target=args.target):
        return snn.simulate(net, x, T, backend="brian2", target=target, batch_size=B, **SAME)

    snn.simulate(net, x[:8], 2, backend="snntorch", **SAME)  # loads/compiles its kernels
    _, t_warm = _timed(lambda: snn.simulate(net, x[:B], T, backend="brian2", target=args.target, batch_size=B,
                                            **SAME))
    rounds = []
    for r in range(args.repeats):
        load0 = os.getloadavg()[0]
        cpu_a: list[float] = []
        cpu_b: list[float] = []
        if r % 2 == 0:
            a, t_a = _timed(ours, cpu_a)
            _, t_1 = _timed(ours_1thread)
            b, t_b = _timed(brian, cpu_b)
        else:
            b, t_b = _timed(brian, cpu_b)
            _, t_1 = _timed(ours_1thread)
            a, t_a = _timed(ours, cpu_a)
        rounds.append({"snntorch_s": t_a, "brian2_s": t_b, "ratio": t_b / t_a, "identical": _identical(a, b),
                       "snntorch_1thread_s": t_1, "ratio_over_1thread": t_b / t_1,
                       "cpu_s": {"snntorch": cpu_a[0], "brian2": cpu_b[0]},
                       "first": "snntorch" if r % 2 == 0 else "brian2", "load_avg_1min": [load0, os.getloadavg()[0]]})
        print(f"round {r + 1}/{args.repeats}: snntorch {t_a:6.2f} s (CPU {cpu_a[0]:.2f} s; 1 thread {t_1:.2f} s), "
              f"brian2 {t_b:6.2f} s "
              f"(CPU {cpu_b[0]:.2f} s), ratio {t_b / t_a:5.1f}x, "
              f"identical spikes {rounds[-1]['identical']}, load {load0:.1f}-{os.getloadavg()[0]:.1f}", flush=True)

    standalone = None
    if args.standalone:
        _, t_build = _timed(lambda: brian("cpp_standalone"))  # builds (or reuses) the project
        s, t_s = _timed(lambda: brian("cpp_standalone"))
        standalone = {"wall_s": t_s, "first_call_s": t_build, "identical": _identical(a, s),
                      "ratio_over_snntorch": t_s / float(np.median([r["snntorch_s"] for r in rounds]))}
        print(f"cpp_standalone: {t_s:.2f} s (first call, build included: {t_build:.1f} s), identical spikes "
              f"{standalone['identical']}")

    memory = []
    batches = [int(v) for v in args.memory_batches.split(",") if v]
    if batches:
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "lenet5.h5")
            net.save(path)
            for mb in batches:
                memory.append(measure_memory(path, args.memory_n, T, mb, args.target))
                m = memory[-1]
                print(f"memory, batch {mb}: " + (m["error"] if "error" in m else
                      f"peak {m['peak_rss_mib']:.0f} MiB, growth during the simulation {m['growth_mib']:.0f} MiB"))

    acc_a, acc_b = a.accuracy(y), b.accuracy(y)
    layers = {k: {"spikes_snntorch": int(a.spike_sums[k].sum()), "spikes_brian2": int(b.spike_sums[k].sum()),
                  "identical_totals": bool(np.array_equal(a.spike_sums[k], b.spike_sums[k])),
                  "identical_per_step": bool(np.array_equal(a.step_sums[k], b.step_sums[k]))} for k in a.spike_sums}
    e_a, e_b = _energy(net, a), _energy(net, b)
    ratio = _spread([r["ratio"] for r in rounds])
    ok = [m for m in memory if "error" not in m]
    mem_ratio = {str(m["batch_size"]): m["peak_rss_mib"] / ok[0]["peak_rss_mib"] for m in ok[1:]} if ok else {}
    out = {
        "benchmark": "brian2_vs_snntorch", "model": "lenet5", "dataset": "mnist", "n_images": len(x),
        "timesteps": T, **SAME, "batch_size": {"snntorch": a.batch_size, "brian2": B},
        "ann_accuracy": ann_acc, "train": {**common.MNIST_LENET_TRAIN, "test_acc": info.get("test_acc")},
        "accuracy_snntorch": float(acc_a[-1]), "accuracy_brian2": float(acc_b[-1]),
        "accuracy_equal_every_step": bool(np.array_equal(acc_a, acc_b)),
        "predictions_identical": bool(np.array_equal(a.predictions, b.predictions)),
        "max_abs_output_diff": float(np.abs(a.outputs - b.outputs).max()),
        "layers": layers, "spike_counts_identical": all(r["identical"] for r in rounds),
        "energy_report_identical": None if e_a is None else e_a == e_b,
        "ratio_brian2_over_snntorch": ratio, "target_ratio": 20.0,
        "ratio_brian2_over_snntorch_1thread": _spread([r["ratio_over_1thread"] for r in rounds]),
        "wall_s": {"snntorch": _spread([r["snntorch_s"] for r in rounds]),
                   "snntorch_1thread": _spread([r["snntorch_1thread_s"] for r in rounds]),
                   "brian2": _spread([r["brian2_s"] for r in rounds]), "brian2_warmup_compile": t_warm},
        "cpu_s": {k: _spread([r["cpu_s"][k] for r in rounds]) for k in ("snntorch", "brian2")},
        "rounds": rounds, "cpp_standalone": standalone,
        "memory": {"probes": memory, "smallest_batch": ok[0]["batch_size"] if ok else None,
                   "peak_over_smallest_batch": mem_ratio, "target_ratio": 1.2},
        "brian2": {"target": args.target, "options": b.info["options"], "group": "auto", "run_samples": "auto"},
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "brian2": __import__("brian2").__version__,
                    "load_avg_1min_range": [min(v for r in rounds for v in r["load_avg_1min"]),
                                            max(v for r in rounds for v in r["load_avg_1min"])]},
    }
    print(f"\nLeNet-5 / MNIST, {len(x)} test images, T={T}, float64, constant encoding, brian2 batch {B}")
    print(f"{'':12s} {'accuracy':>9s} {'wall [s], median (min-max)':>28s}")
    print(f"{'ANN':12s} {ann_acc:9.4f}")
    for k, acc in (("snntorch", acc_a), ("brian2", acc_b)):
        w = out["wall_s"][k]
        print(f"{k:12s} {acc[-1]:9.4f} {w['median']:10.2f} ({w['min']:.2f}-{w['max']:.2f})")
    w1, r1 = out["wall_s"]["snntorch_1thread"], out["ratio_brian2_over_snntorch_1thread"]
    print(f"{'snntorch, 1 thread':20s} {w1['median']:10.2f} ({w1['min']:.2f}-{w1['max']:.2f}); brian2 over it: "
          f"{r1['median']:.1f}x ({r1['min']:.1f}-{r1['max']:.1f}x)")
    cpu = out["cpu_s"]
    print(f"CPU time (all threads), median: snntorch {cpu['snntorch']['median']:.2f} s, brian2 "
          f"{cpu['brian2']['median']:.2f} s")
    print(f"ratio brian2/snntorch: {ratio['median']:.1f}x (range {ratio['min']:.1f}-{ratio['max']:.1f}x over "
          f"{len(rounds)} rounds; target <= 20x); brian2 warm-up/compile {t_warm:.1f} s")
    for mb, r in mem_ratio.items():
        print(f"peak memory at batch {mb} / batch {ok[0]['batch_size']}: {r:.2f}x (target <= 1.2x)")
    for k, v in layers.items():
        print(f"  {k:12s} spikes {v['spikes_snntorch']:>10d} vs {v['spikes_brian2']:>10d}  "
              f"identical totals {v['identical_totals']}, per step {v['identical_per_step']}")
    print(f"identical spikes in every round: {out['spike_counts_identical']}; accuracy equal at every step: "
          f"{out['accuracy_equal_every_step']}; energy reports identical: {out['energy_report_identical']}")
    atomic_write_text(args.out, json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
