"""``exec-in-job``, ``ssh-to-job`` and ``sessions``: a command or a shell inside a running
job, relayed by the server to the job's pilot (docs/cli.md; seed 000 §4.9).

The session is a WebSocket to ``/api/v1/jobs/{id}/session`` (over the pool's Unix socket,
or TLS with a token), speaking the frames of docs/pilot-protocol.md ("Sessions"). Once
the server says ``started``, standard input goes to the command (end-of-file included)
and its output comes back to standard output and error. ``ssh-to-job`` and ``-t`` ask for
a terminal on the node; on a local terminal it is put in raw mode, and window sizes
follow. Exit status: the command's own; otherwise the documented codes (docs/cli.md):
6 when the job is not running or ended during the session, 124 at a session limit, 4
when refused, 5 or 75 when the connection or the pilot failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import ssl
import sys
import termios
import threading
import tty
import urllib.parse
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

if TYPE_CHECKING:  # loaded when a session opens (the CLI starts without them)
    from websockets.sync.client import ClientConnection

    from pilotage.cli.client import Endpoint
from pilotage.errors import (
    BY_HTTP_STATUS,
    BadInput,
    InternalError,
    PilotageError,
    Transient,
    Unreachable,
)

#: Exit status when the session reached a limit (as ``timeout(1)``).
LIMIT_EXIT = 124
#: Why a session ended (the ``end`` message's ``why``) -> the exit status.
EXITS = {
    "job-ended": 6, "not-running": 6, "limit": LIMIT_EXIT, "refused": 4, "cannot-start": 127,
    "bad-input": 2, "agent": 75, "unavailable": 75, "lost": 75,
}  # fmt: skip
#: Input frames are at most this many bytes, or the server's ``frame_bytes``.
_CHUNK = 16 * 1024


def _status_error(status: int, body: bytes, headers: Any) -> PilotageError:
    """The error the server's refusal of the handshake names."""
    try:
        message = str(json.loads(body).get("message") or body[:200])
    except (ValueError, AttributeError):
        message = body.decode(errors="replace")[:200] or f"HTTP {status}"
    cls = BY_HTTP_STATUS.get(status, InternalError)
    if issubclass(cls, Transient):
        retry = headers.get("Retry-After", "5") if headers is not None else "5"
        return cls(message, retry_after_s=float(retry) if retry.isdigit() else 5.0)
    return cls(message)


def open_session(
    endpoint: Endpoint, job: str, command: list[str], *, tty_wanted: bool, rows: int,
    cols: int, term: str,
) -> ClientConnection:  # fmt: skip
    """Open the session's WebSocket; a refusal raises the error its status names."""
    from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
    from websockets.sync.client import ClientConnection, connect, unix_connect

    query = [("command", c) for c in command]
    query += [("tty", "1" if tty_wanted else "0"), ("rows", str(rows)), ("cols", str(cols)),
              ("term", term)]  # fmt: skip
    path = f"/api/v1/jobs/{urllib.parse.quote(job, safe='')}/session?"
    path += urllib.parse.urlencode(query)
    headers = {"User-Agent": "pilotage-cli"}
    if endpoint.token:
        headers["Authorization"] = f"Bearer {endpoint.token}"
    options: dict[str, Any] = {"additional_headers": headers, "compression": None,
                               "max_size": 4 * 1024 * 1024, "open_timeout": 30}  # fmt: skip
    try:
        if endpoint.socket is not None:
            return cast(ClientConnection, unix_connect(str(endpoint.socket), f"ws://local{path}",
                                                       **options))  # fmt: skip
        context = ssl.create_default_context(cafile=endpoint.ca) if endpoint.ca else None
        url = "wss://" + endpoint.url.removeprefix("https://") + path
        return cast(ClientConnection, connect(url, ssl=context, **options))
    except InvalidStatus as exc:
        response = exc.response
        raise _status_error(
            response.status_code, bytes(response.body or b""), response.headers
        ) from None
    except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
        raise Unreachable(f"cannot open a session at {endpoint.where}: {exc}") from None


class _Terminal:
    """The local terminal in raw mode while the session lasts (when stdin is one)."""

    def __init__(self, raw: bool) -> None:
        self.raw = raw and os.isatty(0)
        self._saved: list[Any] | None = None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        if self.raw:
            self._saved = termios.tcgetattr(0)
            tty.setraw(0)
        try:
            yield
        finally:
            if self._saved is not None:
                termios.tcsetattr(0, termios.TCSADRAIN, self._saved)


def _size() -> tuple[int, int]:
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
        return size.lines, size.columns
    except OSError:
        return 24, 80


