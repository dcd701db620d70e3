"""The job's own policy, end to end: a real server, real pilots, HTCondor submit files.

max_retries runs a failing job again; on_exit_hold holds it with its reason and subcode;
the server's sweep applies periodic_release, periodic_hold and periodic_remove; the job
event log of all of it is read back by HTCondor's own reader.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import htcondor2

from pilotage.testing import Pool

E = htcondor2.JobEventType


def _work(pool: Pool, submit: str, script: str) -> Path:
    work = pool.root / "work"
    work.mkdir()
    (work / "job.sh").write_text(f"#!/bin/sh\n{script}\n")
    (work / "job.sh").chmod(0o755)
    (work / "job.sub").write_text(submit)
    return work


def _submit(pool: Pool, work: Path) -> None:
    result = pool.cli("submit", "job.sub", "--json", cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr


def _events(pool: Pool, job: str) -> list[dict[str, Any]]:
    with pool.admin() as client:
        events: list[dict[str, Any]] = client.call("GET", f"/api/v1/jobs/{job}/events")
    return events


def _log(work: Path) -> list[tuple[int, Any]]:
    return [(e.proc, e.type) for e in htcondor2.JobEventLog(str(work / "job.log")).events(0)]


def test_max_retries_runs_a_failing_job_again_then_completes(pool: Pool) -> None:
    work = _work(
        pool,
        "executable = job.sh\nmax_retries = 2\nlog = job.log\nrequest_memory = 64M\nqueue\n",
        "exit 1",
    )
    _submit(pool, work)
    pool.pilots(1, cpus=1, memory_mb=512)
    waited = pool.cli("wait", "1", "--timeout", "120", cwd=work)
    assert waited.returncode == 1, waited.stdout + waited.stderr  # it never succeeded
    (job,) = pool.wait_jobs(["1.0"], ("COMPLETED",))
    assert job["exit_code"] == 1 and job["attempts"] == 3
    triggers = [e["trigger"] for e in _events(pool, "1.0")]
    assert triggers == ["submit", "claim", "retry", "claim", "retry", "claim", "exit"]
    assert _log(work) == [
        (0, E.SUBMIT),
        (0, E.EXECUTE),
        (0, E.JOB_EVICTED),
        (0, E.EXECUTE),
        (0, E.JOB_EVICTED),
        (0, E.EXECUTE),
        (0, E.JOB_TERMINATED),
    ]


def test_on_exit_hold_then_periodic_release_then_held_for_good(pool: Pool) -> None:
    submit = "\n".join(
        [
            "executable = job.sh",
            "log = job.log",
            "request_memory = 64M",
            "on_exit_hold = ExitCode == 3",
            'on_exit_hold_reason = "exit code 3 means the input was bad"',
            "on_exit_hold_subcode = 7",
            "periodic_release = HoldReasonSubCode == 7 && NumJobCompletions < 2",
            "queue",
        ]
    )
    work = _work(pool, submit + "\n", "exit 3")
    _submit(pool, work)
    pool.pilots(1, cpus=1, memory_mb=512)
    # Held, released by the sweep, run again, held again: then NumJobCompletions is 2.
    deadline = time.monotonic() + 300
    triggers = [e["trigger"] for e in _events(pool, "1.0")]
    while triggers.count("hold") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
        triggers = [e["trigger"] for e in _events(pool, "1.0")]
    assert triggers == ["submit", "claim", "hold", "release", "claim", "hold"]
    (job,) = pool.wait_jobs(["1.0"], ("HELD",))
    assert job["hold_code"] == 3 and "exit code 3 means the input was bad" in job["hold_reason"]
    events = _events(pool, "1.0")
    assert events[3]["actor"] == "policy" and "PeriodicRelease" in events[3]["reason"]
    removed = pool.cli("rm", "1.0", "--json")
    assert removed.returncode == 0, removed.stderr
    fetched = pool.cli("fetch", "1.0", cwd=work)
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    log = list(htcondor2.JobEventLog(str(work / "job.log")).events(0))
    assert [e.type for e in log] == [
        E.SUBMIT,
        E.EXECUTE,
        E.JOB_HELD,
        E.JOB_RELEASED,
        E.EXECUTE,
        E.JOB_HELD,
        E.JOB_ABORTED,
    ]
    assert log[5]["HoldReasonCode"] == 3 and log[5]["HoldReasonSubCode"] == 7


def test_periodic_hold_of_a_running_job_then_periodic_remove(pool: Pool) -> None:
    submit = "\n".join(
        [
            "executable = job.sh",
            "request_memory = 64M",
            "periodic_hold = JobStatus == 2 && (time() - EnteredCurrentStatus) > 1",
            'periodic_hold_reason = "ran for more than a second"',
            "periodic_hold_subcode = 42",
            "periodic_remove = JobStatus == 5 && HoldReasonSubCode == 42",
            "queue",
        ]
    )
    work = _work(pool, submit + "\n", "sleep 60")
    _submit(pool, work)
    pool.pilots(1, cpus=1, memory_mb=512)
    pool.wait_jobs(["1.0"], ("REMOVED",), timeout=120)
    events = _events(pool, "1.0")
    assert [e["trigger"] for e in events] == ["submit", "claim", "hold", "remove"]
    assert events[2]["reason"] == "ran for more than a second"
    assert all(e["actor"] == "policy" for e in events[2:])
    history = json.loads(pool.cli("history", "--json").stdout)
    assert [j["state"] for j in history] == ["REMOVED"]
