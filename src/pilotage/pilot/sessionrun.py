"""One exec-in-job session on the node: the WebSocket the agent opens, the command, and
the bytes between them, within the session's limits.

:meth:`SessionRun.serve` opens ``/pilot/v1/claims/{claim}/session/{sid}`` (outbound, with
the pilot's token and secret), checks that the claim's job is running here, starts the
command (:mod:`pilotage.pilot.sessionproc`) and relays, on this one thread, with
``select``: stdin frames to the command (buffered, never blocking the loop), its output
to the server in frames of at most ``frame_bytes``, a resize to the terminal, ``eof`` to
its stdin (a terminal gets its end-of-file character). Frames are those of
docs/pilot-protocol.md ("Sessions").

The session ends, and the command's whole session is killed, when:

- the command exits: ``exit`` with its code (``128 + n`` for signal ``n``, as a shell);
- its job ends or is stopped, or the agent leaves: ``end`` ``job-ended`` / ``agent``;
- it reaches a limit: ``max_bytes`` either way, ``max_s``, or ``idle_s`` without a byte
  either way: ``end`` ``limit``;
- the user leaves (the server closes the connection).

The server applies the same limits; the agent applies them first so the command is
stopped where it runs.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import select
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pilotage.errors import PilotageError

from .jobrun import JobRun
from .sessionproc import CannotEnter, Entered, enter
from .websocket import Message, WebSocket, WebSocketError

if TYPE_CHECKING:
    from .session import Offer

log = logging.getLogger("pilotage.pilot")

#: Input waiting for a command that does not read, past which the user's frames wait too.
_MAX_PENDING_INPUT = 1024 * 1024
#: How often the loop looks at the job, the limits and the agent when nothing happens.
_TICK_S = 0.25
#: The end-of-file character a terminal's line discipline takes (``VEOF``, ^D).
_EOF_CHAR = b"\x04"


class _Over(Exception):
    """The session ends: ``why`` and a sentence for the user (None: tell nothing)."""

    def __init__(self, why: str, reason: str | None) -> None:
        super().__init__(reason or why)
        self.why = why
        self.reason = reason


class SessionRun:
    """A session offered to this pilot, for the claim of ``run`` (None: not held here)."""

    def __init__(
        self,
        offer: Offer,
        run: JobRun | None,
        open_socket: Callable[[str, int], WebSocket],
        leaving: threading.Event,
    ) -> None:
        self.offer = offer
        self.run = run
        self._open = open_socket  # (path, largest message) -> the agent's WebSocket
        self._leaving = leaving
        self._ws: WebSocket | None = None
        self._entered: Entered | None = None
        self._input = bytearray()
        self._input_eof = False
        self.bytes_in = 0
        self.bytes_out = 0
        self._started = self._last = time.monotonic()

    @property
    def tag(self) -> str:
        o = self.offer
        return f"claim {o.claim_id} job {o.job} session {o.session_id}"

    def serve(self) -> None:
        """Open the connection, run the command, relay until the end; never raises."""
        o = self.offer
        path = f"/pilot/v1/claims/{o.claim_id}/session/{o.session_id}"
        try:
            self._ws = self._open(path, o.frame_bytes + 1)
        except (WebSocketError, OSError, PilotageError, ValueError) as exc:
            log.warning("%s: the session could not be opened (%s)", self.tag, exc)
            return
        try:
            self._serve(self._ws)
        except Exception:  # one session's bug must not take the agent down
            log.exception("%s: unexpected error", self.tag)
        finally:
            if self._entered is not None:
                self._entered.end()
                self._entered.close()
            self._ws.close()

    def _serve(self, ws: WebSocket) -> None:
        o = self.offer
        try:
            problem = self._job_problem()
            if problem is not None:
                raise _Over("not-running", problem)
            assert self.run is not None  # else a problem above
            try:
                self._entered = enter(
                    self.run, list(o.command or ()), tty=o.tty, rows=o.rows, cols=o.cols,
                    term=o.term,
                )  # fmt: skip
            except CannotEnter as exc:
                raise _Over(exc.why, exc.message) from None
            except OSError as exc:  # no pty, no descriptor left: the node's state
                raise _Over("agent", f"the session cannot be set up on the node ({exc})") from None
            what = "a command" if o.command else "a shell"
            log.info("%s: %s started for the user", self.tag, what)
            self._relay(ws, self._entered)
        except WebSocketError as exc:
            log.info("%s: the connection to the server broke (%s)", self.tag, exc)
        except _Over as over:
            log.info("%s: ended (%s: %s; %d bytes in, %d out)", self.tag, over.why, over.reason,
                     self.bytes_in, self.bytes_out)  # fmt: skip
            if over.reason is not None:
                with contextlib.suppress(WebSocketError):
                    ws.send_json({"type": "end", "why": over.why, "reason": over.reason})

    def _job_problem(self) -> str | None:
        """Why the job cannot be entered now, or None."""
        run, job = self.run, self.offer.job
        if run is None:
            return f"job {job} does not run on this pilot any more"
        if not run.alive:
            return f"job {job} is being stopped; the session is closed"
        if not run.job_running():
            return f"job {job} is not running on its node (not started yet, or ended)"
        return None

    # -- the loop ----------------------------------------------------------------------

    def _relay(self, ws: WebSocket, entered: Entered) -> None:
        pidfd = os.pidfd_open(entered.pid)
        try:
            while True:
                self._check()
                readers = [ws.fileno(), pidfd, *entered.outputs]
                if len(self._input) >= _MAX_PENDING_INPUT:
                    readers.remove(ws.fileno())  # the command is not reading: neither do we
                writers = [entered.stdin] if self._input and entered.stdin is not None else []
                timeout = 0 if ws.pending() else _TICK_S
                readable, writable, _ = select.select(readers, writers, [], timeout)
                if ws.pending() or ws.fileno() in readable:
                    self._from_user(ws, entered)
                for fd in [f for f in readable if f in entered.outputs]:
                    self._from_command(ws, entered, fd)
                if writable:
                    self._to_command(entered)
                if pidfd in readable:
                    self._finish(ws, entered)
                    return
        finally:
            os.close(pidfd)

    def _check(self) -> None:
        """End the session at a limit, when the job ends, or when the agent leaves."""
        o, now = self.offer, time.monotonic()
        if self._leaving.is_set():
            raise _Over("agent", "the pilot is leaving; the session is closed")
        problem = self._job_problem()
        if problem is not None:
            raise _Over("job-ended", f"job {o.job} ended; the session is closed")
        if now - self._started > o.max_s:
            raise _Over("limit", f"the session reached its time limit of {o.max_s:g} s")
        if now - self._last > o.idle_s:
            raise _Over("limit", f"the session was idle for {o.idle_s:g} s")

    def _from_user(self, ws: WebSocket, entered: Entered) -> None:
        message = ws.receive()
        if message is None:
            raise _Over("closed", None)
        if message.text:
            self._control(message, entered)
            return
        if message.data[:1] != b"\x00":
            raise _Over("bad-input", "a frame from the user is not stdin")
        data = message.data[1:]
        self.bytes_in += len(data)
        if self.bytes_in > self.offer.max_bytes:
            raise _Over("limit", f"the input reached the session's limit of "
                        f"{self.offer.max_bytes} bytes")  # fmt: skip
        self._last = time.monotonic()
        if entered.stdin is not None and not self._input_eof:
            self._input += data

    def _control(self, message: Message, entered: Entered) -> None:
        try:
            body = json.loads(message.data)
        except ValueError:
            body = None
        kind = body.get("type") if isinstance(body, dict) else None
        if kind == "resize" and isinstance(body, dict):
            rows, cols = body.get("rows"), body.get("cols")
            if isinstance(rows, int) and isinstance(cols, int):
                entered.resize(min(max(rows, 1), 1000), min(max(cols, 1), 1000))
        elif kind == "eof":
            self._input_eof = True
            if entered.master is not None:
                self._input += _EOF_CHAR  # the terminal's end-of-file, at a line's start
            elif not self._input:
                self._close_stdin(entered)

    def _to_command(self, entered: Entered) -> None:
        assert entered.stdin is not None
        try:
            written = os.write(entered.stdin, self._input[:65536])
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.EIO):
                raise
            self._input.clear()  # the command stopped reading: its input is dropped
            self._close_stdin(entered)
            return
        del self._input[:written]
        if not self._input and self._input_eof and entered.master is None:
            self._close_stdin(entered)

    @staticmethod
    def _close_stdin(entered: Entered) -> None:
        if entered.stdin is not None and entered.stdin != entered.master:
            os.close(entered.stdin)
            entered.stdin = None

    def _from_command(self, ws: WebSocket, entered: Entered, fd: int) -> None:
        room = self.offer.max_bytes - self.bytes_out
        try:
            data = os.read(fd, max(1, min(self.offer.frame_bytes, room)))
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: the terminal's last holder is gone
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:
            entered.outputs.pop(fd)
            if fd != entered.master:
                os.close(fd)
            return
        if len(data) > room:
            raise _Over("limit", f"the output reached the session's limit of "
                        f"{self.offer.max_bytes} bytes")  # fmt: skip
        ws.send_binary(bytes([entered.outputs[fd]]) + data)
        self.bytes_out += len(data)
        self._last = time.monotonic()
        if self.bytes_out >= self.offer.max_bytes:
            raise _Over("limit", f"the output reached the session's limit of "
                        f"{self.offer.max_bytes} bytes")  # fmt: skip

    def _finish(self, ws: WebSocket, entered: Entered) -> None:
        """The child exited: send what its output still holds, then its exit."""
        deadline = time.monotonic() + 2.0
        while entered.outputs and time.monotonic() < deadline:
            readable, _, _ = select.select(list(entered.outputs), [], [], 0.05)
            if not readable:
                break
            for fd in readable:
                self._from_command(ws, entered, fd)
        status = entered.end()
        entered.close()
        self._entered = None
        code, signal_number = None, None
        if status is not None and os.WIFEXITED(status):
            code = os.WEXITSTATUS(status)
        elif status is not None and os.WIFSIGNALED(status):
            signal_number = os.WTERMSIG(status)
            code = 128 + signal_number
        log.info("%s: the command exited (%s; %d bytes in, %d out)", self.tag, code,
                 self.bytes_in, self.bytes_out)  # fmt: skip
        ws.send_json({"type": "exit", "code": code, "signal": signal_number})
