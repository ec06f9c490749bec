"""Energy pricing, profiles, carbon, report files and compare (issue 4)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import snn
from snn import ir
from snn.energy import PROFILES, EnergyReport, compare, energy_report, load_profiles, make_profile, price
from snn.energy.carbon import grams_co2e
from snn.energy.counting import scale_spikes
from snn.errors import SnnError
from snn.network import SpikingNetwork
from snn.simulate import SimulationResult


def _keras_dense():
    """keras-spiking's documented example: Input(784) -> Dense(128, relu), as our ANN and SNN graphs."""
    w = np.full((128, 784), 0.01)
    ann = ir.Graph({"x": ir.Input((784,)), "dense": ir.Linear(w), "relu": ir.ReLU()},
                   [("x", "dense"), ("dense", "relu")], "x", "relu")
    g = ir.Graph({"x": ir.Input((784,)), "dense": ir.Linear(w), "relu": ir.IF(), "readout": ir.Readout()},
                 [("x", "dense"), ("dense", "relu"), ("relu", "readout")], "x", "readout")
    spikes = np.arange(128) % 3
    res = SimulationResult(np.zeros((1, 1, 128)), {"relu": spikes}, None, 1, 1, "hand", "constant", "float64",
                           "cpu", 0, 1, 0.0)
    return SpikingNetwork(graph=g, ann=ann), res


def test_keras_spiking_documented_example_cpu(tmp_path):
    net, res = _keras_dense()
    p = tmp_path / "keras.yaml"
    p.write_text("profiles:\n  keras-cpu:\n    kind: event\n"
                 "    e_mac: {value: 8.6e-9, source: 'Degnan 2016 via keras-spiking'}\n"
                 "    e_ac: {value: 8.6e-9, source: 'Degnan 2016 via keras-spiking'}\n"
                 "    e_neuron: {value: 8.6e-9, source: 'Degnan 2016 via keras-spiking'}\n")
    rep = energy_report(net, res, hardware=["keras-cpu", "cpu"], profiles_file=p)
    assert rep.totals["macs_dense"] == 100352 and rep.totals["ann_neurons"] == 128
    for prof in ("keras-cpu", "cpu"):
        assert f"{rep.energy[prof]['ann_j']:.2e}" == "8.64e-04"   # keras-spiking: 8.64e-04 J/inference
        assert rep.energy[prof]["ann_j"] == pytest.approx((100352 + 128) * 8.6e-9)


def test_unknown_profile_lists_known_ones(mlp_net, digits):
    res = snn.simulate(mlp_net, digits[2][:4], timesteps=2)
    with pytest.raises(SnnError, match="unknown hardware profile 'loihi3'.*known: .*loihi.*gpu-h100"):
        energy_report(mlp_net, res, hardware=["loihi3"])


@pytest.mark.parametrize("body, msg", [
    ("  bad:\n    kind: event\n    e_mac: 1e-12\n    e_neuron: 1e-12\n", "missing required value.*e_ac"),
    ("  bad:\n    kind: event\n    e_mac: 1e-12\n    e_ac: -1e-12\n    e_neuron: 1e-12\n", "e_ac must be a finite number >= 0"),
    ("  bad:\n    e_mac: 1e-12\n    e_ac: 1e-12\n    e_neuron: 'lots'\n", "e_neuron must be a number"),
    ("  bad:\n    kind: gpu\n    peak_flops: 0\n    board_power_w: 1\n    mem_bw: 1\n    bytes_per_value: 2\n",
     "peak_flops must be > 0"),
    ("  bad:\n    e_mac: 1e-12\n    e_ac: 1e-12\n    e_neuron: 1e-12\n    e_synop: 2\n", "unknown key.*e_synop"),
    ("  bad:\n    kind: fpga\n", "unknown kind 'fpga'"),
    ("  bad:\n    e_mac: {value: 1e-12, range: [2e-12, 1e-12]}\n    e_ac: 1\n    e_neuron: 1\n", "range low"),
])
def test_custom_profile_errors(tmp_path, body, msg):
    p = tmp_path / "p.yaml"
    p.write_text("profiles:\n" + body)
    with pytest.raises(SnnError, match=msg):
        load_profiles(p)


def test_profile_file_errors(tmp_path):
    with pytest.raises(SnnError, match="no such profile file"):
        load_profiles(tmp_path / "none.yaml")
    (tmp_path / "e.json").write_text("{not json")
    with pytest.raises(SnnError, match="not valid JSON"):
        load_profiles(tmp_path / "e.json")
    (tmp_path / "n.yaml").write_text("foo: 1\n")
    with pytest.raises(SnnError, match="top-level 'profiles'"):
        load_profiles(tmp_path / "n.yaml")
    (tmp_path / "ok.json").write_text(json.dumps({"profiles": {"c": {"e_mac": 1e-12, "e_ac": 1e-13,
                                                                     "e_neuron": 0}}}))
    prof = load_profiles(tmp_path / "ok.json")["c"]
    assert prof.values["e_ac"] == 1e-13 and "user-supplied" in prof.sources["e_ac"]


