"""Tiers 2 and 3 of the energy model: counts x per-op energies (compute), plus the
time-driven terms of real hardware (platform). Pure functions of the counts
(:class:`~snn.energy.totals.Totals`, per inference), a profile and the batch size.

Dynamic energy is what running the network adds (compute, runtime and management power
over the run); total energy adds the idle/static power over the same wall time. A
profile without a platform tier prices dynamic energy only; its total is unknown (None).

Event chips (``kind="event"``), per inference, the SNN over T steps::

    syn      = synops  (event-driven)  or  spike_connections * T  (event_driven = 0)
    compute  = syn*e_ac + (input_macs + current_macs)*e_mac + neuron_updates*e_neuron
               + spikes*e_spike + memory(syn)*e_mem
    latency  = T * (t_host_step + t_chip_step)            (t_chip_step: snn.energy.mapping)
    dynamic  = compute + runtime_power * chips * latency
    total    = dynamic + static_power * chips * latency

and the ANN one step, each connection one op (keras-spiking's convention): ``macs*e_mac +
ann_neurons*e_neuron + memory(macs)*e_mem``, latency ``t_host_step + t_chip_step``.

Dense processors (``kind`` gpu, cpu, vpu), one call of ``b`` inferences::

    t_roof   = max(FLOPs / peak_flops, bytes / mem_bw)
    t_call   = t_call_s + kernels * t_kernel_s + t_roof / efficiency
    dynamic  = (active_power + host_power) * t_call / b       per inference
    total    = dynamic + idle_power * t_call / b
    (no platform tier: dynamic = board_power * t_roof / b, the roofline at board power)
    ANN: FLOPs = b*(2*macs + f_n*ann_neurons), bytes = B*(params + b*ann_io_elements),
         kernels = ann_kernels
    SNN: FLOPs = b*(2*(input_macs + current_macs) + 2*T*spike_connections + f_n*neuron_updates),
         bytes = B*(T*params + b*(T*snn_io_elements_per_step + snn_io_elements_static)),
         kernels = T*snn_kernels_per_step + snn_kernels_static        (dense, every step)

so the energy per inference is flat per call at small batch (the fixed terms dominate)
and falls towards the roofline as the batch grows.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any, Callable

from snn.energy.mapping import map_layers
from snn.energy.profiles import TIERS, Profile
from snn.energy.totals import Totals, snn_memory
from snn.errors import SnnError


@dataclass(frozen=True)
class Price:
    """Energy per inference (J) of the SNN and of its ANN on one profile, and the latency
    each assumes (s; dense processors: one call of the batch)."""

    snn_dynamic_j: float
    snn_total_j: float | None
    snn_latency_s: float | None
    ann_dynamic_j: float | None
    ann_total_j: float | None
    ann_latency_s: float | None
    ann_effective_dynamic_j: float | None
    snn_breakdown: dict[str, float]
    spike_dependent: bool


def check_batch_size(batch_size: Any) -> int:
    """``batch_size`` as an int >= 1, else :class:`SnnError`."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SnnError(f"batch_size must be an integer >= 1 (inferences per call), got {batch_size!r}")
    return batch_size


# --------------------------------------------------------------------------- event chips
def _event(tot: Totals, p: Profile, batch: int) -> Price:
    g = p.get
    T = tot.timesteps
    dense = g("event_driven") == 0
    syn = tot.spike_connections * T if dense else tot.synops
    parts = {"synaptic": syn * g("e_ac"), "macs": (tot.input_macs + tot.current_macs) * g("e_mac"),
             "neurons": tot.neuron_updates * g("e_neuron"), "spikes": tot.spikes * g("e_spike"),
             "memory": sum(tot.snn_memory(syn).values()) * g("e_mem")}
    has_ann = tot.macs_dense > 0

    def ann_compute(m: float | None) -> float | None:
        if not has_ann or m is None:
            return None
        return m * g("e_mac") + tot.ann_neurons * g("e_neuron") + sum(tot.ann_memory(m).values()) * g("e_mem")

    a_dyn, a_eff = ann_compute(tot.macs_dense), ann_compute(tot.macs_effective)
    if not p.has("platform"):
        return Price(sum(parts.values()), None, None, a_dyn, None, None, a_eff, parts, not dense)

    def chip(events: Callable[[Any], float]) -> tuple[float, int]:
        m = map_layers(tot.loads, {ld.node: events(ld) for ld in tot.loads}, g("neurons_per_core"),
                       g("cores_per_chip"), g("t_sync_s"), g("t_ac_s"), g("t_neuron_s"))
        return g("t_host_step_s") + m.step_s, m.chips

    step, chips = chip(lambda ld: ld.synapses if dense else ld.synops / T)
    lat = T * step
    parts["runtime"] = g("runtime_power_w") * chips * lat
    dyn = sum(parts.values())
    a_lat, a_chips = chip(lambda ld: ld.macs)
    a_run, a_static = (g(k) * a_chips * a_lat for k in ("runtime_power_w", "static_power_w"))
    return Price(dyn, dyn + g("static_power_w") * chips * lat, lat,
                 a_dyn + a_run if has_ann else None, a_dyn + a_run + a_static if has_ann else None,
                 a_lat if has_ann else None, a_eff + a_run if a_eff is not None else None, parts, not dense)


