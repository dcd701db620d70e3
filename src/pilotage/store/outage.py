"""One log line when a background loop's outage starts, one when it ends.

The server's loops (the reaper's sweep of leases and lost pilots, the job policies'
evaluation, the matchmaker's catch-up, the write queue) run every few seconds. While the
database is down each pass fails; a traceback per pass would bury everything else in
the log. :class:`Outage` logs the first failure of an outage as one line naming the
fault, nothing while it lasts, and its end with how long it lasted and how many passes
failed. A failure that is not a fault of the moment (see
:func:`pilotage.store.faults.classify`) is a bug: the caller logs its traceback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from pilotage.errors import Transient
from pilotage.store.faults import classify


class Outage:
    """Tracks whether ``what`` (a loop's name) is failing, and logs its edges.

    Invariant: ``since`` is the monotonic time of the first failed pass of the current
    outage, or None when the last pass succeeded.
    """

    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self._log = logger
        self._clock = clock
        self._lock = threading.Lock()
        self.since: float | None = None
        self.failures = 0

    def failed(self, exc: BaseException) -> bool:
        """Note a failed pass; whether ``exc`` is a fault of the moment (else a bug, which
        the caller must log with its traceback). A :class:`~pilotage.errors.Transient`
        (the server answered 503 or could not be reached) is one too."""
        found = classify(exc)
        if found is not None:
            orig = getattr(exc, "orig", None) or exc
            cause = " ".join(str(orig).split())[:300]
            what = f"{found.kind.value}: {found.detail}): {type(orig).__name__}: {cause}"
        elif isinstance(exc, Transient):
            what = f"{type(exc).__name__}): {exc.message}"
        else:
            return False
        with self._lock:
            self.failures += 1
            starts = self.since is None
            if starts:
                self.since = self._clock()
        if starts:
            self._log.warning("%s: outage (%s; retrying quietly until it ends", self.what, what)
        return True

    def succeeded(self) -> None:
        """Note a pass that worked; log the end of the outage if there was one."""
        with self._lock:
            since, failures = self.since, self.failures
            self.since = None
            self.failures = 0
        if since is not None:
            self._log.warning(
                "%s: outage over after %.1f s (%d failed passes)",
                self.what, self._clock() - since, failures,
            )  # fmt: skip
