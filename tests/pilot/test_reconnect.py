"""The agent across faults of the moment, in one process: a kept-alive connection the
server closed is retried once on a fresh one, silently; no executable open for writing
survives into a fork; and an outage is not counted as idle time."""

from __future__ import annotations

import errno
import logging
import os
import select
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pilotage.pilot.client import Client
from pilotage.pilot.forkgate import GATE, spawn
from pilotage.pilot.reconnect import OutageClock

from .conftest import Pool
from .test_client import REGISTRATION


def _wait(condition: object, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_a_connection_the_server_closed_while_idle_is_retried_silently(
    pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    client = Client(pool.url, ca_file=pool.state.ca_cert, token_file=pool.token_file)
    assert client.request("POST", "/pilot/v1/pilots", REGISTRATION)["pilot_id"]
    # The test looks at the agent's own socket only to wait for the server's keep-alive
    # timeout to close it (readable at end-of-file), not to change anything.
    ((kept, _server),) = client._idle
    first = kept.sock
    readable, _, _ = select.select([first], [], [], 60)
    assert readable, "the server never closed the idle connection"
    caplog.set_level(logging.DEBUG, logger="pilotage.pilot")
    answer = client.request("POST", "/pilot/v1/pilots", REGISTRATION)
    assert answer["pilot_id"]
    ((fresh, _server),) = client._idle
    assert fresh is not kept and fresh.sock is not first  # a fresh connection carried it
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("sent again" in r.getMessage() for r in caplog.records)  # debug only
    client.close()


def test_no_fork_happens_while_an_executable_is_open_for_writing(tmp_path: Path) -> None:
    program = tmp_path / "job.sh"
    opened, release = threading.Event(), threading.Event()

    def unpack() -> None:
        with GATE.writing(), open(program, "w") as out:
            out.write("#!/bin/sh\nexit 7\n")
            out.flush()
            opened.set()
            release.wait(60)
        os.chmod(program, 0o755)

    writer = threading.Thread(target=unpack)
    writer.start()
    assert opened.wait(60)
    started: list[subprocess.Popen[bytes]] = []
    starter = threading.Thread(
        target=lambda: started.append(spawn(lambda: subprocess.Popen(["/bin/true"]), "test"))
    )
    starter.start()
    _wait(lambda: GATE.waiting == 1, "the start to queue at the gate")
    assert not started  # held back while the file is open for writing
    release.set()
    writer.join(60)
    starter.join(60)
    assert started and started[0].wait(60) == 0
    # The program just written runs at once: no child of that start held it open.
    assert spawn(lambda: subprocess.Popen([str(program)]), "test").wait(60) == 7


def test_a_program_still_open_for_writing_fails_after_one_more_try(tmp_path: Path) -> None:
    program = tmp_path / "busy.sh"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    with open(program, "a") as held, pytest.raises(OSError) as failed:
        spawn(lambda: subprocess.Popen([str(program)]), "test")
    assert failed.value.errno == errno.ETXTBSY
    assert held.closed
    assert spawn(lambda: subprocess.Popen([str(program)]), "test").wait(60) == 0


def test_time_out_of_reach_is_not_idle_time() -> None:
    now = [100.0]
    clock = OutageClock(lambda: now[0])
    idle_since = 100.0
    now[0] = 110.0
    clock.failed()  # out of reach from 110
    now[0] = 130.0
    assert clock.unreachable_s(idle_since) == 20.0  # ongoing
    assert clock.succeeded() is True
    assert clock.succeeded() is False  # no outage to end
    now[0] = 150.0
    assert clock.unreachable_s(idle_since) == 20.0  # 30 s idle of 50
    assert clock.unreachable_s(120.0) == 10.0  # only the part after a later start
    assert clock.unreachable_s(140.0) == 0.0  # and forgotten once over before it
