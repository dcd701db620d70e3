"""The agent's HTTPS client against the real server: TLS, tokens, errors, proxies."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotage.errors import Denied, OperatorError, Unauthenticated, Unreachable
from pilotage.pilot.client import Backoff, Cancel, Cancelled, Client, _proxy_from_environment

from .conftest import Pool

REGISTRATION = {
    "v": 1,
    "name": "client-test",
    "site": "local",
    "host": "wn1.example.org",
    "cpus": 1,
    "memory_mb": 100,
    "disk_mb": 100,
    "gpus": 0,
    "lifetime_s": 600,
    "attrs": {},
    "start": "true",
}


def test_token_file_is_reread_when_it_changes(pool: Pool) -> None:
    client = Client(pool.url, ca_file=pool.state.ca_cert, token_file=pool.token_file)
    good = pool.token_file.read_text()
    answer = client.request("POST", "/pilot/v1/pilots", REGISTRATION)
    assert answer["pilot_id"].startswith("p-")
    pool.token_file.write_text("not-a-token-at-all\n")
    with pytest.raises(Unauthenticated) as exc:
        client.request("POST", "/pilot/v1/pilots", REGISTRATION)
    assert exc.value.message.startswith("POST /pilot/v1/pilots: 401 ")
    pool.token_file.write_text(pool.issue_token("someone", role="user") + "\n")
    with pytest.raises(Denied, match="403"):
        client.request("POST", "/pilot/v1/pilots", REGISTRATION)
    pool.token_file.write_text(good)
    assert client.request("POST", "/pilot/v1/pilots", REGISTRATION)["pilot_id"]
    client.close()


def test_a_server_certificate_from_another_ca_is_refused(pool: Pool, tmp_path: Path) -> None:
    from pilotage.statedir import StateDir

    other = StateDir(tmp_path / "other")
    other.init(pool_name="other")
    client = Client(pool.url, ca_file=other.ca_cert, token_file=pool.token_file)
    with pytest.raises(OperatorError, match="certificate is not trusted by"):
        client.request("POST", "/pilot/v1/pilots", REGISTRATION)


def test_nobody_listening_is_unreachable(ca_file: Path, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = tmp_path / "token"
    token.write_text("t")
    client = Client(f"https://127.0.0.1:{port}", ca_file=ca_file, token_file=token)
    with pytest.raises(Unreachable, match="Connection refused"):
        client.request("GET", "/pilot/v1/anything")


class ConnectRelay:
    """A minimal HTTP CONNECT proxy on 127.0.0.1 (as a site's Squid would be)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[bytes] = []
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.sockets.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(4096)
        self.requests.append(head)
        target = head.split()[1].decode()
        host, port = target.rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)))
        self.sockets.append(upstream)
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        for a, b in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def relay() -> Iterator[ConnectRelay]:
    proxy = ConnectRelay()
    yield proxy
    proxy.close()


def test_https_proxy_tunnels_and_keeps_the_connection(
    pool: Pool, relay: ConnectRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("https_proxy", f"http://user:p%40ss@127.0.0.1:{relay.port}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    client = Client(pool.url, ca_file=pool.state.ca_cert, token_file=pool.token_file)
    for _ in range(3):
        assert client.request("POST", "/pilot/v1/pilots", REGISTRATION)["pilot_id"]
    client.close()
    port = pool.url.rsplit(":", 1)[1]
    assert len(relay.requests) == 1  # three requests, one tunnel: keep-alive works
    assert relay.requests[0].startswith(f"CONNECT 127.0.0.1:{port} HTTP/1.".encode())
    assert b"Proxy-Authorization: Basic dXNlcjpwQHNz" in relay.requests[0]


def test_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert _proxy_from_environment("server.example.org") is None
    monkeypatch.setenv("HTTPS_PROXY", "squid.site:3128")
    assert _proxy_from_environment("server.example.org") == "http://squid.site:3128"
    monkeypatch.setenv("NO_PROXY", "localhost, .example.org")
    assert _proxy_from_environment("server.example.org") is None
    assert _proxy_from_environment("example.org") is None
    assert _proxy_from_environment("example.com") == "http://squid.site:3128"


def test_backoff_doubles_to_a_ceiling_and_honours_retry_after() -> None:
    backoff = Backoff(first_s=1.0, max_s=8.0)
    delays = [backoff.delay() for _ in range(6)]
    assert 0.8 <= delays[0] <= 1.2 and 1.6 <= delays[1] <= 2.4
    assert 6.4 <= delays[-1] <= 8.0  # at the ceiling, jitter only ever lowers it
    backoff.reset()
    assert backoff.delay(hint_s=5.0) == 5.0


def test_a_request_held_open_by_the_server_ends_at_once_when_cancelled(pool: Pool) -> None:
    client = Client(pool.url, ca_file=pool.state.ca_cert, token_file=pool.token_file)
    registered = client.request(
        "POST", "/pilot/v1/pilots", {**REGISTRATION, "memory_mb": 1024, "disk_mb": 1000}
    )
    client.set_pilot_secret(registered["pilot_secret"])
    path = f"/pilot/v1/pilots/{registered['pilot_id']}/claims"
    free = {"cpus": 1, "memory_mb": 1024, "disk_mb": 1000, "gpus": 0}
    # No job: the server would hold this request its whole [server] work_wait_s (20 s).
    held = {"v": 1, "free": free, "time_left_s": 500, "wait_s": 60}
    cancel = Cancel()
    outcome: dict[str, object] = {}

    def ask() -> None:
        try:
            outcome["answer"] = client.request("POST", path, held, cancel=cancel)
        except Cancelled as exc:
            outcome["cancelled"] = exc

    asking = threading.Thread(target=ask)
    asking.start()
    deadline = time.monotonic() + 30
    while cancel._sock is None and asking.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)  # until its connection is open (the request goes right after)
    cancel.cancel()
    asking.join(timeout=10)  # well before the server's 20 s
    assert not asking.is_alive() and "cancelled" in outcome, outcome

    # The client goes on; the server no longer holds the cancelled request, so a job
    # submitted now goes to the next request, not to that one.
    cluster = pool.admin.call("POST", "/api/v1/clusters")["cluster_id"]
    job = {"executable": "/bin/true", "transfer_executable": False}
    pool.admin.call("POST", f"/api/v1/clusters/{cluster}/jobs", json={"v": 1, "jobs": [job]})
    answer = client.request("POST", path, {"v": 1, "free": free, "time_left_s": 500})
    assert answer["claim"] is not None and answer["claim"]["job_id"] == f"{cluster}.0"
    client.close()
