"""A real SMTP server for tests: it listens on 127.0.0.1 (port 0), speaks enough of
RFC 5321 for smtplib, and keeps every message it accepts."""

from __future__ import annotations

import email
import email.policy
import socketserver
import threading
import time
from email.message import EmailMessage
from typing import Any


class _Session(socketserver.StreamRequestHandler):
    server: _Server

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self.reply("220 sink ESMTP")
        sender, recipients = "", []
        while line := self.rfile.readline(65536):
            verb = line.decode(errors="replace").strip().upper()
            if verb.startswith(("EHLO", "HELO")):
                self.reply("250 sink")
            elif verb.startswith("MAIL FROM:"):
                sender, recipients = line.decode().strip()[10:], []
                self.reply("250 OK")
            elif verb.startswith("RCPT TO:"):
                recipients.append(line.decode().strip()[8:])
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 end with <CRLF>.<CRLF>")
                self.server.keep(sender, recipients, self._data())
                self.reply("250 OK")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:  # RSET, NOOP
                self.reply("250 OK")

    def _data(self) -> bytes:
        lines = []
        while (line := self.rfile.readline(65536)) not in (b".\r\n", b""):
            lines.append(line[1:] if line.startswith(b"..") else line)
        return b"".join(lines)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Session)
        self.messages: list[tuple[str, list[str], EmailMessage]] = []
        self.changed = threading.Condition()

    def keep(self, sender: str, recipients: list[str], data: bytes) -> None:
        message: Any = email.message_from_bytes(data, policy=email.policy.default)
        with self.changed:
            self.messages.append((sender, recipients, message))
            self.changed.notify_all()


class SmtpSink:
    """Start with :meth:`start`; ``relay`` is its ``host:port``."""

    def __init__(self) -> None:
        self._server = _Server()
        self.relay = f"127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> SmtpSink:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, count: int, timeout_s: float = 60) -> list[EmailMessage]:
        """The messages, once there are at least ``count`` (AssertionError after the timeout)."""
        deadline = time.monotonic() + timeout_s
        with self._server.changed:
            while len(self._server.messages) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{len(self._server.messages)} of {count} mails arrived"
                self._server.changed.wait(left)
            return [m for _, _, m in self._server.messages]

    @property
    def envelopes(self) -> list[tuple[str, list[str]]]:
        return [(s, r) for s, r, _ in self._server.messages]
