"""Faults of the moment answered as 503, never 500: the API's half of
:mod:`pilotage.store.faults`.

:func:`install` adds exception handlers for what the database layer and the operating
system raise. A failure :func:`~pilotage.store.faults.classify` recognises (PostgreSQL
stopped, SQLite locked or read-only, a full disk, an exhausted pool) is answered ``503``
with ``Retry-After`` and the API's one error body, ``{"error": "Transient", "message":
...}``, whose message says what is down; the CLI prints it and exits 75. Anything else
raised there is a bug: logged with its traceback and answered 500, as every other bug,
except a value the database cannot store (text holding NUL, a number out of range):
the request's own fault, answered 422 (:func:`unstorable`), though the API's edge
should have refused it first.

A database that is down fails every request, so the log would fill with one line each:
:class:`FaultLog` writes one line when a kind of fault starts being answered, then at
most one a minute while it lasts, with how many requests it refused.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from pilotage.store.faults import Fault, FaultKind, classify

log = logging.getLogger("pilotage.api")


class FaultLog:
    """One log line when a kind of fault is first answered, then one a minute at most."""

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._every_s = every_s
        self._clock = clock
        self._lock = threading.Lock()
        # Invariant: a kind is here from its first logged line; ``refused`` counts the
        # requests answered 503 for it since that line.
        self._last: dict[FaultKind, float] = {}
        self._refused: dict[FaultKind, int] = {}

    def record(self, fault: Fault, exc: BaseException, where: str) -> None:
        """Note one request refused for ``fault``; log it if a line is due."""
        now = self._clock()
        with self._lock:
            refused = self._refused.get(fault.kind, 0) + 1
            last = self._last.get(fault.kind)
            due = last is None or now - last >= self._every_s
            if due:
                self._last[fault.kind] = now
                self._refused[fault.kind] = 0
            else:
                self._refused[fault.kind] = refused
        if not due:
            return
        if last is None:
            log.warning("answering 503 (%s) from %s: %s", fault.kind.value, where, _cause(exc))
        else:
            log.warning(
                "still answering 503 (%s): %d requests refused in the last %.0f s; last: %s",
                fault.kind.value, refused, now - last, _cause(exc),
            )  # fmt: skip


def _cause(exc: BaseException) -> str:
    """The original error, on one line (the server's log may name paths and hosts)."""
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split())
    return f"{type(orig).__name__}: {text[:500]}"


def transient_response(fault: Fault) -> JSONResponse:
    """The 503 answer for ``fault``: the API's error body and ``Retry-After``."""
    return JSONResponse(
        {"error": "Transient", "message": fault.message},
        status_code=503,
        headers={"Retry-After": str(max(1, round(fault.retry_after_s)))},
    )


def unstorable(exc: BaseException) -> str | None:
    """Why the database refused a value of the request (a DataError), or None."""
    if not isinstance(exc, sa.exc.DataError):
        return None
    text = str(getattr(exc, "orig", None) or exc).lower()
    if "nul" in text and ("0x00" in text or "\\x00" in text or "character" in text):
        return "a text value holds a NUL character (\\u0000), which cannot be stored; remove it"
    if "out of range" in text:
        return "a number is out of the range the server stores; use a smaller one"
    return None


def install(app: FastAPI, faults: FaultLog | None = None) -> FaultLog:
    """Answer database and disk faults 503 (see the module's docstring); return the log."""
    faults = faults or FaultLog()

    async def on_fault(request: Request, exc: Exception) -> JSONResponse:
        found = classify(exc)
        bad = unstorable(exc) if found is None else None
        if bad is not None:
            log.warning("refused %s %s: %s", request.method, request.url.path, _cause(exc))
            return JSONResponse({"error": "BadInput", "message": bad}, status_code=422)
        if found is None:  # a bug: as the application's last-resort handler does
            log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
            return JSONResponse(
                {
                    "error": "InternalError",
                    "message": "internal server error; see the server's log",
                },
                status_code=500,
            )
        faults.record(found, exc, f"{request.method} {request.url.path}")
        return transient_response(found)

    app.add_exception_handler(sa.exc.SQLAlchemyError, on_fault)
    app.add_exception_handler(OSError, on_fault)
    return faults
