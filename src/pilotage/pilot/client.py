"""The agent's HTTPS JSON client: keep-alive, pool CA only, bearer token from a file.

Standard library only. Connections are kept alive in a small pool shared by every
thread: a request takes an idle one (or opens one when none is idle) and gives it back
once its answer is read, so the heartbeat, the requests for work and every claim's
calls talk to the server at once without sharing a socket, and without a TLS handshake
per job. A request may be ended from another thread or a signal handler
(:class:`Cancel`): a request for work held open by the server does not hold up the
agent's leaving. After registration every request carries the pilot's secret
(:meth:`Client.set_pilot_secret`), so every part of the agent proves it without knowing
it. Answers are turned into data or into the exceptions of :mod:`pilotage.errors`, chosen by
HTTP status (``BY_HTTP_STATUS``); a connection that cannot be made raises
:class:`~pilotage.errors.Unreachable`. Both :class:`~pilotage.errors.Transient` kinds are
what :func:`retrying` retries.

Several servers sharing one database may be named, comma-separated
(``https://a:9618,https://b:9618``): the client uses one at a time, and moves to the
next when a connection to the one in use cannot be made (at once, in the same call:
nothing was sent) or breaks (the call fails as Unreachable and is retried by its caller,
on the next server). Every thread follows the move.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import os
import random
import socket
import ssl
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from pilotage import __version__
from pilotage.errors import (
    BY_HTTP_STATUS,
    OperatorError,
    PilotageError,
    Transient,
    Unreachable,
    UserError,
)

from .wire import PILOT_SECRET_HEADER

if TYPE_CHECKING:
    from .websocket import WebSocket

log = logging.getLogger("pilotage.pilot")
T = TypeVar("T")

#: Failures of a kept-alive connection the server closed while it was idle (its
#: keep-alive timeout, a restart): the request is sent again, once, on a fresh connection,
#: without a word in the log. TLS reports such a close as an EOF "in violation of
#: protocol" (no close_notify) or as a clean close, depending on who wrote last.
_STALE = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
)


#: Idle connections kept for later requests, at most.
MAX_IDLE = 16


class Cancelled(PilotageError):
    """A request was ended by the agent itself (:meth:`Cancel.cancel`): not a failure
    of the server, never retried."""


class Cancel:
    """Ends the request it is given to (``request(..., cancel=)``) from another thread
    or a signal handler: its socket is shut down, and the request raises
    :class:`Cancelled` (or, not sent yet, is not sent). Takes no lock: a signal handler
    may call :meth:`cancel`."""

    def __init__(self) -> None:
        self.cancelled = False
        self._sock: socket.socket | None = None

    def cancel(self) -> None:
        self.cancelled = True
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Token:
    """The bearer token, re-read whenever its file changes (a renewed token is picked up)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._value = ""

    def get(self) -> str:
        with self._lock:
            try:
                st = os.stat(self._path)
                stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
                if stamp != self._stamp:
                    self._value = self._path.read_text().strip()
                    self._stamp = stamp
            except OSError as exc:
                if not self._value:
                    raise PilotageError(
                        f"the pilot token file {self._path} cannot be read ({exc.strerror})"
                    ) from None
            return self._value


@dataclass(frozen=True)
class Server:
    """One server the agent may talk to, and the HTTP proxy on the way to it."""

    host: str
    port: int
    prefix: str
    proxy: str | None

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}{self.prefix}"


def parse_servers(urls: str, proxy: str | None = None) -> list[Server]:
    """``https://host[:port][/prefix]``, one or several separated by commas."""
    servers = []
    for text in (u.strip() for u in urls.split(",")):
        url = urllib.parse.urlsplit(text)
        if url.scheme != "https" or not url.hostname:
            raise PilotageError(f"the server URL {text!r} must be https://host[:port]")
        host = url.hostname
        chosen = proxy if proxy is not None else _proxy_from_environment(host)
        servers.append(Server(host, url.port or 443, url.path.rstrip("/"), chosen))
    return servers


