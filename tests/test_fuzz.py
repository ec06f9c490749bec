"""Property-based fuzzing (hypothesis) of everything a user types or a file holds.

* Configs and ``--set`` overrides: generated invalid ones (wrong types, unknown keys at
  every depth, out-of-range numbers, huge sweep lists, unicode and empty strings, YAML
  anchors, aliases and tags) exit with code 2 and one line, no traceback, and write nothing.
* Files: network files, results files, profile files and checkpoints, truncated,
  bit-flipped, overwritten or with absurd headers, give an :class:`SnnError` (or load
  exactly what was written: a flip in padding), never another exception, in bounded memory.

CI runs the ``ci`` profile (a bounded number of examples per target, derandomised). The
long run, 10,000 examples per target::

    HYPOTHESIS_PROFILE=long python -m pytest -q tests/test_fuzz.py --hypothesis-show-statistics

``--hypothesis-show-statistics`` prints the examples tried per target.
"""
from __future__ import annotations

import math
import os
import random
import string
import subprocess
import sys
import tempfile
import tracemalloc
import warnings
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import snn
from snn import config as C
from snn import train
from snn.cli import main
from snn.energy import load_profiles
from snn.errors import ConfigError, SnnError
from snn.results import RunData, read_results, write_results

_QUIET = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
          HealthCheck.function_scoped_fixture]
settings.register_profile("ci", max_examples=int(os.environ.get("SNN_FUZZ_EXAMPLES", 30)), deadline=None,
                          derandomize=True, database=None, suppress_health_check=_QUIET)
settings.register_profile("long", max_examples=10_000, deadline=None, database=None, suppress_health_check=_QUIET)
FUZZ = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

TALLY = os.environ.get("SNN_FUZZ_TALLY")  # a long run's progress: "<TALLY>.<target>" holds the inputs tried
_tried: dict[str, int] = {}


def _count(target: str) -> None:
    """Count an input tried; with SNN_FUZZ_TALLY set, keep the count in a file (a killed run keeps it too)."""
    _tried[target] = _tried.get(target, 0) + 1
    if TALLY and _tried[target] % 100 == 0:
        Path(f"{TALLY}.{target}").write_text(str(_tried[target]))


# A run that a generated config would start if it were valid by mistake: seconds, not minutes.
BASE: dict[str, Any] = {"name": "fuzz", "threads": 1, "data": {"name": "digits", "train_limit": 64, "test_limit": 16},
                        "model": {"name": "mlp", "kwargs": {"hidden": [8]}}, "train": {"epochs": 1},
                        "sim": {"timesteps": 2}, "energy": {"enabled": False}, "output": {"report": False}}


# --------------------------------------------------------------------------- the schema, read from the code
def _leaves() -> dict[tuple[str, ...], Any]:
    """Every setting (key path -> pydantic FieldInfo), read from the schema."""
    out = {}
    for name, f in C.ExperimentConfig.model_fields.items():
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            out.update({(name, k): g for k, g in f.annotation.model_fields.items()})
        else:
            out[(name,)] = f
    return out


LEAVES = _leaves()
SECTIONS = {p[0] for p in LEAVES if len(p) == 2}


def _kind(f: Any) -> str:
    ann = f.annotation
    args = [a for a in get_args(ann) if a is not type(None)]
    base = args[0] if get_origin(ann) is not Literal and len(args) == 1 else ann
    if get_origin(ann) is Literal or get_origin(base) is Literal:
        return "literal"
    return {int: "int", float: "float", bool: "bool", str: "str"}.get(base, "other")


def _checked_str(path: tuple[str, ...]) -> bool:
    """A string setting with a rule (a registry, a pattern): an odd string is invalid there."""
    try:
        C.validate(C.apply_overrides(BASE, {".".join(path): "\u2603 no such thing"}))
    except ConfigError:
        return True
    return False


