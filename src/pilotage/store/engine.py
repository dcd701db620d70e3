"""Opening the pool's database and running its migrations.

SQLite (WAL) is the embedded default; PostgreSQL serves bigger pools and several server
processes at once. Callers use :meth:`Store.write` for a transaction that changes
anything and :meth:`Store.read` for one that only reads.

On SQLite every write transaction starts with ``BEGIN IMMEDIATE`` so that two writers
never both read and then fail to upgrade their lock; inside one process writers also
queue on a lock, which is far cheaper than SQLite's sleeping busy handler.

Small, frequent writes from the event loop (the pilot protocol) go through
:meth:`Store.queue`: one thread runs them, many to a transaction.

A write may leave a note for this process (:func:`note`, e.g. "jobs became IDLE"): the
listeners of its topic (:meth:`Store.listen`) are told once the transaction commits,
and never when it does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from pilotage.errors import OperatorError
from pilotage.store.outage import Outage

MIGRATIONS = Path(__file__).with_name("migrations")

log = logging.getLogger("pilotage.store")

T = TypeVar("T")


#: ``Connection.info`` key of the notes the transaction in progress leaves.
_NOTES = "pilotage.notes"


def note(conn: sa.Connection, topic: str, value: Any = None) -> None:
    """Tell ``topic``'s listeners ``value`` (with the others of the transaction, in
    order) once this transaction commits."""
    notes: dict[str, list[Any]] = conn.info.setdefault(_NOTES, {})
    notes.setdefault(topic, []).append(value)


def noted(conn: sa.Connection, topic: str) -> list[Any]:
    """The values of ``topic`` the transaction in progress has noted so far."""
    return list(conn.info.get(_NOTES, {}).get(topic, ()))


def _noted(conn: sa.Connection) -> dict[str, list[Any]]:
    """A copy of the notes the transaction has left so far."""
    return {topic: list(values) for topic, values in conn.info.get(_NOTES, {}).items()}


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` URLs and use the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class Store:
    """The database of one pool: engines for reading and writing, and its migrations."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = normalise_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self._write_lock = threading.Lock() if self.is_sqlite else None
        self._queue: WriteQueue | None = None
        self._queue_lock = threading.Lock()
        self._listeners: dict[str, list[Callable[[list[Any]], None]]] = {}
        if self.is_sqlite:
            self.engine = self._sqlite_engine("BEGIN IMMEDIATE")
            self._read_engine = self._sqlite_engine("BEGIN")
        elif self.url.startswith("postgresql"):
            self.engine = sa.create_engine(
                self.url,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_pre_ping=True,
                # A database host that drops packets fails a request in seconds, not
                # after the system's TCP timeout of minutes.
                connect_args={"connect_timeout": 10},
            )
            # READ COMMITTED (the writers') takes a snapshot per statement: a read of
            # several statements (a listing, one query per state) could miss a job that
            # changed state between two of them. A reader's snapshot is the transaction's.
            self._read_engine = self.engine.execution_options(isolation_level="REPEATABLE READ")
        else:
            raise OperatorError(
                f"database URL {url!r} is neither sqlite:/// nor postgresql://; "
                "pass one of those to --db"
            )

    def _sqlite_engine(self, begin: str) -> sa.Engine:
        engine = sa.create_engine(
            self.url,
            # The driver must not open transactions itself: we issue BEGIN below.
            connect_args={"isolation_level": None, "check_same_thread": False, "timeout": 60},
            pool_size=20,
            max_overflow=20,
        )

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql(begin)

        return engine

    def listen(self, topic: str, listener: Callable[[list[Any]], None]) -> None:
        """Call ``listener(values)`` after each commit of a transaction that left notes
        of ``topic`` (:func:`note`), on the committing thread: it must be quick."""
        self._listeners.setdefault(topic, []).append(listener)

    @contextlib.contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A transaction that may change the database; committed on success."""
        with self._write_lock or contextlib.nullcontext(), self.engine.begin() as conn:
            conn.info.pop(_NOTES, None)  # a rolled-back transaction's, on this connection
            yield conn
            notes: dict[str, list[Any]] | None = conn.info.pop(_NOTES, None)
        if notes:
            self._tell(notes)

    def _tell(self, notes: dict[str, list[Any]]) -> None:
        for topic, values in notes.items():
            for listener in self._listeners.get(topic, ()):
                try:
                    listener(values)
                except Exception:  # one listener's bug must not fail a committed write
                    log.exception("a listener of %r failed", topic)

    @contextlib.contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A read-only transaction (a consistent snapshot)."""
        with self._read_engine.begin() as conn:
            yield conn

    def migrate(self) -> None:
        """Bring the schema to the newest revision of every branch (idempotent).

        Features add their tables on branches of their own (each revising an earlier
        revision), so the script may have several heads; all of them are applied. On
        PostgreSQL an advisory lock keeps two servers starting at once from racing.
        """
        with self.engine.begin() as conn:
            if not self.is_sqlite:
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(961800)")
            cfg = _alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "heads")

    def revisions(self) -> set[str]:
        """The schema revisions the database is at (empty: never migrated)."""
        with self.engine.connect() as conn:
            return set(MigrationContext.configure(conn).get_current_heads())

    def check_current(self) -> None:
        """Refuse to serve a database whose schema is not the newest one."""
        heads = set(ScriptDirectory.from_config(_alembic_config()).get_heads())
        current = self.revisions()
        if current != heads:
            have = ", ".join(sorted(current)) or "none"
            raise OperatorError(
                f"the database is at schema revision {have} but this pilotage needs "
                f"{', '.join(sorted(heads))}; "
                "start 'pilotage server' without --no-migrate once to upgrade it"
            )

    def queue(self) -> WriteQueue:
        """The store's :class:`WriteQueue` (started on first use, stopped by dispose)."""
        with self._queue_lock:
            if self._queue is None:
                self._queue = WriteQueue(self)
            return self._queue

    def dispose(self) -> None:
        """Stop the write queue; close every pooled connection."""
        with self._queue_lock:
            if self._queue is not None:
                self._queue.close()
                self._queue = None
        self.engine.dispose()
        self._read_engine.dispose()