class Client:
    """A JSON client for the pool's server(s) (``https://host[:port][/prefix]``, or
    several comma-separated: see the module's description)."""

    def __init__(
        self,
        server_url: str,
        *,
        ca_file: Path,
        token_file: Path,
        timeout_s: float = 30.0,
        proxy: str | None = None,
    ) -> None:
        self.servers = parse_servers(server_url, proxy)
        self._current = 0  # the index of the server in use, for every thread
        self._moving = threading.Lock()
        self._timeout_s = timeout_s
        self._token = _Token(token_file)
        self._ca_file = ca_file
        try:
            self._context = ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise OperatorError(f"the CA file {ca_file} cannot be loaded ({exc})") from None
        self._context.minimum_version = ssl.TLSVersion.TLSv1_2
        # Invariant: an idle connection has read its last answer whole; the index is its
        # server's. Taken and given back under _pool_lock, newest first.
        self._idle: list[tuple[http.client.HTTPSConnection, int]] = []
        self._pool_lock = threading.Lock()
        # In memory only: never written to a file, an argument or a log line.
        self._pilot_secret = ""

    def set_pilot_secret(self, secret: str) -> None:
        """Send ``secret`` (the registration's) with every later request."""
        self._pilot_secret = secret

    @property
    def server(self) -> Server:
        """The server in use."""
        return self.servers[self._current]

    def _move_on(self, index: int, why: str) -> bool:
        """Leave the server ``index`` for the next one (if no other thread did already);
        whether there is another server at all."""
        if len(self.servers) == 1:
            return False
        with self._moving:
            if self._current == index:
                self._current = (index + 1) % len(self.servers)
                log.warning(
                    "server %s: %s; using %s now", self.servers[index].url, why, self.server.url
                )
        return True

    def _connection(self, fresh: bool = False) -> tuple[http.client.HTTPSConnection, bool, int]:
        """An idle connection to the server in use (a new one if none, or ``fresh``),
        whether it was used before (it may be stale), and the index of its server.
        Idle connections to a server the client has left are closed."""
        index = self._current
        with self._pool_lock:
            while self._idle and not fresh:
                conn, its = self._idle.pop()
                if its == index:
                    return conn, True, index
                conn.close()
        server = self.servers[index]
        if server.proxy:
            proxy = urllib.parse.urlsplit(server.proxy)
            conn = http.client.HTTPSConnection(
                proxy.hostname or "",
                proxy.port or 3128,
                timeout=self._timeout_s,
                context=self._context,
            )
            headers = {}
            if proxy.username:
                credentials = f"{urllib.parse.unquote(proxy.username)}:"
                credentials += urllib.parse.unquote(proxy.password or "")
                headers["Proxy-Authorization"] = (
                    "Basic " + base64.b64encode(credentials.encode()).decode()
                )
            conn.set_tunnel(server.host, server.port, headers)
        else:
            conn = http.client.HTTPSConnection(
                server.host, server.port, timeout=self._timeout_s, context=self._context
            )
        return conn, False, index

    def _give_back(self, conn: http.client.HTTPSConnection, index: int) -> None:
        """Keep a connection whose answer was read whole for the next request."""
        with self._pool_lock:
            if conn.sock is not None and index == self._current and len(self._idle) < MAX_IDLE:
                self._idle.append((conn, index))
                return
        conn.close()

    def close(self) -> None:
        """Close the idle connections (a later request opens a new one)."""
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for conn, _index in idle:
            conn.close()

    def _send(
        self,
        method: str,
        path: str,
        body: bytes | IO[bytes] | None,
        headers: dict[str, str],
        cancel: Cancel | None = None,
    ) -> _Exchange:
        """Send one request; retry once on a fresh connection if a reused one was stale."""
        headers = {
            "Authorization": f"Bearer {self._token.get()}",
            "User-Agent": f"pilotage-agent/{__version__}",
            **headers,
        }
        if self._pilot_secret:
            headers[PILOT_SECRET_HEADER] = self._pilot_secret
        start = _position(body)
        tried: set[int] = set()
        attempt = 0
        while True:
            attempt += 1
            conn, reused, index = self._connection(fresh=attempt > 1)
            if not reused:
                tried.add(index)
                try:
                    conn.connect()  # nothing is sent yet: another server may take the call
                except ssl.SSLCertVerificationError as exc:  # not transient: retrying is vain
                    conn.close()
                    raise self._untrusted(exc) from None
                except OSError as exc:
                    conn.close()
                    moved = self._move_on(index, f"cannot connect ({exc})")
                    if moved and self._current not in tried:
                        continue
                    raise Unreachable(
                        f"cannot reach the server for {method} {path} ({exc})"
                    ) from exc
            if cancel is not None:
                cancel._sock = conn.sock
                if cancel.cancelled:  # before anything was sent
                    self._give_back(conn, index)
                    raise Cancelled(f"{method} {path}: cancelled")
            try:
                conn.request(method, self.servers[index].prefix + path, body=body, headers=headers)
                return _Exchange(conn, conn.getresponse(), index)
            except _STALE as exc:
                conn.close()
                if cancel is not None and cancel.cancelled:
                    raise Cancelled(f"{method} {path}: cancelled") from None
                self.close()  # its idle companions are likely stale too
                if reused and attempt == 1 and _rewind(body, start):
                    log.debug(
                        "%s %s: kept-alive connection closed (%r); sent again", method, path, exc
                    )
                    continue
                self._move_on(index, "it closed the connection")
                raise Unreachable(
                    f"the server closed the connection during {method} {path}"
                ) from exc
            except ssl.SSLCertVerificationError as exc:
                conn.close()
                raise self._untrusted(exc) from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if cancel is not None and cancel.cancelled:
                    raise Cancelled(f"{method} {path}: cancelled") from None
                self._move_on(index, f"the call failed ({exc})")
                raise Unreachable(f"cannot reach the server for {method} {path} ({exc})") from exc

    def _untrusted(self, exc: ssl.SSLCertVerificationError) -> OperatorError:
        return OperatorError(
            f"the server's certificate is not trusted by {self._ca_file} ({exc.verify_message})"
        )

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        cancel: Cancel | None = None,
    ) -> Any:
        """Send a JSON request; return the decoded answer (``None`` for 204).

        With ``cancel``, the request may be ended from another thread (:class:`Cancel`).
        """
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        exchange = self._send(method, path, data, headers, cancel)
        try:
            payload = self._read(exchange, method, path)
        except Unreachable:
            if cancel is not None and cancel.cancelled:
                raise Cancelled(f"{method} {path}: cancelled") from None
            raise
        finally:
            if cancel is not None:
                cancel._sock = None
        response = exchange.response
        _raise_for_status(response, payload, method, path)
        if response.status == 204 or not payload:
            return None
        try:
            return json.loads(payload)
        except ValueError:
            raise PilotageError(f"the server's answer to {method} {path} is not JSON") from None

    def vacate(self, claim_id: str, body: dict[str, Any]) -> str:
        """Give a live claim back unfinished (``POST .../vacate``, a ``GiveBack``'s wire
        form); the job's state after it (``IDLE``, or ``HELD`` after its last attempt)."""
        answer = self.request("POST", f"/pilot/v1/claims/{claim_id}/vacate", body)
        state = answer.get("job_state") if isinstance(answer, dict) else None
        return state if isinstance(state, str) else "unknown"

    def websocket(self, path: str, *, max_message_bytes: int) -> WebSocket:
        """Open a WebSocket to ``path`` as every call is made: the pool CA, the site's
        proxy, the token and the pilot secret (an exec-in-job session, pilot/session.py).
        A refused handshake raises the error its HTTP status names."""
        from .websocket import Refused, connect

        headers = {
            "Authorization": f"Bearer {self._token.get()}",
            "User-Agent": f"pilotage-agent/{__version__}",
        }
        if self._pilot_secret:
            headers[PILOT_SECRET_HEADER] = self._pilot_secret
        try:
            server = self.server
            return connect(
                server.host, server.port, server.prefix + path, context=self._context,
                headers=headers, timeout_s=self._timeout_s, proxy=server.proxy,
                max_message_bytes=max_message_bytes,
            )  # fmt: skip
        except Refused as exc:
            cls = BY_HTTP_STATUS.get(exc.status) or (Transient if exc.status >= 500 else UserError)
            raise cls(f"WebSocket {path}: {exc.status} {exc.message}") from None

    def put_file(self, path: str, file: IO[bytes], size: int, content_type: str) -> None:
        """Upload ``size`` bytes of ``file`` (from its start) as the body of a PUT."""
        file.seek(0)
        headers = {"Content-Type": content_type, "Content-Length": str(size)}
        exchange = self._send("PUT", path, file, headers)
        payload = self._read(exchange, "PUT", path)
        _raise_for_status(exchange.response, payload, "PUT", path)

    @contextmanager
    def stream(self, path: str) -> Iterator[http.client.HTTPResponse]:
        """GET ``path`` and yield the response to read as a stream."""
        exchange = self._send("GET", path, None, {})
        response = exchange.response
        if response.status >= 300:
            payload = self._read(exchange, "GET", path)
            _raise_for_status(response, payload, "GET", path)
        try:
            yield response
        except BaseException:
            exchange.conn.close()  # the body may be half read: it cannot be reused
            raise
        try:
            if response.read(1):
                exchange.conn.close()
            else:
                self._give_back(exchange.conn, exchange.index)
        except (OSError, http.client.HTTPException):
            exchange.conn.close()

    def _read(self, exchange: _Exchange, method: str, path: str) -> bytes:
        """The whole answer; its connection is then kept for the next request."""
        try:
            payload = exchange.response.read()
        except (OSError, http.client.HTTPException) as exc:
            exchange.conn.close()
            raise Unreachable(f"the answer to {method} {path} was cut ({exc})") from exc
        self._give_back(exchange.conn, exchange.index)
        return payload


