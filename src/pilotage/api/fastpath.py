"""The pilot protocol's two hottest calls served without FastAPI's routing.

Every job costs a request for work and a result (``POST /pilot/v1/pilots/{id}/claims``
and ``.../results``), from every pilot of the pool. Through FastAPI, the route's
matching among every route of the API, its dependencies and its wrappers cost more
than the call's own work. :class:`PilotFastPath`, an ASGI middleware inside the
application's others (the request timer, the NUL check), serves these two calls when
they are well formed: a JSON body of at most :data:`MAX_BODY` bytes that the route's own
model accepts (validated as FastAPI does: ``json.loads`` then the model in Python mode),
the pilot role, and a pilot secret. It then calls what the route calls
(:mod:`pilotage.api.pilot_work`), and answers a refusal raised there with the
application's own exception handlers. Anything else (no token, no secret, a body that is
not JSON or that the model refuses, another content type) goes on to FastAPI, whose
answer is the refusal: so every refusal is exactly the route's, and the route's
declaration stays what the OpenAPI document says.
"""

from __future__ import annotations

import email.message
import inspect
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from pilotage.api import pilot_work, pilots
from pilotage.api.auth import Principal, require
from pilotage.api.context import ServerContext
from pilotage.api.wire import PILOT_SECRET_HEADER, Results, WorkRequest
from pilotage.credentials.tokens import Role
from pilotage.errors import PilotageError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The calls served here: their path and the model of their body.
_CALLS: dict[str, type[BaseModel]] = {"claims": WorkRequest, "results": Results}
_PATH = re.compile(r"/pilot/v1/pilots/([^/]+)/(claims|results)")
#: Larger bodies (many results, long failure reasons) take the ordinary route.
MAX_BODY = 256 * 1024
_SECRET = PILOT_SECRET_HEADER.lower().encode()


class PilotFastPath:
    """Serves well-formed requests for work and results; passes on everything else."""

    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api
        # The routes' own objects, for what reads the scope's route (the request timer).
        self.routes = {
            name: next(
                r
                for r in pilots.router.routes
                if getattr(r, "path", None) == f"/pilot/v1/pilots/{{pilot_id}}/{name}"
                and "POST" in getattr(r, "methods", ())
            )
            for name in _CALLS
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        match = _PATH.fullmatch(scope["path"])
        length = _content_length(scope) if match else None
        if match is None or length is None or not 0 < length <= MAX_BODY:
            await self.app(scope, receive, send)
            return
        messages = await _read(receive, length)
        call = _Call(scope, _replay(messages, receive), match.group(1), match.group(2))
        body = _whole(messages, length)
        if body is None or not await self._serve(call, body, send):
            await self.app(scope, call.receive, send)

    async def _serve(self, call: _Call, body: bytes, send: Send) -> bool:
        """Answer the call if it is well formed (true); else leave it to FastAPI."""
        request = Request(call.scope, call.receive)
        ctx: ServerContext = self.api.state.ctx
        parsed = _parse(request, body, _CALLS[call.name])
        who = _pilot(ctx, request)
        secret = request.headers.get(PILOT_SECRET_HEADER)
        if parsed is None or who is None or not secret:
            return False
        call.scope["route"] = self.routes[call.name]
        call.scope["path_params"] = {"pilot_id": call.pilot_id}
        try:
            if isinstance(parsed, WorkRequest):
                response = await pilot_work.ask(ctx, request, call.pilot_id, parsed, who, secret)
            else:
                assert isinstance(parsed, Results)
                response = await pilot_work.report(ctx, call.pilot_id, parsed, who, secret)
        except Exception as exc:  # noqa: BLE001  (answered as the application answers it)
            response = await self._refusal(request, exc)
        await response(call.scope, call.receive, send)
        return True

    async def _refusal(self, request: Request, exc: Exception) -> Response:
        """The application's answer to ``exc`` (its exception handlers); re-raised when
        it has none (a bug: the server's error middleware answers 500)."""
        for cls in type(exc).__mro__:
            if cls is Exception:  # the error middleware's: a bug, answered 500
                break
            handler = self.api.exception_handlers.get(cls)
            if handler is not None:
                answered = handler(request, exc)
                response: Response = await answered if inspect.isawaitable(answered) else answered
                return response
        raise exc


class _Call:
    """A request the fast path looks at: its scope, a receive that replays its body."""

    __slots__ = ("name", "pilot_id", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive, pilot_id: str, name: str) -> None:
        self.scope = scope
        self.receive = receive
        self.pilot_id = pilot_id
        self.name = name


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def _read(receive: Receive, length: int) -> list[Message]:
    """The messages that carry the body, up to its end or ``length`` bytes."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages
        size += len(message.get("body", b""))
        if size > length:
            return messages


def _whole(messages: list[Message], length: int) -> bytes | None:
    """The body, if ``messages`` carry it whole and it is ``length`` bytes long."""
    if messages[-1]["type"] != "http.request" or messages[-1].get("more_body", False):
        return None
    body = b"".join(m.get("body", b"") for m in messages)
    return body if len(body) == length else None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that gives ``messages`` again first, then what ``receive`` gives."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def _parse(request: Request, body: bytes, model: type[BaseModel]) -> BaseModel | None:
    """The body as FastAPI would have it for the route, or None if it would refuse it
    (FastAPI then says why)."""
    content_type = request.headers.get("content-type")
    if not content_type:
        return None
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    if message.get_content_maintype() != "application" or not (
        subtype == "json" or subtype.endswith("+json")
    ):
        return None
    try:
        return model.model_validate(json.loads(body))
    except (ValueError, ValidationError):  # JSON, UTF-8 and the model's own refusals
        return None


def _pilot(ctx: ServerContext, request: Request) -> Principal | None:
    """The caller if it holds the pilot role, else None (FastAPI then refuses it)."""
    try:
        return require(ctx.tokens.principal(request), Role.PILOT)
    except PilotageError:
        return None
