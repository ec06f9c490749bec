"""Energy of a spiking network against its ANN: exact operation counts (tier 1), compute
energy from per-op energies (tier 2), platform energy from the time-driven terms of real
hardware (tier 3: static/idle power, runtime power, a fixed cost per step or per call,
the batch size), on hardware profiles that carry the source of every number; dynamic and
total energy apart; and the life cycle (:func:`lifecycle`).

>>> rep = snn.energy_report(net, res, hardware=["loihi", "45nm-fp32", "gpu-h100"],
...                         x=x_test, labels=y_test, batch_size=1)                # doctest: +SKIP
>>> rep.totals.synops, rep.energy["loihi"]["snn_total_j"]                     # doctest: +SKIP
>>> print(rep.table()); rep.to_html("energy.html")                            # doctest: +SKIP

This package imports numpy and :mod:`snn.ir` only (never torch, brian2 or a backend);
measurement (:mod:`snn.energy.measure`) imports torch and Zeus lazily when called.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from snn.energy.carbon import DEFAULT_GRID_G_PER_KWH, DEFAULT_PUE, SOURCES as CARBON_SOURCES, check_carbon, grams_co2e
from snn.energy.counting import Counts, count_ops, counts_at
from snn.energy.devices import PROFILES
from snn.energy.lifecycle import Deployment, LifecycleReport, Training, lifecycle
from snn.energy.pricing import Price, check_batch_size, layer_energy, price, price_range
from snn.energy.profiles import Profile, load_profiles, make_profile, resolve
from snn.energy.report import Comparison, EnergyReport, basis_j, compare
from snn.energy.totals import LayerLoad, Totals
from snn.errors import SnnError

__all__ = ["energy_report", "EnergyReport", "compare", "Comparison", "PROFILES", "Profile", "load_profiles",
           "make_profile", "count_ops", "price", "Price", "Totals", "LayerLoad", "grams_co2e", "lifecycle",
           "LifecycleReport", "Deployment", "Training"]

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
    "Memory model: SNN one weight read per synaptic event and per MAC, one input read per MAC, membrane read + "
    "write per neuron update, one write per emitted spike; ANN one weight read and one activation read per MAC, "
    "one write per output of a synaptic layer or ReLU. One access = one word; priced with e_mem where a profile "
    "has it (per-event chip figures already include their memory).",
    "Kernel fusion on GPUs and CPUs: a synaptic layer and the element-wise nodes after it (activation or IF "
    "update, residual add; BatchNorm is folded) are one kernel whose output is written once; flatten and reshape "
    "are views. Each kernel costs a launch (t_kernel_s) besides the roofline time.",
    "ANN MACs = structural connections of Linear/Conv/Affine layers of the traced ANN (BN folded, padding "
    "excluded); effective MACs skip zero inputs (sparsity-aware hardware) and are measured on the given inputs.",
    "Dynamic energy = compute + runtime/management power over the run; total energy adds the idle/static power "
    "over the same wall time. A profile without a platform tier gives dynamic energy only (total '-').",
    "ratio = ANN J / SNN J, on dynamic and on total energy: above 1 the SNN is cheaper. The ANN on an "
    "event-driven chip is priced like keras-spiking's non-spiking layers: every connection one op, one step.",
    "Break-even rate: the mean IF firing rate (spikes per neuron per step) at which the SNN's energy (total where "
    "the profile has a platform tier, else dynamic) equals the ANN's, all spike-dependent counts scaled together "
    "and everything else held fixed; 0 means the SNN cannot win on that profile at any rate; undefined where "
    "the SNN's cost does not depend on spikes (GPUs, dense CPUs).",
    "Event chips (platform tier): each neuron layer on its own cores (ceil(neurons / neurons_per_core)); a step "
    "lasts the host/management time plus the barrier plus the busiest core's synaptic events and neuron updates "
    "(not a perfect balance over all cores); static and runtime power are per chip used.",
    "GPUs and CPUs (platform tier): one call of batch_size inferences lasts t_call_s + kernels x t_kernel_s + the "
    "roofline time / efficiency, at active power (plus the host's share), and idle power on top for the total; "
    "per inference = per call / batch_size. The SNN on a GPU is simulated densely (every connection every step).",
    "Every figure is estimated from counts x published constants unless marked 'measured'; a constant calibrated "
    "on a measurement is listed under the profile's 'calibrated'.",
]


def _profile_energy(counts: Counts, prof: Profile, batch: int) -> dict[str, Any]:
    """The report's entry for one profile: the :class:`Price` fields, ratios, ranges, the
    break-even rate, and which energy (total or dynamic) the headline figures use."""
    tot = counts.totals
    e = price(tot, prof, batch)
    rng = price_range(tot, prof, batch)
    d: dict[str, Any] = {k: getattr(e, k) for k in ("snn_dynamic_j", "snn_total_j", "snn_latency_s", "ann_dynamic_j",
                                                   "ann_total_j", "ann_latency_s", "ann_effective_dynamic_j")}
    d["snn_breakdown"] = e.snn_breakdown
    d["basis"] = "total" if e.snn_total_j is not None else "dynamic"
    d["batch_size"] = batch if prof.kind != "event" else 1
    for b in ("dynamic", "total"):
        a, s = d[f"ann_{b}_j"], d[f"snn_{b}_j"]
        d[f"ratio_{b}"] = a / s if a is not None and s else None
        d[f"snn_{b}_range"] = list(rng[f"snn_{b}_j"]) if rng[f"snn_{b}_j"] else None
    d["estimated"] = True
    d["break_even_rate"] = None
    ann = basis_j(d, "ann")
    if e.spike_dependent and ann is not None and tot.firing_rate > 0:
        at = lambda s: basis_j(vars(price(tot.with_spikes_scaled(s), prof, batch)), "snn", d["basis"])  # noqa: E731
        a, b = at(0.0), at(1.0) - at(0.0)
        d["break_even_rate"] = float(max(0.0, (ann - a) / b * tot.firing_rate)) if b > 0 else None
    return d


INTEGER_TWINS = {"45nm-fp32": "45nm-int8"}
"""A floating-point profile -> the integer profile of the same technology, with which a
network of fixed-point weights (:func:`snn.quantize`, at most 8 bits) is priced."""


def integer_profiles(profs: list[Profile], meta: dict[str, Any] | None) -> tuple[list[Profile], list[str]]:
    """The profiles to price a network with, given its ``meta``: for a quantised network
    (``meta["quantization"]``, weights of at most 8 bits) each floating-point profile with an
    integer twin (:data:`INTEGER_TWINS`) is replaced by the twin; notes say what was done.

    >>> profs, notes = integer_profiles(resolve(["45nm-fp32", "loihi"]), {"quantization": {"weight_bits": 8}})
    >>> [p.name for p in profs]
    ['45nm-int8', 'loihi']
    """
    q = (meta or {}).get("quantization")
    if not q:
        return profs, []
    bits = int(q["weight_bits"])
    out, notes = [], [f"The weights are {bits}-bit fixed point (snn.quantize): event chips store them as integers "
                      "as they are; floating-point profiles with an integer twin are replaced by the twin."]
    for p in profs:
        twin = INTEGER_TWINS.get(p.name)
        if twin is not None and bits <= 8:
            out.append(PROFILES[twin])
            notes.append(f"{p.name} was asked for; the network is priced on {twin} (its integer twin).")
        else:
            out.append(p)
    return list({p.name: p for p in out}.values()), notes


def energy_report(net: Any, res: Any, hardware: Any = ("45nm-fp32", "loihi", "gpu-h100"), *, x: Any = None,
                  labels: Any = None, profiles_file: str | Path | None = None, batch_size: int = 1,
                  grid_g_per_kwh: float = DEFAULT_GRID_G_PER_KWH, pue: float = DEFAULT_PUE,
                  target_accuracy: float | None = None, measure: bool = False, measurements: Any = (),
                  name: str | None = None, max_samples: int = 2000) -> EnergyReport:
    """Operation counts and energy per inference of ``net`` given its simulation ``res``.

    ``net``: a :class:`snn.SpikingNetwork` (its ``ann`` graph gives the ANN MACs) or an SNN
    graph. ``res``: a :class:`snn.SimulationResult` recorded with ``record="steps"`` (energy
    at each timestep) or ``"totals"``. ``hardware``: profile names (see ``PROFILES``) or
    :class:`Profile` objects; ``profiles_file`` adds custom profiles (YAML/JSON, see
    :func:`load_profiles`). ``batch_size``: inferences per call on GPUs and CPUs (event
    chips run one at a time). ``x`` (N, *input shape): the simulated inputs, optional, for
    effective MACs and activation sparsity (first ``max_samples``). ``labels``: for
    accuracy at each timestep and ``target_accuracy`` (the cheapest T reaching it).
    ``grid_g_per_kwh``/``pue``: carbon. ``measure=True`` measures the ANN on this CPU
    (RAPL) and GPU (NVML) through Zeus where they are readable; ``measurements``:
    :class:`snn.energy.measure.Measurement` objects measured by the caller (the SNN
    simulation, say). Measured entries stand beside the estimates, labelled so.
    """
    graph = getattr(net, "graph", net)
    ann = getattr(net, "ann", None)
    check_carbon(grid_g_per_kwh, pue)
    batch = check_batch_size(batch_size)
    extra = load_profiles(profiles_file) if profiles_file is not None else None
    profs, qnotes = integer_profiles(resolve(hardware, extra), getattr(net, "meta", None))
    if x is not None:
        x = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
        if x.shape[1:] != graph.shapes[graph.input]:
            raise SnnError(f"x has samples of shape {x.shape[1:]}, the network input is {graph.shapes[graph.input]}")
    counts = count_ops(graph, res.spike_sums, res.step_sums, res.n_samples, res.timesteps, res.encoding, ann=ann,
                       x=x, max_samples=max_samples)
    energy = {p.name: _profile_energy(counts, p, batch) for p in profs}
    for r in counts.layers:
        r["energy_j"] = {p.name: layer_energy(r, counts.totals.timesteps, p) for p in profs}

    acc = [float(a) for a in res.accuracy(labels)] if labels is not None else None
    per_step = None
    if counts.per_step is not None:
        T = counts.totals.timesteps
        curves: dict[str, dict[str, list[float | None]]] = {"snn_dynamic_j": {}, "snn_total_j": {}}
        at = [counts_at(counts, t) for t in range(1, T + 1)]  # the totals after each step, for every profile
        for p in profs:
            prices = [price(tot, p, batch) for tot in at]
            curves["snn_dynamic_j"][p.name] = [e.snn_dynamic_j for e in prices]
            curves["snn_total_j"][p.name] = [e.snn_total_j for e in prices]
        per_step = {"timesteps": list(range(1, T + 1)), "accuracy": acc, **curves,
                    "synops": counts.per_step["synops"].tolist()}
    notes = list(counts.notes)
    found = [m.to_dict() if hasattr(m, "to_dict") else dict(m) for m in measurements]
    if measure:
        mine, mnotes = _measure(ann, x)
        found += mine
        notes += mnotes
    for m in found:
        energy[f"measured-{m['workload']}-{m['method']}-bs{m['batch_size']}"] = {
            f"{m['workload']}_dynamic_j": m["dynamic_j_per_item"], f"{m['workload']}_total_j": m["total_j_per_item"],
            "basis": "total", "estimated": False, "device": m["device"], "batch_size": m["batch_size"]}
    carbon = {"grid_g_per_kwh": grid_g_per_kwh, "pue": pue, "sources": CARBON_SOURCES, "per_profile": {}}
    for p, e in energy.items():
        s, a = basis_j(e, "snn"), basis_j(e, "ann")
        carbon["per_profile"][p] = {
            "basis": e["basis"], "snn_g": grams_co2e(s, grid_g_per_kwh, pue) if s is not None else None,
            "ann_g": grams_co2e(a, grid_g_per_kwh, pue) if a is not None else None,
            "snn_g_per_million": grams_co2e(s * 1e6, grid_g_per_kwh, pue) if s is not None else None}
    rep = EnergyReport(totals=counts.totals, layers=counts.layers, energy=energy,
                       assumptions=qnotes + notes + ASSUMPTIONS,
                       profiles={p.name: p.to_dict() for p in profs}, carbon=carbon,
                       meta={"name": name or "network", "backend": res.backend, "encoding": res.encoding,
                             "timesteps": res.timesteps, "n_samples": res.n_samples, "precision": res.precision,
                             "batch_size": batch, "accuracy": acc[-1] if acc else None,
                             "ann_available": ann is not None, "x_given": x is not None},
                       per_step=per_step, measurements=found)
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
    """The ANN measured on this CPU and GPU where Zeus can read them; a note for each that cannot."""
    from snn.energy import measure as ms

    if ann is None or x is None:
        return [], ["measure=True needs net.ann and x=; nothing was measured."]
    out, notes = [], []
    for device in ("cpu", "cuda"):
        try:
            out += [m.to_dict() for m in ms.measure_ann(ann, x, device=device)]
        except SnnError as e:
            notes.append(f"{'CPU' if device == 'cpu' else 'GPU'} not measured: {e}")
    return out, notes
