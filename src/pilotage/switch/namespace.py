"""``namespace`` mode: no privilege; new user, PID, mount and IPC namespaces for the payload.

The payload keeps the caller's uid (mapped to itself), so this mode separates the pilot
from its payload but not payloads from each other. In the new mount namespace the
directories listed in ``hide`` (and the switch's own state directory) are covered by an
empty tmpfs, and the pilot's credential file by ``/dev/null``; in the new PID namespace
the pilot's processes cannot be seen, hence not signalled. Mounts made here are locked
for the payload: it has no capability left after ``exec`` to undo them.

Shape: the switch unshares, then forks the namespace's init (pid 1), which mounts a fresh
``/proc``, forks the payload, forwards signals to it and exits with its status.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

from .refusals import SiteError

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGCONT, signal.SIGTSTP)  # fmt: skip

_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    result = _libc.mount(
        source.encode(), target.encode(), fstype.encode() if fstype else None,
        ctypes.c_ulong(flags), data.encode() if data else None,
    )  # fmt: skip
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {target}: {os.strerror(errno)}")


def enter() -> None:
    """Unshare the user, mount, IPC and PID namespaces; map our uid and gid to themselves."""
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            if int(f.read()) == 0:
                raise SiteError(
                    "User namespaces are disabled on this node (user.max_user_namespaces is 0)."
                )
    except (OSError, ValueError):
        pass
    uid, gid = os.getuid(), os.getgid()
    if _libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWPID) != 0:
        errno = ctypes.get_errno()
        raise SiteError(
            f"This node does not allow unprivileged user namespaces ({os.strerror(errno)})."
        )
    try:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1")
    except OSError as exc:
        raise SiteError(f"The namespace cannot be set up ({exc}).") from None


def hide(hide_dirs: list[str], hide_files: list[str]) -> None:
    """In a mount namespace of our own, cover what the payload must not see.

    Called in the namespace's init, so the switch itself keeps its view (its state
    directory, for the audit record and the job registry, is among the hidden).
    """
    try:
        if _libc.unshare(CLONE_NEWNS) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"unshare: {os.strerror(errno)}")
        _mount("none", "/", None, MS_REC | MS_PRIVATE)
        for directory in hide_dirs:
            if os.path.isdir(directory):
                _mount(
                    "tmpfs",
                    directory,
                    "tmpfs",
                    MS_NOSUID | MS_NODEV | MS_NOEXEC,
                    "size=4k,mode=0755",
                )
        for path in hide_files:
            if os.path.isfile(path):
                _mount("/dev/null", path, None, MS_BIND)
    except OSError as exc:
        raise SiteError(f"The namespace cannot be set up ({exc}).") from None


def run_init(start_payload: Callable[[], int]) -> int:
    """In the namespace's pid 1: mount /proc, start the payload, forward signals, reap.

    Returns the payload's wait status, encoded as an exit code (128 + signal if killed).
    """
    try:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError as exc:
        raise SiteError(f"The namespace cannot mount /proc ({exc}).") from None
    payload = start_payload()
    for sig in FORWARDED:
        # As the namespace's pid 1, kill(-1) reaches every process inside but itself:
        # the whole job, however it forked.
        signal.signal(sig, lambda number, _frame: os.kill(-1, number))
    while True:
        # pid 1 reaps every orphan of the namespace; only the payload's status counts.
        pid, status = os.waitpid(-1, 0)
        if pid == payload:
            return (
                os.waitstatus_to_exitcode(status)
                if os.WIFEXITED(status)
                else (128 + os.WTERMSIG(status))
            )
