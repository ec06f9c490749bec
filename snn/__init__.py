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


def energy_report(net, res, hardware=("45nm-fp32", "loihi", "gpu-h100"), **kwargs):
    """Operation counts and energy of ``net`` given a simulation result; see :mod:`snn.energy`."""
    from snn.energy import energy_report as _energy_report

    return _energy_report(net, res, hardware=hardware, **kwargs)


def run_experiment(config, **kwargs):
    """Run one experiment from a config (path, dict or object); see :mod:`snn.runner`."""
    from snn.runner import run_experiment as _run_experiment

    return _run_experiment(config, **kwargs)


__all__ += ["energy_report", "run_experiment"]
