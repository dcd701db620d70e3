"""GPUs end to end with the ``--gpus`` override (no real device here): whole devices per
job, never two jobs on one, ``AssignedGPUs`` in the ad, ``CUDA_VISIBLE_DEVICES`` in the
job's environment, and ``require_gpus`` matched against each device."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilotage.testing import Pool


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: what is tested here is the matchmaker and the agent, not the store."""
    return f"sqlite:///{tmp_path / 'pilotage.db'}"


JOB = """#!/bin/sh
echo "$CUDA_VISIBLE_DEVICES $_CONDOR_AssignedGPUs"
while [ ! -e {gate} ]; do sleep 0.1; done
"""
SUBMIT = """executable = job.sh
request_gpus = 1
request_memory = 64M
output = gpu.$(Cluster).$(Process)
{extra}
queue {count}
"""


def _ok(result) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 0, result.stdout + result.stderr
    return str(result.stdout)


def _submit(pool: Pool, work: Path, count: int, extra: str = "") -> None:
    (work / "job.sub").write_text(SUBMIT.format(extra=extra, count=count))
    _ok(pool.cli("submit", "job.sub", cwd=work))


def test_each_job_gets_its_own_device(pool: Pool) -> None:
    work = pool.root / "work"
    work.mkdir()
    gate = pool.root / "gate"
    (work / "job.sh").write_text(JOB.format(gate=gate))
    (work / "job.sh").chmod(0o755)
    pool.pilots(1, cpus=3, memory_mb=1024, extra_args=("--gpus", "GPU-aaa,GPU-bbb"))
    _submit(pool, work, 2)
    _submit(pool, work, 1, 'require_gpus = Id == "GPU-bbb"')
    running = pool.wait_jobs(["1.0", "1.1"], ("RUNNING",))
    assert len(running) == 2
    assigned = _ok(pool.cli("q", "1", "-af", "AssignedGPUs")).split()
    assert sorted(assigned) == ["GPU-aaa", "GPU-bbb"]
    gate.touch()
    pool.wait_jobs(["1.0", "1.1", "2.0"], ("COMPLETED",))
    _ok(pool.cli("fetch", "1", "2", cwd=work))
    seen = {n: (work / f"gpu.{n}").read_text().split() for n in ("1.0", "1.1", "2.0")}
    assert sorted(seen["1.0"] + seen["1.1"]) == ["GPU-aaa"] * 2 + ["GPU-bbb"] * 2
    assert seen["2.0"] == ["GPU-bbb", "GPU-bbb"]
    history = _ok(pool.cli("history", "2", "-af", "AssignedGPUs", "RequireGPUs"))
    assert history.split()[0] == "GPU-bbb"
    # A cpu was free all along, but GPU-bbb was not: 2.0 started once its holder ended.
    holder = "1.0" if seen["1.0"][0] == "GPU-bbb" else "1.1"
    with pool.admin() as admin:
        ended = [e["at"] for e in admin.call("GET", f"/api/v1/jobs/{holder}/events")
                 if e["to"] == "COMPLETED"]  # fmt: skip
        started = [e["at"] for e in admin.call("GET", "/api/v1/jobs/2.0/events")
                   if e["to"] == "RUNNING"]  # fmt: skip
    assert started[0] >= ended[0]
