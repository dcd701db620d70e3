"""Which files of a job's scratch directory go back as its output sandbox, and packing them.

The protocol's rule: with ``transfer_output_files`` the listed paths (each must exist);
without, every regular file at the top of the scratch directory that the job created or
changed (the input files it was given only if changed). ``output`` and ``error`` are
always included when the job names them: they are the job's stdout and stderr.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pilotage.queue.sandbox import SandboxError, pack


class OutputError(Exception):
    """The output sandbox cannot be made (a named file is missing, or it is too large)."""


@dataclass(frozen=True)
class FileStamp:
    """Enough of a file's status to tell that it was replaced or written to."""

    inode: int
    size: int
    mtime_ns: int


def snapshot(scratch: Path) -> dict[str, FileStamp]:
    """Stamp every regular file at the top of ``scratch`` (taken before the job starts)."""
    stamps: dict[str, FileStamp] = {}
    with os.scandir(scratch) as entries:
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):
                stamps[entry.name] = FileStamp(st.st_ino, st.st_size, st.st_mtime_ns)
    return stamps


def is_safe_relpath(path: str) -> bool:
    """Whether ``path`` is relative, non-empty, without NUL and without ``..``."""
    if not path or "\x00" in path or path.startswith("/"):
        return False
    return ".." not in path.split("/")


def select_outputs(
    scratch: Path,
    before: dict[str, FileStamp],
    transfer_output_files: tuple[str, ...] | None,
    stdout: str | None,
    stderr: str | None,
) -> list[str]:
    """The scratch-relative paths to return, sorted, without duplicates.

    Raises :class:`OutputError` for a listed path that is unsafe or missing. With no
    list, files of the top level that are new or whose stamp changed are chosen.
    """
    chosen: set[str] = set()
    if transfer_output_files is None:
        for name, stamp in snapshot(scratch).items():
            if before.get(name) != stamp:
                chosen.add(name)
    else:
        for item in transfer_output_files:
            normal = posixpath.normpath(item)
            if not is_safe_relpath(item) or normal == ".":
                raise OutputError(f"output file {item!r} is not a path inside the job directory")
            if not os.path.lexists(scratch / normal):
                raise OutputError(f"output file {item!r} was not created by the job")
            chosen.add(normal)
    for stream in (stdout, stderr):
        if stream is not None and is_safe_relpath(stream) and os.path.lexists(scratch / stream):
            chosen.add(posixpath.normpath(stream))
    return sorted(chosen)


def pack_outputs(scratch: Path, names: list[str], max_bytes: int, tmp_dir: Path) -> IO[bytes]:
    """Pack ``names`` (relative to ``scratch``) into an unnamed temporary tar file.

    No symlink below ``scratch`` is followed: a job cannot make the agent send a file of
    the pilot's. Raises :class:`OutputError` when the sandbox is refused or too large.
    """
    out = tempfile.TemporaryFile(dir=tmp_dir)  # noqa: SIM115 - returned open
    try:
        pack([(name, name) for name in names], out, max_bytes=max_bytes, base=scratch)
    except SandboxError as exc:
        out.close()
        raise OutputError(f"the output sandbox is refused: {exc.message}") from None
    except BaseException:
        out.close()
        raise
    out.flush()
    return out
