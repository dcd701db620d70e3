"""A test run kills what interrupted runs left running, and nothing of a run still going."""

from __future__ import annotations

import os
import subprocess

from pilotage.testing import end_processes
from pilotage.testing_runs import RUN_VARIABLE, end_leftovers, process_key


def _sleeper(mark: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "600"], env={**os.environ, RUN_VARIABLE: mark})


def test_leftovers_of_ended_runs_are_killed_and_a_live_run_kept() -> None:
    own = process_key(os.getpid())
    assert own is not None and own.startswith(f"{os.getpid()}:")
    pid, _, start = own.partition(":")
    ended_run = _sleeper("4194999:1")  # above pid_max: no such process
    reused_pid = _sleeper(f"{pid}:{int(start) + 1}")  # the pid lives, but started later
    live_run = _sleeper(own)
    try:
        killed = end_leftovers()
        assert {ended_run.pid, reused_pid.pid} <= set(killed)
        assert live_run.pid not in killed
        assert ended_run.wait(60) == -9 and reused_pid.wait(60) == -9
        assert live_run.poll() is None
    finally:
        end_processes([ended_run, reused_pid, live_run])
