"""The pilot API (docs/pilot-protocol.md): register, ask for work, renew, report, leave.

Every call needs the pilot role, and a pilot may act only on itself and its own claims.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse

from pilotage.api.auth import Principal, require
from pilotage.api.context import ServerContext
from pilotage.api.users import Ctx, context
from pilotage.api.wire import (
    Heartbeat,
    HeartbeatAnswer,
    PilotExit,
    PilotRegistration,
    Registered,
    Result,
    WorkAnswer,
    WorkRequest,
)
from pilotage.collector import pilots as registry
from pilotage.credentials.tokens import Role
from pilotage.errors import NotFound
from pilotage.queue import claims
from pilotage.queue.states import Trigger
from pilotage.store.tables import claims as claim_table

router = APIRouter(prefix="/pilot/v1")


def pilot(request: Request) -> Principal:
    """The caller, who must hold the pilot role."""
    return require(context(request).authenticator.principal(request), Role.PILOT)


Pilot = Annotated[Principal, Depends(pilot)]


@router.post("/pilots", status_code=201)
def register(body: PilotRegistration, ctx: Ctx, who: Pilot) -> Registered:
    with ctx.store.write() as conn:
        pilot_id = registry.register(conn, who.name, body, ctx.clock())
    s = ctx.settings.server
    return Registered(
        pilot_id=pilot_id,
        lease_s=s.lease_s,
        heartbeat_s=s.heartbeat_s,
        idle_timeout_s=s.idle_timeout_s,
        max_sandbox_bytes=ctx.spool.max_bytes,
    )


def _work(ctx: ServerContext, pilot_id: str, who: Principal, req: WorkRequest) -> WorkAnswer:
    now = ctx.clock()
    with ctx.store.write() as conn:
        row = registry.owned(conn, pilot_id, who.name)
        registry.touch(conn, pilot_id, now)
        claim = claims.dispatch(
            conn,
            row,
            req.free,
            req.time_left_s,
            settings=ctx.settings.server,
            ads=ctx.ads,
            now=now,
            is_postgres=ctx.is_postgres,
        )
    return WorkAnswer(
        claim=claim, retry_after_s=ctx.settings.server.retry_after_s, retire=row.retire
    )


@router.post("/pilots/{pilot_id}/claims")
def ask_for_work(pilot_id: str, body: WorkRequest, ctx: Ctx, who: Pilot) -> WorkAnswer:
    return _work(ctx, pilot_id, who, body)


@router.post("/pilots/{pilot_id}/heartbeat")
def heartbeat(pilot_id: str, body: Heartbeat, ctx: Ctx, who: Pilot) -> HeartbeatAnswer:
    now = ctx.clock()
    with ctx.store.write() as conn:
        row = registry.owned(conn, pilot_id, who.name)
        registry.require_active(row)
        registry.touch(conn, pilot_id, now)
        renewed, revoked = claims.heartbeat(
            conn, pilot_id, body.claims, lease_s=ctx.settings.server.lease_s, now=now
        )
    return HeartbeatAnswer(renewed=renewed, revoked=revoked, retire=row.retire)


@router.get("/claims/{claim_id}/input")
def claim_input(claim_id: str, ctx: Ctx, who: Pilot) -> StreamingResponse:
    """The input sandbox of the job a live claim holds."""
    with ctx.store.read() as conn:
        live = claims.live_claim(conn, claim_id, _pilot_of(conn, claim_id, who))
        job = claims.job_of_claim(conn, live.claim_id)
    digest = json.loads(job.spec)["input_sandbox"]
    if digest is None:
        raise NotFound(f"job {job.cluster_id}.{job.proc_id} has no input sandbox")
    handle = ctx.spool.open(digest)

    def chunks() -> Iterator[bytes]:
        with handle:
            while block := handle.read(256 * 1024):
                yield block

    return StreamingResponse(chunks(), media_type="application/x-tar")


@router.put("/claims/{claim_id}/output", status_code=204)
async def claim_output(claim_id: str, request: Request, ctx: Ctx, who: Pilot) -> Response:
    """Keep the output sandbox of a live claim's job."""
    with ctx.store.read() as conn:
        claims.live_claim(conn, claim_id, _pilot_of(conn, claim_id, who))
    digest, size = await ctx.receive_tar(request)
    with ctx.store.write() as conn:
        live = claims.live_claim(conn, claim_id, _pilot_of(conn, claim_id, who))
        job = claims.job_of_claim(conn, live.claim_id)
        claims.attach_output(conn, live, job.owner, digest, size, now=ctx.clock())
    return Response(status_code=204)


@router.post("/claims/{claim_id}/result")
def claim_result(claim_id: str, body: Result, ctx: Ctx, who: Pilot) -> WorkAnswer:
    now = ctx.clock()
    with ctx.store.write() as conn:
        pilot_id = _pilot_of(conn, claim_id, who)
        live = claims.live_claim(conn, claim_id, pilot_id)
        claims.report(conn, live, body, pilot=pilot_id, now=now)
    if body.next is None:
        return WorkAnswer(claim=None, retry_after_s=ctx.settings.server.retry_after_s)
    return _work(ctx, pilot_id, who, body.next)


@router.post("/pilots/{pilot_id}/exit", status_code=204)
def pilot_exit(pilot_id: str, body: PilotExit, ctx: Ctx, who: Pilot) -> Response:
    now = ctx.clock()
    with ctx.store.write() as conn:
        registry.owned(conn, pilot_id, who.name)
        for claim_id, job_id in claims.pilot_claims(conn, pilot_id):
            claims.release_claim(
                conn,
                claim_id,
                job_id,
                trigger=Trigger.RELEASED_BY_PILOT,
                reason=f"pilot {pilot_id} left: {body.reason}",
                max_attempts=ctx.settings.server.max_attempts,
                now=now,
            )
        registry.leave(conn, pilot_id, "exited", body.reason, now)
    return Response(status_code=204)


def _pilot_of(conn: sa.Connection, claim_id: str, who: Principal) -> str:
    """The pilot holding ``claim_id``, checked to belong to the caller's identity."""
    pilot_id = conn.execute(
        sa.select(claim_table.c.pilot_id).where(claim_table.c.id == claim_id)
    ).scalar()
    if pilot_id is None:
        raise NotFound(f"claim {claim_id} does not exist")
    registry.owned(conn, pilot_id, who.name)
    return str(pilot_id)
