"""The import arrows of DESIGN.md: the IR and the energy model never import torch or brian2
when imported, and every module of the package imports only what DESIGN.md's table allows."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("module", ["snn.ir", "snn.encode", "snn.simulate", "snn.network", "snn.energy"])
def test_pure_modules_do_not_import_torch_or_brian2(module):
    code = (f"import sys, {module}; bad = [m for m in ('torch', 'brian2', 'snntorch') if m in sys.modules]; "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, f"{module} imports {r.stdout.strip()} {r.stderr[-500:]}"


# --------------------------------------------------------------------------- the import table
# DESIGN.md's "may import" column, for every module of the package (longest prefix wins),
# over every import statement, lazy ones inside functions included. The top layer
# (config, runner, results, report, cli, sweep, the package itself) may import anything.
LAYERS: dict[str, tuple[set[str], set[str]]] = {
    # module prefix: (snn modules it may import, third-party packages it must not import)
    "snn.errors": (set(), {"torch", "brian2", "snntorch"}),
    "snn.util": ({"snn.errors"}, {"torch", "brian2", "snntorch"}),
    "snn.render": ({"snn.errors", "snn.util"}, {"torch", "brian2", "snntorch"}),
    "snn.browser": ({"snn.errors"}, {"torch", "brian2", "snntorch"}),
    "snn.ir": ({"snn.errors"}, {"torch", "brian2", "snntorch"}),
    "snn.ir_torch": ({"snn.ir", "snn.errors"}, {"brian2", "snntorch"}),
    "snn.encode": ({"snn.errors"}, {"torch", "brian2", "snntorch"}),
    "snn.trace": ({"snn.ir", "snn.errors", "snn.onnx"}, {"brian2", "snntorch"}),
    "snn.onnx": ({"snn.ir", "snn.errors"}, {"torch", "brian2", "snntorch"}),
    "snn.conversion": ({"snn.ir", "snn.ir_torch", "snn.trace", "snn.network", "snn.errors"}, {"brian2", "snntorch"}),
    "snn.network": ({"snn.ir", "snn.errors", "snn.util", "snn.backends"}, {"brian2"}),
    "snn.simulate": ({"snn.ir", "snn.encode", "snn.errors", "snn.backends", "snn.shard", "snn.util"},
                     {"brian2", "snntorch"}),
    "snn.shard": ({"snn.ir", "snn.errors", "snn.backends", "snn.simulate"}, {"torch", "brian2", "snntorch"}),
    "snn.backends": ({"snn.backends", "snn.ir", "snn.encode", "snn.ir_torch", "snn.errors", "snn.util"},
                     {"snntorch", "brian2"}),
    "snn.backends.brian2": ({"snn.backends", "snn.ir", "snn.encode", "snn.errors", "snn.util"}, {"torch", "snntorch"}),
    "snn.backends.brian2_forms": ({"snn.ir", "snn.errors"}, {"torch", "snntorch", "brian2"}),
    "snn.backends.snntorch": ({"snn.backends", "snn.ir", "snn.encode", "snn.ir_torch", "snn.errors", "snn.util"},
                              {"brian2"}),
    "snn.energy": ({"snn.energy", "snn.ir", "snn.encode", "snn.errors", "snn.util", "snn.render"},
                   {"torch", "brian2", "snntorch"}),
    "snn.energy.measure": ({"snn.energy", "snn.ir", "snn.ir_torch", "snn.errors"}, {"brian2", "snntorch"}),
    "snn.data": ({"snn.errors", "snn.util"}, {"brian2", "snntorch"}),
    "snn.zoo": ({"snn.data", "snn.trace", "snn.errors", "snn.util"}, {"brian2", "snntorch"}),
    "snn.train": ({"snn.data", "snn.zoo", "snn.errors", "snn.util"}, {"brian2", "snntorch"}),
    "snn.early_exit": ({"snn.ir", "snn.ir_torch", "snn.simulate", "snn.energy", "snn.errors"}, {"brian2", "snntorch"}),
    # exports/imports: the IR and their own libraries, never a backend or torch
    "snn.nir": ({"snn.ir", "snn.errors", "snn.network", "snn.util"}, {"torch", "brian2", "snntorch"}),
    "snn.lava": ({"snn.ir", "snn.errors", "snn.network", "snn.util"}, {"torch", "brian2", "snntorch"}),
    "snn.quantization": ({"snn.ir", "snn.errors", "snn.network"}, {"torch", "brian2", "snntorch"}),
}
TOP = ("snn", "snn.config", "snn.runner", "snn.results", "snn.report", "snn.cli", "snn.sweep", "snn.doctor")
ROOT = Path(__file__).resolve().parents[1] / "snn"


def _modules() -> dict[str, Path]:
    out = {}
    for f in sorted(ROOT.rglob("*.py")):
        parts = f.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imports(path: Path) -> set[str]:
    found = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Import):
            found |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            found |= {f"snn.{a.name}" for a in n.names} if n.module == "snn" else {n.module}
    return found


def _within(name: str, prefixes: set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_every_module_is_in_the_import_table():
    missing = [m for m in _modules() if m not in TOP and not any(_within(m, {p}) for p in LAYERS)]
    assert not missing, f"add these modules to LAYERS (DESIGN.md's import table): {missing}"


@pytest.mark.parametrize("module", [m for m in _modules() if m not in TOP])
def test_module_imports_only_what_the_design_allows(module):
    rule = max((p for p in LAYERS if _within(module, {p})), key=len)
    allowed, forbidden = LAYERS[rule]
    imports = _imports(_modules()[module])
    bad_snn = sorted(i for i in imports if _within(i, {"snn"}) and i != module and not _within(i, allowed))
    bad_third = sorted(i for i in imports if i.split(".")[0] in forbidden)
    assert not bad_snn and not bad_third, f"{module} (rule {rule!r}) imports {bad_snn + bad_third}"