KINDS = {p: _kind(f) for p, f in LEAVES.items()}
CHECKED = {p for p, k in KINDS.items() if k in ("int", "float", "bool", "literal")
           or (k == "str" and _checked_str(p))}


def _bound(f: Any) -> tuple[float | None, bool]:
    """(lower bound, inclusive) of a numeric setting, or (None, _)."""
    for m in f.metadata:
        for attr, incl in (("ge", True), ("gt", False)):
            if getattr(m, attr, None) is not None:
                return float(getattr(m, attr)), incl
    return None, True


def _numeric_text(t: str) -> bool:
    try:
        float(t.strip().replace("_", ""))
        return True
    except ValueError:
        return t.strip().lower() in {"inf", "nan", "true", "false", "yes", "no", "on", "off", "y", "n", "t", "f",
                                     "1", "0", "null", "none", "~", ""}


odd_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24).filter(lambda t: not _numeric_text(t))
containers = st.lists(st.integers(), min_size=1, max_size=3) | st.dictionaries(odd_text, st.integers(), min_size=1,
                                                                                max_size=2)


@st.composite
def bad_setting(draw) -> tuple[str, Any]:
    """(key path, value) that no valid config holds."""
    kind = draw(st.sampled_from(["type", "range", "unknown", "deep", "sweep"]))
    if kind == "unknown":  # an unknown key at the top or in a section
        where = draw(st.sampled_from([()] + [(s,) for s in sorted(SECTIONS)]))
        valid = {p[len(where)] for p in LEAVES if p[:len(where)] == where and len(p) > len(where)}
        key = draw(st.text(string.ascii_letters + "_\u00e9\u4e2d", min_size=1, max_size=12).filter(
            lambda k: k not in valid and k != "sweep"))
        return ".".join(where + (key,)), draw(st.integers() | odd_text)
    if kind == "deep":  # a key below a setting that is not a section
        path = draw(st.sampled_from(sorted(p for p in CHECKED if KINDS[p] != "other")))
        return ".".join(path), {draw(odd_text) or "k": 1}
    if kind == "sweep":
        how = draw(st.sampled_from(["huge", "empty", "unknown", "bad value"]))
        if how == "huge":
            return "sweep.seed", list(range(draw(st.integers(C.MAX_SWEEP_RUNS + 1, C.MAX_SWEEP_RUNS + 99))))
        if how == "empty":
            return "sweep.sim.timesteps", []
        if how == "unknown":
            return "sweep.sim.nosuchkey", [1, 2]
        return "sweep.sim.timesteps", [4, draw(odd_text)]
    path = draw(st.sampled_from(sorted(CHECKED)))
    k, f = KINDS[path], LEAVES[path]
    if kind == "range" and k in ("int", "float"):
        low, incl = _bound(f)
        choices = [st.just(10 ** 40), st.just(-10 ** 40)]
        if k == "float":
            choices += [st.just(math.inf), st.just(-math.inf), st.just(math.nan)]
        if low is not None:
            top = int(low) - 1 if incl else int(low)
            choices.append(st.integers(max_value=top) if k == "int" else st.floats(max_value=low, exclude_max=incl,
                                                                                    allow_nan=False))
        if path == ("convert", "percentile"):
            choices += [st.floats(0.0001, 0.9999), st.floats(100.0001, 1e9)]
        value = draw(st.one_of(choices))
        if low is None and not (isinstance(value, float) and not math.isfinite(value)) and abs(value) < C.INT_LIMIT:
            value = 10 ** 40
        return ".".join(path), value
    if k == "int":
        value = draw(odd_text | containers | st.floats(allow_nan=False, allow_infinity=False).filter(
            lambda x: x != int(x)))
    elif k == "float":
        value = draw(odd_text | containers)
    elif k == "bool":
        value = draw(odd_text | containers | st.integers().filter(lambda i: i not in (0, 1)))
    else:  # literal or a checked string: any other string, or not a string
        value = draw(odd_text | containers | st.integers())
    return ".".join(path), value


