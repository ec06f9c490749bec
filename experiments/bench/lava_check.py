"""Ours -> netx file -> Lava's CPU simulator: the same spikes, on an MLP and a CNN.

lava-nc 0.10 needs Python < 3.11, so this script builds a Python 3.10 virtual environment
(``.cache/lava310``, pyenv's 3.10 by default) with lava-nc 0.10.0 and h5py (no torch: lava-nc
does not need it), and runs a child process there. lava-dl's netx loader itself cannot run
(it imports torch 2.3 through slayer, whose only PyPI build is CUDA's, several GB); the child
reads our .net files as netx does (lava-dl 0.6.0's ``NetDict`` and the same weight transforms
as ``netx.hdf5.Network``: the conv kernel flipped and put in Lava's (out, W, H, in) order,
(y, x) strides reversed, a flatten as ``transpose([2, 1, 0]).flatten()``) and builds the
same Lava processes netx builds (``Dense``/``Conv`` + ``LIF`` with ``du = 1``, ``dv = 0``,
``vth = vThMant``, ``bias = bias mantissa``; the floating-point process models, whose
arithmetic on these integer weights is exact), fed with the sample as graded input.

Lava's Dense/Conv processes deliver spikes one step later than ours (no synaptic delay in
snn), so layer ``l`` of Lava lags ours by ``l`` steps; the networks have no biases, so the
shifted trains must be identical. Reported: per layer, the shift found and whether the
spike trains (per sample, neuron and step) are identical, and the readout's agreement.

    python experiments/bench/lava_check.py [--python /root/.pyenv/versions/3.10.13/bin/python]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

import common

VENV = common.ROOT / ".cache" / "lava310"
WHEEL = common.ROOT / ".cache" / "wheels"
T, N = 24, 8

CHILD = r'''
import json, sys, zipfile, types
import numpy as np
work, wheel = sys.argv[1], sys.argv[2]
utils = types.ModuleType("netx_utils")
exec(compile(zipfile.ZipFile(wheel).read("lava/lib/dl/netx/utils.py"), "lava/lib/dl/netx/utils.py", "exec"),
     utils.__dict__)
from lava.proc.io.source import RingBuffer as Source
from lava.proc.io.sink import RingBuffer as Sink
from lava.proc.dense.process import Dense
from lava.proc.conv.process import Conv
from lava.proc.lif.process import LIF
from lava.proc.monitor.process import Monitor
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.magma.core.run_conditions import RunSteps

def run(netfile, x, steps):
    cfg = utils.NetDict(netfile)["layer"]
    shape = tuple(int(v) for v in cfg[0]["shape"])          # (C, H, W) or (F,)
    data = x.transpose(2, 1, 0) if len(shape) == 3 else x    # Lava: (W, H, C)
    src = Source(data=np.repeat(data[..., None], steps, axis=-1).astype(float))
    prev, prev_shape, flatten = src.s_out, data.shape, False
    sinks, probe = {}, None
    for i in range(1, len(cfg)):
        lc = cfg[i]
        kind = lc["type"]
        if kind == "flatten":
            flatten = True
            continue
        n = lc["neuron"]
        if kind == "dense":
            syn = Dense(weights=lc["weight"].astype(float), num_message_bits=24 if i == 1 else 0)
            out_shape = (int(np.prod(lc["shape"])),)
        else:
            w = lc["weight"][:, :, ::-1, ::-1]
            w = w.reshape(w.shape[:4]).transpose((0, 3, 2, 1))   # as netx.hdf5.Network.create_conv
            exp = lambda v: np.array([v, v]) if np.isscalar(v) or np.ndim(v) == 0 else np.asarray(v)[::-1]
            out_shape = tuple(int(v) for v in lc["shape"][::-1])
            syn = Conv(weight=w.astype(float), input_shape=prev_shape, stride=tuple(exp(lc["stride"])),
                       padding=tuple(exp(lc["padding"])), dilation=tuple(exp(lc["dilation"])),
                       groups=int(lc["groups"]), num_message_bits=24 if i == 1 else 0)
        (prev.transpose([2, 1, 0]).flatten() if flatten else prev).connect(syn.s_in)
        flatten = False
        bias = lc["bias"].astype(float) if "bias" in lc.keys() else 0.0
        lif = LIF(shape=out_shape, du=float(n["iDecay"]) / 4096, dv=float(n["vDecay"]) / 4096,
                  vth=float(n["vThMant"]), bias_mant=bias, bias_exp=0)
        syn.a_out.connect(lif.a_in)
        name = lc.f.attrs["snn_neuron_name"]
        if i < len(cfg) - 1:
            sinks[name] = Sink(shape=out_shape, buffer=steps)
            lif.s_out.connect(sinks[name].a_in)
        else:
            probe = (name, Monitor())
            probe[1].probe(lif.v, steps)
            last = lif
        prev, prev_shape = lif.s_out, out_shape
    last.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="floating_pt"))
    out = {k: s.data.get() for k, s in sinks.items()}
    mon = probe[1].get_data()
    v = mon[last.name]["v"] if last.name in mon else next(iter(next(iter(mon.values())).values()))
    out[probe[0]] = np.asarray(v).T
    last.stop()
    return out

req = json.load(open(work + "/request.json"))
res = {}
for net in req["nets"]:
    xs = np.load(work + f"/{net}_x.npy")
    per = [run(work + f"/{net}.net", x, req["steps"]) for x in xs]
    np.savez(work + f"/{net}_lava.npz", **{k: np.stack([p[k] for p in per]) for k in per[0]})
print("lava ran", req["nets"])
'''


def nets():
    import torch
    import torch.nn as nn
    from sklearn.datasets import load_digits

    import snn

    d = load_digits()
    x = (d.data / 16).astype(np.float32)
    y = d.target
    out = {}
    for name, factory, xs in (
            ("mlp", lambda: nn.Sequential(nn.Linear(64, 32, bias=False), nn.ReLU(), nn.Linear(32, 10, bias=False)), x),
            ("cnn", lambda: nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1, bias=False), nn.ReLU(),
                                          nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.ReLU(),
                                          nn.Flatten(), nn.Linear(64, 10, bias=False)), x.reshape(-1, 1, 8, 8))):
        torch.manual_seed(0)
        model = factory()
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        for _ in range(15):
            for s in range(0, 1400, 128):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(torch.tensor(xs[s:s + 128])), torch.tensor(y[s:s + 128])).backward()
                opt.step()
        net = snn.quantize(snn.convert(model.eval(), xs[:1400], reset="zero", v_init=0.0), 8)
        out[name] = (net, xs[1400:1400 + N])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default="/root/.pyenv/versions/3.10.13/bin/python")
    a = ap.parse_args()
    common.setup()
    import snn
    from snn import ir

    wheels = sorted(WHEEL.glob("lava_dl-0.6.0-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.10", "-d", str(WHEEL), "lava-dl==0.6.0"], check=True)
        wheels = sorted(WHEEL.glob("lava_dl-0.6.0-*.whl"))
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([a.python, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "lava-nc==0.10.0", "h5py"], check=True)
    version = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('lava-nc'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    cases = nets()
    report = {"lava_nc": version, "lava_dl_reader": wheels[0].name, "timesteps": T, "samples": N, "nets": {}}
    with tempfile.TemporaryDirectory() as work:
        steps = T + 4
        for name, (net, xs) in cases.items():
            snn.to_lava(net, f"{work}/{name}.net")
            np.save(f"{work}/{name}_x.npy", xs)
        json.dump({"nets": list(cases), "steps": steps}, open(f"{work}/request.json", "w"))
        r = subprocess.run([str(py), "-c", CHILD, work, str(wheels[0])], capture_output=True, text=True)
        if r.returncode:
            print(r.stdout[-3000:], r.stderr[-3000:])
            raise SystemExit("the Lava child failed")
        for name, (net, xs) in cases.items():
            lava = dict(np.load(f"{work}/{name}_lava.npz"))
            per = {}
            ress = [snn.simulate(net, xs[k:k + 1], T, precision="float64", record="steps") for k in range(len(xs))]
            for n, v in net.graph.nodes.items():
                if not isinstance(v, (ir.IF, ir.Readout)):
                    continue
                got = lava[n]  # (N, *Lava shape (W, H, C) or (F,), steps)
                if isinstance(v, ir.IF):
                    ours = np.stack([r.step_sums[n] for r in ress])  # (N, T, C, H, W)
                    g = got.reshape((len(xs),) + tuple(reversed(net.graph.shapes[n])) + (steps,))
                    g = g.transpose((0, g.ndim - 1) + tuple(range(g.ndim - 2, 0, -1)))
                    shifts = [s for s in range(4) if np.array_equal(g[:, s:s + T], ours)]
                    per[n] = {"kind": "if", "spikes": int(ours.sum()), "identical_at_shift": shifts}
                else:
                    ours = np.stack([r.outputs[:, 0] for r in ress])  # (N, T, K)
                    e = net.meta["quantization"]["layers"][net.graph.inputs_of(n)[0]]["exponent"]
                    g = got.reshape(len(xs), -1, steps).transpose(0, 2, 1) * 2.0 ** e
                    shifts = [s for s in range(4) if np.allclose(g[:, s:s + T] / np.arange(1, T + 1)[None, :, None],
                                                                 ours, rtol=1e-12, atol=1e-12)]
                    per[n] = {"kind": "readout", "identical_at_shift": shifts}
                print(f"{name:4s} {n:8s} {per[n]}", flush=True)
            report["nets"][name] = per
    common.write_json("lava_check.json", report)
    bad = [(k, n) for k, per in report["nets"].items() for i, (n, r) in enumerate(per.items())
           if r["identical_at_shift"] != [i + 1]]
    if bad:
        raise SystemExit(f"Lava differs from snn (or at another lag) in {bad}")
    print("identical spikes and readout in every layer, layer l lagging l steps in Lava")


if __name__ == "__main__":
    main()
