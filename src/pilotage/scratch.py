"""Scratch directories that are removed whatever happens: the demos' throwaway pools.

:func:`scratch_dir` makes a temporary directory and removes it on the way out, also
when the program is interrupted: SIGTERM and SIGHUP are turned into ``SystemExit`` for
the time being (SIGINT already raises ``KeyboardInterrupt``), so every ``finally`` and
``with`` block on the way runs, stopping the servers and pilots it started.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _exit_on(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def exit_on_signals() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise ``SystemExit`` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {s: signal.signal(s, _exit_on) for s in _SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@dataclass
class Scratch:
    """A scratch directory; set ``keep`` to leave it in place (a failed demo's logs)."""

    path: Path
    keep: bool = False


@contextlib.contextmanager
def scratch_dir(prefix: str, *, parent: str | None = None) -> Iterator[Scratch]:
    """A new temporary directory, removed on exit unless its ``keep`` was set by then;
    always removed when an exception or a signal ends the block."""
    with exit_on_signals():
        scratch = Scratch(Path(tempfile.mkdtemp(prefix=prefix, dir=parent)))
        try:
            yield scratch
        except BaseException:
            scratch.keep = False
            raise
        finally:
            if not scratch.keep:
                shutil.rmtree(scratch.path, ignore_errors=True)
