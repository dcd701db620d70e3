"""Container jobs end to end: matched only to slots that advertise HasContainer; a slot
that advertises it without a runtime holds the job saying so. (No Apptainer here: the
job itself is not run in a container; docs/submit.md says what is untested.)"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pilotage.pilot.container import runtime
from pilotage.testing import Pool


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: what is tested here is the matchmaker and the agent, not the store."""
    return f"sqlite:///{tmp_path / 'pilotage.db'}"


SUBMIT = """universe = container
container_image = /nonexistent/el9.sif
executable = /bin/true
transfer_executable = false
queue
"""


def test_container_jobs_go_to_slots_with_a_runtime(pool: Pool) -> None:
    work = pool.root / "work"
    work.mkdir()
    (work / "job.sub").write_text(SUBMIT)
    submitted = pool.cli("submit", "job.sub", cwd=work)
    assert submitted.returncode == 0, submitted.stderr
    ad = pool.cli("q", "1.0", "-af", "ContainerImage", "WantContainer").stdout.split()
    assert ad == ["/nonexistent/el9.sif", "true"]
    pool.pilots(1, cpus=1, memory_mb=512)  # this node advertises no runtime
    deadline = time.monotonic() + 60
    while True:  # until the pilot is in the pool's view
        analysis = json.loads(pool.cli("q", "-analyze", "1.0", "--json").stdout)
        if analysis["slots_total"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    clauses = {c["text"]: c["slots_now"] for c in analysis["clauses"]}  # type: ignore[attr-defined]
    assert clauses["TARGET.HasContainer is true"] == 0, analysis
    assert analysis["verdict"] == "requirements-unsatisfiable", analysis

    # A site that says HasContainer without having a runtime: the job is held, saying so.
    pool.pilots(1, cpus=1, memory_mb=512, extra_args=("--attr", "HasContainer=true"))
    (job,) = pool.wait_jobs(["1.0"], ("HELD", "COMPLETED"))
    if runtime() is None:
        assert (job["state"], job["hold_code"]) == ("HELD", 13), job
        assert "neither apptainer nor singularity" in job["hold_reason"]
    else:  # a real runtime ran, and could not find the image
        assert job["state"] == "COMPLETED" and job["exit_code"] != 0, job
