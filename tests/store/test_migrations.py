"""The migrations build exactly the schema the code uses, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from pilotage.errors import OperatorError
from pilotage.store.engine import Store, normalise_url
from pilotage.store.tables import metadata


def test_migrated_schema_matches_tables(db_url: str) -> None:
    store = Store(db_url)
    try:
        assert store.revisions() == set()
        with pytest.raises(OperatorError, match="schema revision none"):
            store.check_current()
        store.migrate()
        store.migrate()  # idempotent
        store.check_current()
        with store.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        store.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        store.migrate()
        with store.read() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        store.dispose()


def test_write_transaction_rolls_back_on_error(db_url: str) -> None:
    store = Store(db_url)
    try:
        store.migrate()
        with pytest.raises(RuntimeError), store.write() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO clusters (owner, status, created_at, num_jobs) "
                    "VALUES ('alice', 'open', 1.0, 0)"
                )
            )
            raise RuntimeError("abort")
        with store.read() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM clusters")).scalar() == 0
    finally:
        store.dispose()


def test_urls() -> None:
    assert normalise_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    with pytest.raises(OperatorError, match="neither sqlite"):
        Store("mysql://u@h/db")
