"""The web tests' live pool (see :mod:`web.web_pool`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from web.web_pool import WebPool, start_web_pool


@pytest.fixture(scope="module")
def web_pool() -> Iterator[WebPool]:
    """One live pool per test module: a server, agents at two entries, alice's and bob's
    jobs (quick ones completed, long ones running, one held)."""
    with start_web_pool() as web:
        yield web
