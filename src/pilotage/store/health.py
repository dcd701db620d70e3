"""Is the pool's state usable? Probes of the database and the spool, for the server's
``/healthz`` and ``/readyz`` and for ``pilotage admin check``, and the refusals at
start-up.

- :func:`probe_database` and :func:`probe_spool` are cheap enough for a load balancer
  polling every few seconds: one ``SELECT 1``; a ``statvfs`` and a page written to (and
  deleted from) the spool.
- :func:`check_startup` refuses, before the server opens anything, a state it must not
  serve: an SQLite ``pilotage.db`` of zero length (it would silently start an empty
  pool), one that is not an SQLite database or is damaged, a state directory or spool
  that cannot be written (read-only, full). Each refusal is an
  :class:`~pilotage.errors.OperatorError` (exit 78) naming the path; a PostgreSQL server
  that cannot be reached is :class:`~pilotage.errors.Transient` (exit 75: try again).
- :func:`startup_faults` turns what migrating a database raises into the same errors.
- :func:`admin_check` is ``pilotage admin check``: the above, the database's own
  integrity check, its schema against this version's migrations, and the sandboxes the
  database records against the spool's files (or their pieces in the database).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory

from pilotage.errors import OperatorError, PilotageError, Transient
from pilotage.store.engine import MIGRATIONS, Store
from pilotage.store.faults import FaultKind, classify, os_fault
from pilotage.store.tables import sandbox_chunks, sandboxes

#: The first bytes of every SQLite database file.
SQLITE_HEADER = b"SQLite format 3\x00"
#: Below this much free space the spool counts as full (and the server as not ready),
#: whatever the largest sandbox: a few pages for the database's own growth.
MIN_FREE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Check:
    """The outcome of one probe: whether it passed and a sentence saying what was seen."""

    name: str
    ok: bool
    detail: str
    #: A failure that may pass by itself (the database is down): exit 75, not 78.
    transient: bool = False

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "detail": self.detail}


def sqlite_path(url: str) -> Path | None:
    """The file of an ``sqlite:///`` URL; None for another database or in memory."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def redacted(url: str) -> str:
    """The URL without its password, fit for a message."""
    return sa.make_url(url).render_as_string(hide_password=True)


# -- probes ---------------------------------------------------------------------------


def probe_database(
    connect: Callable[[], contextlib.AbstractContextManager[sa.Connection]],
) -> Check:
    """Whether the database answers ``SELECT 1`` on a connection from ``connect`` (a
    store's :meth:`~pilotage.store.engine.Store.read`); the sentence says how fast, or why
    not."""
    began = time.perf_counter()
    try:
        with connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:  # noqa: BLE001  (a probe reports any failure)
        found = classify(exc)
        why = found.message if found is not None else f"{type(exc).__name__}: {exc}"
        return Check("database", False, why)
    return Check("database", True, f"answers in {(time.perf_counter() - began) * 1e3:.1f} ms")


@dataclass(frozen=True)
class SpoolState:
    """What :func:`probe_spool` saw: writable, and how much room is left."""

    check: Check
    writable: bool
    free_bytes: int


def probe_spool(root: Path, min_free_bytes: int = MIN_FREE_BYTES) -> SpoolState:
    """Whether a page can be written in ``root`` and at least ``min_free_bytes`` are free."""
    free = 0
    try:
        st = os.statvfs(root)
        free = st.f_bavail * st.f_frsize
        # Unnamed and deleted on close: nothing is left behind, whatever happens.
        with tempfile.TemporaryFile(dir=root, prefix=".probe-") as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
    except OSError as exc:
        found = os_fault(exc)
        why = found.message if found is not None else f"{exc.strerror or exc}"
        return SpoolState(Check("spool", False, f"the spool cannot be written: {why}"), False, free)
    if free < min_free_bytes:
        check = Check(
            "spool",
            False,
            f"the spool has {free // 1024} KiB free, less than the {min_free_bytes // 1024} KiB "
            "a sandbox may need",
        )
        return SpoolState(check, True, free)
    return SpoolState(
        Check("spool", True, f"writable, {free // (1024 * 1024)} MiB free"), True, free
    )


