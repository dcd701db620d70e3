"""Claims: giving a job to a slot, proving who holds it, renewing its lease.

Invariant: a job is RUNNING under exactly one live claim; every change to a running job
is guarded by that claim's id, so a report from an older claim (a pilot that lost its
lease, then came back) changes nothing. This is what keeps a job from running twice.
How a claim ends (a report, a release, its output) is :mod:`pilotage.queue.endings`.

The dispatch path runs for every job, so its statements are built once, below, with
bound parameters: building and cache-keying a SQLAlchemy statement costs several times
more than running it on SQLite. The claim (IDLE → RUNNING) is exactly
:func:`history.apply`'s guarded update plus event row, prebuilt.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from pilotage.api.wire import Claim, Resources, Revoked
from pilotage.collector import pilots as pilot_registry
from pilotage.config import ServerSettings
from pilotage.errors import Conflict, NotFound
from pilotage.matchmaking.service import MatchService
from pilotage.queue import claims_pg, gpus, history, vacate
from pilotage.queue.states import JobState, Trigger, transition
from pilotage.store.engine import note, noted
from pilotage.store.prepared import Prepared
from pilotage.store.tables import claims, job_events, jobs, pilots

_P = sa.bindparam
_IDLE = JobState.IDLE.value
_CLAIM = transition(JobState.IDLE, Trigger.CLAIM)


def _claim_job(job: Any) -> sa.Update:
    """history.apply's guarded update for a claim; it answers what the claim needs."""
    return (
        sa.update(jobs)
        .where(jobs.c.id == job, jobs.c.state == _CLAIM.from_state.value)
        .values(
            state=_CLAIM.to_state.value,
            entered_state_at=_P("at"),
            claim_id=_P("new_claim"),
            pilot_id=_P("by_pilot"),
            site=_P("at_site"),
            attempts=jobs.c.attempts + 1,
        )
        .returning(
            jobs.c.cluster_id,
            jobs.c.proc_id,
            jobs.c.owner,
            jobs.c.spec,
            jobs.c.request_cpus,
            jobs.c.request_memory_mb,
            jobs.c.request_disk_mb,
            jobs.c.request_gpus,
        )
    )


#: On SQLite the write lock already keeps every other writer out.
_CLAIM_JOB = Prepared(_claim_job(_P("job_id")))


def _locked_idle_job() -> Any:
    """On PostgreSQL the job is first locked, skipping one another server is taking right
    now rather than waiting for it (a locked job matches nothing: nothing is updated)."""
    return (
        sa.select(jobs.c.id)
        .where(jobs.c.id == _P("job_id"), jobs.c.state == _IDLE)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )


#: On PostgreSQL, the claim with its event and claim row in one statement (a round trip
#: instead of three: pilotage.queue.claims_pg).
_CLAIM_PG_ONE = Prepared(claims_pg.claim_statement(_claim_job(_locked_idle_job())))

_INSERT_EVENT = Prepared(
    sa.insert(job_events).returning(job_events.c.id),
    keys=[c.key for c in job_events.columns if c.key != "id"],
)
_INSERT_CLAIM = Prepared(sa.insert(claims), keys=[c.key for c in claims.columns])


#: A claim with its pilot's whole row: the pilot's columns keep their names.
_CLAIM_AND_PILOT = Prepared(
    sa.select(
        claims.c.id.label("claim_id"),
        claims.c.job_id,
        claims.c.state.label("claim_state"),
        claims.c.end_reason,
        pilots,
    )
    .join_from(claims, pilots, claims.c.pilot_id == pilots.c.id)
    .where(claims.c.id == _P("claim"))
)


@dataclass(frozen=True)
class LiveClaim:
    """A claim row that is live and held by the asking pilot."""

    claim_id: str
    job_id: int
    pilot_id: str


@dataclass(frozen=True)
class Dispatched:
    """What a request for work got: its claims, and the slot ad it offered when it got
    none though it could take work (it may wait for a job: the long-poll), else None."""

    claims: list[Claim]
    waiting: Any = None


