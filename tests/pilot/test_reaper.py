"""A pilot that dies: its jobs die with it (pilot/reaper.py; issue 10).

Without the switch, against the real server, with the agent from its zipapp: a job whose
shell has a child in the background (so a kill of the job's top process alone would leave
it) is running when the agent is SIGKILLed; every process of the job is gone afterwards.
When the reaper is killed as well, the next agent started in the same work directory
sweeps what the dead one left. A normal exit leaves no reaper behind. (With the switch:
tests/pilot/test_reaper_switch.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotage.cli.submitting import submit
from pilotage.pilot.zipapp import build_zipapp

from .conftest import Pool

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def agent_pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_zipapp(tmp_path_factory.mktemp("agent") / "agent.pyz")


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    agents: list[subprocess.Popen[bytes]] = []
    yield agents
    for agent in agents:
        if agent.poll() is None:
            agent.kill()
            agent.wait()


def start_agent(pool: Pool, pyz: Path, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-I", "-S", str(pyz), "--server", pool.url,
        "--ca", str(pool.state.ca_cert), "--token", str(pool.token_file),
        "--workdir", str(pool.root / "pilot-work"), "--cpus", "1", "--memory", "512",
        "--disk", "100", "--site", "test-site", "--idle-timeout", "600",
    ]  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(command, stderr=out, env={"PATH": "/usr/bin:/bin"})


def submit_job(pool: Pool, pidfile: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job whose shell waits on a child it put in the background: both pids in ``pidfile``."""
    where = pool.root / "submit"
    where.mkdir()
    (where / "job.submit").write_text(
        f"""executable = /bin/sh
transfer_executable = false
arguments = "-c 'sleep 1000 & echo $$ $! > {pidfile}; wait'"
request_memory = 64MB
request_disk = 10MB
queue
"""
    )
    monkeypatch.chdir(where)
    me = pool.admin.call("GET", "/api/v1/whoami")["name"]
    submit(pool.admin, where / "job.submit", me)


def wait_pids(pidfile: Path, timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pidfile.exists() and len(pidfile.read_text().split()) == 2:
            return [int(p) for p in pidfile.read_text().split()]
        time.sleep(0.05)
    pytest.fail(f"{pidfile} never appeared")


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def wait_gone(pids: list[int], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            pytest.fail(f"job processes {[p for p in pids if alive(p)]} outlived the agent:\n"
                        + log.read_text())  # fmt: skip
        time.sleep(0.1)


def reaper_pid(log: Path) -> int:
    for line in log.read_text().splitlines():
        if "reaper started (pid " in line:
            return int(line.split("reaper started (pid ", 1)[1].split(")")[0])
    pytest.fail(f"no reaper in the log:\n{log.read_text()}")


def test_a_sigkilled_agent_leaves_no_process_of_its_job(
    pool: Pool,
    agent_pyz: Path,
    started: list[subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pidfile = pool.root / "job.pids"
    submit_job(pool, pidfile, monkeypatch)
    log = pool.root / "agent.log"
    started.append(agent := start_agent(pool, agent_pyz, log))
    pids = wait_pids(pidfile)
    assert all(alive(p) for p in pids)
    agent.send_signal(signal.SIGKILL)
    agent.wait()
    wait_gone(pids, log)
    assert "its agent is gone; killing its job" in log.read_text()
    wait_gone([reaper_pid(log)], log)  # and the reaper went too


def test_the_next_agent_sweeps_what_a_dead_agent_and_its_reaper_left(
    pool: Pool,
    agent_pyz: Path,
    started: list[subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pidfile = pool.root / "job.pids"
    submit_job(pool, pidfile, monkeypatch)
    log = pool.root / "agent.log"
    started.append(agent := start_agent(pool, agent_pyz, log))
    pids = wait_pids(pidfile)
    reaper = reaper_pid(log)
    os.kill(reaper, signal.SIGKILL)  # first the reaper, then its agent: nothing kills the job
    wait_gone([reaper], log)
    agent.send_signal(signal.SIGKILL)
    agent.wait()
    assert all(alive(p) for p in pids)
    started.append(start_agent(pool, agent_pyz, log))
    wait_gone(pids, log)
    assert "left by a dead agent; killing what is left of its job" in log.read_text()


def test_an_agent_that_leaves_normally_leaves_no_reaper(
    pool: Pool, agent_pyz: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    log = pool.root / "agent.log"
    started.append(agent := start_agent(pool, agent_pyz, log))
    deadline = time.monotonic() + 60
    while "reaper started" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    reaper = reaper_pid(log)
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=60) == 0, log.read_text()
    assert not alive(reaper)
