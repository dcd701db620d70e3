"""Fixtures for the whole suite: real services, started on 127.0.0.1 and thrown away.

A test that needs a service this machine lacks is skipped locally and fails when
``CI=true``: on CI a missing service means a broken image, not an optional test.
:func:`require_service` applies that rule; sub-directories reach it as the fixture of
the same name (conftest modules are not importable from one another).

PostgreSQL: ``postgres_server`` runs one throwaway cluster per session,
``pg_database`` gives each test a fresh database in it, and ``db_url`` runs a test
once on SQLite and once on PostgreSQL. See docs/testing.md.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from pilotage.store.engine import Store
from pilotage.testing import (
    Pool,
    ServiceFailed,
    ServiceUnavailable,
    postgres_cluster,
    throwaway_database,
)
from pilotage.testing_runs import end_leftovers, mark_run


def pytest_configure(config: pytest.Config) -> None:
    """On the run's controller (not a pytest-xdist worker): kill what interrupted runs
    left running, then mark this run's processes (:mod:`pilotage.testing_runs`)."""
    if hasattr(config, "workerinput"):
        return
    left = end_leftovers()
    if left:
        sys.stderr.write(f"killed {len(left)} processes left by interrupted test runs\n")
    mark_run()


def require_service(name: str, reason: str) -> NoReturn:
    """Skip the current test because ``name`` is unavailable; fail it instead under CI."""
    message = f"{name} is unavailable: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true, so every service must be present)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(name="require_service", scope="session")
def require_service_fixture() -> Callable[[str, str], NoReturn]:
    """:func:`require_service`, for tests and conftests in sub-directories."""
    return require_service


#: Test modules that share one service per worker and so must run on the same worker
#: under pytest-xdist: a second Slurm cluster on the same host would fight the first.
SHARED_WORKER = {
    "tests/factory/test_slurm.py": "slurm",
    "tests/factory/test_backend_conformance.py": "slurm",
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses PostgreSQL ``postgres``, so ``-m "not postgres"`` works.

    Also give each test an ``xdist_group``: its module, or the group of
    :data:`SHARED_WORKER`. With ``-n N --dist loadgroup`` (``make test``) a module's
    tests then run on one worker, so module fixtures (a pool, a site) start once.
    """
    for item in items:
        if {"postgres_server", "pg_database"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)
        module = item.nodeid.split("::", 1)[0]
        if not any(item.iter_markers("xdist_group")):
            item.add_marker(pytest.mark.xdist_group(SHARED_WORKER.get(module, module)))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Run a throwaway PostgreSQL cluster; yield its URL without a database name.

    The URL looks like ``postgresql+psycopg://pilotage:<password>@127.0.0.1:<port>/``;
    see :func:`pilotage.testing.postgres_cluster` (127.0.0.1 only, SCRAM passwords, its
    own socket directory, fsync off; as root, run by a system user).
    """
    try:
        with postgres_cluster() as url:
            yield url
    except ServiceUnavailable as exc:
        require_service("PostgreSQL", str(exc))
    except ServiceFailed as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def pg_database(postgres_server: str) -> Iterator[str]:
    """Create a fresh, empty database for one test; yield its URL; drop it afterwards."""
    with throwaway_database(postgres_server) as url:
        yield url


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", id="postgres", marks=pytest.mark.postgres)]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL, once for SQLite (a file in ``tmp_path``) and once for PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pilotage.db'}"
    # Asked for here rather than as an argument, so SQLite runs never start PostgreSQL.
    url: str = request.getfixturevalue("pg_database")
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A migrated store on ``db_url``, disposed of afterwards."""
    made = Store(db_url)
    made.migrate()
    yield made
    made.dispose()


@pytest.fixture
def make_pool(db_url: str) -> Iterator[Callable[..., Pool]]:
    """Start pools (server subprocesses on 127.0.0.1, port 0) on ``db_url``; stop them after.

    Short leases and heartbeats by default so lease expiry shows within seconds. The
    root is world-searchable (not pytest's 0700 tmp_path) so real local users reach the
    server's socket.
    """
    pools: list[Pool] = []

    def start(**settings: str) -> Pool:
        root = Path(tempfile.mkdtemp(prefix="pilotage-pool-"))
        defaults = {
            "lease_s": "8",
            "heartbeat_s": "1",
            "reap_interval_s": "0.5",
            "retry_after_s": "0.5",
        }
        pool = Pool(root, db_url, settings={**defaults, **settings})
        pools.append(pool)
        return pool.start()

    yield start
    with contextlib.ExitStack() as stopping:  # every pool stopped, though one fails to
        for pool in pools:
            stopping.callback(shutil.rmtree, pool.root, ignore_errors=True)
            stopping.callback(pool.stop)


@pytest.fixture
def pool(make_pool: Callable[..., Pool]) -> Pool:
    """One running pool on ``db_url`` (so: once on SQLite, once on PostgreSQL)."""
    return make_pool()