# -- start-up -------------------------------------------------------------------------


def check_writable_dir(path: Path, what: str) -> None:
    """Refuse (exit 78) a directory that is missing or in which no file can be written."""
    if not path.is_dir():
        raise OperatorError(f"the {what} {path} is missing or not a directory")
    try:
        with tempfile.TemporaryFile(dir=path, prefix=".probe-") as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
    except OSError as exc:
        raise OperatorError(
            f"the {what} {path} cannot be written ({exc.strerror or exc}); "
            "make it writable (and free space) before starting the server"
        ) from None


def check_sqlite_file(path: Path) -> None:
    """Refuse (exit 78) an SQLite database file that is empty, not SQLite, or damaged.

    An absent file is fine: a new pool's first start creates it.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OperatorError(f"the database {path} cannot be read ({exc.strerror})") from None
    if size == 0:
        raise OperatorError(
            f"the database {path} is empty (0 bytes): starting would serve an empty pool; "
            "restore it from a backup, or remove it if this pool has never run"
        )
    try:
        with open(path, "rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise OperatorError(f"the database {path} cannot be read ({exc.strerror})") from None
    if header != SQLITE_HEADER:
        raise OperatorError(
            f"the database {path} is not an SQLite database (damaged?); restore it from a backup"
        )
    problem = _sqlite_quick_problem(path)
    if problem is not None:
        raise OperatorError(
            f"the database {path} is damaged ({problem}); restore it from a backup "
            "('pilotage admin check' gives details)"
        )


def _sqlite_quick_problem(path: Path, *, full: bool = False) -> str | None:
    """What SQLite's own check finds wrong with ``path`` (read-only), or None."""
    pragma = "PRAGMA integrity_check(20)" if full else "PRAGMA quick_check(5)"
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            rows = [str(row[0]) for row in conn.execute(pragma)]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return str(exc)
    return None if rows == ["ok"] else "; ".join(rows)


def check_startup(state_root: Path, spool: Path, db_url: str) -> None:
    """Refuse a state the server must not serve (see the module's docstring)."""
    check_writable_dir(state_root, "state directory")
    check_writable_dir(spool if spool.exists() else state_root, "spool")
    path = sqlite_path(db_url)
    if path is not None:
        check_writable_dir(path.parent, "database's directory")
        check_sqlite_file(path)
        return
    check_reachable(db_url)


def check_reachable(db_url: str) -> None:
    """Connect once to a server database: Transient if it is down, OperatorError if it
    refuses us for good (wrong password, no such database)."""
    engine = sa.create_engine(
        db_url, poolclass=sa.pool.NullPool, connect_args=_connect_args(db_url)
    )
    try:
        with startup_faults(db_url), engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    finally:
        engine.dispose()


def _connect_args(db_url: str) -> dict[str, object]:
    return {"connect_timeout": 10} if db_url.startswith("postgresql") else {}


@contextlib.contextmanager
def startup_faults(db_url: str) -> Iterator[None]:
    """Turn database and disk failures while starting into exit 75 or 78 naming the
    database (and the path, for SQLite); bugs pass through."""
    where = str(sqlite_path(db_url) or redacted(db_url))
    try:
        yield
    except PilotageError:
        raise
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        found = classify(exc)
        if found is None:
            if isinstance(exc, sa.exc.DBAPIError):
                raise OperatorError(
                    f"the database {where} refused the server: {_first_line(exc.orig)}"
                ) from None
            raise
        if found.kind in (FaultKind.UNAVAILABLE, FaultKind.BUSY, FaultKind.OVERLOADED):
            raise Transient(
                f"the database {where} is unavailable ({_first_line(exc)}); "
                "start it, or correct [server] db, and try again",
                retry_after_s=found.retry_after_s,
            ) from None
        raise OperatorError(f"the database {where}: {found.message}") from None


def _first_line(exc: BaseException | None) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0][:300] if text else type(orig).__name__


# -- pilotage admin check ---------------------------------------------------------------


