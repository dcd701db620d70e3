"""Claims a pilot does not hold: the answer that granted them was lost.

A claim is made on the server and answered to the pilot in the same request. When that
answer is lost (the server was killed after its commit, the connection was cut, the
agent's request timed out), the job is RUNNING under a claim nobody runs, and would stay
so for a whole lease. The agent's heartbeat therefore lists every claim it really holds
(``held``; docs/pilot-protocol.md, "Heartbeat"), and only when no request that could
bring it a claim is under way: then a live claim of that pilot which the list lacks can
only be one whose answer never arrived. :func:`free_unheld` gives its job back to IDLE
at once, not counting the attempt (the job never started), and ends the claim.

The claim ids a heartbeat lists are the pilot's word: a claim of another pilot named
there is not touched (the guarded updates below are keyed by this pilot's id).
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from pilotage.queue import history
from pilotage.queue.states import JobState, Trigger, transition
from pilotage.store.tables import claims, jobs

log = logging.getLogger("pilotage.queue")

#: The claim's end reason (claims.end_reason, at most 64 characters).
NOT_HELD = "not_held_by_pilot"

_RELEASE = transition(JobState.RUNNING, Trigger.RELEASED_BY_PILOT)


def free_unheld(
    conn: sa.Connection, pilot_id: str, held: set[str], *, now: float
) -> list[tuple[str, int]]:
    """End every live claim of ``pilot_id`` not in ``held``; their jobs go back to IDLE
    with the attempt the claim counted taken back. Returns the (claim, job) freed."""
    rows = conn.execute(
        sa.select(claims.c.id, claims.c.job_id).where(
            claims.c.pilot_id == pilot_id, claims.c.state == "active"
        )
    ).all()
    freed: list[tuple[str, int]] = []
    for row in rows:
        if row.id in held:
            continue
        if not history.end_claim(conn, row.id, reason=NOT_HELD, now=now):
            continue
        values: dict[str, Any] = {
            "pilot_id": None,
            "site": None,
            # The claim counted an attempt; the job never started, so it is taken back.
            "attempts": sa.case((jobs.c.attempts > 0, jobs.c.attempts - 1), else_=0),
        }
        history.apply(
            conn,
            row.job_id,
            _RELEASE,
            actor=f"pilot:{pilot_id}",
            now=now,
            values=values,
            reason=(
                f"claim {row.id} is not held by pilot {pilot_id} (the answer that granted "
                "it was lost); not counted as an attempt"
            ),
            expect_claim=row.id,
            pilot_id=pilot_id,
        )
        freed.append((row.id, row.job_id))
        log.info("claim %s not held by pilot %s; job id %s freed", row.id, pilot_id, row.job_id)
    return freed
