"""A claim and an exit each in one statement on PostgreSQL.

On SQLite a statement costs a function call; on PostgreSQL a round trip, and the
database server's work on both sides of it. The two transitions of every job's dispatch
path are each a guarded update of the job, its event, and its claim's row
(pilotage.queue.claims, pilotage.queue.endings); on PostgreSQL each is sent as one statement whose
data-modifying ``WITH`` parts do the three (each runs once, to completion, whether the
final ``SELECT`` reads it or not). The event and the claim's row are written only for
the row the guarded update changed, so the outcome is exactly that of the three
statements: the ``SELECT`` answers a row (with the new event's id) when the update won,
none otherwise.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from pilotage.queue.states import JobState, Trigger, transition
from pilotage.store.tables import claims, job_events, jobs

_CLAIM = transition(JobState.IDLE, Trigger.CLAIM)
_EXIT = transition(JobState.RUNNING, Trigger.EXIT)
_EVENT_COLUMNS = [
    "job_id", "at", "from_state", "to_state", "trigger", "actor", "reason", "claim_id",
    "pilot_id",
]  # fmt: skip


def _p(name: str, type_: Any) -> Any:
    """A bound parameter with its type (PostgreSQL casts it: a ``SELECT``'s columns have
    no target column to take a type from)."""
    return sa.bindparam(name, type_=type_)


def _event(job: Any, change: Any, reason: Any, claim_id: Any, pilot_id: Any) -> Any:
    """The event of ``change`` for the row the guarded update ``job`` answered, if any:
    a ``WITH`` part answering its id."""
    values = sa.select(
        job.c.id,
        _p("at", sa.Float),
        sa.literal(change.from_state.value, sa.String),
        sa.literal(change.to_state.value, sa.String),
        sa.literal(change.trigger.value, sa.String),
        _p("actor", sa.String),
        reason,
        claim_id,
        pilot_id,
    ).select_from(job)
    insert = sa.insert(job_events).from_select(_EVENT_COLUMNS, values)
    return insert.returning(job_events.c.id).cte("event")


def claim_statement(claim_job: sa.Update) -> sa.Select[Any]:
    """``claim_job`` (the claim's guarded update, answering the job's columns), its event
    and the claim's row (``new_claim``, ``by_pilot``, ``at``, ``lease_end``): the job's
    columns and ``event_id``, or no row."""
    job = claim_job.returning(jobs.c.id).cte("claimed")
    new_claim, by_pilot = _p("new_claim", sa.String), _p("by_pilot", sa.String)
    event = _event(job, _CLAIM, sa.null(), new_claim, by_pilot)
    row = sa.select(
        new_claim,
        job.c.id,
        by_pilot,
        _p("at", sa.Float),
        _p("lease_end", sa.Float),
        sa.literal("active", sa.String),
        sa.null(),
        sa.null(),
        job.c.request_cpus,
        job.c.request_memory_mb,
        job.c.request_disk_mb,
        job.c.request_gpus,
    ).select_from(job)
    claim = sa.insert(claims).from_select([c.key for c in claims.columns], row).cte("claim")
    return (
        sa.select(*[c for c in job.c if c.key != "id"], event.c.id.label("event_id"))
        .select_from(job)
        .join(event, sa.true())
        .add_cte(claim)
    )


def exit_statement(exit_job: sa.Update) -> sa.Select[Any]:
    """``exit_job`` (the exit's guarded update), its event (``actor``, ``reason``,
    ``held_by``, ``pilot``) and the end of its claim: ``event_id``, or no row."""
    job = exit_job.returning(jobs.c.id).cte("exited")
    held_by = _p("held_by", sa.String)
    event = _event(job, _EXIT, _p("reason", sa.Text), held_by, _p("pilot", sa.String))
    end = (
        sa.update(claims)
        .where(claims.c.id == held_by, claims.c.state == "active")
        .where(sa.exists(sa.select(job.c.id)))
        .values(state="ended", ended_at=_p("at", sa.Float), end_reason=_EXIT.trigger.value)
        .cte("ended")
    )
    return sa.select(event.c.id.label("event_id")).add_cte(end)
