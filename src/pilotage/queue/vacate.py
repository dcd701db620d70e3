"""What a pilot may say of a claim besides its result: give it back, or that it ran its job
without the switch; and what the dispatch path must then respect for that pilot.

- :func:`vacate`: a live claim given back unfinished (``POST .../vacate``). The job goes
  back to IDLE now rather than when the lease lapses; a node's fault (a broken switch, a
  work path the owner cannot search) is not counted against the job's attempts, so
  a bad node never holds a good job (issue 9, "Work path and node faults").
- Exclusions: a pilot that gave a job back with ``exclude_s`` is not given that job
  again before then. They live in the pilot's own row (a small JSON object), which the
  dispatch path has read anyway: pilots with none pay nothing.
- Single-user pilots (``PilotageSingleUser = true`` in the slot ad): the server adds
  ``TARGET.Owner == "<owner>"`` to the slot's Requirements once the pilot's first claim
  has fixed its owner (:func:`offer_for`), and records that owner (:func:`lock_owner`).
- :func:`report_transient`: a claim given back after the switch kept answering 202
  (``refusal: "transient"``) is reported against the pilot's entry, for the frontend.
- :func:`note_without_switch`: the job ran as the pilot account after the switch failed
  with an internal error at a site that allows it; its ad says so
  (``PilotageRanWithoutSwitch = true``) and its history gives the reason.

Invariant (as in :mod:`pilotage.queue.claims`): every change is guarded by the claim id,
so a late vacate or note, once the claim has ended, changes nothing.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from pilotage.api.wire import Vacate
from pilotage.collector.pilots import token_entry
from pilotage.errors import Conflict
from pilotage.frontend.health import TRANSIENT_REASON
from pilotage.queue import history
from pilotage.queue.jobad import load_ad, parse_expr
from pilotage.queue.states import HoldCode, JobState, Trigger, transition
from pilotage.store.tables import jobs, pilots, validation_reports

#: The job ad attribute of a job that ran as the pilot account (docs/pilot.md).
RAN_WITHOUT_SWITCH = "PilotageRanWithoutSwitch"
#: At most this many exclusions are kept per pilot (the soonest to end are dropped).
MAX_EXCLUSIONS = 256


def vacate(
    conn: sa.Connection,
    claim_id: str,
    job_id: int,
    pilot: sa.Row[Any],
    body: Vacate,
    *,
    max_attempts: int,
    now: float,
) -> JobState:
    """Give a live claim's job back: IDLE now (HELD if a counted attempt was its last).

    The caller has checked that ``pilot`` holds the live claim and proved its secret.
    Raises Conflict when the claim no longer holds the job (a late vacate).
    """
    why = f"given back by pilot {pilot.id}" + (" (node fault)" if body.node_fault else "")
    why += f": {body.reason}"
    values: dict[str, Any] = {"pilot_id": None, "site": None}
    change = transition(JobState.RUNNING, Trigger.RELEASED_BY_PILOT)
    if body.node_fault:
        # The claim counted an attempt; the node's fault takes it back.
        values["attempts"] = sa.case((jobs.c.attempts > 0, jobs.c.attempts - 1), else_=0)
    else:
        attempts = conn.execute(sa.select(jobs.c.attempts).where(jobs.c.id == job_id)).scalar()
        if attempts is not None and attempts >= max_attempts:
            change = transition(JobState.RUNNING, Trigger.TOO_MANY_ATTEMPTS)
            why = f"started and given back {attempts} times (last: {body.reason}); release it"
            values = {"hold_reason": why, "hold_code": int(HoldCode.TOO_MANY_ATTEMPTS)}
    won = history.apply(
        conn,
        job_id,
        change,
        actor=f"pilot:{pilot.id}",
        now=now,
        values=values,
        reason=why,
        expect_claim=claim_id,
        pilot_id=pilot.id,
    )
    if not won:
        raise Conflict(f"claim {claim_id} no longer holds its job; nothing was given back")
    history.end_claim(conn, claim_id, reason="vacated", now=now)
    if body.exclude_s > 0:
        _exclude(conn, pilot, job_id, now + body.exclude_s, now)
    to_state: JobState = change.to_state
    return to_state


def _exclude(
    conn: sa.Connection, pilot: sa.Row[Any], job_id: int, until: float, now: float
) -> None:
    kept = {j: t for j, t in excluded(pilot, now).items() if j != job_id}
    kept[job_id] = until
    newest = sorted(kept.items(), key=lambda item: item[1])[-MAX_EXCLUSIONS:]
    text = json.dumps({str(j): round(t, 3) for j, t in newest})
    conn.execute(sa.update(pilots).where(pilots.c.id == pilot.id).values(exclusions=text))


def excluded(pilot: sa.Row[Any], now: float) -> dict[int, float]:
    """The jobs ``pilot`` must not be given now, with when each exclusion ends."""
    text = getattr(pilot, "exclusions", None)
    if not text:
        return {}
    return {int(j): float(t) for j, t in json.loads(text).items() if float(t) > now}


def is_single_user(slot: Any) -> bool:
    """Whether the pilot said it is single-user (``PilotageSingleUser`` true in its ad)."""
    return "PilotageSingleUser" in slot and slot.eval("PilotageSingleUser") is True


def offer_for(pilot: sa.Row[Any], slot: Any) -> Any:
    """The slot ad with the single-user clause, once the pilot's owner is fixed."""
    owner = getattr(pilot, "single_owner", None)
    if owner is None or not is_single_user(slot):
        return slot
    # The owner is a stored job owner (a user name), written as a ClassAd string.
    start = slot.lookup("Requirements")
    slot["Requirements"] = parse_expr(
        f"({start}) && TARGET.Owner == {json.dumps(owner)}", "the single-user clause"
    )
    return slot


