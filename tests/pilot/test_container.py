"""Container jobs: the runtime's detection, the slot's ads and the command line. (No
Apptainer here: the command is checked as built, not run; see docs/submit.md.)"""

from __future__ import annotations

from pathlib import Path

from pilotage.pilot.container import Runtime, command, detect, job_argv, slot_attrs
from pilotage.pilot.wire import Claim

APPTAINER = Runtime("/usr/bin/apptainer", "apptainer", "1.3.4")


def claim(image: str | None, gpus: list[str] | None = None) -> Claim:
    return Claim.from_wire(
        {
            "claim_id": "c-1", "job_id": "1.0", "lease_s": 60, "lease_expires_at": 0,
            "owner": "alice", "executable": "job.sh", "arguments": [], "environment": {},
            "input": None, "output": None, "error": None, "transfer_output_files": None,
            "request_cpus": 1, "request_memory_mb": 1, "request_disk_mb": 1,
            "request_gpus": len(gpus or []), "has_input_sandbox": False,
            "container_image": image, "assigned_gpus": gpus or [],
        }
    )  # fmt: skip


def test_no_runtime_on_the_path_advertises_nothing(tmp_path: Path) -> None:
    assert detect(str(tmp_path)) is None
    assert slot_attrs(None) == {}
    assert slot_attrs(APPTAINER) == {
        "HasContainer": "true",
        "HasApptainer": "true",
        "ContainerRuntime": '"apptainer"',
        "ApptainerVersion": '"1.3.4"',
    }


def test_the_command_binds_the_job_directory(tmp_path: Path) -> None:
    job = tmp_path / "job"
    argv = [str(job / "job.sh"), "--fast"]
    base = ["/usr/bin/apptainer", "exec", "--contain", "--ipc", "--pid", "--no-home"]
    where = ["--bind", str(job), "--pwd", str(job)]
    assert command(APPTAINER, claim("/cvmfs/img/el9.sif"), argv, job) == [
        *base, *where, "/cvmfs/img/el9.sif", *argv,
    ]  # fmt: skip
    assert command(APPTAINER, claim("el9.sif", ["GPU-a"]), argv, job) == [
        *base, *where, "--nv", str(job / "el9.sif"), *argv,
    ]  # fmt: skip
    pulled = command(APPTAINER, claim("docker://almalinux:9"), argv, job)
    assert pulled[-3:] == ["docker://almalinux:9", *argv]
    assert job_argv(claim(None), argv, job) == argv  # a vanilla job runs as it is