@dataclass(frozen=True)
class _Exchange:
    """A request's answer, with the connection it came on and that connection's server."""

    conn: http.client.HTTPSConnection
    response: http.client.HTTPResponse
    index: int


def _position(body: bytes | IO[bytes] | None) -> int | None:
    """Where a file body starts (to send it again), or None if it cannot be rewound."""
    if not hasattr(body, "read"):
        return 0
    try:
        return body.tell()  # type: ignore[union-attr]
    except (OSError, AttributeError, ValueError):
        return None


def _rewind(body: bytes | IO[bytes] | None, start: int | None) -> bool:
    """Whether ``body`` can be sent again (bytes, or a file rewound to ``start``)."""
    if not hasattr(body, "read"):
        return True
    if start is None:
        return False
    try:
        body.seek(start)  # type: ignore[union-attr]
    except (OSError, AttributeError, ValueError):
        return False
    return True


def _raise_for_status(
    response: http.client.HTTPResponse, payload: bytes, method: str, path: str
) -> None:
    """Turn an error answer into the matching exception carrying the server's message."""
    status = response.status
    if status < 400:
        return
    message = kind = ""
    try:
        body = json.loads(payload)
        if isinstance(body, dict):
            message = str(body.get("message") or body.get("detail") or "")
            kind = str(body.get("error") or "")
    except ValueError:
        pass
    message = message or f"{response.reason or 'error'}"
    text = f"{method} {path}: {status} {message}"
    cls = BY_HTTP_STATUS.get(status) or (Transient if status >= 500 else UserError)
    if issubclass(cls, Transient):
        retry_after = response.getheader("Retry-After") or "5"
        try:
            delay = max(0.0, float(retry_after))
        except ValueError:
            delay = 5.0
        raise cls(text, retry_after_s=delay)
    error = cls(text)
    error.http_status = status
    setattr(error, _KIND, kind)
    raise error


