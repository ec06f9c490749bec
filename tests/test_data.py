"""Datasets: digits split, IDX and CIFAR decoding from tiny file trees the tests build,
split .part files, md5 and magic checks, the decoded-array cache, downloads from a local
HTTP server, and (when $SNN_DATA or ../shared/data holds them) the real files."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from snn import data
from snn.data import DATASETS, DatasetInfo, FileInfo, Source
from snn.errors import DataError, SnnError

SHARED = Path(os.environ.get("SNN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_shared = pytest.mark.skipif(not (SHARED / "mnist").is_dir(),
                                  reason=f"real datasets not found in {SHARED} (set SNN_DATA to /work/shared/data)")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SNN_CACHE", str(tmp_path / "cache"))


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def idx(arr: np.ndarray, magic: int) -> bytes:
    head = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def tiny_idx(n_train=7, n_test=3, seed=0):
    """Raw IDX bytes of a tiny 28x28 dataset: {file name: raw bytes}, and the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {s: (rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)) for s, n in
              (("train", n_train), ("test", n_test))}
    raw = {}
    for s, (x, y) in arrays.items():
        img, lab = data._IDX_NAMES[s]
        raw[img], raw[lab] = idx(x, 2051), idx(y, 2049)
    return raw, arrays


def register(monkeypatch, name, files, kind="idx", folders=("tiny",), archive=None, url=None):
    src = Source(kind, f"{name} label", folders,
                 tuple(FileInfo(n, m, (url + n) if url else None, r) for n, (m, r) in files.items()), archive)
    shape = (1, 28, 28) if kind == "idx" else (3, 32, 32)
    monkeypatch.setitem(DATASETS, name, DatasetInfo(name, tuple("0123456789"), shape, {}, (src,)))


@pytest.fixture
def tiny_tree(tmp_path, monkeypatch):
    """A data root with a tiny IDX dataset 'tiny' (train images split into 3 .part files)."""
    raw, arrays = tiny_idx()
    folder = tmp_path / "root" / "tiny"
    folder.mkdir(parents=True)
    files = {}
    for name, b in raw.items():
        gz = gzip.compress(b, mtime=0)
        files[name] = (md5(gz), None)
        if name.startswith("train-images"):
            step = len(gz) // 3 + 1
            for i in range(3):
                (folder / f"{name}.part{i:02d}").write_bytes(gz[i * step:(i + 1) * step])
        else:
            (folder / name).write_bytes(gz)
    register(monkeypatch, "tiny", files)
    return tmp_path / "root", arrays, raw


# --------------------------------------------------------------------------- digits, roots, errors
def test_digits_split_matches_fixture(digits):
    xtr, ytr = data.load_dataset("digits", "train")
    xte, yte = data.load_dataset("digits", "test")
    assert xtr.shape == (1400, 1, 8, 8) and xte.shape == (397, 1, 8, 8)
    assert xtr.dtype == np.float32 and ytr.dtype == np.int64
    assert 0.0 <= xtr.min() and xtr.max() == 1.0
    np.testing.assert_array_equal(xtr.reshape(1400, 64), digits[0])
    np.testing.assert_array_equal(yte, digits[3])
    assert len(data.load_dataset("digits", "test", limit=10)[0]) == 10


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("SNN_DATA", str(tmp_path / "env"))
    assert data.data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data.data_root() == tmp_path / "env"
    monkeypatch.delenv("SNN_DATA")
    assert data.data_root() == Path.home() / ".cache" / "snn" / "data"


