"""What the ``pilotage`` command says when the system refuses a local file: a full or
read-only disk, a permission, a failing device. One sentence naming the path, the
system's cause and what to do, and an exit code by cause (docs/cli.md):

- ``ENOSPC``, ``EDQUOT``: 75, try again once space is freed;
- ``EACCES``, ``EPERM``, ``EROFS``: 77 (``EX_NOPERM``);
- any other :class:`OSError`: 74 (``EX_IOERR``).

Never 70: a local file the system refuses is not a bug of pilotage.
"""

from __future__ import annotations

import errno
import io
import os
from pathlib import PurePath
from types import TracebackType

EX_IOERR = 74
EX_TEMPFAIL = 75
EX_NOPERM = 77

_FULL = {errno.ENOSPC, errno.EDQUOT}
_NOT_PERMITTED = {errno.EACCES, errno.EPERM, errno.EROFS}


def describe(exc: OSError) -> tuple[str, int]:
    """The sentence to print and the exit code for ``exc``."""
    code = exc.errno or 0
    cause = exc.strerror or (os.strerror(code) if code else str(exc) or type(exc).__name__)
    path = _path_of(exc)
    where = f"cannot write {path}" if code in _FULL | {errno.EROFS} else f"{path}"
    if code in _FULL:
        return (
            f"{where}: {cause}; free some space on its file system, or choose another "
            "directory, and try again",
            EX_TEMPFAIL,
        )
    if code == errno.EROFS:
        return (
            f"{where}: {cause}; choose a directory on a writable file system, or have it "
            "remounted read-write",
            EX_NOPERM,
        )
    if code in _NOT_PERMITTED:
        return (
            f"{where}: {cause}; run as a user who may use it, or change its owner or mode",
            EX_NOPERM,
        )
    return f"{where}: {cause}; check the path and its device, and try again", EX_IOERR


def _path_of(exc: OSError) -> str:
    """The file ``exc`` is about: its own file name, else the file being written where
    it was raised (a ``write`` or ``close`` names none), else "a local file"."""
    if exc.filename is not None:
        named = os.fsdecode(exc.filename)
        if exc.filename2 is not None:
            named += f" -> {os.fsdecode(exc.filename2)}"
        return named
    for frame_locals in _innermost_first(exc.__traceback__):
        for value in frame_locals.values():
            name = getattr(value, "name", None) if isinstance(value, io.IOBase) else None
            if isinstance(name, str):
                return name
        for value in frame_locals.values():
            if isinstance(value, PurePath):
                return str(value)
    return "a local file"


def _innermost_first(tb: TracebackType | None) -> list[dict[str, object]]:
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame.f_locals)
        tb = tb.tb_next
    return frames[::-1]
