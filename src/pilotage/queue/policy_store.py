"""Applying the job's own policy (:mod:`pilotage.queue.policy`) to the queue.

Two call sites: the server's sweep calls :func:`sweep_once` every reap interval for the
``periodic_*`` expressions, and the exit path (``endings.report``) calls :func:`on_exit`
before recording an ordinary completion, for ``on_exit_*`` and ``max_retries``. Every
change goes through the transition table and leaves an event with actor ``policy``.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import sqlalchemy as sa

from pilotage.queue import history, policy
from pilotage.queue.policy import Action, Decision
from pilotage.queue.states import JobState, Trigger, transition
from pilotage.store.engine import Store
from pilotage.store.tables import PERIODIC, jobs

log = logging.getLogger("pilotage.policy")
ACTOR = "policy"
_TRIGGERS = {Action.HOLD: Trigger.HOLD, Action.RELEASE: Trigger.RELEASE}
_TRIGGERS[Action.REMOVE] = Trigger.REMOVE
_QUEUED = (JobState.IDLE.value, JobState.RUNNING.value, JobState.HELD.value)


class ExitReport(Protocol):
    """What the exit path knows of how a job ended (the pilot's result)."""

    exit_code: int | None
    signal: int | None
    wall_s: float
    cpu_s: float
    max_rss_kb: int


def sweep_once(store: Store, now: float) -> int:
    """Evaluate the periodic expressions of every queued job that has one; returns how
    many jobs changed state."""
    with store.read() as conn:
        # The condition as the partial index states it, so that only those jobs are read.
        periodic = sa.text(PERIODIC)
        rows = conn.execute(sa.select(jobs).where(jobs.c.state.in_(_QUEUED), periodic)).all()
    changed = 0
    for row in rows:
        decision = policy.periodic(row.ad, policy.runtime_attrs(row, now))
        if decision is None:
            continue
        with store.write() as conn:
            changed += _apply(conn, row, decision, now)
    return changed


def _apply(conn: sa.Connection, row: Any, decision: Decision, now: float) -> int:
    current = JobState(row.state)
    change = transition(current, _TRIGGERS[decision.action])
    values: dict[str, Any] = {}
    if decision.action is Action.HOLD:
        values = {"hold_reason": decision.reason, "hold_code": decision.code}
        values["ad"] = policy.with_attrs(row.ad, {"HoldReasonSubCode": decision.subcode})
    elif decision.action is Action.RELEASE:
        values = {"hold_reason": None, "hold_code": None, "attempts": 0}
    else:
        values = {"completed_at": now}
    won = history.apply(
        conn,
        row.id,
        change,
        actor=ACTOR,
        now=now,
        values=values,
        reason=decision.reason,
        expect_claim=row.claim_id if current is JobState.RUNNING else None,
    )
    if won and current is JobState.RUNNING and row.claim_id:
        history.end_claim(conn, row.claim_id, reason=decision.reason, now=now)
    if won:
        log.info(
            "job %s.%s: %s by policy: %s",
            row.cluster_id,
            row.proc_id,
            decision.action.value,
            decision.reason,
        )
    return int(won)


def on_exit(
    conn: sa.Connection,
    job_id: int,
    claim_id: str,
    result: ExitReport,
    *,
    pilot: str,
    now: float,
) -> JobState | None:
    """Hold or requeue a job that just exited, when its policy says so; ``None`` leaves
    the ordinary completion to the caller."""
    row = conn.execute(
        sa.select(jobs.c.ad, jobs.c.state, jobs.c.entered_state_at, jobs.c.attempts)
        .add_columns(jobs.c.wall_s, jobs.c.hold_code, jobs.c.hold_reason)
        .where(jobs.c.id == job_id)
    ).first()
    if row is None or "OnExit" not in row.ad:
        return None
    completions = _completions(row.ad) + 1
    attrs = policy.runtime_attrs(row, now)
    attrs.update(
        NumJobCompletions=completions,
        ExitBySignal=result.signal is not None,
        ExitCode=result.exit_code if result.exit_code is not None else 0,
        ExitSignal=result.signal or 0,
    )
    decision = policy.on_exit(row.ad, attrs)
    if decision is None:
        return None
    values: dict[str, Any] = {
        "exit_code": result.exit_code,
        "exit_signal": result.signal,
        "wall_s": result.wall_s,
        "cpu_s": result.cpu_s,
        "max_rss_kb": result.max_rss_kb,
    }
    kept = {"NumJobCompletions": completions}
    if decision.action is Action.HOLD:
        change = transition(JobState.RUNNING, Trigger.HOLD)
        values.update(hold_reason=decision.reason, hold_code=decision.code)
        kept["HoldReasonSubCode"] = decision.subcode
    else:
        change = transition(JobState.RUNNING, Trigger.RETRY)
        values.update(pilot_id=None, site=None)
    values["ad"] = policy.with_attrs(row.ad, kept)
    won = history.apply(
        conn,
        job_id,
        change,
        actor=ACTOR,
        now=now,
        values=values,
        # A hold's reason is its HoldReason, word for word; a rerun says what it ran after.
        reason=values.get("hold_reason") or f"{_exit_text(result)}; {decision.reason}",
        expect_claim=claim_id,
        pilot_id=pilot,
    )
    if not won:
        return None
    history.end_claim(conn, claim_id, reason=change.trigger.value, now=now)
    to_state: JobState = change.to_state
    return to_state


def _completions(ad_text: str) -> int:
    return policy.whole_number(ad_text, "NumJobCompletions")


def _exit_text(result: ExitReport) -> str:
    if result.signal is not None:
        return f"killed by signal {result.signal}"
    return f"exited with code {result.exit_code}"
