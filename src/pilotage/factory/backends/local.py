"""The ``local`` backend: pilots as subprocesses on this machine (the embedded default).

Each pilot runs the agent's zipapp with an isolated interpreter (``python3 -I``), exactly
as a bootstrap would start it on a worker node, so the demo exercises the real thing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class PilotLaunch:
    """What one pilot is started with."""

    server_url: str
    ca: Path
    token_file: Path
    cpus: int = 1
    memory_mb: int = 1024
    disk_mb: int = 4096
    site: str = "local"
    idle_timeout_s: float | None = None
    lifetime_s: float | None = None
    extra_args: tuple[str, ...] = ()


@dataclass
class LocalBackend:
    """Starts, watches and stops local pilots."""

    agent: Path  # the agent zipapp
    workdir_root: Path
    python: str = sys.executable
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def submit(self, name: str, launch: PilotLaunch) -> subprocess.Popen[bytes]:
        """Start one pilot named ``name``; its log goes to ``<workdir>/pilot.log``."""
        workdir = self.workdir_root / name
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        args = [
            self.python,
            "-I",
            str(self.agent),
            "--server",
            launch.server_url,
            "--ca",
            str(launch.ca),
            "--token",
            str(launch.token_file),
            "--workdir",
            str(workdir),
            "--name",
            name,
            "--site",
            launch.site,
            "--cpus",
            str(launch.cpus),
            "--memory",
            str(launch.memory_mb),
            "--disk",
            str(launch.disk_mb),
        ]
        if launch.idle_timeout_s is not None:
            args += ["--idle-timeout", str(launch.idle_timeout_s)]
        if launch.lifetime_s is not None:
            args += ["--lifetime", str(launch.lifetime_s)]
        args += list(launch.extra_args)
        log = (workdir / "pilot.log").open("ab")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        self.processes[name] = process
        return process

    def running(self) -> list[str]:
        """Names of the pilots still running."""
        return [name for name, p in self.processes.items() if p.poll() is None]

    def remove(self, name: str, grace_s: float = 10.0) -> int | None:
        """Stop one pilot: SIGTERM, then SIGKILL after ``grace_s``. Returns its exit code."""
        process = self.processes[name]
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        return process.returncode

    def kill(self, name: str) -> None:
        """SIGKILL a pilot and its jobs at once (what a site's batch system may do)."""
        process = self.processes[name]
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def remove_all(self, grace_s: float = 10.0) -> None:
        """Stop every pilot, in parallel."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for name, process in self.processes.items():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill(name)
