"""The store's write queue: many writes to a commit, each isolated, results after commit."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from pilotage.store.engine import Store, WriteQueue

NOTES = sa.table("notes", sa.column("text"))


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    store = Store(db_url)
    with store.write() as conn:
        conn.exec_driver_sql("CREATE TABLE notes (text VARCHAR(40) UNIQUE)")
    yield store
    store.dispose()


def note(text: str) -> sa.Executable:
    return sa.insert(NOTES).values(text=text)


def notes(store: Store) -> list[str]:
    with store.read() as conn:
        return sorted(conn.execute(sa.select(NOTES.c.text)).scalars())


def test_a_failing_write_leaves_no_trace_and_spares_its_batch(store: Store) -> None:
    queue = store.queue()
    started, release = threading.Event(), threading.Event()

    def hold(conn: sa.Connection) -> None:
        started.set()
        release.wait(10)

    def good(text: str):  # type: ignore[no-untyped-def]
        def write(conn: sa.Connection) -> str:
            conn.execute(note(text))
            return text

        return write

    def bad(conn: sa.Connection) -> None:
        conn.execute(note("bad"))
        raise ValueError("refused")

    async def main() -> list[object]:
        first = asyncio.ensure_future(queue.run(hold))
        await asyncio.to_thread(started.wait, 10)
        # The thread is busy: these three wait for it and run as one batch.
        rest = [asyncio.ensure_future(queue.run(f)) for f in (good("a"), bad, good("b"))]
        await asyncio.sleep(0.05)
        release.set()
        await first
        return await asyncio.gather(*rest, return_exceptions=True)

    a, refused, b = asyncio.run(main())
    assert (a, b) == ("a", "b")
    assert isinstance(refused, ValueError)
    assert notes(store) == ["a", "b"]


def test_a_result_arrives_after_its_commit(store: Store) -> None:
    async def main() -> list[str]:
        await store.queue().run(lambda conn: conn.execute(note("seen")))
        return notes(store)  # another connection already sees it

    assert asyncio.run(main()) == ["seen"]


def test_a_failed_commit_fails_every_write_of_its_batch(store: Store) -> None:
    with store.write() as conn:
        conn.exec_driver_sql("CREATE TABLE parents (id INTEGER PRIMARY KEY)")
        conn.exec_driver_sql(
            "CREATE TABLE children (parent INTEGER REFERENCES parents (id)"
            " DEFERRABLE INITIALLY DEFERRED)"
        )
    queue = store.queue()
    started, release = threading.Event(), threading.Event()

    def hold(conn: sa.Connection) -> None:
        started.set()
        release.wait(10)

    def orphan(conn: sa.Connection) -> None:
        # Fine until the commit checks the deferred foreign key.
        conn.exec_driver_sql("INSERT INTO children (parent) VALUES (42)")

    async def main() -> list[object]:
        first = asyncio.ensure_future(queue.run(hold))
        await asyncio.to_thread(started.wait, 10)
        rest = [
            asyncio.ensure_future(queue.run(f))
            for f in (lambda conn: conn.execute(note("innocent")), orphan)
        ]
        await asyncio.sleep(0.05)
        release.set()
        await first
        return await asyncio.gather(*rest, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert all(isinstance(o, sa.exc.IntegrityError) for o in outcomes), outcomes
    assert notes(store) == []
    # The queue keeps serving.
    asyncio.run(queue.run(lambda conn: conn.execute(note("after"))))
    assert notes(store) == ["after"]


def test_close_finishes_what_is_queued(store: Store) -> None:
    queue = WriteQueue(store)

    async def main() -> None:
        futures = [
            asyncio.ensure_future(queue.run(lambda c, i=i: c.execute(note(f"n{i}"))))
            for i in range(20)
        ]
        await asyncio.sleep(0)  # every write is queued
        await asyncio.to_thread(queue.close)
        await asyncio.gather(*futures)

    asyncio.run(main())
    assert len(notes(store)) == 20
