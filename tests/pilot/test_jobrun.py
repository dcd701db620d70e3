"""One claim's job on real processes: environment, exit status, usage, failures, stopping.

These claims have no input sandbox and no outputs, so the job runs without calling the
server; the round trips are covered by test_agent_server.py against the real server.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pilotage.pilot import jobrun
from pilotage.pilot.client import Client
from pilotage.pilot.jobrun import JobRun, build_environment, remove_tree
from pilotage.pilot.resources import Resources
from pilotage.pilot.wire import Claim, HoldCode

CLAIM = Claim(
    claim_id="c-test",
    job_id="7.3",
    lease_s=300.0,
    lease_expires_at=0.0,
    owner="alice",
    executable="/bin/sh",
    arguments=("-c", "exit 0"),
    environment={"K": "V"},
    input=None,
    output=None,
    error=None,
    transfer_output_files=(),
    request=Resources(cpus=1, memory_mb=64),
    has_input_sandbox=False,
)


def make_run(tmp_path: Path, ca_file: Path, **changes: object) -> JobRun:
    claim = replace(CLAIM, **changes)  # type: ignore[arg-type]
    client = Client("https://127.0.0.1:9", ca_file=ca_file, token_file=tmp_path / "token")
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    return JobRun(
        claim,
        client=client,
        workdir=workdir,
        max_sandbox_bytes=1 << 20,
        granted_at=time.monotonic(),
    )


def shell(script: str) -> dict[str, object]:
    return {"executable": "/bin/sh", "arguments": ("-c", script)}


def test_environment_is_the_claims_plus_the_agents_own(tmp_path: Path) -> None:
    claim = replace(CLAIM, environment={"K": "V", "HOME": "/home/alice", "PATH": "/opt/bin"})
    env = build_environment(claim, tmp_path)
    assert env == {
        "K": "V",
        "PATH": "/opt/bin",  # the job's own PATH wins over the default
        "HOME": str(tmp_path),  # the agent's variables win over the job's
        "TMPDIR": str(tmp_path),
        "PILOTAGE_JOB_ID": "7.3",
        "PILOTAGE_SCRATCH_DIR": str(tmp_path),
        "_CONDOR_SCRATCH_DIR": str(tmp_path),
    }
    assert build_environment(CLAIM, tmp_path)["PATH"] == "/usr/local/bin:/usr/bin:/bin"


def test_job_sees_only_its_environment(
    tmp_path: Path, ca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PILOT_SECRET", "token-path")
    dump = tmp_path / "env.txt"
    run = make_run(tmp_path, ca_file, **shell(f"pwd > {dump}; env >> {dump}"))
    result = run.execute()
    assert result is not None and result.exit_code == 0 and result.failure is None
    lines = dump.read_text().splitlines()
    assert lines[0] == str(run.scratch)
    names = {line.split("=", 1)[0] for line in lines[1:]}
    assert "PILOT_SECRET" not in names
    assert {"K", "PATH", "HOME", "PILOTAGE_JOB_ID", "_CONDOR_SCRATCH_DIR"} <= names
    assert names <= {"K", "PATH", "HOME", "TMPDIR", "PILOTAGE_JOB_ID", "PILOTAGE_SCRATCH_DIR",
                     "_CONDOR_SCRATCH_DIR", "PWD", "SHLVL", "_"}  # fmt: skip
    assert oct(run.scratch.stat().st_mode & 0o777) == "0o700"
    run.cleanup()
    assert not run.scratch.exists()


def test_exit_code_cpu_and_memory_are_measured(tmp_path: Path, ca_file: Path) -> None:
    script = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; exit 3"
    result = make_run(tmp_path, ca_file, **shell(script)).execute()
    assert result is not None
    assert (result.exit_code, result.signal, result.failure) == (3, None, None)
    assert result.cpu_s > 0 and result.wall_s >= result.cpu_s * 0.5
    assert result.max_rss_kb > 100


def test_a_job_killed_by_a_signal_reports_the_signal(tmp_path: Path, ca_file: Path) -> None:
    result = make_run(tmp_path, ca_file, **shell("kill -9 $$")).execute()
    assert result is not None
    assert (result.exit_code, result.signal) == (None, signal.SIGKILL)


@pytest.mark.parametrize(
    ("changes", "code", "reason"),
    [
        ({"executable": "run.sh"}, HoldCode.EXECUTABLE, "executable 'run.sh' is missing"),
        ({"executable": "PLAIN"}, HoldCode.EXECUTABLE, "is not executable"),
        ({"executable": "../x"}, HoldCode.EXECUTABLE, "executable '../x' is not a usable"),
        ({"input": "in.txt"}, HoldCode.START, "input file 'in.txt' is missing"),
        ({"output": "/tmp/x"}, HoldCode.START, "output file '/tmp/x' is not a usable path"),
    ],
)
def test_failures_before_the_start_carry_hold_codes(
    tmp_path: Path, ca_file: Path, changes: dict[str, object], code: HoldCode, reason: str
) -> None:
    if changes.get("executable") == "PLAIN":
        plain = tmp_path / "plain.txt"
        plain.write_text("#!/bin/sh\n")
        plain.chmod(0o644)
        changes = {"executable": str(plain)}
    result = make_run(tmp_path, ca_file, **changes).execute()
    assert result is not None and result.failure is not None
    assert result.failure.code == code
    assert reason in result.failure.reason
    assert result.exit_code is None and result.signal is None


def test_exec_failure_is_code_13(tmp_path: Path, ca_file: Path) -> None:
    script = tmp_path / "noshebang"
    script.write_bytes(b"\x7fELF garbage")
    script.chmod(0o755)
    result = make_run(tmp_path, ca_file, executable=str(script)).execute()
    assert result is not None and result.failure is not None
    assert result.failure.code == HoldCode.START
    assert result.failure.reason.startswith("the job could not be started")


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_stragglers_die_with_the_job(tmp_path: Path, ca_file: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    result = make_run(tmp_path, ca_file, **shell(f"sleep 100 & echo $! > {pidfile}")).execute()
    assert result is not None and result.exit_code == 0
    deadline = time.monotonic() + 5
    while alive(int(pidfile.read_text())) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(int(pidfile.read_text()))


def test_stop_kills_the_whole_group_and_reports_nothing(tmp_path: Path, ca_file: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    run = make_run(tmp_path, ca_file, **shell(f"sleep 100 & echo $! > {pidfile}; wait"))
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(run.execute()))
    thread.start()
    while not pidfile.exists() or not pidfile.read_text().strip():
        time.sleep(0.02)
    run.stop("revoked by the server: removed by alice")
    thread.join(timeout=120)
    assert results == [None]
    assert not run.alive and run.stop_reason == "revoked by the server: removed by alice"
    # The group's kill reaches the background child too; its end (not a race with the
    # kill) is awaited, with a deadline that only a process left alive can reach.
    deadline = time.monotonic() + 60
    while alive(int(pidfile.read_text())) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(int(pidfile.read_text()))


def test_sigkill_follows_an_ignored_sigterm(
    tmp_path: Path, ca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobrun, "KILL_GRACE_S", 0.5)
    ready = tmp_path / "ready"
    run = make_run(tmp_path, ca_file, **shell(f"trap '' TERM; touch {ready}; sleep 100"))
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(run.execute()))
    thread.start()
    while not ready.exists():
        time.sleep(0.02)
    run.stop("lease lost")
    thread.join(timeout=10)
    assert results == [None]


def test_stop_before_start_runs_nothing(tmp_path: Path, ca_file: Path) -> None:
    marker = tmp_path / "ran"
    run = make_run(tmp_path, ca_file, **shell(f"touch {marker}"))
    run.stop("agent terminating")
    assert run.execute() is None
    assert not marker.exists()


def test_remove_tree_copes_with_read_only_directories(tmp_path: Path) -> None:
    root = tmp_path / "job"
    (root / "ro" / "deeper").mkdir(parents=True)
    (root / "ro" / "deeper" / "f").write_text("x")
    (root / "ro" / "deeper").chmod(0o500)
    (root / "ro").chmod(0o500)
    remove_tree(root)
    assert not root.exists()
    remove_tree(root)  # absent: nothing to do


def test_lease_renewal_only_extends(tmp_path: Path, ca_file: Path) -> None:
    run = make_run(tmp_path, ca_file)
    first = run.lease_deadline
    run.renew(time.monotonic() - 1000)
    assert run.lease_deadline == first
    run.renew(time.monotonic())
    assert run.lease_deadline > first
    assert os.path.basename(run.scratch) == "c-test"


def test_an_output_carrying_the_pilot_credential_is_held(tmp_path: Path, ca_file: Path) -> None:
    """Without the switch the job runs as the pilot and can read its token: it must not
    go out in an output (review finding 10); nothing is uploaded (no server is called)."""
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJwaWxvdHMifQ.c2lnbmF0dXJlLW9mLXRoZS1wb29s\n")
    run = make_run(
        tmp_path, ca_file, **shell(f"sed 's/^/stolen: /' {token} > loot.txt"),
        transfer_output_files=("loot.txt",),
    )  # fmt: skip
    run.pilot_credential = token
    result = run.execute()
    assert result is not None and result.exit_code == 0
    assert result.failure is not None and result.failure.code == HoldCode.OUTPUT
    assert "the output 'loot.txt' carries the job's credential" in result.failure.reason
