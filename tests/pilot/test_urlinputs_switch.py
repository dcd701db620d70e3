"""URL inputs under the switch: the pilot downloads them, and the job's owner gets them
as their own files through the input staging (as root, with the real switch)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn

import pytest

from pilot.switched_pool import ALICE, AgentPool, switch_site
from pilotage.testing import Pool
from switch.switch_site import Site

pytestmark = pytest.mark.slow
DATA = b"alice's calibration\n"


class _Files(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(DATA)))
        self.end_headers()
        self.wfile.write(DATA)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: what is tested here is the agent and the switch, not the store."""
    return f"sqlite:///{tmp_path / 'pilotage.db'}"


@pytest.fixture
def site(require_service: Callable[[str, str], NoReturn]) -> Iterator[Site]:
    with switch_site(require_service) as the_site:
        yield the_site


@pytest.fixture
def files() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_url_inputs_are_the_job_owners_files(
    site: Site, make_pool: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch, files: str
) -> None:
    monkeypatch.setenv("PILOTAGE_X509_CA_DIR", str(site.pki.trust_dir))  # type: ignore[attr-defined]
    pool = AgentPool.create(site, make_pool())
    url = {"url": f"{files}/calib.txt", "name": "calib.txt",
           "sha256": hashlib.sha256(DATA).hexdigest()}  # fmt: skip
    job = pool.submit("alice", ALICE, "stat -c '%U %a' calib.txt; cat calib.txt", url_inputs=[url])
    pool.start_agent()
    try:
        done = pool.wait([job])[job]
    finally:
        pool.kill_agents()
    assert done["state"] == "COMPLETED", pool.log.read_text()
    assert pool.output(job, "alice")["out.txt"] == b"alice 600\n" + DATA
