"""Opening the pool's database and running its migrations.

SQLite (WAL) is the embedded default; PostgreSQL serves bigger pools and several server
processes at once. Callers use :meth:`Store.write` for a transaction that changes
anything and :meth:`Store.read` for one that only reads.

On SQLite every write transaction starts with ``BEGIN IMMEDIATE`` so that two writers
never both read and then fail to upgrade their lock; inside one process writers also
queue on a lock, which is far cheaper than SQLite's sleeping busy handler.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from pilotage.errors import OperatorError

MIGRATIONS = Path(__file__).with_name("migrations")


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
        if self.is_sqlite:
            self.engine = self._sqlite_engine("BEGIN IMMEDIATE")
            self._read_engine = self._sqlite_engine("BEGIN")
        elif self.url.startswith("postgresql"):
            self.engine = sa.create_engine(
                self.url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
            )
            self._read_engine = self.engine
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

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A transaction that may change the database; committed on success."""
        if self._write_lock is None:
            with self.engine.begin() as conn:
                yield conn
            return
        with self._write_lock, self.engine.begin() as conn:
            yield conn

    @contextmanager
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

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
        self._read_engine.dispose()
