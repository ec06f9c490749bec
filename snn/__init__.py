"""snn: convert trained PyTorch ANNs into spiking networks, simulate them (snntorch,
brian2), count their operations and price them on neuromorphic hardware and GPUs.

The whole path on a tiny network (a trained model works the same way):

>>> import torch, snn
>>> _ = torch.manual_seed(0)
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
>>> x = torch.rand(64, 4)
>>> net = snn.convert(model, x)                          # calibrate on x, ReLU -> IF
>>> res = snn.simulate(net, x, timesteps=32)              # backend="snntorch" by default
>>> res.outputs.shape                                     # (T, N, outputs): readout after each step
(32, 64, 3)
>>> labels = model(x).argmax(1).numpy()
>>> bool(res.accuracy(labels)[-1] > 0.8)                  # agreement with the ANN after 32 steps
True
>>> rep = snn.energy_report(net, res, hardware=["loihi"])
>>> rep.totals.synops > 0
True
"""
from snn.errors import ConfigError, ConversionError, DataError, SnnError
from snn.network import SpikingNetwork, load
from snn.simulate import SimulationResult, simulate

__version__ = "0.1.0"


def convert(model, calibration, **kwargs):
    """Convert a trained ANN into a :class:`SpikingNetwork` of integrate-and-fire neurons.

    Each ReLU (or clipped ReLU) becomes a layer of IF neurons whose rate over ``T`` steps
    approximates the activation divided by its calibrated scale ``lambda``::

        u[t] = v[t-1] + I[t];  s[t] = [u[t] > 1];  v[t] = u[t] - s[t]     (reset="subtract")
        rate = sum_t s[t] / T  ~=  clip(a / lambda, 0, 1)

    and the scales are folded into the weights (every threshold is 1). Full method and
    options: :func:`snn.conversion.convert`.

    Args:
        model: a trained ``torch.nn.Module`` (not modified; a copy is traced in eval mode).
        calibration: inputs ``(N, *sample shape)`` (tensor, array, or a DataLoader of ``x``
            or ``(x, y)`` batches) used to pick the scales.
        **kwargs: ``method``, ``percentile``, ``channelwise``, ``reset``, ``v_init``, ...

    Returns:
        :class:`SpikingNetwork`: ``graph`` (the SNN), ``ann`` (the traced ANN), ``meta``.

    Raises:
        ConversionError: a layer that cannot be converted, named by its module path, op and
            the supported list; bad calibration data.

    >>> import torch, snn
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> net = snn.convert(model, torch.rand(32, 4))
    >>> [v.kind for v in net.graph.nodes.values()]
    ['input', 'linear', 'if', 'linear', 'readout']
    >>> snn.convert(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GELU()), torch.rand(8, 4))
    Traceback (most recent call last):
    ...
    snn.errors.ConversionError: cannot convert node '1' (GELU): module type GELU is not supported. ...
    """
    from snn.conversion import convert as _convert

    return _convert(model, calibration, **kwargs)


__all__ = ["convert", "simulate", "load", "SpikingNetwork", "SimulationResult", "SnnError",
           "ConversionError", "ConfigError", "DataError", "__version__"]


def energy_report(net, res, hardware=("45nm-fp32", "loihi", "gpu-h100"), **kwargs):
    """Operation counts and energy per inference of ``net`` from its simulation result.

    SynOps are spikes times their exact fan-out (``SynOps = sum_t sum_i s[t, i] * fanout[i]``),
    against the ANN's multiply-accumulates; both are priced on each hardware profile
    (full definitions: :mod:`snn.energy.counting`, :mod:`snn.energy.pricing`).

    Args:
        net: a :class:`SpikingNetwork` (its ``ann`` gives the ANN MACs) or an SNN graph.
        res: its :class:`SimulationResult`, recorded with ``record="steps"`` or ``"totals"``.
        hardware: profile names (``snn hardware`` lists them) or profile objects.
        **kwargs: ``x``, ``labels``, ``profiles_file``, ... (see :func:`snn.energy.energy_report`).

    Returns:
        :class:`snn.energy.EnergyReport`: ``totals``, per-layer rows, energy per profile.

    Raises:
        SnnError: an unknown profile, a result without spike counts, inputs of the wrong shape.

    >>> import torch, snn
    >>> net = snn.convert(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)),
    ...                   torch.rand(32, 4))
    >>> rep = snn.energy_report(net, snn.simulate(net, torch.rand(8, 4), timesteps=4), hardware=["loihi"])
    >>> rep.totals.neuron_updates                    # (8 IF + 2 readout neurons) x 4 steps
    40
    """
    from snn.energy import energy_report as _energy_report

    return _energy_report(net, res, hardware=hardware, **kwargs)


