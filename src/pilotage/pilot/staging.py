"""An input sandbox is downloaded whole to a local temporary file, then unpacked under
the fork gate (:mod:`pilotage.pilot.forkgate`).

Unpacking writes the job's executable; no other claim may fork while it is open for
writing. Downloading first keeps the network (a slow server, a retried transfer) out of
the gate: only the local unpacking, bounded by the sandbox size limit, holds forks back.
The temporary file has no name (``O_TMPFILE`` where the system has it) in the agent's
work directory, so nothing is left behind whatever happens.
"""

from __future__ import annotations

import http.client
import tempfile
from pathlib import Path
from typing import IO, BinaryIO, cast

from pilotage.errors import Unreachable
from pilotage.queue.sandbox import SandboxTooLarge, extract

from .client import Client
from .forkgate import GATE

#: How much is read from the network at a time.
_CHUNK = 256 * 1024


def download(client: Client, path: str, into: IO[bytes], max_bytes: int) -> int:
    """Copy the body of ``GET path`` into ``into`` (refused past ``max_bytes``); its size.

    A cut connection raises :class:`~pilotage.errors.Unreachable` (the caller retries).
    """
    size = 0
    into.seek(0)
    into.truncate()
    with client.stream(path) as body:
        while True:
            try:
                block = body.read(_CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise Unreachable(f"the download of {path} was cut ({exc})") from exc
            if not block:
                break
            size += len(block)
            if size > max_bytes:
                raise SandboxTooLarge(f"the sandbox is larger than the limit of {max_bytes} bytes")
            into.write(block)
    into.flush()
    return size


def unpack(staged: IO[bytes], dest: Path, max_bytes: int) -> list[str]:
    """Unpack the downloaded tar ``staged`` into ``dest`` while no claim forks."""
    staged.seek(0)
    with GATE.writing():
        return extract(cast(BinaryIO, staged), dest, max_bytes=max_bytes)


def staging_file(workdir: Path) -> IO[bytes]:
    """An unnamed temporary file in ``workdir`` for a download."""
    return tempfile.TemporaryFile(dir=workdir, prefix=".staging-")
