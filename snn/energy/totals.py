"""The operation counts of one simulated network, per inference, as a typed record
(:class:`Totals`), and the memory model, written once (:meth:`Totals.snn_memory`,
:meth:`Totals.ann_memory`).

Every count is per inference (per sample), averaged over the simulated samples. Counts
that depend on spikes (SynOps, spikes, active updates, the per-layer loads) are scaled
together by :meth:`Totals.with_spikes_scaled` (the break-even rate) and cut at step ``t``
by :meth:`Totals.at_step` (energy after each step); the memory accesses are derived from
the counts, so they follow automatically.

Memory model (accesses of one word each, per inference)::

    SNN  weight reads  = synaptic events + input_macs + current_macs
         input reads   = input_macs + current_macs
         state r/w     = 2 * neuron_updates          (membrane read + write)
         spike writes  = spikes                      (every recorded spike source)
    ANN  weight reads  = macs,  activation reads = macs,
         activation writes = ann_activation_writes   (every synaptic-layer and ReLU output)

"synaptic events" are the SynOps on an event-driven chip and ``spike_connections * T``
on one that computes every connection at every step; ``macs`` the dense or the
effective MACs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from snn.errors import SnnError


def snn_memory(synaptic_events: float, macs: float, neuron_updates: float, spikes: float) -> dict[str, float]:
    """The SNN memory model (accesses, one word each) of a network or of one layer."""
    return {"weight_reads": synaptic_events + macs, "input_reads": macs, "state_reads_writes": 2 * neuron_updates,
            "spike_writes": spikes}


@dataclass(frozen=True)
class LayerLoad:
    """What one neuron layer asks of the cores that hold it, per inference: the input of
    the core mapping of event chips (:mod:`snn.energy.mapping`)."""

    node: str
    """The neuron layer (an IF or readout node of the SNN graph)."""
    neurons: int
    """Neurons in the layer."""
    synops: float
    """Synaptic events delivered to the layer per inference (SynOps of the synaptic
    layers that feed it, plus their per-step MACs when fed by a current)."""
    macs: float
    """The ANN's dense MACs into the layer per inference (one step)."""
    synapses: int
    """Structural synapses (connections) into the layer."""


