"""Energy model against published hardware measurements (issue 11).

Each public measured case of ``ENERGY_SOURCES.md`` is rebuilt as a user would: the
network is built in torch, converted with ``snn.convert``, simulated with
``snn.simulate`` and priced with ``snn.energy_report`` on the device's profile. Printed
per case: predicted and measured energy per inference (dynamic and total, as measured),
their ratio, the latency where the source gives it, and which constants were calibrated
on which case (at most one per device; the calibrated value is re-derived here from the
measurement and compared with the profile's). Writes
``results/reference/energy_validation.json`` and ``energy_validation.png`` (predicted
against measured, log-log, with the 2x band).

Networks (weights are random: the cases are dominated by platform terms and dense
counts, which do not depend on trained values):

* keyword spotter, 390-256-256-29 MLP (Blouw et al. 2019): the SNN on Loihi at T=10 with
  Poisson input spikes (nengo-loihi injects spikes; 10 steps per inference), the ANN on
  the Quadro K4000 (batch 1 to 64), Xeon E5-2630, Jetson TX1 and Movidius NCS;
* ResNet-50 (bottleneck v1.5, 224x224, ~4 GMAC), built here without torchvision: the ANN
  on 8x H100 SXM (DGX-H100, MLPerf v3.1 MaxQ Offline) and Jetson AGX Orin (MaxQ Offline
  and SingleStream). Its SNN is simulated for 2 steps on one image, only so that the
  report can be built as for any network (the ANN's counts do not depend on it).

    python experiments/bench/energy_validation.py
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

BLOUW = "Blouw et al., NICE 2019, Table 1 and abr/power_benchmarks logs"
MLPERF = "MLPerf Inference v3.1 closed, NVIDIA (mlcommons/inference_results_v3.1)"
KWS_BATCH_DYN_MJ = {1: 29.7, 2: 14.5, 4: 7.32, 8: 3.60, 16: 1.87, 32: 1.05, 64: 0.727}
OFFLINE_BATCH = 2048  # MLPerf's offline batch is not in the stored files; see the sensitivity printed below


def case(name, device, profile, net, side, batch, quantity, measured_mj, source, latency_s=None):
    return {"case": name, "device": device, "profile": profile, "network": net, "side": side, "batch": batch,
            "quantity": quantity, "measured_j": measured_mj * 1e-3, "source": source, "measured_latency_s": latency_s}


CASES = [
    case("kws-loihi", "Loihi", "loihi", "kws", "snn", 1, "dynamic", 0.27, BLOUW, 1 / 296),
    case("kws-loihi", "Loihi", "loihi", "kws", "snn", 1, "total", 0.37, BLOUW, 1 / 296),
    case("kws-loihi (SANA-FE per-op energies)", "Loihi", "loihi-sanafe", "kws", "snn", 1, "dynamic", 0.27, BLOUW,
         1 / 296),
    case("kws-loihi (SANA-FE per-op energies)", "Loihi", "loihi-sanafe", "kws", "snn", 1, "total", 0.37, BLOUW,
         1 / 296),
    *[case(f"kws-k4000-bs{b}", "Quadro K4000", "quadro-k4000", "kws", "ann", b, "dynamic", mj, BLOUW)
      for b, mj in KWS_BATCH_DYN_MJ.items()],
    case("kws-k4000-bs1", "Quadro K4000", "quadro-k4000", "kws", "ann", 1, "total", 49.1, BLOUW, 1 / 770.39),
    case("kws-xeon", "Xeon E5-2630", "xeon-e5-2630", "kws", "ann", 1, "dynamic", 6.3, BLOUW, 1 / 1813.63),
    case("kws-xeon", "Xeon E5-2630", "xeon-e5-2630", "kws", "ann", 1, "total", 15.7, BLOUW, 1 / 1813.63),
    case("kws-jetson-tx1", "Jetson TX1", "jetson-tx1", "kws", "ann", 1, "dynamic", 5.6, BLOUW, 1 / 419),
    case("kws-jetson-tx1", "Jetson TX1", "jetson-tx1", "kws", "ann", 1, "total", 11.9, BLOUW, 1 / 419),
    case("kws-movidius-ncs", "Movidius NCS", "movidius-ncs", "kws", "ann", 1, "dynamic", 1.5, BLOUW, 1 / 300),
    case("kws-movidius-ncs", "Movidius NCS", "movidius-ncs", "kws", "ann", 1, "total", 2.2, BLOUW, 1 / 300),
    case("resnet50-dgx-h100-offline", "H100 SXM (DGX-H100 MaxQ)", "h100-sxm", "resnet50", "ann", OFFLINE_BATCH,
         "total", 8.20, MLPERF + ": 3,893 W wall, 474,849 img/s", OFFLINE_BATCH * 8 / 474849),
    case("resnet50-orin-offline", "Jetson AGX Orin (MaxQ)", "jetson-agx-orin", "resnet50", "ann", OFFLINE_BATCH,
         "total", 6.41, MLPERF + ": 3,526 img/s", OFFLINE_BATCH / 3526.29),
    case("resnet50-orin-singlestream", "Jetson AGX Orin (MaxQ)", "jetson-agx-orin", "resnet50", "ann", 1, "total",
         19.5, MLPERF + ": mean latency 1.42 ms", 1.421479e-3),
]


# Where each calibrated constant was fitted: (profile) -> (constant, batch of the case whose
# measured latency it reproduces). The energy of that case is still predicted (from the
# latency and the sourced powers), but its latency is not, so its row says "calibrated".
CALIBRATION = {"loihi": ("t_host_step_s", 1), "loihi-sanafe": ("t_host_step_s", 1), "quadro-k4000": ("t_call_s", 1),
               "xeon-e5-2630": ("t_call_s", 1), "jetson-tx1": ("t_call_s", 1), "movidius-ncs": ("t_call_s", 1),
               "h100-sxm": ("efficiency", OFFLINE_BATCH)}


# --------------------------------------------------------------------------- networks
def kws_model():
    """The keyword spotter's architecture (Blouw 2019; nengo-loihi keyword-spotting example)."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(390, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                               torch.nn.ReLU(), torch.nn.Linear(256, 29))


