"""A small WebSocket client (RFC 6455), standard library only, for exec-in-job sessions.

The agent opens every connection itself (pilots make only outbound connections), so a
user's session reaches the node over a WebSocket the agent opens to the server
(pilot/session.py, docs/pilot-protocol.md "Sessions"). This is the client half of the
protocol and nothing more: the opening handshake over TLS (through the site's HTTP proxy
with ``CONNECT`` when it has one), masked frames out, unmasked frames in, text, binary,
ping (answered with pong), pong and close, fragmented messages reassembled. No extension
is offered, so no frame may set a reserved bit. Every incoming frame and message is
bounded (``max_message_bytes``): a larger one closes the connection with 1009.

One thread uses a connection at a time. :meth:`WebSocket.receive` reads one message; call
it when the socket is readable (``select`` on :meth:`WebSocket.fileno`) or when
:meth:`WebSocket.pending` says bytes are already buffered.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import hashlib
import json
import os
import socket
import ssl
import struct
import urllib.parse
from dataclasses import dataclass
from typing import NoReturn

#: RFC 6455 §1.3: the key's answer is SHA-1(key + this), base64.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: The most a handshake answer (headers and an error body) may take.
_MAX_ANSWER_BYTES = 64 * 1024
#: How long a closing handshake may take before the socket is simply closed.
_CLOSE_WAIT_S = 5.0


class Opcode(enum.IntEnum):
    """Frame types (RFC 6455 §5.2)."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class WebSocketError(Exception):
    """The connection broke or the peer broke the protocol; the connection is closed."""


class Refused(WebSocketError):
    """The server answered the opening handshake with an HTTP error instead of 101."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Message:
    """One whole message: text (``data`` is its UTF-8) or binary."""

    text: bool
    data: bytes


def _mask(data: bytes, key: bytes) -> bytes:
    """``data`` XOR the 4-byte ``key`` repeated (one big-integer XOR, not a byte loop)."""
    if not data:
        return b""
    size = len(data)
    stream = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(size, "big")


def encode_frame(opcode: Opcode, payload: bytes, key: bytes | None = None) -> bytes:
    """One final, masked client frame (``key``: the masking key, random by default)."""
    key = os.urandom(4) if key is None else key
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return header + key + _mask(payload, key)


class WebSocket:
    """An open client connection (after a successful :func:`connect`)."""

    def __init__(self, sock: socket.socket, buffered: bytes, max_message_bytes: int) -> None:
        self._sock = sock
        self._buffer = bytearray(buffered)
        self.max_message_bytes = max_message_bytes
        self.closed = False
        self._close_sent = False
        #: The close code the peer sent (1005 when it sent none), once it did.
        self.close_code: int | None = None

    def fileno(self) -> int:
        """The socket's descriptor, for ``select``."""
        return self._sock.fileno()

    def pending(self) -> bool:
        """Whether bytes are already buffered (here or in TLS): ``select`` would not say."""
        tls = isinstance(self._sock, ssl.SSLSocket) and self._sock.pending() > 0
        return bool(self._buffer) or tls

    # -- sending -------------------------------------------------------------------

    def send_text(self, text: str) -> None:
        self._send(Opcode.TEXT, text.encode())

    def send_json(self, body: dict[str, object]) -> None:
        self.send_text(json.dumps(body))

    def send_binary(self, data: bytes) -> None:
        self._send(Opcode.BINARY, data)

    def ping(self, data: bytes = b"") -> None:
        self._send(Opcode.PING, data[:125])

    def _send(self, opcode: Opcode, payload: bytes) -> None:
        if self.closed:
            raise WebSocketError("the connection is closed")
        try:
            self._sock.sendall(encode_frame(opcode, payload))
        except OSError as exc:
            self._abort()
            raise WebSocketError(f"the connection broke while sending ({exc})") from None

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame, wait briefly for the peer's, and close the socket."""
        if self.closed:
            return
        try:
            if not self._close_sent:
                self._close_sent = True
                payload = struct.pack("!H", code) + reason.encode()[:120]
                self._sock.sendall(encode_frame(Opcode.CLOSE, payload))
            self._sock.settimeout(_CLOSE_WAIT_S)
            while self.close_code is None:
                self._frame()
        except (OSError, WebSocketError):
            pass
        self._abort()

    def _abort(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self._sock.close()

    # -- receiving -----------------------------------------------------------------

    def receive(self) -> Message | None:
        """The next message; None once the peer closed (our close frame answered)."""
        parts: list[bytes] = []
        size = 0
        text = False
        while True:
            if self.closed:
                return None
            frame = self._frame()
            if frame is None:
                continue  # a control frame, handled
            opcode, fin, payload = frame
            if opcode == Opcode.CONTINUATION and not parts:
                self._fail(1002, "a continuation frame with no message to continue")
            if opcode != Opcode.CONTINUATION and parts:
                self._fail(1002, "a new message began inside a fragmented one")
            if opcode != Opcode.CONTINUATION:
                text = opcode == Opcode.TEXT
            size += len(payload)
            if size > self.max_message_bytes:
                self._fail(1009, f"a message is larger than {self.max_message_bytes} bytes")
            parts.append(payload)
            if fin:
                data = b"".join(parts)
                if text:
                    try:
                        data.decode()
                    except UnicodeDecodeError:
                        self._fail(1007, "a text message is not UTF-8")
                return Message(text, data)

    def _frame(self) -> tuple[Opcode, bool, bytes] | None:
        """Read one frame; answer and swallow control frames (None then)."""
        first, second = self._read(2)
        fin, reserved, code = bool(first & 0x80), first & 0x70, first & 0x0F
        if reserved:
            self._fail(1002, "a frame sets a reserved bit (no extension was agreed)")
        if second & 0x80:
            self._fail(1002, "a server frame is masked")
        try:
            opcode = Opcode(code)
        except ValueError:
            self._fail(1002, f"unknown opcode {code}")
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", self._read(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", self._read(8))
        if opcode >= Opcode.CLOSE and (size > 125 or not fin):
            self._fail(1002, "a control frame is fragmented or longer than 125 bytes")
        if size > self.max_message_bytes:
            self._fail(1009, f"a frame is larger than {self.max_message_bytes} bytes")
        payload = self._read(size)
        if opcode == Opcode.PING:
            self._send(Opcode.PONG, payload)
            return None
        if opcode == Opcode.PONG:
            return None
        if opcode == Opcode.CLOSE:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            if not self._close_sent:
                self._close_sent = True
                # Echo it: the closing handshake (RFC 6455 §5.5.1).
                with contextlib.suppress(OSError):
                    self._sock.sendall(encode_frame(Opcode.CLOSE, payload[:2]))
            self._abort()
            return None
        return opcode, fin, payload

    def _read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            try:
                chunk = self._sock.recv(max(65536, size - len(self._buffer)))
            except OSError as exc:
                self._abort()
                raise WebSocketError(f"the connection broke while reading ({exc})") from None
            if not chunk:
                self._abort()
                raise WebSocketError("the server closed the connection without a close frame")
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def _fail(self, code: int, why: str) -> NoReturn:
        """Send a close with ``code``, drop the connection (what follows cannot be read
        any more) and raise: the peer broke the protocol or a bound."""
        if not self._close_sent and not self.closed:
            self._close_sent = True
            with contextlib.suppress(OSError):
                payload = struct.pack("!H", code) + why.encode()[:120]
                self._sock.sendall(encode_frame(Opcode.CLOSE, payload))
        self._abort()
        raise WebSocketError(f"the server broke the WebSocket protocol: {why}")


