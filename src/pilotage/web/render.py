"""Turning page data into HTML answers: templates, formats, and the headers every page has.

Templates are Jinja2 with autoescaping on; pages load only this server's own script and
style sheet (the Content-Security-Policy forbids anything else, inline code included),
so chart data travels as a JSON block the script reads, never as code.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from pilotage import __version__
from pilotage.api.auth import Principal
from pilotage.errors import PilotageError, Transient

#: Nothing but this server's own files; no inline script or style, no frames, no plugins.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Sign-in links carry a secret in the URL: never send it to another site as a Referer
    # ("no-referrer" would also make forms post "Origin: null", which we refuse).
    "Referrer-Policy": "same-origin",
}

#: The pages of the navigation bar: (path, label).
NAV = (
    ("/web/", "Overview"),
    ("/web/jobs", "Jobs"),
    ("/web/history", "History"),
    ("/web/sites", "Sites"),
    ("/web/users", "Users"),
    ("/web/accounting", "Accounting"),
)


#: Pages that do not update themselves.
STILL = frozenset({"signin.html", "link.html", "error.html"})


def when(ts: float | None) -> str:
    """An epoch time as ``YYYY-MM-DD HH:MM:SS`` in UTC (empty for none)."""
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def duration(seconds: float | None) -> str:
    """Seconds as ``1h02m``, ``3m05s`` or ``4.2s`` (empty for none)."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{(whole % 3600) // 60:02d}m"


def hours(seconds: float | None) -> str:
    """Seconds as hours with two decimals."""
    return f"{(seconds or 0) / 3600:.2f}"


def number(value: float | int | None) -> str:
    """A count with thousands separators; floats with at most two decimals."""
    if value is None:
        return ""
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def as_json(value: Any) -> Markup:
    """``value`` as JSON safe inside a ``<script type="application/json">`` block."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False, default=_plain)
    # "</" would end the block; the other two keep the text valid in any HTML context.
    return Markup(  # noqa: S704  (escaped just above; JSON, not markup)
        text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    )


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"{type(value).__name__} is not JSON")


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("pilotage.web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, duration=duration, hours=hours, number=number, as_json=as_json)
    env.globals.update(NAV=NAV, version=__version__)
    return env


ENV = _environment()


def page(
    request: Request,
    template: str,
    who: Principal | None,
    data: Mapping[str, Any],
    *,
    status: int = 200,
    title: str,
) -> HTMLResponse:
    """Render ``template`` as a whole page with the security headers."""
    ctx = request.app.state.ctx
    values = {
        "request": request,
        "who": who,
        "title": title,
        "path": request.url.path,
        "pool": ctx.settings.pool.name,
        # Pages with a caller's data update themselves; sign-in and errors do not.
        "live": who is not None and template not in STILL,
        "now": ctx.clock(),
        **data,
    }
    html = ENV.get_template(template).render(**values)
    return HTMLResponse(html, status_code=status, headers=private_headers())


def private_headers(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Headers of an answer that carries a caller's data: never cached."""
    return {**SECURITY_HEADERS, "Cache-Control": "no-store", **(extra or {})}


def error_page(request: Request, who: Principal | None, exc: PilotageError) -> HTMLResponse:
    """A refusal or failure as a page: its one sentence, with the error's status."""
    response = page(
        request,
        "error.html",
        who,
        {"message": exc.message, "kind": type(exc).__name__, "status": exc.http_status},
        status=exc.http_status,
        title="Error",
    )
    if isinstance(exc, Transient):
        response.headers["Retry-After"] = str(max(1, int(exc.retry_after_s)))
    return response
