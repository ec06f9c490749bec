"""The energy model against the published hardware measurements of issue 11: every case
of ``experiments/bench/energy_validation.py`` within 2x, dynamic and total, with the
networks built, converted, simulated and priced as the benchmark (and a user) does.
The keyword-spotter cases are fast; the ResNet-50 cases (a 224x224 network) are slow."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import snn

_path = Path(__file__).resolve().parents[1] / "experiments" / "bench" / "energy_validation.py"
_spec = importlib.util.spec_from_file_location("energy_validation", _path)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.fixture(scope="module")
def built():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = bench.build(name)
        return cache[name]

    return get


def _check(cases, built):
    for c in cases:
        net, res = built(c["network"])
        e = snn.energy_report(net, res, hardware=[c["profile"]], batch_size=c["batch"]).energy[c["profile"]]
        predicted = e[f"{c['side']}_{c['quantity']}_j"]
        assert 0.5 <= predicted / c["measured_j"] <= 2.0, (c["case"], c["quantity"], predicted, c["measured_j"])
        if (c["profile"], c["batch"]) in {(p, b) for p, (_, b) in bench.CALIBRATION.items()} and c["measured_latency_s"]:
            # a constant calibrated on this case's latency reproduces it
            assert e[f"{c['side']}_latency_s"] == pytest.approx(c["measured_latency_s"], rel=0.02), c["case"]


def test_keyword_spotter_cases_within_2x(built):
    _check([c for c in bench.CASES if c["network"] == "kws"], built)


@pytest.mark.slow
def test_resnet50_cases_within_2x(built):
    _check([c for c in bench.CASES if c["network"] == "resnet50"], built)


def test_k4000_energy_per_inference_follows_the_batch_shape(built):
    """Flat per call at small batch (as measured: ~29 mJ per call from batch 1 to 16), so
    per inference it falls as 1/batch; with the profile's measured batch-1 latency."""
    net, res = built("kws")
    per_call = {b: b * snn.energy_report(net, res, hardware=["quadro-k4000"], batch_size=b)
                .energy["quadro-k4000"]["ann_dynamic_j"] for b in bench.KWS_BATCH_DYN_MJ}
    assert max(per_call[b] for b in (1, 2, 4, 8, 16)) / min(per_call[b] for b in (1, 2, 4, 8, 16)) < 1.05
    assert per_call[64] >= per_call[1]


def test_at_most_one_calibrated_constant_per_device():
    from snn.energy import PROFILES

    calibrated = {n: p.calibrated for n, p in PROFILES.items() if p.calibrated}
    assert all(len(c) == 1 for c in calibrated.values())
    assert {n: next(iter(c)) for n, c in calibrated.items()} == {n: k for n, (k, _) in bench.CALIBRATION.items()}