def lock_owner(conn: sa.Connection, pilot: sa.Row[Any], slot: Any, owner: str) -> None:
    """Fix a single-user pilot's owner at its first claim (a no-op afterwards)."""
    if getattr(pilot, "single_owner", None) is not None or not is_single_user(slot):
        return
    conn.execute(
        sa.update(pilots)
        .where(pilots.c.id == pilot.id, pilots.c.single_owner.is_(None))
        .values(single_owner=owner)
    )


def note_without_switch(conn: sa.Connection, claim_id: str, job_id: int, why: str) -> None:
    """Mark the job's ad: it ran as the pilot account, not under its owner's identity."""
    row = conn.execute(
        sa.select(jobs.c.ad).where(jobs.c.id == job_id, jobs.c.claim_id == claim_id)
    ).first()
    if row is None:
        raise Conflict(f"claim {claim_id} no longer holds its job; the report is ignored")
    ad = load_ad(row.ad)
    ad[RAN_WITHOUT_SWITCH] = True
    ad["PilotageWithoutSwitchReason"] = why
    conn.execute(
        sa.update(jobs).where(jobs.c.id == job_id, jobs.c.claim_id == claim_id).values(ad=str(ad))
    )


def without_switch_text(why: str) -> str:
    """The words the job's history adds to the event of a job run without the switch."""
    return f"ran as the pilot account without identity switching ({why})"


def report_transient(conn: sa.Connection, pilot: sa.Row[Any], message: str, now: float) -> bool:
    """Record, for the pilot's entry, that its switch kept answering 202 (issue 10).

    The frontend reads these reports (``GET /api/v1/validation-reports``) and stops
    asking for pilots at an entry that has many of them lately. The entry is the one the
    pilot's token is bound to, never the pilot's word; a pilot of no entry (started by
    hand) reports nothing. Returns whether a report was recorded.
    """
    entry = token_entry(pilot.subject)
    if entry is None:
        return False
    conn.execute(
        sa.insert(validation_reports).values(
            at=now,
            reporter=pilot.subject,
            entry=entry,
            pilot=pilot.id,
            ok=False,
            reason=TRANSIENT_REASON,
            message=message[:4000],
            details=json.dumps({"site": pilot.site}),
        )
    )
    return True
