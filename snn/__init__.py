"""snn: convert trained PyTorch ANNs into spiking networks, simulate them (snntorch,
brian2), count their operations and price them on neuromorphic hardware and GPUs.

>>> import snn
>>> net = snn.convert(model, calibration)            # doctest: +SKIP
>>> res = snn.simulate(net, x_test, timesteps=64)    # doctest: +SKIP
>>> res.accuracy(y_test)[-1]                          # doctest: +SKIP
"""
from snn.errors import ConfigError, ConversionError, DataError, SnnError
from snn.network import SpikingNetwork, load
from snn.simulate import SimulationResult, simulate

__version__ = "0.1.0"


def convert(model, calibration, **kwargs):
    """Convert a trained ANN into a :class:`SpikingNetwork`; see :func:`snn.conversion.convert`."""
    from snn.conversion import convert as _convert

    return _convert(model, calibration, **kwargs)


__all__ = ["convert", "simulate", "load", "SpikingNetwork", "SimulationResult", "SnnError",
           "ConversionError", "ConfigError", "DataError", "__version__"]