class _Input:
    """Standard input to the session, on a daemon thread, once it has started."""

    def __init__(self, ws: ClientConnection, terminal: bool) -> None:
        self._ws = ws
        self._terminal = terminal
        self.chunk = _CHUNK
        self.resized = threading.Event()
        self.stopped = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._pump, name="stdin", daemon=True).start()

    def _pump(self) -> None:
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed, OSError):
            while not self.stopped.is_set():
                if self.resized.is_set():
                    self.resized.clear()
                    rows, cols = _size()
                    self._ws.send(json.dumps({"type": "resize", "rows": rows, "cols": cols}))
                ready, _, _ = select.select([0], [], [], 0.2)
                if not ready:
                    continue
                data = os.read(0, self.chunk)
                if not data:
                    self._ws.send(json.dumps({"type": "eof"}))
                    return
                self._ws.send(b"\x00" + data)


def run_session(ws: ClientConnection, *, terminal: bool) -> int:
    """Relay until the session ends; the exit status (module docstring)."""
    from websockets.exceptions import ConnectionClosed

    local = _Terminal(terminal)
    pump = _Input(ws, local.raw)
    if local.raw:
        signal.signal(signal.SIGWINCH, lambda *_: pump.resized.set())
    out, err = sys.stdout.buffer, sys.stderr.buffer
    ending: tuple[int, str | None] | None = None
    with local.active():
        try:
            for message in ws:
                if isinstance(message, bytes):
                    stream = err if message[:1] == b"\x02" else out
                    stream.write(message[1:])
                    stream.flush()
                    continue
                body = json.loads(message)
                kind = body.get("type")
                if kind == "started":
                    pump.chunk = min(_CHUNK, int(body.get("frame_bytes") or _CHUNK))
                    pump.start()
                elif kind == "exit":
                    code = body.get("code")
                    ending = (code if isinstance(code, int) else 1, None)
                elif kind == "end":
                    why = str(body.get("why", ""))
                    ending = (EXITS.get(why, 75), str(body.get("reason") or why))
        except ConnectionClosed:
            pass
        finally:
            pump.stopped.set()
    if ending is None:
        raise Unreachable("the connection to the server was lost during the session")
    code, reason = ending
    if reason:
        print(f"\r\npilotage: {reason}" if local.raw else f"pilotage: {reason}", file=sys.stderr)
    return code


def register(app: typer.Typer) -> None:
    """Add ``exec-in-job``, ``ssh-to-job`` and ``sessions`` to the root command."""

    def _session(ctx: typer.Context, job: str, command: list[str], tty_wanted: bool) -> None:
        rows, cols = _size()
        term = os.environ.get("TERM", "dumb") if tty_wanted else "dumb"
        if not term or len(term) > 64:
            term = "dumb"
        with ctx.obj.client() as client:
            endpoint = client.endpoint
        ws = open_session(endpoint, job, command, tty_wanted=tty_wanted, rows=rows, cols=cols,
                          term=term)  # fmt: skip
        try:
            code = run_session(ws, terminal=tty_wanted)
        finally:
            ws.close()
        raise typer.Exit(code)

    @app.command("exec-in-job", context_settings={"ignore_unknown_options": True})
    def exec_in_job(
        ctx: typer.Context,
        job: Annotated[str, typer.Argument(help="The running job: CLUSTER.PROC.")],
        command: Annotated[
            list[str] | None, typer.Argument(help="The command and its arguments, after --.")
        ] = None,
        tty_wanted: Annotated[
            bool, typer.Option("-t", "--tty", help="Run the command on a terminal.")
        ] = False,
    ) -> None:
        """Run a command inside a running job of yours (its directory, its environment,
        its account on the node); exit with its status."""
        if not command:
            raise BadInput("name the command to run after --, e.g. exec-in-job 12.0 -- ls -l")
        _session(ctx, job, command, tty_wanted)

    @app.command("ssh-to-job")
    def ssh_to_job(
        ctx: typer.Context,
        job: Annotated[str, typer.Argument(help="The running job: CLUSTER.PROC.")],
    ) -> None:
        """Open an interactive shell inside a running job of yours."""
        _session(ctx, job, [], True)

    @app.command("sessions")
    def sessions_cmd(
        ctx: typer.Context,
        job: Annotated[str | None, typer.Argument(help="Only this job's (CLUSTER.PROC).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    ) -> None:
        """List the sessions opened or refused in your jobs (every one, for an admin)."""
        params = {"job": job} if job else None
        with ctx.obj.client() as client:
            rows = client.call("GET", "/api/v1/sessions", params=params)
        if as_json:
            typer.echo(json.dumps(rows, indent=2, sort_keys=True))
            return
        for row in rows:
            what = "shell" if row["kind"] == "shell" else " ".join(row["command"] or [])
            typer.echo(f"{row['id']}  {row['job']:<10} {row['caller']:<12} {row['state']:<8} "
                       f"exit={row['exit_code']} in={row['bytes_in']} out={row['bytes_out']}  "
                       f"{what}  {row['end_reason'] or ''}".rstrip())  # fmt: skip
