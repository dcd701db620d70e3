"""``stream_output``: the agent sends what a running job's stdout gained, for ``pilotage tail``.

Standard library only. While a job submitted with ``stream_output = true`` (and an
``output`` file) runs, the new bytes of its stdout go to the server every
:data:`INTERVAL_S` seconds (``PUT /pilot/v1/claims/{id}/stdout?offset=N``), at most
:data:`MAX_PIECE` per send: when more was written since, only the last ``MAX_PIECE``
bytes go, so a job printing fast costs the pool at most that much every interval. One
last send follows the job's end. A send that fails is not retried (the next one carries
the newer end); a refused one (the claim ended) stops the sending.

Who reads the file depends on whose it is. In a plain claim it is the pilot's:
:class:`StdoutStream` reads it. Through the switch it is the job owner's, which the
pilot cannot read: the job wrapper's output reader reads it as the owner and sends the
pieces on the wrapper's socket (pilot/wrapper.py), and :class:`WrapperStream` uploads
them. Either way a piece that carries the key of a credential the agent holds for the
claim is not sent, and the stream stops (the same rule as for the outputs,
pilot/outputs.py).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from pilotage.errors import PilotageError, Transient

from .outputs import credential_needles, is_safe_relpath
from .wire import Claim
from .wrapper import FRAME, MAX_NOTE, NOTE, PIECE

log = logging.getLogger("pilotage.pilot")

INTERVAL_S = 2.0
MAX_PIECE = 64 * 1024
#: How long the agent waits for the wrapper's last pieces once a switched job ended.
LAST_PIECES_S = 10.0


class _Uploader(Protocol):
    def put_file(self, path: str, file: io.BytesIO, size: int, content_type: str) -> None: ...

    def close(self) -> None: ...


class _Sender:
    """Sends pieces of one claim's stdout; false from :meth:`send` once it must stop."""

    def __init__(
        self, client: _Uploader, claim: Claim, credentials: Callable[[], list[Path]]
    ) -> None:
        self._client = client
        self._claim = claim
        self._credentials = credentials
        self._end = -1  # where the last piece sent ended
        self._tail = b""  # its last bytes, so a key cut between two pieces is still seen

    def send(self, start: int, piece: bytes) -> bool:
        tag = f"claim {self._claim.claim_id} job {self._claim.job_id}"
        needles = credential_needles(self._credentials())
        window = (self._tail if start == self._end else b"") + piece
        if any(needle in window for needle in needles):
            log.warning("%s: stdout carries a credential's key; it is no longer streamed", tag)
            return False
        path = f"/pilot/v1/claims/{self._claim.claim_id}/stdout?offset={start}"
        try:
            self._client.put_file(path, io.BytesIO(piece), len(piece), "application/octet-stream")
        except Transient as exc:
            log.debug("%s: stdout not sent (%s)", tag, exc.message)
            return True
        except PilotageError as exc:
            log.info("%s: stdout no longer sent (%s)", tag, exc.message)
            return False
        overlap = max((len(n) for n in needles), default=1) - 1
        self._end, self._tail = start + len(piece), window[len(window) - overlap :]
        return True


class StdoutStream:
    """One claim's streaming thread; :meth:`close` sends the last piece and stops it."""

    def __init__(
        self, client: _Uploader, claim: Claim, path: Path,
        credentials: Callable[[], list[Path]] = list,
    ) -> None:  # fmt: skip
        self._client = client
        self._sender = _Sender(client, claim, credentials)
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
        if not self._sender.send(start, piece):
            return False
        self._sent = start + len(piece)
        return True


@contextlib.contextmanager
def stream_stdout(
    client: _Uploader, claim: Claim, scratch: Path, credentials: Callable[[], list[Path]] = list
) -> Iterator[None]:
    """Stream the claim's stdout while the body runs, if it asked for that."""
    if not claim.stream_output or claim.output is None:
        yield
        return
    stream = StdoutStream(client, claim, scratch / claim.output, credentials).start()
    try:
        yield
    finally:
        stream.close()


# -- through the switch: the wrapper reads, the agent uploads -------------------------------


def wrapper_request(claim: Claim) -> dict[str, Any]:
    """What the wrapper's ``run`` request gets for the claim's streaming (``{}``: none)."""
    if not claim.stream_output or claim.output is None or not is_safe_relpath(claim.output):
        return {}
    names = [claim.output]
    return {"stream": {"names": names, "every_s": INTERVAL_S, "max_piece": MAX_PIECE}}


class _BadFrame(Exception):
    """The wrapper's socket carried something that is not a frame."""


class WrapperStream:
    """Uploads the pieces a switched job's wrapper reads from its stdout, as its owner.

    The socket is the one the wrapper's request went over; its frames follow the ``R``.
    End-of-file comes once the reader has sent the job's last pieces and ended (sudo
    and the switch, which keep copies, end with the job). Frames are checked as input
    from the job's account: a kind, index or length out of bounds stops the reading.
    """

    def __init__(
        self, client: _Uploader, claim: Claim, channel: socket.socket,
        credentials: Callable[[], list[Path]],
    ) -> None:  # fmt: skip
        self._client = client
        self._tag = f"claim {claim.claim_id} job {claim.job_id}"
        self._channel = channel
        self._sender = _Sender(client, claim, credentials)
        self._thread = threading.Thread(
            target=self._run, name=f"{claim.claim_id}-stdout", daemon=True
        )

    def start(self) -> WrapperStream:
        self._channel.settimeout(None)
        self._thread.start()
        return self

    def close(self, wait_s: float = 0.0) -> None:
        """Wait up to ``wait_s`` for the last pieces (the job has ended), then stop."""
        if self._thread.is_alive():
            self._thread.join(wait_s)
        with contextlib.suppress(OSError):
            self._channel.shutdown(socket.SHUT_RDWR)  # a blocked read returns
        if self._thread.ident is not None:
            self._thread.join()
        self._channel.close()

    def _run(self) -> None:
        sending, last = True, 0.0
        try:
            while (frame := self._frame()) is not None:
                kind, index, offset, data = frame
                if kind == NOTE:
                    text = data.decode(errors="replace").replace("\n", " ")
                    log.warning("%s: %s", self._tag, text)
                elif sending and index == 0:
                    # A job that got at the socket cannot make the agent send faster.
                    time.sleep(max(0.0, last + INTERVAL_S / 2 - time.monotonic()))
                    last = time.monotonic()
                    sending = self._sender.send(offset, data)
        except (OSError, _BadFrame) as exc:
            log.warning("%s: the job's output is no longer streamed (%s)", self._tag, exc)
        finally:
            self._client.close()

    def _frame(self) -> tuple[bytes, int, int, bytes] | None:
        head = self._read(FRAME.size, eof_ok=True)
        if head is None:
            return None
        kind, index, offset, size = FRAME.unpack(head)
        if kind not in (PIECE, NOTE) or size > (MAX_PIECE if kind == PIECE else MAX_NOTE):
            raise _BadFrame(f"the wrapper sent a frame of kind {kind!r} and {size} bytes")
        return kind, index, offset, self._read(size) or b""

    def _read(self, size: int, *, eof_ok: bool = False) -> bytes | None:
        data = b""
        while len(data) < size:
            chunk = self._channel.recv(size - len(data))
            if not chunk:
                if eof_ok and not data:
                    return None
                raise _BadFrame("the wrapper's socket ended inside a frame")
            data += chunk
        return data
