"""``pilotage demo`` (what ``make demo`` runs) passes and removes what it made: its
scratch directory and every process it started, also when it is interrupted."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

DEMO = [sys.executable, "-m", "pilotage.cli", "demo", "--jobs", "4", "--pilots", "2"]


@pytest.fixture
def tmp() -> Iterator[Path]:
    """A short temporary directory for the demo (its Unix socket path must stay short)."""
    path = Path(tempfile.mkdtemp(prefix="demo-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PILOTAGE_")}
    return {**env, "TMPDIR": str(tmp)}


def _processes_under(path: Path) -> list[str]:
    """Command lines of live processes that name ``path`` (the demo's pilots, its server)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        line = raw.replace(b"\0", b" ").decode(errors="replace")
        if str(path) in line:
            found.append(f"{entry.name}: {line}")
    return found


def test_the_demo_passes_and_leaves_nothing(tmp: Path) -> None:
    done = subprocess.run(DEMO, env=_env(tmp), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "4/4 jobs completed" in done.stdout
    assert list(tmp.iterdir()) == []
    assert _processes_under(tmp) == []


def test_an_interrupted_demo_leaves_nothing(tmp: Path) -> None:
    with subprocess.Popen(
        DEMO, env=_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as demo:
        assert demo.stdout is not None
        seen = []
        for line in demo.stdout:  # wait for the event: its pilots are running
            seen.append(line)
            if "local pilots" in line:
                break
        else:
            pytest.fail("the demo never started its pilots: " + "".join(seen))
        assert list(tmp.iterdir()) != [] and _processes_under(tmp) != []
        demo.send_signal(signal.SIGTERM)
        demo.stdout.read()
        assert demo.wait(120) == 128 + signal.SIGTERM
    assert list(tmp.iterdir()) == []
    deadline = time.monotonic() + 30  # the pilots' sessions end as their reapers see it
    while _processes_under(tmp) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_under(tmp) == []
