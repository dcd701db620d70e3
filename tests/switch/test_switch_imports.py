"""The switch imports the standard library, ``cryptography``, ``pilotage.x509``,
``pilotage.sitepolicy`` and itself; ``sitepolicy`` imports the standard library only.

The installer copies ``switch/``, ``x509/`` and ``sitepolicy/`` alone next to
``cryptography``; a module importing the rest of pilotage would break there, and would pull
unreviewed code into a root program.
"""

from __future__ import annotations

import ast
import pwd
import subprocess
import sys
import time
from pathlib import Path

import pytest
from switch_site import Credentials, Site, interpreter, wait_for

import pilotage.switch
from pilotage.switch.config import SETTLED_NS

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


#: What a warm run must not import: each costs 1-10 ms at every start (docs/benchmarks.md,
#: "Switch"). The config, credential and decision caches keep tomllib, cryptography and
#: the policy engine out; the rest is the switch's own choice of modules.
NOT_ON_THE_WARM_PATH = {
    "typing", "re", "json", "enum", "collections", "functools", "contextlib", "hashlib",
    "_hashlib", "tomllib", "socket", "signal", "fnmatch", "secrets", "ssl", "datetime",
    "cryptography", "pilotage.x509", "pilotage.sitepolicy.policy",
}  # fmt: skip


def test_a_warm_run_imports_only_what_it_needs(site: Site, creds: Credentials) -> None:
    wrapper = site.installs["setuid"]
    config = site.root / "exec-setuid.toml"
    # The config is cached once it has not changed for a while (the file system's clock).
    wait_for(lambda: time.time_ns() - config.stat().st_ctime_ns > SETTLED_NS, timeout=30)
    # As root with SUDO_UID, as sudo runs it: the pilot calls, the payload runs as alice.
    env = {"PATH": "/usr/bin:/bin", "SUDO_UID": str(pwd.getpwnam("pilot").pw_uid),
           "PILOTAGE_EXEC_USER_CREDENTIAL": str(creds.made["alice"])}  # fmt: skip
    command = [interpreter(), "-X", "importtime", "-IS", str(wrapper), "--", "id", "-un"]
    # The first call may make the state directory, the second fill the caches.
    runs = [subprocess.run(command, env=env, capture_output=True, text=True) for _ in "123"]
    assert [run.stdout for run in runs] == ["alice\n"] * 3, runs[0].stderr
    imported = {line.split("|")[-1].strip() for line in runs[2].stderr.splitlines()[1:]}
    assert "pilotage.switch.launch" in imported, runs[2].stderr
    tops = {name.split(".")[0] for name in imported}
    assert not (tops | imported) & NOT_ON_THE_WARM_PATH, sorted(imported)


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
