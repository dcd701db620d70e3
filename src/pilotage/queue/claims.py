"""Claims: giving a job to a slot, renewing its lease, taking its result, reaping it.

Invariant: a job is RUNNING under exactly one live claim; every change to a running job
is guarded by that claim's id, so a report from an older claim (a pilot that lost its
lease, then came back) changes nothing. This is what keeps a job from running twice.
"""

from __future__ import annotations

import json
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from pilotage.api.wire import Claim, Failure, Resources, Result, Revoked
from pilotage.collector import pilots as pilot_registry
from pilotage.config import ServerSettings
from pilotage.errors import Conflict, Denied, NotFound
from pilotage.queue import history, spool
from pilotage.queue.jobad import load_ad, symmetric_match
from pilotage.queue.states import HoldCode, JobState, Trigger, transition
from pilotage.store.tables import claims, jobs

#: How many idle jobs one request may examine before giving up (autoclusters lift this).
MAX_EXAMINED = 2000
PAGE = 64


class AdCache:
    """Parsed job ads by job id; ads do not change once submitted."""

    def __init__(self, size: int = 50_000) -> None:
        self._size = size
        self._ads: OrderedDict[int, Any] = OrderedDict()

    def get(self, job_id: int, text: str) -> Any:
        ad = self._ads.get(job_id)
        if ad is None:
            ad = load_ad(text)
            self._ads[job_id] = ad
            if len(self._ads) > self._size:
                self._ads.popitem(last=False)
        return ad


@dataclass(frozen=True)
class LiveClaim:
    """A claim row that is live and held by the asking pilot."""

    claim_id: str
    job_id: int
    pilot_id: str


def _candidates(conn: sa.Connection, free: Resources, after: tuple[int, int] | None) -> list[Any]:
    query = (
        sa.select(jobs.c.id, jobs.c.ad, jobs.c.priority)
        .where(
            jobs.c.state == JobState.IDLE.value,
            jobs.c.request_cpus <= free.cpus,
            jobs.c.request_memory_mb <= free.memory_mb,
            jobs.c.request_disk_mb <= free.disk_mb,
            jobs.c.request_gpus <= free.gpus,
        )
        .order_by(jobs.c.priority.desc(), jobs.c.id)
        .limit(PAGE)
    )
    if after is not None:
        prio, last_id = after
        query = query.where(
            sa.or_(jobs.c.priority < prio, sa.and_(jobs.c.priority == prio, jobs.c.id > last_id))
        )
    return list(conn.execute(query).all())


def _take(conn: sa.Connection, job_id: int, is_postgres: bool) -> bool:
    """Check that an idle job is still free to take; on PostgreSQL lock it, skipping a row
    another server is taking right now instead of waiting for it."""
    query = sa.select(jobs.c.id).where(jobs.c.id == job_id, jobs.c.state == JobState.IDLE.value)
    if is_postgres:
        query = query.with_for_update(skip_locked=True)
    return conn.execute(query).first() is not None


def dispatch(
    conn: sa.Connection,
    pilot: sa.Row[Any],
    offered: Resources,
    time_left_s: float,
    *,
    settings: ServerSettings,
    ads: AdCache,
    now: float,
    is_postgres: bool,
) -> Claim | None:
    """Pick the best idle job for the pilot's free resources and claim it atomically."""
    pilot_registry.require_active(pilot)
    if pilot.retire or now >= pilot.expires_at:
        return None
    known_free = pilot_registry.free_resources(conn, pilot)
    # Trust the smaller of what the pilot says and what the server counts.
    free = Resources(
        cpus=min(offered.cpus, known_free.cpus),
        memory_mb=min(offered.memory_mb, known_free.memory_mb),
        disk_mb=min(offered.disk_mb, known_free.disk_mb),
        gpus=min(offered.gpus, known_free.gpus),
    )
    if free.cpus < 1 or free.memory_mb < 1:
        return None
    slot = pilot_registry.offer_ad(pilot, free, min(time_left_s, pilot.expires_at - now))
    examined = 0
    after: tuple[int, int] | None = None
    while examined < MAX_EXAMINED:
        page = _candidates(conn, free, after)
        if not page:
            return None
        for row in page:
            examined += 1
            if symmetric_match(ads.get(row.id, row.ad), slot) and _take(conn, row.id, is_postgres):
                claim = _claim(conn, row.id, pilot, settings=settings, now=now)
                if claim is not None:
                    return claim
        after = (page[-1].priority, page[-1].id)
    return None


