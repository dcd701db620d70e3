"""The CLI starts without what its commands load when they run (docs/cli.md, start-up).

Asserted on the modules loaded, not on time: ``--help`` of the root and of commands, and
``--version``, load neither the HTTP client nor rich, SQLAlchemy, cryptography, pydantic,
the ClassAd bindings, JWT or WebSockets. (Typer itself loads pydantic to read the options
of a command that takes a list, such as ``q``: that one is allowed there.)
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = (
    "alembic",
    "classad2",
    "cryptography",
    "fastapi",
    "htcondor2",
    "httpx",
    "jwt",
    "pydantic",
    "rich",
    "sqlalchemy",
    "websockets",
)

#: Runs the CLI in this process, then prints which of HEAVY it loaded.
PROBE = """
import contextlib, io, json, sys
from pilotage.cli.main import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
loaded = sorted({name.split(".")[0] for name in sys.modules} & set(json.loads(HEAVY)))
print(json.dumps({"code": code, "loaded": loaded, "out": out.getvalue()}))
"""


CASES = {
    "pilotage --help": (["--help"], []),
    "pilotage --version": (["--version"], []),
    "pilotage admin --help": (["admin", "--help"], ["pydantic"]),
    "pilotage q --help": (["q", "--help"], ["pydantic"]),
    "pilotage submit --help": (["submit", "--help"], ["pydantic"]),
}


@pytest.mark.parametrize(("args", "allowed"), CASES.values(), ids=CASES.keys())
def test_start_loads_nothing_heavy(args: list[str], allowed: list[str]) -> None:
    probe = f"HEAVY = {json.dumps(json.dumps(HEAVY))}\n{PROBE}"
    done = subprocess.run(
        [sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["code"] == 0, found
    assert found["out"].strip(), "the command printed nothing"
    loaded = [name for name in found["loaded"] if name not in allowed]
    assert loaded == [], f"pilotage {' '.join(args)} loaded {loaded}"


def test_probe_sees_a_heavy_import() -> None:
    """The probe itself: a command that reads a credential does load cryptography."""
    probe = f"HEAVY = {json.dumps(json.dumps(HEAVY))}\n{PROBE}"
    done = subprocess.run(
        [sys.executable, "-c", probe, "proxy", "info", "--file", "/nonexistent/x509up"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = json.loads(done.stdout)
    assert found["code"] == 3, done.stderr  # not found
    assert "cryptography" in found["loaded"]
