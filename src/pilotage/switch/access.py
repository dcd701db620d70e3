"""Can the target account run the program? Every directory on its path must be searchable.

The switch changes uid between the call and ``exec``, so the program must be reachable by
the *target* account, not only by the caller; a work area under the pilot's 0700 home is
the classic failure (seed 000, §4.3). The error names the first directory that is not
searchable, so the pilot can fix that one directory.
"""

from __future__ import annotations

import os
import stat

from .refusals import ClientError


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
