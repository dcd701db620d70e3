"""The one thread that renews every lease of the pilot, and stops what it cannot renew.

Every ``heartbeat_s`` it sends the live claims (also when there are none: the pilot's
own registration has a lease too). Revoked claims are stopped at the delay the server
gives each (zero, or its turn when many are stopped at once). A claim whose
renewal failed is stopped when its lease would end before the next attempt plus the
SIGTERM-to-SIGKILL grace: the job is then dead before the server gives it to another
pilot, and two copies never run. Leases are measured on this node's monotonic clock
from the moment each request was sent (see :meth:`~pilotage.pilot.jobrun.JobRun.renew`),
never from the server's ``lease_expires_at``, so clock skew cannot keep a job past its
lease.

When no request that could bring a claim is under way (``quiet``), the beat also lists
every claim the pilot holds, stopping ones included (``held``), and holds such requests
back until it is answered: the server then frees at once any live claim of this pilot
the list lacks, whose answer was lost on its way here (pilotage.queue.orphans). A beat
that could not list them (a request for work was held open by the server meanwhile)
leaves :attr:`Heartbeat.wants_complete` set: the agent then beats once more, itself,
between two requests for work. A run of failed beats is logged once as it starts and
once as it ends.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

from pilotage.errors import Conflict, Denied, NotFound, PilotageError, Transient

from .client import Client
from .jobrun import KILL_GRACE_S, JobRun
from .reconnect import OutageClock, QuietLog
from .wire import VERSION, HeartbeatAnswer

log = logging.getLogger("pilotage.pilot")

#: After a failed heartbeat, try again this much sooner (but not more often than 5 s).
RETRY_FRACTION = 0.25


def leases_to_drop(deadlines: dict[str, float], now: float, within_s: float) -> list[str]:
    """The claims, among those not just renewed, whose lease ends within ``within_s``."""
    return sorted(claim_id for claim_id, end in deadlines.items() if end - now < within_s)


class Heartbeat:
    """Renews the leases of ``runs()`` every ``heartbeat_s`` on a daemon thread.

    ``on_retire`` is called when the server asks the pilot to retire, ``on_lost`` (with
    the server's message) when the server no longer knows or accepts this pilot.
    ``quiet`` is entered around each beat and yields whether ``runs()`` is every claim
    the pilot holds, no request that could bring one being under way until it exits.
    ``outage`` hears of every beat that reached the server or not, and ``on_back`` is
    called when a beat reaches it again after an outage.
    """

    def __init__(
        self,
        client: Client,
        pilot_id: str,
        heartbeat_s: float,
        runs: Callable[[], list[JobRun]],
        on_retire: Callable[[], None],
        on_lost: Callable[[str], None],
        quiet: Callable[[], contextlib.AbstractContextManager[bool]] | None = None,
        outage: OutageClock | None = None,
        on_back: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._path = f"/pilot/v1/pilots/{pilot_id}/heartbeat"
        self._quiet = quiet or _never_quiet
        self._failures = QuietLog("heartbeat")
        self._outage = outage or OutageClock()
        self._on_back = on_back
        self.heartbeat_s = heartbeat_s
        self._runs = runs
        self._on_retire = on_retire
        #: Told whether an admin has drained the pilot, at every answer (agent sets it).
        self.on_drain: Callable[[bool], None] | None = None
        self._on_lost = on_lost
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
        #: One beat at a time (the agent may beat too: :attr:`wants_complete`).
        self._beating = threading.Lock()
        #: The last beat could not list every claim held: the agent should beat again
        #: when no request for work is under way.
        self.wants_complete = False

    def set_pilot(self, pilot_id: str) -> None:
        """Beat for ``pilot_id`` from now on (the agent registered again as a new pilot)."""
        self._path = f"/pilot/v1/pilots/{pilot_id}/heartbeat"

    def start(self) -> None:
        """Start beating; the first beat is one period from now."""
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and wait for an ongoing beat to end."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def _loop(self) -> None:
        delay = self.heartbeat_s
        while not self._stopped.wait(delay):
            delay = self.beat()
        self._client.close()

    def beat(self) -> float:
        """Send one heartbeat and act on its answer; return the delay to the next one."""
        with self._beating:
            return self._beat()

    def _beat(self) -> float:
        renewed: set[str] = set()
        delay = self.heartbeat_s
        with self._quiet() as complete:
            self.wants_complete = not complete
            held = self._runs()
            runs = {run.claim.claim_id: run for run in held if run.alive}
            sent = time.monotonic()
            body: dict[str, object] = {"v": VERSION, "claims": sorted(runs)}
            if complete:
                body["held"] = sorted(run.claim.claim_id for run in held)
            answer: HeartbeatAnswer | None = None
            try:
                answer = HeartbeatAnswer.from_wire(self._client.request("POST", self._path, body))
            except (NotFound, Denied, Conflict) as exc:
                log.error("heartbeat refused: %s", exc.message)
                self._on_lost(exc.message)
                return self.heartbeat_s
            except Transient as exc:
                self._outage.failed()
                self._failures.failed(exc.message)
                delay = self._retry_delay(exc.retry_after_s)
            except PilotageError as exc:  # e.g. 401 while the token is being renewed
                log.warning("heartbeat refused (%s)", exc.message)
                delay = self._retry_delay(0.0)
        if answer is not None:
            self._failures.succeeded()
            if self._outage.succeeded() and self._on_back is not None:
                self._on_back()
            for claim_id in answer.renewed:
                if claim_id in runs:
                    runs[claim_id].renew(sent)
                    renewed.add(claim_id)
            for claim_id, reason in answer.revoked.items():
                if claim_id in runs:
                    self._stop_later(runs[claim_id], reason, answer.delays.get(claim_id, 0.0))
                    if claim_id in answer.delays:
                        runs[claim_id].renew(sent)  # kept until its turn
                        renewed.add(claim_id)
            if answer.retire:
                log.info("the server asks this pilot to retire")
                self._on_retire()
            if self.on_drain is not None:
                self.on_drain(answer.drain)
        deadlines = {
            claim_id: run.lease_deadline
            for claim_id, run in runs.items()
            if claim_id not in renewed and run.alive
        }
        within_s = max(self.heartbeat_s, delay) + KILL_GRACE_S
        for claim_id in leases_to_drop(deadlines, time.monotonic(), within_s):
            runs[claim_id].stop("its lease could not be renewed and ends soon")
        return delay

    @staticmethod
    def _stop_later(run: JobRun, reason: str, delay_s: float) -> None:
        """Stop a revoked claim ``delay_s`` from now, on a timer of its own (the server
        spreads stop orders over time: seed 000 §4.6); never in this thread, which a
        switch call per stop would hold up."""
        timer = threading.Timer(delay_s, run.stop, args=(f"revoked by the server: {reason}",))
        timer.daemon = True
        timer.start()

    def _retry_delay(self, retry_after_s: float) -> float:
        """Sooner than a period after a failure, but not before the server's Retry-After."""
        soon = max(min(5.0, self.heartbeat_s), self.heartbeat_s * RETRY_FRACTION)
        return min(self.heartbeat_s, max(soon, retry_after_s))


@contextlib.contextmanager
def _never_quiet() -> Iterator[bool]:
    """Without a ``quiet`` gate the claim list is never known to be complete."""
    yield False
