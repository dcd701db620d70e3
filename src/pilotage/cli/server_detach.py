"""``pilotage server --detach``: start the server in the background and return once it
answers, so the next command (a submit, say) never races its start.

The server runs in its own session with its output in ``STATE_DIR/server.log`` and its
process id in ``STATE_DIR/server.pid``; ``kill $(cat STATE_DIR/server.pid)`` stops it
(SIGTERM: it finishes what it was doing), ``kill -HUP`` reloads its configuration. For
a pool that must survive reboots, use the systemd units (docs/operations.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from pilotage.errors import OperatorError, Transient
from pilotage.statedir import StateDir

#: How long the server may take to answer before the start counts as failed.
START_PATIENCE_S = 60.0


def _tail(log: Path, lines: int = 5) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def detach(state: StateDir, server_args: list[str], socket: Path) -> int:
    """Start ``pilotage server SERVER_ARGS`` in the background; its pid once it answers."""
    from pilotage.cli.client import Client, Endpoint

    log = state.root / "server.log"
    pid_file = state.root / "server.pid"
    env = dict(os.environ, PILOTAGE_STATE_DIR=str(state.root))
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pilotage.cli", "server", *server_args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in this terminal is not for the server
        )
    deadline = time.monotonic() + START_PATIENCE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise OperatorError(
                f"the server exited at start (code {process.returncode}): {_tail(log)}; see {log}"
            )
        if socket.exists():
            try:
                with Client(Endpoint(url="http://local", socket=socket)) as client:
                    client.call("GET", "/healthz")
            except Transient:
                pass
            else:
                pid_file.write_text(f"{process.pid}\n", encoding="utf-8")
                return process.pid
        time.sleep(0.1)
    process.terminate()
    raise OperatorError(
        f"the server did not answer within {START_PATIENCE_S:.0f} s: {_tail(log)}; see {log}"
    )
