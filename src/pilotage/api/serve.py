"""Running the server: HTTPS on TCP for remote callers, HTTP on the Unix socket for local
users, and the reaper, in one process and one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from pilotage.api.app import create_app
from pilotage.api.auth import PeerCredentialProtocol
from pilotage.api.context import ServerContext
from pilotage.api.reload import reload_and_log
from pilotage.config import Settings
from pilotage.errors import OperatorError
from pilotage.queue.notify import start_mailer
from pilotage.queue.policy_store import sweep_once as policy_sweep
from pilotage.queue.reaper import reap_once
from pilotage.statedir import StateDir
from pilotage.store.engine import Store
from pilotage.store.health import check_startup, redacted, startup_faults
from pilotage.store.outage import Outage

log = logging.getLogger("pilotage.server")


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to us (two servers share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass(frozen=True)
class Listeners:
    """Where the server listens; what clients read from the state directory."""

    url: str
    socket_path: Path | None


def _bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this. Without it an answer written in two parts
    # (headers, then body) waits for the client's delayed ACK: 40 ms per call. The
    # event loop sets it only on sockets created with proto=IPPROTO_TCP, not this one.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OperatorError(
            f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port"
        ) from None
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def _bind_unix(path: Path) -> socket.socket:
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise OperatorError(f"{path} exists and is not a socket; remove it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale: its server is gone
        else:
            raise OperatorError(f"another server already listens on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    # Anyone on this host may connect: the kernel tells us who they are.
    os.chmod(path, 0o666)  # noqa: S103
    sock.listen(1024)
    return sock


def _public_url(host: str, port: int, public_name: str = "") -> str:
    if public_name:
        host = public_name
    elif host in ("0.0.0.0", "::", ""):  # noqa: S104  (naming the wildcard, not binding it)
        host = socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"
    return f"https://{host}:{port}"


def _reaper(ctx: ServerContext, stop: threading.Event) -> None:
    outage = Outage("reaper", log)  # a database outage: one line as it starts and ends
    while not stop.wait(ctx.settings.server.reap_interval_s):
        try:
            now = ctx.clock()
            reap_once(ctx.store, ctx.settings.server, now)
            policy_sweep(ctx.store, now)  # periodic_hold/release/remove
            if ctx.authenticator.revocations is not None:  # other servers' revocations
                ctx.authenticator.revocations.refresh_if_due(ctx.store, now)
            _matchmaker_tick(ctx, now)
        except Exception as exc:
            if not outage.failed(exc):
                log.exception("reaper pass failed")
        else:
            outage.succeeded()


def _first_index(ctx: ServerContext) -> None:
    """Build the matchmaker's index at start (the reaper builds it if this fails)."""
    try:
        with ctx.store.read() as conn:
            ctx.matcher.repair(conn, ctx.clock())
    except Exception:
        log.exception("the matchmaker's index could not be built at start; the reaper retries")
    else:
        log.warning("the matchmaker's index holds %d idle jobs", len(ctx.matcher.index))


def _matchmaker_tick(ctx: ServerContext, now: float) -> None:
    """Repair the matchmaker's index, feed fair share, and save its state when due."""
    with ctx.store.read() as conn:
        ctx.matcher.repair(conn, now)
    with ctx.store.write() as conn:  # serialised with claims: see MatchService.tick
        due = ctx.matcher.tick(conn, now)
    if due:
        with ctx.store.write() as conn:
            ctx.matcher.save(conn, now)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (it is, with uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(
    state: StateDir,
    settings: Settings,
    *,
    migrate: bool = True,
    socket_path: Path | None = None,
    url_file: Path | None = None,
    log_level: str = "warning",
    settings_source: Callable[[], Settings] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM; on SIGHUP, reload the settings ``settings_source``
    returns (default: the state directory's file and the environment)."""
    if not state.is_initialised():
        raise OperatorError(f"{state.root} is not a pool state directory; run 'pilotage init'")
    db_url = settings.server.db or state.sqlite_url()
    check_startup(state.root, state.spool, db_url)  # exit 78 (or 75) naming the path
    store = Store(db_url)
    with startup_faults(db_url):
        if migrate:
            store.migrate()
        store.check_current()
        ctx = ServerContext.build(state, settings, store)
        with store.read() as conn:
            ctx.matcher.restore(conn)
    # The matchmaker's index is built while the server already answers (a million idle
    # jobs take a while): requests for work find nothing until it is in place.
    threading.Thread(target=_first_index, args=(ctx,), name="index", daemon=True).start()
    app = create_app(ctx)
    app.state.settings_source = settings_source
    tcp = _bind_tcp(settings.server.host, settings.server.port)
    port = tcp.getsockname()[1]
    unix_path = socket_path if socket_path is not None else state.socket
    unix = _bind_unix(unix_path)
    common = {"log_level": log_level, "access_log": False, "lifespan": "off", "loop": "auto"}
    tls = uvicorn.Config(
        app,
        ssl_certfile=str(state.server_cert),
        ssl_keyfile=str(state.server_key),
        http="httptools",
        **common,  # type: ignore[arg-type]
    )
    local = uvicorn.Config(app, http=PeerCredentialProtocol, **common)  # type: ignore[arg-type]
    servers = [_QuietServer(tls), _QuietServer(local)]
    url = _public_url(settings.server.host, port, settings.server.public_name)
    (url_file or state.url_file).write_text(url + "\n", encoding="utf-8")
    stop = threading.Event()
    reaper = threading.Thread(target=_reaper, args=(ctx, stop), name="reaper", daemon=True)
    reaper.start()
    start_mailer(store, settings.server, stop)  # notification mail, when there is a relay
    log.warning(
        "pilotage server listening on %s and %s (database %s)", url, unix_path, redacted(store.url)
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def stop_serving() -> None:
            for server in servers:
                server.should_exit = True
            app.state.relay.close()  # pilots' long-polls for sessions answer at once
            ctx.waits.close()  # and their requests for work held open

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_serving)
        # Off the loop: a reload reads files and may re-read a whole trust directory.
        loop.add_signal_handler(
            signal.SIGHUP, lambda: loop.run_in_executor(None, reload_and_log, app)
        )
        await asyncio.gather(servers[0].serve([tcp]), servers[1].serve([unix]))

    try:
        # uvicorn's loop="auto" applies only when uvicorn runs the loop itself; here we
        # run it (two servers share it), so choose uvloop ourselves.
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(main())
    finally:
        stop.set()
        reaper.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            unix_path.unlink()
        store.dispose()
        log.warning("pilotage server stopped at %s", time.strftime("%H:%M:%S"))