@dataclass(frozen=True)
class Totals:
    """Operation counts per inference of a spiking network and of its ANN (see
    :mod:`snn.energy.counting` for every definition). Counts are floats where they are
    means over samples. ``None`` marks a count that was not measured (no inputs given,
    no ANN graph)."""

    timesteps: int
    """T, the simulated steps per inference."""
    encoding: str
    """Input encoding of the simulation (``constant``: analog input, first layer as MACs)."""
    n_samples: int
    """Samples the counts are averaged over."""
    synops: float
    """Synaptic operations: presynaptic spikes x fan-out over non-zero weights."""
    input_macs: float
    """MACs of the first synaptic layer(s) on analog input, once per inference (dense)."""
    input_macs_effective: float | None
    """``input_macs`` from non-zero inputs only (None: inputs not given)."""
    current_macs: float
    """MACs of synaptic layers fed by a current (every connection, every step)."""
    current_macs_static: float
    """The part of ``current_macs`` computed once (the layer's input is constant)."""
    neurons: int
    """IF and readout neurons."""
    if_neurons: int
    """IF neurons."""
    neuron_updates: int
    """Neuron updates: ``neurons * T`` (dense)."""
    active_updates: float
    """Updates that emit a spike (IF spikes)."""
    spikes: float
    """Spikes of every recorded spike source (IF layers, spiking max-pools)."""
    routed_spikes: float
    """Spikes routed through spiking max-pools (0 SynOps)."""
    firing_rate: float
    """Mean IF firing rate, spikes per neuron per step."""
    spike_connections: int
    """Structural connections from spike sources (every weight): a dense GPU's work per step."""
    macs_dense: int
    """The ANN's MACs: structural connections of its Linear/Conv/Affine layers (0: no ANN)."""
    macs_effective: float | None
    """The ANN's MACs from non-zero inputs through non-zero weights (None: not measured)."""
    ann_neurons: int
    """ReLU (activation) elements of the ANN."""
    activation_sparsity: float | None
    """Fraction of zero ANN activations on the inputs (None: not measured)."""
    connection_sparsity: float
    """Fraction of zero weights in the synaptic layers."""
    ann_activation_writes: int
    """Elements written by the ANN's synaptic layers and activations, unfused."""
    ann_io_elements: int
    """Tensor elements a GPU reads and writes per ANN inference with kernel fusion (a
    synaptic layer and the activation after it are one kernel: its output is written once)."""
    ann_kernels: int
    """Kernels per ANN forward pass after fusion."""
    snn_io_elements_per_step: int
    """Tensor elements a GPU reads and writes per SNN step (fused synaptic layer + IF update,
    membrane read and write), for the nodes computed at every step."""
    snn_io_elements_static: int
    """The same for the nodes computed once per inference (on a constant input)."""
    snn_kernels_per_step: int
    """Kernels per SNN step after fusion."""
    snn_kernels_static: int
    """Kernels computed once per inference (on a constant input)."""
    params: int
    """Parameters (weights, biases, scales) of the SNN graph."""
    loads: tuple[LayerLoad, ...] = field(default=())
    """Per neuron layer: neurons, synaptic events, ANN MACs and synapses (the core mapping)."""

    # ------------------------------------------------------------------ the memory model
    def snn_memory(self, synaptic_events: float | None = None) -> dict[str, float]:
        """The SNN's memory accesses per inference (words), with ``synaptic_events`` weight
        reads for the synaptic operations (default ``synops``; a chip that computes every
        connection every step passes ``spike_connections * T``)."""
        return snn_memory(self.synops if synaptic_events is None else synaptic_events,
                          self.input_macs + self.current_macs, self.neuron_updates, self.spikes)

    def ann_memory(self, macs: float | None = None) -> dict[str, float]:
        """The ANN's memory accesses per inference (words) for ``macs`` MACs (default
        ``macs_dense``; pass ``macs_effective`` for sparsity-aware hardware)."""
        m = self.macs_dense if macs is None else macs
        return {"weight_reads": m, "activation_reads": m, "activation_writes": self.ann_activation_writes}

    @property
    def memory_accesses(self) -> float:
        """Total SNN memory accesses per inference (event-driven)."""
        return sum(self.snn_memory().values())

    @property
    def ann_memory_accesses(self) -> float:
        """Total ANN memory accesses per inference (dense MACs)."""
        return sum(self.ann_memory().values())

    # ------------------------------------------------------------------ variants
    def with_spikes_scaled(self, s: float) -> "Totals":
        """Every spike-dependent count multiplied by ``s`` (the break-even rate)."""
        return dataclasses.replace(
            self, synops=self.synops * s, active_updates=self.active_updates * s, spikes=self.spikes * s,
            routed_spikes=self.routed_spikes * s, firing_rate=self.firing_rate * s,
            loads=tuple(dataclasses.replace(ld, synops=ld.synops * s) for ld in self.loads))

    def at_step(self, t: int, synops: float, active_updates: float, spikes: float) -> "Totals":
        """The counts of the run stopped after ``t`` of ``T`` steps, given the cumulative
        spike-dependent counts there: dense neuron updates ``neurons * t``, per-step current
        MACs ``* t / T``, the analog first layer once; per-layer loads scaled with SynOps."""
        if not 1 <= t <= self.timesteps:
            raise SnnError(f"step {t} is outside 1..{self.timesteps}")
        frac = t / self.timesteps
        s = synops / self.synops if self.synops else 0.0
        return dataclasses.replace(
            self, timesteps=t, synops=synops, active_updates=active_updates, spikes=spikes,
            neuron_updates=self.neurons * t,
            current_macs=self.current_macs_static + (self.current_macs - self.current_macs_static) * frac,
            loads=tuple(dataclasses.replace(ld, synops=ld.synops * s) for ld in self.loads))

    # ------------------------------------------------------------------ JSON / HDF5
    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON, the HDF5 attribute): the counts and the derived memory accesses."""
        d = dataclasses.asdict(self)
        d.update(memory=self.snn_memory(), memory_accesses=self.memory_accesses, ann_memory=self.ann_memory(),
                 ann_memory_accesses=self.ann_memory_accesses)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Totals":
        """The inverse of :meth:`to_dict` (derived entries are recomputed, not read)."""
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(names - set(d) - {"loads"})
        if missing:
            raise SnnError(f"energy totals lack {', '.join(missing)} (written by another version of snn?)")
        kw = {k: v for k, v in d.items() if k in names}
        kw["loads"] = tuple(LayerLoad(**ld) for ld in d.get("loads", ()))
        return cls(**kw)
