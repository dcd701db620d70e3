"""The ``local`` backend: pilots as subprocesses on this machine (the embedded default).

:class:`LocalBatch` is the backend of the shared interface
(:class:`~pilotage.factory.backends.base.BatchSystem`): each pilot runs the job script in
its own directory and process session. :class:`LocalBackend` is the direct form the demo
and :class:`pilotage.testing.Pool` use: each pilot runs the agent's zipapp with an
isolated interpreter (``python3 -I``), exactly as a bootstrap would start it on a worker
node, so they exercise the real thing.
"""

from __future__ import annotations

import os
import pwd
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pilotage.errors import NotFound
from pilotage.factory.backends.base import (
    REMOVED,
    UNKNOWN,
    BatchSystem,
    Launch,
    check_count,
    job_script,
    outcome_from_log,
    tail,
)
from pilotage.factory.pilots import Observed, PilotState


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


class LocalBatch(BatchSystem):
    """Pilots as process sessions on this machine, one directory each under ``root``.

    Each pilot's directory holds ``job.sh``, ``pilot.log``, ``pid`` and, once removed,
    ``removed``. Status survives a restart of the factory: without the process handle
    it falls back to the pid (alive or not) and the log's exit line.
    """

    kind = "local"

    def __init__(self, root: Path, *, grace_s: float = 5.0, user: str | None = None) -> None:
        self.root = root
        self.grace_s = grace_s
        #: The account pilots run as (entry param ``user``; root only), as a site's batch
        #: system runs them as the pilot account; None: the factory's own.
        self.user = user
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    def _dir(self, backend_id: str) -> Path:
        if not backend_id or "/" in backend_id or backend_id.startswith("."):
            raise NotFound(f"no local pilot {backend_id!r}")
        return self.root / backend_id

    def submit(self, count: int, launch: Launch) -> list[str]:
        """Start ``count`` pilots at once; they never queue, so they start running."""
        check_count(count)
        ids = []
        for _ in range(count):
            backend_id = f"{launch.name}-{secrets.token_hex(4)}"
            workdir = self._dir(backend_id)
            workdir.mkdir(mode=0o700)
            (workdir / "job.sh").write_text(job_script(launch), encoding="utf-8")
            account = pwd.getpwnam(self.user) if self.user is not None else None
            if account is not None:
                os.chown(workdir, account.pw_uid, account.pw_gid)
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "LANG": "C.UTF-8",
                "HOME": str(workdir),
            }
            with (workdir / "pilot.log").open("ab") as log:
                process = subprocess.Popen(
                    ["/bin/sh", "job.sh"],
                    cwd=workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    **_as_account(account),
                )
            (workdir / "pid").write_text(f"{process.pid}\n", encoding="utf-8")
            self._processes[backend_id] = process
            ids.append(backend_id)
        return ids

    def _one(self, backend_id: str) -> Observed:
        try:
            workdir = self._dir(backend_id)
        except NotFound:
            return UNKNOWN
        if not workdir.is_dir():
            return UNKNOWN
        if (workdir / "removed").exists():
            return REMOVED
        process = self._processes.get(backend_id)
        if process is not None:
            if process.poll() is None:
                return Observed(PilotState.RUNNING)
            alive = False
        else:
            alive = _alive(workdir / "pid")
        if alive:
            return Observed(PilotState.RUNNING)
        outcome = outcome_from_log(self.logs(backend_id))
        if outcome is not None:
            return outcome
        code = process.returncode if process is not None else None
        if code is not None and code < 0:
            return Observed(PilotState.FAILED, f"killed by signal {-code}")
        return Observed(PilotState.FAILED, "ended without an exit line")

    def status(self, ids: Sequence[str]) -> dict[str, Observed]:
        """Each pilot's state, from its process (or pid) and its log."""
        return {backend_id: self._one(backend_id) for backend_id in ids}

    def remove(self, ids: Sequence[str]) -> None:
        """SIGTERM each pilot's session, then SIGKILL what is left after ``grace_s``."""
        pending: list[tuple[str, int]] = []
        for backend_id in ids:
            workdir = self._dir(backend_id)
            if not workdir.is_dir():
                continue
            (workdir / "removed").touch()
            pid = _read_pid(workdir / "pid")
            if pid is not None and _signal_group(pid, signal.SIGTERM):
                pending.append((backend_id, pid))
        deadline = time.monotonic() + self.grace_s
        for backend_id, pid in pending:
            process = self._processes.get(backend_id)
            while time.monotonic() < deadline:
                if process is not None and process.poll() is not None:
                    break
                if process is None and not _pid_alive(pid):
                    break
                time.sleep(0.05)
            _signal_group(pid, signal.SIGKILL)
            if process is not None:
                process.wait()

    def logs(self, backend_id: str) -> str:
        """The end of ``pilot.log``."""
        path = self._dir(backend_id) / "pilot.log"
        try:
            return tail(path.read_bytes())
        except FileNotFoundError:
            if not path.parent.is_dir():
                raise NotFound(f"no local pilot {backend_id!r}") from None
            return ""

    def close(self) -> None:
        """Forget the process handles (the pilots keep running)."""
        for process in self._processes.values():
            process.poll()
        self._processes.clear()


def _as_account(account: pwd.struct_passwd | None) -> dict[str, Any]:
    """Popen's arguments to run as ``account`` (its own group only); none for the factory's."""
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _alive(pid_file: Path) -> bool:
    pid = _read_pid(pid_file)
    return pid is not None and _pid_alive(pid)


def _signal_group(pid: int, sig: signal.Signals) -> bool:
    """Signal the process group ``pid`` leads; False if it is gone."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    return True
