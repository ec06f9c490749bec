"""The backend contract and the registry of backends.

A backend is a module with

* ``SUPPORTED``: the node kinds it simulates, derived from its rule table (the keys of
  the tables it interprets the IR with);
* ``OPTIONS``: the names of its extra keyword options;
* ``run(graph, x, *, timesteps, encoding, seed, start, precision, device, record, **options)
  -> BatchRecord`` for one batch ``x`` (B, *input shape) whose first sample has global
  index ``start`` in the whole input;
* optionally ``session(graph, *, timesteps, encoding, seed, precision, device, record, **options)``:
  a context manager yielding ``run_batch(x, start) -> BatchRecord``, for a backend that sets
  up once per simulation rather than per batch (brian2 builds its ``Network`` once);
  :func:`snn.simulate` uses it when present;
* optionally ``prepare(*, device, **options)``: builds what the backend compiles once per
  environment (the snntorch backend's fused CPU kernels); :func:`snn.simulate` calls it
  before it starts timing, so a first run's build is not counted as simulation time.

The registry maps a name to its module, imported lazily so that a backend's simulator is
loaded only when it is used. :func:`check_graph` is what :func:`snn.simulate` runs before
any work: every node kind must be in the backend's supported set, and the graph must end
in a non-spiking ``Readout`` (an ANN graph, whose ReLUs no backend simulates, is refused
with the advice to convert it).

>>> sorted(BACKENDS)
['brian2', 'snntorch']
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from snn import ir
from snn.errors import SnnError

BACKENDS: dict[str, str] = {
    "snntorch": "snn.backends.snntorch",
    "brian2": "snn.backends.brian2",
}


@dataclass
class BatchRecord:
    """What a backend returns for one batch of ``B`` samples.

    ``outputs``: (T, B, K) readout after each step (mean output current so far).
    ``spike_sums``: {node: int64 (*node shape)} spikes summed over steps and the batch.
    ``step_sums``: {node: int64 (T, *node shape)} spikes per step summed over the batch,
    or None when only totals were recorded.
    """

    outputs: np.ndarray
    spike_sums: dict[str, np.ndarray]
    step_sums: dict[str, np.ndarray] | None


def get_backend(name: str) -> ModuleType:
    """The module of backend ``name`` (see the contract above); an unknown name lists the valid ones."""
    if name not in BACKENDS:
        raise SnnError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
    try:
        return importlib.import_module(BACKENDS[name])
    except ImportError as e:
        raise SnnError(f"backend {name!r} needs a package that is not installed ({e}); "
                       f"install it with `pip install {e.name or name}`") from e


def check_graph(graph: ir.Graph, name: str, supported: tuple[str, ...]) -> None:
    """Refuse, before any work, a graph that backend ``name`` cannot simulate exactly."""
    interpreter = f"backend {name!r}"
    for n, node in graph.nodes.items():
        if isinstance(node, ir.ACTIVATIONS):
            raise SnnError(ir.unsupported_message(
                n, node, interpreter, supported,
                "an ANN activation; convert the model first (snn.convert) so it becomes IF neurons"))
    ir.check_supported(graph, supported, interpreter)
    out = graph.nodes[graph.output]
    if not isinstance(out, ir.Readout):
        raise SnnError(f"the output node {graph.output!r} ({out.kind}) of the graph is not a readout: backend "
                       f"{name!r} simulates spiking networks, which end in a non-spiking Readout "
                       "(made by snn.convert)")