def _claim(
    conn: sa.Connection, job_id: int, pilot: sa.Row[Any], *, settings: ServerSettings, now: float
) -> Claim | None:
    claim_id = "c-" + secrets.token_urlsafe(18)
    won = history.apply(
        conn,
        job_id,
        transition(JobState.IDLE, Trigger.CLAIM),
        actor=f"pilot:{pilot.id}",
        now=now,
        values={
            "claim_id": claim_id,
            "pilot_id": pilot.id,
            "site": pilot.site,
            "attempts": jobs.c.attempts + 1,
        },
        claim_id=claim_id,
        pilot_id=pilot.id,
    )
    if not won:
        return None
    row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one()
    lease_end = now + settings.lease_s
    conn.execute(
        sa.insert(claims).values(
            id=claim_id,
            job_id=job_id,
            pilot_id=pilot.id,
            created_at=now,
            lease_expires_at=lease_end,
            state="active",
            request_cpus=row.request_cpus,
            request_memory_mb=row.request_memory_mb,
            request_disk_mb=row.request_disk_mb,
            request_gpus=row.request_gpus,
        )
    )
    spec = json.loads(row.spec)
    executable = spec["executable"]
    if spec.get("transfer_executable", True):
        executable = executable.rsplit("/", 1)[-1]
    return Claim(
        claim_id=claim_id,
        job_id=f"{row.cluster_id}.{row.proc_id}",
        lease_s=settings.lease_s,
        lease_expires_at=lease_end,
        owner=row.owner,
        executable=executable,
        arguments=spec["arguments"],
        environment=spec["environment"],
        input=spec["input"],
        output=spec["output"],
        error=spec["error"],
        transfer_output_files=spec["transfer_output_files"],
        request_cpus=row.request_cpus,
        request_memory_mb=row.request_memory_mb,
        request_disk_mb=row.request_disk_mb,
        request_gpus=row.request_gpus,
        has_input_sandbox=spec["input_sandbox"] is not None,
    )


def live_claim(conn: sa.Connection, claim_id: str, pilot_id: str) -> LiveClaim:
    """The claim if it is live and this pilot's: else NotFound, Denied or Conflict."""
    row = conn.execute(sa.select(claims).where(claims.c.id == claim_id)).first()
    if row is None:
        raise NotFound(f"claim {claim_id} does not exist")
    if row.pilot_id != pilot_id:
        raise Denied(f"claim {claim_id} is held by another pilot")
    if row.state != "active":
        raise Conflict(f"claim {claim_id} is no longer live ({row.end_reason})")
    return LiveClaim(row.id, row.job_id, row.pilot_id)


def heartbeat(
    conn: sa.Connection, pilot_id: str, claim_ids: list[str], *, lease_s: float, now: float
) -> tuple[dict[str, float], list[Revoked]]:
    """Renew the leases of the pilot's live claims among ``claim_ids``; list the others."""
    wanted = set(claim_ids)
    renewed: dict[str, float] = {}
    revoked: list[Revoked] = []
    if not wanted:
        return renewed, revoked
    lease_end = now + lease_s
    conn.execute(
        sa.update(claims)
        .where(claims.c.id.in_(wanted), claims.c.pilot_id == pilot_id, claims.c.state == "active")
        .values(lease_expires_at=lease_end)
    )
    rows = conn.execute(
        sa.select(claims.c.id, claims.c.state, claims.c.end_reason, claims.c.pilot_id).where(
            claims.c.id.in_(wanted)
        )
    ).all()
    seen = set()
    for row in rows:
        seen.add(row.id)
        if row.pilot_id != pilot_id:
            revoked.append(Revoked(claim_id=row.id, reason="held by another pilot"))
        elif row.state == "active":
            renewed[row.id] = lease_end
        else:
            revoked.append(Revoked(claim_id=row.id, reason=row.end_reason or "ended"))
    for claim_id in sorted(wanted - seen):
        revoked.append(Revoked(claim_id=claim_id, reason="unknown claim"))
    return renewed, revoked


def report(
    conn: sa.Connection, live: LiveClaim, result: Result, *, pilot: str, now: float
) -> JobState:
    """Record how a job ended; returns its new state."""
    if result.failure is not None:
        change, values = _failure(result.failure)
    else:
        change = transition(JobState.RUNNING, Trigger.EXIT)
        values = {"exit_code": result.exit_code, "exit_signal": result.signal}
        values["completed_at"] = now
    values.update({"wall_s": result.wall_s, "cpu_s": result.cpu_s})
    values["max_rss_kb"] = result.max_rss_kb
    reason = result.failure.reason if result.failure else _exit_text(result)
    won = history.apply(
        conn,
        live.job_id,
        change,
        actor=f"pilot:{pilot}",
        now=now,
        values=values,
        reason=reason,
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
        return f"killed by signal {result.signal}"
    return f"exited with code {result.exit_code}"


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


def job_of_claim(conn: sa.Connection, claim_id: str) -> sa.Row[Any]:
    """The job row a live claim holds."""
    return conn.execute(
        sa.select(jobs).where(jobs.c.claim_id == claim_id, jobs.c.state == JobState.RUNNING.value)
    ).one()


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
