"""Input and output sandboxes as uncompressed tar streams: pack, check, spool, extract.

Standard library only: the CLI client, the server and the pilot's agent (a zipapp on bare
worker nodes) all use this module, so it imports nothing of pilotage but ``errors``.

Every tar that crosses a boundary is hostile until checked. The same rules hold wherever
a stream is read (:func:`validate`, :func:`spool`, :func:`extract`):

- members are regular files, directories or symlinks; hard links, devices, FIFOs, sparse
  and unknown types are refused;
- names are relative, without ``..`` or NUL, each at most once (a directory may repeat);
- no member lies below a symlink or a regular file of the same archive;
- symlink targets are relative and, followed through every symlink of the archive, stay
  inside it;
- at most ``max_members`` members, ``max_bytes`` of member data and ``max_bytes`` of stream.

Each refusal raises :class:`SandboxError` (:class:`SandboxTooLarge` for limits) with one
sentence naming the member. Extraction writes only below ``dest``, never through a
symlink; after a refusal ``dest`` may hold part of the archive and the caller discards it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO

from pilotage.errors import BadInput

__all__ = ["SandboxError", "SandboxTooLarge", "extract", "pack", "spool", "validate"]

_CHUNK = 1 << 16
_MAX_LINK_HOPS = 40
_COMPRESSED_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class SandboxError(BadInput):
    """A sandbox tar stream, or one of its members, is refused (HTTP 422)."""


class SandboxTooLarge(SandboxError):
    """A sandbox exceeds its byte or member limit (HTTP 413)."""

    http_status = 413


def _split(name: str) -> list[str]:
    return [part for part in name.split("/") if part not in ("", ".")]


def check_arcname(name: str) -> list[str]:
    """Return the components of a member name, or refuse an unsafe one."""
    if "\x00" in name:
        raise SandboxError(f"sandbox member {name!r} has a NUL byte in its name")
    if name.startswith("/"):
        raise SandboxError(f"sandbox member {name!r} has an absolute path; names must be relative")
    parts = _split(name)
    if ".." in parts:
        raise SandboxError(f"sandbox member {name!r} climbs out of the sandbox with '..'")
    return parts


class _Checker:
    """Applies the module's rules to members in archive order.

    Invariant: ``kinds`` maps every normalised path seen so far (members and the directories
    they imply) to "dir", "file" or "link"; ``links`` holds each symlink's target.
    """

    def __init__(self, max_bytes: int, max_members: int) -> None:
        self.max_bytes = max_bytes
        self.max_members = max_members
        self.count = 0
        self.total = 0
        self.kinds: dict[str, str] = {}
        self.links: dict[str, str] = {}

    def check(self, member: tarfile.TarInfo) -> None:
        name = member.name
        self.count += 1
        if self.count > self.max_members:
            raise SandboxTooLarge(
                f"sandbox member {name!r} is one more than the limit of {self.max_members} members"
            )
        parts = check_arcname(name)
        kind = self._kind(member)
        if not parts:
            if kind == "dir":
                return
            raise SandboxError(f"sandbox member {name!r} has an empty name")
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            above = self.kinds.setdefault(prefix, "dir")
            if above == "link":
                raise SandboxError(f"sandbox member {name!r} goes through the symlink {prefix!r}")
            if above == "file":
                raise SandboxError(f"sandbox member {name!r} lies below the file {prefix!r}")
        key = "/".join(parts)
        previous = self.kinds.get(key)
        if previous == "link":
            raise SandboxError(f"sandbox member {name!r} would replace the symlink of that name")
        if previous is not None and not (previous == kind == "dir"):
            raise SandboxError(f"sandbox member {name!r} appears twice in the archive")
        self.kinds[key] = kind
        if kind == "link":
            self._check_target(name, parts, member.linkname)
            self.links[key] = member.linkname
        elif kind == "file":
            self.total += member.size
            if self.total > self.max_bytes:
                raise SandboxTooLarge(
                    f"sandbox member {name!r} brings the sandbox to {self.total} bytes, "
                    f"over the limit of {self.max_bytes}"
                )

    @staticmethod
    def _kind(member: tarfile.TarInfo) -> str:
        name = member.name
        if member.islnk():
            raise SandboxError(f"sandbox member {name!r} is a hard link; hard links are refused")
        if member.ischr() or member.isblk():
            raise SandboxError(f"sandbox member {name!r} is a device; devices are refused")
        if member.isfifo():
            raise SandboxError(f"sandbox member {name!r} is a FIFO; FIFOs are refused")
        if member.issparse():
            raise SandboxError(
                f"sandbox member {name!r} is a sparse file; sparse files are refused"
            )
        if member.isdir():
            return "dir"
        if member.issym():
            return "link"
        if member.isreg():
            return "file"
        raise SandboxError(f"sandbox member {name!r} has the unsupported tar type {member.type!r}")

    @staticmethod
    def _check_target(name: str, parts: list[str], target: str) -> None:
        if not target or "\x00" in target:
            raise SandboxError(f"sandbox member {name!r} is a symlink with an empty or NUL target")
        if target.startswith("/"):
            raise SandboxError(
                f"sandbox member {name!r} is a symlink to the absolute path {target!r}; "
                "symlink targets must be relative"
            )
        inside = posixpath.normpath(posixpath.join(*parts[:-1], target) if parts[:-1] else target)
        if inside == ".." or inside.startswith("../"):
            raise SandboxError(
                f"sandbox member {name!r} is a symlink pointing outside the sandbox ({target!r})"
            )

    def finish(self) -> None:
        """Follow every symlink through the others: none may resolve outside the sandbox."""
        for key, target in self.links.items():
            resolved: list[str] = key.split("/")[:-1]
            todo = target.split("/")
            hops = 0
            while todo:
                part = todo.pop(0)
                if part in ("", "."):
                    continue
                if part == "..":
                    if not resolved:
                        raise SandboxError(
                            f"sandbox member {key!r} is a symlink that leads outside the sandbox "
                            f"through other symlinks ({target!r})"
                        )
                    resolved.pop()
                    continue
                path = "/".join([*resolved, part])
                if path in self.links:
                    hops += 1
                    if hops > _MAX_LINK_HOPS:
                        raise SandboxError(f"sandbox member {key!r} is part of a symlink loop")
                    todo = self.links[path].split("/") + todo
                else:
                    resolved.append(part)


class _Reader:
    """The input as tarfile reads it: counted, hashed and optionally copied to a sink.

    Invariant: ``size`` bytes were read from the source, hashed and teed; never more than
    ``max_bytes``.
    """

    def __init__(self, source: IO[bytes], max_bytes: int, tee: IO[bytes] | None) -> None:
        self._source = source
        self._max_bytes = max_bytes
        self._tee = tee
        self._pending = b""
        self.size = 0
        self.sha256 = hashlib.sha256()

    def peek(self, n: int) -> bytes:
        while len(self._pending) < n:
            data = self._source.read(n - len(self._pending))
            if not data:
                break
            self._pending += data
        return self._pending[:n]

    def read(self, n: int = -1) -> bytes:
        if self._pending:
            data = self._pending if n < 0 else self._pending[:n]
            self._pending = self._pending[len(data) :]
        else:
            data = self._source.read(n if n >= 0 else _CHUNK)
        if not data:
            return b""
        self.size += len(data)
        if self.size > self._max_bytes:
            raise SandboxTooLarge(
                f"the sandbox stream is larger than the limit of {self._max_bytes} bytes"
            )
        self.sha256.update(data)
        if self._tee is not None:
            self._tee.write(data)
        return data


def _scan(
    reader: _Reader, max_bytes: int, max_members: int
) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """Yield (archive, member) for each member, checked; then consume the padding."""
    head = reader.peek(8)
    if not head:
        raise SandboxError("the sandbox is empty (0 bytes); an uncompressed tar is expected")
    for magic, kind in _COMPRESSED_MAGIC.items():
        if head.startswith(magic):
            raise SandboxError(f"the sandbox is {kind}-compressed; an uncompressed tar is expected")
    checker = _Checker(max_bytes, max_members)
    try:
        with tarfile.open(fileobj=reader, mode="r|") as archive:  # type: ignore[call-overload]
            for member in archive:
                checker.check(member)
                yield archive, member
    except tarfile.TarError as exc:
        raise _damaged(exc, reader.size <= tarfile.RECORDSIZE and not checker.count) from None
    checker.finish()
    while reader.read(_CHUNK):
        pass


def _damaged(exc: tarfile.TarError, at_start: bool) -> SandboxError:
    if at_start:
        return SandboxError(
            f"the sandbox is not a tar archive ({exc}); an uncompressed tar is expected"
        )
    return SandboxError(f"the sandbox tar stream is damaged or truncated ({exc})")


def validate(stream: BinaryIO, *, max_bytes: int, max_members: int = 10000) -> str:
    """Check a whole tar stream without extracting it; return its SHA-256 hex digest."""
    reader = _Reader(stream, max_bytes, None)
    for _ in _scan(reader, max_bytes, max_members):
        pass
    return reader.sha256.hexdigest()


def spool(
    stream: BinaryIO, dest_file: Path, *, max_bytes: int, max_members: int = 10000
) -> tuple[str, int]:
    """Copy a tar stream into ``dest_file`` while checking it; return (SHA-256 hex, size).

    On a refusal ``dest_file`` is removed: a caller spooling under a temporary name and
    renaming on success never keeps half an upload.
    """
    try:
        with open(dest_file, "wb") as sink:
            reader = _Reader(stream, max_bytes, sink)
            for _ in _scan(reader, max_bytes, max_members):
                pass
    except BaseException:
        dest_file.unlink(missing_ok=True)
        raise
    return reader.sha256.hexdigest(), reader.size


def extract(stream: BinaryIO, dest: Path, *, max_bytes: int, max_members: int = 10000) -> list[str]:
    """Extract a tar stream below the existing directory ``dest``; return the member names.

    Each path component is opened with ``O_NOFOLLOW`` relative to its parent's descriptor
    and files are created with ``O_EXCL``, so nothing is ever written through a symlink,
    whatever ``dest`` already holds. Modes are masked to 0o755 (the owner keeps rw, rwx on
    directories); owners are not restored; file modification times are. The whole stream
    is consumed.
    """
    reader = _Reader(stream, max_bytes, None)
    root_fd = os.open(dest, _DIR_FLAGS)
    names: list[str] = []
    try:
        for archive, member in _scan(reader, max_bytes, max_members):
            names.append(member.name)
            parts = _split(member.name)
            if parts:
                parent_fd = _open_dirs(root_fd, parts[:-1], member.name)
                try:
                    _create(parent_fd, parts[-1], member, archive)
                except tarfile.TarError as exc:
                    raise _damaged(exc, at_start=False) from None
                finally:
                    if parent_fd != root_fd:
                        os.close(parent_fd)
    finally:
        os.close(root_fd)
    return names


def _open_dirs(root_fd: int, dirs: list[str], name: str) -> int:
    """Open (making as needed) the directories ``dirs`` below ``root_fd``, following no link."""
    fd = root_fd
    for part in dirs:
        with contextlib.suppress(FileExistsError):
            os.mkdir(part, 0o700, dir_fd=fd)
        try:
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except OSError:
            child = -1
        if fd != root_fd:
            os.close(fd)
        if child < 0:
            raise SandboxError(f"sandbox member {name!r} lies below {part!r}, not a directory")
        fd = child
    return fd


def _create(parent_fd: int, leaf: str, member: tarfile.TarInfo, archive: tarfile.TarFile) -> None:
    """Create one checked member in ``parent_fd``."""
    exists = SandboxError(f"sandbox member {member.name!r} already exists in the destination")
    if member.isdir():
        with contextlib.suppress(FileExistsError):
            os.mkdir(leaf, 0o700, dir_fd=parent_fd)
        try:
            fd = os.open(leaf, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError:
            raise exists from None
        try:
            os.fchmod(fd, (member.mode & 0o755) | 0o700)
        finally:
            os.close(fd)
        return
    if member.issym():
        try:
            os.symlink(member.linkname, leaf, dir_fd=parent_fd)
        except FileExistsError:
            raise exists from None
        return
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(leaf, flags, 0o600, dir_fd=parent_fd)
    except FileExistsError:
        raise exists from None
    try:
        source = archive.extractfile(member)
        assert source is not None  # a regular member always has data
        while data := source.read(_CHUNK):
            os.write(fd, data)
        os.fchmod(fd, (member.mode & 0o755) | 0o600)
        os.utime(fd, (member.mtime, member.mtime))
    finally:
        os.close(fd)


class _Writer:
    """Counts what tarfile writes and refuses to go past ``max_bytes``."""

    def __init__(self, out: IO[bytes], max_bytes: int) -> None:
        self._out = out
        self.max_bytes = max_bytes
        self.size = 0
        self.failed = False

    def write(self, data: bytes) -> int:
        if self.failed:  # tarfile flushes on close even after an error: drop it
            return len(data)
        self.size += len(data)
        if self.size > self.max_bytes:
            raise SandboxTooLarge(f"the sandbox would be larger than {self.max_bytes} bytes")
        self._out.write(data)
        return len(data)


def pack(
    members: list[tuple[str, str]],
    out: BinaryIO,
    *,
    max_bytes: int,
    base: Path | None = None,
) -> int:
    """Write an uncompressed tar of (source path, arcname) pairs to ``out``; return its size.

    Directories are added recursively; only regular files and directories are accepted and
    symlinks are never followed. The result is deterministic: members sorted by name, uid
    and gid 0, empty owner names, modes masked to 0o755, modification times kept. With
    ``base``, sources are relative to it and no component below ``base`` may be a symlink
    (the agent packs a job's directory, which the job controls, this way). Past
    ``max_bytes`` of stream it raises :class:`SandboxTooLarge`, leaving a partial stream
    in ``out`` for the caller to discard.
    """
    names = [("/".join(check_arcname(arcname)), source) for source, arcname in members]
    writer = _Writer(out, max_bytes)
    seen: set[str] = set()
    base_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY) if base is not None else None
    try:
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as archive:  # type: ignore[call-overload]
            try:
                for arcname, source in sorted(names):
                    if not arcname:
                        raise SandboxError(f"the sandbox member name for {source!r} is empty")
                    fd = _open_source(source, base_fd)
                    _add(archive, writer, fd, source, arcname, seen)
            except BaseException:
                writer.failed = True
                raise
    finally:
        if base_fd is not None:
            os.close(base_fd)
    return writer.size


def _open_source(source: str, base_fd: int | None) -> int:
    """Open a source path without following a final symlink (nor any, below ``base``)."""
    try:
        if base_fd is None:
            return os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        parts = check_arcname(source)
        fd = base_fd
        for i, part in enumerate(parts):
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            child = os.open(
                part, flags if i == len(parts) - 1 else flags | os.O_DIRECTORY, dir_fd=fd
            )
            if fd != base_fd:
                os.close(fd)
            fd = child
        return fd
    except FileNotFoundError:
        raise SandboxError(f"sandbox file {source!r} does not exist") from None
    except OSError as exc:
        raise SandboxError(
            f"sandbox file {source!r} cannot be read as a file or directory ({exc.strerror}; "
            "symlinks are not followed)"
        ) from None


def _add(
    archive: tarfile.TarFile, writer: _Writer, fd: int, source: str, arcname: str, seen: set[str]
) -> None:
    """Add the open file or directory ``fd`` (closed here) as ``arcname``, recursively."""
    try:
        st = os.fstat(fd)
        if arcname in seen:
            raise SandboxError(f"sandbox member {arcname!r} is given twice")
        seen.add(arcname)
        info = tarfile.TarInfo(arcname)
        info.mtime = int(st.st_mtime)
        info.mode = stat.S_IMODE(st.st_mode) & 0o755
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
            archive.addfile(info)
            for child in sorted(os.listdir(fd)):
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
                try:
                    child_fd = os.open(child, flags, dir_fd=fd)
                except OSError as exc:
                    raise SandboxError(
                        f"sandbox file {f'{source}/{child}'!r} cannot be read as a file or "
                        f"directory ({exc.strerror}; symlinks are not followed)"
                    ) from None
                _add(archive, writer, child_fd, f"{source}/{child}", f"{arcname}/{child}", seen)
        elif stat.S_ISREG(st.st_mode):
            info.size = st.st_size
            if writer.size + 2 * tarfile.BLOCKSIZE + st.st_size > writer.max_bytes:
                raise SandboxTooLarge(
                    f"sandbox file {source!r} ({st.st_size} bytes) would make the sandbox "
                    f"larger than {writer.max_bytes} bytes"
                )
            with os.fdopen(os.dup(fd), "rb") as data:
                try:
                    archive.addfile(info, data)
                except OSError:
                    raise SandboxError(f"sandbox file {source!r} changed while packed") from None
        else:
            raise SandboxError(f"sandbox file {source!r} is neither a regular file nor a directory")
    finally:
        os.close(fd)
