"""Which failures of the database and the disk are faults of the moment, not bugs.

A request that fails because PostgreSQL is stopped, SQLite is locked or read-only, the
disk is full or every pooled connection is busy is not the caller's error nor a bug of
pilotage: it may succeed later. :func:`classify` recognises those failures, whatever
layer raised them (SQLAlchemy's wrappers, the sqlite3 and psycopg drivers, the
operating system), and describes each as a :class:`Fault`: what is down, in one
sentence a remote user may read, and how long to wait. Everything it does not recognise
(a syntax error, a missing table, a broken constraint: programming errors) is left to
the caller as a bug.

The sentences name no host, path or database URL: they go to any caller. The server's
own log gets the original error (see :mod:`pilotage.api.faults`).
"""

from __future__ import annotations

import enum
import errno
import sqlite3
from dataclasses import dataclass

import sqlalchemy as sa


class FaultKind(enum.Enum):
    """What is wrong, as far as the caller is concerned."""

    UNAVAILABLE = "database_unavailable"  # cannot be reached, shutting down, cannot open
    BUSY = "database_busy"  # locked, deadlock, serialisation failure, statement cancelled
    OVERLOADED = "overloaded"  # pool exhausted, too many connections, out of memory
    DISK_FULL = "disk_full"
    READ_ONLY = "read_only"
    IO_ERROR = "io_error"
    DAMAGED = "database_damaged"


#: How long a caller should wait before trying again, by kind.
RETRY_AFTER_S: dict[FaultKind, float] = {
    FaultKind.UNAVAILABLE: 10.0,
    FaultKind.BUSY: 2.0,
    FaultKind.OVERLOADED: 5.0,
    FaultKind.DISK_FULL: 30.0,
    FaultKind.READ_ONLY: 30.0,
    FaultKind.IO_ERROR: 30.0,
    FaultKind.DAMAGED: 60.0,
}


@dataclass(frozen=True)
class Fault:
    """A failure of the moment: what is down, said to the caller in one sentence."""

    kind: FaultKind
    #: What was seen, in a few words ("the database server cannot be reached").
    detail: str
    #: One sentence naming what is down and who must act; no host, path or URL.
    message: str

    @property
    def retry_after_s(self) -> float:
        return RETRY_AFTER_S[self.kind]


_SENTENCES: dict[FaultKind, str] = {
    FaultKind.UNAVAILABLE: "the pool's database is unavailable ({detail}); try again later",
    FaultKind.BUSY: "the pool's database is busy ({detail}); try again in a moment",
    FaultKind.OVERLOADED: "the server is overloaded ({detail}); try again shortly",
    FaultKind.DISK_FULL: (
        "the server's disk is full ({detail}); try again once the pool's operator has freed space"
    ),
    FaultKind.READ_ONLY: (
        "the server's state cannot be written ({detail}); try again once the pool's "
        "operator has made it writable"
    ),
    FaultKind.IO_ERROR: (
        "the server's disk failed ({detail}); try again once the pool's operator has checked it"
    ),
    FaultKind.DAMAGED: (
        "the pool's database is damaged ({detail}); the pool's operator must restore it "
        "(see 'pilotage admin check')"
    ),
}


def fault(kind: FaultKind, detail: str) -> Fault:
    """The fault of ``kind`` with its standard sentence around ``detail``."""
    return Fault(kind, detail, _SENTENCES[kind].format(detail=detail))


# -- SQLite: by the library's own error name (sqlite3.Error.sqlite_errorname) ---------

#: Primary result codes (the part before an extended code's "_") and what they mean.
_SQLITE: dict[str, tuple[FaultKind, str]] = {
    "SQLITE_BUSY": (FaultKind.BUSY, "locked by another writer"),
    "SQLITE_LOCKED": (FaultKind.BUSY, "a table is locked"),
    "SQLITE_PROTOCOL": (FaultKind.BUSY, "lock protocol race"),
    "SQLITE_READONLY": (FaultKind.READ_ONLY, "the database is read-only"),
    "SQLITE_FULL": (FaultKind.DISK_FULL, "the database cannot grow"),
    "SQLITE_IOERR": (FaultKind.IO_ERROR, "an I/O error on the database file"),
    "SQLITE_CANTOPEN": (FaultKind.UNAVAILABLE, "the database file cannot be opened"),
    "SQLITE_NOMEM": (FaultKind.OVERLOADED, "out of memory"),
    "SQLITE_CORRUPT": (FaultKind.DAMAGED, "its file is corrupt"),
    "SQLITE_NOTADB": (FaultKind.DAMAGED, "its file is not an SQLite database"),
}


