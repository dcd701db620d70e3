"""Dispatch under concurrency: many pilots at once, and two server processes on one
PostgreSQL database. Every job runs exactly once: one claim, one exit.

The pilots speak the protocol directly (ask for work, report the result and ask for the
next in the same call), as the benchmarks do: the jobs are instant, so what is tested is
the server's atomic claim, not the agent.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
import sqlalchemy as sa
from e2e_callers import ProtocolPilot, submit_api
from sqlalchemy.pool import NullPool

from pilotage.store.tables import claims, job_events, jobs
from pilotage.testing import Pool

Clients = Callable[..., httpx.Client]
JOBS = 200
PILOTS = 8


def _drain(pilots: list[ProtocolPilot]) -> list[tuple[str, str, str]]:
    """Run every pilot in its own thread until the queue is empty; return what each was
    given as (pilot id, job id, claim id)."""
    start = threading.Barrier(len(pilots))
    given: list[tuple[str, str, str]] = []
    errors: list[BaseException] = []

    def work(pilot: ProtocolPilot) -> None:
        try:
            start.wait()
            claim = pilot.ask()
            while claim is not None:
                given.append((pilot.id, claim["job_id"], claim["claim_id"]))
                answer = pilot.report(claim["claim_id"], exit_code=0, next_work=True)
                assert answer.status_code == 200, answer.text
                claim = answer.json()["claim"]
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,), name=p.id) for p in pilots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return given


def _check_each_job_ran_once(pool: Pool, given: list[tuple[str, str, str]]) -> None:
    job_ids = [job for _, job, _ in given]
    assert len(job_ids) == JOBS and set(job_ids) == {f"1.{i}" for i in range(JOBS)}, (
        f"given twice: {[j for j, n in Counter(job_ids).items() if n > 1]}"
    )
    with pool.admin() as admin:
        finished = admin.call("GET", "/api/v1/jobs", params={"finished": True})
    assert len(finished) == JOBS
    assert {(j["state"], j["exit_code"], j["attempts"]) for j in finished} == {("COMPLETED", 0, 1)}
    claim_of = {job: claim for _, job, claim in given}
    engine = sa.create_engine(pool.db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            events = conn.execute(
                sa.select(
                    jobs.c.cluster_id, jobs.c.proc_id, job_events.c.trigger, job_events.c.claim_id
                )
                .join(jobs, jobs.c.id == job_events.c.job_id)
                .order_by(job_events.c.id)
            ).all()
            ended = conn.execute(sa.select(claims.c.state, claims.c.end_reason)).all()
    finally:
        engine.dispose()
    history: dict[str, list[tuple[str, str | None]]] = {}
    for cluster, proc, trigger, claim_id in events:
        history.setdefault(f"{cluster}.{proc}", []).append((trigger, claim_id))
    for job, claim_id in claim_of.items():
        assert history[job] == [("submit", None), ("claim", claim_id), ("exit", claim_id)], job
    assert Counter(ended) == {("ended", "exit"): JOBS}


@pytest.mark.timeout(300)
def test_many_pilots_at_once_run_every_job_exactly_once(pool: Pool, clients: Clients) -> None:
    with pool.admin() as admin:
        submit_api(admin, JOBS)
    token = pool.token("pilots", "pilot")
    pilots = [ProtocolPilot(clients(pool, token), f"pilot-{i}") for i in range(PILOTS)]
    given = _drain(pilots)
    _check_each_job_ran_once(pool, given)
    assert len({pilot for pilot, _, _ in given}) > 1  # the work was shared, not serialised


@pytest.mark.postgres
@pytest.mark.timeout(300)
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_servers_on_one_database_run_every_job_exactly_once(
    pool: Pool, clients: Clients
) -> None:
    second_url_file = pool.root / "second.url"
    pool.start_server(socket=pool.root / "second.sock", url_file=second_url_file)
    urls = [pool.url, second_url_file.read_text().strip()]
    assert urls[0] != urls[1]
    with pool.admin() as admin:
        submit_api(admin, JOBS)
    token = pool.token("pilots", "pilot")
    pilots = [
        ProtocolPilot(clients(pool, token, url=urls[i % 2]), f"pilot-{i}") for i in range(PILOTS)
    ]
    given = _drain(pilots)
    _check_each_job_ran_once(pool, given)
    by_server = Counter(i % 2 for i, p in enumerate(pilots) for g in given if g[0] == p.id)
    assert by_server[0] and by_server[1], by_server  # both servers gave out work
