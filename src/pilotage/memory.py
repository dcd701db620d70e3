"""Handing memory freed by a big piece of work back to the system.

glibc's malloc keeps what a request freed in its heaps, for later: a server that took a
cluster of 100,000 jobs stays hundreds of MiB above what it holds, and each thread's
arena keeps its own. ``malloc_trim(0)`` returns the free pages of every arena. Elsewhere
(musl, macOS) there is no such call, and nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Callable

_lock = threading.Lock()
_trim: Callable[[int], int] | None = None
_looked = False


def give_back() -> None:
    """Return the free pages of the process's heaps to the system (glibc only)."""
    global _trim, _looked
    with _lock:
        if not _looked:
            _looked = True
            name = ctypes.util.find_library("c")
            try:
                _trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
            except OSError:
                _trim = None
        if _trim is not None:
            _trim(0)
