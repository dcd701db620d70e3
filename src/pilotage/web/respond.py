"""The frame of every page route: who is asking, the sign-in page for nobody, and every
refusal or fault as a page with its sentence and status (503 with Retry-After when the
database is out of reach, never a bare 500)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import quote, urlsplit

import sqlalchemy as sa
from fastapi import Request, Response
from fastapi.responses import RedirectResponse

from pilotage.api.auth import Principal
from pilotage.errors import BadInput, PilotageError, Transient
from pilotage.web.identity import caller
from pilotage.web.render import SECURITY_HEADERS, error_page

log = logging.getLogger("pilotage.web")

#: Query-string keys and values longer than this are refused before any parsing.
MAX_QUERY = 4096


def local_target(value: str | None) -> str:
    """Where to go after signing in: a path of the pages, never another site."""
    if not value:
        return "/web/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not parts.path.startswith("/web/") or "\\" in value:
        return "/web/"
    return value


def show(request: Request, build: Callable[[Principal], Response]) -> Response:
    """Answer ``build(caller)``, or the sign-in page's redirect, or an error page."""
    who: Principal | None = None
    try:
        if len(request.url.query) > MAX_QUERY:
            raise BadInput(f"the query string is longer than {MAX_QUERY} bytes; shorten it")
        who = caller(request)
        if who is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(
                f"/web/signin?next={quote(target, safe='')}",
                status_code=303,
                headers={**SECURITY_HEADERS, "Cache-Control": "no-store"},
            )
        return build(who)
    except PilotageError as exc:
        return error_page(request, who, exc)
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        log.warning("page %s: database unavailable: %s", request.url.path, exc)
        fault = Transient("the pool's database is unavailable; try again shortly", 5)
        return error_page(request, who, fault)
