"""The users' client: finds the server and turns its answers into results or exceptions.

A server is found, in order, from ``--server URL`` (with a bearer token from ``--token
FILE`` or ``PILOTAGE_TOKEN``), else from the state directory: its Unix socket, where the
kernel vouches for who we are.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pilotage.cli.tls_advice import certificate_problem, tls_advice
from pilotage.errors import (
    BY_HTTP_STATUS,
    BY_NAME,
    InternalError,
    PilotageError,
    Transient,
    Unreachable,
    UserError,
)

if TYPE_CHECKING:  # imported when a call is made: the CLI starts without them
    import httpx

    from pilotage.statedir import StateDir

#: Seconds to wait for an answer, and for a connection.
TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Endpoint:
    """How to reach one server."""

    url: str  # https://host:port, or http://local for the Unix socket
    socket: Path | None = None
    token: str | None = None
    ca: Path | None = None
    #: Other servers sharing the first one's database, tried in turn when it cannot be
    #: reached (``--server https://a:9618,https://b:9618``).
    others: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        return f"the Unix socket {self.socket}" if self.socket else self.url


def locate(
    state: StateDir, server: str | None, token_file: Path | None, ca: Path | None
) -> Endpoint:
    """Decide how to reach the server from flags, environment and the state directory."""
    token = None
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UserError(f"cannot read the token file {token_file}: {exc.strerror}") from None
    elif os.environ.get("PILOTAGE_TOKEN"):
        token = os.environ["PILOTAGE_TOKEN"].strip()
    if server is not None:
        urls = [u.strip().rstrip("/") for u in server.split(",") if u.strip()]
        for url in urls or [server]:
            if not url.startswith("https://"):
                raise UserError(
                    f"--server {url} must be an https:// URL (several: comma-separated)"
                )
        return Endpoint(url=urls[0], token=token, ca=ca or _ca_of(state), others=tuple(urls[1:]))
    if state.socket.exists():
        return Endpoint(url="http://local", socket=state.socket, token=token)
    if state.url_file.exists() and token is not None:
        url = state.url_file.read_text(encoding="utf-8").strip()
        return Endpoint(url=url, token=token, ca=ca or _ca_of(state))
    raise Unreachable(
        f"no server socket in {state.root}: start one with 'pilotage server', "
        "or name one with --server URL --token FILE"
    )


def _ca_of(state: StateDir) -> Path | None:
    return state.ca_cert if state.ca_cert.exists() else None


def _trusting(ca: Path) -> ssl.SSLContext:
    """A TLS context that trusts the CA certificate(s) in ``ca``, or a clear refusal."""
    try:
        return ssl.create_default_context(cafile=ca)
    except OSError as exc:  # ssl.SSLError is one: a file without a PEM certificate
        why = exc.strerror or "it holds no PEM certificate"
        raise UserError(
            f"cannot use --ca {ca} ({why}): give the pool's CA certificate, "
            "$STATE/ca/ca.crt in the server's state directory"
        ) from None


class _NotConnected(Unreachable):
    """No connection could be made: nothing was sent, another server may take the call."""


class Client:
    """JSON calls to one server (or the first of several that answers)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._connect()

    def _connect(self) -> None:
        import httpx

        endpoint = self.endpoint
        timeout = httpx.Timeout(TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        headers = {"User-Agent": "pilotage-cli"}
        if endpoint.token:
            headers["Authorization"] = f"Bearer {endpoint.token}"
        if endpoint.socket is not None:
            transport = httpx.HTTPTransport(uds=str(endpoint.socket))
            self._http = httpx.Client(
                base_url=endpoint.url, transport=transport, headers=headers, timeout=timeout
            )
        else:
            # A context, not the CA's path: httpx deprecates verify=<str>.
            verify: Any = _trusting(endpoint.ca) if endpoint.ca else True
            self._http = httpx.Client(
                base_url=endpoint.url, verify=verify, headers=headers, timeout=timeout
            )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_server(self) -> bool:
        """Move to the next server named, if any (the first could not be reached)."""
        if not self.endpoint.others:
            return False
        self._http.close()
        first, *rest = self.endpoint.others
        self.endpoint = replace(self.endpoint, url=first, others=tuple(rest))
        self._connect()
        return True

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request; return the decoded JSON answer (``None`` for 204).

        A server that cannot be connected to (nothing was sent) gives way to the next
        one named, if any."""
        while True:
            try:
                with self._errors():
                    response = self._http.request(method, path, **kwargs)
                break
            except _NotConnected:
                if not self._next_server():
                    raise
        self._raise_for(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    @contextmanager
    def stream(self, path: str) -> Iterator[httpx.Response]:
        """A streamed GET (for sandboxes)."""
        with self._errors(), self._http.stream("GET", path) as response:
            if response.status_code >= 400:
                response.read()
                self._raise_for(response)
            yield response

    def page(self, path: str, params: dict[str, Any] | None = None) -> tuple[Any, str | None]:
        """One page of a paged listing: its JSON, and the address of the next page (the
        ``Link`` header's ``rel="next"``), ``None`` after the last."""
        while True:
            try:
                with self._errors():
                    response = self._http.request("GET", path, params=params)
                break
            except _NotConnected:
                if not self._next_server():
                    raise
        self._raise_for(response)
        following = response.links.get("next", {}).get("url")
        return response.json(), following

    def lines(self, path: str, params: dict[str, Any] | None = None) -> Iterator[str]:
        """The lines of an NDJSON listing, as they arrive. An error line (the server met
        a fault after it had started to answer) raises :class:`Transient`."""
        headers = {"Accept": "application/x-ndjson"}
        started = False
        while True:
            try:
                with (
                    self._errors(),
                    self._http.stream("GET", path, params=params, headers=headers) as response,
                ):
                    started = True
                    if response.status_code >= 400:
                        response.read()
                        self._raise_for(response)
                    for line in response.iter_lines():
                        if line.startswith('{"error"'):
                            raise Transient(json.loads(line).get("message") or line[:200])
                        if line:
                            yield line
                return
            except _NotConnected:
                # Nothing was received yet: another server named may answer instead.
                if started or not self._next_server():
                    raise

    def upload(self, path: str, body: IO[bytes]) -> Any:
        """POST a tar body."""
        return self.call("POST", path, content=body, headers={"Content-Type": "application/x-tar"})

    @contextmanager
    def _errors(self) -> Iterator[None]:
        import httpx

        try:
            yield
        except httpx.ConnectError as exc:
            verify = certificate_problem(exc)
            if verify is not None:
                advice = tls_advice(self.endpoint.url, self.endpoint.ca, verify)
                raise Unreachable(advice) from None
            raise _NotConnected(
                f"cannot reach the server at {self.endpoint.where}: {exc}"
            ) from None
        except httpx.TimeoutException:
            raise Unreachable(
                f"the server at {self.endpoint.where} did not answer in time"
            ) from None
        except httpx.TransportError as exc:
            raise Unreachable(f"lost the connection to {self.endpoint.where}: {exc}") from None

    @staticmethod
    def _raise_for(response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        kind = None
        try:
            body = response.json()
            message = str(body.get("message") or body)
            kind = body.get("error")
        except ValueError:
            message = response.text[:200] or response.reason_phrase
        cls: type[PilotageError] = BY_NAME.get(str(kind)) or BY_HTTP_STATUS.get(
            response.status_code, InternalError
        )
        raise cls(message)
