"""The agent's WebSocket client (pilot/websocket.py) against real servers over TLS.

Framing is checked against the ``websockets`` library's server (on 127.0.0.1, port 0,
with the pool's certificate): a server that refuses unmasked client frames echoes our
messages back, sends lengths of each encoding, a fragmented message, a ping, a message
too large, and closes. A refused handshake is checked against the real pilotage server.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from pilot.conftest import Pool
from pilotage.errors import Unauthenticated
from pilotage.pilot.client import Client
from pilotage.pilot.websocket import Refused, WebSocket, WebSocketError, connect
from pilotage.statedir import StateDir

#: What the server saw: the close code it received, and whether our pong came.
seen: dict[str, object] = {}
#: Set once the handler has recorded a connection's close code.
handled = threading.Event()


def handler(connection: ServerConnection) -> None:
    """Echo; on command, send a fragmented message, ping, or a message too large."""
    try:
        for message in connection:
            if message == "fragments":
                connection.send([b"ab", b"cd", b"ef"])
            elif message == "ping":
                pong = connection.ping(b"are you there")
                seen["pong"] = pong.wait(10)
                connection.send("pinged")
            elif message == "too large":
                connection.send(b"x" * 2000)
            elif message == "bye":
                connection.close(1000, "bye")
            else:
                connection.send(message)
    except ConnectionClosed:
        pass
    seen["close_code"] = connection.close_code
    handled.set()


@pytest.fixture(scope="module")
def server(pool_state: StateDir) -> Iterator[Server]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pool_state.server_cert, pool_state.server_key)
    with serve(handler, "127.0.0.1", 0, ssl=context, compression=None) as running:
        thread = threading.Thread(target=running.serve_forever, daemon=True)
        thread.start()
        yield running
        running.shutdown()


def open_ws(server: Server, ca_file: Path, max_message_bytes: int = 1 << 20) -> WebSocket:
    port = server.socket.getsockname()[1]
    context = ssl.create_default_context(cafile=str(ca_file))
    return connect("127.0.0.1", port, "/", context=context, headers={"X-Test": "1"},
                   timeout_s=10, max_message_bytes=max_message_bytes)  # fmt: skip


def test_messages_of_every_length_encoding_come_back(server: Server, ca_file: Path) -> None:
    handled.clear()
    ws = open_ws(server, ca_file)
    ws.send_text("héllo")
    assert (m := ws.receive()) is not None and (m.text, m.data) == (True, "héllo".encode())
    for size in (0, 125, 126, 300, 65535, 65536, 200_000):
        data = bytes(i % 251 for i in range(size))
        ws.send_binary(data)
        assert (m := ws.receive()) is not None and (m.text, m.data) == (False, data), size
    ws.send_text("fragments")
    assert (m := ws.receive()) is not None and m.data == b"abcdef"
    ws.send_text("ping")  # answered with a pong while receiving
    assert (m := ws.receive()) is not None and m.data == b"pinged"
    assert seen["pong"] is True
    ws.close()
    assert ws.closed
    assert handled.wait(30)
    assert seen["close_code"] == 1000


def test_the_server_closing_ends_receive(server: Server, ca_file: Path) -> None:
    ws = open_ws(server, ca_file)
    ws.send_text("bye")
    assert ws.receive() is None
    assert (ws.closed, ws.close_code) == (True, 1000)


def test_a_message_too_large_closes_with_1009(server: Server, ca_file: Path) -> None:
    ws = open_ws(server, ca_file, max_message_bytes=1000)
    ws.send_text("too large")
    with pytest.raises(WebSocketError, match="larger than 1000 bytes"):
        ws.receive()
    assert ws.closed


def test_a_refused_handshake_names_the_server_reason(pool: Pool) -> None:
    port = int(pool.url.rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=str(pool.state.ca_cert))
    token = pool.token_file.read_text().strip()
    with pytest.raises(Refused) as refused:
        connect("127.0.0.1", port, "/pilot/v1/claims/c-x/session/s-y", context=context,
                headers={"Authorization": f"Bearer {token}"}, timeout_s=10,
                max_message_bytes=1024)  # fmt: skip
    assert refused.value.status == 401
    assert "no pilot secret" in refused.value.message
    client = Client(pool.url, ca_file=pool.state.ca_cert, token_file=pool.token_file)
    with pytest.raises(Unauthenticated, match="no pilot secret"):
        client.websocket("/pilot/v1/claims/c-x/session/s-y", max_message_bytes=1024)


def test_a_header_with_a_line_break_is_refused(server: Server, ca_file: Path) -> None:
    port = server.socket.getsockname()[1]
    with pytest.raises(ValueError, match="line break"):
        connect("127.0.0.1", port, "/", context=ssl.create_default_context(cafile=str(ca_file)),
                headers={"X-Evil": "a\r\nInjected: yes"}, timeout_s=10,
                max_message_bytes=1024)  # fmt: skip
