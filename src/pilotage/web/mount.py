"""Putting the pages and ``/metrics`` on the server's application (called by
:func:`pilotage.api.app.create_app`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from pilotage.api.context import ServerContext
from pilotage.web import pages, signin
from pilotage.web.metrics import build_registry
from pilotage.web.metrics_http import (
    RequestTimer,
    metrics_router,
    request_histogram,
    time_statements,
)

STATIC = Path(__file__).with_name("static")


class _Static(StaticFiles):
    """The pages' script, style sheet and chart library: public, cached for an hour."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "public, max-age=3600"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def mount(app: FastAPI, ctx: ServerContext) -> None:
    """Add the pages, their static files, ``/metrics`` and the request timer to ``app``."""
    registry, _feed = build_registry(ctx.store, ctx.clock)
    time_statements(ctx.store, registry)
    app.add_middleware(RequestTimer, histogram=request_histogram(registry))
    app.include_router(signin.router)
    app.include_router(signin.api)
    app.include_router(pages.router)
    app.include_router(metrics_router(registry))
    app.mount("/web/static", _Static(directory=STATIC), name="web-static")
    app.state.metrics = registry
