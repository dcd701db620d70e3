"""The server's half of exec-in-job sessions: a user's WebSocket meets the one the job's
pilot opens, and frames are piped between them within the session's limits.

Pilots make only outbound connections, so the server never calls a pilot: it records an
:class:`Offer` for the pilot holding the job's claim, wakes that pilot's long-poll
(``GET /pilot/v1/pilots/{id}/sessions``), and waits ``join_s`` for the pilot's own
WebSocket. Both ends speak the frames of docs/pilot-protocol.md ("Sessions"): binary
frames whose first byte is the channel (0 stdin, to the job; 1 stdout and 2 stderr, from
it), and JSON text frames for control (``resize``, ``eof`` from the user; ``exit`` and
``end`` from the pilot). The relay checks each one and forwards it; it counts the bytes
each way and ends the session, telling the user why, past its byte cap, its longest
life or its longest silence (the agent applies the same limits; this is the backstop).

Everything here lives in one server process and its event loop: a session's two
connections must reach the same process (docs/pilot-protocol.md says so for replicas).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket

from pilotage.queue.sessions import Ending, SessionRequest

STDIN, STDOUT, STDERR = 0, 1, 2


@dataclass(frozen=True)
class Limits:
    """A session's bounds (``[server] session_*``)."""

    max_s: float
    idle_s: float
    max_bytes: int
    frame_bytes: int
    join_s: float
    per_job: int


@dataclass(frozen=True)
class Offer:
    """What the pilot is told of a session it must open."""

    session_id: str
    claim_id: str
    job: str
    request: SessionRequest
    limits: Limits

    def to_wire(self) -> dict[str, Any]:
        r, lim = self.request, self.limits
        return {
            "session_id": self.session_id, "claim_id": self.claim_id, "job": self.job,
            "command": list(r.command) or None, "tty": r.tty, "rows": r.rows, "cols": r.cols,
            "term": r.term, "max_s": lim.max_s, "idle_s": lim.idle_s,
            "max_bytes": lim.max_bytes, "frame_bytes": lim.frame_bytes,
        }  # fmt: skip


@dataclass
class Waiting:
    """A session whose user is connected, waiting for (then piped to) its pilot."""

    offer: Offer
    pilot_id: str
    joined: asyncio.Future[WebSocket]
    done: asyncio.Event = field(default_factory=asyncio.Event)
    taken: bool = False


class Relay:
    """The sessions of this server process, and the pilots' long-polls waiting for them.

    Invariant: a session is in ``_sessions`` from its user's connection until its end;
    it is offered to its pilot until the pilot takes it (once).
    """

    def __init__(self) -> None:
        self._sessions: dict[str, Waiting] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._closing = False

    def close(self) -> None:
        """The server is stopping: every long-poll answers now, and none waits again."""
        self._closing = True
        for wake in self._wake.values():
            wake.set()

    def expect(self, pilot_id: str, offer: Offer) -> Waiting:
        """Record ``offer`` for ``pilot_id`` and wake its long-poll."""
        waiting = Waiting(offer, pilot_id, asyncio.get_running_loop().create_future())
        self._sessions[offer.session_id] = waiting
        self._wake.setdefault(pilot_id, asyncio.Event()).set()
        return waiting

    def open_in(self, job: str) -> int:
        """How many sessions of ``job`` are waiting or open."""
        return sum(1 for w in self._sessions.values() if w.offer.job == job)

    def offers(self, pilot_id: str) -> list[Offer]:
        """The sessions ``pilot_id`` has not taken yet."""
        return [w.offer for w in self._sessions.values() if w.pilot_id == pilot_id and not w.taken]

    async def wait_offers(self, pilot_id: str, wait_s: float) -> list[Offer]:
        """The pilot's offers, waiting up to ``wait_s`` for one if there is none."""
        found = self.offers(pilot_id)
        if found or wait_s <= 0 or self._closing:
            return found
        wake = self._wake.setdefault(pilot_id, asyncio.Event())
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), wait_s)
        if not wake.is_set() and self._wake.get(pilot_id) is wake:
            del self._wake[pilot_id]  # nobody woke it: forget the pilot until its next poll
        return self.offers(pilot_id)

    def take(self, session_id: str, claim_id: str) -> Waiting | None:
        """The waiting session ``session_id`` of ``claim_id``, for its pilot; once."""
        waiting = self._sessions.get(session_id)
        if waiting is None or waiting.taken or waiting.offer.claim_id != claim_id:
            return None
        waiting.taken = True
        return waiting

    def forget(self, session_id: str) -> None:
        """The session is over: its pilot's connection may end."""
        waiting = self._sessions.pop(session_id, None)
        if waiting is not None:
            waiting.done.set()
            if not waiting.joined.done():
                waiting.joined.cancel()


