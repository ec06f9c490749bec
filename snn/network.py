"""The converted network: an SNN graph, the ANN graph it came from, and conversion metadata."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snn import ir
from snn.errors import SnnError
from snn.util import atomic_path


@dataclass
class SpikingNetwork:
    """A spiking network ready to simulate.

    ``graph``: the SNN graph (IF layers, ``Readout`` output). ``ann``: the traced ANN
    graph (BN folded), kept for reference evaluation and ANN operation counts. ``meta``:
    how it was converted (method, percentile, reset, per-layer scales, ...).

    >>> import os, tempfile, torch, snn
    >>> net = snn.convert(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)),
    ...                   torch.rand(16, 3))
    >>> print(net.summary())
    input                          input      (3,)
    0                              linear     (4,)
    1                              if         (4,)
    2                              linear     (2,)
    readout                        readout    (2,)
    >>> path = os.path.join(tempfile.mkdtemp(), "net.h5")
    >>> net.save(path)
    >>> again = snn.load(path)                          # lossless: same graph, ANN and meta
    >>> bool((again.graph.nodes["0"].weight == net.graph.nodes["0"].weight).all())
    True
    >>> step = net.to_snntorch()                        # one timestep per call
    >>> y, mem = step(torch.rand(5, 3)); tuple(y.shape)
    (5, 2)
    """

    graph: ir.Graph
    ann: ir.Graph | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        """Write to HDF5 (atomically): groups ``graph`` and ``ann``, attribute ``meta`` (JSON);
        the SHA-256 checksum of the file and of every array in its user block (:func:`snn.ir.seal_file`)."""
        n = ir.n_arrays(self.graph) + (ir.n_arrays(self.ann) if self.ann is not None else 0)
        with atomic_path(path) as tmp:
            with ir.create_h5(tmp, n) as f:
                ir.write_graph(f.create_group("graph"), self.graph)
                if self.ann is not None:
                    ir.write_graph(f.create_group("ann"), self.ann)
                f.attrs["meta"] = json.dumps(self.meta)
                f.attrs["format"] = "snn.SpikingNetwork"
            ir.seal_file(tmp)

    def to_snntorch(self, precision: str = "float32"):
        """The network as a plain snntorch ``nn.Module``, one timestep per ``forward`` call
        (see :class:`snn.backends.snntorch.SnnTorchNetwork`)."""
        from snn.backends.snntorch import DTYPES, to_snntorch

        if precision not in DTYPES:
            raise SnnError(f"unknown precision {precision!r}; valid: {', '.join(DTYPES)}")
        return to_snntorch(self.graph, DTYPES[precision])

    def summary(self) -> str:
        """One line per node: name, kind, output shape."""
        return "\n".join(f"{n:30s} {v.kind:10s} {self.graph.shapes[n]}" for n, v in self.graph.nodes.items())


def load(path: str | Path) -> SpikingNetwork:
    """Read a network written by :meth:`SpikingNetwork.save` (example there).

    The file is checked against the SHA-256 checksums :meth:`SpikingNetwork.save` stored
    before HDF5 parses it (:func:`snn.ir.verify_file`); a file written before checksums
    existed is read unverified, with a warning.

    Raises:
        SnnError: a missing file, a file that is not an snn network, a checksum that does
            not match (naming the file and the dataset), a truncated or otherwise corrupted
            file, an unsupported IR version or node kind.
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise SnnError(f"no such file: {path}")
    try:
        ir.verify_file(path, "network file")
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != "snn.SpikingNetwork" or "graph" not in f:
                raise SnnError(f"{path} is not an snn network file")
            graph = ir.read_graph(f["graph"])
            ann = ir.read_graph(f["ann"]) if "ann" in f else None
            meta = json.loads(f.attrs.get("meta", "{}"))
    except SnnError:
        raise
    except OSError as e:
        raise SnnError(f"{path} is not a readable snn network file ({' '.join(str(e).split())})") from e
    except Exception as e:  # a damaged file that still opens: any parsing error, one line
        raise SnnError(f"{path} is a corrupted snn network file ({type(e).__name__}: "
                       f"{' '.join(str(e).split())[:200]})") from e
    if not isinstance(meta, dict):
        raise SnnError(f"{path} is a corrupted snn network file (its meta is not a mapping)")
    return SpikingNetwork(graph=graph, ann=ann, meta=meta)