def test_bad_names(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'imagenet'.*mnist"):
        data.load_dataset("imagenet")
    with pytest.raises(DataError, match="unknown split 'val'"):
        data.load_dataset("digits", "val")
    with pytest.raises(DataError, match="limit"):
        data.load_dataset("digits", limit=0)
    assert issubclass(DataError, SnnError)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_dataset_says_where_and_how(tmp_path, name):
    with pytest.raises(DataError) as e:
        data.load_dataset(name, "test", root=tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg and "SNN_DATA" in msg and f"snn data download {name}" in msg
    checks = data.verify(name, root=tmp_path)
    assert checks and all(c.status == "missing" for c in checks)


# --------------------------------------------------------------------------- IDX
def test_idx_parts_read_as_one_stream(tiny_tree):
    root, arrays, _ = tiny_tree
    for split in ("train", "test"):
        x, y = data.load_dataset("tiny", split, root=root)
        np.testing.assert_array_equal(x[:, 0], (arrays[split][0] / 255.0).astype(np.float32))
        np.testing.assert_array_equal(y, arrays[split][1])
    assert not (root / "tiny" / "train-images-idx3-ubyte.gz").exists()  # never joined on disk
    assert all(c.ok for c in data.verify("tiny", root=root))
    assert data.dataset_label("tiny", root=root) == "tiny label"


def test_cache_is_used_and_invalidated(tiny_tree):
    root, arrays, _ = tiny_tree
    x1, _ = data.load_dataset("tiny", "test", root=root)
    cached = list((data.cache_dir() / "arrays").glob("tiny-idx-test-*.npz"))
    assert len(cached) == 1
    with np.load(cached[0]) as z:  # the cache holds the decoded uint8 arrays
        np.testing.assert_array_equal(z["x"][:, 0], arrays["test"][0])
    x2, _ = data.load_dataset("tiny", "test", root=root)
    np.testing.assert_array_equal(x1, x2)
    p = root / "tiny" / "t10k-labels-idx1-ubyte.gz"
    os.utime(p, ns=(p.stat().st_mtime_ns + 10**9,) * 2)  # a changed source file gives a new key
    data.load_dataset("tiny", "test", root=root)
    assert len(list((data.cache_dir() / "arrays").glob("tiny-idx-test-*.npz"))) == 2


def test_corrupt_part_fails_md5(tiny_tree):
    root, _, _ = tiny_tree
    part = root / "tiny" / "train-images-idx3-ubyte.gz.part01"
    b = bytearray(part.read_bytes())
    b[10] ^= 0xFF
    part.write_bytes(bytes(b))
    with pytest.raises(DataError, match="md5 .* does not match .*train-images"):
        data.load_dataset("tiny", "train", root=root)
    checks = {c.file: c.status for c in data.verify("tiny", root=root)}
    assert checks["train-images-idx3-ubyte.gz"] == "bad" and checks["train-labels-idx1-ubyte.gz"] == "ok"


def test_bad_magic_with_matching_md5(tmp_path, monkeypatch):
    raw, _ = tiny_idx()
    raw["t10k-images-idx3-ubyte.gz"] = raw["t10k-labels-idx1-ubyte.gz"]  # labels where images belong
    folder = tmp_path / "tiny"
    folder.mkdir()
    files = {}
    for name, b in raw.items():
        gz = gzip.compress(b, mtime=0)
        (folder / name).write_bytes(gz)
        files[name] = (md5(gz), None)
    register(monkeypatch, "tiny", files)
    with pytest.raises(DataError, match="bad IDX magic number 2049 .expected 2051"):
        data.load_dataset("tiny", "test", root=tmp_path)


def test_truncated_idx(tmp_path, monkeypatch):
    raw, _ = tiny_idx()
    raw["t10k-images-idx3-ubyte.gz"] = raw["t10k-images-idx3-ubyte.gz"][:-5]
    folder = tmp_path / "tiny"
    folder.mkdir()
    files = {}
    for name, b in raw.items():
        gz = gzip.compress(b, mtime=0)
        (folder / name).write_bytes(gz)
        files[name] = (md5(gz), None)
    register(monkeypatch, "tiny", files)
    with pytest.raises(DataError, match="truncated or corrupt"):
        data.load_dataset("tiny", "test", root=tmp_path)


def test_raw_md5_accepts_other_gzip_headers(tmp_path, monkeypatch):
    """Fashion-MNIST's rule: a .gz whose own md5 differs is accepted when its content matches."""
    raw, arrays = tiny_idx()
    folder = tmp_path / "tiny"
    folder.mkdir()
    files = {}
    for name, b in raw.items():
        (folder / name).write_bytes(gzip.compress(b, mtime=12345))  # a different header
        files[name] = (md5(gzip.compress(b, mtime=0)), md5(b))
    register(monkeypatch, "tiny", files)
    x, y = data.load_dataset("tiny", "test", root=tmp_path)
    np.testing.assert_array_equal(y, arrays["test"][1])
    assert all(c.ok for c in data.verify("tiny", root=tmp_path))
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(raw["t10k-labels-idx1-ubyte.gz"][:-1]))
    assert {c.file: c.status for c in data.verify("tiny", root=tmp_path)}["t10k-labels-idx1-ubyte.gz"] == "bad"


# --------------------------------------------------------------------------- download
@pytest.fixture
def http_root(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/'www'; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_idx_from_local_server(tmp_path, http_root, monkeypatch):
    www, url = http_root
    raw, arrays = tiny_idx()
    files = {}
    for name, b in raw.items():
        gz = gzip.compress(b, mtime=0)
        (www / name).write_bytes(gz)
        files[name] = (md5(gz), None)
    register(monkeypatch, "tiny", files, url=url)
    root = tmp_path / "root"
    paths = data.download("tiny", root=root)
    assert sorted(p.name for p in paths) == sorted(raw)
    x, y = data.load_dataset("tiny", "train", root=root)
    np.testing.assert_array_equal(y, arrays["train"][1])
    # intact files are kept; a corrupt one is fetched again
    (root / "tiny" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")
    data.download("tiny", root=root)
    assert all(c.ok for c in data.verify("tiny", root=root))


def test_download_rejects_bad_md5_and_leaves_nothing(tmp_path, http_root, monkeypatch):
    www, url = http_root
    raw, _ = tiny_idx()
    files = {n: (md5(gzip.compress(b, mtime=0)), None) for n, b in raw.items()}
    for name, b in raw.items():
        (www / name).write_bytes(gzip.compress(b + b"x", mtime=0))  # not what the md5 says
    register(monkeypatch, "tiny", files, url=url)
    root = tmp_path / "root"
    with pytest.raises(DataError, match="does not match"):
        data.download("tiny", root=root)
    assert not any(p.is_file() for p in root.rglob("*"))


def test_download_unreachable_server(tmp_path, monkeypatch):
    register(monkeypatch, "tiny", {"t10k-labels-idx1-ubyte.gz": ("0" * 32, None)}, url="http://127.0.0.1:9/")
    with pytest.raises(DataError, match="download of http://127.0.0.1:9/t10k-labels-idx1-ubyte.gz failed"):
        data.download("tiny", root=tmp_path, timeout=5)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_download_into_unwritable_root(tmp_path, http_root, monkeypatch):
    www, url = http_root
    (www / "t10k-labels-idx1-ubyte.gz").write_bytes(b"x")
    register(monkeypatch, "tiny", {"t10k-labels-idx1-ubyte.gz": (md5(b"x"), None)}, url=url)
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(DataError, match="cannot write tiny into .*a-file.*writable data root"):
        data.download("tiny", root=tmp_path / "a-file")


def _cifar_batch(n, seed):
    rng = np.random.default_rng(seed)
    return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}


def test_download_cifar_archive_and_read_batches(tmp_path, http_root, monkeypatch):
    """The python-batch source: a tar archive fetched with base_url, verified, unpacked."""
    www, url = http_root
    batches = {f"data_batch_{i}": _cifar_batch(3, i) for i in range(1, 6)}
    batches["test_batch"] = _cifar_batch(4, 9)
    blobs = {n: pickle.dumps(b) for n, b in batches.items()}
    stage = tmp_path / "stage" / "cifar-10-batches-py"
    stage.mkdir(parents=True)
    for n, b in blobs.items():
        (stage / n).write_bytes(b)
    with tarfile.open(www / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(stage, arcname="cifar-10-batches-py")
    arch = FileInfo("cifar-10-python.tar.gz", md5((www / "cifar-10-python.tar.gz").read_bytes()))
    register(monkeypatch, "tinycifar", {n: (md5(b), None) for n, b in blobs.items()}, kind="cifar-batches",
             folders=("cifar-10-batches-py",), archive=arch)
    root = tmp_path / "root"
    data.download("tinycifar", root=root, base_url=url)
    assert not (root / "cifar-10-python.tar.gz").exists()
    x, y = data.load_dataset("tinycifar", "train", root=root)
    assert x.shape == (15, 3, 32, 32) and y.tolist() == sum((batches[f"data_batch_{i}"][b"labels"]
                                                              for i in range(1, 6)), [])
    np.testing.assert_array_equal(x[0], batches["data_batch_1"][b"data"][0].reshape(3, 32, 32) / np.float32(255))
    # a pickle that is not the published one is never unpickled
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(_cifar_batch(4, 10)))
    with pytest.raises(DataError, match="md5"):
        data.load_dataset("tinycifar", "test", root=root)


# --------------------------------------------------------------------------- the real files
@needs_shared
@pytest.mark.parametrize("name,first", [("mnist", [7, 2, 1, 0, 4]), ("fashion_mnist", [9, 2, 1, 1, 6])])
def test_real_idx(name, first):
    x, y = data.load_dataset(name, "test", root=SHARED)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.float32 and y.tolist()[:5] == first
    assert np.bincount(y).min() > 800 and 0.1 < x.mean() < 0.35
    checks = data.verify(name, root=SHARED)
    assert [c.status for c in checks] == ["ok"] * 4


@needs_shared
def test_real_cifar_jpeg():
    x, y = data.load_dataset("cifar10", "test", root=SHARED, limit=500)
    assert x.shape == (500, 3, 32, 32) and 0.3 < x.mean() < 0.6
    assert len(np.unique(y[:100])) == 10  # the class-ordered copy is shuffled
    assert data.dataset_label("cifar10", root=SHARED) == "CIFAR-10 (JPEG q75 copy)"


@needs_shared
@pytest.mark.slow
def test_real_full_splits():
    for name, n in (("mnist", 60000), ("fashion_mnist", 60000), ("cifar10", 50000)):
        x, y = data.load_dataset(name, "train", root=SHARED)
        assert len(x) == len(y) == n and x.shape[1:] == DATASETS[name].shape
        if name == "cifar10":
            assert np.bincount(y).tolist() == [5000] * 10
    assert all(c.ok for c in data.verify("cifar10", root=SHARED))
