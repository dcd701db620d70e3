"""Requests for work held open until a job may be there for them (the work long-poll).

A pilot with free slots asks with ``wait_s`` (docs/pilot-protocol.md, "Ask for work").
When the matchmaker has no job for it, the server holds the request: not in a
transaction and not on a thread, but as a future on the event loop, until

- jobs become IDLE in this server process (submitted, released, requeued, vacated,
  freed: :data:`pilotage.queue.history.IDLE_NOTE`, told once their transaction has
  committed), or pilots are drained or retired through it
  (:data:`pilotage.collector.pilot_admin.PILOTS_NOTE`): every held request is woken and
  looks again at once (a drained or retiring pilot then hears so);
- ``retry_after_s`` has passed: it looks again anyway, for jobs another server sharing
  the database made idle, which this process is not told of;
- ``wait_s`` has passed, the pilot went away, or the server stops: it answers without a
  claim.

Each look is an ordinary dispatch through the write queue, so a held request is never
given a job another request of the same pilot was given, and the matchmaker's Rank
window (a job held back for a slot it ranks higher) works as it does for a pilot that
asks again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request


class WorkWaits:
    """The requests for work this server process holds, and what wakes them.

    Invariant: ``generation`` grows (on the event loop) every time jobs became IDLE, so
    a request that read it before its dispatch and finds it unchanged after has missed
    no job made idle here in between.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: set[asyncio.Future[None]] = set()
        self.generation = 0
        #: The server is stopping: nothing waits any more.
        self.closing = False

    def wake(self, _notes: list[Any]) -> None:
        """Jobs became IDLE, or pilots were drained or retired (a committed transaction
        says so): wake every held request, which looks again.

        Called from any thread; a no-op until a request has waited."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(self._wake)

    def close(self) -> None:
        """The server is stopping: every held request answers now (on the event loop)."""
        self.closing = True
        self._wake()

    def _wake(self) -> None:
        self.generation += 1
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, since: int, timeout_s: float, gone: asyncio.Future[None]) -> None:
        """Return once jobs became IDLE after generation ``since``, after ``timeout_s``,
        or when ``gone`` is done (the caller went away), whichever comes first."""
        if self.closing or self.generation != since or timeout_s <= 0 or gone.done():
            return
        loop = self._loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        self._waiters.add(woken)
        timer = loop.call_later(timeout_s, _settle, woken)

        def on_gone(_gone: asyncio.Future[None]) -> None:
            _settle(woken)

        gone.add_done_callback(on_gone)
        try:
            await woken
        finally:
            timer.cancel()
            gone.remove_done_callback(on_gone)
            self._waiters.discard(woken)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def disconnected(request: Request) -> None:
    """Return once the client has closed its connection (its body was read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        continue


async def hold(
    look: Callable[[], Awaitable[tuple[bool, bool]]],
    waits: WorkWaits,
    request: Request,
    *,
    wait_s: float,
    every_s: float,
) -> None:
    """Call ``look`` (a dispatch; true when it got work, and whether the pilot could
    wait for some), then again each time a job may be there for it, until it got work,
    cannot wait, ``wait_s`` has passed or the pilot went away."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    gone: asyncio.Future[None] | None = None
    try:
        while True:
            since = waits.generation
            got, may_wait = await look()
            left = deadline - loop.time()
            if got or not may_wait or left <= 0 or waits.closing:
                return
            if gone is None:
                gone = asyncio.ensure_future(disconnected(request))
            await waits.wait(since, min(every_s, left), gone)
            if gone.done():
                return
    finally:
        if gone is not None:
            gone.cancel()