@dataclass
class _Tally:
    bytes_in: int = 0
    bytes_out: int = 0
    exit_code: int | None = None
    last: float = field(default_factory=time.monotonic)


class _Over(Exception):
    """The session ends: ``why`` and a sentence; ``tell`` whether the user must be told
    (not when the pilot's own ``end`` or ``exit`` was already forwarded)."""

    def __init__(self, why: str, reason: str, *, tell: bool = True) -> None:
        super().__init__(reason)
        self.why = why
        self.reason = reason
        self.tell = tell


def _control(text: str, allowed: tuple[str, ...]) -> dict[str, Any] | None:
    """A control message of one of the ``allowed`` types, or None."""
    try:
        body = json.loads(text)
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("type") not in allowed:
        return None
    return body


async def pipe(user: WebSocket, pilot: WebSocket, job: str, limits: Limits) -> Ending:
    """Relay between ``user`` and ``pilot`` until the session ends; how it ended."""
    tally = _Tally()

    async def from_user() -> None:
        while True:
            message = await user.receive()
            if message["type"] == "websocket.disconnect":
                raise _Over("closed", "the user closed the session", tell=False)
            data, text = message.get("bytes"), message.get("text")
            if data is not None:
                if len(data) > limits.frame_bytes + 1 or data[:1] != bytes([STDIN]):
                    raise _Over("bad-input", f"a frame from the user is not stdin or is "
                                f"larger than {limits.frame_bytes} bytes")  # fmt: skip
                tally.bytes_in += len(data) - 1
                if tally.bytes_in > limits.max_bytes:
                    raise _Over("limit", f"the input reached the session's limit of "
                                f"{limits.max_bytes} bytes")  # fmt: skip
                tally.last = time.monotonic()
                await pilot.send_bytes(data)
            elif text is not None:
                body = _control(text, ("resize", "eof"))
                if body is None:
                    raise _Over("bad-input", "a control message from the user is not resize or eof")
                await pilot.send_text(json.dumps(body))

    async def from_pilot() -> None:
        while True:
            message = await pilot.receive()
            if message["type"] == "websocket.disconnect":
                raise _Over("lost", "the connection to the job's pilot was lost; try again")
            data, text = message.get("bytes"), message.get("text")
            if data is not None:
                if len(data) > limits.frame_bytes + 1 or data[:1] not in (b"\x01", b"\x02"):
                    raise _Over("lost", "the job's pilot sent a frame that is not stdout or stderr")
                tally.bytes_out += len(data) - 1
                if tally.bytes_out > limits.max_bytes:
                    raise _Over("limit", f"the output reached the session's limit of "
                                f"{limits.max_bytes} bytes")  # fmt: skip
                tally.last = time.monotonic()
                await user.send_bytes(data)
            elif text is not None:
                body = _control(text, ("exit", "end"))
                if body is None:
                    raise _Over("lost", "the job's pilot sent a control message that is not "
                                "exit or end")  # fmt: skip
                await user.send_text(json.dumps(body))
                if body["type"] == "exit":
                    code = body.get("code")
                    tally.exit_code = code if isinstance(code, int) else None
                    raise _Over("exit", f"the command exited ({code})", tell=False)
                raise _Over(str(body.get("why", "end"))[:32], str(body.get("reason", ""))[:500],
                            tell=False)  # fmt: skip

    async def watch() -> None:
        started = time.monotonic()
        step = max(0.05, min(1.0, limits.idle_s / 4, limits.max_s / 4))
        while True:
            await asyncio.sleep(step)
            now = time.monotonic()
            if now - started > limits.max_s:
                raise _Over("limit", f"the session reached its time limit of {limits.max_s:g} s")
            if now - tally.last > limits.idle_s:
                raise _Over("limit", f"the session was idle for {limits.idle_s:g} s")

    over = await _first_over([from_user(), from_pilot(), watch()])
    if over.tell:
        with contextlib.suppress(Exception):
            await user.send_text(
                json.dumps({"type": "end", "why": over.why, "reason": over.reason})
            )
    for connection in (pilot, user):
        with contextlib.suppress(Exception):
            await connection.close()
    return Ending(over.why, over.reason, tally.exit_code, tally.bytes_in, tally.bytes_out)


async def _first_over(work: list[Awaitable[None]]) -> _Over:
    """Run the loops until one ends the session; cancel the others; why it ended."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    error = next(iter(done)).exception()
    if isinstance(error, _Over):
        return error
    # A connection that broke while sending (the peer is gone): the session is over.
    return _Over("lost", f"a connection of the session broke ({type(error).__name__})")
