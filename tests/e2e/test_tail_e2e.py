"""pilotage tail (condor_tail): the end of a running job's stdout with stream_output, -f
until the job ends, and a clear refusal for a job that does not stream or has ended."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from pilotage.testing import Pool, end_processes


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: what is tested here is the matchmaker and the agent, not the store."""
    return f"sqlite:///{tmp_path / 'pilotage.db'}"


JOB = """#!/bin/sh
echo "started $1"
while [ ! -e {gate} ]; do sleep 0.1; done
echo "ending $1"
"""
SUBMIT = """executable = job.sh
arguments = $(Process)
output = out.$(Process)
stream_output = $(stream)
queue stream in (true, false)
"""


def test_tail_follows_a_streaming_job(pool: Pool) -> None:
    work = pool.root / "work"
    work.mkdir()
    gate = pool.root / "gate"
    (work / "job.sh").write_text(JOB.format(gate=gate))
    (work / "job.sh").chmod(0o755)
    (work / "job.sub").write_text(SUBMIT)
    assert pool.cli("submit", "job.sub", cwd=work).returncode == 0
    pool.pilots(1, cpus=2, memory_mb=1024)
    pool.wait_jobs(["1.0", "1.1"], ("RUNNING",))
    deadline = time.monotonic() + 60
    while (shown := pool.cli("tail", "1.0")).stdout != "started 0\n":
        assert time.monotonic() < deadline, shown.stdout + shown.stderr
        time.sleep(0.5)
    refused = pool.cli("tail", "1.1")
    assert refused.returncode == 6
    assert "job 1.1 does not stream its output: submit it with" in refused.stderr
    follow = subprocess.Popen(
        [sys.executable, "-m", "pilotage.cli", "tail", "-f", "1.0"],
        env=pool.env(), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert follow.stdout is not None and follow.stdout.readline() == "started 0\n"
        gate.touch()
        pool.wait_jobs(["1.0", "1.1"], ("COMPLETED",))
        out, _ = follow.communicate(timeout=60)
    finally:
        end_processes([follow])  # ended already, unless the test failed
    assert out == "ending 0\n" and follow.returncode == 0
    ended = pool.cli("tail", "1.0")
    assert ended.returncode == 6 and "is COMPLETED, not running" in ended.stderr