class WriteQueue:
    """One thread that runs short write transactions for coroutines, many to a commit.

    :meth:`run` hands a function of a connection to the thread and awaits its result.
    The thread takes every function waiting and runs them in one transaction, then
    commits once. This is group commit: one commit (one WAL append, one round trip)
    serves a whole batch, the event loop never blocks on the database or its lock, and
    no pool of threads fights over the write lock and the GIL.

    A function that raises must leave no trace and must not disturb the others: when one
    does, the whole transaction is rolled back and the batch runs again with each
    function in its own savepoint (savepoints cost two statements each, so they are
    used only then). A function may therefore run twice; only the run that commits
    counts, so functions must not act outside the transaction.

    Invariant: a result (or exception) reaches its caller only after the batch
    committed, so nobody acts on a change that could still roll back. If the commit
    fails, every function of the batch gets that error.
    """

    #: At most this many functions share one transaction (bounds how long it holds locks).
    MAX_BATCH = 64

    def __init__(self, store: Store) -> None:
        self._store = store
        self._outage = Outage("write queue", log)
        self._pending: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="write-queue", daemon=True)
        self._thread.start()

    async def run(self, work: Callable[[sa.Connection], T]) -> T:
        """Run ``work(conn)`` in a write transaction; return its result once committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.put(_Work(work, future, loop))
        return await future

    def close(self) -> None:
        """Finish the functions already queued, then stop the thread."""
        self._pending.put(None)
        self._thread.join(timeout=30)

    def _serve(self) -> None:
        while True:
            first = self._pending.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.MAX_BATCH:
                try:
                    more = self._pending.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._run_batch(batch)
            if stop:
                return

    def _run_batch(self, batch: list[_Work]) -> None:
        outcomes = self._all_at_once(batch)
        if outcomes is None:
            outcomes = self._each_in_a_savepoint(batch)
        if any(ok for _work, ok, _value in outcomes):
            self._outage.succeeded()
        loops: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for outcome in outcomes:
            loops.setdefault(outcome[0].loop, []).append(outcome)
        for loop, done in loops.items():
            # A closed loop raises RuntimeError: nobody awaits its results any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, done)

    def _all_at_once(self, batch: list[_Work]) -> list[_Outcome] | None:
        """Run the batch in one transaction; None if a function of a batch of several
        raised (everything is rolled back and must run again, one savepoint each)."""
        outcomes: list[_Outcome] = []
        try:
            with self._store.write() as conn:
                for work in batch:
                    outcomes.append((work, True, work.function(conn)))
        except Exception as exc:  # noqa: BLE001  (handed to the callers)
            if len(outcomes) == len(batch):  # the commit failed: nothing of it holds
                self._commit_failed(len(batch), exc)
                return [(work, False, exc) for work in batch]
            if len(batch) > 1:
                return None
            return [(batch[0], False, exc)]
        return outcomes

    def _each_in_a_savepoint(self, batch: list[_Work]) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        try:
            with self._store.write() as conn:
                for work in batch:
                    noted = _noted(conn)
                    try:
                        with conn.begin_nested():
                            outcomes.append((work, True, work.function(conn)))
                    except Exception as exc:  # noqa: BLE001  (handed to the caller)
                        conn.info[_NOTES] = noted  # what it undid is not told
                        outcomes.append((work, False, exc))
        except Exception as exc:  # noqa: BLE001  (the commit failed: nothing of it holds)
            self._commit_failed(len(batch), exc)
            outcomes = [(work, False, exc) for work in batch]
        return outcomes

    def _commit_failed(self, size: int, exc: Exception) -> None:
        """Log a failed batch: a database outage once as it starts (and ends, see
        :meth:`_run_batch`), anything else every time."""
        if not self._outage.failed(exc):
            log.warning("a batch of %d writes failed: %s", size, exc)


class _Work:
    """A queued function and where its result goes."""

    __slots__ = ("function", "future", "loop")

    def __init__(
        self,
        function: Callable[[sa.Connection], Any],
        future: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.function = function
        self.future = future
        self.loop = loop


#: A function's work item, whether it returned, and what it returned or raised.
_Outcome = tuple[_Work, bool, Any]


def _settle(done: list[_Outcome]) -> None:
    """Hand results and exceptions to their futures (on their event loop)."""
    for work, ok, value in done:
        if work.future.cancelled():
            continue  # the caller went away; what it asked for is done regardless
        if ok:
            work.future.set_result(value)
        else:
            work.future.set_exception(value)
