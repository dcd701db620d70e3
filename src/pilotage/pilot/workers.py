"""The threads that run claims, each kept for the next claim once its own has ended.

A claim's job is waited for on a thread of its own (``waitid``), as are its sandbox
transfers; but a thread need not be made and ended for every job: an idle worker takes
the next claim, and a new thread starts only when every worker is busy. So a pilot has
at most as many threads as it ever ran claims at once. Standard library only.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("pilotage.pilot")


class Workers:
    """Runs tasks on reused threads (non-daemon, as a claim's thread always was).

    Invariant: ``_idle`` counts the workers that will take a task from ``_tasks``
    without another one being put for them, so a task is queued only when one will.
    """

    def __init__(self, name: str = "claim") -> None:
        self._name = name
        self._tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads: list[threading.Thread] = []

    def run(self, task: Callable[[], None]) -> None:
        """Run ``task`` on an idle worker, or on a new one if none is idle."""
        with self._lock:
            if self._idle > 0:
                self._idle -= 1
                self._tasks.put(task)
                return
            thread = threading.Thread(
                target=self._work, args=(task,), name=f"{self._name}-{len(self._threads)}"
            )
            self._threads.append(thread)
        thread.start()

    def _work(self, task: Callable[[], None] | None) -> None:
        while task is not None:
            try:
                task()
            except Exception:  # one claim's bug must not take the pilot down
                log.exception("unexpected error in a claim's thread")
            with self._lock:
                self._idle += 1
            task = self._tasks.get()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Let every worker end once its task is done; wait up to ``timeout_s`` for
        the idle ones."""
        with self._lock:
            threads = list(self._threads)
            for _ in threads:
                self._tasks.put(None)
        for thread in threads:
            thread.join(timeout=timeout_s)

    @property
    def count(self) -> int:
        """How many worker threads were started."""
        return len(self._threads)
