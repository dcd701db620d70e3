"""URL inputs against a real HTTP server on 127.0.0.1: downloaded with their checksum
checked, within the job's request_disk, retried on 5xx, refused with the URL named."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pilotage.pilot.urlinputs import fetch_all
from pilotage.pilot.wire import Claim

DATA = b"event data\n" * 1000
SHA = hashlib.sha256(DATA).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    flaky = 0

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/data.txt":
            self._send(200, DATA)
        elif path == "/flaky.txt":
            type(self).flaky += 1
            self._send(503 if type(self).flaky < 2 else 200, DATA)
        elif path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/data.txt")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/to-ftp":
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1/data.txt")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/huge":
            self.send_response(200)
            self.send_header("Content-Length", str(10 * 1024**3))
            self.end_headers()
        elif path == "/endless":  # no length: read until the limit cuts it
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            for _ in range(3 * 1024):
                self.wfile.write(b"x" * 1024)
        else:
            self._send(404, b"no such file\n")

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def claim(*urls: dict[str, Any], disk_mb: int = 1) -> Claim:
    return Claim.from_wire(
        {
            "claim_id": "c-1", "job_id": "1.0", "lease_s": 60, "lease_expires_at": 0,
            "owner": "alice", "executable": "job", "arguments": [], "environment": {},
            "input": None, "output": None, "error": None, "transfer_output_files": None,
            "request_cpus": 1, "request_memory_mb": 1, "request_disk_mb": disk_mb,
            "request_gpus": 0, "has_input_sandbox": False, "url_inputs": list(urls),
        }
    )  # fmt: skip


def never_stopped(_delay: float) -> bool:
    return False


def test_downloads_check_their_sum_and_follow_redirects(server: str, tmp_path: Path) -> None:
    got = claim(
        {"url": f"{server}/data.txt?sig=secret", "name": "data.txt", "sha256": SHA},
        {"url": f"{server}/moved", "name": "moved"},
        {"url": f"{server}/flaky.txt", "name": "flaky.txt"},  # a 503, then served
    )
    assert fetch_all(got, tmp_path, stopped=never_stopped, proxies={}) is None
    assert (tmp_path / "data.txt").read_bytes() == DATA == (tmp_path / "moved").read_bytes()
    assert (tmp_path / "flaky.txt").read_bytes() == DATA
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.txt", "flaky.txt", "moved"]


@pytest.mark.parametrize(
    ("path", "extra", "disk_mb", "reason"),
    [
        ("/data.txt", {"sha256": "0" * 64}, 1, f"its SHA-256 is {SHA}, not the 000"),
        ("/missing", {}, 1, "/missing: HTTP 404 Not Found"),
        ("/huge", {}, 1, "is 10737418240 bytes or more, past what is left of the job's"),
        ("/endless", {}, 2, "past what is left of the job's request_disk (2097152 bytes)"),
        ("/to-ftp", {}, 1, "/to-ftp redirects to a non-HTTP URL"),
    ],
)
def test_refusals_name_the_url_and_leave_nothing(
    server: str, tmp_path: Path, path: str, extra: dict[str, str], disk_mb: int, reason: str
) -> None:
    got = claim({"url": f"{server}{path}?token=abc", "name": "f", **extra}, disk_mb=disk_mb)
    failure = fetch_all(got, tmp_path, stopped=never_stopped, proxies={})
    assert failure is not None and failure.code == 10
    assert reason in failure.reason and "token=abc" not in failure.reason
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_server_is_retried_then_refused(tmp_path: Path) -> None:
    waits: list[float] = []
    got = claim({"url": "http://127.0.0.1:9/x", "name": "x"})  # discard: nothing listens

    def stopped(delay: float) -> bool:
        waits.append(delay)
        return False

    failure = fetch_all(got, tmp_path, stopped=stopped, proxies={})
    assert failure is not None and "cannot be reached" in failure.reason
    assert "(after 3 tries)" in failure.reason and waits == [2.0, 4.0]


def test_a_name_the_sandbox_has_is_refused(server: str, tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("from the sandbox")
    got = claim({"url": f"{server}/data.txt", "name": "data.txt"})
    failure = fetch_all(got, tmp_path, stopped=never_stopped, proxies={})
    assert failure is not None and "already has 'data.txt'" in failure.reason
    assert (tmp_path / "data.txt").read_text() == "from the sandbox"
