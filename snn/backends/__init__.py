"""Backend registry: ``name -> "module:function"``, imported lazily so that a backend's
simulator is loaded only when it is used.

A backend function has the signature::

    run(graph, x, *, timesteps, encoding, seed, start, precision, device, record, **options)
        -> snn.simulate.BatchRecord

for one batch ``x`` (B, *input shape) whose first sample has global index ``start``.
"""
from __future__ import annotations

import importlib
from typing import Callable

from snn.errors import SnnError

BACKENDS: dict[str, str] = {
    "snntorch": "snn.backends.snntorch:run",
    "brian2": "snn.backends.brian2:run",
}


def get_backend(name: str) -> Callable:
    """The run function of backend ``name``; an unknown name lists the valid ones."""
    if name not in BACKENDS:
        raise SnnError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
    module, func = BACKENDS[name].split(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise SnnError(f"backend {name!r} needs a package that is not installed ({e}); "
                       f"install it with `pip install {e.name or name}`") from e
    return getattr(mod, func)
