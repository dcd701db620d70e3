"""Starting and ending the command of an exec-in-job session on the node.

The command runs through the job wrapper (:mod:`pilotage.pilot.wrapper`), exactly as the
job itself did: in the job's directory, with the environment the job got (its submit
file's ``environment``, the agent's few variables, ``TERM`` for a terminal), its stdio
the session's pipes or a pseudo-terminal whose master the agent keeps. Nothing of the
request is on a command line.

- With the switch: ``pilotage-exec --enter --job <claim id> -- python3 -I -S <wrapper>``
  (:meth:`pilotage.pilot.switched.SwitchedRun.entry`), so the command runs as the job's
  owner, inside the job's family and cgroup. The switch's status channel is the
  session's lifeline: the agent keeps its read end, and closing it makes the switch kill
  the session (switch/enter.py). The agent's child is the switch (through sudo); its exit
  status is the command's.
- Without: the wrapper runs as the pilot account, in a session of its own (the agent's
  child, then the command itself), which the agent kills as a whole at the end.

A refusal of the switch, or a command that cannot be started, is :class:`CannotEnter`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import struct
import sys
import termios
from dataclasses import dataclass
from typing import Any

from .forkgate import spawn
from .jobcredential import install_wrapper
from .jobrun import JobRun, build_environment
from .switchcall import NO_LINE, hand_over, read_line, read_to_end, spawn_session
from .switched import SwitchedRun

#: An interactive shell: the account's own, unless it is no shell at all.
SHELL = 'case "$SHELL" in ""|*/nologin|*/false) exec /bin/sh -i;; *) exec "$SHELL" -i;; esac'


class CannotEnter(Exception):
    """The session's command could not start: ``why`` (``refused``: the switch said no;
    ``unavailable``: the switch's passing trouble, 202; ``cannot-start``: the command or
    the wrapper failed) and one sentence."""

    def __init__(self, why: str, message: str) -> None:
        super().__init__(message)
        self.why = why
        self.message = message


@dataclass
class Entered:
    """A started command: our ends of its stdio, and how to end it.

    ``pid`` is the agent's child: the command itself, or the switch. ``outputs`` maps each
    descriptor to read to its channel (1 stdout, 2 stderr; a terminal's master is 1).
    """

    pid: int
    stdin: int | None
    outputs: dict[int, int]
    master: int | None
    lifeline: int | None

    def resize(self, rows: int, cols: int) -> None:
        """Tell the terminal its new size (it signals the session's foreground)."""
        if self.master is not None:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def end(self) -> int | None:
        """Kill what is left of the session and reap the child; its wait status (None
        if it was reaped already)."""
        if self.lifeline is not None:
            os.close(self.lifeline)  # the switch kills the session as its owner
            self.lifeline = None
        else:
            _kill_session(self.pid)  # the child is not reaped yet: the sid is still ours
        try:
            _pid, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            return None
        return status

    def close(self) -> None:
        """Close every descriptor still open."""
        for fd in {self.stdin, self.master, self.lifeline, *self.outputs}:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.stdin = self.master = self.lifeline = None
        self.outputs = {}


def _kill_session(sid: int) -> None:
    """SIGKILL every process of the session ``sid`` (the pilot's own: no switch)."""
    for _ in range(50):
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != b"Z" and int(fields[3]) == sid:
                found.append(int(name))
        if not found:
            return
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def enter(
    run: JobRun, command: list[str], *, tty: bool, rows: int, cols: int, term: str
) -> Entered:
    """Start ``command`` (empty: a shell) in ``run``'s job; raise :class:`CannotEnter`."""
    argv = command or ["/bin/sh", "-c", SHELL]
    if isinstance(run, SwitchedRun):
        program, args, env, job_env = run.entry()
    else:
        program = sys.executable
        args = [program, "-I", "-S", str(install_wrapper(run.scratch.parent))]
        env, job_env = {}, build_environment(run.claim, run.scratch)
    if tty:
        job_env["TERM"] = term
    mine: list[int] = []  # our ends, closed if anything fails
    theirs: list[int] = []  # the command's ends, closed once it has them
    try:
        if tty:
            master, slave = os.openpty()
            mine.append(master)
            theirs.append(slave)
            stdio: dict[str, Any] = {"stdin": {"fd": 1}, "stdout": {"fd": 1}, "stderr": "&1"}
            outputs, stdin = {master: 1}, master
        else:
            pipes = [os.pipe() for _ in range(3)]
            mine += [pipes[0][1], pipes[1][0], pipes[2][0]]
            theirs += [pipes[0][0], pipes[1][1], pipes[2][1]]
            stdio = {"stdin": {"fd": 1}, "stdout": {"fd": 2}, "stderr": {"fd": 3}}
            outputs, stdin = {pipes[1][0]: 1, pipes[2][0]: 2}, pipes[0][1]
        request = {"v": 1, "action": "run", "dir": str(run.scratch), "argv": argv,
                   "env": job_env, "tty": tty, **stdio}  # fmt: skip
        entered = Entered(0, stdin, outputs, master if tty else None, None)
        if tty:
            entered.resize(rows, cols)
        _start(entered, program, args, env, request, theirs, switched=isinstance(run, SwitchedRun))
    except BaseException:
        for fd in mine:
            with contextlib.suppress(OSError):
                os.close(fd)
        raise
    finally:
        for fd in theirs:
            with contextlib.suppress(OSError):
                os.close(fd)
    for fd in outputs:
        os.set_blocking(fd, False)
    os.set_blocking(stdin, False)
    return entered


def _start(
    entered: Entered, program: str, args: list[str], env: dict[str, str],
    request: dict[str, Any], stdio: list[int], *, switched: bool,
) -> None:  # fmt: skip
    """Spawn the wrapper (through the switch), hand it the request; set ``pid`` and the
    lifeline, or raise :class:`CannotEnter` with the child reaped."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    status_r, status_w = os.pipe()  # the wrapper's exec status
    switch_r, switch_w = os.pipe() if switched else (-1, -1)
    try:
        with ours:
            try:
                child_fds = [theirs.fileno(), *(() if not switched else (switch_w,))]
                entered.pid = _spawn(program, args, env, child_fds)
            finally:
                theirs.close()
                if switched:
                    os.close(switch_w)
            if switched:
                code, message = read_line(switch_r)  # the fd stays open: the lifeline
                code = 202 if code == NO_LINE else code
                if code != 0:
                    os.waitpid(entered.pid, 0)
                    # 202 is the site's passing trouble: the user may try again (exit 75).
                    why = {201: "refused", 202: "unavailable", 203: "refused"}.get(code)
                    raise CannotEnter(
                        why or "cannot-start",
                        f"the site's pilotage-exec refused ({code}): {message}",
                    )
                entered.lifeline, switch_r = switch_r, -1  # the session's now
            if why := hand_over(ours, request, (status_w, *stdio)):
                entered.end()
                raise CannotEnter("cannot-start", f"the job wrapper did not start ({why})")
        os.close(status_w)
        status_w = -1
        fd, status_r = status_r, -1
        failure = read_to_end(fd)  # the wrapper's line, or "" once exec'd; closes it
        if failure:
            entered.end()
            raise CannotEnter("cannot-start", failure)
    finally:
        for fd in (status_r, status_w, switch_r):
            if fd >= 0:
                os.close(fd)


def _spawn(program: str, args: list[str], env: dict[str, str], fds: list[int]) -> int:
    """The command (or the switch) in a new session: ``fds[0]`` as 0, /dev/null as 1 and
    2, then ``fds[1:]`` from 3 (the switch's status channel), nothing else."""
    try:
        # On the gate's forking side: no other claim's executable, open for writing while
        # it is unpacked, may live on in this child (pilot/forkgate.py).
        return spawn(lambda: spawn_session(program, args, env, *fds), "a session's command")
    except OSError as exc:
        raise CannotEnter("cannot-start", f"{program} cannot be started ({exc})") from None
