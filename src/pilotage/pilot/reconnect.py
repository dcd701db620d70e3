"""Riding through a server outage: register again when lost, keep what the server takes
back, and count neither the outage against the idle timeout nor its failures in the log.

A server restart of any length must lose no pilot that is still alive. So the agent
never leaves because the server was unreachable (only its own lifetime bounds how long
it keeps trying), and when the server, back, answers that the pilot is lost or unknown
(it was silent for ``max(3 * heartbeat_s, lease_s)``), the agent registers again with
:func:`register_again`: the same registration, naming the pilot it was and every claim
it holds, its secret in the usual header (docs/pilot-protocol.md, "Registering again").
The server takes the pilot back under its id when it can, or registers a new one; the
claims it answers as ``resumed`` keep running, and the agent stops every other one (the
server no longer counts on them).

:class:`OutageClock` measures how long the server was out of reach, so that time is not
counted as idle; :class:`QuietLog` writes one line as a run of failures starts and one
as it ends, with its length, instead of a warning per attempt.

Standard library only (the agent's zipapp).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .client import Backoff, Client, retrying
from .config import AgentConfig
from .wire import VERSION, Registration

log = logging.getLogger("pilotage.pilot")

#: The registration path (a new pilot, or the same one again with ``resume``).
REGISTER_PATH = "/pilot/v1/pilots"


def registration_body(config: AgentConfig, owner: str | None, left_s: float) -> dict[str, Any]:
    """What registering (again) says of this pilot: its slot, ``left_s`` of its life, and
    its START: the flag's, and only ``owner``'s jobs on a single-user pilot whose owner
    is named (``*`` is fixed by the server at the first claim)."""
    r = config.resources
    start = config.start
    if owner is not None:
        start = f"({config.start}) && TARGET.Owner == {json.dumps(owner)}"
    return {
        "v": VERSION,
        "name": config.pilot_name,
        "site": config.site,
        "host": config.host,
        "cpus": r.cpus,
        "memory_mb": r.memory_mb,
        "disk_mb": r.disk_mb,
        "gpus": r.gpus,
        "lifetime_s": max(1.0, round(left_s, 3)),
        "attrs": config.attrs,
        "start": start,
    }


def register_again(
    client: Client,
    body: dict[str, Any],
    previous: Registration,
    held: list[str],
    *,
    wait: Callable[[float], bool],
) -> Registration:
    """Register again as ``previous`` with the claims ``held``; the new registration.

    Transient failures are retried (``wait(delay)`` true gives up, re-raising the last
    one); a refusal raises at once. The caller sends the pilot's secret (the client does,
    with every request) and must hold back any request that could bring a claim until
    this returns, so ``held`` is every claim the pilot holds.
    """
    request = {**body, "resume": {"pilot_id": previous.pilot_id, "claims": sorted(held)}}
    answer = retrying(
        lambda: client.request("POST", REGISTER_PATH, request),
        what="registering again",
        wait=wait,
        backoff=Backoff(first_s=1.0, max_s=30.0),
    )
    again = Registration.from_wire(answer)
    same = "the same pilot" if again.pilot_id == previous.pilot_id else "a new pilot"
    log.info(
        "registered again as %s %s; %d of %d claims resumed",
        same, again.pilot_id, len(again.resumed), len(held),
    )  # fmt: skip
    return again


class OutageClock:
    """When the server was out of reach (monotonic), so that time is not idle time.

    Every part of the agent that talks to the server reports here: a request that got
    no answer (or a 503) :meth:`failed`, one that got an answer :meth:`succeeded`.

    Invariant: ``_spans`` holds the finished outages (start, end) that may still overlap
    an idle period, oldest first; ``since`` is the start of the current one, or None.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._spans: list[tuple[float, float]] = []
        self.since: float | None = None

    def failed(self) -> None:
        """A request could not reach the server (or it answered 503)."""
        with self._lock:
            if self.since is None:
                self.since = self._clock()

    def succeeded(self) -> bool:
        """A request got an answer; whether that ended an outage."""
        with self._lock:
            since, self.since = self.since, None
            if since is not None:
                self._spans.append((since, self._clock()))
        return since is not None

    def unreachable_s(self, start: float) -> float:
        """How long the server was out of reach since ``start`` (monotonic); outages
        over before ``start`` are forgotten (``start`` only moves forward)."""
        now = self._clock()
        with self._lock:
            self._spans = [(a, b) for a, b in self._spans if b > start]
            spans = [*self._spans, *([(self.since, now)] if self.since is not None else [])]
        return sum(max(0.0, min(b, now) - max(a, start)) for a, b in spans)


class QuietLog:
    """One warning when a run of failures of ``what`` starts, one line when it ends.

    Invariant: ``since`` is the monotonic time of the first failure of the current run,
    None when the last attempt succeeded.
    """

    def __init__(self, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self._clock = clock
        self._lock = threading.Lock()
        self.since: float | None = None
        self.failures = 0

    def failed(self, message: str) -> None:
        with self._lock:
            self.failures += 1
            first = self.since is None
            if first:
                self.since = self._clock()
        if first:
            log.warning("%s failed (%s); retrying quietly until it works", self.what, message)

    def succeeded(self) -> None:
        with self._lock:
            since, failures = self.since, self.failures
            self.since, self.failures = None, 0
        if since is not None:
            log.warning(
                "%s works again after %.0f s (%d failed attempts)",
                self.what, self._clock() - since, failures,
            )  # fmt: skip
