"""``stream_output``: the agent sends what a running job's stdout gained, for ``pilotage tail``.

Standard library only. While a job submitted with ``stream_output = true`` (and an
``output`` file) runs, a thread reads its stdout file every :data:`INTERVAL_S` seconds
and sends the new bytes (``PUT /pilot/v1/claims/{id}/stdout?offset=N``), at most
:data:`MAX_PIECE` per send: when more was written since, only the last ``MAX_PIECE``
bytes go, so a job printing fast costs the pool at most that much every interval. One
last send follows the job's end. A send that fails is not retried (the next one carries
the newer end); a refused one (the claim ended) stops the thread. The file is the
pilot's in a plain claim; with the switch it is the job owner's, which the pilot does
not read, so such jobs are not streamed (docs/submit.md).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from pilotage.errors import PilotageError, Transient

from .wire import Claim

log = logging.getLogger("pilotage.pilot")

INTERVAL_S = 2.0
MAX_PIECE = 64 * 1024


class _Uploader(Protocol):
    def put_file(self, path: str, file: io.BytesIO, size: int, content_type: str) -> None: ...

    def close(self) -> None: ...


class StdoutStream:
    """One claim's streaming thread; :meth:`close` sends the last piece and stops it."""

    def __init__(self, client: _Uploader, claim: Claim, path: Path) -> None:
        self._client = client
        self._claim = claim
        self._path = path
        self._sent = 0  # bytes of stdout the server has up to
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"{claim.claim_id}-stdout", daemon=True
        )

    def start(self) -> StdoutStream:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread, then send what the job wrote last."""
        self._stop.set()
        self._thread.join()
        self.send_new()  # on the claim's own thread and connection

    def _run(self) -> None:
        try:
            while not self._stop.wait(INTERVAL_S):
                if not self.send_new():
                    return
        finally:
            self._client.close()

    def send_new(self) -> bool:
        """Send what stdout gained since the last send; false once the server refuses."""
        try:
            size = os.stat(self._path).st_size
        except OSError:
            return True  # not there yet
        if size < self._sent:  # truncated by the job: start again
            self._sent = 0
        if size == self._sent:
            return True
        start = max(self._sent, size - MAX_PIECE)
        with open(self._path, "rb") as stdout:
            stdout.seek(start)
            piece = stdout.read(min(MAX_PIECE, size - start))
        path = f"/pilot/v1/claims/{self._claim.claim_id}/stdout?offset={start}"
        try:
            self._client.put_file(path, io.BytesIO(piece), len(piece), "application/octet-stream")
        except Transient as exc:
            log.debug("claim %s: stdout not sent (%s)", self._claim.claim_id, exc.message)
            return True
        except PilotageError as exc:
            log.info("claim %s: stdout no longer sent (%s)", self._claim.claim_id, exc.message)
            return False
        self._sent = start + len(piece)
        return True


@contextlib.contextmanager
def stream_stdout(client: _Uploader, claim: Claim, scratch: Path) -> Iterator[None]:
    """Stream the claim's stdout while the body runs, if it asked for that."""
    if not claim.stream_output or claim.output is None:
        yield
        return
    stream = StdoutStream(client, claim, scratch / claim.output).start()
    try:
        yield
    finally:
        stream.close()