def run_experiment(config, **kwargs):
    """Run one experiment from a config (path, dict or object); see :func:`snn.runner.run_experiment`.

    Returns the stored run (``run.path``, ``run.summary``, ``run.data.accuracy``); raises
    ``ConfigError`` naming the key path for a bad config, before any data is loaded.
    """
    from snn.runner import run_experiment as _run_experiment

    return _run_experiment(config, **kwargs)


__all__ += ["energy_report", "run_experiment"]
from snn.energy.lifecycle import Deployment, Training, lifecycle  # noqa: E402  (the life cycle, issue 11)
__all__ += ["lifecycle", "Deployment", "Training"]


def to_nir(net, path, allow_lossy=False):
    """Write ``net`` as a NIR graph file (exact, or refused by node; see :mod:`snn.nir`)."""
    from snn.nir import to_nir as _to_nir

    return _to_nir(net, path, allow_lossy=allow_lossy)


def from_nir(path):
    """Read a NIR graph file (ours or another library's) as a :class:`SpikingNetwork` (see :mod:`snn.nir`)."""
    from snn.nir import from_nir as _from_nir

    return _from_nir(path)


__all__ += ["to_nir", "from_nir"]


def load_model(path, arch, **arch_kwargs):
    """Load a trained ANN from a checkpoint without running code from the file.

    The checkpoint is a state dict: safetensors, or ``torch.save`` read with
    ``torch.load(weights_only=True)``. A pickle that carries code (any object other than
    tensors and plain containers) is refused before anything in it runs.

    Args:
        path: the checkpoint (``.safetensors``, ``.pt``, ``.pth``).
        arch: a zoo architecture name (``snn.zoo.MODELS``), a ``torch.nn.Module`` to load
            into, or a callable returning one (called with ``arch_kwargs``).
        **arch_kwargs: arguments of the zoo architecture or of the callable.

    Returns:
        the model with the checkpoint's weights, in eval mode.

    Raises:
        SnnError: a missing, corrupt or unsafe file; weights that do not fit ``arch``.

    >>> import os, tempfile, torch, snn
    >>> path = os.path.join(tempfile.mkdtemp(), "mlp.pt")
    >>> torch.save(torch.nn.Linear(4, 2).state_dict(), path)
    >>> snn.load_model(path, torch.nn.Linear(4, 2)).weight.shape
    torch.Size([2, 4])
    """
    import torch

    from snn import train, zoo

    if isinstance(arch, str):
        model = zoo.create_model(arch, **arch_kwargs)
    elif isinstance(arch, torch.nn.Module):
        if arch_kwargs:
            raise SnnError(f"load_model: arguments {sorted(arch_kwargs)} given with a module instance")
        model = arch
    elif callable(arch):
        model = arch(**arch_kwargs)
    else:
        raise SnnError(f"load_model: arch must be a zoo name, a torch.nn.Module or a callable, got {type(arch).__name__}")
    if not isinstance(model, torch.nn.Module):
        raise SnnError(f"load_model: arch gave a {type(model).__name__}, not a torch.nn.Module")
    train.load_checkpoint(model, path)
    return model.eval()


__all__ += ["load_model"]


def quantize(net, weight_bits=8):
    """``net`` with per-layer fixed-point weights (shared exponent, signed mantissa), as a
    chip stores them; simulate and price it like any network (see :mod:`snn.quantization`)."""
    from snn.quantization import quantize as _quantize

    return _quantize(net, weight_bits=weight_bits)


__all__ += ["quantize"]


def to_lava(net, path):
    """Write a quantised network as a lava-dl netx HDF5 file for Loihi 2 (see :mod:`snn.lava`)."""
    from snn.lava import to_lava as _to_lava

    return _to_lava(net, path)


def from_lava(path):
    """Read a netx HDF5 file as a :class:`SpikingNetwork` (see :mod:`snn.lava`)."""
    from snn.lava import from_lava as _from_lava

    return _from_lava(path)


__all__ += ["to_lava", "from_lava"]
