"""How the API refuses: every error is ``{"error": <class>, "message": <one sentence>}``.

:func:`install` adds the application's exception handlers:

- a :class:`~pilotage.errors.PilotageError`: its own status and class name
  (``Retry-After`` on a :class:`~pilotage.errors.Transient`);
- a body that is not JSON at all (bad syntax, not UTF-8): 400 ``MalformedBody``; a body
  or parameter that is JSON but not what the route takes (wrong type, missing or
  unknown field, bad value): 422 ``BadInput``, naming the first bad field;
- a path or query holding a NUL character (``%00``): 422 ``BadInput`` before any route
  sees it (a body's text is :class:`pilotage.bodies.Body`'s);
- what the router itself refuses: an unknown path (404 ``NotFound``) and a method the
  path does not take (405 ``MethodNotAllowed``, its ``Allow`` header listing every
  method of the path, not only those of the first route that matched it);
- anything else is a bug: logged with its traceback, answered 500.

Database and disk faults are :mod:`pilotage.api.faults`' (503).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from pilotage.errors import MalformedBody, PilotageError, Transient

log = logging.getLogger("pilotage.api")

#: FastAPI's word for a JSON body it could not decode (not UTF-8).
_UNPARSED = "There was an error parsing the body"
#: What a caller who sent something else than a JSON body is told to do.
SEND_JSON = "send a JSON object with Content-Type: application/json"


def error(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The API's error answer."""
    return JSONResponse({"error": kind, "message": message}, status_code=status, headers=headers)


def validation_message(exc: RequestValidationError) -> str:
    """One sentence naming the first bad field of a request body or query."""
    errors = exc.errors()
    if not errors:
        return "the request is not valid"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    if first.get("loc") == ("body",) and first.get("type") in ("model_attributes_type",):
        return f"the body is not a JSON object: {SEND_JSON}"
    return f"{where}: {first.get('msg', 'invalid')}{more}"


def _not_json(exc: RequestValidationError) -> str | None:
    """Why the body is not JSON at all, or None when it is (and something else is wrong)."""
    for problem in exc.errors():
        if problem.get("type") == "json_invalid":
            why = (problem.get("ctx") or {}).get("error", "bad syntax")
            at = problem.get("loc", ("body", "?"))[-1]
            return f"the body is not valid JSON ({why} at character {at}): {SEND_JSON}"
    return None


#: The methods :func:`allowed_methods` tries.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the application takes on the request's path."""
    routes = request.app.router.routes
    return [
        method
        for method in METHODS
        if any(r.matches(dict(request.scope, method=method))[0] is Match.FULL for r in routes)
    ]


class RefuseNul:
    """Refuse an HTTP request whose path or query holds NUL: nothing wants one, and
    PostgreSQL cannot compare text with one."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            where = None
            if "\x00" in scope["path"]:
                where = "path"
            elif b"%00" in scope.get("query_string", b""):
                where = "query"
            if where is not None:
                message = f"the {where} holds a NUL character (%00); remove it"
                await error(422, "BadInput", message)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install(app: FastAPI) -> None:
    """Answer every error with the API's error body (see the module's docstring)."""
    app.add_middleware(RefuseNul)

    @app.exception_handler(PilotageError)
    async def on_pilotage_error(_request: Request, exc: PilotageError) -> JSONResponse:
        headers = None
        if isinstance(exc, Transient):
            headers = {"Retry-After": str(max(1, int(exc.retry_after_s)))}
        if exc.http_status >= 500:
            log.error("%s: %s", type(exc).__name__, exc.message)
        return error(exc.http_status, type(exc).__name__, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        malformed = _not_json(exc)
        if malformed is not None:
            return error(MalformedBody.http_status, MalformedBody.__name__, malformed)
        return error(422, "BadInput", validation_message(exc))

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
        status = exc.status_code
        headers = dict(exc.headers or {})
        if status == 400 and exc.detail == _UNPARSED:  # not UTF-8
            message = f"the body cannot be read as JSON (it is not UTF-8 text): {SEND_JSON}"
            return error(400, MalformedBody.__name__, message, headers)
        if status == 404 and exc.detail == HTTPStatus.NOT_FOUND.phrase:
            message = f"no such path: {request.url.path} (the API is described at /openapi.json)"
            return error(404, "NotFound", message, headers)
        if status == 405:
            methods = allowed_methods(request)
            headers["Allow"] = ", ".join(methods)
            message = f"{request.method} is not allowed on {request.url.path}; use " + (
                " or ".join(methods)
            )
            return error(405, "MethodNotAllowed", message, headers)
        known = status in {s.value for s in HTTPStatus}
        kind = "".join(HTTPStatus(status).phrase.split()) if known else "Error"
        return error(status, kind, str(exc.detail), headers)

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error(500, "InternalError", "internal server error; see the server's log")
