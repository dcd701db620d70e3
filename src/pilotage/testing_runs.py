"""Leftovers of test runs that did not end: found by a mark in their environment, killed.

A test run that is interrupted (SIGINT to pytest, a killed worker, a CI time-out) does
not run its fixtures' teardown: the servers, agents and PostgreSQL clusters its tests
started keep running and load the machine for the next run. So a run marks itself:
:func:`mark_run` puts :data:`RUN_VARIABLE` (the run's own process, as pid and start time)
in its environment, which every process it starts inherits, and :func:`end_leftovers`,
called as a run starts, kills every process whose mark names a run that has ended. A run
that is still going (another checkout's, at the same time) is left alone: its process is
alive with the same start time. Linux only (``/proc``); elsewhere nothing is found.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

#: The environment variable that marks a test run's processes.
RUN_VARIABLE = "PILOTAGE_TEST_RUN"
_PROC = Path("/proc")


def process_key(pid: int) -> str | None:
    """``pid:start`` for a live process (its start time in clock ticks since boot, so a
    reused pid is a different key), or None if there is no such process."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    return f"{pid}:{fields[19]}"  # field 22 of proc(5), the 20th after the name


def mark_run() -> str | None:
    """Mark this process (and all it starts from now on) as one test run; the mark."""
    key = process_key(os.getpid())
    if key is not None:
        os.environ[RUN_VARIABLE] = key
    return key


def _mark_of(pid: int) -> str | None:
    try:
        environ = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:  # gone, or not ours to read
        return None
    prefix = RUN_VARIABLE.encode() + b"="
    for entry in environ.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None


def end_leftovers() -> list[int]:
    """SIGKILL every process marked by a run that has ended; their pids."""
    killed = []
    own = os.getpid()
    for entry in _PROC.glob("[0-9]*") if _PROC.is_dir() else ():
        pid = int(entry.name)
        mark = _mark_of(pid)
        if mark is None or pid == own:
            continue
        run_pid, _, _start = mark.partition(":")
        if not run_pid.isdigit() or process_key(int(run_pid)) == mark:
            continue  # its run is still going
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed
