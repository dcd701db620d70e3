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
import select
import shutil
import signal
import socket
import sqlite3
import ssl
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
from pilotage.queue.endings import release_claim
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
    """A TLS relay to the server (it holds the server's own certificate, as a reverse
    proxy would) that, once started, passes the agent's next results report on but
    drops its answer and cuts that connection: the server commits, the agent never
    hears. Everything else passes."""

    def __init__(self, pool: Pool) -> None:
        self.target = ("127.0.0.1", int(pool.url.rsplit(":", 1)[1]))
        self.eating = False
        self.eaten = 0
        self._front = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._front.load_cert_chain(pool.state.server_cert, pool.state.server_key)
        self._back = ssl.create_default_context(cafile=str(pool.state.ca_cert))
        # TLS 1.3 sends session tickets after the handshake: a read woken by them would
        # wait for data that comes only once the client's request is passed on.
        self._back.maximum_version = ssl.TLSVersion.TLSv1_2
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self._listener.getsockname()[1]}"
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def start(self) -> None:
        self.eating = True

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                self._open.append(client)
                threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, plain: socket.socket) -> None:
        """Relay one connection (on one thread: an SSL socket is not read and written
        by two threads at once)."""
        with contextlib.suppress(OSError), contextlib.closing(plain):
            client = self._front.wrap_socket(plain, server_side=True)
            server = self._back.wrap_socket(
                socket.create_connection(self.target), server_hostname=self.target[0]
            )
            self._open += [client, server]
            try:
                self._pump(client, server)
            finally:
                for sock in (client, server):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                    sock.close()

    def _pump(self, client: ssl.SSLSocket, server: ssl.SSLSocket) -> None:
        eat = False
        while True:
            ready = [s for s in (client, server) if s.pending()]
            ready = ready or select.select([client, server], [], [], 120)[0]
            for source in ready:
                data = source.recv(65536)
                if not data:
                    return
                if source is client:
                    line = data.split(b"\r\n", 1)[0]
                    if self.eating and line.startswith(b"POST ") and b"/results " in line:
                        eat, self.eating = True, False
                    server.sendall(data)
                elif eat:
                    self.eaten += 1
                    return  # cut: the client never hears
                else:
                    client.sendall(data)

    def close(self) -> None:
        self._listener.close()
        for sock in self._open:
            with contextlib.suppress(OSError):
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
    eater = AnswerEater(pool)
    agent_log = pool.root / "pilots" / "pilot-0" / "pilot.log"
    try:
        with pool.admin() as admin:
            first = submit_api(admin, 1, executable="/bin/sleep", arguments=["2"])
        backend = pool.pilots(0)
        token = pool.token_file("pilots", "pilot")
        launch = PilotLaunch(server_url=eater.url, ca=pool.state.ca_cert, token_file=token)
        backend.submit("pilot-0", launch)
        # The pilot's one cpu is busy: the first job's result report asks for the next
        # job, and that answer is the one lost.
        _until(lambda: "started pid" in agent_log.read_text(), "the job starts")
        with pool.admin() as admin:
            second = submit_api(admin, 1)
        eater.start()
        _until(lambda: _states(pool, first, second) == ["COMPLETED", "RUNNING"], "the report")
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
    # Never stopped: not signalled (it ran to its own end, once), nor said to be. A
    # heartbeat that crossed the result report is answered "revoked: exit" for that very
    # exit; the job had ended and its result had gone, so that stops nothing.
    assert f"job {cluster}.0: stopping" not in log, log
    with pool.admin() as admin:
        events = admin.call("GET", f"/api/v1/jobs/{cluster}.0/events")
    triggers = [e["trigger"] for e in events]
    assert triggers.count("claim") == 1 and triggers.count("exit") == 1, triggers
    (ended,) = [e for e in events if e["trigger"] == "exit"]
    assert ended["reason"] == "exited with code 0", ended
    assert _rows(pool, "select state from pilots") == [("active",)]
    assert backend.processes["pilot-0"].poll() is None


def test_a_pilot_back_from_lost_stops_the_job_the_server_no_longer_counts_on(
    sqlite_pool: Pool,
) -> None:
    pool = sqlite_pool
    backend = pool.pilots(1, lifetime_s=900)
    agent_log = pool.root / "pilots" / "pilot-0" / "pilot.log"
    go = pool.root / "go"  # each run of the job waits for it: the first is still running
    wait = f"until [ -e {go} ]; do sleep 0.1; done"
    with pool.admin() as admin:
        cluster = submit_api(admin, 1, executable="/bin/sh", arguments=["-c", wait])
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
    stopped = f"claim {claim_id} job {cluster}.0: stopping (the server no longer holds"
    _until(lambda: stopped in agent_log.read_text(), "the agent stops the first run")
    go.touch()
    _until(lambda: _states(pool, cluster) == ["COMPLETED"], "the job runs again and ends")
    log = agent_log.read_text()
    assert f"registered again as the same pilot {pilot_id}; 0 of 1 claims resumed" in log
    with pool.admin() as admin:
        triggers = [e["trigger"] for e in admin.call("GET", f"/api/v1/jobs/{cluster}.0/events")]
    assert triggers.count("exit") == 1 and triggers.count("claim") == 2, triggers
    assert backend.processes["pilot-0"].poll() is None