# --------------------------------------------------------------------------- dense processors
def _call(p: Profile, flops: float, nbytes: float, kernels: float, batch: int
          ) -> tuple[float, float | None, float, dict[str, float]]:
    """(dynamic J, total J per inference, latency s of the call, breakdown) of one call."""
    g = p.get
    t_roof = max(flops / g("peak_flops"), nbytes / g("mem_bw"))
    if not p.has("platform"):
        e = g("board_power_w") * t_roof / batch
        return e, None, t_roof, {"roofline": e}
    fixed = g("t_call_s") + kernels * g("t_kernel_s")
    work = t_roof / g("efficiency")
    active = g("active_power_w") + g("host_power_w")
    br = {"fixed": active * fixed / batch, "roofline": active * work / batch,
          "idle": g("idle_power_w") * (fixed + work) / batch}
    return br["fixed"] + br["roofline"], br["fixed"] + br["roofline"] + br["idle"], fixed + work, br


def _dense(tot: Totals, p: Profile, batch: int) -> Price:
    g = p.get
    b, B, fn, T = batch, g("bytes_per_value"), g("flops_per_neuron_update"), tot.timesteps
    s_flops = b * (2 * (tot.input_macs + tot.current_macs) + 2 * T * tot.spike_connections + fn * tot.neuron_updates)
    s_bytes = B * (T * tot.params + b * (T * tot.snn_io_elements_per_step + tot.snn_io_elements_static))
    s_dyn, s_tot, s_lat, br = _call(p, s_flops, s_bytes, T * tot.snn_kernels_per_step + tot.snn_kernels_static, b)
    if tot.macs_dense == 0:
        return Price(s_dyn, s_tot, s_lat, None, None, None, None, br, False)
    a_flops = b * (2 * tot.macs_dense + fn * tot.ann_neurons)
    a_dyn, a_tot, a_lat, _ = _call(p, a_flops, B * (tot.params + b * tot.ann_io_elements), tot.ann_kernels, b)
    return Price(s_dyn, s_tot, s_lat, a_dyn, a_tot, a_lat, a_dyn, br, False)


TIER_PRICING: dict[str, Callable[[Totals, Profile, int], Price]] = {
    "event": _event, "gpu": _dense, "cpu": _dense, "vpu": _dense}
"""One pricing rule per profile kind."""


def price(tot: Totals, profile: Profile, batch_size: int = 1) -> Price:
    """Energy per inference of the SNN and the ANN on ``profile`` (joules), served in calls
    of ``batch_size`` inferences (event chips run one inference at a time: no effect)."""
    return TIER_PRICING[profile.kind](tot, profile, check_batch_size(batch_size))


def price_range(tot: Totals, profile: Profile, batch_size: int = 1) -> dict[str, tuple[float, float] | None]:
    """(min, max) of each energy of :class:`Price` over every corner of the profile's
    ranges (each ranged pricing constant at its low or high end, the others at their values)."""
    priced = {k for t, spec in TIERS[profile.kind].items() if t != "embodied" for k in spec.required + spec.optional}
    keys = [k for k in profile.ranges if k in priced]
    fields = ("snn_dynamic_j", "snn_total_j", "ann_dynamic_j", "ann_total_j")
    vals: dict[str, list[float]] = {k: [] for k in fields}
    for corner in itertools.product((0, 1), repeat=len(keys)):
        v = dict(profile.values)
        v.update({k: profile.ranges[k][c] for k, c in zip(keys, corner)})
        e = price(tot, dataclasses.replace(profile, values=v), batch_size)
        for k in fields:
            if getattr(e, k) is not None:
                vals[k].append(getattr(e, k))
    return {k: (min(v), max(v)) if v else None for k, v in vals.items()}


def layer_energy(row: dict[str, Any], timesteps: int, profile: Profile) -> float:
    """Compute-tier SNN energy attributable to one layer row (event profiles; for dense
    profiles, the row's dense FLOPs at the board's energy per FLOP)."""
    if profile.kind != "event":
        flops = 2 * (row["input_macs"] + row["current_macs"] + timesteps * row["spike_connections"]) \
            + profile.get("flops_per_neuron_update") * row["neuron_updates"]
        return flops * profile.get("board_power_w") / profile.get("peak_flops")
    syn = row["spike_connections"] * timesteps if profile.get("event_driven") == 0 else row["synops"]
    macs = row["input_macs"] + row["current_macs"]
    mem = sum(snn_memory(syn, macs, row["neuron_updates"], row["spikes"]).values())
    return (syn * profile.get("e_ac") + macs * profile.get("e_mac") + row["neuron_updates"] * profile.get("e_neuron")
            + row["spikes"] * profile.get("e_spike") + mem * profile.get("e_mem"))
