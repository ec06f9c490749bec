"""snn.load_model: state dicts from safetensors and torch.save files, loaded without running
code; a real malicious pickle (one that writes a file when unpickled) is refused and the
file is never written."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import snn


class _Payload:
    """Unpickling this calls ``Path(marker).write_text("pwned")``: code carried by a pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def test_torch_state_dict_and_safetensors_load(tmp_path):
    m = _model()
    torch.save(m.state_dict(), tmp_path / "m.pt")
    for path in [tmp_path / "m.pt"] + ([tmp_path / "m.safetensors"] if _safetensors(m, tmp_path) else []):
        got = snn.load_model(path, lambda: nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)))
        assert not got.training
        for k, v in m.state_dict().items():
            assert torch.equal(got.state_dict()[k], v), (path, k)


def _safetensors(m: nn.Module, tmp_path: Path) -> bool:
    try:
        from safetensors.torch import save_file
    except ImportError:
        return False
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(tmp_path / "m.safetensors"))
    return True


def test_zoo_architecture_by_name(tmp_path):
    from snn import zoo

    m = zoo.create_model("mlp", in_shape=(1, 8, 8), hidden=(32,), num_classes=10)
    torch.save(m.state_dict(), tmp_path / "z.pt")
    got = snn.load_model(tmp_path / "z.pt", "mlp", in_shape=(1, 8, 8), hidden=(32,), num_classes=10)
    assert all(torch.equal(got.state_dict()[k], v) for k, v in m.state_dict().items())


@pytest.mark.parametrize("fmt", ["torch.save", "raw pickle"])
def test_a_pickle_that_carries_code_is_refused_and_never_runs(fmt, tmp_path):
    marker = tmp_path / "written_by_the_pickle.txt"
    path = tmp_path / "evil.pt"
    payload = {"state_dict": {"0.weight": torch.zeros(16, 64)}, "x": _Payload(marker)}
    if fmt == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(snn.SnnError, match=r"evil\.pt refused: it is a pickle that holds more than tensors"):
        snn.load_model(path, _model())
    assert not marker.exists()
    # the payload is real: loading it the unsafe way does write the file
    unsafe = tmp_path / "unsafe"
    unsafe.mkdir()
    payload["x"] = _Payload(unsafe / "marker.txt")
    torch.save(payload, unsafe / "evil.pt")
    torch.load(unsafe / "evil.pt", weights_only=False)
    assert (unsafe / "marker.txt").read_text() == "pwned"


def test_mismatching_or_missing_checkpoint_is_named(tmp_path):
    torch.save(nn.Linear(3, 2).state_dict(), tmp_path / "small.pt")
    with pytest.raises(snn.SnnError, match=r"small\.pt does not fit Sequential"):
        snn.load_model(tmp_path / "small.pt", _model())
    with pytest.raises(snn.SnnError, match=r"nothing\.pt does not exist"):
        snn.load_model(tmp_path / "nothing.pt", _model())
    with pytest.raises(snn.SnnError, match="arch must be a zoo name"):
        snn.load_model(tmp_path / "small.pt", 3)
