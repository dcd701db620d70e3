"""Who is looking at a page: a session cookie, or the API's own ways in.

A browser carries the session cookie that a sign-in opened (:mod:`pilotage.web.sessions`).
Scripts may also send a bearer token, and local users may come through the Unix socket,
exactly as for the API (:class:`pilotage.api.auth.Authenticator`). Pages are for people:
only the user and admin roles may see them.

The cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's
page sends it) and, over TLS, ``Secure`` with the ``__Host-`` prefix (bound to this host
and path ``/``, never set by a subdomain or over plain HTTP).
"""

from __future__ import annotations

from fastapi import Request, Response

from pilotage.api.auth import PEER_KEY, Principal
from pilotage.api.context import ServerContext
from pilotage.credentials.tokens import Role
from pilotage.web.errors import CrossOrigin, NotSignedIn, RoleNotForPages
from pilotage.web.sessions import session_principal

COOKIE_TLS = "__Host-pilotage-session"
COOKIE_PLAIN = "pilotage-session"


def context(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx


def cookie_name(request: Request) -> str:
    """The session cookie's name: ``__Host-`` prefixed over TLS."""
    return COOKIE_TLS if request.url.scheme == "https" else COOKIE_PLAIN


def for_pages(who: Principal) -> Principal:
    """Refuse a credential whose role is not user or admin."""
    if who.role not in (Role.USER, Role.ADMIN):
        raise RoleNotForPages(
            f"{who.name} has the {who.role.value} role; the pages are for users and admins"
        )
    return who


def caller(request: Request) -> Principal | None:
    """The signed-in caller, or ``None`` for a visitor with no credential at all.

    A bad bearer token is refused (401), not ignored: a script should hear why.
    """
    ctx = context(request)
    secret = request.cookies.get(cookie_name(request))
    if secret:
        with ctx.store.read() as conn:
            who = session_principal(conn, secret, ctx.clock())
        if who is not None and not ctx.authenticator.revoked(who):
            return for_pages(who)
    peer = (request.scope.get("extensions") or {}).get(PEER_KEY)
    if "authorization" in request.headers or peer is not None:
        return for_pages(ctx.authenticator.principal(request))
    return None


def require_caller(request: Request) -> Principal:
    """The signed-in caller, or :class:`NotSignedIn`."""
    who = caller(request)
    if who is None:
        raise NotSignedIn("sign in first: with a token, or a link from 'pilotage web'")
    return who


def set_session(request: Request, response: Response, secret: str, max_age_s: float) -> None:
    """Give the browser the session cookie."""
    response.set_cookie(
        cookie_name(request),
        secret,
        max_age=max(1, int(max_age_s)),
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def clear_session(request: Request, response: Response) -> None:
    response.delete_cookie(
        cookie_name(request),
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def check_same_origin(request: Request) -> None:
    """Refuse a form posted from another site's page (login CSRF, forced sign-out).

    Browsers send ``Origin`` (and ``Sec-Fetch-Site``) with every form post; a client
    that sends neither is not a browser acting for someone else.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise CrossOrigin(f"a form posted from a {site} page is refused; use this site's own")
    origin = request.headers.get("origin")
    expected = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if origin is not None and origin != expected:
        raise CrossOrigin(f"a form posted from {origin} is refused; use this site's own pages")
