"""exec-in-job and ssh-to-job over the API (docs/pilot-protocol.md, "Sessions").

- ``WS /api/v1/jobs/{id}/session?command=...&tty=0|1&rows=&cols=&term=``: a user (the job's
  owner, or an admin) opens a session; no ``command`` is a shell. Every refusal is an HTTP
  answer to the opening handshake with the API's one-sentence error body: 401, 403 (not
  the owner), 404, 409 (not running), 422 (bad parameters), 503 (try again).
- ``GET /pilot/v1/pilots/{id}/sessions?wait_s=N``: the pilot's long-poll for the sessions
  it must open (answered at once when there is one, else after up to ``wait_s``).
- ``WS /pilot/v1/claims/{claim}/session/{sid}``: the pilot opens the session it was
  offered, with its token and its registration's secret, for a claim it holds.
- ``GET /api/v1/sessions[?job=ID]``: the audit rows the caller may see.

The relay itself is :mod:`pilotage.api.relay`; who may and the audit rows are
:mod:`pilotage.queue.sessions`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Query, Request, WebSocket
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from pilotage.api.auth import Principal, require
from pilotage.api.context import ServerContext, actor_of
from pilotage.api.pilots import LoopCtx, Pilot, Secret
from pilotage.api.relay import Limits, Offer, Relay, pipe
from pilotage.api.users import Ctx, User
from pilotage.api.wire import PILOT_SECRET_HEADER
from pilotage.collector import pilots as registry
from pilotage.credentials.tokens import Role
from pilotage.errors import Conflict, OperatorError, PilotageError, Transient, Unauthenticated
from pilotage.queue import claims, sessions
from pilotage.queue.jobs import parse_job_ref
from pilotage.queue.sessions import Ending, SessionRequest

log = logging.getLogger("pilotage.api.sessions")
router = APIRouter()
T = TypeVar("T")

#: The longest a pilot's long-poll is held (its client's timeout must be longer).
MAX_WAIT_S = 25.0
#: How long a pilot's proof (its token's subject and its secret), once checked against
#: the database for its long-poll, is trusted without reading it again: 10,000 pilots
#: polling every 20 s would otherwise cost 500 reads a second. A pilot that left or was
#: lost meanwhile still gets no session: sessions are offered for the pilot of a claim.
PROOF_TTL_S = 300.0
_MAX_PROOFS = 100_000


def install(app: FastAPI, ctx: ServerContext) -> None:
    """Check the ``[server] session_*`` settings and add the routes (at start)."""
    s = ctx.settings.server
    limits = Limits(s.session_max_s, s.session_idle_s, s.session_max_bytes,
                    s.session_frame_bytes, s.session_join_s, s.session_max_per_job)  # fmt: skip
    for name, value, least in (
        ("session_max_s", limits.max_s, 1), ("session_idle_s", limits.idle_s, 1),
        ("session_max_bytes", limits.max_bytes, 1024), ("session_join_s", limits.join_s, 1),
        ("session_frame_bytes", limits.frame_bytes, 1024),
        ("session_max_per_job", limits.per_job, 1),
    ):  # fmt: skip
        if value < least:
            raise OperatorError(f"[server] {name} = {value} is below {least}; fix pilotage.toml")
    app.state.session_limits = limits
    app.state.relay = Relay()
    app.state.session_proofs = {}  # (pilot, subject, secret digest) -> trusted until
    app.include_router(router)


def _parts(app: Any) -> tuple[ServerContext, Relay, Limits]:
    return app.state.ctx, app.state.relay, app.state.session_limits


async def _refuse(websocket: WebSocket, exc: PilotageError) -> None:
    """Answer the opening handshake with the API's error body instead of upgrading."""
    headers = None
    if isinstance(exc, Transient):
        headers = {"Retry-After": str(max(1, int(exc.retry_after_s)))}
    body = {"error": type(exc).__name__, "message": exc.message}
    await websocket.send_denial_response(JSONResponse(body, exc.http_status, headers))