def admin_check(state_root: Path, spool: Path, db_url: str) -> list[Check]:
    """Every check of ``pilotage admin check``, in order; none raises.

    The state directory and the spool are writable with room left; the database is
    reachable, passes its integrity check (SQLite's ``integrity_check``; PostgreSQL
    checks its own pages) and is at this version's schema; every sandbox the database
    records is in the spool with its size. A check marked ``transient`` failed for a
    reason that may pass by itself (the database is down).
    """
    checks = [
        _as_check("state directory", lambda: check_writable_dir(state_root, "state directory"))
    ]
    checks.append(probe_spool(spool).check)
    path = sqlite_path(db_url)
    if path is not None:
        if not path.exists():  # opening it would create it, empty: leave it to the server
            checks.append(Check("database file", True, f"{path} not created yet (new pool)"))
            return checks
        checks.append(_as_check("database file", lambda: check_sqlite_file(path)))
        if not checks[-1].ok:
            return checks
    reach = _as_check("database", lambda: check_reachable(db_url))
    checks.append(reach if not reach.ok else Check("database", True, f"{_where(db_url)} answers"))
    if not reach.ok:
        return checks
    if path is not None:
        problem = _sqlite_quick_problem(path, full=True)
        checks.append(
            Check("integrity", problem is None, problem or "SQLite's integrity check passed")
        )
    store = Store(db_url)
    try:
        heads, current = schema_heads(), store.revisions()
        checks.append(_schema_check(heads, current))
        if current == heads:
            checks.append(_sandboxes_check(store, spool))
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        checks.append(
            Check("database", False, _first_line(exc), transient=classify(exc) is not None)
        )
    finally:
        store.dispose()
    return checks


def _where(db_url: str) -> str:
    return str(sqlite_path(db_url) or redacted(db_url))


def _as_check(name: str, run: Callable[[], None]) -> Check:
    try:
        run()
    except PilotageError as exc:
        return Check(name, False, exc.message, transient=isinstance(exc, Transient))
    return Check(name, True, "ok")


def _schema_check(heads: set[str], current: set[str]) -> Check:
    if current == heads:
        return Check("schema", True, f"at the newest revision ({', '.join(sorted(heads))})")
    have = ", ".join(sorted(current)) or "none (never migrated)"
    return Check(
        "schema",
        False,
        f"at revision {have} but this version needs {', '.join(sorted(heads))}; "
        "start 'pilotage server' once (it migrates) to upgrade it",
    )


def schema_heads() -> set[str]:
    """The schema revisions this version of pilotage migrates a database to."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return set(ScriptDirectory.from_config(cfg).get_heads())


def _sandboxes_check(store: Store, spool: Path) -> Check:
    with store.read() as conn:
        recorded = {
            (str(d), int(s))
            for d, s in conn.execute(sa.select(sandboxes.c.digest, sandboxes.c.size_bytes))
        }
        # A spool in the database ([server] spool): each sandbox's pieces, by their size.
        chunked = {
            str(d): int(n or 0)
            for d, n in conn.execute(
                sa.select(
                    sandbox_chunks.c.digest, sa.func.sum(sa.func.length(sandbox_chunks.c.data))
                ).group_by(sandbox_chunks.c.digest)
            )
        }
    bad = [f"{d} (size differs)" for d, size in sorted(recorded) if chunked.get(d, size) != size]
    bad += missing_sandboxes(spool, sorted(r for r in recorded if r[0] not in chunked))
    if not bad:
        return Check("sandboxes", True, f"all {len(recorded)} recorded sandboxes are in the spool")
    shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    return Check(
        "sandboxes",
        False,
        f"{len(bad)} of {len(recorded)} recorded sandboxes are not in the spool {spool}: {shown}; "
        "restore the spool from the backup taken with the database",
    )


def missing_sandboxes(spool: Path, recorded: list[tuple[str, int]]) -> list[str]:
    """The recorded sandboxes (digest, size) whose spool file is missing or of another size."""
    bad = []
    for digest, size in recorded:
        file = spool / digest[:2] / f"{digest}.tar"
        try:
            if file.stat().st_size != size:
                bad.append(f"{digest} (size differs)")
        except OSError:
            bad.append(f"{digest} (missing)")
    return bad
