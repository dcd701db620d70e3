"""Accounting groups end to end: the pool's mapping decides who may name a group, and a
pilot with room runs no more of a group's jobs than its quota allows."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from e2e_callers import LocalUsers

from pilotage.testing import Pool

GATE_JOB = "#!/bin/sh\nwhile [ ! -e {gate} ]; do sleep 0.1; done\n"
SUBMIT = "executable = job.sh\naccounting_group = group_physics\nqueue 2\n"


def _states(pool: Pool) -> dict[str, str]:
    with pool.admin() as client:
        return {j["id"]: j["state"] for j in client.call("GET", "/api/v1/jobs")}


def _events(pool: Pool, job: str) -> list[dict[str, Any]]:
    with pool.admin() as client:
        events: list[dict[str, Any]] = client.call("GET", f"/api/v1/jobs/{job}/events")
        return events


def test_group_members_quota_and_refusal(
    make_pool: Callable[..., Pool], local_users: LocalUsers
) -> None:
    pool = make_pool(
        accounting_groups=json.dumps({"group_physics": ["alice"]}),
        group_quotas=json.dumps({"group_physics": 1}),
        groups_accept_surplus="false",
    )
    gate = pool.root / "gate"
    files = {"job.sh": GATE_JOB.format(gate=gate), "job.sub": SUBMIT}
    refused = local_users.cli(
        pool, "bob", "submit", "job.sub", cwd=local_users.workdir(pool, "bob", files)
    )
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "bob may not use accounting group 'group_physics'" in refused.stderr
    work = local_users.workdir(pool, "alice", files)
    submitted = local_users.cli(pool, "alice", "submit", "job.sub", cwd=work)
    assert submitted.returncode == 0, submitted.stderr
    jobs = sorted(_states(pool))
    assert len(jobs) == 2  # bob's refusal stored no job

    pool.pilots(1, cpus=2, memory_mb=1024)  # room for both jobs, but the quota is 1 cpu
    deadline = time.monotonic() + 120
    while "RUNNING" not in (states := _states(pool)).values():
        assert time.monotonic() < deadline, states
        time.sleep(0.2)
    (waiting,) = [job for job, state in states.items() if state == "IDLE"]
    analysis = local_users.cli(pool, "alice", "q", "-analyze", waiting, "--json")
    fair = json.loads(analysis.stdout)["fair_share"]
    assert fair["submitter"] == "group_physics.alice" and fair["group_over_quota"], fair
    ads = local_users.cli(pool, "alice", "q", "-af", "AcctGroup", "AccountingGroup")
    assert ads.stdout.split("\n")[0] == "group_physics group_physics.alice"

    gate.touch()
    pool.wait_jobs(jobs, ("COMPLETED",))
    (first,) = [j for j in jobs if j != waiting]
    ended = next(e["at"] for e in _events(pool, first) if e["to"] == "COMPLETED")
    started = next(e["at"] for e in _events(pool, waiting) if e["to"] == "RUNNING")
    assert started >= ended  # never both running at once on the 2-cpu pilot
