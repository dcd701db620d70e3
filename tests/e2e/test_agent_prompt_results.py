"""A real agent reports a job's result as soon as the job ends, even while the server has
told it to ask for work again only later (``retry_after_s``): that delay is for asking,
not for reporting."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_callers import submit_api

from pilotage.testing import Pool


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: what is tested here is the agent's loop, not the store."""
    return f"sqlite:///{tmp_path / 'pilotage.db'}"


def test_a_result_is_reported_at_once_while_asking_waits(
    make_pool: Callable[..., Pool],
) -> None:
    # The server answers "no work" at once, and tells the pilot to ask again in ten
    # minutes: far past every deadline below.
    pool = make_pool(retry_after_s="600", work_wait_s="0", lease_s="600", heartbeat_s="60")
    go = pool.root / "go"
    wait_for_go = f"while [ ! -e {go} ]; do sleep 0.05; done"
    with pool.admin() as admin:
        quick = submit_api(admin, 1)
        slow = submit_api(admin, 1, executable="/bin/sh", arguments=["-c", wait_for_go])
    pool.pilots(1, cpus=2, memory_mb=2048)
    # The quick job's result went with a request for work for its core, answered with
    # none: the pilot asks again only in ten minutes.
    pool.wait_jobs([f"{quick}.0"], ("COMPLETED",), timeout=120)
    pool.wait_jobs([f"{slow}.0"], ("RUNNING",), timeout=120)
    go.touch()
    (done,) = pool.wait_jobs([f"{slow}.0"], ("COMPLETED",), timeout=120)
    assert done["exit_code"] == 0, done
