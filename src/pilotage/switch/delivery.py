"""The user's copy of the credential and the job's directory, in the target directory.

Written as: a new file (``O_EXCL``, never following a link) in the directory, owned by
the target account, mode 0600, then renamed over the final name. The switch runs as root
in a directory the caller controls, so every step goes through the directory's file
descriptor, and a final name that exists and belongs to anyone but the target account is
refused, never replaced. ``--refresh`` uses the same path (seed 000, §4.5). The job's
directory ``job`` is made the same way: by root, through the descriptor, never followed.
"""

from __future__ import annotations

import os
import stat

from .refusals import ClientError

#: The copy's name in the target directory, and the variable that tells the payload.
NAMES = {"x509": ("x509_proxy", "X509_USER_PROXY"), "token": ("bearer_token", "BEARER_TOKEN_FILE")}
#: The job's own directory in the target directory (the payload's working area).
JOB_DIR = "job"


def open_target_dir(path: str, caller_uid: int, allowed_owners: tuple[int, ...]) -> int:
    """A descriptor of ``path``: a directory of the caller or target account, closed to writers.

    Opened with the caller's rights; no other account may create anything in it.
    """
    from .access import open_as_caller

    if not os.path.isabs(path):
        raise ClientError(f"The target directory {path} is not an absolute path.")
    fd = open_as_caller(path, caller_uid, "target directory", os.O_DIRECTORY)
    st = os.fstat(fd)
    if st.st_uid not in allowed_owners or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(fd)
        raise ClientError(
            f"The target directory {path} must belong to the caller or the target account "
            f"and be writable by nobody else (it is uid {st.st_uid}, mode "
            f"{stat.S_IMODE(st.st_mode):04o}); use mode 0711."
        )
    return fd


def ensure_job_dir(dir_fd: int, uid: int, gid: int) -> None:
    """Make ``job`` in the target directory a directory of ``uid``:``gid``, mode 0700.

    Created if absent. One that exists must already be a real directory of that account:
    anything else (a link, a file, another owner's directory) is refused, never followed.
    """
    try:
        os.mkdir(JOB_DIR, 0o700, dir_fd=dir_fd)
        created = os.geteuid() == 0
    except FileExistsError:
        created = False
    try:
        fd = os.open(JOB_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError:
        fd = -1
    try:
        st = os.fstat(fd) if fd >= 0 else None
        if st is not None and created and st.st_uid == 0:
            os.fchown(fd, uid, gid)  # ours since mkdir: what was swapped in is not root's
            st = os.fstat(fd)
        if st is None or (st.st_uid, st.st_gid) != (uid, gid):
            raise ClientError(
                f"The job directory {JOB_DIR} in the target directory exists and is not a "
                f"directory of the target account (uid {uid}, gid {gid}); refusing it."
            )
        os.fchmod(fd, 0o700)
    finally:
        if fd >= 0:
            os.close(fd)


def existing_copy(dir_fd: int, kind: str, target_uid: int) -> bytes | None:
    """The current copy's bytes, None if there is none; refuse one owned by someone else."""
    name = NAMES[kind][0]
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_uid != target_uid:
        raise ClientError(
            f"The file {name} in the target directory belongs to uid {st.st_uid}, not to "
            f"the target account (uid {target_uid}), or is not a regular file; refusing "
            "to overwrite it."
        )
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as exc:
        raise ClientError(
            f"The existing credential copy {name} cannot be read ({exc.strerror})."
        ) from None
    try:
        # Checked again on the open file: the name may have been swapped meanwhile.
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != target_uid:
            raise ClientError(f"The file {name} changed owner while being read; refusing it.")
        return os.read(fd, 1 << 20)
    finally:
        os.close(fd)


def write_copy(dir_fd: int, kind: str, data: bytes, uid: int, gid: int) -> str:
    """Replace the copy with ``data``, owned by ``uid``:``gid``, mode 0600; return its name."""
    name = NAMES[kind][0]
    existing_copy(dir_fd, kind, uid)  # refuses a final name that belongs to someone else
    temporary = f".{name}.{os.urandom(6).hex()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                 dir_fd=dir_fd)  # fmt: skip
    try:
        if os.geteuid() == 0:
            os.fchown(fd, uid, gid)
        os.fchmod(fd, 0o600)
        # No fsync: the copy serves a job that a crash of the node ends as well, and each
        # call naming a claim directory writes it (0.5 ms here, far more on a busy disk).
        os.write(fd, data)
    except OSError:
        os.unlink(temporary, dir_fd=dir_fd)
        raise
    finally:
        os.close(fd)
    os.rename(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    return name
