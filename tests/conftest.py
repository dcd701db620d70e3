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

import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import sqlalchemy
from sqlalchemy.pool import NullPool

from pilotage.testing import Pool

#: The system account that runs PostgreSQL when the tests run as root (it refuses root).
PG_SYSTEM_USER = "pilotage-pg"
#: The database superuser of the throwaway cluster, the same whoever runs the tests.
PG_SUPERUSER = "pilotage"


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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses PostgreSQL ``postgres``, so ``-m "not postgres"`` works."""
    for item in items:
        if {"postgres_server", "pg_database"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Run a throwaway PostgreSQL cluster; yield its URL without a database name.

    The URL looks like ``postgresql+psycopg://pilotage:<password>@127.0.0.1:<port>/``.
    The cluster listens on 127.0.0.1 only, with password (SCRAM) authentication so other
    local users cannot use it, its socket in its own directory, and fsync off.
    """
    bindir = _postgres_bindir()
    if bindir is None:
        require_service(
            "PostgreSQL",
            "no initdb and pg_ctl found (pg_config --bindir, /usr/lib/postgresql/*/bin, PATH); "
            "install postgresql or run scripts/provision-test-services",
        )
    owner = _cluster_owner()
    password = secrets.token_hex(16)
    base = Path(tempfile.mkdtemp(prefix="pilotage-pg-"))
    try:
        data = base / "data"
        (base / "socket").mkdir()
        (base / "pwfile").write_text(password + "\n")
        if owner is not None:
            _chown_tree(base, owner)
        _run_as(
            owner,
            [
                str(bindir / "initdb"),
                f"--pgdata={data}",
                f"--username={PG_SUPERUSER}",
                f"--pwfile={base / 'pwfile'}",
                "--auth=scram-sha-256",
                "--no-locale",
                "--encoding=UTF8",
                "--no-sync",
            ],
            cwd=base,
        )
        (base / "pwfile").unlink()
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# pilotage test cluster\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{base / 'socket'}'\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
            )
        port = _start_cluster(bindir, owner, base)
        try:
            yield f"postgresql+psycopg://{PG_SUPERUSER}:{password}@127.0.0.1:{port}/"
        finally:
            _run_as(
                owner,
                [str(bindir / "pg_ctl"), f"--pgdata={data}", "--mode=fast", "--wait", "stop"],
                cwd=base,
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_database(postgres_server: str) -> Iterator[str]:
    """Create a fresh, empty database for one test; yield its URL; drop it afterwards."""
    name = f"test_{secrets.token_hex(6)}"
    admin = sqlalchemy.create_engine(
        sqlalchemy.make_url(postgres_server).set(database="postgres"),
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
    )
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield postgres_server + name
        finally:
            with admin.connect() as conn:
                # FORCE: a connection the test leaked must not keep its database alive.
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


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


def _postgres_bindir() -> Path | None:
    """Where initdb and pg_ctl are: pg_config's answer, Debian's newest, or PATH."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        answer = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if answer.returncode == 0:
            candidates.append(Path(answer.stdout.strip()))

    def version(bindir: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name))

    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    candidates += debian
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(Path(initdb).parent)
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


def _cluster_owner() -> str | None:
    """The account to run PostgreSQL as: None for ourselves, a system user when root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        if shutil.which("useradd") is None or shutil.which("runuser") is None:
            require_service("PostgreSQL", "running as root needs useradd and runuser")
        created = subprocess.run(
            [
                *("useradd", "--system", "--user-group", "--no-create-home"),
                *("--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER),
            ],
            capture_output=True,
            text=True,
        )
        # Another session may have created it meanwhile; only its absence is an error.
        try:
            pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            pytest.fail(f"cannot create system user {PG_SYSTEM_USER}: {created.stderr.strip()}")
    return PG_SYSTEM_USER


def _chown_tree(root: Path, owner: str) -> None:
    account = pwd.getpwnam(owner)
    for path in [root, *root.rglob("*")]:
        os.chown(path, account.pw_uid, account.pw_gid)


def _run_as(owner: str | None, command: list[str], *, cwd: Path) -> None:
    # cwd: PostgreSQL's tools fail when they cannot read the directory they start in.
    if owner is not None:
        command = ["runuser", "-u", owner, "--", *command]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}",
            pytrace=False,
        )


def _start_cluster(bindir: Path, owner: str | None, base: Path) -> int:
    """Start the cluster on a free port; return the port.

    The port is found by binding port 0 and releasing it, so another process can take it
    before PostgreSQL does; that race is retried with a new port.
    """
    log = base / "postgresql.log"
    for _attempt in range(3):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        log.unlink(missing_ok=True)
        command = [str(bindir / "pg_ctl"), f"--pgdata={base / 'data'}", f"--log={log}"]
        command += ["--wait", "--timeout=60", f"--options=-p {port}", "start"]
        if owner is not None:
            command = ["runuser", "-u", owner, "--", *command]
        result = subprocess.run(command, cwd=base, capture_output=True, text=True)
        if result.returncode == 0:
            return port
        server_log = log.read_text(errors="replace") if log.exists() else ""
        if "could not bind" not in server_log:
            break
    pytest.fail(
        f"PostgreSQL did not start: {result.stdout}{result.stderr}\n{server_log}", pytrace=False
    )


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
    for pool in pools:
        pool.stop()
        shutil.rmtree(pool.root, ignore_errors=True)


@pytest.fixture
def pool(make_pool: Callable[..., Pool]) -> Pool:
    """One running pool on ``db_url`` (so: once on SQLite, once on PostgreSQL)."""
    return make_pool()
