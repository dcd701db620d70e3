"""Signing in and out of the pages, and the API call behind ``pilotage web``.

Three ways to a session, all ending in the same cookie (:mod:`pilotage.web.identity`):

* a token pasted on the sign-in page (a user's or an admin's; one from ``pilotage
  login`` serves certificate and proxy holders);
* a one-time link that ``pilotage web`` prints: opening it shows whom it signs in and a
  button; the button's post spends the link. A GET never spends it, so a link preview
  or a prefetch cannot use it up, and the post is same-site, so the ``SameSite=Strict``
  cookie it sets is sent on the very next page;
* none at all for a script with a bearer token or a local user on the Unix socket.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import Field
from starlette.requests import HTTPConnection

from pilotage.api.auth import Principal
from pilotage.api.wire import Strict
from pilotage.errors import BadInput, PilotageError
from pilotage.web import sessions
from pilotage.web.identity import (
    caller,
    check_same_origin,
    clear_session,
    context,
    cookie_name,
    for_pages,
    set_session,
)
from pilotage.web.render import SECURITY_HEADERS, error_page, page
from pilotage.web.respond import local_target

router = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api/v1")

#: The largest sign-in form accepted (a token is a few hundred bytes).
MAX_FORM = 16 * 1024


async def _form(request: Request) -> dict[str, str]:
    """A small url-encoded form, each field once."""
    body = await request.body()
    if len(body) > MAX_FORM:
        raise BadInput(f"the form is larger than {MAX_FORM} bytes")
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=8, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise BadInput("the form is not url-encoded UTF-8 text") from None
    return {k: v[-1] for k, v in fields.items()}


def _lifetime(request: Request) -> float:
    return float(context(request).settings.credentials.session_lifetime_s)


def _signed_in(request: Request, secret: str, until: float, target: str) -> Response:
    response = RedirectResponse(local_target(target), status_code=303, headers=SECURITY_HEADERS)
    set_session(request, response, secret, until - context(request).clock())
    return response


@router.get("/web/signin")
def signin_page(request: Request) -> Response:
    target = local_target(request.query_params.get("next"))
    try:
        who = caller(request)
    except PilotageError:
        who = None  # a stale or refused credential: offer to sign in again
    if who is not None:
        return RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
    return page(request, "signin.html", None, {"next": target, "error": None}, title="Sign in")


def token_principal(request: Request, token: str) -> tuple[Principal, float]:
    """Check a pasted token exactly as the API checks a bearer token; its caller and end."""
    ctx = context(request)
    scope = {"type": "http", "headers": [(b"authorization", f"Bearer {token}".encode())]}
    who = for_pages(ctx.authenticator.principal(HTTPConnection(scope)))
    return who, ctx.issuer.verify(token).expires_at


@router.post("/web/signin")
async def signin_with_token(request: Request) -> Response:
    """A pasted token opens a session that ends no later than the token."""
    target = "/web/"
    try:
        check_same_origin(request)
        form = await _form(request)
        target = local_target(form.get("next"))
        token = form.get("token", "").strip()
        if not token:
            raise BadInput("token: paste a token (from 'pilotage token issue' or 'pilotage login')")
        if len(token) > 8192:
            raise BadInput("token: longer than any token of this pool")
        who, expires_at = token_principal(request, token)
        ctx = context(request)
        now = ctx.clock()
        until = min(now + _lifetime(request), expires_at)
        with ctx.store.write() as conn:
            secret = sessions.open_session(conn, who, now, until)
    except PilotageError as exc:
        data = {"next": target, "error": exc.message}
        return page(request, "signin.html", None, data, status=exc.http_status, title="Sign in")
    return _signed_in(request, secret, until, target)


@router.get("/web/login")
def link_page(request: Request) -> Response:
    """What a link from ``pilotage web`` opens: whom it signs in, and a button."""
    key = request.query_params.get("key", "")
    target = local_target(request.query_params.get("next"))
    ctx = context(request)
    try:
        if not key or len(key) > 128:
            raise BadInput("this page needs the link's key; run 'pilotage web' for a link")
        with ctx.store.read() as conn:
            link = sessions.peek_link(conn, key, ctx.clock())
    except PilotageError as exc:
        return error_page(request, None, exc)
    data = {"link": link, "key": key, "next": target}
    return page(request, "link.html", None, data, title="Sign in")


@router.post("/web/login")
async def link_signin(request: Request) -> Response:
    """Spend a link; open its session."""
    ctx = context(request)
    try:
        check_same_origin(request)
        form = await _form(request)
        key = form.get("key", "")
        if not key or len(key) > 128:
            raise BadInput("key: the form lost the link's key; open the link again")
        with ctx.store.write() as conn:
            secret, until = sessions.spend_link(conn, key, ctx.clock(), _lifetime(request))
    except PilotageError as exc:
        return error_page(request, None, exc)
    return _signed_in(request, secret, until, form.get("next", "/web/"))


@router.post("/web/signout")
async def signout(request: Request) -> Response:
    ctx = context(request)
    try:
        check_same_origin(request)
    except PilotageError as exc:
        return error_page(request, None, exc)
    secret = request.cookies.get(cookie_name(request))
    if secret:
        with ctx.store.write() as conn:
            sessions.close_session(conn, secret)
    response = RedirectResponse("/web/signin", status_code=303, headers=SECURITY_HEADERS)
    clear_session(request, response)
    return response


# --- the API call behind 'pilotage web' ---------------------------------------------


class LinkRequest(Strict):
    """Ask for a one-time sign-in link, optionally to a given page."""

    next: Annotated[str, Field(max_length=1024)] = "/web/"


def _api_caller(request: Request) -> Principal:
    return for_pages(context(request).authenticator.principal(request))


@api.post("/web/links", status_code=201)
def new_link(
    body: LinkRequest, request: Request, who: Annotated[Principal, Depends(_api_caller)]
) -> dict[str, object]:
    """A one-time link (path and query) that signs the caller in to the pages; its session
    ends no later than the caller's own token."""
    ctx = context(request)
    now = ctx.clock()
    until = now + _lifetime(request)
    if who.via == "token":
        token = request.headers.get("authorization", "").partition(" ")[2].strip()
        until = min(until, ctx.issuer.verify(token).expires_at)
    with ctx.store.write() as conn:
        secret = sessions.issue_link(conn, who, now, until)
    query = urlencode({"key": secret, "next": local_target(body.next)})
    return {
        "path": f"/web/login?{query}",
        "name": who.name,
        "role": who.role.value,
        "expires_at": now + sessions.LINK_TTL_S,
    }
