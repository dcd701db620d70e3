"""The agent's parsing of the protocol's messages (the examples of docs/pilot-protocol.md)."""

from __future__ import annotations

import pytest

from pilotage.pilot.heartbeat import leases_to_drop
from pilotage.pilot.resources import Resources
from pilotage.pilot.wire import (
    Claim,
    Failure,
    HeartbeatAnswer,
    HoldCode,
    JobResult,
    ProtocolError,
    Registration,
    WorkAnswer,
    work_request,
)

CLAIM = {
    "claim_id": "c-1", "job_id": "12.3", "lease_s": 300, "lease_expires_at": 1760000000.0,
    "owner": "alice", "executable": "run.sh", "arguments": ["a", "b"],
    "environment": {"K": "V"}, "input": "in.txt", "output": None, "error": "err.txt",
    "transfer_output_files": ["result.dat"], "request_cpus": 1, "request_memory_mb": 128,
    "request_disk_mb": 100, "request_gpus": 0, "has_input_sandbox": True,
}  # fmt: skip


def test_registration() -> None:
    body = {"v": 1, "pilot_id": "p-7f3a", "lease_s": 300, "heartbeat_s": 60,
            "idle_timeout_s": 1200, "max_sandbox_bytes": 268435456,
            "pilot_secret": "s3cr3t"}  # fmt: skip
    registration = Registration.from_wire(body)
    assert registration == Registration("p-7f3a", 300, 60, 1200, 268435456, "s3cr3t")
    assert "s3cr3t" not in repr(registration)  # a logged registration shows no secret
    with pytest.raises(ProtocolError, match="lacks the field 'pilot_secret'"):
        Registration.from_wire({k: v for k, v in body.items() if k != "pilot_secret"})


def test_work_answer_with_a_claim() -> None:
    answer = WorkAnswer.from_wire({"v": 1, "claim": CLAIM, "retry_after_s": 5, "retire": False})
    claim = answer.claim
    assert isinstance(claim, Claim)
    assert claim.arguments == ("a", "b") and claim.output is None and claim.input == "in.txt"
    assert claim.request == Resources(cpus=1, memory_mb=128, disk_mb=100, gpus=0)
    assert claim.transfer_output_files == ("result.dat",)
    empty = WorkAnswer.from_wire({"v": 1, "claim": None, "retry_after_s": 7, "retire": True})
    assert (empty.claim, empty.retry_after_s, empty.retire) == (None, 7.0, True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"claim_id": None}, "the server's claim has a bad value for 'claim_id'"),
        ({"request_cpus": True}, "bad value for 'request_cpus'"),
        ({"arguments": [1]}, "non-string arguments"),
        ({"transfer_output_files": "x"}, "bad transfer_output_files"),
    ],
)
def test_malformed_claims(change: dict[str, object], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        Claim.from_wire(CLAIM | change)
    with pytest.raises(ProtocolError, match="lacks the field 'owner'"):
        Claim.from_wire({k: v for k, v in CLAIM.items() if k != "owner"})


def test_heartbeat_answer() -> None:
    answer = HeartbeatAnswer.from_wire(
        {"v": 1, "renewed": {"c-1": 1760000300.0},
         "revoked": [{"claim_id": "c-2", "reason": "removed by alice"}], "retire": False}
    )  # fmt: skip
    assert answer.renewed == {"c-1": 1760000300.0}
    assert answer.revoked == {"c-2": "removed by alice"}


def test_result_bodies() -> None:
    done = JobResult(exit_code=0, wall_s=1.23456, cpu_s=0.9, max_rss_kb=5120)
    nxt = work_request(Resources(2, 4000, 10000, 0), 79000.4)
    assert done.to_wire(nxt) == {
        "v": 1, "exit_code": 0, "signal": None, "wall_s": 1.235, "cpu_s": 0.9,
        "max_rss_kb": 5120, "failure": None,
        "next": {"v": 1, "free": {"cpus": 2, "memory_mb": 4000, "disk_mb": 10000, "gpus": 0},
                 "time_left_s": 79000},
    }  # fmt: skip
    failed = JobResult(failure=Failure(HoldCode.EXECUTABLE, "executable 'x' is missing"))
    assert failed.to_wire(None)["failure"] == {"reason": "executable 'x' is missing", "code": 11}


def test_leases_to_drop() -> None:
    deadlines = {"c-near": 105.0, "c-far": 200.0, "c-past": 90.0}
    assert leases_to_drop(deadlines, now=100.0, within_s=10.0) == ["c-near", "c-past"]
    assert leases_to_drop(deadlines, now=100.0, within_s=1.0) == ["c-past"]