def _valid_by_chance(overrides: dict[str, Any]) -> bool:
    """True if a generated string happens to be a valid name of a checked setting."""
    try:
        C.validate(C.apply_overrides(BASE, overrides))
    except SnnError:
        return False
    return True


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _cli(argv: list[str], capsys, cwd: Path) -> tuple[int, str]:
    before = _tree(cwd)
    old = os.getcwd()
    os.chdir(cwd)
    try:
        rc = main(argv + ["--results", str(cwd / "results")])
    finally:
        os.chdir(old)
    out = capsys.readouterr()
    assert _tree(cwd) == before, f"{argv} wrote {sorted(_tree(cwd) - before)}"
    return rc, out.err


def _one_line_exit_2(rc: int, err: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (rc, err[-2000:])


# --------------------------------------------------------------------------- configs
@FUZZ
@given(st.lists(bad_setting(), min_size=1, max_size=3))
def test_invalid_config_is_one_config_error(settings_):
    """In process, the schema: every generated invalid config is one ConfigError line."""
    _count("config")
    overrides = dict(settings_)
    if _valid_by_chance(overrides):
        return
    with pytest.raises(ConfigError) as e:
        C.validate(C.apply_overrides(BASE, overrides))
    assert "\n" not in " ".join(str(e.value).split()) and len(str(e.value)) < 5000


@FUZZ
@given(bad=bad_setting(), command=st.sampled_from(["run", "sweep"]), via=st.sampled_from(["file", "--set"]))
def test_invalid_config_or_override_exits_2_and_writes_nothing(bad, command, via, capsys):
    """Through the CLI entry point (in process): a config file holding the mistake, or a
    good file and the mistake as ``--set``: exit 2, one line, nothing written."""
    _count("cli")
    key, value = bad
    if _valid_by_chance({key: value}):
        return
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        if via == "file":
            (cwd / "c.yaml").write_text(yaml.safe_dump(C.apply_overrides(BASE, {key: value}), allow_unicode=True))
            argv = [command, "c.yaml"]
        else:
            (cwd / "c.yaml").write_text(yaml.safe_dump(BASE))
            text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10 ** 9)
            argv = [command, "c.yaml", "--set", f"{key}={text.removesuffix(chr(10)).removesuffix('...').strip()}"]
        _one_line_exit_2(*_cli(argv, capsys, cwd))


TAGS = ["!!python/object/apply:os.system ['touch pwned']", "!!python/name:os.system", "!custom 3",
        "!!timestamp 2001-12-14", "!!binary AAEC", "!!set {a, b}", "!!omap [a: 1]", "!!float nan", "!!int 99999999999999999999999"]


@st.composite
def yaml_mistake(draw) -> str:
    """A config text whose mistake is in YAML itself: a tag, a misplaced alias or merge key,
    aliases that expand a billion times or into a cycle, deep nesting, syntax."""
    base = yaml.safe_dump(BASE, sort_keys=False)
    kind = draw(st.sampled_from(["tag", "alias", "merge", "laughs", "cycle", "deep", "syntax"]))
    if kind == "tag":
        path = draw(st.sampled_from(sorted(p for p in CHECKED if len(p) == 2 and KINDS[p] in ("int", "float"))))
        tag = draw(st.sampled_from(TAGS))
        return base + f"{path[0]}: {{{path[1]}: {tag}}}\n"  # a repeated key: YAML keeps the last
    if kind in ("alias", "merge"):
        src = draw(st.sampled_from(["data", "model", "train"]))
        dst = draw(st.sampled_from(sorted(SECTIONS - {src})))
        body = {k: v for k, v in BASE.items() if k not in (src, dst)}
        text = yaml.safe_dump(body) + f"{src}: &s " + yaml.safe_dump(BASE[src], default_flow_style=True)
        return text + (f"{dst}: *s\n" if kind == "alias" else f"{dst}: {{<<: *s}}\n")
    if kind == "laughs":
        depth = draw(st.integers(6, 12))
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] + [
            f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, depth)]
        where = draw(st.sampled_from(["description", "seed", "sweep", "energy"]))
        value = {"description": f"*a{depth - 1}", "seed": f"*a{depth - 1}", "sweep": f"{{seed: *a{depth - 1}}}",
                 "energy": f"{{hardware: *a{depth - 1}}}"}[where]
        return base + "lol:\n" + "".join(f"  {ln}\n" for ln in lines) + f"{where}: {value}\n"
    if kind == "cycle":
        return base.replace("name: fuzz", "name: fuzz\ndescription: &c [*c]") if draw(st.booleans()) else \
            base + "model2: &m {k: *m}\n"
    if kind == "deep":
        n = draw(st.integers(65, 900))  # deeper than Python's recursion limit: the fixed cases below
        return base + "description: " + "[" * n + "]" * n + "\n"
    cut = draw(st.integers(1, len(base) - 1))
    return base[:cut] + draw(st.sampled_from(["{", "[", ": :", "\t- x", "'", "\"", "&", "*nope", "%", "@", "`"])) + \
        base[cut:]


