"""The switch imports the standard library, ``cryptography``, ``pilotage.x509`` and itself.

The installer copies ``switch/`` and ``x509/`` alone next to ``cryptography``; a module
importing the rest of pilotage would break there, and would pull unreviewed code into a
root program.
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
            assert (node.module or "").split(".")[0] == "x509", f"{module}: ..{node.module}"
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
