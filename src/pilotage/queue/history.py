"""Recording state changes: every job transition is a guarded update plus an event row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from pilotage.queue.states import JobState, Transition
from pilotage.store.engine import note
from pilotage.store.tables import claims, job_events, jobs

#: The note (:func:`pilotage.store.engine.note`) of a transaction that made jobs IDLE:
#: requests for work held open in this process look again once it commits.
IDLE_NOTE = "jobs-idle"
#: The note of an event after which its job is not IDLE, ``(event id, job id)``: the
#: matchmaker of this process takes it in without reading it back.
NOT_IDLE_NOTE = "jobs-not-idle"


@dataclass(frozen=True)
class Actor:
    """Who asks for a change: a user (by name), an admin, a pilot, or the server itself."""

    name: str
    admin: bool = False


SERVER = Actor("server", admin=True)


def apply(
    conn: sa.Connection,
    job_id: int,
    change: Transition,
    *,
    actor: str,
    now: float,
    values: dict[str, Any] | None = None,
    reason: str | None = None,
    claim_id: str | None = None,
    pilot_id: str | None = None,
    expect_claim: str | None = None,
) -> bool:
    """Move one job along ``change`` if it is still in ``change.from_state``.

    The update is guarded by the current state (and, with ``expect_claim``, by the claim
    the caller believes the job is under), so of two racing writers exactly one wins.
    Returns whether this caller won; the loser changes nothing.
    """
    guard = sa.and_(jobs.c.id == job_id, jobs.c.state == change.from_state.value)
    if expect_claim is not None:
        guard = sa.and_(guard, jobs.c.claim_id == expect_claim)
    row_values: dict[str, Any] = {"state": change.to_state.value, "entered_state_at": now}
    if change.from_state is JobState.RUNNING:
        # Invariant: claim_id is set exactly while RUNNING.
        row_values["claim_id"] = None
    row_values.update(values or {})
    result = conn.execute(sa.update(jobs).where(guard).values(**row_values))
    if result.rowcount != 1:
        return False
    conn.execute(
        sa.insert(job_events).values(
            job_id=job_id,
            at=now,
            from_state=change.from_state.value,
            to_state=change.to_state.value,
            trigger=change.trigger.value,
            actor=actor,
            reason=reason,
            claim_id=claim_id or expect_claim,
            pilot_id=pilot_id,
        )
    )
    if change.to_state is JobState.IDLE:
        note(conn, IDLE_NOTE, 1)
    return True


def end_claim(conn: sa.Connection, claim_id: str, *, reason: str, now: float) -> bool:
    """Mark a live claim ended; returns whether it was live."""
    result = conn.execute(
        sa.update(claims)
        .where(claims.c.id == claim_id, claims.c.state == "active")
        .values(state="ended", ended_at=now, end_reason=reason)
    )
    return result.rowcount == 1