@FUZZ
@given(text=yaml_mistake(), command=st.sampled_from(["run", "sweep"]))
def test_yaml_anchors_tags_and_syntax_exit_2(text, command, capsys):
    _count("yaml")
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        (cwd / "c.yaml").write_text(text)
        try:  # a cut, or a tag on a float setting (!!int 99999999999999999999999), may still be a valid config
            C.load_config(cwd / "c.yaml")
        except ConfigError:
            pass
        else:
            return
        _one_line_exit_2(*_cli([command, "c.yaml"], capsys, cwd))
        assert not (cwd / "pwned").exists()


@FUZZ
@given(items=st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=30), min_size=1, max_size=3))
def test_malformed_set_items_exit_2(items, capsys):
    """``--set`` items that are not ``key.path=value`` with a known key: exit 2, one line."""
    _count("set_items")
    items = [i if "=" in i and not i.startswith("=") else i.replace("=", "") for i in items]
    if _valid_by_chance_set(items):
        return
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        (cwd / "c.yaml").write_text(yaml.safe_dump(BASE))
        argv = ["run", "c.yaml"] + [a for i in items for a in ("--set", i)]
        _one_line_exit_2(*_cli(argv, capsys, cwd))


def _valid_by_chance_set(items: list[str]) -> bool:
    try:
        C.load_config(BASE, items)
    except SnnError:
        return False
    return True


@pytest.mark.parametrize("depth", [2000, 20000])
def test_nesting_deeper_than_the_parser_can_go_exits_2(depth, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "c.yaml").write_text("name: x\ndescription: " + "[" * depth + "]" * depth + "\n")
        _one_line_exit_2(*_cli(["run", "c.yaml"], capsys, Path(tmp)))
        _one_line_exit_2(*_cli(["run", "c.yaml", "--set", "seed=" + "[" * depth], capsys, Path(tmp)))


@pytest.mark.parametrize("text", ["name: x\nsim: {timesteps: 1e400}\n", "name: x\nseed: *nope\n",
                                  "name: x\nsweep: {seed: [" + ", ".join(["1"] * 20000) + "]}\n"],
                         ids=["float overflow", "undefined alias", "huge sweep"])
