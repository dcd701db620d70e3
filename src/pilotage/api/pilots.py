"""The pilot API (docs/pilot-protocol.md): register, ask for work, renew, report, leave.

Every call needs the pilot role, and a pilot may act only on itself and its own claims.
A pilot token minted for an entry (``entry:<entry>/<frontend>``) registers only pilots of that
entry and its site. Registration answers a secret of that pilot's own; every later call
sends it (header ``X-Pilotage-Pilot-Secret``, :data:`PilotSecret`) and is refused unless
it is the secret of the pilot it acts on, or of the pilot holding the claim it names:
401 without one, 403 with another. So pilots that share one token are still apart.

These calls come from every pilot of the pool, all the time, so they stay on the event
loop: authentication is cached (:class:`pilotage.api.context.VerifiedTokens`), the
database work goes to the store's write queue (many calls to a commit, see
:class:`pilotage.store.engine.WriteQueue`), and answers are serialised once, by their
own model, instead of being validated again on the way out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from pilotage.api import pilot_work
from pilotage.api.auth import Principal, require
from pilotage.api.context import ServerContext
from pilotage.api.pilot_work import next_claims, touch_every_s, work_answer
from pilotage.api.users import Ctx
from pilotage.api.wire import (
    PILOT_SECRET_HEADER,
    Claim,
    Heartbeat,
    HeartbeatAnswer,
    PilotExit,
    PilotRegistration,
    Registered,
    Result,
    Results,
    ResultsAnswer,
    Revoked,
    Vacate,
    VacateAnswer,
    WorkAnswer,
    WorkRequest,
)
from pilotage.collector import pilots as registry
from pilotage.collector.rejoin import rejoin
from pilotage.credentials.tokens import Role
from pilotage.errors import NotFound
from pilotage.queue import claims, denials, endings, orphans, vacate
from pilotage.queue.states import Trigger
from pilotage.queue.stoppace import StopPacer

router = APIRouter(prefix="/pilot/v1")


async def _context(request: Request) -> ServerContext:
    # A coroutine, so FastAPI calls it on the loop rather than in a worker thread.
    ctx: ServerContext = request.app.state.ctx
    return ctx


async def pilot(request: Request) -> Principal:
    """The caller, who must hold the pilot role."""
    ctx: ServerContext = request.app.state.ctx
    return require(ctx.tokens.principal(request), Role.PILOT)


async def pilot_secret(request: Request) -> str:
    """The pilot secret the call carries (401 without one); checked against the pilot's
    stored hash where its row is read (:func:`pilotage.collector.pilots.check_secret`)."""
    return registry.require_secret_header(request.headers.get(PILOT_SECRET_HEADER))


LoopCtx = Annotated[ServerContext, Depends(_context)]
Pilot = Annotated[Principal, Depends(pilot)]
Secret = Annotated[str, Depends(pilot_secret)]


def _answer(model: BaseModel, status_code: int = 200) -> Response:
    """``model`` as the JSON body of the answer (the route declares its schema)."""
    return Response(model.model_dump_json(), status_code, media_type="application/json")


@router.post("/pilots", status_code=201, response_model=Registered)
async def register(body: PilotRegistration, request: Request, ctx: LoopCtx, who: Pilot) -> Response:
    """Join the pool; a token minted for an entry registers only pilots of that entry
    (:func:`pilotage.collector.pilots.check_entry`, 403 otherwise). With ``resume`` and
    that pilot's secret, take a lost pilot back (:mod:`pilotage.collector.rejoin`)."""
    s = ctx.settings.server
    sent_secret = request.headers.get(PILOT_SECRET_HEADER)

    def work(conn: sa.Connection) -> tuple[str, str, list[str]]:
        now = ctx.clock()
        back = rejoin(conn, who.name, body, sent_secret, lease_s=s.lease_s, now=now)
        if back is not None and sent_secret is not None:
            return back[0], sent_secret, back[1]
        return (*registry.register(conn, who.name, body, now), [])

    pilot_id, secret, resumed = await ctx.write(work)
    registered = Registered(
        pilot_id=pilot_id,
        pilot_secret=secret,
        lease_s=s.lease_s,
        heartbeat_s=s.heartbeat_s,
        idle_timeout_s=s.idle_timeout_s,
        max_sandbox_bytes=ctx.spool.max_bytes,
        resumed=resumed,
    )
    return _answer(registered, 201)


