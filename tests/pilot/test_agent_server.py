"""The agent's zipapp, under a clean ``python -I -S``, against the real ``pilotage server``.

Jobs are submitted with the CLI's own submit code over the server's Unix socket; the
agent talks HTTPS with a pilot token, exactly as on a worker node.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pilotage.cli.submitting import fetch_outputs, submit
from pilotage.pilot.zipapp import build_zipapp

from .conftest import Pool

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def agent_pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_zipapp(tmp_path_factory.mktemp("agent") / "agent.pyz")


class Agent:
    """One agent process and its log."""

    def __init__(self, pool: Pool, pyz: Path, *extra: str, token_file: Path | None = None) -> None:
        self.log = pool.root / f"agent-{time.monotonic_ns()}.log"
        self.workdir = pool.root / "pilot-work"
        command = [
            sys.executable, "-I", "-S", str(pyz),
            "--server", pool.url, "--ca", str(pool.state.ca_cert),
            "--token", str(token_file or pool.token_file), "--workdir", str(self.workdir),
            "--cpus", "2", "--memory", "1024", "--disk", "1000", "--site", "test-site",
            *extra,
        ]  # fmt: skip
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(command, stderr=out, env={"PATH": "/usr/bin:/bin"})

    def text(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"the agent did not exit in {timeout} s:\n{self.text()}")


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        if agent.process.poll() is None:
            agent.process.kill()
            agent.process.wait()


def submit_cluster(
    pool: Pool,
    where: Path,
    description: str,
    files: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> int:
    where.mkdir()
    for name, text in files.items():
        (where / name).write_text(text)
        (where / name).chmod(0o644 if name.startswith("plain") else 0o755)
    (where / "job.submit").write_text(description)
    monkeypatch.chdir(where)
    me = pool.admin.call("GET", "/api/v1/whoami")["name"]
    cluster, _count = submit(pool.admin, where / "job.submit", me)
    return cluster


def jobs_of(pool: Pool, cluster: int) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = pool.admin.call("GET", "/api/v1/jobs", params={"id": str(cluster)})
    return sorted(jobs, key=lambda j: int(j["proc"]))


def wait_for(
    pool: Pool, cluster: int, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 60
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = jobs_of(pool, cluster)
        if done(jobs):
            return jobs
        time.sleep(0.2)
    pytest.fail(f"jobs never reached the expected states: {jobs_of(pool, cluster)}")


def all_in(*states: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda jobs: bool(jobs) and all(j["state"] in states for j in jobs)


RUN_SH = """#!/bin/sh
echo "job $PILOTAGE_JOB_ID item $1 home=$HOME"
wc -w < words.txt > "count-$1.txt"
echo warning >&2
exit "$1"
"""


def test_jobs_run_report_and_outputs_come_back(
    pool: Pool, agent_pyz: Path, agents: list[Agent], monkeypatch: pytest.MonkeyPatch
) -> None:
    description = """executable = run.sh
arguments = $(Process)
transfer_input_files = words.txt
output = out.$(Process).txt
error = err.$(Process).txt
request_memory = 64MB
request_disk = 10MB
queue 3
"""
    where = pool.root / "submit"
    files = {"run.sh": RUN_SH, "words.txt": "one two three\n"}
    cluster = submit_cluster(pool, where, description, files, monkeypatch)
    agents.append(Agent(pool, agent_pyz, "--idle-timeout", "3"))
    jobs = wait_for(pool, cluster, all_in("COMPLETED"))
    assert [j["exit_code"] for j in jobs] == [0, 1, 2]
    assert all(j["site"] == "test-site" and j["wall_s"] is not None for j in jobs)
    assert agents[0].wait() == 0
    log = agents[0].text()
    assert "registered as pilot p-" in log and "leaving: idle timeout" in log
    for job in jobs:
        proc = job["proc"]
        placed = fetch_outputs(pool.admin, job)
        assert sorted(placed) == sorted([f"count-{proc}.txt", f"err.{proc}.txt", f"out.{proc}.txt"])
        assert (where / f"count-{proc}.txt").read_text().strip() == "3"
        out = (where / f"out.{proc}.txt").read_text()
        assert out.startswith(f"job {cluster}.{proc} item {proc} home=")
        assert "pilot-work" in out
        assert (where / f"err.{proc}.txt").read_text() == "warning\n"
    assert list((agents[0].workdir).iterdir()) == []  # every scratch directory deleted


def test_failures_hold_jobs_with_the_protocol_codes(
    pool: Pool, agent_pyz: Path, agents: list[Agent], monkeypatch: pytest.MonkeyPatch
) -> None:
    description = """executable = $(exe)
