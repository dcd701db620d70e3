"""The claim path against a real database (SQLite and PostgreSQL): which job a pilot gets,
in which order, and what a report may change."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from pilotage.api.wire import PilotRegistration, Resources, Result
from pilotage.collector import pilots as registry
from pilotage.config import ServerSettings
from pilotage.errors import Conflict, Denied, NotFound
from pilotage.matchmaking.ads import Submitter
from pilotage.matchmaking.service import MatchService, MatchSettings
from pilotage.queue import claims, endings
from pilotage.queue import jobs as queue
from pilotage.queue.history import Actor
from pilotage.queue.spec import JobSpec
from pilotage.store.engine import Store
from pilotage.store.tables import job_events, jobs

SETTINGS = ServerSettings()
ALICE = Actor("alice")
#: One matchmaker per store, as one server process has.
_MATCHERS: dict[int, MatchService] = {}


def _matcher(store: Store) -> MatchService:
    return _MATCHERS.setdefault(id(store), MatchService(MatchSettings()))


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    store = Store(db_url)
    store.migrate()
    yield store
    _MATCHERS.pop(id(store), None)
    store.dispose()


def submit(store: Store, *specs: JobSpec) -> list[int]:
    """Submit one cluster; return its job ids in proc order."""
    now = time.time()
    with store.write() as conn:
        cluster = queue.open_cluster(conn, ALICE, now)
        queue.commit_cluster(conn, cluster, ALICE, list(specs), now)
        rows = conn.execute(
            sa.select(jobs.c.id).where(jobs.c.cluster_id == cluster).order_by(jobs.c.proc_id)
        )
        return list(rows.scalars())


def job(**fields: Any) -> JobSpec:
    return JobSpec(executable="run.sh", **fields)


#: Each registered pilot's secret, and the secret of the pilot holding each claim.
SECRETS: dict[str, str] = {}


def register(store: Store, *, cpus: int = 1, start: str = "true", subject: str = "p") -> str:
    reg = PilotRegistration(
        name="p", host="wn1", cpus=cpus, memory_mb=4000, disk_mb=10000, lifetime_s=3600, start=start
    )
    with store.write() as conn:
        pilot_id, secret = registry.register(conn, subject, reg, time.time())
    SECRETS[pilot_id] = secret
    return pilot_id


def held(conn: Any, claim_id: str, subject: str = "p") -> Any:
    """``claims.held_claim`` with the secret of the pilot that holds ``claim_id``."""
    return claims.held_claim(conn, claim_id, subject, SECRETS.get(claim_id, "no-such-secret"))


def ask(store: Store, pilot_id: str, cpus: int = 1, memory_mb: int = 4000) -> Any:
    """One dispatch as the API does it; the claim or None."""
    offered = Resources(cpus=cpus, memory_mb=memory_mb, disk_mb=10000, gpus=0)
    with store.write() as conn:
        pilot = registry.owned(conn, pilot_id, "p", SECRETS[pilot_id])
        got = claims.dispatch(
            conn,
            pilot,
            offered,
            3600,
            settings=SETTINGS,
            matcher=_matcher(store),
            now=time.time(),
            is_postgres=not store.is_sqlite,
        ).claims
    claim = got[0] if got else None
    if claim is not None:
        SECRETS[claim.claim_id] = SECRETS[pilot_id]
    return claim


def finish(store: Store, claim_id: str, subject: str = "p") -> None:
    with store.write() as conn:
        live, _pilot = held(conn, claim_id, subject)
        endings.report(conn, live, Result(exit_code=0), pilot=live.pilot_id, now=time.time())


def proc_of(claim: Any) -> int:
    return int(claim.job_id.split(".")[1])


def drain(store: Store, pilot_id: str) -> list[int]:
    """Procs in the order one pilot gets them, finishing each at once."""
    order = []
    while (claim := ask(store, pilot_id)) is not None:
        order.append(proc_of(claim))
        finish(store, claim.claim_id)
    return order


def test_best_priority_first_then_oldest_first(store: Store) -> None:
    priorities = [0, 5, 5, -1, 5, 0, -7, 5]
    submit(store, *(job(priority=p) for p in priorities))
    expected = sorted(range(len(priorities)), key=lambda proc: (-priorities[proc], proc))
    assert drain(store, register(store)) == expected


def test_jobs_that_do_not_fit_are_passed_over_at_every_priority(store: Store) -> None:
    submit(
        store,
        job(priority=9, request_cpus=4),  # never fits a 2-core pilot
        job(priority=9, request_memory_mb=8000),  # nor 4000 MiB
        job(priority=3, request_cpus=2),
        job(priority=3),
        job(priority=1, request_cpus=3),
    )
    pilot_id = register(store, cpus=2)
    first = ask(store, pilot_id, cpus=2)
    assert proc_of(first) == 2
    # The server counts the claimed cores even if the pilot says they are free.
    assert ask(store, pilot_id, cpus=2) is None
    finish(store, first.claim_id)
    second = ask(store, pilot_id, cpus=2)
    assert proc_of(second) == 3
    finish(store, second.claim_id)
    assert ask(store, pilot_id, cpus=2) is None


def test_a_match_deep_in_the_queue_is_found(store: Store) -> None:
    count = 203
    submit(store, *(job(attrs={"Wanted": "false"}) for _ in range(count - 1)))
    (wanted,) = submit(store, job(attrs={"Wanted": "true"}))
    claim = ask(store, register(store, start="TARGET.Wanted =?= true"))
    assert claim is not None
    with store.read() as conn:
        assert conn.execute(sa.select(jobs.c.state).where(jobs.c.id == wanted)).scalar() == (
            "RUNNING"
        )


def test_a_claim_and_its_report_are_recorded_as_events(store: Store) -> None:
    (job_id,) = submit(store, job())
    pilot_id = register(store)
    claim = ask(store, pilot_id)
    assert claim.request_cpus == 1 and claim.executable == "run.sh"
    finish(store, claim.claim_id)
    with store.read() as conn:
        row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one()
        events = conn.execute(
            sa.select(job_events).where(job_events.c.job_id == job_id).order_by(job_events.c.id)
        ).all()
    assert (row.state, row.claim_id, row.exit_code, row.attempts) == ("COMPLETED", None, 0, 1)
    assert [(e.from_state, e.to_state, e.trigger) for e in events] == [
        (None, "IDLE", "submit"),
        ("IDLE", "RUNNING", "claim"),
        ("RUNNING", "COMPLETED", "exit"),
    ]
    assert events[1].claim_id == events[2].claim_id == claim.claim_id
    assert events[1].pilot_id == events[2].pilot_id == pilot_id
    assert events[2].reason == "exited with code 0"


def test_a_report_on_an_ended_claim_changes_nothing(store: Store) -> None:
    (job_id,) = submit(store, job())
    pilot_id = register(store)
    claim = ask(store, pilot_id)
    finish(store, claim.claim_id)
    with pytest.raises(Conflict, match="no longer live"):
        finish(store, claim.claim_id)
    # A report whose claim no longer holds the job (checked by the guarded update).
    live = claims.LiveClaim(claim.claim_id, job_id, pilot_id)
    with pytest.raises(Conflict, match="no longer holds its job"), store.write() as conn:
        endings.report(conn, live, Result(exit_code=3), pilot=pilot_id, now=time.time())
    with store.read() as conn:
        assert conn.execute(sa.select(jobs.c.exit_code).where(jobs.c.id == job_id)).scalar() == 0
        count = sa.select(sa.func.count()).select_from(job_events)
        assert conn.execute(count.where(job_events.c.job_id == job_id)).scalar() == 3


def test_held_claim_refuses_unknown_claims_other_identities_and_ended_claims(
    store: Store,
) -> None:
    submit(store, job())
    claim = ask(store, register(store))
    with store.read() as conn:
        with pytest.raises(NotFound):
            held(conn, "c-nonesuch", "p")
        with pytest.raises(Denied, match="another identity"):
            held(conn, claim.claim_id, "someone-else")
        live, pilot = held(conn, claim.claim_id, "p")
    assert (live.claim_id, pilot.id, pilot.subject) == (claim.claim_id, live.pilot_id, "p")
    finish(store, claim.claim_id)
    with store.read() as conn, pytest.raises(Conflict):
        held(conn, claim.claim_id, "p")


def test_a_failure_holds_the_job_with_its_reason(store: Store) -> None:
    (job_id,) = submit(store, job())
    pilot_id = register(store)
    claim = ask(store, pilot_id)
    failed = Result.model_validate({"failure": {"reason": "no executable", "code": 11}})
    with store.write() as conn:
        live, _pilot = held(conn, claim.claim_id, "p")
        assert endings.report(conn, live, failed, pilot=pilot_id, now=time.time()).value == "HELD"
    with store.read() as conn:
        row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one()
    assert (row.state, row.hold_code, row.hold_reason, row.claim_id) == (
        "HELD",
        11,
        "no executable",
        None,
    )


def test_a_fair_share_snapshot_waits_for_a_claim_in_flight(pg_database: str) -> None:
    """A claim charges its submitter before its transaction commits. The fair-share
    snapshot taken meanwhile must not reset that charge (a group ran past its quota
    when it did): on PostgreSQL the snapshot waits for the claim's commit."""
    store = Store(pg_database)
    store.migrate()
    try:
        submit(store, job())
        pilot_id = register(store)
        matcher = _matcher(store)
        offered = Resources(cpus=1, memory_mb=4000, disk_mb=10000, gpus=0)
        ticked = threading.Event()

        def tick() -> None:
            with store.write() as conn:
                matcher.tick(conn, time.time())
            ticked.set()

        ticker = threading.Thread(target=tick)
        with store.write() as conn:  # the claim's transaction, held open
            pilot = registry.owned(conn, pilot_id, "p", SECRETS[pilot_id])
            got = claims.dispatch(
                conn,
                pilot,
                offered,
                3600,
                settings=SETTINGS,
                matcher=matcher,
                now=time.time(),
                is_postgres=True,
            ).claims
            assert len(got) == 1 and matcher.accountant.running(Submitter("alice")) == 1
            ticker.start()
            deadline = time.monotonic() + 120
            while not ticked.is_set() and not _waiting_on_a_lock(store):
                assert time.monotonic() < deadline, "the snapshot neither ran nor waited"
                ticked.wait(0.05)
        ticker.join(120)
        assert ticked.is_set()
        assert matcher.accountant.running(Submitter("alice")) == 1
    finally:
        _MATCHERS.pop(id(store), None)
        store.dispose()


def _waiting_on_a_lock(store: Store) -> bool:
    with store.read() as conn:
        waiting = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ).scalar_one()
    return bool(waiting)