@router.post("/pilots/{pilot_id}/claims", response_model=WorkAnswer)
async def ask_for_work(
    pilot_id: str, body: WorkRequest, request: Request, ctx: LoopCtx, who: Pilot, secret: Secret
) -> Response:
    """Claim jobs for the pilot's free resources; with ``wait_s``, hold the request open
    while there is none (api/workwait.py). Served by api/fastpath.py when well formed."""
    return await pilot_work.ask(ctx, request, pilot_id, body, who, secret)


def _stop_pacer(request: Request, ctx: ServerContext) -> StopPacer:
    """This server process's pacer of stop orders (made at first use)."""
    pacer: StopPacer | None = getattr(request.app.state, "stop_pacer", None)
    if pacer is None:
        s = ctx.settings.server
        pacer = request.app.state.stop_pacer = StopPacer(
            s.stop_rate_per_pilot_s, s.stop_rate_per_site_s
        )
    return pacer


@router.post("/pilots/{pilot_id}/heartbeat", response_model=HeartbeatAnswer)
async def heartbeat(
    pilot_id: str, body: Heartbeat, request: Request, ctx: LoopCtx, who: Pilot, secret: Secret
) -> Response:
    """Renew the pilot's live claims; hand out the stop orders of ended ones, spread over
    time per pilot and per site (:mod:`pilotage.queue.stoppace`): those not due before
    the next heartbeat are listed as renewed, so the agent keeps them until their turn."""
    pacer = _stop_pacer(request, ctx)

    def work(conn: sa.Connection) -> HeartbeatAnswer:
        now = ctx.clock()
        s = ctx.settings.server
        row = registry.owned(conn, pilot_id, who.name, secret)
        registry.require_active(row)
        registry.touch(conn, row, now)
        if body.held is not None:  # live claims it does not hold: answers lost on the way
            orphans.free_unheld(conn, pilot_id, {*body.held, *body.claims}, now=now)
        renewed, ended = claims.heartbeat(conn, pilot_id, body.claims, lease_s=s.lease_s, now=now)
        stops = [(r.claim_id, r.reason) for r in ended]
        orders, held = pacer.pace(pilot_id, row.site, stops, now, horizon_s=s.heartbeat_s)
        for claim_id in held:
            renewed[claim_id] = now + s.lease_s
        revoked = [Revoked(claim_id=o.claim_id, reason=o.reason, delay_s=o.delay_s) for o in orders]
        return HeartbeatAnswer(renewed=renewed, revoked=revoked, retire=row.retire, drain=row.drain)

    return _answer(await ctx.write(work))


@router.get("/claims/{claim_id}/input")
def claim_input(claim_id: str, ctx: Ctx, who: Pilot, secret: Secret) -> StreamingResponse:
    """The input sandbox of the job a live claim holds."""
    with ctx.store.read() as conn:
        live, _pilot = claims.held_claim(conn, claim_id, who.name, secret)
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
async def claim_output(
    claim_id: str, request: Request, ctx: LoopCtx, who: Pilot, secret: Secret
) -> Response:
    """Keep the output sandbox of a live claim's job."""
    await ctx.write(lambda conn: claims.held_claim(conn, claim_id, who.name, secret))
    upload = await ctx.receive_upload(request)

    def work(conn: sa.Connection) -> None:
        live, _pilot = claims.held_claim(conn, claim_id, who.name, secret)
        job = claims.job_of_claim(conn, live.claim_id)
        endings.attach_output(conn, live, job.owner, upload.digest, upload.size, now=ctx.clock())

    # The claim may have ended while the tar arrived: only a recorded output enters the
    # spool, so a refused late upload leaves nothing behind.
    try:
        await ctx.write(work)
    except BaseException:
        ctx.spool.discard(upload)
        raise
    await run_in_threadpool(ctx.spool.keep, upload)
    return Response(status_code=204)