_KIND = "server_error_class"


def error_kind(exc: PilotageError) -> str:
    """The server's ``error`` class of a refusal (``JobWithoutCredential``...), or ''."""
    return str(getattr(exc, _KIND, ""))


def _proxy_from_environment(host: str) -> str | None:
    """``HTTPS_PROXY`` / ``https_proxy`` unless ``NO_PROXY`` names the host."""
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get("https")
    if not proxy:
        return None
    for entry in proxies.get("no", "").split(","):
        entry = entry.strip().lstrip(".").lower()
        if entry == "*" or (entry and (host == entry or host.endswith("." + entry))):
            return None
    return proxy if "://" in proxy else f"http://{proxy}"


class Backoff:
    """Exponential delays with jitter, honouring a server's ``Retry-After``."""

    def __init__(self, first_s: float = 1.0, max_s: float = 60.0) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self._next_s = first_s

    def delay(self, hint_s: float | None = None) -> float:
        """The next delay: at least the hint, doubling from ``first_s`` up to ``max_s``."""
        delay = self._next_s * random.uniform(0.8, 1.2)
        self._next_s = min(self.max_s, self._next_s * 2)
        return min(self.max_s, max(delay, hint_s or 0.0))

    def reset(self) -> None:
        self._next_s = self.first_s


def retrying(
    call: Callable[[], T],
    *,
    what: str,
    wait: Callable[[float], bool],
    backoff: Backoff | None = None,
) -> T:
    """Call ``call`` until it does not raise Transient; ``wait(delay)`` true gives up.

    ``wait`` sleeps and says whether to stop trying (the claim is gone, the agent stops);
    giving up re-raises the last Transient.
    """
    backoff = backoff or Backoff()
    while True:
        try:
            return call()
        except Transient as exc:
            delay = backoff.delay(exc.retry_after_s)
            log.warning("%s failed (%s); retrying in %.0f s", what, exc.message, delay)
            if wait(delay):
                raise
