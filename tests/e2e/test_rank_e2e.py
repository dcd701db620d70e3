"""A job's Rank picks among the free slots: ``rank = Memory`` lands on the bigger pilot,
``rank = -Memory`` on the smaller, whichever of them asks first."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pilotage.testing import Pool


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: what is tested here is the matchmaker and the agent, not the store."""
    return f"sqlite:///{tmp_path / 'pilotage.db'}"


SUBMIT = """executable = /bin/true
transfer_executable = false
request_memory = 128M
queue rank from (
  Memory
  -Memory
)
"""


def test_rank_chooses_between_two_free_pilots(pool: Pool) -> None:
    pool.pilots(1, cpus=1, memory_mb=512, site="Small")
    pool.pilots(1, cpus=1, memory_mb=4096, site="Big")
    deadline = time.monotonic() + 60
    with pool.admin() as admin:
        while len(admin.call("GET", "/api/v1/slots")) < 2:  # both registered and asking
            assert time.monotonic() < deadline, pool.server_log()
            time.sleep(0.2)
    work = pool.root / "work"
    work.mkdir()
    (work / "job.sub").write_text(SUBMIT)
    submitted = pool.cli("submit", "job.sub", cwd=work)
    assert submitted.returncode == 0, submitted.stderr
    jobs = pool.wait_jobs(["1.0", "1.1"], ("COMPLETED",))
    assert {j["id"]: j["site"] for j in jobs} == {"1.0": "Big", "1.1": "Small"}