def test_mistakes_through_the_installed_command(tmp_path, text):
    """A fresh interpreter running the real entry point: exit 2, one line on stderr, nothing written."""
    (tmp_path / "c.yaml").write_text(text)
    before = _tree(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(snn.__file__).resolve().parents[1])}
    p = subprocess.run([sys.executable, "-m", "snn.cli", "sweep", "c.yaml"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, env=env)
    _one_line_exit_2(p.returncode, p.stderr)
    assert _tree(tmp_path) == before and p.stdout == ""


# --------------------------------------------------------------------------- files
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, tuple[Path, Any, Any]]:
    """One file of each kind the project reads: (path, loader, what it loaded when intact)."""
    d = tmp_path_factory.mktemp("fuzzfiles")
    torch.manual_seed(0)
    net = snn.convert(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)),
                      torch.rand(16, 3))
    net.save(d / "network.h5")
    data = RunData(np.array([0.1, 0.5, 0.75]), 0.9, {"fc": np.array([3.0, 4.0, 5.0])}, {"fc": 4},
                   {"gpu": {"total_j": 1.0}}, [{"epoch": 1}], {"python": "3"}, 20)
    write_results(d / "results.h5", data)
    (d / "profiles.yaml").write_text("profiles:\n  chip:\n    e_mac: 1.0e-12\n    e_ac: 1.0e-13\n    e_neuron: 2.0e-14\n")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    train.save_checkpoint(model, d / "model.safetensors", {"note": "fuzz"})
    torch.save({"state_dict": model.state_dict(), "meta": "{}"}, d / "model.pt")

    def load_ckpt(p):
        m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        train.load_checkpoint(m, p)
        return m.state_dict()

    def load_net(p):
        n = snn.load(p)
        return {f"{k}.{f}": getattr(v, f) for k, v in n.graph.nodes.items() for f in ("weight", "bias")
                if hasattr(v, f)}, n.meta

    loaders = {"network.h5": load_net, "results.h5": lambda p: (read_results(p).accuracy, read_results(p).spikes),
               "profiles.yaml": lambda p: {k: repr(v) for k, v in load_profiles(p).items()},
               "model.safetensors": load_ckpt, "model.pt": load_ckpt}
    # a profiles file is the user's own text (no checksum): a damaged one may hold other valid numbers
    return {name: (d / name, fn, None if name == "profiles.yaml" else fn(d / name)) for name, fn in loaders.items()}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (np.ndarray, torch.Tensor)):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    return a == b


@st.composite
def damage(draw, size: int) -> list[tuple[str, int, int]]:
    """A list of byte-level edits: flip a bit, truncate, overwrite a run with junk, zero a run."""
    ops = []
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "flip", "truncate", "junk", "zero"]))
        ops.append((op, draw(st.integers(0, size - 1)), draw(st.integers(0, 255))))
    return ops