async def _write(ctx: ServerContext, work: Callable[[sa.Connection], T]) -> T:
    """``ctx.write``, a database fault turned into "try again" (503, never 500)."""
    try:
        return await ctx.write(work)
    except (sa.exc.OperationalError, sa.exc.InterfaceError, OSError) as exc:
        log.warning("session refused: the database failed (%s)", type(exc).__name__)
        raise Transient("the server cannot record the session now; try again") from None


@router.websocket("/api/v1/jobs/{job_id}/session")
async def user_session(websocket: WebSocket, job_id: str) -> None:
    """A user's session in a running job of theirs, relayed to the job's pilot."""
    ctx, relay, limits = _parts(websocket.app)
    who: Principal | None = None
    request: SessionRequest | None = None
    try:
        who = require(ctx.authenticator.principal(websocket), Role.USER, Role.ADMIN)
        query = websocket.query_params
        request = SessionRequest.parse(
            query.getlist("command"), query.get("tty", "0"), query.get("rows", "24"),
            query.get("cols", "80"), query.get("term", "dumb"),
        )  # fmt: skip
        asked, actor = request, actor_of(who)
        # Counted here, on the event loop, where the relay lives.
        open_now = relay.open_in(str(parse_job_ref(job_id)))
        opened = await _write(ctx, lambda conn: sessions.open_session(
            conn, actor, job_id, asked, ctx.clock(), open_now=open_now,
            max_per_job=limits.per_job,
        ))  # fmt: skip
    except PilotageError as exc:
        log.warning("session in job %s refused for %s: %s", job_id[:32],
                    who.name if who else "an unknown caller", exc.message)  # fmt: skip
        if who is not None and not isinstance(exc, Transient):
            refused, actor, error = request, actor_of(who), exc
            await _write(ctx, lambda conn: sessions.record_refusal(
                conn, actor, job_id, refused, error, ctx.clock()))  # fmt: skip
        await _refuse(websocket, exc)
        return
    offer = Offer(opened.session_id, opened.claim_id, opened.job, request, limits)
    waiting = relay.expect(opened.pilot_id, offer)
    log.info("session %s: %s opened %s in job %s of %s (claim %s, pilot %s)",
             opened.session_id, who.name, request.kind, opened.job, opened.owner,
             opened.claim_id, opened.pilot_id)  # fmt: skip
    ending = Ending("closed", "the user left before the session began", None, 0, 0)
    try:
        await websocket.accept()
        pilot = await _wait_pilot(websocket, waiting.joined, opened.job, limits.join_s)
        if isinstance(pilot, Ending):
            ending = pilot
            if ending.why != "closed":
                await websocket.send_json({"type": "end", "why": ending.why,
                                           "reason": ending.reason})  # fmt: skip
                await websocket.close()
            return
        await websocket.send_json({"type": "started", "session": opened.session_id,
                                   "frame_bytes": limits.frame_bytes})  # fmt: skip
        ending = await pipe(websocket, pilot, opened.job, limits)
    finally:
        relay.forget(opened.session_id)
        log.info("session %s ended (%s: %s; exit %s; %d bytes in, %d out)", opened.session_id,
                 ending.why, ending.reason, ending.exit_code, ending.bytes_in,
                 ending.bytes_out)  # fmt: skip
        await _write(ctx, lambda conn: sessions.end(conn, opened.session_id, ending, ctx.clock()))


