"""The results of ended claims on their way to the server.

A claim's worker hands its result over (:meth:`Results.hand_over`). While no request for
work is under way it is queued, and the agent's main loop reports every queued result
in one call (``POST .../pilots/{id}/results``), asking for the next jobs in the same
round trip (:meth:`Results.send`): in a busy pilot a few jobs end together, and one
call and one transaction of the server serve them all. While a request for work is
under way (the server may hold it open for many seconds: the long-poll), the worker
reports its result itself, at once, asking for nothing (:meth:`Results.send_one`). A
server older than batches (``.../results`` unknown to it) is sent one result per call.

Standard library only (the agent's zipapp).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pilotage.errors import NotFound, PilotageError

from .client import Cancel, Client, error_kind, retrying
from .jobrun import JobRun
from .wire import VERSION, JobResult, WorkAnswer

log = logging.getLogger("pilotage.pilot")

#: A claim's run and its result.
Ended = tuple[JobRun, JobResult]


class Results:
    """The queue of results to report and the request for work under way.

    Invariant (under ``lock``, the agent's): a result is queued only while ``asking``
    is None, so no queued result waits for a request the server holds open.
    """

    def __init__(self, client: Client, lock: threading.Lock, wake: threading.Event) -> None:
        self._client = client
        self._lock = lock
        self._wake = wake
        self._queued: list[Ended] = []
        #: The request for work under way, if any.
        self.asking: Cancel | None = None
        #: Whether the server takes several results in one call.
        self.batches = True

    def hand_over(self, run: JobRun, result: JobResult) -> bool:
        """Queue ``result`` for the main loop (true), or report it now if a request for
        work is under way (false: then the caller releases the claim)."""
        with self._lock:
            queued = self.asking is None
            if queued:
                self._queued.append((run, result))
        if queued:
            self._wake.set()
        else:
            self.send_one(run, result)
        return queued

    def take(self) -> list[Ended]:
        """Every queued result (the caller holds ``lock``)."""
        taken, self._queued = self._queued, []
        return taken

    def requeue(self, ended: list[Ended]) -> None:
        """Queue again results a failed call did not report (first in line)."""
        with self._lock:
            self._queued[:0] = ended

    def cancel_ask(self) -> None:
        """End the request for work under way, if any (no lock: signal handlers call it).

        A claim the server granted it just before is then not heard of here: the exit
        call releases it, or the next heartbeat listing every claim held frees it."""
        asking = self.asking
        if asking is not None:
            asking.cancel()

    def send(
        self, pilot_id: str, ended: list[Ended], next_request: dict[str, Any] | None
    ) -> WorkAnswer | None:
        """Report ``ended`` in one call with ``next_request``; the answer (claims, and
        the results refused), or None if the server takes no batch (then each was sent
        in a call of its own). Raises what the call raised: nothing was recorded."""
        for run, _result in ended:
            run.result_sending()
        if self.batches:
            body = {
                "v": VERSION,
                "results": [result.to_item(run.claim.claim_id) for run, result in ended],
                "next": next_request,
            }
            path = f"/pilot/v1/pilots/{pilot_id}/results"
            try:
                answer = WorkAnswer.from_wire(self._client.request("POST", path, body))
            except NotFound as exc:
                if error_kind(exc):  # a refusal of ours (the pilot), not an unknown route
                    raise
                log.info("the server takes one result per call (it is older than this agent)")
                self.batches = False
            else:
                for run, _result in ended:
                    why = answer.refused.get(run.claim.claim_id)
                    if why is not None:
                        log.warning("%s: result not reported (%s)", run.tag, why)
                log.debug("%d results reported", len(ended) - len(answer.refused))
                return answer
        for run, result in ended:
            self.send_one(run, result)
        return None

    def send_one(self, run: JobRun, result: JobResult) -> None:
        """Report one result (retried while the claim lives), asking for nothing."""
        if not run.alive:
            return
        path = f"/pilot/v1/claims/{run.claim.claim_id}/result"
        run.result_sending()
        try:
            retrying(
                lambda: self._client.request("POST", path, result.to_wire(None)),
                what=f"{run.tag}: result report",
                wait=run.wait_or_stopped,
            )
        except PilotageError as exc:
            log.warning("%s: result not reported (%s)", run.tag, exc.message)
            return
        log.info("%s: result reported", run.tag)
