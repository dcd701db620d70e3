"""The factory's pilot-file server: plain HTTP, read-only, cache-friendly.

Plain HTTP on purpose (seed 001 §2.2): a site's Squid can cache it, and integrity does
not depend on the transport — every file is checked against the manifest whose hash the
pilot got from its batch system. Only ``GET`` and ``HEAD`` of
``/<manifest sha256>/<file name>`` are served; anything else is 404 or 405. Published
sets never change, so answers say ``Cache-Control: public, max-age=31536000,
immutable`` with an ``ETag`` of the file's SHA-256 and a ``Last-Modified``.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import re
import threading
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pilotage.factory.manifest import FILE_NAME

log = logging.getLogger("pilotage.factory.files")
_PATH = re.compile(r"^/([0-9a-f]{64})/([^/]+)$")
_CACHE_CONTROL = "public, max-age=31536000, immutable"


@lru_cache(maxsize=256)
def _etag(path: Path, mtime_ns: int, size: int) -> str:
    """The file's SHA-256 as a strong ETag (memoised by path, mtime and size)."""
    return '"' + hashlib.sha256(path.read_bytes()).hexdigest() + '"'


class _Handler(BaseHTTPRequestHandler):
    server: FileServer
    server_version = "pilotage-files"
    sys_version = ""

    def _resolve(self) -> Path | None:
        found = _PATH.match(self.path.split("?", 1)[0])
        if not found or not FILE_NAME.match(found.group(2)):
            return None
        path = self.server.root / found.group(1) / found.group(2)
        return path if path.is_file() else None

    def _answer(self, body: bool) -> None:
        path = self._resolve()
        if path is None:
            self.send_error(HTTPStatus.NOT_FOUND, "no such pilot file")
            return
        st = path.stat()
        etag = _etag(path, st.st_mtime_ns, st.st_size)
        if self.headers.get("If-None-Match") == etag:
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        data = path.read_bytes() if body else b""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(st.st_size))
        self.send_header("Cache-Control", _CACHE_CONTROL)
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        self.end_headers()
        if body:
            self.wfile.write(data)
        self.server.served.append(self.path)

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _not_allowed(self) -> None:
        self.send_error(HTTPStatus.METHOD_NOT_ALLOWED)

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed

    def log_message(self, format: str, *args: object) -> None:
        log.info("%s %s", self.address_string(), format % args)


class FileServer(ThreadingHTTPServer):
    """Serves ``root`` (published file sets) on ``host:port`` from a background thread."""

    daemon_threads = True

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), _Handler)
        self.root = root
        #: Paths answered with a body or headers, in order (for operators and tests).
        self.served: list[str] = []
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of this server."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FileServer:
        """Serve in a daemon thread; return self."""
        self._thread = threading.Thread(target=self.serve_forever, name="pilot-files", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(5)