def resnet50():
    """ResNet-50 (bottleneck blocks, stride on the 3x3 conv as in torchvision's v1.5), random weights."""
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, width: int, stride: int):
            super().__init__()
            cout = 4 * width
            self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
            self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
            self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()
            self.down = None if stride == 1 and cin == cout else \
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            h = self.relu(self.bn1(self.conv1(x)))
            h = self.relu(self.bn2(self.conv2(h)))
            return self.relu(self.bn3(self.conv3(h)) + (x if self.down is None else self.down(x)))

    class ResNet50(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
            blocks, cin = [], 64
            for width, n, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
                for b in range(n):
                    blocks.append(Bottleneck(cin, width, stride if b == 0 else 1))
                    cin = 4 * width
            self.layers = nn.Sequential(*blocks)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(2048, 1000)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))

    torch.manual_seed(0)
    return ResNet50().eval()


def build(name: str):
    """(net, simulation result) of a case's network, converted and simulated as a user would."""
    import torch

    import snn

    if name == "kws":
        x = torch.rand(512, 390)  # MFCC-like features scaled to [0, 1] (Poisson rates)
        net = snn.convert(kws_model().eval(), x)
        return net, snn.simulate(net, x[:64], timesteps=10, encoding="poisson", seed=0)
    x = torch.rand(4, 3, 224, 224)
    net = snn.convert(resnet50(), x, method="max")
    return net, snn.simulate(net, x[:1], timesteps=2, record="totals")


# --------------------------------------------------------------------------- calibration
def _latency(tot, prof, side: str, batch: int, **values) -> float:
    from snn.energy import price

    p = dataclasses.replace(prof, values={**prof.values, **values})
    return getattr(price(tot, p, batch), f"{side}_latency_s")


def derive(const: str, tot, prof, side: str, batch: int, measured_latency: float) -> float:
    """The calibrated constant re-derived from the measured latency of its case."""
    if const == "t_host_step_s":  # T * (t_host + chip step) = measured latency per inference
        return (measured_latency - _latency(tot, prof, side, batch, t_host_step_s=0.0)) / tot.timesteps
    if const == "t_call_s":  # t_call + kernels x t_kernel + roofline = measured time per call
        return measured_latency - _latency(tot, prof, side, batch, t_call_s=0.0)
    if const == "efficiency":  # fixed + roofline / efficiency = measured time per call
        one, half = _latency(tot, prof, side, batch, efficiency=1.0), _latency(tot, prof, side, batch, efficiency=0.5)
        roof = half - one
        return roof / (measured_latency - (one - roof))
    raise ValueError(const)


