"""A heartbeat that crosses a result report, against the real server, in one process.

The agent renews every claim it still holds, including one whose job has ended and
whose result is on its way: the server, having recorded that result first, answers
the heartbeat "revoked: exit". The server's order is forced here (report, then beat)
with the agent's own client, run, results queue and heartbeat.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from pilotage.pilot.client import Client
from pilotage.pilot.heartbeat import Heartbeat
from pilotage.pilot.jobrun import JobRun
from pilotage.pilot.results import Results
from pilotage.pilot.runs import execute
from pilotage.pilot.wire import WorkAnswer

from .conftest import Pool
from .test_client import REGISTRATION

FREE = {"cpus": 1, "memory_mb": 1024, "disk_mb": 1000, "gpus": 0}


def test_a_revocation_for_the_reported_exit_stops_nothing(
    pool: Pool, tmp_path: Path, caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> None:
    caplog.set_level(logging.INFO, logger="pilotage.pilot")
    client = Client(pool.url, ca_file=pool.state.ca_cert, token_file=pool.token_file)
    request.addfinalizer(client.close)  # closed even when the test fails
    registered = client.request("POST", "/pilot/v1/pilots", {**REGISTRATION, **FREE})
    client.set_pilot_secret(registered["pilot_secret"])
    pilot_id = registered["pilot_id"]
    cluster = pool.admin.call("POST", "/api/v1/clusters")["cluster_id"]
    job = {"executable": "/bin/true", "transfer_executable": False}
    pool.admin.call("POST", f"/api/v1/clusters/{cluster}/jobs", json={"v": 1, "jobs": [job]})
    sent = time.monotonic()
    answer = WorkAnswer.from_wire(
        client.request(
            "POST", f"/pilot/v1/pilots/{pilot_id}/claims",
            {"v": 1, "free": FREE, "time_left_s": 500},
        )
    )  # fmt: skip
    (claim,) = answer.claims
    workdir = tmp_path / "work"
    workdir.mkdir()
    run = JobRun(claim, client=client, workdir=workdir, max_sandbox_bytes=1 << 20, granted_at=sent)
    result = execute(run)
    assert result is not None and result.exit_code == 0

    # The report commits first; the beat still lists the claim (it is not released yet).
    reported = Results(client, threading.Lock(), threading.Event())
    assert reported.send(pilot_id, [(run, result)], None) is not None
    lost: list[str] = []
    heartbeat = Heartbeat(
        client, pilot_id, 2.0, runs=lambda: [run], on_retire=lambda: None, on_lost=lost.append
    )
    heartbeat.beat()
    # The revocation is applied on a timer thread of its own, which logs what it did
    # after noting the reason: wait for its line (or for a wrong one).
    expected = f"{run.tag}: revoked by the server: exit; its job ended"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if expected in caplog.text or "stopping" in caplog.text:
            break
        time.sleep(0.05)
    assert run.stop_reason == "revoked by the server: exit"  # the server's answer, as seen
    assert not run.alive and not lost  # the claim is over: never renewed nor reported again
    said = caplog.text
    assert "stopping" not in said, said  # but no job was stopped, and none is said to be
    assert expected in said, said
    (done,) = pool.admin.call("GET", "/api/v1/jobs", params={"id": str(cluster)})
    assert done["state"] == "COMPLETED"
    events = pool.admin.call("GET", f"/api/v1/jobs/{cluster}.0/events")
    assert [e["trigger"] for e in events].count("exit") == 1
