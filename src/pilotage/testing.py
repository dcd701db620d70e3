"""Test helpers shipped with the package: a real pool in real processes.

:class:`Pool` starts ``pilotage server`` as a subprocess on 127.0.0.1 with port 0 and a
database of the caller's choosing, mints tokens, runs the CLI, and starts local pilots
running the real agent zipapp. Nothing here replaces any part of pilotage; it only
starts the real parts and talks to them the way users and pilots do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pilotage.cli.client import Client, Endpoint, locate
from pilotage.errors import Transient
from pilotage.factory.backends.local import LocalBackend, PilotLaunch
from pilotage.pilot.zipapp import build_zipapp
from pilotage.statedir import StateDir


@dataclass
class Pool:
    """One pool: its state directory, its server process, its pilots."""

    root: Path
    db_url: str
    settings: Mapping[str, str] = field(default_factory=dict)
    server: subprocess.Popen[bytes] | None = None
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    backend: LocalBackend | None = None

    @property
    def state(self) -> StateDir:
        return StateDir(self.root / "state")

    @property
    def url(self) -> str:
        return self.state.url_file.read_text(encoding="utf-8").strip()

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment for pilotage processes of this pool."""
        env = dict(os.environ)
        env.pop("PILOTAGE_TOKEN", None)
        env.update(
            {
                "PILOTAGE_STATE_DIR": str(self.state.root),
                "PILOTAGE_SERVER_PORT": "0",
                "PILOTAGE_SERVER_DB": self.db_url,
            }
        )
        env.update({f"PILOTAGE_SERVER_{k.upper()}": v for k, v in self.settings.items()})
        env.update(extra or {})
        return env

    def start(self) -> Pool:
        """Initialise the state directory and start one server."""
        self.state.init(pool_name="test")
        os.chmod(self.root, 0o755)  # noqa: S103  (local users reach the socket)
        self.server = self.start_server()
        return self

    def start_server(
        self, *, socket: Path | None = None, url_file: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a server process (several may share one PostgreSQL database)."""
        socket = socket or self.state.socket
        url_file = url_file or self.state.url_file
        for stale in (url_file,):
            stale.unlink(missing_ok=True)
        log = (self.root / f"server-{len(self.servers)}.log").open("ab")
        command = [
            sys.executable,
            "-m",
            "pilotage.cli",
            "server",
            "--log-level",
            "info",
            "--socket",
            str(socket),
            "--url-file",
            str(url_file),
        ]
        process = subprocess.Popen(command, env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.servers.append(process)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {self.server_log()}")
            if socket.exists() and url_file.exists():
                try:
                    with Client(Endpoint(url="http://local", socket=socket)) as client:
                        client.call("GET", "/healthz")
                    return process
                except Transient:
                    pass
            time.sleep(0.1)
        process.kill()
        raise RuntimeError(f"server did not start: {self.server_log()}")

    def server_log(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.root.glob("server-*.log"))
        )

    def admin(self) -> Client:
        """A client over the Unix socket (the server's own user: admin)."""
        return Client(locate(self.state, None, None, None))

    def token(self, subject: str, role: str, lifetime_s: int = 3600) -> str:
        with self.admin() as client:
            answer = client.call(
                "POST",
                "/api/v1/tokens",
                json={"subject": subject, "role": role, "lifetime_s": lifetime_s},
            )
        return str(answer["token"])

    def token_file(self, subject: str, role: str) -> Path:
        path = self.root / f"{subject}.{role}.token"
        if not path.exists():
            path.write_text(self.token(subject, role) + "\n", encoding="utf-8")
            os.chmod(path, 0o644)
        return path

    def remote(self, token: str | None) -> Client:
        """A client over TLS with a bearer token (or none)."""
        return Client(Endpoint(url=self.url, token=token, ca=self.state.ca_cert))

    def cli(
        self,
        *args: str,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``pilotage ARGS`` (as ``user`` via runuser when given); capture its output."""
        command = [sys.executable, "-m", "pilotage.cli", *args]
        if user is not None:
            command = ["runuser", "-u", user, "--", *command]
        return subprocess.run(
            command, cwd=cwd, env=self.env(env), capture_output=True, text=True, timeout=timeout
        )

    def pilots(self, count: int, **launch: Any) -> LocalBackend:
        """Start ``count`` local pilots with a pilot token."""
        if self.backend is None:
            self.backend = LocalBackend(
                agent=build_zipapp(self.root / "agent.pyz"), workdir_root=self.root / "pilots"
            )
        token_file = self.token_file("pilots", "pilot")
        spec = PilotLaunch(
            server_url=self.url, ca=self.state.ca_cert, token_file=token_file, **launch
        )
        start = len(self.backend.processes)
        for i in range(start, start + count):
            self.backend.submit(f"pilot-{i}", spec)
        return self.backend

    def wait_jobs(self, ids: list[str], states: tuple[str, ...], timeout: float = 120) -> list[Any]:
        """Poll until every named job is in one of ``states``; return the jobs."""
        deadline = time.monotonic() + timeout
        with self.admin() as client:
            while True:
                jobs: list[Any] = client.call("GET", "/api/v1/jobs", params={"id": ids})
                if jobs and all(j["state"] in states for j in jobs):
                    return jobs
                if time.monotonic() > deadline:
                    raise TimeoutError(f"jobs not in {states}: {jobs}")
                time.sleep(0.2)

    def stop(self) -> None:
        """Stop pilots and servers."""
        if self.backend is not None:
            self.backend.remove_all(grace_s=5)
        for process in self.servers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.servers:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
