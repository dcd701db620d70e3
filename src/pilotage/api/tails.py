"""``pilotage tail``: agents send the end of a streaming job's stdout, its owner reads it."""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request, Response

from pilotage.api.context import actor_of
from pilotage.api.pilots import LoopCtx, Pilot, Secret
from pilotage.api.users import Ctx, User
from pilotage.errors import BadInput
from pilotage.queue import claims, tails
from pilotage.queue.jobs import parse_job_ref

pilot_router = APIRouter(prefix="/pilot/v1")
user_router = APIRouter(prefix="/api/v1")


@pilot_router.put("/claims/{claim_id}/stdout", status_code=204)
async def claim_stdout(
    claim_id: str,
    request: Request,
    ctx: LoopCtx,
    who: Pilot,
    secret: Secret,
    offset: Annotated[int, Query(ge=0, le=2**62)],
) -> Response:
    """A piece of a live claim's job's stdout, ``offset`` bytes into it."""
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > tails.MAX_PIECE:
            raise BadInput(f"a stdout piece holds at most {tails.MAX_PIECE} bytes")

    def work(conn: sa.Connection) -> None:
        live, _pilot = claims.held_claim(conn, claim_id, who.name, secret)
        tails.record(conn, live.job_id, live.claim_id, offset, data, ctx.clock())

    await ctx.write(work)
    return Response(status_code=204)


@user_router.get("/jobs/{job_id}/tail")
def job_tail(job_id: str, ctx: Ctx, who: User, ended: bool = False) -> dict[str, Any]:
    """The end of a running job's stdout (``stream_output``); ``ended``: also of a job
    that just ended (what ``tail -f`` shows last)."""
    with ctx.store.read() as conn:
        return tails.view(conn, actor_of(who), parse_job_ref(job_id), ended=ended)
