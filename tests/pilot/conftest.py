"""Fixtures for the agent's tests: a pool state directory, and the real server on it.

``pool`` starts ``pilotage server`` (the real one, SQLite, port 0) in a subprocess and
gives an admin client over its Unix socket plus a pilot token file, so integration tests
run the agent against exactly what production runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pilotage.cli.client import Client, locate
from pilotage.errors import Transient
from pilotage.statedir import StateDir
from pilotage.testing import end_processes


@pytest.fixture(scope="session")
def pool_state(tmp_path_factory: pytest.TempPathFactory) -> StateDir:
    """An initialised pool state directory (CA, server certificate, signing key)."""
    state = StateDir(tmp_path_factory.mktemp("pool") / "state")
    state.init(pool_name="agent-tests")
    return state


@pytest.fixture(scope="session")
def ca_file(pool_state: StateDir) -> Path:
    """The pool CA certificate."""
    return pool_state.ca_cert


@dataclass
class Pool:
    """A running server: its URL, state, an admin client and a pilot token file."""

    url: str
    state: StateDir
    admin: Client
    token_file: Path
    root: Path
    server: subprocess.Popen[bytes]

    def issue_token(self, subject: str, role: str = "pilot", lifetime_s: int = 3600) -> str:
        answer = self.admin.call(
            "POST",
            "/api/v1/tokens",
            json={"subject": subject, "role": role, "lifetime_s": lifetime_s},
        )
        return str(answer["token"])


def _start_server(state: StateDir, log: Path, settings: dict[str, str]) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PILOTAGE_STATE_DIR=str(state.root), PILOTAGE_SERVER_PORT="0")
    env.update(settings)
    command = [sys.executable, "-m", "pilotage.cli", "server", "--log-level", "warning"]
    with log.open("ab") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited at start:\n{log.read_text()}")
        if state.socket.exists() and state.url_file.exists():
            try:
                with Client(locate(state, None, None, None)) as client:
                    client.call("GET", "/healthz")
                return server
            except Transient:
                pass
        time.sleep(0.2)
    end_processes([server])
    pytest.fail(f"the server did not start within 60 s:\n{log.read_text()}")


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    """A fresh server with short leases and heartbeats, stopped after the test."""
    state = StateDir(tmp_path / "state")
    state.init(pool_name="agent-tests")
    settings = {
        "PILOTAGE_SERVER_HEARTBEAT_S": "2",
        "PILOTAGE_SERVER_LEASE_S": "30",
        "PILOTAGE_SERVER_RETRY_AFTER_S": "1",
        "PILOTAGE_SERVER_REAP_INTERVAL_S": "1",
    }
    server = _start_server(state, tmp_path / "server.log", settings)
    try:
        with Client(locate(state, None, None, None)) as admin:
            url = state.url_file.read_text().strip()
            pool = Pool(url, state, admin, tmp_path / "pilot.token", tmp_path, server)
            pool.token_file.write_text(pool.issue_token("test-pilots") + "\n")
            pool.token_file.chmod(0o600)
            yield pool
    finally:
        end_processes([server], grace_s=20)
