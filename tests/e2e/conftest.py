"""Fixtures of the end-to-end tests; the helpers themselves are in :mod:`e2e_callers`."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from typing import NoReturn

import httpx
import pytest
from e2e_callers import LocalUsers, https, python_for

from pilotage.testing import Pool
from pilotage.testing_accounts import AccountsUnavailable, ensure_accounts


@pytest.fixture
def clients() -> Iterator[Callable[..., httpx.Client]]:
    """:func:`https`, with every client closed after the test."""
    opened: list[httpx.Client] = []

    def open_client(pool: Pool, token: str | None, *, url: str | None = None) -> httpx.Client:
        client = https(pool, token, url=url)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()


@pytest.fixture(scope="session")
def local_users(require_service: Callable[[str, str], NoReturn]) -> LocalUsers:
    """The real Unix users ``alice`` and ``bob`` (created when missing; needs root)."""
    names = ("alice", "bob")
    if os.geteuid() != 0:
        require_service("real Unix users", "creating alice and bob and running as them needs root")
    if shutil.which("runuser") is None:
        require_service("real Unix users", "runuser is needed")
    try:
        ensure_accounts(names)
    except AccountsUnavailable as exc:
        require_service("real Unix users", str(exc))
    python = python_for(names[0])
    if python is None:
        require_service(
            "real Unix users",
            f"alice can run neither {sys.executable} nor a system python with pilotage's "
            "packages (is a parent directory closed to other users?)",
        )
    return LocalUsers(python, names)
