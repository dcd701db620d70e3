"""PostgreSQL stopped under a running server: every route answers 503 with Retry-After and
the one error body, never 500; the CLI exits 75 saying the database is down; /healthz
says so and /readyz answers 503; the reaper logs the outage once as it starts and once as
it ends; and everything works again once PostgreSQL is back.

The test stops and starts the session's own throwaway PostgreSQL cluster (the same data
directory and port), and leaves it running.
"""

from __future__ import annotations

import io
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from e2e_callers import FREE, ProtocolPilot, submit_api
from sqlalchemy.pool import NullPool

from pilotage.testing import Pool, _cluster_owner, _postgres_bindir, _run_as

Clients = Callable[..., httpx.Client]
SETTINGS = {"heartbeat_s": "2", "lease_s": "120", "reap_interval_s": "0.5"}


class Cluster:
    """The session's PostgreSQL cluster, stopped and started in place."""

    def __init__(self, url: str) -> None:
        engine = sa.create_engine(url, poolclass=NullPool)
        with engine.connect() as conn:
            self.data = Path(str(conn.exec_driver_sql("SHOW data_directory").scalar()))
        engine.dispose()
        self.port = sa.make_url(url).port
        bindir = _postgres_bindir()
        assert bindir is not None
        self.pg_ctl = str(bindir / "pg_ctl")
        self.owner = _cluster_owner()  # as root, the system user that runs it

    def stop(self) -> None:
        _run_as(self.owner, [self.pg_ctl, f"--pgdata={self.data}", "--mode=fast", "--wait", "stop"],
                cwd=self.data.parent)  # fmt: skip

    def start(self) -> None:
        log = self.data.parent / "postgresql.log"
        _run_as(
            self.owner,
            [self.pg_ctl, f"--pgdata={self.data}", f"--log={log}", "--wait", "--timeout=60",
             f"--options=-p {self.port}", "start"],
            cwd=self.data.parent,
        )  # fmt: skip


@pytest.fixture
def pg_pool(pg_database: str) -> Iterator[Pool]:
    root = Path(tempfile.mkdtemp(prefix="pilotage-pgdown-"))
    pool = Pool(root, pg_database, settings=SETTINGS)
    try:
        yield pool.start()
    finally:
        pool.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def local(pg_pool: Pool) -> Iterator[httpx.Client]:
    """An admin's client over the server's Unix socket (the server's own user)."""
    transport = httpx.HTTPTransport(uds=str(pg_pool.state.socket))
    with httpx.Client(transport=transport, base_url="http://local", timeout=60) as client:
        yield client


