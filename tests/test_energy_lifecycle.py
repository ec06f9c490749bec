"""Life-cycle accounting (issue 11): training, conversion, inference at a deployment
volume, embodied carbon; headline metrics and payback, checked by hand; bad inputs."""
from __future__ import annotations

import json

import pytest

import snn
from snn.energy import Deployment, Training, energy_report, grams_co2e, lifecycle
from snn.energy.devices import PROFILES
from snn.errors import SnnError


@pytest.fixture(scope="module")
def report(cnn_net, digits):
    x, y = digits[2][:40].reshape(-1, 1, 8, 8), digits[3][:40]
    res = snn.simulate(cnn_net, x, timesteps=8)
    return energy_report(cnn_net, res, hardware=["loihi", "gpu-h100", "45nm-fp32", "h100-sxm"], x=x, labels=y)


def test_phases_and_headlines_by_hand(report):
    dep = Deployment(inferences_per_day=1e5, years=2)
    tr = Training.from_macs(report.totals.macs_dense, samples=1000, epochs=3, seconds=12.0)
    lc = lifecycle(report, deployment=dep, training=tr, calibration_samples=256, train_profile="xeon-e5-2630",
                   ann_accuracy=0.9, grid_g_per_kwh=400.0, pue=1.2)
    N = 1e5 * 365 * 2
    assert lc.deployment["inferences"] == N
    xeon = PROFILES["xeon-e5-2630"]
    watts = 0.5 * xeon.values["board_power_w"]
    rate = xeon.values["peak_flops"]
    phases = {r["phase"]: r for r in lc.phases}
    train = phases["(a) train the ANN"]
    assert tr.flops == 6 * report.totals.macs_dense * 1000 * 3
    assert train["j"] == pytest.approx(watts * tr.flops / rate) and train["estimated"]
    assert train["g"] == pytest.approx(grams_co2e(train["j"], 400.0, 1.2))
    assert phases["(a) train the ANN (wall time)"]["j"] == pytest.approx(watts * 12.0)
    conv = phases["(b) convert: calibration passes"]
    assert conv["j"] == pytest.approx(watts * 2 * report.totals.macs_dense * 256 / rate)
    for p, e in lc.per_profile.items():
        ee = report.energy[p]
        s = e["snn"]
        assert s["j_per_inference"] == ee[f"snn_{ee['basis']}_j"] and s["basis"] == ee["basis"]
        assert s["inference_j"] == pytest.approx(N * s["j_per_inference"])
        assert s["inferences_per_j"] == pytest.approx(1 / s["j_per_inference"])
        assert s["accuracy_per_j"] == pytest.approx(report.meta["accuracy"] / s["j_per_inference"])
        assert e["ann"]["accuracy_per_j"] == pytest.approx(0.9 / e["ann"]["j_per_inference"])
        prof = PROFILES[p]
        if "embodied_kg" in prof.values:  # dedicated device: embodied x min(1, years / service life)
            share = min(1.0, 2 / prof.values["service_life_years"])
            assert s["embodied_g"] == pytest.approx(prof.values["embodied_kg"] * 1e3 * share)
            lo, hi = prof.ranges["embodied_kg"]
            assert s["embodied_range_g"] == pytest.approx([lo * 1e3 * share, hi * 1e3 * share])
        else:
            assert s["embodied_g"] is None
        life_g = grams_co2e(train["j"] + conv["j"] + N * s["j_per_inference"], 400.0, 1.2) + (s["embodied_g"] or 0)
        assert s["lifecycle_g"] == pytest.approx(life_g)
        assert s["inferences_per_g"] == pytest.approx(N / life_g)
        saving = e["ann"]["j_per_inference"] - s["j_per_inference"]
        if saving > 0:
            assert e["payback_inferences"] == pytest.approx(conv["j"] / saving)
            assert e["payback_days"] == pytest.approx(e["payback_inferences"] / 1e5)
        else:
            assert e["payback_inferences"] is None and e["payback_note"].startswith("never")
    assert "embodied_kg" in PROFILES["loihi"].values and lc.per_profile["loihi"]["snn"]["embodied_g"] > 0


def test_shared_device_amortises_embodied_carbon_by_busy_time(report):
    dep = Deployment(inferences_per_day=1e6, years=1, dedicated=False)
    lc = lifecycle(report, deployment=dep, training=Training(flops=1e12))
    e, prof = report.energy["loihi"], PROFILES["loihi"]
    busy = 1e6 * 365 * e["snn_latency_s"]
    share = busy / (prof.values["service_life_years"] * 365 * 86400)
    assert lc.per_profile["loihi"]["snn"]["embodied_share"] == pytest.approx(share)


def test_measured_training_is_labelled_measured_and_extra_training_is_the_snns(report, tmp_path):
    lc = lifecycle(report, deployment=Deployment(1000, 1),
                   training=Training(flops=1e12, measured_j=5000.0, measured_how="RAPL via Zeus", extra_flops=1e11))
    rows = {r["phase"]: r for r in lc.phases}
    assert rows["(a) train the ANN"]["j"] == 5000.0 and not rows["(a) train the ANN"]["estimated"]
    assert rows["(a) train the ANN"]["how"] == "measured (RAPL via Zeus)"
    assert rows["(b) extra training of the SNN"]["estimated"]
    md = lc.markdown()
    for heading in ("(a) Training and (b) conversion", "(c) Inference and (d) embodied carbon", "Payback"):
        assert heading in md
    back = json.loads(lc.to_json(tmp_path / "lc.json").read_text())
    assert back["format"] == "snn.LifecycleReport" and back["per_profile"].keys() == lc.per_profile.keys()
    assert "(a) train the ANN" in lc.to_html(tmp_path / "lc.html").read_text()


def test_top_level_api():
    assert snn.lifecycle is lifecycle and snn.Deployment is Deployment and snn.Training is Training


@pytest.mark.parametrize("make, msg", [
    (lambda: Deployment(0, 3), "inferences_per_day .*deployment volume.* must be a number > 0, got 0"),
    (lambda: Deployment(100, 0), "deployment years must be a number > 0"),
    (lambda: Deployment(-5, 1), "must be a number > 0, got -5"),
    (lambda: Training(flops=-1), "training flops must be a number > 0"),
    (lambda: Training.from_macs(1e6, samples=0, epochs=3), "samples must be a number > 0"),
    (lambda: Training(flops=1, measured_j=-2), "measured training energy must be a number >= 0"),
])
def test_bad_deployment_and_training(make, msg):
    with pytest.raises(SnnError, match=msg):
        make()


def test_bad_lifecycle_arguments(report):
    dep, tr = Deployment(10, 1), Training(flops=1e9)
    with pytest.raises(SnnError, match="train_profile 'loihi' is an event chip"):
        lifecycle(report, deployment=dep, training=tr, train_profile="loihi")
    with pytest.raises(SnnError, match="unknown hardware profile 'tpu9'"):
        lifecycle(report, deployment=dep, training=tr, train_profile="tpu9")
    with pytest.raises(SnnError, match="deployment must be a snn.energy.Deployment"):
        lifecycle(report, deployment={"inferences_per_day": 10}, training=tr)
    with pytest.raises(SnnError, match="PUE"):
        lifecycle(report, deployment=dep, training=tr, pue=0.5)
