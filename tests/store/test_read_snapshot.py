"""A read transaction sees one snapshot, whatever commits meanwhile (store/engine.py).

The queue's listing relies on it: it reads the jobs of each state with a query of its
own, so a job that moved from RUNNING to IDLE between two of them was missing from the
listing on PostgreSQL, whose default (READ COMMITTED) takes a snapshot per statement.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from pilotage.store.engine import Store

JOBS = sa.table("snap_jobs", sa.column("id"), sa.column("state"))


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    store = Store(db_url)
    with store.write() as conn:
        conn.exec_driver_sql("CREATE TABLE snap_jobs (id INTEGER PRIMARY KEY, state TEXT)")
        conn.execute(sa.insert(JOBS).values(id=1, state="RUNNING"))
    yield store
    store.dispose()


def _in_state(conn: sa.Connection, state: str) -> list[int]:
    return list(conn.execute(sa.select(JOBS.c.id).where(JOBS.c.state == state)).scalars())


def test_a_job_that_changes_state_mid_read_is_seen_once_in_its_old_state(store: Store) -> None:
    with store.read() as conn:
        idle = _in_state(conn, "IDLE")  # the snapshot starts here
        with store.write() as writer:  # another request ends the claim meanwhile
            writer.execute(sa.update(JOBS).where(JOBS.c.id == 1).values(state="IDLE"))
        running = _in_state(conn, "RUNNING")
    assert (idle, running) == ([], [1])
    with store.read() as conn:  # the next read sees the change
        assert (_in_state(conn, "IDLE"), _in_state(conn, "RUNNING")) == ([1], [])
