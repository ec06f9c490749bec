"""Datasets: digits (bundled with scikit-learn), MNIST, Fashion-MNIST, CIFAR-10.

Every loader returns ``x``: float32 ``(N, C, H, W)`` in ``[0, 1]`` (pixel / 255, digits:
pixel / 16) and ``y``: int64 ``(N,)`` class indices.

Files live under a data root (:func:`data_root`: the argument, else ``$SNN_DATA``, else
``~/.cache/snn/data``), one folder per dataset, with the usual public file names:

* ``mnist/``, ``fashion-mnist/``: IDX ``.gz`` files; a file split into ``NAME.part00``,
  ``NAME.part01``, ... (``split -b``) is read as one stream, never joined on disk; an
  uncompressed IDX file (``NAME`` without ``.gz``) is accepted too.
* CIFAR-10: the standard python batches (``cifar-10-batches-py/``) where present (label
  "CIFAR-10"), else the JPEG copy's per-class zips (``cifar10-jpeg/``; label "CIFAR-10
  (JPEG q75 copy)": lossy, about 10 points below real CIFAR-10 for the same model). The
  JPEG copy is ordered by class, so it is shuffled once with a fixed seed (0): any prefix
  (``limit``) is a class-mixed sample. Use :func:`dataset_label` for the label of what
  was actually read.

Every file is checked against its md5 before it is decoded (Fashion-MNIST: the md5 of the
``.gz`` as published or of the decompressed bytes, since gzip headers differ between
copies), and IDX magic numbers and sizes are checked. Decoded arrays are cached as uint8
``.npz`` under ``$SNN_CACHE`` (default ``~/.cache/snn``)``/arrays``, keyed by the source
files' paths, sizes and modification times, so the second load is fast.

>>> x, y = load_dataset("digits", "test")
>>> x.shape, y.shape
((397, 1, 8, 8), (397,))
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
import numpy as np

from snn.errors import DataError
from snn.util import activity, atomic_path

SPLITS = ("train", "test")
_CACHE_VERSION = 1


# --------------------------------------------------------------------------- descriptions
@dataclass(frozen=True)
class FileInfo:
    """One published file: its name, md5, where it can be downloaded (``None``: nowhere
    public) and, for ``.gz`` files, the md5 of the decompressed bytes (``raw_md5``)."""

    name: str
    md5: str
    url: str | None = None
    raw_md5: str | None = None


@dataclass(frozen=True)
class Source:
    """One on-disk form of a dataset: the folders it may sit in (relative to the data root),
    its files, the report label of data read from it, and, where the files come packed in
    one archive, that archive (downloaded, verified, then unpacked into the data root)."""

    kind: str                       # "idx" | "cifar-batches" | "cifar-jpeg"
    label: str
    folders: tuple[str, ...]
    files: tuple[FileInfo, ...]
    archive: FileInfo | None = None


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset: name, class names, sample shape ``(C, H, W)``, split sizes, and its
    sources in order of preference (``sources[0]`` is used when several are present)."""

    name: str
    classes: tuple[str, ...]
    shape: tuple[int, int, int]
    sizes: dict[str, int]
    sources: tuple[Source, ...] = ()
    citation: str = ""

    @property
    def label(self) -> str:
        """Report label of the preferred source (see :func:`dataset_label` for the one found)."""
        return self.sources[0].label if self.sources else self.name

    @property
    def files(self) -> tuple[FileInfo, ...]:
        """Every file of every source."""
        return tuple(f for s in self.sources for f in s.files)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _idx_files(base: str, gz_md5: dict[str, str], raw_md5: dict[str, str] | None = None) -> tuple[FileInfo, ...]:
    return tuple(FileInfo(n, m, base + n, (raw_md5 or {}).get(n)) for n, m in gz_md5.items())