def test_every_builtin_constant_has_a_source_and_ranges_bracket_values():
    for p in PROFILES.values():
        assert set(p.values) == set(p.sources) and all(p.sources.values())
        for k, (lo, hi) in p.ranges.items():
            assert lo <= p.values[k] <= hi, (p.name, k)
    assert PROFILES["45nm-fp32"].values["e_mac"] == 4.6e-12 and PROFILES["45nm-int8"].values["e_ac"] == 0.03e-12
    assert PROFILES["loihi"].values["e_ac"] == 23.6e-12 and PROFILES["loihi"].values["e_neuron"] == 81e-12
    assert PROFILES["truenorth"].values["e_ac"] == 26e-12


@pytest.fixture(scope="module")
def cnn_report(cnn_net, digits):
    x, y = digits[2][:40].reshape(-1, 1, 8, 8), digits[3][:40]
    res = snn.simulate(cnn_net, x, timesteps=12)
    rep = energy_report(cnn_net, res, hardware=list(PROFILES), x=x, labels=y, target_accuracy=0.5, name="cnn")
    return rep, res, y


def test_report_energy_per_step_and_cheapest_T(cnn_report):
    rep, res, y = cnn_report
    ps = rep.per_step
    np.testing.assert_allclose(ps["accuracy"], res.accuracy(y))
    for p, e in rep.energy.items():
        curve = np.array(ps["snn_j"][p])
        assert np.all(np.diff(curve) >= 0)
        assert curve[-1] == pytest.approx(e["snn_j"])
        assert e["snn_range"][0] <= e["snn_j"] <= e["snn_range"][1]
    best = rep.cheapest_timesteps(0.5, "loihi")
    reach = [t for t, a in zip(ps["timesteps"], ps["accuracy"]) if a >= 0.5]
    assert best["timesteps"] == reach[0]
    assert rep.cheapest_timesteps(1.01, "loihi") is None
    assert ps["cheapest"]["loihi"] == best


def test_break_even_rate_prices_snn_equal_to_ann(cnn_report, cnn_net):
    rep, _, _ = cnn_report
    t = rep.totals
    for name in ("45nm-fp32", "loihi", "truenorth"):
        r = rep.energy[name]["break_even_rate"]
        if r and r > 0:
            e = price(scale_spikes(t, r / t["firing_rate"]), PROFILES[name])
            assert e["snn_j"] == pytest.approx(e["ann_j"], rel=1e-9)
    assert rep.energy["gpu-h100"]["break_even_rate"] is None  # dense on a GPU: no spike dependence
    assert all(e["estimated"] for e in rep.energy.values())


def test_counts_and_table_are_consistent(cnn_report):
    rep, _, _ = cnn_report
    t = rep.totals
    assert t["synops"] == pytest.approx(sum(r["synops"] for r in rep.layers))
    assert t["input_macs"] == sum(r["input_macs"] for r in rep.layers) > 0
    assert t["neuron_updates"] == sum(r["neuron_updates"] for r in rep.layers) == t["neurons"] * 12
    assert 0 < t["macs_effective"] < t["macs_dense"]
    text = rep.table()
    assert "TOTAL" in text and "loihi" in text and "estimated" in text
    assert any("once per inference" in a for a in rep.assumptions)


def test_report_files_and_compare(cnn_report, tmp_path):
    rep, _, _ = cnn_report
    j = rep.to_json(tmp_path / "energy_cnn.json")
    md = rep.to_markdown(tmp_path / "energy_cnn.md").read_text()
    html = rep.to_html(tmp_path / "energy_cnn.html").read_text()
    assert "## Assumptions" in md and "Horowitz" in md and "Cheapest T" in md
    assert html.count("data:image/png;base64,") == 3
    back = EnergyReport.from_json(j)
    assert back.energy["loihi"]["snn_j"] == pytest.approx(rep.energy["loihi"]["snn_j"])
    cmp = compare([j, rep, tmp_path])
    assert len(cmp.rows) == 3 * len(rep.energy) and "loihi" in cmp.table()
    cmp.to_markdown(tmp_path / "cmp.md")
    with pytest.raises(SnnError, match="no such report"):
        compare([tmp_path / "missing_dir_is_file.json"])


def test_carbon():
    assert grams_co2e(3.6e6) == pytest.approx(475.0)
    assert grams_co2e(3.6e6, grid_g_per_kwh=56.0, pue=1.58) == pytest.approx(56.0 * 1.58)
    with pytest.raises(SnnError, match="PUE"):
        grams_co2e(1.0, pue=0.5)


