"""How a network's layers sit on an event chip's cores, and the time of one step.

As SANA-FE maps a network, each neuron layer gets its own cores, as few as hold its
neurons (``neurons_per_core``); a core steps through its neurons and the synaptic events
they receive, so the step lasts as long as the busiest core, not the mean of all cores::

    cores_L      = ceil(neurons_L / neurons_per_core)
    t_core_L     = events_L / cores_L * t_ac + ceil(neurons_L / cores_L) * t_neuron
    t_chip_step  = t_sync + max_L t_core_L          (barrier, then the slowest core)
    chips        = ceil(sum_L cores_L / cores_per_chip)

``events_L`` are the synaptic events (SynOps, or MACs of the ANN) the layer receives in
one step. The busiest layer sets the pace; a large layer is split over more cores.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from snn.energy.totals import LayerLoad


@dataclass(frozen=True)
class Mapping:
    """Cores per layer, chips, and the chip time of one step (seconds)."""

    cores: dict[str, int]
    chips: int
    step_s: float
    busiest: str | None


def map_layers(loads: tuple[LayerLoad, ...], events_per_step: dict[str, float], neurons_per_core: float,
               cores_per_chip: float, t_sync: float, t_ac: float, t_neuron: float) -> Mapping:
    """Place ``loads`` on cores and time one step; ``events_per_step``: synaptic events each
    layer receives per step (by node)."""
    cores = {ld.node: max(1, math.ceil(ld.neurons / neurons_per_core)) for ld in loads}
    times = {ld.node: events_per_step.get(ld.node, 0.0) / cores[ld.node] * t_ac
             + math.ceil(ld.neurons / cores[ld.node]) * t_neuron for ld in loads}
    busiest = max(times, key=times.get) if times else None
    return Mapping(cores, max(1, math.ceil(sum(cores.values()) / cores_per_chip)),
                   t_sync + (times[busiest] if busiest else 0.0), busiest)
