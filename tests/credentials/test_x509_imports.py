"""``pilotage.x509`` imports the standard library, ``cryptography`` and itself only.

Sites install it beside ``pilotage-exec`` and review both alone; an import of the rest of
pilotage would pull unreviewed code into a privileged program.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import pilotage.x509

X509 = Path(pilotage.x509.__file__).parent
MODULES = sorted(path.stem for path in X509.glob("*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_imports_stay_inside_the_package(module: str) -> None:
    tree = ast.parse((X509 / f"{module}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            assert node.level == 1 and node.module in MODULES, f"{module} imports .{node.module}"
            continue
        if isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            allowed = top in sys.stdlib_module_names or top in {"cryptography", "__future__"}
            assert allowed, f"{module} imports {name}"


def test_the_package_itself_loads_nothing() -> None:
    # The switch's cached path imports pilotage.x509.* lazily; the package must not pull
    # cryptography in by itself.
    code = "import sys, pilotage.x509; print(sorted(m for m in sys.modules if 'cryptography' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
