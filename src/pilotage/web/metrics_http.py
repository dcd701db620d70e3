"""In-process timings: every HTTP request by method, route template and status; every
database statement by kind; and the ``/metrics`` route that serves them all.

The route label is the template (``/api/v1/jobs/{job_id}/events``), never the raw path,
so the number of series stays that of the routes; a request no route matched is
``unmatched``. Timing a request costs two clock reads and one histogram update, cheap
beside the pilot protocol's calls.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from pilotage.api.auth import require
from pilotage.credentials.tokens import Role
from pilotage.errors import Transient
from pilotage.store.engine import Store

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
DB_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
_KINDS = frozenset({"select", "insert", "update", "delete", "with", "begin", "commit"})


class RequestTimer:
    """ASGI middleware observing each HTTP request's duration (until its last byte)."""

    def __init__(
        self, app: Callable[[Scope, Receive, Send], Awaitable[None]], histogram: Histogram
    ):
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.histogram.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - started
            )


def request_histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram(
        "pilotage_api_request_duration_seconds",
        "HTTP requests served, by method, route template and status.",
        ["method", "route", "status"],
        buckets=REQUEST_BUCKETS,
        registry=registry,
    )


def time_statements(store: Store, registry: CollectorRegistry) -> None:
    """Observe every statement the store's engines run, by its first word."""
    histogram = Histogram(
        "pilotage_db_query_duration_seconds",
        "Database statements run by this server, by kind (select, insert, update, ...).",
        ["operation"],
        buckets=DB_BUCKETS,
        registry=registry,
    )
    # SQLite has a second engine for reads (see Store); PostgreSQL reads with the first.
    engines = {id(e): e for e in (store.engine, getattr(store, "_read_engine", store.engine))}

    def before(conn: sa.Connection, *_args: Any) -> None:
        conn.info.setdefault("pilotage.t0", []).append(time.perf_counter())

    # The series each statement text goes to, found once per text (the pilot protocol's
    # statements run thousands of times a second: a label look-up each is not cheap).
    series: dict[str, Any] = {}

    def after(conn: sa.Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        starts = conn.info.get("pilotage.t0")
        if not starts:
            return
        elapsed = time.perf_counter() - starts.pop()
        child = series.get(statement)
        if child is None:
            word = statement.lstrip()[:8].split(None, 1)[0].lower() if statement.strip() else ""
            if len(series) >= 4096:
                series.clear()
            child = series[statement] = histogram.labels(word if word in _KINDS else "other")
        child.observe(elapsed)

    for engine in engines.values():
        sa.event.listen(engine, "before_cursor_execute", before)
        sa.event.listen(engine, "after_cursor_execute", after)


def metrics_router(registry: CollectorRegistry) -> APIRouter:
    """``GET /metrics`` for users, admins, frontends and factories (not pilots)."""
    router = APIRouter(include_in_schema=False)

    @router.get("/metrics")
    async def metrics(request: Request) -> Response:
        ctx = request.app.state.ctx
        require(
            ctx.authenticator.principal(request), Role.USER, Role.ADMIN, Role.FRONTEND, Role.FACTORY
        )
        try:
            body = await run_in_threadpool(generate_latest, registry)
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise Transient(f"the pool's database is unavailable: {str(exc)[:200]}", 5) from None
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})

    return router
