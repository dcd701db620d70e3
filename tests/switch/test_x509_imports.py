"""The switch's X.509 code imports the standard library, ``cryptography`` and itself only.

Sites install ``pilotage-exec`` privileged and review it alone; an import of the rest of
pilotage would pull unreviewed code into a setuid program.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import pilotage.switch

SWITCH = Path(pilotage.switch.__file__).parent
X509_MODULES = ["x509", "certificate", "trust_store", "der", "proxy_info", "credential_errors"]


@pytest.mark.parametrize("module", X509_MODULES)
def test_imports_stay_inside_the_switch(module: str) -> None:
    tree = ast.parse((SWITCH / f"{module}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            assert node.module in X509_MODULES, f"{module} imports .{node.module}"
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