def dispatch(
    conn: sa.Connection,
    pilot: sa.Row[Any],
    offered: Resources,
    time_left_s: float,
    *,
    settings: ServerSettings,
    matcher: MatchService,
    now: float,
    is_postgres: bool,
    max_claims: int = 1,
) -> Dispatched:
    """Pick the best idle jobs for the pilot's free resources and claim them atomically,
    up to ``max_claims``, each in what the ones before left free.

    The matchmaker orders the candidates (fair share, job priority, submission order;
    both sides' Requirements); the database decides: the first candidate still idle is
    claimed by a guarded update, and one found taken is dropped from the index.
    """
    pilot_registry.require_active(pilot)
    if pilot.retire or pilot.drain or now >= pilot.expires_at:
        return Dispatched([])
    known_free = pilot_registry.free_resources(conn, pilot)
    # Trust the smaller of what the pilot says and what the server counts.
    free = Resources.model_construct(
        cpus=min(offered.cpus, known_free.cpus),
        memory_mb=min(offered.memory_mb, known_free.memory_mb),
        disk_mb=min(offered.disk_mb, known_free.disk_mb),
        gpus=min(offered.gpus, known_free.gpus),
    )
    skip = vacate.excluded(pilot, now)  # jobs it gave back lately (usually none)
    # This transaction's own events (the results reported with this request) first:
    # the catch-up need not read them back.
    matcher.passed(noted(conn, history.NOT_IDLE_NOTE))
    matcher.sync(conn)
    got: list[Claim] = []
    slot = None
    while len(got) < max_claims and free.cpus >= 1 and free.memory_mb >= 1:
        slot = pilot_registry.offer_ad(pilot, free, min(time_left_s, pilot.expires_at - now))
        slot = vacate.offer_for(pilot, slot)  # a single-user pilot's owner, once fixed
        slot = gpus.offer(conn, pilot, slot)  # only its free GPU devices
        claim = _first_free(conn, pilot, slot, skip, settings, matcher, now, is_postgres)
        if claim is None:
            break
        got.append(claim)
        if vacate.is_single_user(slot) and getattr(pilot, "single_owner", None) is None:
            break  # its owner was fixed by this claim: the row read above does not say so
        free = Resources.model_construct(
            cpus=free.cpus - claim.request_cpus,
            memory_mb=free.memory_mb - claim.request_memory_mb,
            disk_mb=free.disk_mb - claim.request_disk_mb,
            gpus=free.gpus - claim.request_gpus,
        )
    return Dispatched(got, slot if not got else None)


def _first_free(
    conn: sa.Connection,
    pilot: sa.Row[Any],
    slot: Any,
    skip: dict[int, float],
    settings: ServerSettings,
    matcher: MatchService,
    now: float,
    pg: bool,
) -> Claim | None:
    """Claim the best candidate for ``slot`` that is still idle, if any."""
    for job_id in matcher.candidates(slot, now, 8 + len(skip)):
        if job_id in skip:
            continue
        claim = _claim(conn, job_id, pilot, settings=settings, now=now, pg=pg)
        if claim is None:
            matcher.taken(job_id)  # no longer idle: another server took it, or it was held
            continue
        matcher.claimed(job_id, claim.request_cpus, now, pilot=pilot.id)
        vacate.lock_owner(conn, pilot, slot, claim.owner)
        return claim
    return None


def event_row(
    job_id: int,
    change: Any,
    *,
    actor: str,
    now: float,
    reason: str | None,
    claim_id: str,
    pilot_id: str,
) -> dict[str, Any]:
    """The event row history.apply writes for ``change``."""
    return {
        "job_id": job_id,
        "at": now,
        "from_state": change.from_state.value,
        "to_state": change.to_state.value,
        "trigger": change.trigger.value,
        "actor": actor,
        "reason": reason,
        "claim_id": claim_id,
        "pilot_id": pilot_id,
    }


