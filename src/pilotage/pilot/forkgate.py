"""No job start may fail with "Text file busy" (ETXTBSY) because of another claim.

``execve`` refuses a file that any process holds open for writing. The agent unpacks one
claim's sandbox (its executable open for writing) while another claim's thread forks to
start its job; the child holds a copy of every descriptor of the agent from ``fork`` to
``exec`` (``O_CLOEXEC`` closes them only at the ``exec``). If the first claim starts its
freshly written executable inside that window, its ``execve`` fails: 47 of 400 jobs were
held so on two pilots of eight slots.

:data:`GATE` closes the window. Writing any file that may be executed (unpacking a
sandbox, downloading an input) happens on its *writing* side, which many threads may
hold at once; every ``fork``/``posix_spawn`` of the agent happens on its *forking* side,
which excludes writers. Since :func:`subprocess.Popen` returns only once its child has
``exec``'d (or failed to), and every descriptor the agent opens is close-on-exec (the
default in Python), no descriptor open for writing survives into a child. Sandboxes are
downloaded to a temporary file first and only unpacked under the gate
(:mod:`pilotage.pilot.staging`), so the network never holds the gate. Writers queue
behind a waiting fork, so starts are never starved.

:func:`spawn` also retries a start once, after a pause, on ETXTBSY or EAGAIN (a busy
node); :data:`TRANSIENT_START` are the errors after which the claim is given back
uncounted rather than its job held: they say nothing about the job.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

log = logging.getLogger("pilotage.pilot")
T = TypeVar("T")

#: Start errors worth one more try at once.
RETRY_ONCE = frozenset({errno.ETXTBSY, errno.EAGAIN})
#: Start errors that are the node's state of the moment, never the job's fault.
TRANSIENT_START = RETRY_ONCE | {errno.ENOMEM, errno.EMFILE, errno.ENFILE, errno.EINTR}
#: The pause before that one more try.
RETRY_PAUSE_S = 0.5


class ForkGate:
    """A shared (writing) / exclusive (forking) gate that prefers waiting forks.

    Invariant, under ``_cond``: ``writers`` threads are inside :meth:`writing`,
    ``forks`` inside :meth:`forking`, and never both at once; ``waiting`` forks wait to
    enter, and no writer enters while one does.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.writers = 0
        self.forks = 0
        self.waiting = 0

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold off forks while files that may be executed are open for writing."""
        with self._cond:
            while self.forks or self.waiting:
                self._cond.wait()
            self.writers += 1
        try:
            yield
        finally:
            with self._cond:
                self.writers -= 1
                if not self.writers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def forking(self) -> Iterator[None]:
        """Fork (and exec) while no such file is open for writing anywhere in the agent."""
        with self._cond:
            self.waiting += 1
            try:
                while self.writers:
                    self._cond.wait()
            finally:
                self.waiting -= 1
            self.forks += 1
        try:
            yield
        finally:
            with self._cond:
                self.forks -= 1
                self._cond.notify_all()


#: The agent's one gate (one per process: descriptors are per process).
GATE = ForkGate()


def spawn(start: Callable[[], T], what: str) -> T:
    """``start()`` (a fork and exec) on the gate's forking side; once more after
    :data:`RETRY_PAUSE_S` if it fails with an error of :data:`RETRY_ONCE`."""
    try:
        with GATE.forking():
            return start()
    except OSError as exc:
        if exc.errno not in RETRY_ONCE:
            raise
        log.info("%s: start failed (%s); trying once more", what, exc.strerror or exc)
    time.sleep(RETRY_PAUSE_S)
    with GATE.forking():
        return start()
