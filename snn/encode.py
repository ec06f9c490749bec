"""Input encodings shared by every backend (numpy only, seeded).

An encoding turns a batch of analog inputs ``x`` (B, *sample shape) into the input of
the first layer at each timestep ``t = 0 .. T-1``:

* ``"constant"`` (direct / analog input): ``x[t] = x`` at every step. The first layer
  then receives the same current every step, so a backend may compute it once.
* ``"poisson"`` (rate coding): ``x[t] = 1 if u[t] < x else 0`` with ``u[t] ~ U[0, 1)``
  drawn independently per element and step; needs ``0 <= x <= 1``. The draws come from
  ``numpy.random.default_rng([seed, start, t])``, where ``start`` is the index of the
  batch's first sample in the whole input, so any backend given the same ``seed`` and
  batch partition sees exactly the same spikes.
"""
from __future__ import annotations

import numpy as np

from snn.errors import SnnError

ENCODINGS = ("constant", "poisson")


def check_encoding(encoding: str, x: np.ndarray) -> None:
    """Raise :class:`SnnError` for an unknown encoding or inputs it cannot encode."""
    if encoding not in ENCODINGS:
        raise SnnError(f"unknown encoding {encoding!r}; valid: {', '.join(ENCODINGS)}")
    if encoding == "poisson" and x.size and (x.min() < 0 or x.max() > 1):
        raise SnnError(f"poisson encoding needs inputs in [0, 1]; got values in [{x.min():.3g}, {x.max():.3g}]")


def is_static(encoding: str) -> bool:
    """True when the encoded input is the same at every step."""
    return encoding == "constant"


def encode_step(x: np.ndarray, t: int, encoding: str, seed: int, start: int = 0) -> np.ndarray:
    """The input at step ``t`` for batch ``x`` (B, ...) whose first sample has global index ``start``."""
    if encoding == "constant":
        return x
    if encoding == "poisson":
        u = np.random.default_rng([int(seed), int(start), int(t)]).random(x.shape)
        return (u < x).astype(x.dtype)
    raise SnnError(f"unknown encoding {encoding!r}; valid: {', '.join(ENCODINGS)}")


def encode(x: np.ndarray, timesteps: int, encoding: str, seed: int, start: int = 0) -> np.ndarray:
    """All ``timesteps`` inputs as one array (T, B, ...). Prefer :func:`encode_step` for long runs."""
    return np.stack([encode_step(x, t, encoding, seed, start) for t in range(timesteps)])
