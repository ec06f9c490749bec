"""snntorch backend: fast multi-step simulation in torch (CPU or CUDA), and export of a
network as a plain snntorch ``nn.Module`` that advances one step per ``forward`` call.

Its rooms:

* :mod:`~snn.backends.snntorch.engine`: the tiling engine, :func:`run` (the backend
  contract of :mod:`snn.backends`), its table of stateful nodes :data:`STATEFUL` and the
  supported set :data:`SUPPORTED` derived from it and from :data:`snn.ir_torch.OPS`;
* :mod:`~snn.backends.snntorch.event_cost`: the event-driven synaptic layers and the
  measured cost model (:data:`EVENT_COST`, :func:`event_wins`) that chooses them over the
  dense ops;
* :mod:`~snn.backends.snntorch.export`: :func:`to_snntorch`, the one-step-per-call
  ``nn.Module`` (:class:`SnnTorchNetwork`);
* :mod:`~snn.backends.snntorch.kernels`: build, cache and load of the fused C++ CPU
  kernels, whose source is ``csrc/fused.cpp``.
"""
from snn.backends.snntorch.engine import DTYPES, OPTIONS, STATEFUL, SUPPORTED, prepare, run
from snn.backends.snntorch.event_cost import EVENT_COST, event_wins
from snn.backends.snntorch.export import SnnTorchNetwork, to_snntorch

__all__ = ["DTYPES", "EVENT_COST", "OPTIONS", "STATEFUL", "SUPPORTED", "SnnTorchNetwork", "event_wins", "prepare",
           "run", "to_snntorch"]
