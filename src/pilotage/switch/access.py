"""Whose rights each path is used with: the caller's to open, the target's to run.

What the caller names (its credential files, the target directory) is opened with the
caller's own rights (as gLExec opened the proxy): root-only files are then neither read
nor even found, so the switch is no oracle for them. The program must be reachable by the
*target* account, not only by the caller; a work area under the pilot's 0700 home is the
classic failure (seed 000, §4.3), and the error names the first directory not searchable.
"""

from __future__ import annotations

import os
import pwd
import stat

from .refusals import ClientError

#: Opening what the caller names: never a link, never blocking on a FIFO or a device,
#: never acquiring a terminal. The caller then ``fstat``s before reading anything.
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def open_as_caller(path: str, caller_uid: int, what: str, flags: int = 0) -> int:
    """A descriptor of ``path`` opened with the caller's rights; ``ClientError`` naming why not.

    As root, the open runs with the caller's effective uid, gid and groups; otherwise as is.
    Invariant: the switch is single-threaded, and the real and saved uids stay 0, so root's
    rights come back in ``finally``, and nothing else runs meanwhile.
    """
    as_caller = os.geteuid() == 0 and caller_uid != 0
    if as_caller:
        account = pwd.getpwuid(caller_uid)
        groups = os.getgroups()
        os.setgroups(os.getgrouplist(account.pw_name, account.pw_gid))
        os.setegid(account.pw_gid)
        os.seteuid(caller_uid)
    try:
        return os.open(path, OPEN_FLAGS | flags)
    except OSError as exc:
        reason = "is a symbolic link" if exc.errno == 40 else f"cannot be opened ({exc.strerror})"
        raise ClientError(f"The {what} {path} {reason}.") from None
    finally:
        if as_caller:
            os.seteuid(0)
            os.setegid(0)
            os.setgroups(groups)


def resolve(command: str, search_path: str) -> str:
    """The absolute path of ``command``: as given if it has a slash, else found in ``path``."""
    if "/" in command:
        return os.path.abspath(command)
    for directory in search_path.split(":"):
        candidate = os.path.join(directory, command)
        if os.path.isfile(candidate):
            return candidate
    raise ClientError(f"The program {command} is not in the configured PATH ({search_path}).")


def may(st: os.stat_result, uid: int, gids: frozenset[int], bit_shift: int) -> bool:
    """Whether ``uid`` (in ``gids``) has the permission ``1 << bit_shift`` (x=0, w=1, r=2)."""
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & (stat.S_IXUSR << bit_shift))
    if st.st_gid in gids:
        return bool(st.st_mode & (stat.S_IXGRP << bit_shift))
    return bool(st.st_mode & (stat.S_IXOTH << bit_shift))


def check_program(path: str, account: str, uid: int, gids: frozenset[int]) -> None:
    """Raise ``ClientError`` unless ``account`` can reach ``path`` and run it."""
    for real in dict.fromkeys([path, os.path.realpath(path)]):
        parts = real.split("/")[1:-1]
        directory = "/"
        for part in ["", *parts]:
            directory = os.path.join(directory, part) if part else "/"
            try:
                st = os.stat(directory)
            except OSError as exc:
                raise ClientError(
                    f"The directory {directory} cannot be read ({exc.strerror})."
                ) from None
            if not may(st, uid, gids, 0):
                raise ClientError(
                    f"The directory {directory} is not searchable by {account}; every directory "
                    f"on the path to {path} must be (chmod o+x {directory})."
                )
    try:
        st = os.stat(path)
    except OSError:
        raise ClientError(f"The program {path} does not exist.") from None
    if not stat.S_ISREG(st.st_mode):
        raise ClientError(f"The program {path} is not a regular file.")
    if not may(st, uid, gids, 0):
        raise ClientError(f"The program {path} is not executable by {account}.")