def main() -> None:
    common.setup()
    import snn
    from snn.energy import PROFILES

    t0 = time.perf_counter()
    built = {n: build(n) for n in ("kws", "resnet50")}
    print(f"built, converted and simulated both networks in {time.perf_counter() - t0:.1f} s")
    reports = {}
    rows = []
    for c in CASES:
        key = (c["network"], c["batch"])
        if key not in reports:
            net, res = built[c["network"]]
            profs = sorted({k["profile"] for k in CASES if (k["network"], k["batch"]) == key})
            reports[key] = snn.energy_report(net, res, hardware=profs, batch_size=c["batch"], name=c["network"])
        rep = reports[key]
        e = rep.energy[c["profile"]]
        pred = e[f"{c['side']}_{c['quantity']}_j"]
        lat = e[f"{c['side']}_latency_s"]
        const, cal_batch = CALIBRATION.get(c["profile"], (None, None))
        rows.append({**c, "predicted_j": pred, "ratio": pred / c["measured_j"],
                     "within_2x": 0.5 <= pred / c["measured_j"] <= 2.0, "predicted_latency_s": lat,
                     "latency_ratio": lat / c["measured_latency_s"] if c["measured_latency_s"] else None,
                     "calibrated_here": const if cal_batch == c["batch"] else None,
                     "device_calibrated": dict(PROFILES[c["profile"]].calibrated), "counts": {"macs_dense": rep.totals.macs_dense,
                                                             "synops": rep.totals.synops,
                                                             "ann_kernels": rep.totals.ann_kernels,
                                                             "ann_io_elements": rep.totals.ann_io_elements}})

    # the calibrated constants, re-derived from their measurements
    assert set(CALIBRATION) == {n for n, p in PROFILES.items() if p.calibrated}, "CALIBRATION is out of date"
    derived = []
    for name, (const, batch) in CALIBRATION.items():
        prof = PROFILES[name]
        assert set(prof.calibrated) == {const}, f"{name}: at most one calibrated constant per device"
        c = next(k for k in CASES if k["profile"] == name and k["batch"] == batch and k["measured_latency_s"])
        tot = reports[(c["network"], batch)].totals
        value = derive(const, tot, prof, c["side"], batch, c["measured_latency_s"])
        derived.append({"profile": name, "constant": const, "profile_value": prof.values[const],
                        "derived_value": value, "calibrated_on": prof.calibrated[const], "case": c["case"]})

    print(f"\n{'case':38s} {'profile':16s} {'qty':7s} {'bs':>5s} {'predicted mJ':>12s} {'measured mJ':>11s} "
          f"{'ratio':>6s} {'2x':>3s} {'latency pred/meas':>17s}  calibrated on this case")
    for r in rows:
        lr = f"{r['latency_ratio']:.2f}" if r["latency_ratio"] is not None else "-"
        print(f"{r['case']:38s} {r['profile']:16s} {r['quantity']:7s} {r['batch']:5d} {1e3 * r['predicted_j']:12.4g} "
              f"{1e3 * r['measured_j']:11.4g} {r['ratio']:6.2f} {'ok' if r['within_2x'] else 'NO':>3s} {lr:>17s}  "
              f"{r['calibrated_here'] or '-'}")
    print("\ncalibrated constants (at most one per device), re-derived from the measurement they were fitted to:")
    for d in derived:
        print(f"  {d['profile']:16s} {d['constant']:14s} profile {d['profile_value']:.4g}, derived here "
              f"{d['derived_value']:.4g}  <- {d['calibrated_on']}")
    uncal = sorted({r["profile"] for r in rows} - {d["profile"] for d in derived})
    print(f"  no calibrated constant: {', '.join(uncal)}")
    outside = [r for r in rows if not r["within_2x"]]
    print(f"\n{len(rows) - len(outside)} of {len(rows)} cases within 2x" + (
        "; outside: " + ", ".join(f"{r['case']} {r['quantity']} ({r['ratio']:.2f})" for r in outside) if outside else ""))
    # sensitivity of the offline cases to the (unsourced) MLPerf batch size
    for prof in ("h100-sxm", "jetson-agx-orin"):
        net, res = built["resnet50"]
        small = snn.energy_report(net, res, hardware=[prof], batch_size=256).energy[prof]["ann_total_j"]
        big = reports[("resnet50", OFFLINE_BATCH)].energy[prof]["ann_total_j"]
        print(f"  {prof}: total at batch 256 / batch {OFFLINE_BATCH} = {small / big:.3f}")

    common.write_json("energy_validation.json", {
        "benchmark": "energy model against published hardware measurements (issue 11)",
        "note": "predicted = snn.energy_report on the device profile; measured = the source's figure; ratio = "
                "predicted / measured; networks with random weights (platform terms and dense counts dominate)",
        "cases": rows, "calibrated": derived, "offline_batch": OFFLINE_BATCH})
    plot(rows, common.REFERENCE / "energy_validation.png")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from snn.util import atomic_path

    fig, ax = plt.subplots(figsize=(7, 6))
    lo, hi = 1e-4, 1e-1
    xs = np.geomspace(lo, hi, 10)
    ax.fill_between(xs, xs / 2, xs * 2, color="0.9", label="within 2x")
    ax.plot(xs, xs, color="0.5", lw=1)
    for r in rows:
        marker = "o" if r["quantity"] == "dynamic" else "s"
        ax.plot(r["measured_j"], r["predicted_j"], marker, color="tab:blue" if r["side"] == "snn" else "tab:orange",
                ms=6, mfc="none" if r["quantity"] == "total" else None)
        ax.annotate(f"{r['profile']} bs{r['batch']} {r['quantity'][:3]}", (r["measured_j"], r["predicted_j"]),
                    fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured J per inference")
    ax.set_ylabel("predicted J per inference (snn.energy_report)")
    ax.set_title("Energy model vs published measurements\n(circles: dynamic, squares: total; blue SNN, orange ANN)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    with atomic_path(path) as tmp:  # results are written atomically (DESIGN.md rule 7)
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    print(f"wrote {path.relative_to(common.ROOT)}")


if __name__ == "__main__":
    main()
