"""The switch imports the standard library, ``cryptography``, ``pilotage.x509``,
``pilotage.sitepolicy`` and itself; ``sitepolicy`` imports the standard library only.

The installer copies ``switch/``, ``x509/`` and ``sitepolicy/`` alone next to
``cryptography``; a module importing the rest of pilotage would break there, and would pull
unreviewed code into a root program.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import pilotage.switch

SWITCH = Path(pilotage.switch.__file__).parent
MODULES = sorted(path.stem for path in SWITCH.glob("*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_imports_stay_inside_the_switch(module: str) -> None:
    for node in ast.walk(ast.parse((SWITCH / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 2:
            package = (node.module or "").split(".")[0]
            assert package in ("x509", "sitepolicy"), f"{module}: ..{node.module}"
            continue
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            assert node.level == 1, f"{module}: {'.' * node.level}{node.module}"
            assert node.module is None or node.module in MODULES, f"{module}: .{node.module}"
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


def test_the_entry_point_stays_light() -> None:
    # Start-up is most of the switch's latency: cryptography is for a cache miss only.
    code = (
        "import sys; import pilotage.switch.main, pilotage.switch.callout; "
        "print(sorted(m for m in sys.modules if m.startswith(('cryptography', 'ssl', "
        "'tomllib', 'ctypes'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


SITEPOLICY = SWITCH.parent / "sitepolicy"


@pytest.mark.parametrize("module", sorted(p.stem for p in SITEPOLICY.glob("*.py")))
def test_the_policy_engine_imports_the_standard_library_only(module: str) -> None:
    for node in ast.walk(ast.parse((SITEPOLICY / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            assert node.level == 1, f"{module}: {'.' * node.level}{node.module}"
            continue
        if isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or top == "__future__", f"{module}: {name}"
