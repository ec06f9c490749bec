"""Energy of a spiking network against its ANN: exact operation counts (tier 1), compute
energy from per-op energies (tier 2), platform energy from static power x latency
(tier 3), on hardware profiles that carry the source of every number.

>>> rep = snn.energy_report(net, res, hardware=["loihi", "45nm-fp32", "gpu-h100"],
...                         x=x_test, labels=y_test)                       # doctest: +SKIP
>>> rep.totals["synops"], rep.energy["loihi"]["ratio"]                   # doctest: +SKIP
>>> print(rep.table()); rep.to_html("energy.html")                       # doctest: +SKIP

This package imports numpy and :mod:`snn.ir` only (never torch, brian2 or a backend);
GPU/CPU measurement (:mod:`snn.energy.gpu`) imports torch/NVML lazily when called.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from snn.energy.carbon import DEFAULT_GRID_G_PER_KWH, DEFAULT_PUE, SOURCES as CARBON_SOURCES, check_carbon, grams_co2e
from snn.energy.counting import Counts, count_ops, counts_at, scale_spikes
from snn.energy.pricing import layer_energy, price, price_range
from snn.energy.profiles import PROFILES, Profile, load_profiles, make_profile, resolve
from snn.energy.report import Comparison, EnergyReport, compare
from snn.errors import SnnError

__all__ = ["energy_report", "EnergyReport", "compare", "Comparison", "PROFILES", "Profile", "load_profiles",
           "make_profile", "count_ops", "price", "grams_co2e"]

ASSUMPTIONS = [
    "SynOps = presynaptic spikes x exact fan-out (distinct post-synaptic targets of the first synaptic layer on "
    "each path; conv borders, stride, padding, dilation and groups exact; through an average pool of spikes, the "
    "union of the targets of every window covering the neuron).",
    "SynOps and effective MACs go through non-zero weights only (a zero weight is no synapse; as NeuroBench); dense "
    "counts (ANN MACs, a GPU's work) include every weight. Exception: through an average pool into a conv, "
    "fan-out is structural.",
    "A spike entering an Add through its per-channel gain (a residual spike train) is one synaptic op; element-wise "
    "adds and rescalings of currents are part of the dendritic sum and not counted.",
    "A max-pool of spikes routes spikes (0 SynOps); its output spikes are counted as the next layer's events. "
    "NeuroBench counts the same, since it hooks only Linear/Conv layers.",
    "Biases are a constant current added in each neuron update; they are not synaptic ops (as NeuroBench).",
    "Neuron updates are dense: every IF and readout neuron at every step. Active updates = updates that emit a "
    "spike.",
    "Memory model: SNN one weight read per SynOp and per MAC, one input read per MAC, membrane read + write per "
    "neuron update, one write per emitted spike; ANN one weight read and one activation read per MAC, one write "
    "per output of a synaptic layer or ReLU. One access = one word; priced with e_mem where a profile has it "
    "(per-event chip figures already include their memory).",
    "ANN MACs = structural connections of Linear/Conv/Affine layers of the traced ANN (BN folded, padding "
    "excluded); effective MACs skip zero inputs (sparsity-aware hardware) and are measured on the given inputs.",
    "ratio = ANN J / SNN J: above 1 the SNN is cheaper. The ANN on an event-driven chip is priced like "
    "keras-spiking's non-spiking layers: every connection one op, one step.",
    "Break-even rate: the mean IF firing rate (spikes per neuron per step) at which SNN J equals ANN J, all "
    "spike-dependent counts scaled together from the measured ones and everything else (neuron updates, first-layer "
    "MACs, static power x barrier time) held fixed; 0 means the SNN cannot win on that profile at any rate, and it "
    "is undefined where the SNN's cost does not depend on spikes (GPUs, dense CPUs).",
    "GPU figures are roofline lower bounds at board power and full utilisation, batch 256, no kernel-launch or "
    "idle overhead: at batch 1 measured GPU energy is dominated by overhead (e.g. Blouw et al. 2019: 29.8 mJ "
    "dynamic on a K4000 for 172,800 MACs), so real small-batch GPU energy is far higher. The SNN on a GPU is "
    "simulated densely (every connection every step).",
    "Platform tier (event chips with timing data): static power x latency, latency per step = barrier time + "
    "(SynOps x time per synop + neuron updates x time per update) / cores, assuming perfect load balance.",
    "Every figure is estimated from counts x published constants unless marked 'measured'.",
]


def _profile_energy(counts: Counts, prof: Profile) -> dict[str, Any]:
    tot = counts.totals
    e = price(tot, prof)
    rng = price_range(tot, prof)
    d: dict[str, Any] = {k: v for k, v in e.items() if k != "spike_dependent"}
    d["ratio"] = e["ann_j"] / e["snn_j"] if e["ann_j"] is not None and e["snn_j"] > 0 else None
    d["snn_range"] = list(rng["snn_j"])
    d["ann_range"] = list(rng["ann_j"]) if rng["ann_j"] is not None else None
    d["estimated"] = True
    d["break_even_rate"] = None
    if e["spike_dependent"] and e["ann_j"] is not None and tot["firing_rate"] > 0:
        a = price(scale_spikes(tot, 0.0), prof)["snn_j"]
        b = price(scale_spikes(tot, 1.0), prof)["snn_j"] - a
        d["break_even_rate"] = float(max(0.0, (e["ann_j"] - a) / b * tot["firing_rate"])) if b > 0 else None
    return d


def energy_report(net: Any, res: Any, hardware: Any = ("45nm-fp32", "loihi", "gpu-h100"), *, x: Any = None,
                  labels: Any = None, profiles_file: str | Path | None = None,
                  grid_g_per_kwh: float = DEFAULT_GRID_G_PER_KWH, pue: float = DEFAULT_PUE,
                  target_accuracy: float | None = None, measure: bool = False, name: str | None = None,
                  max_samples: int = 2000) -> EnergyReport:
    """Operation counts and energy per inference of ``net`` given its simulation ``res``.

    ``net``: a :class:`snn.SpikingNetwork` (its ``ann`` graph gives the ANN MACs) or an SNN
    graph. ``res``: a :class:`snn.SimulationResult` recorded with ``record="steps"`` (energy
    at each timestep) or ``"totals"``. ``hardware``: profile names (see ``PROFILES``) or
    :class:`Profile` objects; ``profiles_file`` adds custom profiles (YAML/JSON, see
    :func:`load_profiles`). ``x`` (N, *input shape): the simulated inputs, optional, for
    effective MACs and activation sparsity (first ``max_samples``). ``labels``: for
    accuracy at each timestep and ``target_accuracy`` (the cheapest T reaching it).
    ``grid_g_per_kwh``/``pue``: carbon. ``measure=True`` measures the ANN with NVML
    (where CUDA exists) and RAPL (where readable) and adds those as measured entries.
    """
    graph = getattr(net, "graph", net)
    ann = getattr(net, "ann", None)
    check_carbon(grid_g_per_kwh, pue)
    extra = load_profiles(profiles_file) if profiles_file is not None else None
    profs = resolve(hardware, extra)
    if x is not None:
        x = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
        if x.shape[1:] != graph.shapes[graph.input]:
            raise SnnError(f"x has samples of shape {x.shape[1:]}, the network input is {graph.shapes[graph.input]}")
    counts = count_ops(graph, res.spike_sums, res.step_sums, res.n_samples, res.timesteps, res.encoding, ann=ann,
                       x=x, max_samples=max_samples)
    energy = {p.name: _profile_energy(counts, p) for p in profs}
    for r in counts.layers:
        r["energy_j"] = {p.name: layer_energy(r, counts.totals["timesteps"], p) for p in profs}

    acc = None
    if labels is not None:
        acc = [float(a) for a in res.accuracy(labels)]
    per_step = None
    if counts.per_step is not None:
        T = counts.totals["timesteps"]
        snn_t = {p.name: [] for p in profs}
        for t in range(1, T + 1):
            tot_t = counts_at(counts, t)
            for p in profs:
                snn_t[p.name].append(price(tot_t, p)["snn_j"])
        per_step = {"timesteps": list(range(1, T + 1)), "accuracy": acc, "snn_j": snn_t,
                    "synops": counts.per_step["synops"].tolist()}
    measurements: list[dict[str, Any]] = []
    notes = list(counts.notes)
    if measure:
        measurements, mnotes = _measure(ann, x)
        notes += mnotes
        for mm in measurements:
            energy[f"measured-{mm['method']}-bs{mm['batch_size']}"] = {
                "ann_j": mm["joules_per_item"], "ann_effective_j": None, "snn_j": None, "ratio": None,
                "estimated": False, "break_even_rate": None, "device": mm["device"]}
    carbon = {"grid_g_per_kwh": grid_g_per_kwh, "pue": pue, "sources": CARBON_SOURCES, "per_profile": {
        p: {"snn_g": grams_co2e(e["snn_j"], grid_g_per_kwh, pue) if e["snn_j"] is not None else None,
            "ann_g": grams_co2e(e["ann_j"], grid_g_per_kwh, pue) if e["ann_j"] is not None else None,
            "snn_g_per_million": grams_co2e(e["snn_j"] * 1e6, grid_g_per_kwh, pue) if e["snn_j"] is not None
            else None}
        for p, e in energy.items()}}
    rep = EnergyReport(totals=counts.totals, layers=counts.layers, energy=energy, assumptions=notes + ASSUMPTIONS,
                       profiles={p.name: p.to_dict() for p in profs}, carbon=carbon,
                       meta={"name": name or "network", "backend": res.backend, "encoding": res.encoding,
                             "timesteps": res.timesteps, "n_samples": res.n_samples, "precision": res.precision,
                             "accuracy": acc[-1] if acc else None, "ann_available": ann is not None,
                             "x_given": x is not None}, per_step=per_step, measurements=measurements)
    if ann is None:
        rep.assumptions.insert(0, "No ANN graph was given (net.ann is None): ANN MACs and energies are 0/None.")
    if x is None:
        rep.assumptions.insert(0, "Inputs not given (x=None): effective MACs and activation sparsity not computed.")
    if target_accuracy is not None and per_step is not None:
        if acc is None:
            raise SnnError("target_accuracy needs labels=")
        per_step["target_accuracy"] = float(target_accuracy)
        per_step["cheapest"] = {p.name: rep.cheapest_timesteps(target_accuracy, p.name) for p in profs}
    return rep


def _measure(ann: Any, x: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """NVML and RAPL measurements of the ANN where the hardware allows; notes otherwise."""
    from snn.energy import gpu

    out, notes = [], []
    if ann is None or x is None:
        return out, ["measure=True needs net.ann and x=; nothing was measured."]
    if gpu.nvml_available():
        try:
            out += [m.to_dict() for m in gpu.measure_ann_gpu(ann, x)]
        except SnnError as e:
            notes.append(f"GPU not measured: {e}")
    else:
        notes.append("GPU not measured: no NVML device here; GPU figures are estimated.")
    try:
        out += [m.to_dict() for m in gpu.measure_ann_cpu(ann, x)]
    except SnnError as e:
        notes.append(f"CPU not measured: {e}")
    return out, notes