async def _wait_pilot(
    user: WebSocket, joined: asyncio.Future[WebSocket], job: str, join_s: float
) -> WebSocket | Ending:
    """The pilot's connection once it joins; else why the session cannot begin (the user
    left, sent data before ``started``, or the pilot did not come within ``join_s``)."""
    receive = asyncio.ensure_future(user.receive())
    both: set[asyncio.Future[Any]] = {receive, joined}
    try:
        done, _ = await asyncio.wait(both, timeout=join_s,
                                     return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
    finally:
        receive.cancel()
    if joined in done and not joined.cancelled():
        return joined.result()
    if receive in done and not receive.cancelled():
        if receive.result()["type"] == "websocket.disconnect":
            return Ending("closed", "the user left before the session began", None, 0, 0)
        return Ending("bad-input", "the client sent data before the session started", None, 0, 0)
    return Ending("unavailable", f"the pilot of job {job} did not open the session within "
                  f"{join_s:g} s; try again", None, 0, 0)  # fmt: skip


@router.get("/pilot/v1/pilots/{pilot_id}/sessions")
async def pilot_offers(
    pilot_id: str,
    request: Request,
    ctx: LoopCtx,
    who: Pilot,
    secret: Secret,
    wait_s: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 0.0,
) -> dict[str, Any]:
    """The sessions this pilot must open, waiting up to ``wait_s`` for one."""

    def check() -> None:
        with ctx.store.read() as conn:
            registry.require_active(registry.owned(conn, pilot_id, who.name, secret))

    proofs: dict[tuple[str, str, str], float] = request.app.state.session_proofs
    proof = (pilot_id, who.name, registry.secret_digest(secret))
    now = time.monotonic()
    if proofs.get(proof, 0.0) < now:
        await run_in_threadpool(check)
        if len(proofs) >= _MAX_PROOFS:
            proofs.clear()
        proofs[proof] = now + PROOF_TTL_S
    relay: Relay = request.app.state.relay
    waiting = asyncio.ensure_future(relay.wait_offers(pilot_id, wait_s))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        # A pilot that went away (killed, or left) must not hold the server's shutdown.
        await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not waiting.done():
        waiting.cancel()
        return {"v": 1, "sessions": []}
    return {"v": 1, "sessions": [o.to_wire() for o in waiting.result()]}


async def _disconnected(request: Request) -> None:
    """Return once the client has closed its connection (the request has no body)."""
    while (await request.receive())["type"] != "http.disconnect":
        continue


@router.websocket("/pilot/v1/claims/{claim_id}/session/{session_id}")
async def pilot_session(websocket: WebSocket, claim_id: str, session_id: str) -> None:
    """The pilot's end of a session it was offered, for a claim it holds."""
    ctx, relay, _limits = _parts(websocket.app)
    try:
        who = require(ctx.tokens.principal(websocket), Role.PILOT)
        secret = websocket.headers.get(PILOT_SECRET_HEADER)
        if not secret:
            raise Unauthenticated(f"no pilot secret: send the {PILOT_SECRET_HEADER} header")
        now = ctx.clock()

        def check(proof: str) -> None:
            with ctx.store.read() as conn:
                claims.held_claim(conn, claim_id, who.name, proof)

        await run_in_threadpool(check, secret)
        waiting = relay.take(session_id, claim_id)
        if waiting is None:
            raise Conflict(f"session {session_id} of claim {claim_id} is not waiting on this "
                           "server (it ended, or another server holds it)")  # fmt: skip
        await _write(ctx, lambda conn: sessions.join(conn, session_id, claim_id, now))
    except PilotageError as exc:
        log.warning("pilot session %s of claim %s refused: %s", session_id[:32], claim_id[:64],
                    exc.message)  # fmt: skip
        await _refuse(websocket, exc)
        return
    await websocket.accept()
    if waiting.joined.done():  # the user gave up meanwhile
        await websocket.close()
        return
    waiting.joined.set_result(websocket)
    await waiting.done.wait()  # the user's handler pipes, then closes this connection


@router.get("/api/v1/sessions")
def audit(ctx: Ctx, who: User, job: str | None = None) -> list[dict[str, Any]]:
    """Sessions opened or refused: every one for an admin, else those in the caller's
    jobs and those the caller asked for."""
    with ctx.store.read() as conn:
        return sessions.list_sessions(conn, actor_of(who), job)
