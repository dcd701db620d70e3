"""The service fixtures of tests/conftest.py: they start real servers and clean up."""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable
from typing import NoReturn

import pytest
import sqlalchemy
from sqlalchemy.pool import NullPool


def query(url: str, sql: str) -> list[tuple[object, ...]]:
    """Run one statement on a fresh connection and return its rows."""
    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sqlalchemy.text(sql))]
    finally:
        engine.dispose()


def test_db_url_answers_a_query(db_url: str) -> None:
    assert query(db_url, "select 1") == [(1,)]


def test_db_url_is_writable_and_starts_empty(db_url: str) -> None:
    engine = sqlalchemy.create_engine(db_url, poolclass=NullPool)
    try:
        assert sqlalchemy.inspect(engine).get_table_names() == []
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("create table job (id integer primary key, owner text)"))
            conn.execute(sqlalchemy.text("insert into job values (1, 'alice')"))
        with engine.connect() as conn:
            rows = conn.execute(sqlalchemy.text("select owner from job")).all()
        assert [tuple(row) for row in rows] == [("alice",)]
    finally:
        engine.dispose()


def test_db_url_backend_matches_its_test_id(db_url: str, request: pytest.FixtureRequest) -> None:
    backend = sqlalchemy.make_url(db_url).get_backend_name()
    expected = {"sqlite": "sqlite", "postgres": "postgresql"}[request.node.callspec.id]
    assert backend == expected


def test_postgres_server_is_a_throwaway_on_loopback(postgres_server: str) -> None:
    url = sqlalchemy.make_url(postgres_server).set(database="postgres")
    assert url.host == "127.0.0.1"
    rows = query(
        url.render_as_string(hide_password=False),
        "select name, setting from pg_settings where name in "
        "('fsync', 'listen_addresses', 'data_directory', 'unix_socket_directories')",
    )
    settings = {str(name): str(setting) for name, setting in rows}
    assert settings["fsync"] == "off"
    assert settings["listen_addresses"] == "127.0.0.1"
    data_directory = settings["data_directory"]
    assert settings["unix_socket_directories"].startswith(os.path.dirname(data_directory))
    (user,) = query(url.render_as_string(hide_password=False), "select current_user")[0]
    assert user == url.username == "pilotage"
    # PostgreSQL refuses to run as root, so as root the cluster belongs to a system user.
    expected_uid = pwd.getpwnam("pilotage-pg").pw_uid if os.geteuid() == 0 else os.geteuid()
    assert os.stat(data_directory).st_uid == expected_uid


def test_postgres_server_refuses_a_wrong_password(postgres_server: str) -> None:
    url = sqlalchemy.make_url(postgres_server).set(database="postgres", password="wrong")
    with pytest.raises(sqlalchemy.exc.OperationalError, match="password authentication failed"):
        query(url.render_as_string(hide_password=False), "select 1")


def test_pg_database_is_fresh(pg_database: str) -> None:
    ((name, tables),) = query(
        pg_database,
        "select current_database(), "
        "(select count(*) from information_schema.tables where table_schema = 'public')",
    )
    assert str(name).startswith("test_")
    assert tables == 0


@pytest.mark.parametrize("run", [1, 2])
def test_pg_database_of_earlier_tests_is_dropped(pg_database: str, run: int) -> None:
    # The second run at the latest follows another test's pg_database.
    databases = query(pg_database, "select datname from pg_database where datname like 'test_%'")
    assert databases == [(sqlalchemy.make_url(pg_database).database,)]


def test_require_service_skips_locally(
    require_service: Callable[[str, str], NoReturn], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="squid is unavailable: not installed"):
        require_service("squid", "not installed")


def test_require_service_fails_under_ci(
    require_service: Callable[[str, str], NoReturn], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"squid is unavailable.*CI=true"):
        require_service("squid", "not installed")
