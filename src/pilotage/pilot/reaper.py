"""Jobs never outlive their agent: a reaper process, and a sweep at start-up.

A pilot's agent can die without a word (SIGKILL by the batch system, an out-of-memory
kill, a crash). Its jobs run in sessions of their own (plain) or as another account
through the switch, so nothing of the kernel ends them; meanwhile the server declares
the pilot lost and runs each job again elsewhere: two copies of a job would run, one of
them beyond anyone's control (issue 10, "A pilot that dies").

- The reaper: at start the agent forks a small process (:meth:`Reaper.start`) in a
  session of its own (a kill of the pilot's process group spares it) that holds the
  read end of a pipe. The agent writes ``+<claim id>`` when a claim starts and
  ``-<claim id>`` when it ends. At end-of-file (the agent is gone, however it went)
  the reaper kills what is still open, then exits. A normal exit drains every claim
  first, so it kills nothing then.
- The sweep (:func:`sweep`): an agent that starts in a work directory left by a dead
  agent (whose reaper died too: the node rebooted, the whole process tree was killed)
  kills what the claim directories there still name, before it registers.
- A flock on the work directory itself (nothing is left in it), taken by the agent and
  held by the reaper too, says whether a live agent (or its reaper) uses the directory:
  the sweep runs only when it is free, so it never touches a sibling's jobs.

How a claim's job is killed (:func:`kill_claim`): every process of the pilot's account
whose environment says it belongs to the claim (``PILOTAGE_SCRATCH_DIR`` inside
``<workdir>/<claim id>``) is killed with its whole session; a job run through the switch
(its claim directory holds the job's ``proxy``) is sent ``pilotage-exec --signal KILL
--job <claim id>``, which kills its family and cgroup as its owner.

Standard library only, like the rest of the agent.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import signal
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

log = logging.getLogger("pilotage.pilot")

#: A claim id as the server makes them (queue/claims.py); nothing else is ever killed.
CLAIM_ID = re.compile(r"c-[A-Za-z0-9_-]{8,64}\Z")
_ENV_KEY = b"PILOTAGE_SCRATCH_DIR="
#: How long the reaper waits for one ``--signal`` call of the switch.
_SIGNAL_TIMEOUT_S = 60.0


def _claim_processes(workdir: Path, claim_id: str) -> Iterator[int]:
    """The pids of this account's processes that belong to the claim (by environment)."""
    mine = os.getuid()
    home = str(workdir / claim_id).encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != mine:
                continue
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue  # gone, or not ours to read
        for item in environ.split(b"\0"):
            if item.startswith(_ENV_KEY):
                value = item[len(_ENV_KEY) :]
                if value == home or value.startswith(home + b"/"):
                    yield int(entry.name)
                break


def kill_claim(
    workdir: Path, claim_id: str, switch: Sequence[str], pilot_credential: Path | None
) -> None:
    """Kill every process of the claim's job, through the switch where it ran there."""
    if not CLAIM_ID.match(claim_id):
        return
    for pid in list(_claim_processes(workdir, claim_id)):
        with contextlib.suppress(OSError):
            os.killpg(os.getsid(pid), signal.SIGKILL)  # the job's session (its own)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)  # one that made a session of its own
    proxy = workdir / claim_id / "proxy"
    if switch and proxy.is_file():
        _signal_through_switch(switch, claim_id, proxy, pilot_credential)


def _signal_through_switch(
    switch: Sequence[str], claim_id: str, proxy: Path, pilot_credential: Path | None
) -> None:
    """``pilotage-exec --signal KILL --job <claim id>``, as the switched run sends it."""
    env = {
        "PATH": os.environ.get("PATH") or "/usr/local/bin:/usr/bin:/bin",
        "PILOTAGE_EXEC_USER_CREDENTIAL": str(proxy),
        "PILOTAGE_EXEC_JOB_NAME": claim_id,
        "PILOTAGE_EXEC_STATUS_FD": "3",
    }
    if pilot_credential is not None:
        env["PILOTAGE_EXEC_PILOT_CREDENTIAL"] = str(pilot_credential)
    program = shutil.which(switch[0]) or switch[0]
    read_fd, write_fd = os.pipe()
    try:
        with open(os.devnull, "r+b") as null:
            actions = [
                (os.POSIX_SPAWN_DUP2, null.fileno(), 0),
                (os.POSIX_SPAWN_DUP2, null.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, null.fileno(), 2),
                (os.POSIX_SPAWN_DUP2, write_fd, 3),
            ]
            pid = os.posix_spawn(
                program, [*switch, "--signal", "KILL", "--job", claim_id], env,
                file_actions=actions, setsid=True,
            )  # fmt: skip
    except OSError as exc:
        log.warning("claim %s: SIGKILL not sent through the switch (%s)", claim_id, exc)
        return
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd, "rb") as status:
        line = status.readline(4096).decode(errors="replace").strip()
    os.waitpid(pid, 0)
    if line:
        log.warning("claim %s: SIGKILL refused by the switch: %s", claim_id, line)


