"""How a claim ends: the pilot's report of its job's exit or failure, a release when the
job did not finish (the lease ran out, the pilot left or was removed), and the output
sandbox attached before the report.

Every change is guarded by the claim's id, as in :mod:`pilotage.queue.claims`: a report
or a release from a claim that no longer holds its job changes nothing. The usual exit
(RUNNING → COMPLETED, no ``on_exit_*`` policy) is :func:`history.apply`'s guarded update
plus event row, prebuilt; a single statement on PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from pilotage.api.wire import Failure, Result
from pilotage.errors import Conflict
from pilotage.queue import claims_pg, history, policy_store, spool, vacate
from pilotage.queue.claims import LiveClaim, event_row, insert_event
from pilotage.queue.states import HoldCode, JobState, Trigger, transition
from pilotage.store.engine import note
from pilotage.store.prepared import Prepared
from pilotage.store.tables import claims, jobs

_P = sa.bindparam
_EXIT = transition(JobState.RUNNING, Trigger.EXIT)


#: history.apply's guarded update for an exit. Invariant: claim_id is set exactly while
#: RUNNING, so it is cleared here.
def _exit_job(*policy: Any) -> sa.Update:
    return (
        sa.update(jobs)
        .where(
            jobs.c.id == _P("job_id"),
            jobs.c.state == _EXIT.from_state.value,
            jobs.c.claim_id == _P("held_by"),
            *policy,
        )
        .values(
            state=_EXIT.to_state.value,
            entered_state_at=_P("at"),
            claim_id=None,
            exit_code=_P("code"),
            exit_signal=_P("sig"),
            completed_at=_P("at"),
            wall_s=_P("wall"),
            cpu_s=_P("cpu"),
            max_rss_kb=_P("rss"),
        )
    )


_EXIT_JOB = Prepared(_exit_job())


#: The same for a job whose ad has no ``on_exit_*`` policy, the usual case: its policy
#: (pilotage.queue.policy_store.on_exit, which reads the ad) need not be looked at.
_NO_ON_EXIT = jobs.c.ad.not_like("%OnExit%")


_EXIT_PLAIN_JOB = Prepared(_exit_job(_NO_ON_EXIT))


_EXIT_PLAIN_PG_ONE = Prepared(claims_pg.exit_statement(_exit_job(_NO_ON_EXIT)))


#: history.end_claim, prebuilt.
_END_CLAIM = Prepared(
    sa.update(claims)
    .where(claims.c.id == _P("claim"), claims.c.state == "active")
    .values(state="ended", ended_at=_P("at"), end_reason=_P("why"))
)


def report(
    conn: sa.Connection,
    live: LiveClaim,
    result: Result,
    *,
    pilot: str,
    now: float,
    pg: bool = False,
) -> JobState:
    """Record how a job ended; returns its new state. ``pg``: the database is
    PostgreSQL (the usual exit goes in one statement there)."""
    if result.without_switch is not None:
        vacate.note_without_switch(conn, live.claim_id, live.job_id, result.without_switch)
    if result.failure is not None:
        return _report_failure(conn, live, result, result.failure, pilot=pilot, now=now)
    values = {
        "job_id": live.job_id,
        "held_by": live.claim_id,
        "at": now,
        "code": result.exit_code,
        "sig": result.signal,
        "wall": result.wall_s,
        "cpu": result.cpu_s,
        "rss": result.max_rss_kb,
    }
    if pg:
        values.update(actor=f"pilot:{pilot}", reason=_exit_text(result), pilot=pilot)
        row = _EXIT_PLAIN_PG_ONE.first(conn, values)
        if row is not None:
            note(conn, history.NOT_IDLE_NOTE, (int(row.event_id), live.job_id))
            return _EXIT.to_state
    if _EXIT_PLAIN_JOB.rowcount(conn, values) != 1:
        # The job's own on_exit_* / max_retries may hold it or run it again instead.
        decided = policy_store.on_exit(
            conn, live.job_id, live.claim_id, result, pilot=pilot, now=now
        )
        if decided is not None:
            return decided
        if _EXIT_JOB.rowcount(conn, values) != 1:
            raise Conflict(f"claim {live.claim_id} no longer holds its job; the report is ignored")
    event = event_row(
        live.job_id,
        _EXIT,
        actor=f"pilot:{pilot}",
        now=now,
        reason=_exit_text(result),
        claim_id=live.claim_id,
        pilot_id=pilot,
    )
    insert_event(conn, event)
    _END_CLAIM.rowcount(conn, {"claim": live.claim_id, "at": now, "why": _EXIT.trigger.value})
    return _EXIT.to_state


def _report_failure(
    conn: sa.Connection,
    live: LiveClaim,
    result: Result,
    failure: Failure,
    *,
    pilot: str,
    now: float,
) -> JobState:
    change, values = _failure(failure)
    values.update({"wall_s": result.wall_s, "cpu_s": result.cpu_s})
    values["max_rss_kb"] = result.max_rss_kb
    won = history.apply(
        conn,
        live.job_id,
        change,
        actor=f"pilot:{pilot}",
        now=now,
        values=values,
        reason=failure.reason,
        expect_claim=live.claim_id,
        pilot_id=pilot,
    )
    if not won:
        raise Conflict(f"claim {live.claim_id} no longer holds its job; the report is ignored")
    history.end_claim(conn, live.claim_id, reason=change.trigger.value, now=now)
    to_state: JobState = change.to_state
    return to_state


def _failure(failure: Failure) -> tuple[Any, dict[str, Any]]:
    change = transition(JobState.RUNNING, Trigger.FAILURE)
    return change, {"hold_reason": failure.reason, "hold_code": failure.code}


def _exit_text(result: Result) -> str:
    if result.signal is not None:
        text = f"killed by signal {result.signal}"
    else:
        text = f"exited with code {result.exit_code}"
    if result.without_switch is not None:
        text += "; " + vacate.without_switch_text(result.without_switch)
    return text


def release_claim(
    conn: sa.Connection,
    claim_id: str,
    job_id: int,
    *,
    trigger: Trigger,
    reason: str,
    max_attempts: int,
    now: float,
) -> None:
    """End a claim whose job did not finish (lease expired, pilot left): the job goes back
    to IDLE, or is held when it has been started and lost too often."""
    if not history.end_claim(conn, claim_id, reason=trigger.value, now=now):
        return
    attempts = conn.execute(sa.select(jobs.c.attempts).where(jobs.c.id == job_id)).scalar()
    if attempts is not None and attempts >= max_attempts:
        change = transition(JobState.RUNNING, Trigger.TOO_MANY_ATTEMPTS)
        why = f"started and lost {attempts} times (last: {reason}); release it to try again"
        values = {"hold_reason": why, "hold_code": int(HoldCode.TOO_MANY_ATTEMPTS)}
    else:
        change = transition(JobState.RUNNING, trigger)
        why, values = reason, {"pilot_id": None, "site": None}
    history.apply(
        conn,
        job_id,
        change,
        actor="server",
        now=now,
        values=values,
        reason=why,
        expect_claim=claim_id,
    )


def expired_claims(conn: sa.Connection, now: float) -> list[tuple[str, int]]:
    """Live claims whose lease has run out."""
    rows = conn.execute(
        sa.select(claims.c.id, claims.c.job_id)
        .where(claims.c.state == "active", claims.c.lease_expires_at < now)
        .limit(1000)
    ).all()
    return [(r.id, r.job_id) for r in rows]


def pilot_claims(conn: sa.Connection, pilot_id: str) -> list[tuple[str, int]]:
    """The live claims of one pilot."""
    rows = conn.execute(
        sa.select(claims.c.id, claims.c.job_id).where(
            claims.c.pilot_id == pilot_id, claims.c.state == "active"
        )
    ).all()
    return [(r.id, r.job_id) for r in rows]


def attach_output(
    conn: sa.Connection, live: LiveClaim, owner: str, digest: str, size: int, *, now: float
) -> None:
    """Record the output sandbox of a live claim's job (readable by the job's owner)."""
    spool.remember(conn, digest, size, owner, now)
    result = conn.execute(
        sa.update(jobs)
        .where(jobs.c.id == live.job_id, jobs.c.claim_id == live.claim_id)
        .values(output_sandbox=digest)
    )
    if result.rowcount != 1:
        raise Conflict(f"claim {live.claim_id} no longer holds its job; the output is ignored")
