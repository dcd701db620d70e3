"""What the server keeps of a streaming job's stdout: pieces appended, overlaps and gaps
resolved, the end kept within its bound, a new claim starting afresh."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from pilotage.errors import BadInput
from pilotage.queue import jobs as queue
from pilotage.queue import tails
from pilotage.queue.history import Actor
from pilotage.queue.spec import JobSpec
from pilotage.store.engine import Store
from pilotage.store.tables import job_tails, jobs


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    store.migrate()
    yield store
    store.dispose()


def kept(store: Store, job_id: int) -> tuple[int, bytes]:
    with store.read() as conn:
        row = conn.execute(sa.select(job_tails).where(job_tails.c.job_id == job_id)).one()
    return row.offset, bytes(row.data)


def test_pieces_make_the_end_of_stdout(store: Store) -> None:
    now = time.time()
    with store.write() as conn:
        cluster = queue.open_cluster(conn, Actor("alice"), now)
        queue.commit_cluster(conn, cluster, Actor("alice"), [JobSpec(executable="x")], now)
        job_id = conn.execute(sa.select(jobs.c.id)).scalar_one()

    def send(claim: str, offset: int, data: bytes) -> tuple[int, bytes]:
        with store.write() as conn:
            tails.record(conn, job_id, claim, offset, data, now)
        return kept(store, job_id)

    assert send("c1", 0, b"abc") == (0, b"abc")
    assert send("c1", 3, b"def") == (0, b"abcdef")  # follows
    assert send("c1", 4, b"EF") == (0, b"abcdEF")  # overlaps (the file was rewritten)
    assert send("c1", 100, b"xyz") == (100, b"xyz")  # the agent skipped ahead
    assert send("c2", 0, b"new") == (0, b"new")  # another claim: the job runs again
    half = 40 * 1024
    send("c2", 3, b"a" * half)
    offset, data = send("c2", 3 + half, b"b" * half)  # only the end is kept
    assert (offset, len(data)) == (3 + 2 * half - tails.KEPT_BYTES, tails.KEPT_BYTES)
    assert data.endswith(b"b" * half) and data.startswith(b"a")
    with store.write() as conn, pytest.raises(BadInput, match="at most"):
        tails.record(conn, job_id, "c2", 0, b"x" * (tails.MAX_PIECE + 1), now)
