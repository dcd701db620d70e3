"""The agent's zipapp: exactly the files it should hold, and standard library only.

Both checks run a clean ``python -I -S`` (isolated, no site-packages), so any import of a
third-party package, or of a pilotage module left out of the archive, fails here.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pilotage.pilot.zipapp import build_zipapp


@pytest.fixture(scope="module")
def agent_pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_zipapp(tmp_path_factory.mktemp("zipapp") / "agent.pyz")


def clean_python(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", "-S", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_contents(agent_pyz: Path) -> None:
    with zipfile.ZipFile(agent_pyz) as archive:
        names = sorted(archive.namelist())
    pilot_modules = sorted(
        f"pilotage/pilot/{p.name}"
        for p in (Path(__file__).parents[2] / "src" / "pilotage" / "pilot").glob("*.py")
    )
    assert names == sorted(
        [
            "__main__.py",
            "pilotage/__init__.py",
            "pilotage/errors.py",
            "pilotage/queue/__init__.py",
            "pilotage/queue/sandbox.py",
            *pilot_modules,
        ]
    )
    assert agent_pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")


def test_reproducible(agent_pyz: Path, tmp_path: Path) -> None:
    again = build_zipapp(tmp_path / "again.pyz")
    assert again.read_bytes() == agent_pyz.read_bytes()


def test_help_runs_without_site_packages(agent_pyz: Path, tmp_path: Path) -> None:
    done = clean_python(str(agent_pyz), "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "--server URL" in done.stdout and "--workdir DIR" in done.stdout


def test_every_module_imports_cleanly(agent_pyz: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(agent_pyz) as archive:
        modules = [
            name.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
            for name in archive.namelist()
            if name.startswith("pilotage/")
        ]
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(agent_pyz)!r})\n"
        "import importlib\n"
        f"for name in {modules!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(agent_pyz)!r}), module.__file__\n"
        "third = sorted(m for m in sys.modules if m.split('.')[0] not in sys.stdlib_module_names"
        " and m.split('.')[0] not in ('pilotage', '__main__'))\n"
        "assert not third, third\n"
        "print(len(sys.modules))\n"
    )
    done = clean_python("-c", script, cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_bad_flag_exits_2_and_unreachable_server_exits_1(agent_pyz: Path, tmp_path: Path) -> None:
    done = clean_python(str(agent_pyz), "--cpus", "x", cwd=tmp_path)
    assert done.returncode == 2 and "'x' is not a number" in done.stderr
    token = tmp_path / "token"
    token.write_text("t")
    done = clean_python(
        str(agent_pyz),
        *("--server", "https://127.0.0.1:9", "--ca", str(tmp_path / "missing.pem")),
        *("--token", str(token), "--workdir", str(tmp_path / "w")),
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("pilotage-agent: the CA file ")
    assert "missing.pem cannot be loaded" in done.stderr
