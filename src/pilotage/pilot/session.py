"""exec-in-job and ssh-to-job on the agent's side: learning of sessions, serving each.

A user's session in a running job reaches the node through the server, over connections
the agent opens (pilots make only outbound connections; docs/pilot-protocol.md,
"Sessions"). :class:`SessionWatcher` holds one long-poll open on the server,
``GET /pilot/v1/pilots/{id}/sessions?wait_s=N``, answered at once when a session is
waiting for this pilot; each :class:`Offer` is then served on a thread of its own by
:class:`~pilotage.pilot.sessionrun.SessionRun`, which opens the session's WebSocket. A
session for a claim this agent does not hold (any more) is answered with an ``end``.
When the agent leaves, every session ends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pilotage.errors import PilotageError, Transient

from .client import Backoff, Client
from .jobrun import JobRun
from .sessionrun import SessionRun
from .websocket import WebSocket
from .wire import ProtocolError, _get, _number

log = logging.getLogger("pilotage.pilot")

#: How long one long-poll is held by the server (the client's timeout must be longer).
WAIT_S = 20.0


@dataclass(frozen=True)
class Offer:
    """A session the server asks this pilot to open (``command`` None: a shell)."""

    session_id: str
    claim_id: str
    job: str
    command: tuple[str, ...] | None
    tty: bool
    rows: int
    cols: int
    term: str
    max_s: float
    idle_s: float
    max_bytes: int
    frame_bytes: int

    @classmethod
    def from_wire(cls, body: Any) -> Offer:
        what = "session offer"
        command = body.get("command") if isinstance(body, dict) else None
        if command is not None and (
            not isinstance(command, list) or not all(isinstance(a, str) for a in command)
        ):
            raise ProtocolError("the server's session offer has a bad command")
        return cls(
            session_id=_get(body, "session_id", str, what),
            claim_id=_get(body, "claim_id", str, what),
            job=_get(body, "job", str, what),
            command=tuple(command) if command else None,
            tty=bool(_get(body, "tty", bool, what)),
            rows=int(_number(body, "rows", what)),
            cols=int(_number(body, "cols", what)),
            term=_get(body, "term", str, what),
            max_s=_number(body, "max_s", what),
            idle_s=_number(body, "idle_s", what),
            max_bytes=int(_number(body, "max_bytes", what)),
            frame_bytes=max(1024, int(_number(body, "frame_bytes", what))),
        )


class SessionWatcher:
    """The long-poll for this pilot's sessions, on a daemon thread; a thread per session."""

    def __init__(
        self,
        client: Client,
        pilot_id: Callable[[], str],
        runs: Callable[[], list[JobRun]],
        *,
        wait_s: float = WAIT_S,
    ) -> None:
        self._client = client
        self._pilot_id = pilot_id  # asked each time: a pilot that registers again changes it
        self._wait_s = wait_s
        self._runs = runs
        self.leaving = threading.Event()
        self._seen: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._loop, name="sessions", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End every session (their commands killed) and stop asking; wait a little."""
        self.leaving.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _loop(self) -> None:
        backoff = Backoff(first_s=1.0, max_s=60.0)
        try:
            while not self.leaving.is_set():
                path = f"/pilot/v1/pilots/{self._pilot_id()}/sessions?wait_s={self._wait_s:g}"
                try:
                    answer = self._client.request("GET", path)
                    offers = [Offer.from_wire(o) for o in _get(answer, "sessions", list, "answer")]
                    backoff.reset()
                except PilotageError as exc:  # a refusal too: the pilot may register again
                    hint = exc.retry_after_s if isinstance(exc, Transient) else None
                    delay = backoff.delay(hint)
                    log.warning("sessions: asking failed (%s); again in %.0f s", exc.message, delay)
                    self.leaving.wait(delay)
                    continue
                for offer in offers:
                    if offer.session_id not in self._seen:
                        self._seen.add(offer.session_id)
                        self._serve(offer)
        finally:
            self._client.close()

    def _serve(self, offer: Offer) -> None:
        run = next((r for r in self._runs() if r.claim.claim_id == offer.claim_id), None)
        session = SessionRun(offer, run, self._open, self.leaving)
        log.info("%s: asked for by the server", session.tag)
        thread = threading.Thread(target=self._run, args=(session,), name=offer.session_id)
        thread.daemon = True
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _run(self, session: SessionRun) -> None:
        session.serve()

    def _open(self, path: str, max_message_bytes: int) -> WebSocket:
        return self._client.websocket(path, max_message_bytes=max_message_bytes)
