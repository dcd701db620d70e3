"""``pilotage factory`` and ``pilotage frontend``: the provisioning services.

Both run cycles until SIGTERM or SIGINT (``--once``: one cycle), print their effective
settings first, and log one line per decision. A cycle that cannot reach the server is
logged and retried at the next one; any other error stops the service with one sentence
(exit codes as in :mod:`pilotage.cli.main`). They reach the server as every client does
(``--server``/``--token``/``--ca`` or the state directory), with a token of the
``factory`` or ``frontend`` role.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from pilotage.errors import OperatorError, Transient

log = logging.getLogger("pilotage.cli.provisioning")


def run_cycles(name: str, cycle: Callable[[], Any], cycle_s: float, *, once: bool) -> None:
    """Call ``cycle`` every ``cycle_s`` seconds until SIGTERM/SIGINT (or once)."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: %s received, stopping after this cycle", name, signal.Signals(signum).name)
        stop.set()

    from pilotage.store.outage import Outage

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    outage = Outage(name, log)  # the server unreachable: one line as it starts and ends
    try:
        while not stop.is_set():
            try:
                cycle()
                outage.succeeded()
            except Transient as exc:
                if once:
                    raise
                outage.failed(exc)
            if once:
                break
            stop.wait(cycle_s)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    log.info("%s: stopped", name)


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(name)s %(message)s")


def _server_for_pilots(ctx: typer.Context) -> tuple[str, bytes]:
    """The server URL pilots connect to, and the CA they trust, from the global options."""
    g = ctx.obj
    url = g.server or (
        g.state.url_file.read_text(encoding="utf-8").strip() if g.state.url_file.exists() else None
    )
    if url is None:
        raise OperatorError("the factory needs the server's URL for its pilots: give --server")
    ca = g.ca or g.state.ca_cert
    try:
        return url, Path(ca).read_bytes()
    except OSError as exc:
        raise OperatorError(f"cannot read the CA certificate {ca}: {exc.strerror}") from None


LogLevel = Annotated[str, typer.Option(help="debug, info, warning or error.")]
Once = Annotated[bool, typer.Option(help="Run one cycle and exit.")]


def register(app: typer.Typer) -> None:
    """Add ``factory`` and ``frontend`` to the ``pilotage`` command."""

    @app.command("factory")
    def factory_cmd(
        ctx: typer.Context,
        entries: Annotated[Path, typer.Option(help="The entries file (TOML).")],
        workdir: Annotated[
            Path | None,
            typer.Option(help="Keys, ledger, pilot files (default: STATE_DIR/factory)."),
        ] = None,
        once: Once = False,
        log_level: LogLevel = "info",
    ) -> None:
        """Submit and track pilots at the entries, as the frontends ask."""
        from pilotage.factory.entries import load_config
        from pilotage.factory.service import Factory, FactoryOptions

        _logging(log_level)
        config = load_config(entries)
        url, ca_pem = _server_for_pilots(ctx)
        options = FactoryOptions(
            workdir=workdir or ctx.obj.state_dir / "factory", server_url=url, ca_pem=ca_pem
        )
        typer.echo(
            f"factory: {len(config.entry)} entries ({', '.join(config.by_name())}), "
            f"cycle {config.factory.cycle_s} s, pilots connect to {url}, "
            f"workdir {options.workdir}",
            err=True,
        )
        with ctx.obj.client() as client:
            factory = Factory(config, client, options)
            try:
                run_cycles("factory", factory.cycle, config.factory.cycle_s, once=once)
            finally:
                factory.close()

    @app.command("frontend")
    def frontend_cmd(
        ctx: typer.Context,
        config: Annotated[Path, typer.Option(help="The frontend's settings (TOML).")],
        once: Once = False,
        log_level: LogLevel = "info",
    ) -> None:
        """Ask the factories for pilots where idle jobs could run."""
        from pilotage.frontend.service import Frontend
        from pilotage.frontend.settings import load_frontend_config

        _logging(log_level)
        settings = load_frontend_config(config)
        typer.echo(f"frontend: {settings.model_dump_json()}", err=True)
        with ctx.obj.client() as client:
            frontend = Frontend(settings, client)
            run_cycles("frontend", frontend.cycle, settings.frontend.cycle_s, once=once)
