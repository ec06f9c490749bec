"""Energy pricing, profiles, carbon, report files and compare (issue 4)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import snn
from snn import ir
from snn.energy import PROFILES, EnergyReport, Totals, compare, energy_report, load_profiles, make_profile, price
from snn.energy.carbon import grams_co2e
from snn.energy.report import basis_j
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
    assert rep.totals.macs_dense == 100352 and rep.totals.ann_neurons == 128
    for prof in ("keras-cpu", "cpu"):
        e = rep.energy[prof]
        assert f"{e['ann_dynamic_j']:.2e}" == "8.64e-04"   # keras-spiking: 8.64e-04 J/inference
        assert e["ann_dynamic_j"] == pytest.approx((100352 + 128) * 8.6e-9)
        assert e["ann_total_j"] is None and e["basis"] == "dynamic"  # keras-spiking prices no idle power


def test_unknown_profile_lists_known_ones(mlp_net, digits):
    res = snn.simulate(mlp_net, digits[2][:4], timesteps=2)
    with pytest.raises(SnnError, match="unknown hardware profile 'loihi3'.*known: .*loihi.*gpu-h100"):
        energy_report(mlp_net, res, hardware=["loihi3"])


@pytest.mark.parametrize("body, msg", [
    ("  bad:\n    kind: event\n    e_mac: 1e-12\n    e_neuron: 1e-12\n",
     "profile 'bad': the compute tier of kind 'event' needs e_ac"),
    ("  bad:\n    e_mac: 1e-12\n    e_ac: 1e-12\n    e_neuron: 1e-12\n    static_power_w: 0.03\n",
     "profile 'bad': the platform tier of kind 'event' needs runtime_power_w, t_host_step_s, t_sync_s, t_ac_s, "
     "t_neuron_s, neurons_per_core, cores_per_chip"),
    ("  bad:\n    kind: gpu\n    peak_flops: 1\n    board_power_w: 1\n    mem_bw: 1\n    bytes_per_value: 2\n"
     "    idle_power_w: 5\n    efficiency: 0.5\n", "the platform tier of kind 'gpu' needs active_power_w, t_call_s, "
                                                     "t_kernel_s"),
    ("  bad:\n    kind: gpu\n    peak_flops: 1\n    board_power_w: -700\n    mem_bw: 1\n    bytes_per_value: 2\n",
     "board_power_w must be a finite number >= 0, got -700"),
    ("  bad:\n    kind: gpu\n    peak_flops: 1\n    board_power_w: 1\n    mem_bw: 1\n    bytes_per_value: 2\n"
     "    batch_size: 256\n", "unknown key.*batch_size.*an argument: energy_report"),
    ("  bad:\n    embodied_kg: 1\n    e_mac: 1e-12\n    e_ac: 1e-12\n    e_neuron: 1e-12\n",
     "the embodied tier of kind 'event' needs service_life_years"),
    ("  bad:\n    kind: gpu\n    peak_flops: 1\n    board_power_w: 1\n    mem_bw: 1\n    bytes_per_value: 2\n"
     "    active_power_w: 1\n    idle_power_w: 1\n    t_call_s: 0\n    t_kernel_s: 0\n    efficiency: 1.5\n",
     "efficiency must be at most 1"),
    ("  bad:\n    kind: event\n    e_mac: 1e-12\n    e_ac: -1e-12\n    e_neuron: 1e-12\n", "e_ac must be a finite number >= 0"),
    ("  bad:\n    e_mac: 1e-12\n    e_ac: 1e-12\n    e_neuron: 'lots'\n", "e_neuron must be a number"),
    ("  bad:\n    kind: gpu\n    peak_flops: 0\n    board_power_w: 1\n    mem_bw: 1\n    bytes_per_value: 2\n",
     "peak_flops must be > 0"),
    ("  bad:\n    e_mac: 1e-12\n    e_ac: 1e-12\n    e_neuron: 1e-12\n    e_synop: 2\n", "unknown key.*e_synop"),
    ("  bad:\n    e_mac: {value: 3e-12, range: [1e-12, 2e-12]}\n    e_ac: 1\n    e_neuron: 1\n", "outside its range"),
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
        for b in ("dynamic", "total"):
            if e[f"snn_{b}_j"] is None:
                assert b == "total" and e["basis"] == "dynamic" and set(ps["snn_total_j"][p]) == {None}
                continue
            curve = np.array(ps[f"snn_{b}_j"][p])
            assert np.all(np.diff(curve) >= 0)
            assert curve[-1] == pytest.approx(e[f"snn_{b}_j"])
            assert e[f"snn_{b}_range"][0] <= e[f"snn_{b}_j"] <= e[f"snn_{b}_range"][1]
        assert e["basis"] == ("total" if PROFILES[p].has("platform") else "dynamic")
    best = rep.cheapest_timesteps(0.5, "loihi")
    reach = [t for t, a in zip(ps["timesteps"], ps["accuracy"]) if a >= 0.5]
    assert best["timesteps"] == reach[0]
    assert rep.cheapest_timesteps(1.01, "loihi") is None
    assert ps["cheapest"]["loihi"] == best


def test_break_even_rate_prices_snn_equal_to_ann(cnn_report, cnn_net):
    rep, _, _ = cnn_report
    t = rep.totals
    checked = 0
    for name in ("45nm-fp32", "loihi", "truenorth", "loihi-sanafe"):
        d = rep.energy[name]
        r = d["break_even_rate"]
        if r and r > 0:
            e = vars(price(t.with_spikes_scaled(r / t.firing_rate), PROFILES[name]))
            assert basis_j(e, "snn", d["basis"]) == pytest.approx(basis_j(e, "ann", d["basis"]), rel=1e-9)
            checked += 1
    assert checked > 0
    assert rep.energy["gpu-h100"]["break_even_rate"] is None  # dense on a GPU: no spike dependence
    assert all(e["estimated"] for e in rep.energy.values())


def test_counts_and_table_are_consistent(cnn_report):
    rep, _, _ = cnn_report
    t = rep.totals
    assert t.synops == pytest.approx(sum(r["synops"] for r in rep.layers))
    assert t.input_macs == sum(r["input_macs"] for r in rep.layers) > 0
    assert t.neuron_updates == sum(r["neuron_updates"] for r in rep.layers) == t.neurons * 12
    assert 0 < t.macs_effective < t.macs_dense
    # every synaptic event lands on one neuron layer of the core mapping
    assert sum(ld.synops for ld in t.loads) == pytest.approx(t.synops + t.current_macs)
    assert sum(ld.macs for ld in t.loads) == t.macs_dense and sum(ld.neurons for ld in t.loads) == t.neurons
    text = rep.table()
    assert "all layers" in text and "loihi" in text and "estimated" in text
    assert any("once per inference" in a for a in rep.assumptions)


def test_report_files_and_compare(cnn_report, tmp_path):
    rep, _, _ = cnn_report
    j = rep.to_json(tmp_path / "energy_cnn.json")
    md = rep.to_markdown(tmp_path / "energy_cnn.md").read_text()
    html = rep.to_html(tmp_path / "energy_cnn.html").read_text()
    assert "## Assumptions" in md and "Horowitz" in md and "Cheapest T" in md
    assert html.count("data:image/png;base64,") == 3
    back = EnergyReport.from_json(j)
    assert back.totals == rep.totals
    for b in ("dynamic", "total"):
        assert back.energy["loihi"][f"snn_{b}_j"] == pytest.approx(rep.energy["loihi"][f"snn_{b}_j"])
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
    assert rep.carbon["per_profile"]["loihi"]["snn_g"] == pytest.approx(rep.energy["loihi"]["snn_total_j"] / 3.6e6 * 200)
    assert rep.carbon["per_profile"]["loihi"]["basis"] == "total"
    with pytest.raises(SnnError, match="record='steps'"):
        rep.cheapest_timesteps(0.5, "loihi")


def test_rapl_measurement_where_readable():
    pytest.importorskip("zeus", reason="the optional measurement package (snn[measure]) is not installed")
    from snn.energy import measure

    a = np.random.default_rng(0).random((200, 200))
    try:
        m = measure.measure(lambda: a @ a, 1, "cpu", "matmul", min_seconds=0.5, idle_seconds=0.2)
    except SnnError as e:
        assert "RAPL is not readable here" in str(e)
        pytest.skip(str(e))
    assert m.method == "rapl" and m.total_j_per_item >= m.dynamic_j_per_item >= 0 and m.items > 0


def test_nvml_measurement_where_a_gpu_exists(cnn_net, digits):
    pytest.importorskip("zeus", reason="the optional measurement package (snn[measure]) is not installed")
    import torch

    from snn.energy import measure

    if not torch.cuda.is_available():
        with pytest.raises(SnnError, match="no CUDA GPU"):
            measure.measure(lambda: None, 1, "cuda")
        pytest.skip("no CUDA GPU here: GPU energy is estimated")
    ms = measure.measure_ann(cnn_net.ann, digits[2][:8].reshape(-1, 1, 8, 8), batch_sizes=(1, 64), device="cuda",
                             min_seconds=2, idle_seconds=1)
    assert [m.batch_size for m in ms] == [1, 64] and all(m.total_j_per_item > 0 for m in ms)


def test_measurement_without_zeus_is_one_clear_line(monkeypatch):
    import sys

    from snn.energy import measure

    monkeypatch.setitem(sys.modules, "zeus.monitor", None)  # as if the optional package were not installed
    with pytest.raises(SnnError, match=r"needs the optional package zeus \(pip install 'snn\[measure\]'\)"):
        measure.measure(lambda: None, 1, "cpu")


def _totals(**kw) -> Totals:
    """Counts for pricing by hand: every count 0 unless given."""
    import dataclasses

    base = {f.name: 0 for f in dataclasses.fields(Totals)}
    base.update(timesteps=1, encoding="constant", n_samples=1, loads=())
    base.update(kw)
    return Totals(**base)


def test_make_profile_gpu_roofline():
    p = make_profile("toy", {"kind": "gpu", "peak_flops": 1e12, "board_power_w": 100, "mem_bw": 1e12,
                             "bytes_per_value": 4, "flops_per_neuron_update": 0})
    e = price(_totals(macs_dense=1e6, params=10), p)
    assert e.ann_dynamic_j == pytest.approx(100 * 2e6 / 1e12)  # compute-bound: 2 FLOPs per MAC at board power
    assert e.ann_total_j is None  # no platform tier: no idle power, no total


def test_gpu_platform_tier_by_hand_and_the_batch_size_shape():
    """One call lasts t_call + kernels * t_kernel + roofline / efficiency; per inference
    it is flat at small batch and falls to the roofline at large batch."""
    spec = {"kind": "gpu", "peak_flops": 1e12, "board_power_w": 100, "mem_bw": 1e12, "bytes_per_value": 4,
            "active_power_w": 20, "idle_power_w": 10, "t_call_s": 1e-3, "t_kernel_s": 1e-5, "efficiency": 0.5,
            "host_power_w": 5}
    p = make_profile("toy", spec)
    tot = _totals(macs_dense=1e6, params=1000, ann_io_elements=500, ann_kernels=3)
    for b in (1, 8, 1024):
        t_roof = max(b * 2e6 / 1e12, 4 * (1000 + b * 500) / 1e12)
        t = 1e-3 + 3 * 1e-5 + t_roof / 0.5
        e = price(tot, p, batch_size=b)
        assert e.ann_latency_s == pytest.approx(t)
        assert e.ann_dynamic_j == pytest.approx((20 + 5) * t / b)
        assert e.ann_total_j == pytest.approx((20 + 5 + 10) * t / b)
    per_inf = [price(tot, p, batch_size=b).ann_dynamic_j for b in (1, 2, 4, 4096, 8192)]
    # flat per call at small batch (within the small roofline term), so per inference ~ 1/b
    assert per_inf[1] == pytest.approx(per_inf[0] / 2, rel=0.02) and per_inf[2] == pytest.approx(per_inf[0] / 4, rel=0.02)
    roofline = 25 * 2e6 / 1e12 / 0.5
    assert per_inf[-1] < 1.5 * roofline and per_inf[-1] < per_inf[-2] < per_inf[0]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(SnnError, match="batch_size must be an integer >= 1"):
            price(tot, p, batch_size=bad)


def test_event_platform_tier_maps_layers_to_cores_by_hand():
    """The step lasts the host time, the barrier and the busiest core; a big layer is split
    over more cores; static and runtime power are per chip."""
    from snn.energy.totals import LayerLoad

    spec = {"e_mac": 0, "e_ac": 1e-12, "e_neuron": 0, "static_power_w": 0.03, "runtime_power_w": 0.07,
            "t_host_step_s": 1e-4, "t_sync_s": 1e-6, "t_ac_s": 1e-9, "t_neuron_s": 1e-8, "neurons_per_core": 100,
            "cores_per_chip": 2}
    p = make_profile("chip", spec)
    loads = (LayerLoad("a", 250, 4000.0, 0.0, 0), LayerLoad("b", 10, 9000.0, 0.0, 0))
    T = 4
    tot = _totals(timesteps=T, synops=13000.0, loads=loads)
    e = price(tot, p)
    # a: 3 cores, 4000/4/3 events and 84 neurons per core; b: 1 core, 9000/4 events and 10 neurons
    core_a = 4000 / 4 / 3 * 1e-9 + 84 * 1e-8
    core_b = 9000 / 4 * 1e-9 + 10 * 1e-8
    step = 1e-4 + 1e-6 + max(core_a, core_b)
    chips = 2  # 4 cores, 2 per chip
    assert e.snn_latency_s == pytest.approx(T * step)
    assert e.snn_dynamic_j == pytest.approx(13000 * 1e-12 + 0.07 * chips * T * step)
    assert e.snn_total_j == pytest.approx(e.snn_dynamic_j + 0.03 * chips * T * step)
    assert e.ann_dynamic_j is None  # no ANN MACs: no ANN to price


def test_measure_without_hardware_keeps_figures_estimated_and_says_why():
    net, res = _keras_dense()
    rep = energy_report(net, res, hardware=["gpu-h100"], x=np.full((1, 784), 0.5), measure=True)
    found = [p for p in rep.energy if p.startswith("measured-")]
    notes = [a for a in rep.assumptions if "not measured" in a]
    assert len(notes) + len(found) >= 2  # the CPU and the GPU: each measured, or a note saying why not
    assert all(("RAPL" in a or "zeus" in a) for a in notes if a.startswith("CPU"))
    assert rep.energy["gpu-h100"]["estimated"] is True
    assert all(not rep.energy[p]["estimated"] for p in found)


@pytest.mark.parametrize("kind", ["event", "gpu"])
def test_profile_keys_are_exactly_what_the_tiers_read(kind):
    """A profile key that no tier reads would be a number silently ignored: make_profile
    accepts exactly the keys pricing reads (and the life cycle's embodied tier), so a new
    tier input is added in both places."""
    from snn.energy.pricing import layer_energy
    from snn.energy.profiles import TIERS, Profile
    from snn.energy.totals import LayerLoad

    read: set[str] = set()

    class Recording(Profile):
        def get(self, key: str) -> float:
            read.add(key)
            return super().get(key)

    tiers = TIERS[kind]
    allowed = {k for t in tiers.values() for k in t.required + t.optional}
    prof = Recording("rec", kind, "", {k: 1.0 for k in allowed}, {k: "test" for k in allowed})
    tot = _totals(timesteps=4, synops=1.0, macs_dense=1, params=1, loads=(LayerLoad("a", 1, 1.0, 1.0, 1),))
    price(tot, prof)
    layer_energy({k: 1.0 for k in ("spike_connections", "synops", "input_macs", "current_macs", "neuron_updates",
                                   "spikes")}, 4, prof)
    assert read == allowed - set(tiers["embodied"].required)


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