@router.post("/claims/{claim_id}/result", response_model=WorkAnswer)
async def claim_result(
    claim_id: str, body: Result, ctx: LoopCtx, who: Pilot, secret: Secret
) -> Response:
    """Record a job's result and, with ``next``, claim the pilot's next job in the same
    transaction."""
    retry_after_s = ctx.settings.server.retry_after_s

    def work(conn: sa.Connection) -> tuple[sa.Row[Any], list[Claim]]:
        now = ctx.clock()
        live, pilot = claims.held_claim(conn, claim_id, who.name, secret)
        endings.report(conn, live, body, pilot=live.pilot_id, now=now, pg=ctx.is_postgres)
        registry.touch(conn, pilot, now, every_s=touch_every_s(ctx))
        got: list[Claim] = []
        if body.next is not None and pilot.state == "active":
            got = next_claims(ctx, conn, pilot, body.next, now, now).claims
        return pilot, got

    pilot, got = await ctx.write(work)
    if body.next is None:
        return _answer(WorkAnswer(claim=None, retry_after_s=retry_after_s))
    # The result is kept either way; a pilot that may not get work any more hears so.
    registry.require_active(pilot)
    return _answer(work_answer(ctx, pilot, got))


@router.post("/pilots/{pilot_id}/results", response_model=ResultsAnswer)
async def report_results(
    pilot_id: str, body: Results, ctx: LoopCtx, who: Pilot, secret: Secret
) -> Response:
    """Record several jobs' results in one call, each as its own ``.../result`` would be
    (one that is refused is listed with that error and changes nothing), and with
    ``next`` claim the pilot's next jobs in the same transaction. Served by
    api/fastpath.py when well formed."""
    return await pilot_work.report(ctx, pilot_id, body, who, secret)


@router.post("/claims/{claim_id}/vacate", response_model=VacateAnswer)
async def claim_vacate(
    claim_id: str, body: Vacate, ctx: LoopCtx, who: Pilot, secret: Secret
) -> Response:
    """Give a live claim back unfinished: its job is IDLE again now, its attempt not
    counted when the node is at fault, and kept from this pilot for ``exclude_s``."""

    def work(conn: sa.Connection) -> VacateAnswer:
        now = ctx.clock()
        live, pilot = claims.held_claim(conn, claim_id, who.name, secret)
        if body.refusal == "denied":
            # The site is the pilot's row's (its registration), never the pilot's word.
            state = denials.deny(
                conn,
                live.claim_id,
                live.job_id,
                pilot,
                body.reason,
                max_denials=ctx.settings.server.max_denials,
                now=now,
            )
        else:
            state = vacate.vacate(
                conn,
                live.claim_id,
                live.job_id,
                pilot,
                body,
                max_attempts=ctx.settings.server.max_attempts,
                now=now,
            )
            if body.refusal == "transient":
                vacate.report_transient(conn, pilot, body.reason, now)
        registry.touch(conn, pilot, now, every_s=touch_every_s(ctx))
        return VacateAnswer(job_state=state.value)

    return _answer(await ctx.write(work))


@router.post("/pilots/{pilot_id}/exit", status_code=204)
async def pilot_exit(
    pilot_id: str, body: PilotExit, ctx: LoopCtx, who: Pilot, secret: Secret
) -> Response:
    def work(conn: sa.Connection) -> None:
        now = ctx.clock()
        registry.owned(conn, pilot_id, who.name, secret)
        for claim_id, job_id in endings.pilot_claims(conn, pilot_id):
            endings.release_claim(
                conn,
                claim_id,
                job_id,
                trigger=Trigger.RELEASED_BY_PILOT,
                reason=f"pilot {pilot_id} left: {body.reason}",
                max_attempts=ctx.settings.server.max_attempts,
                now=now,
            )
        registry.leave(conn, pilot_id, "exited", body.reason, now)

    await ctx.write(work)
    return Response(status_code=204)