def _sqlite(exc: sqlite3.Error) -> Fault | None:
    name = getattr(exc, "sqlite_errorname", None)
    if not isinstance(name, str):
        return None
    # Extended codes add a suffix to the primary one: SQLITE_IOERR_WRITE, SQLITE_BUSY_SNAPSHOT.
    for primary, (kind, detail) in _SQLITE.items():
        if name == primary or name.startswith(primary + "_"):
            return fault(kind, detail)
    return None


# -- PostgreSQL: by SQLSTATE (exact codes first, then their two-character class) ------

_PG_CODES: dict[str, tuple[FaultKind, str]] = {
    "57P01": (FaultKind.UNAVAILABLE, "the database server is shutting down"),
    "57P02": (FaultKind.UNAVAILABLE, "the database server crashed"),
    "57P03": (FaultKind.UNAVAILABLE, "the database server is starting"),
    "57P05": (FaultKind.UNAVAILABLE, "the database server closed an idle session"),
    "57014": (FaultKind.BUSY, "a statement was cancelled"),
    "40001": (FaultKind.BUSY, "a serialisation conflict"),
    "40P01": (FaultKind.BUSY, "a deadlock was broken"),
    "55P03": (FaultKind.BUSY, "a lock is not available"),
    "25006": (FaultKind.READ_ONLY, "the database accepts no writes"),
    "53100": (FaultKind.DISK_FULL, "the database server's disk is full"),
    "53200": (FaultKind.OVERLOADED, "the database server is out of memory"),
    "53300": (FaultKind.OVERLOADED, "too many connections to the database"),
    "XX001": (FaultKind.DAMAGED, "corrupt data"),
    "XX002": (FaultKind.DAMAGED, "a corrupt index"),
}
_PG_CLASSES: dict[str, tuple[FaultKind, str]] = {
    "08": (FaultKind.UNAVAILABLE, "the connection to the database failed"),
    "53": (FaultKind.OVERLOADED, "the database server is out of resources"),
    "58": (FaultKind.IO_ERROR, "the database server had a system error"),
}


def _postgres(orig: BaseException) -> Fault | None:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return None
    if not isinstance(orig, psycopg.Error):
        return None
    code = getattr(orig, "sqlstate", None)
    if isinstance(code, str):
        known = _PG_CODES.get(code) or _PG_CLASSES.get(code[:2])
        return fault(*known) if known else None
    # No SQLSTATE: the driver itself failed to connect or lost the connection.
    if isinstance(orig, psycopg.OperationalError):
        return fault(FaultKind.UNAVAILABLE, "the database server cannot be reached")
    return None


# -- The operating system ---------------------------------------------------------------

_ERRNOS: dict[int, tuple[FaultKind, str]] = {
    errno.ENOSPC: (FaultKind.DISK_FULL, "no space left on the device"),
    errno.EDQUOT: (FaultKind.DISK_FULL, "the disk quota is exhausted"),
    errno.EROFS: (FaultKind.READ_ONLY, "the file system is read-only"),
    # The server's own state (spool, database) refuses it: the operator's set-up, never
    # the caller's request (the server opens nothing a caller names).
    errno.EACCES: (FaultKind.READ_ONLY, "permission denied"),
    errno.EIO: (FaultKind.IO_ERROR, "an input/output error"),
    errno.EMFILE: (FaultKind.OVERLOADED, "too many open files"),
    errno.ENFILE: (FaultKind.OVERLOADED, "too many open files on the host"),
    errno.ENOMEM: (FaultKind.OVERLOADED, "out of memory"),
}


def os_fault(exc: OSError) -> Fault | None:
    """The fault an operating system error stands for (a full or read-only disk...)."""
    known = _ERRNOS.get(exc.errno or 0)
    return fault(*known) if known else None


def classify(exc: BaseException) -> Fault | None:
    """The fault of the moment ``exc`` stands for, or ``None`` if it is a bug.

    Recognised: SQLAlchemy's pool timeout (every connection busy) and disconnects, the
    sqlite3 and psycopg errors of an unavailable, busy, full, read-only or damaged
    database (by SQLite error name and PostgreSQL SQLSTATE, never by message text), and
    the operating system's errors of a full, read-only or failing disk. SQLite's
    ``SQLITE_ERROR`` (syntax, missing table), constraint violations and every other
    programming error are not faults.
    """
    if isinstance(exc, sa.exc.TimeoutError):
        return fault(FaultKind.OVERLOADED, "every database connection is busy")
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return fault(FaultKind.UNAVAILABLE, "the connection to the database was lost")
        return classify(exc.orig) if exc.orig is not None else None
    if isinstance(exc, sa.exc.DisconnectionError):
        return fault(FaultKind.UNAVAILABLE, "the connection to the database was lost")
    if isinstance(exc, sqlite3.Error):
        return _sqlite(exc)
    if isinstance(exc, OSError):
        return os_fault(exc)
    return _postgres(exc)
