"""The server's spool: sandboxes stored as files named by the SHA-256 of their tar stream.

An upload is written under a temporary name while it is checked
(:func:`pilotage.queue.sandbox.spool`) and renamed into place only when it is whole and
safe, so a refused or broken upload never replaces anything already stored.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import sqlalchemy as sa

from pilotage.errors import NotFound
from pilotage.queue import sandbox
from pilotage.store.tables import sandboxes


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
