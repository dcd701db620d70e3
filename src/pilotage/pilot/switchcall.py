"""One call of the switch (``pilotage-exec``) from the agent, at the process level.

Each call starts the switch in a new session with exactly four descriptors: its standard
input (the wrapper's socket, or /dev/null), /dev/null as 1 and 2, and the write end of a
pipe at descriptor 3, the switch's status channel (hence ``sudo -C 4`` or more). The
switch writes one line there: ``0 started <pid>``, or ``<code> <message>`` when it
refuses. ``--signal`` and ``--refresh`` write a line only to refuse, so end-of-file
(:data:`NO_LINE`) is their success.

What the calls mean for a claim (which refusal holds the job, retries after a 202) is
:class:`pilotage.pilot.switched.SwitchedRun`'s.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket

from .forkgate import GATE

#: The descriptor the switch writes its status line to, in its own process.
STATUS_FD = 3
#: No status line at all (a dead switch: 202, or ``--signal``'s success).
NO_LINE = -202
#: How long the agent waits for the wrapper to take its request.
SEND_TIMEOUT_S = 120.0


class Refused(Exception):
    """The switch refused a call: its exit code (201-203) and its sentence."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def spawn_session(program: str, argv: list[str], env: dict[str, str], *fds: int) -> int:
    """``posix_spawn`` in a new session with exactly these descriptors: ``fds[0]`` as
    0, /dev/null as 1 and 2, the rest from 3. Called on the fork gate's forking side.

    ``posix_spawn`` places the descriptors in the child only, so concurrent claims never
    see each other's; ``env`` is the child's whole environment.
    """
    high: list[int] = []
    try:
        with open(os.devnull, "r+b") as null:
            for fd in (fds[0], null.fileno(), null.fileno(), *fds[1:]):
                high.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(high)]
        return os.posix_spawn(program, argv, env, file_actions=actions, setsid=True)
    finally:
        for fd in high:
            os.close(fd)


def launch(program: str, argv: list[str], stdin: int, env: dict[str, str]) -> tuple[int, int]:
    """Start the switch in a new session; its pid and the status channel's read end."""
    read_fd, write_fd = os.pipe()
    try:
        with GATE.forking():  # no executable open for writing survives into it
            pid = spawn_session(program, argv, env, stdin, write_fd)
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return pid, read_fd


def read_line(fd: int) -> tuple[int, str]:
    """The status line's code and message, or :data:`NO_LINE`; ``fd`` stays open. Reads
    up to the line only, not to end-of-file: sudo keeps a copy of the write end open."""
    data = b""
    while b"\n" not in data and len(data) < 8192:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    line = data.split(b"\n", 1)[0].decode(errors="replace")
    code, _, message = line.partition(" ")
    if not line:
        return NO_LINE, "pilotage-exec ended without a status line"
    if not code.isdigit():
        return 202, f"pilotage-exec sent an unreadable status line {line[:200]!r}"
    return int(code), message


def read_status(read_fd: int) -> tuple[int, str]:
    """:func:`read_line`, then close ``read_fd``."""
    try:
        return read_line(read_fd)
    finally:
        os.close(read_fd)


def read_to_end(read_fd: int) -> str:
    """Everything written to ``read_fd`` until end-of-file, stripped; then close it."""
    data = b""
    try:
        while chunk := os.read(read_fd, 4096):
            data += chunk
    finally:
        os.close(read_fd)
    return data.decode(errors="replace").strip()


def call(program: str, argv: list[str], env: dict[str, str]) -> tuple[int, str, int]:
    """Run a call with no input to its end: its status line (code, message) and exit code."""
    with open(os.devnull, "rb") as null:
        pid, status_fd = launch(program, argv, null.fileno(), env)
    code, message = read_status(status_fd)
    return code, message, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def hand_over(sock: socket.socket, request: dict[str, object], fds: tuple[int, ...]) -> str:
    """Send the wrapper its request and descriptors; "" once it acknowledged, else why not."""
    data = json.dumps(request).encode()
    sock.settimeout(SEND_TIMEOUT_S)
    try:
        sent = socket.send_fds(sock, [data], list(fds))
        sock.sendall(data[sent:])
        sock.shutdown(socket.SHUT_WR)  # end-of-file: the whole request is there
        ack = sock.recv(1)
    except OSError as exc:
        return str(exc)
    return "" if ack == b"R" else "it closed its socket"