def lock_workdir(workdir: Path) -> int | None:
    """Take the work directory's lock; its descriptor, or None if a live agent holds it."""
    fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def sweep(workdir: Path, switch: Sequence[str], pilot_credential: Path | None) -> list[str]:
    """Kill the jobs of the claims a dead agent left in ``workdir``; their ids.

    The caller holds the work directory's lock: no live agent uses it.
    """
    left = sorted(e.name for e in os.scandir(workdir) if e.is_dir() and CLAIM_ID.match(e.name))
    for claim_id in left:
        log.warning("claim %s: left by a dead agent; killing what is left of its job", claim_id)
        kill_claim(workdir, claim_id, switch, pilot_credential)
    return left


class Reaper:
    """The agent's side of the reaper process: tell it which claims are open."""

    def __init__(self, workdir: Path, switch: Sequence[str], pilot_credential: Path | None) -> None:
        self.workdir = workdir
        self.switch = tuple(switch)
        self.pilot_credential = pilot_credential
        self.pid: int | None = None
        self._write: int | None = None
        self._lock = threading.Lock()

    def take_workdir(self) -> int | None:
        """Kill what a dead agent left in the work directory (when no live agent uses it),
        then fork the reaper (call before any other thread starts). The work directory's
        lock descriptor, kept open in the reaper too; None if a live agent holds it."""
        lock_fd = lock_workdir(self.workdir)
        if lock_fd is None:
            log.warning("another live agent uses %s: nothing left there is swept", self.workdir)
        else:
            sweep(self.workdir, self.switch, self.pilot_credential)
        self.start(() if lock_fd is None else (lock_fd,))
        return lock_fd

    def start(self, keep_fds: Sequence[int] = ()) -> int:
        """Fork the reaper (call before any other thread starts); its pid."""
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the reaper
            code = 1
            try:
                os.close(write_fd)
                os.setsid()
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                keep = {read_fd, *keep_fds}
                for fd in range(3, 1024):
                    if fd not in keep:
                        with contextlib.suppress(OSError):
                            os.close(fd)
                self._serve(read_fd)
                code = 0
            finally:
                os._exit(code)
        os.close(read_fd)
        os.set_inheritable(write_fd, False)
        self._write, self.pid = write_fd, pid
        log.info("reaper started (pid %d): jobs die with this agent", pid)
        return pid

    def _serve(self, read_fd: int) -> None:
        """Read the open claims until end-of-file; then kill the jobs of those still open."""
        open_claims: set[str] = set()
        with os.fdopen(read_fd, "rb") as lines:
            for raw in lines:
                word = raw.decode(errors="replace").strip()
                if word.startswith("+"):
                    open_claims.add(word[1:])
                elif word.startswith("-"):
                    open_claims.discard(word[1:])
        for claim_id in sorted(open_claims):
            log.warning("claim %s: its agent is gone; killing its job", claim_id)
            kill_claim(self.workdir, claim_id, self.switch, self.pilot_credential)

    def _say(self, line: str) -> None:
        with self._lock:
            if self._write is None:
                return
            try:
                os.write(self._write, line.encode())  # short: one write, never interleaved
            except OSError as exc:
                log.error("the reaper is gone (%s): jobs would outlive this agent", exc)
                os.close(self._write)
                self._write = None

    def started(self, claim_id: str) -> None:
        """A claim's job may start: kill it if this agent dies."""
        self._say(f"+{claim_id}\n")

    def ended(self, claim_id: str) -> None:
        """A claim is over (its job ended and was cleaned up)."""
        self._say(f"-{claim_id}\n")

    def close(self) -> None:
        """The agent leaves with every claim ended: the reaper exits, killing nothing."""
        with self._lock:
            if self._write is not None:
                os.close(self._write)
                self._write = None
        if self.pid is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
