"""Job ads for ``condor_q``-style commands: ``-constraint``, ``-af``, ``-l``, and ``qedit``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import ConfigDict, Field

from pilotage.api.context import actor_of
from pilotage.api.users import ACTIVE, FINISHED, Ctx, User
from pilotage.bodies import Body
from pilotage.queue import jobquery
from pilotage.queue import jobs as queue

router = APIRouter(prefix="/api/v1")


@router.get("/jobads")
def job_ads(
    ctx: Ctx,
    who: User,
    id: Annotated[list[str], Query()] = [],  # noqa: B006  (FastAPI reads the default)
    constraint: str | None = None,
    owner: str | None = None,
    finished: bool = False,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 100_000,
) -> list[dict[str, Any]]:
    """The whole ads of the caller's visible jobs that match ``constraint``, newest last
    (history: the ``limit`` most recent)."""
    test = None if constraint is None else jobquery.parse_constraint(constraint)
    refs = [queue.parse_job_ref(i) for i in id]
    now = ctx.clock()
    states = FINISHED if finished else ACTIVE
    with ctx.store.read() as conn:
        if refs:
            queue.require_jobs(conn, actor_of(who), refs)
        rows = queue.select_jobs(conn, actor_of(who), refs=refs, states=states, owner=owner)
    out = []
    for row in rows:
        ad = jobquery.whole_ad(row, now)
        if test is None or jobquery.matches(ad, test):
            out.append({**queue.job_view(row), "ad": ad.printOld()})
    return out[-limit:] if finished else out[:limit]


class EditBody(Body):
    """``pilotage qedit``: one attribute, one ClassAd expression."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    value: str = Field(min_length=1, max_length=10_000)


@router.post("/jobs/{job_id}/attrs")
def edit_job(job_id: str, body: EditBody, ctx: Ctx, who: User) -> dict[str, Any]:
    """Set one attribute of an idle job (or of every idle job of a cluster)."""
    ref = queue.parse_job_ref(job_id)
    with ctx.store.write() as conn:
        edited = jobquery.qedit(conn, actor_of(who), ref, body.name, body.value)
    return {"edited": edited, "name": body.name, "value": body.value}
