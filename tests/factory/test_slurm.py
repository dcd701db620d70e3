"""Slurm-only behaviour on the real test cluster: held jobs, and the state mapping."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from pilotage.errors import BadInput
from pilotage.factory.backends.base import Launch
from pilotage.factory.backends.slurm import SlurmBatch, observed_from_slurm
from pilotage.factory.pilots import Observed, PilotState
from pilotage.testing_slurm import Slurm


def partition(slurm: Slurm, state: str) -> None:
    subprocess.run(
        ["scontrol", "update", "PartitionName=debug", f"State={state}"],
        env=dict(os.environ, SLURM_CONF=str(slurm.conf)),
        check=True,
        capture_output=True,
    )


def wait_state(batch: SlurmBatch, job: str, state: PilotState) -> Observed:
    deadline = time.monotonic() + 30
    while (seen := batch.status([job])[job]).state is not state:
        assert time.monotonic() < deadline, seen
        time.sleep(0.1)
    return seen


def test_held_then_released_then_running(slurm_cluster: Slurm, tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    batch = SlurmBatch({"log_dir": str(tmp_path / "logs"), "slurm_conf": str(slurm_cluster.conf)})
    partition(slurm_cluster, "DOWN")  # new jobs stay pending
    jobs: list[str] = []
    try:
        jobs += batch.submit(1, Launch(script="sleep 60"))
        job = jobs[0]
        assert wait_state(batch, job, PilotState.IDLE).state is PilotState.IDLE
        assert batch.logs(job) == ""
        batch.hold([job])
        assert wait_state(batch, job, PilotState.HELD).reason.startswith("JobHeld")
        batch.release([job])
        wait_state(batch, job, PilotState.IDLE)
        partition(slurm_cluster, "UP")
        wait_state(batch, job, PilotState.RUNNING)
    finally:
        partition(slurm_cluster, "UP")
        batch.remove(jobs)


@pytest.mark.parametrize(
    ("state", "reason", "expected"),
    [
        ("PENDING", "Resources", PilotState.IDLE),
        ("PENDING", "JobHeldAdmin", PilotState.HELD),
        ("RUNNING", "None", PilotState.RUNNING),
        ("COMPLETING", "None", PilotState.RUNNING),
        ("COMPLETED", "None", PilotState.FINISHED),
        ("CANCELLED", "None", PilotState.FINISHED),
        ("TIMEOUT", "TimeLimit", PilotState.FAILED),
        ("NODE_FAIL", "None", PilotState.FAILED),
    ],
)
def test_state_mapping(state: str, reason: str, expected: PilotState) -> None:
    assert observed_from_slurm(state, reason).state is expected


def test_unknown_parameters_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="unknown parameter 'partion'"):
        SlurmBatch({"log_dir": str(tmp_path), "partion": "debug"})
