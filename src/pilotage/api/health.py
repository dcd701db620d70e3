"""``/healthz`` and ``/readyz``: what a monitor and a load balancer ask the server.

- ``GET /healthz`` (liveness and a report): always 200 while the process serves HTTP,
  with ``status`` ``ok`` or ``degraded`` and what was seen of the database (does it
  answer; for SQLite, can its directory be written) and of the spool (writable, free
  space). A monitor alerts on ``degraded``; nothing should restart the server for it.
- ``GET /readyz`` (readiness): 200 when the server can serve requests now, else 503 with
  ``Retry-After`` and the API's error body naming what is wrong, so a load balancer takes
  this server out until it passes again.

Neither needs a credential, and neither names a path, host or database URL: they may be
reachable from outside.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from pilotage import __version__
from pilotage.api.context import ServerContext
from pilotage.store.health import MIN_FREE_BYTES, Check, probe_database, probe_spool, sqlite_path

router = APIRouter()

#: What /readyz asks a load balancer to wait before asking again.
NOT_READY_RETRY_S = 5


def _database(ctx: ServerContext) -> Check:
    """The database answers; for SQLite, its directory can also still be written."""
    check = probe_database(ctx.store.read)
    path = sqlite_path(ctx.store.url)
    if not check.ok or path is None:
        return check
    try:
        st = os.statvfs(path.parent)
    except OSError as exc:
        return Check("database", False, f"the database's directory cannot be read: {exc.strerror}")
    if st.f_flag & os.ST_RDONLY:
        return Check("database", False, "the database is on a read-only file system")
    if st.f_bavail * st.f_frsize < MIN_FREE_BYTES:
        return Check("database", False, "the database's disk is full")
    if not os.access(path.parent, os.W_OK):
        return Check("database", False, "the database's directory is not writable")
    return check


def _report(ctx: ServerContext) -> tuple[bool, dict[str, Any], list[Check]]:
    database = _database(ctx)
    spool = probe_spool(ctx.spool.root, max(MIN_FREE_BYTES, ctx.spool.max_bytes))
    checks = [database, spool.check]
    ready = all(c.ok for c in checks)
    body: dict[str, Any] = {
        "status": "ok" if ready else "degraded",
        "version": __version__,
        "ready": ready,
        "database": database.as_dict(),
        "spool": {
            **spool.check.as_dict(),
            "writable": spool.writable,
            "free_mb": spool.free_bytes // (1024 * 1024),
        },
    }
    return ready, body, checks


@router.get("/healthz")
def healthz(request: Request) -> dict[str, Any]:
    """The server's health: 200 while it serves, ``status`` ``degraded`` on a fault."""
    _ready, body, _checks = _report(request.app.state.ctx)
    return body


@router.get("/readyz", responses={503: {"description": "not ready: the message says why"}})
def readyz(request: Request) -> JSONResponse:
    """200 when the server can serve requests now; 503 with Retry-After when not."""
    ready, body, checks = _report(request.app.state.ctx)
    if ready:
        return JSONResponse(body)
    why = "; ".join(c.detail for c in checks if not c.ok)
    return JSONResponse(
        {"error": "Transient", "message": f"this server is not ready: {why}"},
        status_code=503,
        headers={"Retry-After": str(NOT_READY_RETRY_S)},
    )
