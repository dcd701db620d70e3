"""Which files of a job's scratch directory go back as its output sandbox, and packing them.

The protocol's rule: with ``transfer_output_files`` the listed paths (each must exist);
without, every regular file at the top of the scratch directory that the job created or
changed (the input files it was given only if changed). ``output`` and ``error`` are
always included when the job names them: they are the job's stdout and stderr.

No output may carry a credential (security review, finding 10): a job can link or copy
its ``x509_proxy`` into its outputs, and the private key would then sit unsealed in the
server's spool. :func:`find_credential` searches the packed outputs for the key material
of every credential the agent holds (:func:`credential_needles`) before anything is sent.
"""

from __future__ import annotations

import base64
import os
import posixpath
import re
import stat
import tarfile
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


_KEY_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----\r?\n(.*?)-----END \1PRIVATE KEY-----", re.S
)
#: The shortest piece of a credential searched for: long enough never to occur by chance.
_MIN_NEEDLE = 40
_SLICE = 48
_CHUNK = 1 << 20


def credential_needles(files: list[Path]) -> list[bytes]:
    """What an output must not contain, from the credential files the agent holds.

    For each file: its whole content; for each private key in it, the PEM block, each
    line of its body, and the key's DER, whole and in slices of 48 bytes (so a copy of
    any 95 bytes of it is seen). A file that is missing or not a regular file of its own is skipped.
    """
    needles: set[bytes] = set()
    for path in files:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            data = file.read(1 << 20)
        needles.add(data.strip())
        for block in _KEY_BLOCK.finditer(data):
            needles.add(block.group(0))
            lines = block.group(2).split()
            needles.update(line for line in lines if b":" not in line)
            try:
                der = base64.b64decode(b"".join(line for line in lines if b":" not in line))
            except ValueError:
                continue
            needles.add(der)
            # Any piece of 2 * _SLICE - 1 bytes or more holds one of these slices whole.
            needles.update(der[at : at + _SLICE] for at in range(0, len(der) - _SLICE + 1, _SLICE))
    return sorted(n for n in needles if len(n) >= _MIN_NEEDLE)


def find_credential(tar: IO[bytes], needles: list[bytes]) -> str | None:
    """The first member of the packed outputs ``tar`` that holds any of ``needles``."""
    if not needles:
        return None
    overlap = max(len(n) for n in needles) - 1
    tar.seek(0)
    with tarfile.open(fileobj=tar, mode="r:") as archive:
        for member in archive:
            stream = archive.extractfile(member) if member.isreg() else None
            if stream is None:
                continue
            tail = b""
            while chunk := stream.read(_CHUNK):
                window = tail + chunk
                if any(n in window for n in needles):
                    return member.name
                tail = window[-overlap:]
    tar.seek(0)
    return None
