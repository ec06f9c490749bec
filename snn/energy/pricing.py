"""Tiers 2 and 3 of the energy model: counts x per-op energies (compute energy), plus
static power x latency (platform energy). Pure functions of a counts dict (see
:mod:`snn.energy.counting`, per inference) and a :class:`~snn.energy.profiles.Profile`.

Event profiles (``kind="event"``), per inference::

    syn     = synops                      (event-driven)  or  spike_connections * T  (dense)
    E_snn   = syn*e_ac + (input_macs + current_macs)*e_mac + neuron_updates*e_neuron
              + spikes*e_spike + memory_accesses*e_mem                        (compute)
              + static_power_w * T * [t_step_s + (syn*t_ac_s + neuron_updates*t_neuron_s) / parallel_units]
    E_ann   = macs*e_mac + ann_neurons*e_neuron + ann_memory_accesses*e_mem
              + static_power_w * [t_step_s + (macs*t_ac_s + ann_neurons*t_neuron_s) / parallel_units]

(the ANN on a neuromorphic chip follows keras-spiking: each connection one op, one step).

GPU profiles (``kind="gpu"``), roofline at board power ``P``::

    E = P * max(FLOPs / peak_flops, bytes / mem_bw)
    ANN: FLOPs = 2*macs + f_n*ann_neurons,  bytes = b*(params/batch + ann_io_elements)
    SNN: FLOPs = 2*(input_macs + current_macs) + 2*T*spike_connections + f_n*neuron_updates,
         bytes = b*(params/batch + T*snn_io_elements_per_step)         (dense, every step)
"""
from __future__ import annotations

from typing import Any

from snn.energy.profiles import Profile

def price_range(tot: dict[str, Any], profile: Profile) -> dict[str, tuple[float, float] | None]:
    """(min, max) of ``snn_j`` and ``ann_j`` over every corner of the profile's ranges
    (each ranged constant at its low or high end, the others at their values)."""
    import itertools

    from dataclasses import replace

    keys = list(profile.ranges)
    vals: dict[str, list[float]] = {"snn_j": [], "ann_j": []}
    for corner in itertools.product((0, 1), repeat=len(keys)):
        v = dict(profile.values)
        v.update({k: profile.ranges[k][c] for k, c in zip(keys, corner)})
        e = price(tot, replace(profile, values=v))
        for k in vals:
            if e[k] is not None:
                vals[k].append(e[k])
    return {k: (min(v), max(v)) if v else None for k, v in vals.items()}


def _event(tot: dict[str, Any], p: Profile) -> dict[str, Any]:
    g = p.get
    T = tot["timesteps"]
    dense = g("event_driven") == 0
    syn = tot["spike_connections"] * T if dense else tot["synops"]
    macs = tot["input_macs"] + tot["current_macs"]
    mem = tot["memory_accesses"] + (syn - tot["synops"])
    parts = {"synaptic": syn * g("e_ac"), "macs": macs * g("e_mac"),
             "neurons": tot["neuron_updates"] * g("e_neuron"), "spikes": tot["spikes"] * g("e_spike"),
             "memory": mem * g("e_mem")}
    par = g("parallel_units")
    latency = T * g("t_step_s") + (syn * g("t_ac_s") + tot["neuron_updates"] * g("t_neuron_s")) / par
    parts["static"] = g("static_power_w") * latency

    def ann(m: float | None) -> float | None:
        if m is None:
            return None
        n = tot["ann_neurons"]
        mem_ann = tot["ann_memory_accesses"] - 2 * tot["macs_dense"] + 2 * m
        lat = g("t_step_s") + (m * g("t_ac_s") + n * g("t_neuron_s")) / par
        return m * g("e_mac") + n * g("e_neuron") + mem_ann * g("e_mem") + g("static_power_w") * lat

    return {"snn_j": sum(parts.values()), "snn_compute_j": sum(v for k, v in parts.items() if k != "static"),
            "snn_platform_j": parts["static"], "snn_breakdown": parts, "snn_latency_s": latency,
            "ann_j": ann(tot["macs_dense"]), "ann_effective_j": ann(tot["macs_effective"]),
            "spike_dependent": not dense}


def _gpu(tot: dict[str, Any], p: Profile) -> dict[str, Any]:
    g = p.get
    P, peak, bw, b = g("board_power_w"), g("peak_flops"), g("mem_bw"), g("bytes_per_value")
    fn = g("flops_per_neuron_update")
    wbytes = b * tot["params"] / g("batch_size")
    T = tot["timesteps"]
    a_flops = 2 * tot["macs_dense"] + fn * tot["ann_neurons"]
    a_bytes = wbytes + b * tot["ann_io_elements"]
    s_flops = 2 * (tot["input_macs"] + tot["current_macs"]) + 2 * T * tot["spike_connections"] \
        + fn * tot["neuron_updates"]
    s_bytes = wbytes + b * T * tot["snn_io_elements_per_step"]
    ann = P * max(a_flops / peak, a_bytes / bw)
    s_compute, s_memory = P * s_flops / peak, P * s_bytes / bw
    return {"snn_j": max(s_compute, s_memory), "snn_compute_j": max(s_compute, s_memory), "snn_platform_j": 0.0,
            "snn_breakdown": {"compute_bound": s_compute, "memory_bound": s_memory},
            "snn_latency_s": max(s_flops / peak, s_bytes / bw),
            "ann_j": ann, "ann_effective_j": ann, "spike_dependent": False,
            "ann_flops": a_flops, "ann_bytes": a_bytes, "snn_flops": s_flops, "snn_bytes": s_bytes}


def price(tot: dict[str, Any], profile: Profile) -> dict[str, Any]:
    """Energy per inference of the SNN and the ANN on ``profile`` (joules)."""
    return (_gpu if profile.kind == "gpu" else _event)(tot, profile)


def layer_energy(row: dict[str, Any], timesteps: int, profile: Profile) -> float:
    """Compute-tier SNN energy attributable to one layer row (event profiles; for GPU
    profiles, the row's dense FLOPs at the board's energy per FLOP)."""
    if profile.kind == "gpu":
        flops = 2 * (row["input_macs"] + row["current_macs"] + timesteps * row["spike_connections"]) \
            + profile.get("flops_per_neuron_update") * row["neuron_updates"]
        return flops * profile.get("board_power_w") / profile.get("peak_flops")
    syn = row["spike_connections"] * timesteps if profile.get("event_driven") == 0 else row["synops"]
    macs = row["input_macs"] + row["current_macs"]
    mem = syn + 2 * macs + 2 * row["neuron_updates"] + row["spikes"]
    return (syn * profile.get("e_ac") + macs * profile.get("e_mac") + row["neuron_updates"] * profile.get("e_neuron")
            + row["spikes"] * profile.get("e_spike") + mem * profile.get("e_mem"))
