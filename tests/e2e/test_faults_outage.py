"""A server outage longer than the silence after which pilots are declared lost loses no
pilot still alive, and no job: real server processes (SIGKILLed, restarted), a real
agent, short settings.

The outage: the server is SIGKILLed while a job runs; a second server on the same state
but another port (which the agent cannot reach) declares the pilot lost and the job's
lease expired; then a server comes back on the agent's port. The agent, whose idle
timeout is shorter than the outage, must neither leave for the silence nor count it as
idle: it registers again as the same pilot and runs both jobs, each exactly once.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_callers import submit_api

from pilotage.testing import Pool

SETTINGS = {"heartbeat_s": "1", "lease_s": "6", "reap_interval_s": "0.5", "retry_after_s": "0.5"}
#: The agent's idle timeout: shorter than the outage, which must not count as idle.
IDLE_TIMEOUT_S = 4


@pytest.fixture
def sqlite_pool() -> Iterator[Pool]:
    root = Path(tempfile.mkdtemp(prefix="pilotage-outage-"))
    pool = Pool(root, f"sqlite:///{root / 'state' / 'pilotage.db'}", settings=dict(SETTINGS))
    try:
        yield pool.start()
    finally:
        pool.stop()
        shutil.rmtree(root, ignore_errors=True)


def _rows(pool: Pool, sql: str) -> list[Any]:
    conn = sqlite3.connect(f"file:{pool.state.root / 'pilotage.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _until(check: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.2)


def _states(pool: Pool, *clusters: int) -> list[str]:
    with pool.admin() as admin:
        jobs = admin.call("GET", "/api/v1/jobs", params={"id": [str(c) for c in clusters]})
    return [j["state"] for j in sorted(jobs, key=lambda j: int(j["cluster"]))]


def test_a_pilot_outlives_a_server_outage_longer_than_its_lost_silence(
    sqlite_pool: Pool,
) -> None:
    pool = sqlite_pool
    port = pool.url.rsplit(":", 1)[1]
    backend = pool.pilots(1, idle_timeout_s=IDLE_TIMEOUT_S, lifetime_s=900)
    agent = backend.processes["pilot-0"]
    agent_log = pool.root / "pilots" / "pilot-0" / "pilot.log"
    _until(lambda: _rows(pool, "select state from pilots") == [("active",)], "it registers")
    (pilot_id,) = _rows(pool, "select id from pilots")[0]
    with pool.admin() as admin:
        running = submit_api(admin, 1, executable="/bin/sleep", arguments=["4"])
        waiting = submit_api(admin, 1)
    _until(lambda: _states(pool, running) == ["RUNNING"], "the first job runs")

    pool.servers[0].send_signal(signal.SIGKILL)
    pool.servers[0].wait(30)
    outage_began = time.monotonic()
    # A server on the same state that the agent cannot reach: the silence lasts longer
    # than max(3 * heartbeat_s, lease_s), so it declares the pilot lost, its lease over.
    pool.settings = {**SETTINGS, "port": "0"}
    blind = pool.start_server()
    _until(
        lambda: _rows(pool, "select state from pilots") == [("lost",)],
        "the server declares the pilot lost",
    )
    assert _states(pool, running, waiting) == ["IDLE", "IDLE"]
    blind.send_signal(signal.SIGTERM)
    blind.wait(30)
    pool.settings = {**SETTINGS, "port": port}
    pool.start_server()
    assert time.monotonic() - outage_began > max(3 * 1, 6) > IDLE_TIMEOUT_S

    _until(lambda: _states(pool, running, waiting) == ["COMPLETED", "COMPLETED"], "both run")
    assert agent.poll() is None or "idle timeout" in agent_log.read_text()
    # The same pilot, taken back: nothing new registered, nothing lost for good.
    assert _rows(pool, "select id, state from pilots") == [(pilot_id, "active")]
    for cluster in (running, waiting):
        with pool.admin() as admin:
            events = admin.call("GET", f"/api/v1/jobs/{cluster}.0/events")
        assert [e["trigger"] for e in events].count("exit") == 1  # each ran to its end once
    log = agent_log.read_text()
    assert f"registered again as the same pilot {pilot_id}" in log
    assert "lost by the server" not in log
    # An outage is one line as it starts and one as it ends, not a line per attempt.
    assert log.count("heartbeat failed") == 1 and log.count("heartbeat works again") == 1
    assert log.count("asking for work failed") <= 1
    assert "Traceback" not in log and "Traceback" not in pool.server_log()


def test_a_start_that_fails_for_a_busy_executable_gives_the_job_back_uncounted(
    sqlite_pool: Pool, tmp_path: Path
) -> None:
    pool = sqlite_pool
    program = tmp_path / "program.sh"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    backend = pool.pilots(1, lifetime_s=900)
    agent_log = pool.root / "pilots" / "pilot-0" / "pilot.log"
    with open(program, "ab") as busy:  # open for writing: every execve of it fails ETXTBSY
        with pool.admin() as admin:
            cluster = submit_api(admin, 1, executable=str(program))

        def given_back() -> bool:
            with pool.admin() as admin:
                events = admin.call("GET", f"/api/v1/jobs/{cluster}.0/events")
            return any(e["trigger"] == "released_by_pilot" for e in events)

        _until(given_back, "the agent gives the job back")
        with pool.admin() as admin:
            (job,) = admin.call("GET", "/api/v1/jobs", params={"id": str(cluster)})
            events = admin.call("GET", f"/api/v1/jobs/{cluster}.0/events")
        assert job["state"] == "IDLE" and job["attempts"] == 0  # not held, not counted
        assert "Text file busy" in events[-1]["reason"]
        assert busy.writable()
    _until(lambda: _states(pool, cluster) == ["COMPLETED"], "it runs once the file is closed")
    with pool.admin() as admin:
        triggers = [e["trigger"] for e in admin.call("GET", f"/api/v1/jobs/{cluster}.0/events")]
    assert "failure" not in triggers and triggers.count("exit") == 1
    log = agent_log.read_text()
    assert "trying once more" in log and "giving the job back" in log
    assert backend.processes["pilot-0"].poll() is None  # the node is fine: it goes on