def connect(
    host: str,
    port: int,
    path: str,
    *,
    context: ssl.SSLContext,
    headers: dict[str, str],
    timeout_s: float,
    max_message_bytes: int,
    proxy: str | None = None,
) -> WebSocket:
    """Open ``wss://host:port/path`` with ``headers``; :class:`Refused` on an HTTP error.

    ``proxy`` (``http://[user:password@]host[:port]``) is tunnelled through with
    ``CONNECT``, as the agent's HTTPS client does.
    """
    for name, value in headers.items():
        if any(c in name + value for c in "\r\n\0"):
            raise ValueError(f"the header {name!r} has a line break or NUL")
    raw = _open(host, port, proxy, timeout_s)
    sock: socket.socket = raw
    try:
        sock = context.wrap_socket(raw, server_hostname=host)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status, answer, rest = _read_answer(sock)
        if status != 101:
            raise Refused(status, _error_message(answer, rest, sock))
        expected = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()  # noqa: S324
        if (
            answer.get("upgrade", "").lower() != "websocket"
            or answer.get("sec-websocket-accept") != expected
        ):
            raise WebSocketError("the server's handshake answer is not a WebSocket upgrade")
        if answer.get("sec-websocket-extensions"):
            raise WebSocketError("the server agreed to an extension that was not offered")
    except BaseException:
        sock.close()  # the TLS socket took over the plain one's descriptor
        raw.close()
        raise
    return WebSocket(sock, rest, max_message_bytes)


def _open(host: str, port: int, proxy: str | None, timeout_s: float) -> socket.socket:
    """A TCP connection to ``host:port``, or to the proxy and tunnelled through it."""
    if not proxy:
        return socket.create_connection((host, port), timeout=timeout_s)
    url = urllib.parse.urlsplit(proxy)
    raw = socket.create_connection((url.hostname or "", url.port or 3128), timeout=timeout_s)
    try:
        lines = [f"CONNECT {host}:{port} HTTP/1.1", f"Host: {host}:{port}"]
        if url.username:
            secret = (
                urllib.parse.unquote(url.username) + ":" + urllib.parse.unquote(url.password or "")
            )
            lines.append("Proxy-Authorization: Basic " + base64.b64encode(secret.encode()).decode())
        raw.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status, _headers, rest = _read_answer(raw)
        if status != 200 or rest:
            raise WebSocketError(f"the proxy {url.hostname} refused the tunnel (status {status})")
    except BaseException:
        raw.close()
        raise
    return raw


def _read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read an HTTP answer's head; its status, headers (lower-case names) and what followed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise WebSocketError("the connection closed during the handshake")
        data += chunk
        if len(data) > _MAX_ANSWER_BYTES:
            raise WebSocketError("the handshake answer is too long")
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise WebSocketError(f"the handshake answer is not HTTP: {status_line[:80]!r}")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers, rest


def _error_message(headers: dict[str, str], body: bytes, sock: socket.socket) -> str:
    """The one-sentence message of an error answer (JSON ``message``), read to its length."""
    length = headers.get("content-length", "")
    want = min(int(length), _MAX_ANSWER_BYTES) if length.isdigit() else 0
    try:
        while len(body) < want and (chunk := sock.recv(want - len(body))):
            body += chunk
    except OSError:
        pass
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
            return str(parsed["message"])
    except ValueError:
        pass
    return body.decode(errors="replace")[:200] or "the server refused the WebSocket"
