"""The HTTP application: routers, and errors turned into one-sentence JSON answers."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from pilotage import __version__
from pilotage.api import (
    admin,
    credentials,
    faults,
    health,
    jobs,
    listing,
    matchmaking,
    pilots,
    pool_admin,
    provisioning,
    tails,
    users,
)
from pilotage.api.context import ServerContext
from pilotage.api.sessions import install as install_sessions
from pilotage.credentials.service import CredentialService
from pilotage.errors import PilotageError, Transient
from pilotage.web.mount import mount as mount_web

log = logging.getLogger("pilotage.api")


def _error(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": kind, "message": message}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    """One sentence naming the first bad field of a request body or query."""
    errors = exc.errors()
    if not errors:
        return "the request is not valid"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"


def create_app(ctx: ServerContext) -> FastAPI:
    """The server's FastAPI application over ``ctx``."""
    app = FastAPI(title="pilotage", version=__version__, docs_url=None, redoc_url=None)
    app.state.ctx = ctx
    app.state.credentials = creds = CredentialService.build(ctx.state, ctx.settings)
    # The [authz] rules apply to every token, so the authenticator carries them (set on the
    # context's own authenticator: whatever wraps it, a cache say, must see them too).
    ctx.authenticator.rules = creds.rules
    admin.setup(ctx)  # issued tokens recorded, revoked ones refused
    app.include_router(users.router)
    app.include_router(listing.router)  # GET /jobs (pages, streamed) and /batches
    app.include_router(jobs.router)
    app.include_router(pilots.router)
    app.include_router(admin.router)
    app.include_router(pool_admin.router)
    app.include_router(credentials.router)
    app.include_router(provisioning.router)
    app.include_router(matchmaking.router)
    app.include_router(tails.pilot_router)  # pilotage tail: stdout of streaming jobs
    app.include_router(tails.user_router)
    install_sessions(app, ctx)  # exec-in-job and ssh-to-job: the relay and its limits
    mount_web(app, ctx)  # the pages, their sign-in, and /metrics

    @app.exception_handler(PilotageError)
    async def on_pilotage_error(_request: Request, exc: PilotageError) -> JSONResponse:
        headers = None
        if isinstance(exc, Transient):
            headers = {"Retry-After": str(max(1, int(exc.retry_after_s)))}
        if exc.http_status >= 500:
            log.error("%s: %s", type(exc).__name__, exc.message)
        return _error(exc.http_status, type(exc).__name__, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "BadInput", _validation_message(exc))

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, "InternalError", "internal server error; see the server's log")

    faults.install(app)  # database and disk faults: 503 with Retry-After, never 500
    app.include_router(health.router)  # /healthz and /readyz
    return app
