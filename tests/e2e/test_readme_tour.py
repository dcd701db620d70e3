"""The README's tour, run literally: every command of its ``sh`` code blocks, in order, in
one shell, with a fresh home (so a fresh state directory and a scratch copy of the
example) and a temporary directory of its own. It must succeed, write nothing into the
repository, and leave nothing in the temporary directory."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Run before the tour's first command: stop on the first failure and name it; on the
#: way out, stop what the tour left in the background (its pilot).
PROLOGUE = """set -euo pipefail
trap 'echo "tour: failed at: $BASH_COMMAND" >&2' ERR
trap 'kill $(jobs -p) 2>/dev/null || true; wait || true' EXIT
"""


def tour_blocks(readme: str) -> list[str]:
    """The ``sh`` code blocks of the section "A five-minute tour", in order."""
    section = readme.split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)


def _status() -> set[str]:
    done = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return set(done.stdout.splitlines())


def _stop_server(pid_file: Path) -> None:
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    if subprocess.run(["git", "status"], cwd=REPO, capture_output=True).returncode != 0:
        pytest.skip("not a git checkout: the tour's trace in the repository cannot be seen")
    blocks = tour_blocks((REPO / "README.md").read_text())
    assert len(blocks) >= 8, "the tour's sh blocks were not found"
    home, start = tmp_path / "home", tmp_path / "start"
    for d in (home, start):
        d.mkdir()
    # A short one: the demo's Unix sockets live there (at most 107 bytes in a path).
    tmp = Path(tempfile.mkdtemp(prefix="tour-", dir="/tmp"))
    bin_dir = str(Path(sys.executable).parent)  # the venv's, as 'source .venv/bin/activate'
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "LANG": "C.UTF-8",
        # Port 0: a free port instead of 9618, which another pool may hold on this host.
        "PILOTAGE_SERVER_PORT": "0",
        # Beats every 2 s: a removed running job is stopped at its pilot's next beat.
        "PILOTAGE_SERVER_HEARTBEAT_S": "2",
    }
    before = _status()
    try:
        done = subprocess.run(
            ["bash", "-c", PROLOGUE + "\n".join(blocks)],
            cwd=start, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        _stop_server(home / "pool" / "server.pid")
        left = list(tmp.iterdir())
        shutil.rmtree(tmp, ignore_errors=True)
    assert done.returncode == 0, f"{done.stderr[-4000:]}\n--- stdout:\n{done.stdout[-4000:]}"

    out = done.stdout
    assert "20 job(s) submitted to cluster 1." in out
    assert "1 job(s) submitted to cluster 2." in out
    assert "stored the credential of /O=Example/CN=Alice" in out
    assert "ok  every job completed at beta" in out  # the provisioning demo
    hello = home / "hello"
    assert (hello / "out" / "hello.1.19.out").read_text().startswith("hello from job 1.19 ")
    assert (hello / "hello.1.log").exists() and (hello / "agent.pyz").exists()
    assert left == [], "the demo left something in the temporary directory"
    # Nothing written into the repository (others' work in a shared tree aside: in CI,
    # where the clone is clean, the status must be clean).
    new = _status() - before
    assert not [line for line in new if "examples/" in line or line.startswith("??")], new
    if os.environ.get("CI") == "true":
        assert _status() == set(), _status()
