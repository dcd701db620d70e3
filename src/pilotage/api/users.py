"""The user API: submit, list, act on jobs, fetch outputs, see the pool."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import StreamingResponse
from pydantic import ConfigDict, Field, JsonValue

from pilotage import memory
from pilotage.api.auth import Principal, require
from pilotage.api.context import ServerContext, actor_of
from pilotage.api.openapi import JOB_ID
from pilotage.bodies import Body
from pilotage.collector import pilots as pilot_registry
from pilotage.credentials.lifetime import require_lifetime
from pilotage.credentials.tokens import Role
from pilotage.errors import BadInput, NotFound
from pilotage.queue import jobs as queue
from pilotage.queue import spool
from pilotage.queue.notify import submit_warnings
from pilotage.queue.spec import ClusterSubmission
from pilotage.queue.states import JobState

router = APIRouter(prefix="/api/v1")


def context(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx


def user(request: Request) -> Principal:
    """The caller, who must be a user or an admin."""
    return require(context(request).authenticator.principal(request), Role.USER, Role.ADMIN)


Ctx = Annotated[ServerContext, Depends(context)]
User = Annotated[Principal, Depends(user)]

ACTIVE = (JobState.IDLE, JobState.RUNNING, JobState.HELD)
#: A cluster this big is indexed by the matchmaker before its submit answers.
BIG_CLUSTER = 1000
FINISHED = (JobState.COMPLETED, JobState.REMOVED)


@router.get("/whoami")
def whoami(who: User) -> dict[str, str]:
    return {"name": who.name, "role": who.role.value, "via": who.via}


@router.post("/sandboxes", status_code=201)
async def upload_sandbox(request: Request, ctx: Ctx, who: User) -> dict[str, Any]:
    """Take an input sandbox (uncompressed tar); answer its digest for the cluster commit."""
    digest, size = await ctx.receive_tar(request)
    with ctx.store.write() as conn:
        spool.remember(conn, digest, size, who.name, ctx.clock())
    return {"digest": digest, "size_bytes": size}


@router.post("/clusters", status_code=201)
def new_cluster(ctx: Ctx, who: User) -> dict[str, int]:
    with ctx.store.write() as conn:
        return {"cluster_id": queue.open_cluster(conn, actor_of(who), ctx.clock())}


@router.post("/clusters/{cluster_id}/jobs", status_code=201)
def commit_cluster(
    cluster_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    body: ClusterSubmission,
    ctx: Ctx,
    who: User,
) -> dict[str, Any]:
    """Store the cluster's jobs; ``warnings`` says what the user should know (no mail)."""
    with ctx.store.write() as conn:
        # Refused before anything is stored: a job's credential must outlive the job.
        require_lifetime(conn, who.name, body.jobs, ctx.settings.credentials, ctx.clock())
        count = queue.commit_cluster(
            conn, cluster_id, actor_of(who), body.jobs, ctx.clock(),
            accounting_groups=ctx.settings.server.accounting_groups,
        )  # fmt: skip
    warnings = submit_warnings(body.jobs, bool(ctx.settings.server.mail_relay))
    if count >= BIG_CLUSTER:
        # The specs are stored: let them go before the index grows (its entries would
        # pin their memory), take the jobs in now, not at the next request for work, and
        # hand back what the body took.
        body.jobs.clear()
        with ctx.store.read() as conn:
            ctx.matcher.follow(conn)
        # The commit woke the requests for work held open, but one that looked while
        # the index took the jobs in found none (a dispatch's sync waits for the
        # follow): wake them again now that the index has them.
        ctx.waits.wake([])
        memory.give_back()
    return {"cluster_id": cluster_id, "jobs": count, "warnings": warnings}


def _refs(ids: list[str]) -> list[queue.JobRef]:
    return [queue.parse_job_ref(i) for i in ids]


@router.get("/jobs/{job_id}/events")
def job_events(job_id: str, ctx: Ctx, who: User) -> list[dict[str, Any]]:
    with ctx.store.read() as conn:
        rows = queue.job_events_of(conn, actor_of(who), queue.parse_job_ref(job_id))
    return [
        {
            "at": r.at,
            "from": r.from_state,
            "to": r.to_state,
            "trigger": r.trigger,
            "actor": r.actor,
            "reason": r.reason,
            "pilot": r.pilot_id,
        }
        for r in rows
    ]


@router.get("/jobs/{job_id}/output")
def job_output(job_id: str, ctx: Ctx, who: User) -> StreamingResponse:
    """The job's output sandbox as an uncompressed tar."""
    ref = queue.parse_job_ref(job_id)
    if ref.proc is None:
        raise BadInput(f"name one job as CLUSTER.PROC, not the cluster {ref}")
    with ctx.store.read() as conn:
        (row,) = queue.require_jobs(conn, actor_of(who), [ref])
    if row.output_sandbox is None:
        raise NotFound(f"job {ref} has no output sandbox (it is {row.state})")
    handle = ctx.spool.open(row.output_sandbox)

    def chunks() -> Iterator[bytes]:
        with handle:
            while block := handle.read(256 * 1024):
                yield block

    return StreamingResponse(chunks(), media_type="application/x-tar")


class ActionBody(Body):
    """Hold, release or remove jobs."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field(json_schema_extra={"enum": list[JsonValue](sorted(queue.ACTIONS))})
    ids: list[Annotated[str, Field(json_schema_extra={"pattern": JOB_ID})]] = Field(
        min_length=1, max_length=100_000
    )
    reason: str | None = Field(default=None, max_length=2000)


@router.post("/jobs/actions")
def act(body: ActionBody, ctx: Ctx, who: User) -> list[dict[str, Any]]:
    with ctx.store.write() as conn:
        results = queue.act(
            conn, actor_of(who), body.action, _refs(body.ids), reason=body.reason, now=ctx.clock()
        )
    return [r.__dict__ for r in results]


@router.get("/slots")
def slots(ctx: Ctx, who: User) -> dict[str, Any]:
    """The pool's slots (``pilotage status``): counts by site and state and the pool's
    total for everyone; each pilot's slot (its id, name and host) for an admin only.

    Why: a pilot's id and host are what an attacker needs to aim at it; a user needs
    only to know where capacity is.
    """
    with ctx.store.read() as conn:
        every = pilot_registry.pool_status(conn)
    return {
        "scope": "all" if who.admin else "summary",
        "slots": every if who.admin else [],
        **pilot_registry.pool_summary(every),
    }
