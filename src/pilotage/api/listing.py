"""Listing the queue: ``GET /api/v1/jobs`` (pages, streamed) and ``GET /api/v1/batches``.

A listing is written as its rows are read, a chunk per read transaction
(:mod:`pilotage.queue.listing`), so the server's memory does not grow with the queue.
Its first chunk is read before the answer starts, so a database that is down answers 503
as every other call does. A fault after that cannot change the status any more: an
NDJSON listing then ends with an error line (``{"error": "Transient", ...}``), and a
JSON array is cut short (the connection closes without the body's end), so that no
client takes part of a listing for the whole of it.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterable, Iterator
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from pilotage.api.context import actor_of
from pilotage.api.users import ACTIVE, FINISHED, Ctx, User
from pilotage.errors import BadInput
from pilotage.queue import job_lines, listing, summary
from pilotage.queue.jobs import parse_job_ref
from pilotage.queue.states import JobState
from pilotage.store.faults import classify

router = APIRouter(prefix="/api/v1")
log = logging.getLogger("pilotage.api")

NDJSON = "application/x-ndjson"

_LISTING_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The jobs, oldest first (job id order): a JSON array, or with "
        "`Accept: application/x-ndjson` one job per line. A page that is followed by "
        'more carries `Link: <...&cursor=C.P>; rel="next"`.',
        "content": {"application/json": {}, NDJSON: {}},
    }
}


@router.get("/jobs", responses=_LISTING_DOC)
def list_jobs(
    request: Request,
    ctx: Ctx,
    who: User,
    id: Annotated[list[str], Query()] = [],  # noqa: B006  (FastAPI reads the default)
    state: Annotated[list[str], Query()] = [],  # noqa: B006
    owner: str | None = None,
    finished: bool | None = None,
    limit: Annotated[int | None, Query(ge=1, le=listing.MAX_PAGE)] = None,
    cursor: str | None = None,
) -> StreamingResponse:
    """Jobs visible to the caller; ``finished`` picks history (true) or the queue (false).

    A job id named explicitly must exist (in any state): an unknown one is NotFound.
    Without ``limit``, every job; with it, a page of at most ``limit`` jobs, and the
    next page's address in the ``Link`` header when there are more. ``cursor`` (the
    ``cursor`` of that address) starts after the job it names.
    """
    states = _states(state)
    if not states and finished is not None:
        states = list(FINISHED if finished else ACTIVE)
    refs = [parse_job_ref(i) for i in id]
    after = None if cursor is None else listing.parse_cursor(cursor)
    actor = actor_of(who)
    wanted = listing.Listing.visible_to(actor, owner=owner, states=states, refs=refs)
    upto = None
    headers = {}
    first: list[Any] | None = None
    with ctx.store.read() as conn:
        listing.check_refs(conn, actor, refs)
        if limit is not None:
            ahead = listing.positions(conn, wanted, after, limit + 1)
            if len(ahead) > limit:
                upto = ahead[limit - 1][:2]
                following = request.url.include_query_params(cursor=listing.format_cursor(upto))
                headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'
            if limit <= listing.CHUNK:  # the page is one chunk: its rows now
                first = listing.rows_at(conn, wanted, ahead[:limit])
    if first is None:
        chunks = listing.chunks(ctx.store, wanted, after, upto=upto, cap=limit)
        first = next(chunks, [])  # read now: a fault here is answered 503
    else:
        chunks = iter(())
    ndjson = NDJSON in request.headers.get("accept", "")
    body = _encode(itertools.chain([first], chunks), ndjson=ndjson, where=request.url.path)
    return StreamingResponse(
        body, media_type=NDJSON if ndjson else "application/json", headers=headers
    )


def _states(names: list[str]) -> list[JobState]:
    try:
        return [JobState(n.upper()) for n in names]
    except ValueError:
        known = ", ".join(s.value for s in JobState)
        raise BadInput(f"unknown job state in {names}; known states: {known}") from None


def _line(row: Any) -> str:
    return job_lines.view_line(row)


def _encode(chunks: Iterable[list[Any]], *, ndjson: bool, where: str) -> Iterator[bytes]:
    """The body: a chunk of jobs at a time, as NDJSON lines or one JSON array."""
    if not ndjson:
        yield b"["
    comma = ""
    try:
        for rows in chunks:
            if ndjson:
                yield "".join(_line(r) + "\n" for r in rows).encode()
            elif rows:
                yield (comma + ",".join(_line(r) for r in rows)).encode()
                comma = ","
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        fault = classify(exc)
        if fault is None or not ndjson:
            log.warning("listing cut short on %s: %s", where, exc)
            raise
        log.warning("listing ended with an error line on %s: %s", where, fault.message)
        error = {"error": "Transient", "message": fault.message}
        yield (json.dumps({**error, "retry_after_s": fault.retry_after_s}) + "\n").encode()
        return
    if not ndjson:
        yield b"]"


@router.get("/batches")
def list_batches(ctx: Ctx, who: User, owner: str | None = None) -> dict[str, Any]:
    """The queue by batch (``pilotage q``): each owner's batches with their jobs counted
    by state, and the queue's jobs by state. A user sees their own batches only."""
    wanted = listing.Listing.visible_to(actor_of(who), owner=owner)
    with ctx.store.read() as conn:
        return summary.batches(conn, wanted.owner)