transfer_input_files = data.txt
transfer_output_files = $(wanted)
request_memory = 64MB
request_disk = 10MB
queue exe, wanted from (
  plain.sh, data.txt
  ok.sh, never-made.txt
)
"""
    files = {"ok.sh": "#!/bin/sh\nexit 0\n", "plain.sh": "#!/bin/sh\nexit 0\n", "data.txt": "x"}
    where = pool.root / "submit"
    cluster = submit_cluster(pool, where, description, files, monkeypatch)
    agents.append(Agent(pool, agent_pyz, "--idle-timeout", "3"))
    jobs = wait_for(pool, cluster, all_in("HELD"))
    assert [j["hold_code"] for j in jobs] == [11, 12]
    assert "executable 'plain.sh' is not executable" in jobs[0]["hold_reason"]
    assert "output file 'never-made.txt' was not created by the job" in jobs[1]["hold_reason"]
    assert agents[0].wait() == 0


def wait_file(path: Path, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    pytest.fail(f"{path} never appeared")


def gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def long_job(pool: Pool, monkeypatch: pytest.MonkeyPatch) -> tuple[int, Path]:
    pidfile = pool.root / "job.pid"
    description = f"""executable = /bin/sh
transfer_executable = false
arguments = "-c 'echo $$ > {pidfile}; exec sleep 300'"
request_memory = 64MB
request_disk = 10MB
queue
"""
    return submit_cluster(pool, pool.root / "submit", description, {}, monkeypatch), pidfile


def test_removal_revokes_the_claim_and_kills_the_job(
    pool: Pool, agent_pyz: Path, agents: list[Agent], monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster, pidfile = long_job(pool, monkeypatch)
    agents.append(Agent(pool, agent_pyz, "--idle-timeout", "2"))
    pid = int(wait_file(pidfile))
    pool.admin.call(
        "POST", "/api/v1/jobs/actions", json={"action": "remove", "ids": [str(cluster)]}
    )
    deadline = time.monotonic() + 15
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gone(pid), agents[0].text()
    assert agents[0].wait() == 0
    log = agents[0].text()
    assert "stopping (revoked by the server" in log
    assert "result reported" not in log
    assert jobs_of(pool, cluster)[0]["state"] == "REMOVED"


def test_sigterm_kills_jobs_and_leaves(
    pool: Pool, agent_pyz: Path, agents: list[Agent], monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster, pidfile = long_job(pool, monkeypatch)
    agents.append(Agent(pool, agent_pyz))
    pid = int(wait_file(pidfile))
    agents[0].process.send_signal(signal.SIGTERM)
    assert agents[0].wait(timeout=30) == 0
    assert gone(pid)
    assert "leaving: terminated by SIGTERM" in agents[0].text()
    job = wait_for(pool, cluster, all_in("IDLE"), timeout=10)[0]
    assert job["attempts"] >= 1


def test_unreachable_server_stops_the_job_before_its_lease_ends(
    pool: Pool, agent_pyz: Path, agents: list[Agent], monkeypatch: pytest.MonkeyPatch
) -> None:
    _cluster, pidfile = long_job(pool, monkeypatch)
    agents.append(Agent(pool, agent_pyz))
    pid = int(wait_file(pidfile))
    stopped_at = time.monotonic()
    pool.server.send_signal(signal.SIGTERM)
    pool.server.wait(timeout=20)
    # Lease 30 s, heartbeat 2 s: the job must be dead before 30 s from its last renewal,
    # i.e. (renewals failing) some 10 s + a retry before it: about 18 s after the stop.
    while not gone(pid) and time.monotonic() - stopped_at < 40:
        time.sleep(0.2)
    assert gone(pid)
    assert time.monotonic() - stopped_at < 30
    assert "its lease could not be renewed" in agents[0].text()
    agents[0].process.send_signal(signal.SIGTERM)
    assert agents[0].wait(timeout=60) == 0


def test_registration_refused_exits_1_with_the_message(
    pool: Pool, agent_pyz: Path, agents: list[Agent]
) -> None:
    bad = pool.root / "user.token"
    bad.write_text(pool.issue_token("mallory", role="user") + "\n")
    agents.append(Agent(pool, agent_pyz, token_file=bad))
    assert agents[0].wait() == 1
    assert "registration failed: POST /pilot/v1/pilots: 403" in agents[0].text()


def test_untrusted_server_certificate_is_fatal_at_once(
    pool: Pool, agent_pyz: Path, tmp_path: Path
) -> None:
    other = subprocess.run(
        [sys.executable, "-m", "pilotage.cli", "init"],
        env=dict(os.environ, PILOTAGE_STATE_DIR=str(tmp_path / "other")),
        capture_output=True,
        check=True,
    )
    assert other.returncode == 0
    command = [
        sys.executable, "-I", "-S", str(agent_pyz), "--server", pool.url,
        "--ca", str(tmp_path / "other" / "ca" / "ca.crt"), "--token", str(pool.token_file),
        "--workdir", str(tmp_path / "w"), "--cpus", "1", "--memory", "100", "--disk", "10",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "certificate is not trusted" in done.stderr


def test_lifetime_end_kills_jobs_and_leaves(
    pool: Pool, agent_pyz: Path, agents: list[Agent], monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster, pidfile = long_job(pool, monkeypatch)
    agents.append(Agent(pool, agent_pyz, "--lifetime", "6"))
    pid = int(wait_file(pidfile))
    assert agents[0].wait(timeout=40) == 0
    assert gone(pid)
    log = agents[0].text()
    assert "stopping (lifetime reached)" in log and "leaving: lifetime reached" in log
    assert wait_for(pool, cluster, all_in("IDLE"), timeout=10)[0]["attempts"] >= 1


def test_module_entry_point_prints_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pilotage.pilot", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "--idle-timeout S" in done.stdout
