"""Carbon: grams of CO2-equivalent from joules, with a grid intensity and PUE the user sets.

    gCO2e = J / 3.6e6 * PUE * grid_g_per_kwh

Defaults follow codecarbon: world average 475 g/kWh (IEA 2019) and PUE 1.0.
Others used by peers: carbontracker 481 g/kWh with PUE 1.58; codecarbon 2023 country
figures, e.g. USA 369.5, France 56.0, Germany 381, China 582.3, India 713.4 g/kWh.
"""
from __future__ import annotations

import math

from snn.errors import SnnError

DEFAULT_GRID_G_PER_KWH = 475.0
DEFAULT_PUE = 1.0
SOURCES = {
    "grid_g_per_kwh": "codecarbon world average 475 gCO2e/kWh (IEA 2019)",
    "pue": "codecarbon default PUE 1.0 (carbontracker uses 1.58)",
}
COUNTRIES_G_PER_KWH = {"world": 475.0, "usa": 369.5, "france": 56.0, "germany": 381.0, "china": 582.3,
                       "india": 713.4}


def check_carbon(grid_g_per_kwh: float, pue: float) -> None:
    """Raise :class:`SnnError` unless ``grid_g_per_kwh >= 0`` and ``pue >= 1`` are finite."""
    for name, v, lo in (("grid intensity (g/kWh)", grid_g_per_kwh, 0.0), ("PUE", pue, 1.0)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < lo:
            raise SnnError(f"{name} must be a finite number >= {lo:g}, got {v!r}")


def grams_co2e(joules: float, grid_g_per_kwh: float = DEFAULT_GRID_G_PER_KWH, pue: float = DEFAULT_PUE) -> float:
    """gCO2e emitted by ``joules`` of device energy at this grid intensity and PUE."""
    check_carbon(grid_g_per_kwh, pue)
    return float(joules) / 3.6e6 * pue * grid_g_per_kwh
