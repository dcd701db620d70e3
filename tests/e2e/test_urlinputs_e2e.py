"""URL inputs end to end: the pilot downloads them (not the submit host), checks the
checksum the submit file gives, and a URL that cannot be had holds the job saying why."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pilotage.testing import Pool


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: what is tested here is the matchmaker and the agent, not the store."""
    return f"sqlite:///{tmp_path / 'pilotage.db'}"


DATA = b"run 42 conditions\n"
SUBMIT = """executable = job.sh
transfer_input_files = $(url), local.txt
output = out.$(Process)
queue url from (
  {base}/data.txt#sha256={sha}
  {base}/gone.txt
)
"""


class _Files(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body, code = (DATA, 200) if self.path == "/data.txt" else (b"gone\n", 404)
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def files() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_the_pilot_fetches_url_inputs(pool: Pool, files: str) -> None:
    work = pool.root / "work"
    work.mkdir()
    (work / "job.sh").write_text("#!/bin/sh\ncat data.txt local.txt\n")
    (work / "job.sh").chmod(0o755)
    (work / "local.txt").write_text("from the submit host\n")
    sha = hashlib.sha256(DATA).hexdigest()
    (work / "job.sub").write_text(SUBMIT.format(base=files, sha=sha))
    submitted = pool.cli("submit", "job.sub", cwd=work)
    assert submitted.returncode == 0, submitted.stderr
    ads = pool.cli("q", "1.0", "-af", "TransferInputURLs")
    assert ads.stdout.strip() == f"{files}/data.txt", ads.stderr
    pool.pilots(1, cpus=2, memory_mb=1024)
    jobs = {j["id"]: j for j in pool.wait_jobs(["1.0", "1.1"], ("COMPLETED", "HELD"))}
    assert jobs["1.0"]["state"] == "COMPLETED", jobs
    held = jobs["1.1"]
    assert (held["state"], held["hold_code"]) == ("HELD", 10)
    assert held["hold_reason"] == f"URL input refused: {files}/gone.txt: HTTP 404 Not Found"
    fetched = pool.cli("fetch", "1.0", cwd=work)
    assert fetched.returncode == 0, fetched.stderr
    assert (work / "out.0").read_bytes() == DATA + b"from the submit host\n"
