"""Set-up commands that need no server: 'pilot build' prints the zipapp's SHA-256 (the
same bytes every time), 'example' copies an example and never writes over anything."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pilotage.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_pilot_build_prints_the_sha256(tmp_path: Path) -> None:
    first = _cli("pilot", "build", "--out", "agent.pyz", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    digest = hashlib.sha256((tmp_path / "agent.pyz").read_bytes()).hexdigest()
    assert first.stdout == f"{digest}  agent.pyz\n"  # as sha256sum prints it
    again = _cli("pilot", "build", "--out", str(tmp_path / "again.pyz"), cwd=tmp_path)
    assert again.stdout.split()[0] == digest  # reproducible
    agent = subprocess.run([sys.executable, str(tmp_path / "agent.pyz"), "--help"],
                           capture_output=True, text=True)  # fmt: skip
    assert agent.returncode == 0 and "--server" in agent.stdout
    for bad, why in (("nowhere/agent.pyz", "does not exist"), (".", "is a directory")):
        refused = _cli("pilot", "build", "--out", bad, cwd=tmp_path)
        assert refused.returncode == 2 and why in refused.stderr


def test_example_copies_and_never_overwrites(tmp_path: Path) -> None:
    done = _cli("example", "hello", "hello", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    copy = tmp_path / "hello"
    assert {p.name for p in copy.iterdir()} >= {"hello.submit", "long.submit", "hello.sh", "out"}
    (copy / "mine.txt").write_text("keep me")
    again = _cli("example", "hello", "hello", cwd=tmp_path)
    assert again.returncode == 2 and "is not an empty directory" in again.stderr
    assert (copy / "mine.txt").read_text() == "keep me"
    unknown = _cli("example", "nonesuch", "x", cwd=tmp_path)
    assert unknown.returncode == 3 and "the examples are: hello, provisioning" in unknown.stderr
    assert not (tmp_path / "x").exists()
