"""A pool driven the way a user drives it: the CLI against a running server, real pilots."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

from pilotage.testing import Pool

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello"


def _submit_dir(pool: Pool, jobs: int, sleep_s: int = 0) -> Path:
    work = pool.root / "work"
    shutil.copytree(EXAMPLE, work)
    (work / "out").mkdir()
    text = (work / "hello.submit").read_text()
    text = text.replace("queue 20", f"queue {jobs}").replace(
        "HELLO_SLEEP=1", f"HELLO_SLEEP={sleep_s}"
    )
    (work / "hello.submit").write_text(text)
    return work


def _json(result) -> object:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_submit_run_wait_and_outputs_come_back(pool: Pool) -> None:
    work = _submit_dir(pool, jobs=6)
    submitted = pool.cli("submit", "hello.submit", "--json", cwd=work)
    assert _json(submitted) == {"cluster": 1, "jobs": 6}
    queue = _json(pool.cli("q", "--json"))
    assert {j["id"] for j in queue} == {f"1.{i}" for i in range(6)}
    assert all(j["state"] == "IDLE" and j["owner"] for j in queue)
    assert set(queue[0]) >= {"id", "owner", "state", "exit_code", "hold_reason", "site", "pilot"}
    pool.pilots(2, cpus=2, memory_mb=512)
    waited = pool.cli("wait", "1", "--timeout", "120", cwd=work)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    history = _json(pool.cli("history", "--json"))
    assert sorted(j["id"] for j in history) == sorted(f"1.{i}" for i in range(6))
    assert all(j["state"] == "COMPLETED" and j["exit_code"] == 0 for j in history)
    assert all(j["site"] == "local" and j["pilot"] for j in history)
    for i in range(6):
        out = (work / "out" / f"hello.1.{i}.out").read_text()
        assert out.startswith(f"hello from job 1.{i} ")
        assert (work / f"result-{i}.txt").read_text() == f"item={i} words=13\n"
    log = (work / "hello.1.log").read_text()
    assert "001 (001.000.000) " in log and "005 (001.005.000) " in log


def test_hold_release_remove(pool: Pool) -> None:
    work = _submit_dir(pool, jobs=3)
    _json(pool.cli("submit", "hello.submit", "--json", cwd=work))
    held = _json(pool.cli("hold", "1.0", "--reason", "checking inputs", "--json"))
    assert held == [{"job_id": "1.0", "ok": True, "state": "HELD", "message": "done"}]
    (job,) = _json(pool.cli("q", "1.0", "--json"))
    assert job["state"] == "HELD" and job["hold_reason"] == "checking inputs"
    again = pool.cli("hold", "1.0")
    assert again.returncode == 6 and "cannot take 'hold'" in again.stdout
    _json(pool.cli("release", "1.0", "--json"))
    assert _json(pool.cli("q", "1.0", "--json"))[0]["state"] == "IDLE"
    removed = _json(pool.cli("rm", "1", "--json"))
    assert [r["state"] for r in removed] == ["REMOVED"] * 3
    assert _json(pool.cli("q", "--json")) == []
    assert len(_json(pool.cli("history", "--json"))) == 3
    assert pool.cli("wait", "1", "--timeout", "5").returncode == 1


def test_killed_pilot_job_returns_to_idle_and_completes_elsewhere(pool: Pool) -> None:
    # Long enough to be seen RUNNING and killed; it runs again in full after requeueing.
    work = _submit_dir(pool, jobs=1, sleep_s=4)
    _json(pool.cli("submit", "hello.submit", "--json", cwd=work))
    backend = pool.pilots(1, cpus=1, memory_mb=512)
    (job,) = pool.wait_jobs(["1.0"], ("RUNNING",), timeout=60)
    first_pilot = job["pilot"]
    backend.kill("pilot-0")  # SIGKILL to the pilot and its job, as a batch system would
    assert backend.processes["pilot-0"].returncode == -signal.SIGKILL
    (job,) = pool.wait_jobs(["1.0"], ("IDLE",), timeout=60)
    assert job["attempts"] == 1
    pool.pilots(1, cpus=1, memory_mb=512)
    (job,) = pool.wait_jobs(["1.0"], ("COMPLETED",), timeout=120)
    assert job["pilot"] != first_pilot and job["exit_code"] == 0 and job["attempts"] == 2
    with pool.admin() as client:
        events = client.call("GET", "/api/v1/jobs/1.0/events")
    assert [e["trigger"] for e in events] == ["submit", "claim", "lease_expired", "claim", "exit"]
