"""The fused kernels' build cache: keyed by everything the compile command depends on, so
each environment builds once, in its own directory, and a second load compiles nothing;
where no compiler exists, one warning and the reference torch ops."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import snn
from snn.backends.snntorch import kernels

ROOT = Path(__file__).resolve().parents[1]


def test_key_is_stable_and_changes_with_each_part_of_the_compile_command(monkeypatch, tmp_path):
    base = kernels.key_parts()
    assert kernels.key_parts() == base and kernels.cache_key(kernels.key_parts()) == kernels.cache_key(base)
    assert base["torch_dir"] == str(Path(torch.__file__).resolve().parent) and base["prefix"] == sys.prefix
    monkeypatch.setenv("SNN_CACHE", str(tmp_path / "cache"))
    assert kernels.build_dir() == tmp_path / "cache" / "torch_extensions" / kernels.cache_key(base)

    other_cxx = tmp_path / "bin" / "clang++"
    other_cxx.parent.mkdir()
    other_cxx.write_text("#!/bin/sh\n")
    other_cxx.chmod(0o755)
    csrc = tmp_path / "csrc"
    csrc.mkdir()
    for f in kernels.SOURCES:
        (csrc / f).write_text((kernels.CSRC / f).read_text() + "\n// edited\n")
    changes = {
        "prefix": lambda m: m.setattr(sys, "prefix", str(tmp_path / "venv")),  # another virtual environment
        "torch_dir": lambda m: m.setattr(torch, "__file__", str(tmp_path / "site-packages/torch/__init__.py")),
        "torch": lambda m: m.setattr(torch, "__version__", "9.9.9"),
        "python": lambda m: m.setattr(sys, "version", "3.99.0"),
        "cflags": lambda m: m.setattr(kernels, "CFLAGS", kernels.CFLAGS + ("-g",)),
        "ldflags": lambda m: m.setattr(kernels, "LDFLAGS", ()),
        "source": lambda m: m.setattr(kernels, "CSRC", csrc),
        "compiler": lambda m: m.setenv("CXX", str(other_cxx)),
        "cpu": lambda m: m.setattr(kernels, "_cpu_tag", lambda: "another cpu"),
    }
    keys = {kernels.cache_key(base)}
    for part, change in changes.items():
        with monkeypatch.context() as m:
            change(m)
            parts = kernels.key_parts()
            assert [p for p in parts if parts[p] != base[p]] == [part]
            keys.add(kernels.cache_key(parts))
            assert kernels.build_dir().name == kernels.cache_key(parts)
        assert kernels.key_parts() == base  # back to this environment's key
    assert len(keys) == len(changes) + 1


def test_the_compiled_source_is_the_package_file():
    text = kernels.source()
    assert "PYBIND11_MODULE(TORCH_EXTENSION_NAME" in text and "if_scan" in text
    assert [p.name for p in sorted(kernels.CSRC.glob("*.cpp"))] == sorted(kernels.SOURCES)


@pytest.mark.skipif(kernels.load() is None, reason="no C++ toolchain to build the fused kernels")
def test_second_load_compiles_nothing():
    """Once this environment's build exists (``kernels.load()`` above made or found it), a new
    process loads it without calling torch's builder, which here would fail."""
    code = ("import torch.utils.cpp_extension as c\n"
            "def refuse(*a, **k): raise AssertionError('the second load compiled')\n"
            "c.load_inline = c.load = refuse\n"
            "import warnings; warnings.simplefilter('error')\n"
            "from snn.backends.snntorch import kernels\n"
            "m = kernels.load()\n"
            "assert m is not None, kernels._failed\n"
            "print(m.__file__)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    d = kernels.build_dir()
    assert Path(r.stdout.strip()).parent == d
    assert json.loads((d / "key.json").read_text())["parts"] == kernels.key_parts()


def test_no_compiler_warns_once_and_falls_back_to_the_reference_ops(monkeypatch, mlp_net, digits):
    monkeypatch.setattr(kernels, "_module", None)
    monkeypatch.setattr(kernels, "_failed", None)
    monkeypatch.setenv("CXX", "no-such-c++-compiler")
    x = digits[2][:10]
    with pytest.warns(UserWarning, match="fused CPU kernels unavailable.*no C\\+\\+ compiler 'no-such-c\\+\\+"):
        assert kernels.load() is None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernels.load() is None  # warned once
        auto = snn.simulate(mlp_net, x, timesteps=8, impl="auto")
    ref = snn.simulate(mlp_net, x, timesteps=8, impl="torch")
    np.testing.assert_array_equal(auto.outputs, ref.outputs)
    with pytest.raises(snn.SnnError, match="impl='fused' requested but the CPU kernels could not be built"):
        snn.simulate(mlp_net, x, timesteps=8, impl="fused")


@pytest.mark.slow
@pytest.mark.skipif(kernels.load() is None, reason="no C++ toolchain to build the fused kernels")
def test_two_virtual_environments_build_once_each(tmp_path):
    """experiments/bench/kernel_cache.py in a new cache: this environment and a
    ``--system-site-packages`` venv, alternating; two real builds (about a minute each here)."""
    out = tmp_path / "kernel_cache.json"
    r = subprocess.run([sys.executable, str(ROOT / "experiments" / "bench" / "kernel_cache.py"),
                        "--cache", str(tmp_path / "cache"), "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = json.loads(out.read_text())["runs"]
    assert [(x["env"], x["compiled"]) for x in runs] == [("this", True), ("this", False), ("venv", True),
                                                         ("venv", False), ("this", False), ("venv", False)]
    keys = {env: {x["key"] for x in runs if x["env"] == env} for env in ("this", "venv")}
    assert len(keys["this"]) == len(keys["venv"]) == 1 and keys["this"] != keys["venv"]
    assert keys["this"] == {kernels.build_dir().name}
