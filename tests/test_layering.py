"""The import arrows of DESIGN.md: the IR and the energy model never import torch or brian2."""
import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["snn.ir", "snn.encode", "snn.simulate", "snn.network", "snn.energy"])
def test_pure_modules_do_not_import_torch_or_brian2(module):
    code = (f"import sys, {module}; bad = [m for m in ('torch', 'brian2', 'snntorch') if m in sys.modules]; "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, f"{module} imports {r.stdout.strip()} {r.stderr[-500:]}"
