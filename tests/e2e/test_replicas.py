"""Two servers with separate state directories on one PostgreSQL; one is killed under load.

The second server's state directory holds only copies of the pool's key files (CA,
server certificate, token signing keys, credential store key), as on another host
(docs/operations.md, "Several servers"); sandboxes live in the database. Pilots know
both URLs (in different orders); users reach the second one when the first is gone.
Every job completes exactly once, its outputs come back through the survivor.
"""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy.pool import NullPool

from pilotage.factory.backends.local import PilotLaunch
from pilotage.testing import Pool
from pilotage.testing_slurm import free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello"
JOBS = 16

pytestmark = pytest.mark.slow


@pytest.fixture
def replicas(pg_database: str) -> Iterator[tuple[Pool, Pool]]:
    roots = [Path(tempfile.mkdtemp(prefix="pilotage-replica-")) for _ in range(2)]
    settings = {"lease_s": "60", "heartbeat_s": "2", "reap_interval_s": "1", "retry_after_s": "1"}
    pools = [Pool(roots[0], pg_database, settings={**settings, "port": str(free_port())})]
    try:
        pools[0].start()
        pools.append(pools[0].replica(roots[1] / "host-b", port=str(free_port())))
        pools[1].start()
        yield pools[0], pools[1]
    finally:
        for pool in pools:
            pool.stop()
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)


def _json(result: object) -> object:
    assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
    return json.loads(result.stdout)  # type: ignore[attr-defined]


def test_one_of_two_servers_killed_under_load_every_job_completes_once(
    replicas: tuple[Pool, Pool], pg_database: str
) -> None:
    first, second = replicas
    assert first.state.spool != second.state.spool
    work = first.root / "work"
    shutil.copytree(EXAMPLE, work)
    (work / "out").mkdir()
    text = (work / "hello.submit").read_text().replace("queue 20", f"queue {JOBS}")
    (work / "hello.submit").write_text(text.replace("HELLO_SLEEP=1", "HELLO_SLEEP=2"))
    assert _json(first.cli("submit", "hello.submit", "--json", cwd=work)) == {
        "cluster": 1,
        "jobs": JOBS,
    }
    both = [first.url, second.url]
    token = first.token_file("pilots", "pilot")
    backend = first.pilots(0)
    for i, urls in enumerate((both, both[::-1])):
        launch = PilotLaunch(
            server_url=",".join(urls), ca=first.state.ca_cert, token_file=token, cpus=2,
            memory_mb=1024, idle_timeout_s=600,
        )  # fmt: skip
        backend.submit(f"replica-pilot-{i}", launch)
    engine = sqlalchemy.create_engine(pg_database, poolclass=NullPool)

    def completed() -> int:
        with engine.connect() as conn:
            return int(
                conn.exec_driver_sql("SELECT count(*) FROM jobs WHERE state = 'COMPLETED'").scalar()
                or 0
            )

    try:
        deadline = time.monotonic() + 180
        while completed() < 3:
            assert time.monotonic() < deadline, first.server_log()[-3000:]
            time.sleep(0.2)
        assert first.server is not None
        first.server.send_signal(signal.SIGKILL)  # for good: the survivor carries on
        first.server.wait()
        # A user who names both servers reaches the survivor without a word.
        user = second.token_file("root", "user")
        listed = second.cli(
            "--server", ",".join(both), "--token", str(user), "--ca", str(second.state.ca_cert),
            "q", "--json",
        )  # fmt: skip
        assert isinstance(_json(listed), list)
        waited = second.cli("wait", "1", "--timeout", "240", cwd=work)
        assert waited.returncode == 0, waited.stdout + waited.stderr + second.server_log()[-3000:]
        with engine.connect() as conn:
            once = conn.exec_driver_sql(
                "SELECT count(*) FROM job_events WHERE to_state = 'COMPLETED' GROUP BY job_id"
            ).all()
            sandboxes = conn.exec_driver_sql("SELECT count(*) FROM sandbox_chunks").scalar()
        assert sorted(n for (n,) in once) == [1] * JOBS
        assert sandboxes  # kept in the database, not on either host
        for i in range(JOBS):
            out = (work / "out" / f"hello.1.{i}.out").read_text()
            assert out.startswith(f"hello from job 1.{i} ")
        # Both pilots are still there; the one that used the first server moved on.
        assert all(p.poll() is None for p in backend.processes.values())
        log = (first.root / "pilots" / "replica-pilot-0" / "pilot.log").read_text()
        assert f"using {second.url} now" in log, log[-3000:]
    finally:
        engine.dispose()
