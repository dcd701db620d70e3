"""URL inputs through a real Squid, as a pilot behind a site's proxy fetches them: the
second pilot's copy comes from the cache and the origin serves the file once."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pilotage.pilot.urlinputs import fetch_all
from pilotage.pilot.wire import Claim

from .conftest import Squid

DATA = b"calibration constants\n" * 500


class _Origin(BaseHTTPRequestHandler):
    served: list[str] = []

    def do_GET(self) -> None:
        type(self).served.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(DATA)))
        self.send_header("Cache-Control", "max-age=600")
        self.end_headers()
        self.wfile.write(DATA)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def origin() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _claim(url: str, n: int) -> Claim:
    return Claim.from_wire(
        {
            "claim_id": f"c-{n}", "job_id": f"1.{n}", "lease_s": 60, "lease_expires_at": 0,
            "owner": "alice", "executable": "job", "arguments": [], "environment": {},
            "input": None, "output": None, "error": None, "transfer_output_files": None,
            "request_cpus": 1, "request_memory_mb": 1, "request_disk_mb": 1,
            "request_gpus": 0, "has_input_sandbox": False,
            "url_inputs": [{"url": url, "name": "calib.txt",
                            "sha256": hashlib.sha256(DATA).hexdigest()}],
        }
    )  # fmt: skip


def test_url_inputs_go_through_the_sites_squid(
    squid_proxy: Squid, origin: str, tmp_path: Path
) -> None:
    url = f"{origin}/calib-{time.monotonic_ns()}.txt"
    for n in (1, 2):
        dest = tmp_path / f"job{n}"
        dest.mkdir()
        failure = fetch_all(
            _claim(url, n), dest, stopped=lambda _d: False, proxies={"http": squid_proxy.url}
        )
        assert failure is None, failure
        assert (dest / "calib.txt").read_bytes() == DATA
    path = url.removeprefix(origin)
    assert _Origin.served.count(path) == 1  # the second copy never reached the origin
    deadline = time.monotonic() + 10
    lines: list[str] = []
    while len(lines) < 2 and time.monotonic() < deadline:
        text = squid_proxy.access_log.read_text() if squid_proxy.access_log.exists() else ""
        lines = [line for line in text.splitlines() if line.split()[6] == url]
        time.sleep(0.2)
    assert "MISS" in lines[0].split()[3] and "HIT" in lines[1].split()[3], lines