def _tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("in.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"in\n"))
    return out.getvalue()


def _is_fault(response: httpx.Response) -> bool:
    """A 503 as every fault must be answered: Retry-After and the one error body."""
    if response.status_code != 503:
        return False
    assert int(response.headers["Retry-After"]) >= 1, response.headers
    body = response.json()
    assert set(body) == {"error", "message"} and body["error"] == "Transient", body
    return True


def test_every_route_answers_503_while_postgresql_is_stopped(
    pg_pool: Pool, postgres_server: str, clients: Clients, local: httpx.Client
) -> None:
    pool = pg_pool
    cluster_pg = Cluster(postgres_server + "postgres")
    with pool.admin() as admin:
        cluster = submit_api(admin, 2)
    pilot = ProtocolPilot(clients(pool, pool.token("faults", "pilot")), "faults")
    claim = pilot.ask()
    assert claim is not None
    ids = {"pilot_id": pilot.id, "claim_id": claim["claim_id"], "job_id": f"{cluster}.1",
           "cluster_id": str(cluster), "name": "nobody", "entry": "e", "frontend": "f",
           "delegation_id": "d-x"}  # fmt: skip
    paths = local.get("/openapi.json").json()["paths"]
    registration = {"v": 1, "name": "again", "site": "test-site", "host": "wn.example.org",
                    "lifetime_s": 600, **FREE}  # fmt: skip
    work = {"v": 1, "free": FREE, "time_left_s": 3000}
    # Requests that reach the database whatever else they are: each must be a 503.
    must_fail: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/api/v1/jobs", {}),
        ("GET", "/api/v1/slots", {}),
        ("GET", "/api/v1/pilots", {}),
        ("GET", f"/api/v1/jobs/{cluster}.0/events", {}),
        ("POST", "/api/v1/clusters", {}),
        ("POST", "/api/v1/sandboxes",
         {"content": _tar(), "headers": {"Content-Type": "application/x-tar"}}),
        ("POST", "/pilot/v1/pilots", {"json": registration}),
        ("POST", f"/pilot/v1/pilots/{pilot.id}/claims", {"json": work}),
        ("POST", f"/pilot/v1/pilots/{pilot.id}/heartbeat", {"json": {"v": 1, "claims": []}}),
        ("POST", f"/pilot/v1/claims/{claim['claim_id']}/result",
         {"json": {"v": 1, "exit_code": 0, "wall_s": 1, "cpu_s": 1}}),
        ("GET", f"/pilot/v1/claims/{claim['claim_id']}/input", {}),
    ]  # fmt: skip

    cluster_pg.stop()
    try:
        answers: dict[str, int] = {}
        for method, path, kwargs in must_fail:
            http = pilot.http if path.startswith("/pilot/") else local
            response = http.request(method, path, **kwargs)
            assert _is_fault(response), (method, path, response.status_code, response.text)
            assert "database is unavailable" in response.json()["message"]
        # Every other route, with what it needs or not: never a 500, and every 5xx a 503
        # as above (a refusal of a bad body before the database is looked at is a 4xx).
        for path, operations in paths.items():
            concrete = re.sub(r"\{(\w+)\}", lambda m: ids.get(m.group(1), "x"), path)
            for method in operations:
                http = pilot.http if path.startswith("/pilot/") else local
                body = {} if method in ("get", "delete") else {"json": {"v": 1}}
                response = http.request(method.upper(), concrete, **body)
                answers[f"{method.upper()} {path}"] = response.status_code
                assert response.status_code < 500 or _is_fault(response), (
                    method, path, response.status_code, response.text,
                )  # fmt: skip
        assert sum(code == 503 for code in answers.values()) >= 15, answers
        for extra in ("/metrics",):
            assert local.get(extra).status_code != 500

        # The CLI: exit 75 and one sentence saying what is down.
        for verb in (["q"], ["status"]):
            done = pool.cli(*verb)
            assert done.returncode == 75, (verb, done.stdout, done.stderr)
            assert done.stderr.startswith("pilotage: the pool's database is unavailable")
            assert "Traceback" not in done.stderr

        checked = pool.cli("admin", "check")
        assert checked.returncode == 75, checked.stdout + checked.stderr
        password = str(sa.make_url(pool.db_url).password)
        assert "FAILED  database" in checked.stdout and password not in checked.stdout

        health = local.get("/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "degraded" and not health.json()["database"]["ok"]
        assert health.json()["spool"]["ok"] and health.json()["spool"]["free_mb"] > 0
        assert _is_fault(local.get("/readyz"))
        assert "not ready" in local.get("/readyz").json()["message"]
    finally:
        cluster_pg.start()

    deadline = time.monotonic() + 60
    while local.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the server never became ready again"
        time.sleep(0.2)
    assert local.get("/healthz").json()["status"] == "ok"
    assert pool.cli("q").returncode == 0
    checked = pool.cli("admin", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert pilot.heartbeat(claim["claim_id"]).status_code == 200
    assert pilot.report(claim["claim_id"]).status_code == 200

    # Wait for the reaper to see the database again, then read what the outage logged.
    deadline = time.monotonic() + 60
    while "reaper: outage over" not in pool.server_log():
        assert time.monotonic() < deadline, pool.server_log()
        time.sleep(0.2)
    log = pool.server_log()
    assert log.count("reaper: outage (database_unavailable") == 1
    assert log.count("reaper: outage over") == 1
    assert log.count("answering 503 (database_unavailable)") == 1  # then once a minute
    assert "Traceback" not in log and "internal error" not in log