def test_carbon_settings_reach_the_report(mlp_net, digits):
    res = snn.simulate(mlp_net, digits[2][:4], timesteps=2, record="totals")
    rep = energy_report(mlp_net, res, hardware=["loihi"], grid_g_per_kwh=100.0, pue=2.0)
    assert rep.per_step is None
    assert rep.carbon["per_profile"]["loihi"]["snn_g"] == pytest.approx(rep.energy["loihi"]["snn_j"] / 3.6e6 * 200)
    with pytest.raises(SnnError, match="record='steps'"):
        rep.cheapest_timesteps(0.5, "loihi")


def test_rapl_measurement_where_readable():
    from snn.energy import gpu

    if not gpu.rapl_domains():
        with pytest.raises(SnnError, match="RAPL is not readable"):
            gpu.rapl_reader()
        pytest.skip("RAPL (/sys/class/powercap) is not readable here")
    a = np.random.default_rng(0).random((200, 200))
    m = gpu.measure_rapl(lambda: a @ a, 1, min_seconds=0.5, idle_seconds=0.2)
    assert m.joules_per_item >= 0 and m.method == "rapl"


def test_nvml_measurement_where_a_gpu_exists(cnn_net, digits):
    from snn.energy import gpu

    if not gpu.nvml_available():
        pytest.skip("no NVML GPU here: GPU energy is estimated")
    ms = gpu.measure_ann_gpu(cnn_net.ann, digits[2][:8].reshape(-1, 1, 8, 8), batch_sizes=(1, 64), min_seconds=2,
                             idle_seconds=1)
    assert [m.batch_size for m in ms] == [1, 64] and all(m.joules_per_item > 0 for m in ms)


def test_make_profile_gpu_roofline():
    p = make_profile("toy", {"kind": "gpu", "peak_flops": 1e12, "board_power_w": 100, "mem_bw": 1e12,
                             "bytes_per_value": 4, "batch_size": 1, "flops_per_neuron_update": 0})
    tot = {"macs_dense": 1e6, "ann_neurons": 0, "params": 10, "ann_io_elements": 0, "timesteps": 1,
           "input_macs": 0, "current_macs": 0, "spike_connections": 0, "neuron_updates": 0,
           "snn_io_elements_per_step": 0}
    e = price(tot, p)
    assert e["ann_j"] == pytest.approx(100 * 2e6 / 1e12)  # compute-bound: 2 FLOPs per MAC at board power


def test_measure_without_hardware_keeps_figures_estimated_and_says_why():
    from snn.energy import gpu

    net, res = _keras_dense()
    rep = energy_report(net, res, hardware=["gpu-h100"], x=np.full((1, 784), 0.5), measure=True)
    if not gpu.nvml_available():
        assert any("GPU not measured" in a for a in rep.assumptions)
    if not gpu.rapl_domains():
        assert any("CPU not measured" in a and "RAPL" in a for a in rep.assumptions)
    assert rep.energy["gpu-h100"]["estimated"] is True
    assert all(not e["estimated"] for p, e in rep.energy.items() if p.startswith("measured-"))


@pytest.mark.parametrize("kind", ["event", "gpu"])
def test_profile_keys_are_exactly_what_the_pricing_tiers_read(kind):
    """A profile key that no tier reads would be a number silently ignored: make_profile
    accepts exactly the keys pricing reads (so a new tier input is added in both places)."""
    from collections import defaultdict

    from snn.energy.pricing import layer_energy
    from snn.energy.profiles import OPTIONAL, REQUIRED, Profile

    read: set[str] = set()

    class Recording(Profile):
        def get(self, key: str) -> float:
            read.add(key)
            return super().get(key)

    allowed = set(REQUIRED[kind]) | set(OPTIONAL[kind])
    prof = Recording("rec", kind, "", {k: 1.0 for k in allowed}, {k: "test" for k in allowed})
    price(defaultdict(lambda: 1.0), prof)
    layer_energy(defaultdict(lambda: 1.0), 4, prof)
    assert read == allowed


def test_one_renderer_for_text_markdown_and_html(cnn_report, tmp_path):
    from snn import render
    from snn.energy.report import energy_blocks

    rep, _, _ = cnn_report
    md, text, page = rep.markdown(), rep.table(), rep.to_html(tmp_path / "e.html").read_text()
    brief = energy_blocks(rep, brief=True)
    # the brief tables (terminal) are the full section's tables, in every format
    full = energy_blocks(rep)
    for table in [b for b in brief if b[0] == "table"]:
        assert table in full
        assert render.markdown([table]).strip() in md
        assert render.text([table]) in text
        assert render.html([table], "t").split("<body>\n")[1].split("\n</body>")[0] in page
    # a run report nests the same section one level down
    nested = energy_blocks(rep, 3)
    assert [b for b in nested if b[0] != "h3" and b[0] != "h4"] == [b for b in full if b[0] not in ("h2", "h3")]