_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR_JPEG_MD5 = {
    "test_airplane.zip": "9c2e31ab05f3f1bb24ca5200476af53a", "test_automobile.zip": "9166e679604ab3f2f722c0b055c77e44",
    "test_bird.zip": "92e3757a807f1df843a1a3227e618b8b", "test_cat.zip": "e103ceaafb8e7097e7f5abbab354addb",
    "test_deer.zip": "96af1eb90acc88b33020527807ca9287", "test_dog.zip": "4cc52cb248d076b392bd64721a0ce689",
    "test_frog.zip": "82433cb69f8c6c7ee08a5aec6bd267d9", "test_horse.zip": "eaf96dc20cf8ac3cb97cb8be9d12b1c4",
    "test_ship.zip": "efe88325d4336ddb2afb0a5229ccac9a", "test_truck.zip": "1d9353d4d3b41e982f94fb5ac1992274",
    "train_airplane_a.zip": "7974787f9dae8b5e225c42a4ba9bad4a", "train_airplane_b.zip": "c4be5af2fc824dc900f66a907b6b4af9",
    "train_automobile_a.zip": "2605e44e7e29be61af9d8c56941462d4", "train_automobile_b.zip": "787ca965a891470d0c8572e8be37d295",
    "train_bird_a.zip": "afb7a6e75713b9f03c14ac83bd5db1cb", "train_bird_b.zip": "0658bdccb40f8fd1d40c9e5fa3d4f7ce",
    "train_cat_a.zip": "31ea9d2104f38ac006c97260b383dbc6", "train_cat_b.zip": "84a9a93f6189e1b1a3bf4e0570cc00aa",
    "train_deer_a.zip": "4e65ab483590425d4762d58ef639bc71", "train_deer_b.zip": "e0d377aa746ee6a67abbdf22b6203f9a",
    "train_dog_a.zip": "3d5f0308ed9ad149c6a73fc2d3f93d0b", "train_dog_b.zip": "2db9c1f9e901371a0fd2b637fba28a37",
    "train_frog_a.zip": "6e92fef12ff7c2e0fe98d5e6a6a8f697", "train_frog_b.zip": "2848e0baef28b4751820814dc437b2e1",
    "train_horse_a.zip": "ba7ac8819867404380305ee448a764ac", "train_horse_b.zip": "e4853022cdcf878a84b0b76ac11e9630",
    "train_ship_a.zip": "70eb20a94eeb4f1772c0e468e1b5e33e", "train_ship_b.zip": "38499129014f8d50156df7be38c8551a",
    "train_truck_a.zip": "b150aa6e908bf8e642eec01ba30b51f8", "train_truck_b.zip": "a6180fd35bfa19d241c4e29b616153dd",
}
_CIFAR_BATCH_MD5 = {  # the md5s torchvision checks
    "data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e",
}

DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        "digits", tuple(str(i) for i in range(10)), (1, 8, 8), {"train": 1400, "test": 397},
        (Source("sklearn", "digits (scikit-learn load_digits, 8x8)", (), ()),),
        "UCI optical recognition of handwritten digits, bundled with scikit-learn"),
    "mnist": DatasetInfo(
        "mnist", tuple(str(i) for i in range(10)), (1, 28, 28), {"train": 60000, "test": 10000},
        (Source("idx", "MNIST", ("mnist", "MNIST/raw"), _idx_files(_MNIST_URL, {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"})),),
        "LeCun et al. 1998"),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                          "Bag", "Ankle boot"), (1, 28, 28), {"train": 60000, "test": 10000},
        (Source("idx", "Fashion-MNIST", ("fashion-mnist", "FashionMNIST/raw"), _idx_files(_FASHION_URL, {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}, {
            "train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965"})),),
        "Xiao, Rasul and Vollgraf 2017 (Zalando Research, MIT licence)"),
    "cifar10": DatasetInfo(
        "cifar10", _CIFAR_CLASSES, (3, 32, 32), {"train": 50000, "test": 10000},
        (Source("cifar-batches", "CIFAR-10", ("cifar-10-batches-py", "cifar10/cifar-10-batches-py"),
                tuple(FileInfo(n, m) for n, m in _CIFAR_BATCH_MD5.items()),
                FileInfo("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                         "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")),
         Source("cifar-jpeg", "CIFAR-10 (JPEG q75 copy)", ("cifar10-jpeg",),
                tuple(FileInfo(n, m) for n, m in _CIFAR_JPEG_MD5.items()))),
        "Krizhevsky 2009"),
}

_IDX_NAMES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
              "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


# --------------------------------------------------------------------------- locations
def data_root(root: str | Path | None = None) -> Path:
    """The data root: ``root`` if given, else ``$SNN_DATA``, else ``~/.cache/snn/data``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("SNN_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "snn" / "data"


def cache_dir() -> Path:
    """Where decoded arrays (and trained checkpoints) are cached: ``$SNN_CACHE`` or ``~/.cache/snn``."""
    env = os.environ.get("SNN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "snn"


def info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``; an unknown name raises :class:`DataError`."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    return DATASETS[name]


def _find(folder: Path, f: FileInfo) -> list[Path] | None:
    """The path(s) holding ``f`` in ``folder``: the file, its ``.partNN`` pieces (in order),
    or, for a ``.gz`` name, the uncompressed file; ``None`` if none exists."""
    p = folder / f.name
    if p.is_file():
        return [p]
    parts = sorted(folder.glob(f"{f.name}.part[0-9]*"))
    if parts:
        return parts
    if f.name.endswith(".gz") and (folder / f.name[:-3]).is_file():
        return [folder / f.name[:-3]]
    return None


def _locate(src: Source, root: Path) -> Path | None:
    """The first folder of ``src`` under ``root`` that holds at least one of its files."""
    for rel in src.folders:
        d = root / rel
        if d.is_dir() and any(_find(d, f) for f in src.files):
            return d
    return None


def _source(ds: DatasetInfo, root: Path) -> tuple[Source, Path | None]:
    for src in ds.sources:
        if src.kind == "sklearn":
            return src, None
        d = _locate(src, root)
        if d is not None:
            return src, d
    raise DataError(_missing_message(ds, root))


def _missing_message(ds: DatasetInfo, root: Path) -> str:
    where = " or ".join(str(root / s.folders[0]) for s in ds.sources)
    how = (f"run `snn data download {ds.name}`" if any(f.url for f in ds.files) or
           any(s.archive for s in ds.sources) else "copy the files there")
    return (f"dataset {ds.name!r} not found: its files go in {where}; {how}, or point SNN_DATA "
            f"(or the config's data root) at a folder that holds them")


def dataset_label(name: str, root: str | Path | None = None) -> str:
    """The report label of the data :func:`load_dataset` reads for ``name`` (for CIFAR-10:
    "CIFAR-10" from the python batches, "CIFAR-10 (JPEG q75 copy)" from the JPEG copy)."""
    src, _ = _source(info(name), data_root(root))
    return src.label


# --------------------------------------------------------------------------- checksums
def _read(paths: list[Path]) -> bytes:
    """The bytes of a file, or of its parts read in order as one stream."""
    return b"".join(p.read_bytes() for p in paths)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _checked_bytes(f: FileInfo, paths: list[Path]) -> bytes:
    """The file's content, decompressed if it is a ``.gz``; :class:`DataError` unless its md5
    matches (the ``.gz`` md5, or the md5 of the decompressed bytes where one is known)."""
    data = _read(paths)
    digest = _md5(data)
    if f.name.endswith(".gz") and paths[0].name != f.name[:-3]:
        if digest != f.md5 and f.raw_md5 is None:
            raise DataError(_bad_md5(f, paths, digest))
        try:
            raw = gzip.decompress(data)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise DataError(f"{paths[0]}: not a valid gzip file ({e}); delete it and download it again") from e
        if digest != f.md5 and _md5(raw) != f.raw_md5:
            raise DataError(_bad_md5(f, paths, digest))
        return raw
    if f.name.endswith(".gz"):  # stored uncompressed: the raw md5 is checked where known
        if f.raw_md5 is not None and digest != f.raw_md5:
            raise DataError(_bad_md5(f, paths, digest))
        return data
    if digest != f.md5:
        raise DataError(_bad_md5(f, paths, digest))
    return data


def _bad_md5(f: FileInfo, paths: list[Path], got: str) -> str:
    shown = str(paths[0]) if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} parts)"
    return (f"{shown}: md5 {got} does not match {f.name}'s published md5 {f.md5}"
            f"{' (or decompressed ' + f.raw_md5 + ')' if f.raw_md5 else ''}: the file is corrupt or "
            f"incomplete; delete it and download it again")


@dataclass(frozen=True)
class FileCheck:
    """The result of checking one file: ``status`` is "ok", "missing" or "bad"."""

    dataset: str
    file: str
    path: str | None
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def verify(name: str, root: str | Path | None = None) -> list[FileCheck]:
    """Check every file of every source of ``name`` present under the data root against its
    md5 (all of a source's files are listed, "missing" where absent). A dataset with no
    source present gives one "missing" entry per file of its preferred source."""
    ds, r = info(name), data_root(root)
    found = [(s, _locate(s, r)) for s in ds.sources if s.kind != "sklearn"]
    present = [(s, d) for s, d in found if d is not None] or [(s, None) for s, _ in found[:1]]
    out: list[FileCheck] = []
    for src, folder in present:
        for f in src.files:
            paths = _find(folder, f) if folder is not None else None
            if paths is None:
                where = folder or r / src.folders[0]
                out.append(FileCheck(name, f.name, str(where / f.name), "missing", _missing_message(ds, r)))
                continue
            try:
                _checked_bytes(f, paths)
                out.append(FileCheck(name, f.name, str(paths[0]), "ok", "md5 " + f.md5))
            except DataError as e:
                out.append(FileCheck(name, f.name, str(paths[0]), "bad", str(e)))
    return out


# --------------------------------------------------------------------------- download
def _fetch(url: str, dest: Path, f: FileInfo, timeout: float = 60.0) -> None:
    """Download ``url`` to ``dest`` atomically; :class:`DataError` (and nothing written) on a
    network failure or an md5 mismatch."""
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
                shutil.copyfileobj(resp, out, 1 << 20)
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise DataError(f"download of {url} failed: {e}") from e
        _checked_bytes(f, [tmp])


def download(name: str, root: str | Path | None = None, base_url: str | None = None,
             timeout: float = 60.0) -> list[Path]:
    """Download ``name`` into the data root (needs internet), verifying every md5; files
    already present and intact are kept. ``base_url`` replaces the published mirror (files
    are fetched from ``base_url/<file name>``). Returns the paths that hold the dataset's files.

    Only sources with a public download exist here (CIFAR-10: the python batches, from the
    tar archive, unpacked into ``cifar-10-batches-py/``; the JPEG copy is not published).
    """
    ds, r = info(name), data_root(root)
    src = next((s for s in ds.sources if s.archive is not None or any(f.url for f in s.files)), None)
    if src is None:
        if ds.sources and ds.sources[0].kind == "sklearn":
            return []
        raise DataError(f"dataset {name!r} has no public download; copy its files into "
                        f"{r / ds.sources[0].folders[0]}")
    folder = r / src.folders[0]

    def url_of(f: FileInfo) -> str:
        if base_url is not None:
            return base_url.rstrip("/") + "/" + f.name
        if f.url is None:
            raise DataError(f"{f.name} has no download URL")
        return f.url

    try:
        if src.archive is not None and not all(_intact(folder, f) for f in src.files):
            arch = r / src.archive.name
            if not _intact(r, src.archive):
                _fetch(url_of(src.archive), arch, src.archive, timeout)
            _unpack(arch, folder, src)
            arch.unlink()
        elif src.archive is None:
            for f in src.files:
                if not _intact(folder, f):
                    _fetch(url_of(f), folder / f.name, f, timeout)
    except OSError as e:
        raise DataError(f"cannot write {name} into {folder}: {e}; choose a writable data root "
                        f"(SNN_DATA or --data-root)") from e
    return [p for f in src.files for p in _find(folder, f) or []]


def _intact(folder: Path, f: FileInfo) -> bool:
    paths = _find(folder, f)
    if paths is None:
        return False
    try:
        _checked_bytes(f, paths)
        return True
    except DataError:
        return False


def _unpack(archive: Path, folder: Path, src: Source) -> None:
    """Extract ``src``'s files from a verified tar archive into ``folder`` (each atomically)."""
    wanted = {f.name: f for f in src.files}
    try:
        with tarfile.open(archive) as tar:
            for m in tar.getmembers():
                base = m.name.rsplit("/", 1)[-1]
                if m.isfile() and base in wanted:
                    data = tar.extractfile(m).read()
                    if _md5(data) != wanted[base].md5:
                        raise DataError(_bad_md5(wanted[base], [Path(m.name)], _md5(data)))
                    with atomic_path(folder / base) as tmp:
                        tmp.write_bytes(data)
    except tarfile.TarError as e:
        raise DataError(f"{archive}: not a valid tar archive ({e})") from e
    missing = [n for n in wanted if not (folder / n).is_file()]
    if missing:
        raise DataError(f"{archive} lacks {', '.join(missing)}")


# --------------------------------------------------------------------------- decoding
def _parse_idx(raw: bytes, magic: int, where: str) -> np.ndarray:
    """An IDX array (uint8): big-endian magic (2049 labels, 2051 images), dims, then data."""
    ndim = magic & 0xFF
    if len(raw) < 4 + 4 * ndim or int.from_bytes(raw[:4], "big") != magic:
        got = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
        raise DataError(f"{where}: bad IDX magic number {got} (expected {magic}); the file is not "
                        f"an IDX {'label' if magic == 2049 else 'image'} file")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    body = raw[4 + 4 * ndim:]
    if len(body) != int(np.prod(dims)):
        raise DataError(f"{where}: IDX header says {dims} but holds {len(body)} bytes (truncated or corrupt)")
    return np.frombuffer(body, np.uint8).reshape(dims)


def _decode_idx(src: Source, folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    by_name = {f.name: f for f in src.files}
    out = []
    for fname, magic in zip(_IDX_NAMES[split], (2051, 2049)):
        f = by_name[fname]
        paths = _find(folder, f)
        if paths is None:
            raise DataError(f"{folder / fname} is missing; run `snn data download` or copy it there")
        out.append(_parse_idx(_checked_bytes(f, paths), magic, str(paths[0])))
    x, y = out
    if len(x) != len(y):
        raise DataError(f"{folder}: {len(x)} images but {len(y)} labels for the {split} split")
    return x[:, None], y


def _decode_cifar_batches(src: Source, folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    by_name = {f.name: f for f in src.files}
    xs, ys = [], []
    for n in names:
        paths = _find(folder, by_name[n])
        if paths is None:
            raise DataError(f"{folder / n} is missing; run `snn data download cifar10`")
        # md5-checked first: only the published pickles are ever unpickled
        d = pickle.loads(_checked_bytes(by_name[n], paths), encoding="bytes")
        xs.append(np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d[b"labels"], np.uint8))
    return np.concatenate(xs), np.concatenate(ys)


def _decode_cifar_jpeg(src: Source, folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    zips = [f for f in src.files if f.name.startswith(split + "_")]
    xs, ys = [], []
    for f in zips:
        paths = _find(folder, f)
        if paths is None:
            raise DataError(f"{folder / f.name} is missing: the JPEG copy of CIFAR-10 is incomplete")
        cls = _CIFAR_CLASSES.index(f.name[len(split) + 1:-4].removesuffix("_a").removesuffix("_b"))
        try:
            with zipfile.ZipFile(io.BytesIO(_checked_bytes(f, paths))) as z:
                for member in sorted(n for n in z.namelist() if n.endswith(".jpg")):
                    with Image.open(io.BytesIO(z.read(member))) as im:
                        xs.append(np.asarray(im.convert("RGB"), np.uint8).transpose(2, 0, 1))
                    ys.append(cls)
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"{paths[0]}: cannot read ({e})") from e
    x, y = np.stack(xs), np.asarray(ys, np.uint8)
    perm = np.random.default_rng(0).permutation(len(x))  # class-mixed order, fixed
    return x[perm], y[perm]


_DECODERS = {"idx": _decode_idx, "cifar-batches": _decode_cifar_batches, "cifar-jpeg": _decode_cifar_jpeg}


def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = np.random.default_rng(0).permutation(len(d.data))
    idx = idx[:1400] if split == "train" else idx[1400:]
    return (d.data[idx] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8), d.target[idx].astype(np.int64)


def _cache_key(ds: DatasetInfo, src: Source, folder: Path, split: str) -> str:
    stats = []
    for f in src.files:
        for p in _find(folder, f) or []:
            st = p.stat()
            stats.append((str(p.resolve()), st.st_size, st.st_mtime_ns))
    blob = json.dumps([_CACHE_VERSION, ds.name, src.kind, split, stats])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _load_cached(ds: DatasetInfo, src: Source, folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    path = cache_dir() / "arrays" / f"{ds.name}-{src.kind}-{split}-{_cache_key(ds, src, folder, split)}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                return z["x"], z["y"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # a damaged cache entry is rebuilt below
    with activity(f"snn: decoding {ds.name} {split} from {folder} (once; cached as arrays in {path.parent})"):
        x, y = _DECODERS[src.kind](src, folder, split)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, x=x, y=y)
    except OSError:
        pass  # an unwritable cache only costs speed
    return x, y


def load_dataset(name: str, split: str = "train", root: str | Path | None = None,
                 limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load a split of a dataset: ``x`` float32 ``(N, C, H, W)`` in ``[0, 1]``, ``y`` int64 ``(N,)``.

    ``limit``: keep the first ``limit`` samples. Missing files raise :class:`DataError` saying
    where they go and how to get them; a corrupt file (md5, IDX magic) raises it too.
    """
    ds = info(name)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for dataset {name!r}; expected one of {SPLITS}")
    if limit is not None and (not isinstance(limit, (int, np.integer)) or limit < 1):
        raise DataError(f"limit must be a positive integer, got {limit!r}")
    src, folder = _source(ds, data_root(root))
    if src.kind == "sklearn":
        x, y = _digits(split)
        return (x[:limit], y[:limit]) if limit else (x, y)
    x8, y8 = _load_cached(ds, src, folder, split)
    if limit is not None:
        x8, y8 = x8[:limit], y8[:limit]
    x = x8.astype(np.float32) / np.float32(255.0)
    if tuple(x.shape[1:]) != ds.shape:
        raise DataError(f"{name} {split}: samples of shape {tuple(x.shape[1:])}, expected {ds.shape}")
    return x, y8.astype(np.int64)