def _claim(
    conn: sa.Connection,
    job_id: int,
    pilot: sa.Row[Any],
    *,
    settings: ServerSettings,
    now: float,
    pg: bool,
) -> Claim | None:
    """Claim one job if it is still idle (the guarded update makes this atomic)."""
    claim_id = "c-" + secrets.token_urlsafe(18)
    lease_end = now + settings.lease_s
    params = {
        "job_id": job_id,
        "at": now,
        "new_claim": claim_id,
        "by_pilot": pilot.id,
        "at_site": pilot.site,
    }
    if pg:
        params.update(lease_end=lease_end, actor=f"pilot:{pilot.id}")
        row = _CLAIM_PG_ONE.first(conn, params)
        if row is None:
            return None  # taken meanwhile (by another server)
        note(conn, history.NOT_IDLE_NOTE, (int(row.event_id), job_id))
        return _claim_of(conn, row, claim_id, job_id, pilot, settings, lease_end)
    row = _CLAIM_JOB.first(conn, params)
    if row is None:
        return None
    insert_event(
        conn,
        event_row(
            job_id,
            _CLAIM,
            actor=f"pilot:{pilot.id}",
            now=now,
            reason=None,
            claim_id=claim_id,
            pilot_id=pilot.id,
        ),
    )
    _INSERT_CLAIM.rowcount(
        conn,
        {
            "id": claim_id,
            "job_id": job_id,
            "pilot_id": pilot.id,
            "created_at": now,
            "lease_expires_at": lease_end,
            "state": "active",
            "ended_at": None,
            "end_reason": None,
            "request_cpus": row.request_cpus,
            "request_memory_mb": row.request_memory_mb,
            "request_disk_mb": row.request_disk_mb,
            "request_gpus": row.request_gpus,
        },
    )
    return _claim_of(conn, row, claim_id, job_id, pilot, settings, lease_end)


def _claim_of(
    conn: sa.Connection,
    row: Any,
    claim_id: str,
    job_id: int,
    pilot: sa.Row[Any],
    settings: ServerSettings,
    lease_end: float,
) -> Claim:
    """The claim to answer, from the claimed job's columns."""
    assigned = gpus.assign(conn, job_id, pilot, row.request_gpus) if row.request_gpus else []
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
        assigned_gpus=assigned,
        url_inputs=spec.get("url_inputs") or [],
        container_image=spec.get("container_image"),
        stream_output=bool(spec.get("stream_output")),
    )


def held_claim(
    conn: sa.Connection, claim_id: str, subject: str, secret: str
) -> tuple[LiveClaim, sa.Row[Any]]:
    """A live claim held by a pilot of ``subject`` that proved its ``secret``, with that
    pilot's row, in one query.

    Raises NotFound (no such claim), Denied (another identity's pilot, or another pilot
    of the same identity) or Conflict (the claim has ended), in that order.
    """
    row = _CLAIM_AND_PILOT.first(conn, {"claim": claim_id})
    if row is None:
        raise NotFound(f"claim {claim_id} does not exist")
    pilot_registry.check_owner(row, subject)
    pilot_registry.check_secret(row, secret)
    if row.claim_state != "active":
        raise Conflict(f"claim {claim_id} is no longer live ({row.end_reason})")
    return LiveClaim(row.claim_id, row.job_id, row.id), row


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


def insert_event(conn: sa.Connection, event: dict[str, Any]) -> None:
    """Write the event of a job that is not IDLE after it (a claim, an exit); the
    matchmaker of this process is told its id once it commits, and need not read it
    back (:meth:`pilotage.matchmaking.service.MatchService.passed`)."""
    (event_id,) = _INSERT_EVENT.first(conn, event)
    note(conn, history.NOT_IDLE_NOTE, (int(event_id), event["job_id"]))


def job_of_claim(conn: sa.Connection, claim_id: str) -> sa.Row[Any]:
    """The job row a live claim holds."""
    return conn.execute(
        sa.select(jobs).where(jobs.c.claim_id == claim_id, jobs.c.state == JobState.RUNNING.value)
    ).one()
