"""Which failures are faults of the moment (503) and which are bugs (500): real errors
raised by real SQLite databases, a real connection pool and a refused PostgreSQL
connection, through SQLAlchemy as the server meets them."""

from __future__ import annotations

import errno
import socket
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from pilotage.store.faults import Fault, FaultKind, classify
from pilotage.store.outage import Outage


def _raised(action: Callable[[], object]) -> BaseException:
    try:
        action()
    except Exception as exc:
        return exc
    pytest.fail("nothing was raised")


def _insert(engine: sa.Engine, value: int) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO t VALUES ({value})")


def _kind(exc: BaseException) -> FaultKind | None:
    found = classify(exc)
    return None if found is None else found.kind


def test_sqlite_locked_read_only_damaged_and_unopenable_are_faults(tmp_path: Path) -> None:
    db = tmp_path / "pool.db"
    engine = sa.create_engine(f"sqlite:///{db}", connect_args={"timeout": 0.05})
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process's writer, say
    try:
        locked = _raised(lambda: _insert(engine, 1))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert _kind(locked) is FaultKind.BUSY
    engine.dispose()

    read_only = sa.create_engine(f"sqlite:///file:{db}?mode=ro&uri=true")
    refused = _raised(lambda: _insert(read_only, 2))
    read_only.dispose()
    assert _kind(refused) is FaultKind.READ_ONLY

    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all, " * 400)
    damaged = sa.create_engine(f"sqlite:///{junk}")
    assert _kind(_raised(lambda: _insert(damaged, 3))) is FaultKind.DAMAGED
    damaged.dispose()

    nowhere = sa.create_engine(f"sqlite:///{tmp_path / 'missing' / 'pool.db'}")
    assert _kind(_raised(nowhere.connect)) is FaultKind.UNAVAILABLE
    nowhere.dispose()


def test_programming_errors_are_bugs_not_faults(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'pool.db'}", poolclass=NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    with engine.connect() as conn:
        for statement in ("SELEC 1", "SELECT * FROM nowhere", "INSERT INTO t VALUES (1)"):
            exc = _raised(lambda s=statement: conn.exec_driver_sql(s))  # type: ignore[misc]
            assert isinstance(exc, sa.exc.DBAPIError)
            assert classify(exc) is None, exc
    engine.dispose()
    assert classify(ValueError("a bug")) is None
    assert classify(FileNotFoundError(errno.ENOENT, "gone")) is None


def test_an_exhausted_pool_and_a_stopped_postgresql_are_faults() -> None:
    engine = sa.create_engine("sqlite://", pool_size=1, max_overflow=0, pool_timeout=0.05,
                              poolclass=sa.pool.QueuePool)  # fmt: skip
    held = engine.connect()
    try:
        busy = _raised(engine.connect)
    finally:
        held.close()
        engine.dispose()
    assert _kind(busy) is FaultKind.OVERLOADED

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pg = sa.create_engine(f"postgresql+psycopg://u:p@127.0.0.1:{port}/db", poolclass=NullPool)
    refused = _raised(pg.connect)
    found = classify(refused)
    assert found is not None and found.kind is FaultKind.UNAVAILABLE
    assert str(port) not in found.message and "127.0.0.1" not in found.message  # no host


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (errno.ENOSPC, FaultKind.DISK_FULL),
        (errno.EDQUOT, FaultKind.DISK_FULL),
        (errno.EROFS, FaultKind.READ_ONLY),
        (errno.EACCES, FaultKind.READ_ONLY),
        (errno.EIO, FaultKind.IO_ERROR),
        (errno.EMFILE, FaultKind.OVERLOADED),
    ],
)
def test_a_full_read_only_or_failing_disk_is_a_fault(code: int, kind: FaultKind) -> None:
    found = classify(OSError(code, "from the system", "/srv/pool/spool/x"))
    assert isinstance(found, Fault) and found.kind is kind
    assert "/srv" not in found.message  # the path goes to the log, never to a caller


def test_an_outage_is_logged_as_it_starts_and_as_it_ends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    logger = logging.getLogger("pilotage.test.outage")
    outage = Outage("sweep", logger)
    fault = OSError(errno.ENOSPC, "No space left on device")
    with caplog.at_level(logging.WARNING, logger="pilotage.test.outage"):
        outage.succeeded()  # nothing to end
        threads = [threading.Thread(target=outage.failed, args=(fault,)) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert outage.failed(ValueError("a bug")) is False  # the caller logs bugs itself
        outage.succeeded()
        outage.succeeded()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("sweep: outage (disk_full: no space left on the device)")
    assert lines[1].startswith("sweep: outage over after") and "(20 failed passes)" in lines[1]


def test_a_server_out_of_reach_is_an_outage_of_a_client_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from pilotage.errors import Unreachable

    outage = Outage("frontend", logging.getLogger("pilotage.test.outage"))
    with caplog.at_level(logging.WARNING, logger="pilotage.test.outage"):
        for _ in range(3):
            assert outage.failed(Unreachable("cannot reach the server at https://s:9618"))
        outage.succeeded()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == (
        "frontend: outage (Unreachable): cannot reach the server at https://s:9618; "
        "retrying quietly until it ends"
    )
    assert "(3 failed passes)" in lines[1] and len(lines) == 2
