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

import contextlib
import io
import shutil
import signal
import socket
import sqlite3
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_callers import submit_api

from pilotage.collector import pilots as registry
from pilotage.factory.backends.local import PilotLaunch
from pilotage.queue.claims import release_claim
from pilotage.queue.states import Trigger
from pilotage.store.engine import Store
from pilotage.testing import Pool

SETTINGS = {"heartbeat_s": "1", "lease_s": "6", "reap_interval_s": "0.5", "retry_after_s": "0.5"}
#: The agent's idle timeout: shorter than the outage, which must not count as idle.
IDLE_TIMEOUT_S = 4


@pytest.fixture
def sqlite_pool(request: pytest.FixtureRequest) -> Iterator[Pool]:
    """A pool on SQLite with :data:`SETTINGS` (and those the test gives as its param)."""
    settings = {**SETTINGS, **getattr(request, "param", {})}
    root = Path(tempfile.mkdtemp(prefix="pilotage-outage-"))
    pool = Pool(root, f"sqlite:///{root / 'state' / 'pilotage.db'}", settings=settings)
    try:
        yield pool.start()
    finally:
        pool.stop()
        shutil.rmtree(root, ignore_errors=True)


class AnswerEater:
    """A TCP relay to the server that, while eating, passes requests on but drops the
    answers on connections opened before it began, and cuts those connections: the
    server commits, the client never hears. Newer connections pass (their TLS
    handshakes too: the client still checks the server's certificate)."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.eating = False
        self.epoch = 0
        self.eaten = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self._listener.getsockname()[1]}"
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def start(self) -> None:
        self.epoch += 1
        self.eating = True

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                server = socket.create_connection(self.target)
                self._open += [client, server]
                for a, b, born in ((client, server, None), (server, client, self.epoch)):
                    threading.Thread(target=self._pump, args=(a, b, born), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, born: int | None) -> None:
        """Copy ``source`` to ``sink``; ``born``: these are answers, on a connection
        opened in that epoch."""
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if born is not None and self.eating and born < self.epoch:
                    self.eaten += 1
                    break
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._listener.close()
        for sock in self._open:
            sock.close()


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


# Without the fix the job would wait out the five-minute lease.
@pytest.mark.parametrize("sqlite_pool", [{"lease_s": "300"}], indirect=True)
def test_a_claim_whose_answer_was_lost_on_the_way_is_freed_by_the_next_heartbeat(
    sqlite_pool: Pool,
) -> None:
    pool = sqlite_pool
    eater = AnswerEater(int(pool.url.rsplit(":", 1)[1]))
    agent_log = pool.root / "pilots" / "pilot-0" / "pilot.log"
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as archive:
        info = tarfile.TarInfo("in.txt")
        archive.addfile(info, io.BytesIO(b""))
    try:
        with pool.admin() as admin:
            digest = admin.upload("/api/v1/sandboxes", io.BytesIO(tar.getvalue()))["digest"]
            first = submit_api(admin, 1, executable="/bin/sleep", arguments=["2"],
                               input_sandbox=digest)  # fmt: skip
        backend = pool.pilots(0)
        token = pool.token_file("pilots", "pilot")
        launch = PilotLaunch(server_url=eater.url, ca=pool.state.ca_cert, token_file=token)
        backend.submit("pilot-0", launch)
        # The first job's thread has a connection (its input came over it); its result
        # report will ask for the next job on it, and that answer is the one lost.
        _until(lambda: "input sandbox unpacked" in agent_log.read_text(), "the job starts")
        with pool.admin() as admin:
            second = submit_api(admin, 1)
        eater.start()
        _until(lambda: _states(pool, first, second) == ["COMPLETED", "RUNNING"], "the report")
        eater.eating = False
        # Freed at the agent's next heartbeat, the job runs long before its lease ends.
        _until(lambda: _states(pool, second) == ["COMPLETED"], "it runs after all", 60)
    finally:
        eater.close()
    with pool.admin() as admin:
        events = admin.call("GET", f"/api/v1/jobs/{second}.0/events")
        (job,) = admin.call("GET", "/api/v1/jobs", params={"id": str(second)})
    freed = [e for e in events if e["trigger"] == "released_by_pilot"]
    assert len(freed) == 1, events
    assert "(the answer that granted it was lost)" in freed[0]["reason"]
    assert [e["trigger"] for e in events].count("exit") == 1
    assert job["attempts"] == 1  # the lost claim was not counted
    assert eater.eaten >= 1


def test_a_pilot_declared_lost_while_its_job_runs_keeps_it_running(sqlite_pool: Pool) -> None:
    pool = sqlite_pool
    backend = pool.pilots(1, lifetime_s=900)
    agent_log = pool.root / "pilots" / "pilot-0" / "pilot.log"
    with pool.admin() as admin:
        cluster = submit_api(admin, 1, executable="/bin/sleep", arguments=["5"])
    _until(lambda: "started pid" in agent_log.read_text(), "the job starts")
    (pilot_id,) = _rows(pool, "select id from pilots")[0]
    # The reaper's verdict on a silent pilot, as another server's clock might give it:
    # written here, since a pilot whose claims are live is never found silent.
    conn = sqlite3.connect(pool.state.root / "pilotage.db", timeout=60)
    with conn:
        conn.execute("update pilots set state = 'lost' where id = ?", (pilot_id,))
    conn.close()
    _until(lambda: _states(pool, cluster) == ["COMPLETED"], "the job ends")
    log = agent_log.read_text()
    assert f"registered again as the same pilot {pilot_id}; 1 of 1 claims resumed" in log
    assert "stopping" not in log  # the job was never stopped
    with pool.admin() as admin:
        events = admin.call("GET", f"/api/v1/jobs/{cluster}.0/events")
    triggers = [e["trigger"] for e in events]
    assert triggers.count("claim") == 1 and triggers.count("exit") == 1, triggers
    assert _rows(pool, "select state from pilots") == [("active",)]
    assert backend.processes["pilot-0"].poll() is None


def test_a_pilot_back_from_lost_stops_the_job_the_server_no_longer_counts_on(
    sqlite_pool: Pool,
) -> None:
    pool = sqlite_pool
    backend = pool.pilots(1, lifetime_s=900)
    agent_log = pool.root / "pilots" / "pilot-0" / "pilot.log"
    with pool.admin() as admin:
        cluster = submit_api(admin, 1, executable="/bin/sleep", arguments=["4"])
    _until(lambda: "started pid" in agent_log.read_text(), "the job starts")
    ((pilot_id, claim_id, job_id),) = _rows(
        pool, "select pilot_id, id, job_id from claims where state = 'active'"
    )
    # What the reaper does to a pilot silent past its lease (here at once, in one
    # transaction, with the server's own functions): the claim released, the pilot lost.
    store = Store(pool.db_url)
    try:
        with store.write() as conn:
            now = time.time()
            release_claim(conn, claim_id, job_id, trigger=Trigger.LEASE_EXPIRED,
                          reason="lease expired", max_attempts=5, now=now)  # fmt: skip
            registry.leave(conn, pilot_id, "lost", "no heartbeat", now)
    finally:
        store.dispose()
    _until(lambda: _states(pool, cluster) == ["COMPLETED"], "the job runs again and ends")
    log = agent_log.read_text()
    assert f"registered again as the same pilot {pilot_id}; 0 of 1 claims resumed" in log
    assert f"claim {claim_id} job {cluster}.0: stopping (the server no longer holds" in log
    with pool.admin() as admin:
        triggers = [e["trigger"] for e in admin.call("GET", f"/api/v1/jobs/{cluster}.0/events")]
    assert triggers.count("exit") == 1 and triggers.count("claim") == 2, triggers
    assert backend.processes["pilot-0"].poll() is None
