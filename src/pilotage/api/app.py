"""The HTTP application: routers, and errors turned into one-sentence JSON answers."""

from __future__ import annotations

from fastapi import FastAPI

from pilotage import __version__
from pilotage.api import (
    admin,
    credentials,
    faults,
    health,
    jobs,
    listing,
    matchmaking,
    openapi,
    pilots,
    pool_admin,
    provisioning,
    refusals,
    tails,
    users,
)
from pilotage.api.context import ServerContext
from pilotage.api.fastpath import PilotFastPath
from pilotage.api.sessions import install as install_sessions
from pilotage.credentials.service import CredentialService
from pilotage.web.mount import mount as mount_web


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
    # Inside every middleware added after it (the request timer, the NUL check): serves
    # well-formed requests for work and results without FastAPI's routing.
    app.add_middleware(PilotFastPath, api=app)
    app.include_router(admin.router)
    app.include_router(pool_admin.router)
    app.include_router(credentials.router)
    app.include_router(provisioning.router)
    app.include_router(matchmaking.router)
    app.include_router(tails.pilot_router)  # pilotage tail: stdout of streaming jobs
    app.include_router(tails.user_router)
    install_sessions(app, ctx)  # exec-in-job and ssh-to-job: the relay and its limits
    mount_web(app, ctx)  # the pages, their sign-in, and /metrics

    refusals.install(app)  # every error as {"error", "message"}
    faults.install(app)  # database and disk faults: 503 with Retry-After, never 500
    app.include_router(health.router)  # /healthz and /readyz
    openapi.install(app)  # the contract: every refusal and constraint (docs/api.md)
    return app
