"""The pilot protocol's hot calls: requests for work and results (docs/pilot-protocol.md).

Their routes (api/pilots.py) and the fast path that serves them without FastAPI's
routing (api/fastpath.py) both call :func:`ask` and :func:`report`, so the two answer
alike; authentication and the body's validation are the caller's.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import Response
from starlette.requests import Request

from pilotage.api.auth import Principal
from pilotage.api.context import ServerContext
from pilotage.api.wire import (
    Claim,
    ClaimResult,
    ResultRefused,
    Results,
    ResultsAnswer,
    WorkAnswer,
    WorkRequest,
)
from pilotage.api.workwait import hold
from pilotage.collector import pilots as registry
from pilotage.errors import Denied, PilotageError
from pilotage.queue import claims, endings


def answer(model: Any, status_code: int = 200) -> Response:
    """``model`` (a pydantic model) as the JSON body of the answer."""
    return Response(model.model_dump_json(), status_code, media_type="application/json")


def touch_every_s(ctx: ServerContext) -> float:
    """How stale ``last_seen_at`` may get before a call writes it again: a small part of
    the silence after which the reaper declares a pilot lost."""
    return min(1.0, ctx.settings.server.heartbeat_s / 4)


def next_claims(
    ctx: ServerContext,
    conn: sa.Connection,
    pilot: sa.Row[Any],
    req: WorkRequest,
    now: float,
    asked_at: float,
) -> claims.Dispatched:
    """Dispatch ``req`` for ``pilot``: the claims it got, and whether it may wait."""
    return claims.dispatch(
        conn,
        pilot,
        req.free,
        max(0.0, req.time_left_s - (now - asked_at)),  # a held request's time went by
        settings=ctx.settings.server,
        matcher=ctx.matcher,
        now=now,
        is_postgres=ctx.is_postgres,
        max_claims=req.max_claims,
    )


def work_answer(ctx: ServerContext, pilot: sa.Row[Any], got: list[Claim]) -> WorkAnswer:
    """The answer carrying the claims ``got``."""
    return WorkAnswer.model_construct(
        v=1,
        claim=got[0] if got else None,
        more_claims=got[1:],
        retry_after_s=ctx.settings.server.retry_after_s,
        retire=pilot.retire,
        drain=pilot.drain,
    )


async def ask(
    ctx: ServerContext,
    request: Request,
    pilot_id: str,
    body: WorkRequest,
    who: Principal,
    secret: str,
) -> Response:
    """Claim jobs for the pilot's free resources; with ``wait_s``, hold the request open
    while there is none (api/workwait.py)."""
    asked_at = ctx.clock()
    found = WorkAnswer(retry_after_s=ctx.settings.server.retry_after_s)

    def work(conn: sa.Connection) -> tuple[WorkAnswer, bool]:
        now = ctx.clock()
        pilot = registry.owned(conn, pilot_id, who.name, secret)
        registry.require_active(pilot)
        registry.touch(conn, pilot, now, every_s=touch_every_s(ctx))
        got = next_claims(ctx, conn, pilot, body, now, asked_at)
        return work_answer(ctx, pilot, got.claims), got.waiting is not None

    async def look() -> tuple[bool, bool]:
        nonlocal found
        found, may_wait = await ctx.write(work)
        return found.claim is not None, may_wait

    s = ctx.settings.server
    await hold(look, ctx.waits, request, wait_s=min(body.wait_s, s.work_wait_s),
               every_s=s.retry_after_s)  # fmt: skip
    return answer(found)


async def report(
    ctx: ServerContext, pilot_id: str, body: Results, who: Principal, secret: str
) -> Response:
    """Record several jobs' results in one call, each as its own ``.../result`` would be
    (one that is refused is listed with that error and changes nothing), and with
    ``next`` claim the pilot's next jobs in the same transaction."""

    def work(conn: sa.Connection) -> ResultsAnswer:
        now = ctx.clock()
        pilot = registry.owned(conn, pilot_id, who.name, secret)
        recorded: dict[str, str] = {}
        refused: list[ResultRefused] = []
        for item in body.results:
            try:
                recorded[item.claim_id] = _record(
                    conn, pilot_id, item, who.name, secret, now, ctx.is_postgres
                )
            except PilotageError as exc:
                refused.append(
                    ResultRefused(claim_id=item.claim_id, status=exc.http_status,
                                  error=type(exc).__name__, message=exc.message)
                )  # fmt: skip
        registry.touch(conn, pilot, now, every_s=touch_every_s(ctx))
        got: list[Claim] = []
        # A pilot that may not get work any more (lost, left) hears so when it asks.
        if body.next is not None and pilot.state == "active":
            got = next_claims(ctx, conn, pilot, body.next, now, now).claims
        found = work_answer(ctx, pilot, got)
        return ResultsAnswer.model_construct(**dict(found), recorded=recorded, refused=refused)

    return answer(await ctx.write(work))


def _record(
    conn: sa.Connection,
    pilot_id: str,
    item: ClaimResult,
    subject: str,
    secret: str,
    now: float,
    pg: bool,
) -> str:
    """Record one result of a report of several; the job's state after it."""
    live, _pilot = claims.held_claim(conn, item.claim_id, subject, secret)
    if live.pilot_id != pilot_id:
        raise Denied(f"claim {item.claim_id} is held by pilot {live.pilot_id}, not {pilot_id}")
    if item.without_switch is None:
        # Nothing is written before the guarded update that may refuse it.
        return endings.report(conn, live, item, pilot=pilot_id, now=now, pg=pg).value
    with conn.begin_nested():  # the ad is marked first: undone if the report is refused
        return endings.report(conn, live, item, pilot=pilot_id, now=now, pg=pg).value