def _apply(raw: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    b = bytearray(raw)
    for op, pos, arg in ops:
        pos = min(pos, max(len(b) - 1, 0))
        if not b:
            break
        if op == "flip":
            b[pos] ^= 1 << (arg % 8)
        elif op == "truncate":
            del b[pos:]
        elif op == "junk":
            rng = random.Random(arg)
            b[pos:pos + arg + 1] = bytes(rng.randrange(256) for _ in range(len(b[pos:pos + arg + 1])))
        else:
            b[pos:pos + arg + 1] = bytes(len(b[pos:pos + arg + 1]))
    return bytes(b)


@pytest.mark.parametrize("kind", ["network.h5", "results.h5", "profiles.yaml", "model.safetensors", "model.pt"])
def test_damaged_files_load_exactly_or_fail_clearly(kind, files, tmp_path):
    path, load, intact = files[kind]
    raw = path.read_bytes()
    seen = {"inputs": 0, "refused": 0, "loaded": 0}

    @FUZZ
    @given(ops=damage(len(raw)))
    def check(ops):
        seen["inputs"] += 1
        _count(f"file-{kind}")
        bad = tmp_path / kind
        bad.write_bytes(_apply(raw, ops))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a damaged HDF5 signature can read as an older, unsealed file
            try:
                got = load(bad)
            except SnnError as e:
                assert "\n" not in " ".join(str(e).split())
                seen["refused"] += 1
                return
        assert intact is None or _same(got, intact), f"{kind} damaged by {ops} loaded different data without an error"
        seen["loaded"] += 1

    check()
    print(f"fuzz {kind}: {seen}")  # the counts of a long run (-s)


def test_checksum_names_the_file_and_dataset(files, tmp_path):
    """A flipped bit inside a weight array: the error names the file, the dataset and its node."""
    import h5py

    path = files["network.h5"][0]
    with h5py.File(path, "r") as f:
        d = f["graph/n00001/weight"]
        offset, node = d.id.get_offset(), f["graph/n00001"].attrs["name"]
    raw = bytearray(path.read_bytes())
    raw[offset + 2] ^= 0x10
    (tmp_path / "net.h5").write_bytes(bytes(raw))
    with pytest.raises(SnnError, match=rf"net.h5 is corrupted: dataset /graph/n00001/weight "
                                       rf"\(node '{node}'\) fails its checksum"):
        snn.load(tmp_path / "net.h5")
    raw = bytearray(files["model.safetensors"][0].read_bytes())
    raw[-3] ^= 0x01
    (tmp_path / "m.safetensors").write_bytes(bytes(raw))
    with pytest.raises(SnnError, match=r"m.safetensors is corrupted: tensor '2.(weight|bias)' fails its checksum"):
        files["model.safetensors"][1](tmp_path / "m.safetensors")


def test_files_without_checksums_load_with_a_warning(files, tmp_path):
    """A file written before checksums existed (no user block manifest): read, unverified, with a warning."""
    import h5py

    net = snn.load(files["network.h5"][0])
    with h5py.File(tmp_path / "old.h5", "w") as f:  # the layout of an older snn: no user block
        snn.ir.write_graph(f.create_group("graph"), net.graph)
        f.attrs["meta"], f.attrs["format"] = "{}", "snn.SpikingNetwork"
    with pytest.warns(UserWarning, match="written without checksums"):
        old = snn.load(tmp_path / "old.h5")
    assert _same(old.graph.nodes["0"].weight, net.graph.nodes["0"].weight)


def test_absurd_shapes_are_refused_in_bounded_memory(tmp_path):
    """A header claiming a 10^12-element tensor: refused before anything is allocated."""
    import h5py

    torch.manual_seed(0)
    net = snn.convert(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)),
                      torch.rand(8, 3))
    with h5py.File(tmp_path / "huge.h5", "w") as f:  # unsealed, so only the shape guard stands in the way
        snn.ir.write_graph(f.create_group("graph"), net.graph)
        f.attrs["meta"], f.attrs["format"] = "{}", "snn.SpikingNetwork"
        del f["graph/n00001/weight"]
        f["graph/n00001"].create_dataset("weight", shape=(10 ** 6, 10 ** 6), dtype="f8", chunks=(1, 1024))
    header = b'{"w":{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,4000000000000]}}'
    (tmp_path / "huge.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(64))
    for path, load in [(tmp_path / "huge.h5", snn.load),
                       (tmp_path / "huge.safetensors", lambda p: train.load_checkpoint(torch.nn.Linear(2, 2), p))]:
        tracemalloc.start()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(SnnError, match="huge"):
                load(path)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 64 * 2 ** 20, f"{path.name}: {peak / 2 ** 20:.0f} MiB to refuse it"


def test_checkpoint_checksum_entry_damaged_or_absent(tmp_path):
    """A checkpoint whose checksum entry was renamed by damage is refused; one an older snn
    wrote (metadata without checksums) loads unverified, with a warning."""
    from safetensors.torch import save_file

    model = torch.nn.Linear(4, 3)
    train.save_checkpoint(model, tmp_path / "m.safetensors")
    raw = bytearray((tmp_path / "m.safetensors").read_bytes())
    raw[raw.find(train.DIGESTS.encode()) + 5] ^= 0x01
    (tmp_path / "m.safetensors").write_bytes(bytes(raw))
    with pytest.raises(SnnError, match=r"m.safetensors is corrupted: its metadata keys .* are damaged"):
        train.load_checkpoint(model, tmp_path / "m.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "old.safetensors"),
              metadata={"snn_meta": "{}"})
    with pytest.warns(UserWarning, match="written without checksums"):
        train.load_checkpoint(model, tmp_path / "old.safetensors")
