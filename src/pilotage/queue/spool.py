"""The server's spool: sandboxes named by the SHA-256 of their tar stream.

An upload is written under a temporary name while it is checked
(:func:`pilotage.queue.sandbox.spool`) and kept only when it is whole and safe, so a
refused or broken upload never replaces anything already stored.

Two places to keep them (``[server] spool``): files below the state directory
(:class:`Spool`, one server), or the database (:class:`DatabaseSpool`), so that several
servers sharing one PostgreSQL share their sandboxes and nothing else (the temporary
file of an upload being checked stays local). Kept sandboxes never change: the same
digest is the same bytes, so keeping one twice, from two servers at once, is harmless.
"""

from __future__ import annotations

import io
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import sqlalchemy as sa

from pilotage.errors import NotFound, OperatorError
from pilotage.queue import sandbox
from pilotage.store.engine import Store
from pilotage.store.tables import sandbox_chunks, sandboxes

#: The size of each piece of a sandbox kept in the database.
CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Upload:
    """A checked tar stream waiting under a temporary name."""

    tmp: Path
    digest: str
    size: int


class Spool:
    """Content-addressed tar files below one directory."""

    def __init__(self, root: Path, *, max_bytes: int, max_members: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_members = max_members
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.root / "incoming").mkdir(exist_ok=True, mode=0o700)

    def path(self, digest: str) -> Path:
        """Where the sandbox with this digest lives."""
        return self.root / digest[:2] / f"{digest}.tar"

    def receive(self, stream: BinaryIO) -> Upload:
        """Check a tar stream into a temporary file; :meth:`keep` or :meth:`discard` it."""
        tmp = self.root / "incoming" / secrets.token_hex(12)
        digest, size = sandbox.spool(
            stream, tmp, max_bytes=self.max_bytes, max_members=self.max_members
        )
        return Upload(tmp, digest, size)

    def keep(self, upload: Upload) -> None:
        """Move a checked upload into place under its digest."""
        final = self.path(upload.digest)
        final.parent.mkdir(exist_ok=True, mode=0o700)
        os.replace(upload.tmp, final)

    @staticmethod
    def discard(upload: Upload) -> None:
        """Drop an upload that was not wanted after all."""
        upload.tmp.unlink(missing_ok=True)

    def store(self, stream: BinaryIO) -> tuple[str, int]:
        """Check and keep a tar stream; return its digest and size."""
        upload = self.receive(stream)
        self.keep(upload)
        return upload.digest, upload.size

    def open(self, digest: str) -> BinaryIO:
        """Open a stored sandbox for reading."""
        try:
            return self.path(digest).open("rb")
        except FileNotFoundError:
            raise NotFound(f"sandbox {digest} is not in the spool") from None


class DatabaseSpool(Spool):
    """Sandboxes kept in the database, in pieces of :data:`CHUNK_BYTES`.

    A sandbox kept in an earlier file spool of this server (before ``spool`` was set to
    ``database``) is still read from its file.
    """

    def __init__(self, root: Path, store: Store, *, max_bytes: int, max_members: int) -> None:
        super().__init__(root, max_bytes=max_bytes, max_members=max_members)
        self.db = store

    def keep(self, upload: Upload) -> None:
        """Write a checked upload into the database (once per digest); drop the file.

        Blocking: call it from a worker thread, not the event loop.
        """
        try:
            with self.db.write() as conn:
                if self._count(conn, upload.digest) == 0:
                    self._insert(conn, upload)
        finally:
            upload.tmp.unlink(missing_ok=True)

    def open(self, digest: str) -> BinaryIO:
        """A reader of the stored sandbox, fetching one piece at a time."""
        with self.db.read() as conn:
            count = self._count(conn, digest)
        if count == 0:
            return super().open(digest)
        return io.BufferedReader(_ChunkReader(self.db, digest, count), CHUNK_BYTES)

    @staticmethod
    def _count(conn: sa.Connection, digest: str) -> int:
        query = sa.select(sa.func.count()).where(sandbox_chunks.c.digest == digest)
        return int(conn.execute(query).scalar_one())

    @staticmethod
    def _insert(conn: sa.Connection, upload: Upload) -> None:
        with upload.tmp.open("rb") as source:
            seq = 0
            while True:
                data = source.read(CHUNK_BYTES)
                if not data and seq > 0:
                    return
                conn.execute(
                    sa.insert(sandbox_chunks).values(digest=upload.digest, seq=seq, data=data)
                )
                seq += 1


class _ChunkReader(io.RawIOBase):
    """The pieces of one sandbox, read in order, each with a short query of its own."""

    def __init__(self, store: Store, digest: str, count: int) -> None:
        self.db, self.digest, self.count = store, digest, count
        self.seq = 0
        self.pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not self.pending and self.seq < self.count:
            with self.db.read() as conn:
                self.pending = conn.execute(
                    sa.select(sandbox_chunks.c.data).where(
                        sandbox_chunks.c.digest == self.digest, sandbox_chunks.c.seq == self.seq
                    )
                ).scalar_one()
            self.seq += 1
        size = min(len(buffer), len(self.pending))
        buffer[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        return size


def make_spool(root: Path, store: Store, where: str, *, max_bytes: int, max_members: int) -> Spool:
    """The spool ``[server] spool`` names: ``files``, ``database``, or ``auto`` (the
    database on PostgreSQL, where several servers may share it; files on SQLite)."""
    if where not in ("files", "database", "auto"):
        raise OperatorError(
            f"configuration [server] spool = {where!r}: use files, database or auto"
        )
    if where == "database" or (where == "auto" and not store.is_sqlite):
        return DatabaseSpool(root, store, max_bytes=max_bytes, max_members=max_members)
    return Spool(root, max_bytes=max_bytes, max_members=max_members)


def remember(conn: sa.Connection, digest: str, size: int, owner: str, now: float) -> None:
    """Record that ``owner`` may use (and read) the sandbox ``digest``."""
    exists = conn.execute(
        sa.select(sandboxes.c.digest).where(
            sandboxes.c.digest == digest, sandboxes.c.owner == owner
        )
    ).first()
    if exists is None:
        conn.execute(
            sa.insert(sandboxes).values(digest=digest, size_bytes=size, owner=owner, created_at=now)
        )
