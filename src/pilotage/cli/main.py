"""The ``pilotage`` command: one sentence on error, a documented exit code, and a
traceback only with ``--debug``.

Exit codes (docs/cli.md): 0 success; 1 a job did not complete (``wait``); 2 bad input or
usage; 3 not found; 4 not authenticated or denied; 5 server unreachable; 6 conflict;
70 internal error; 74 a local file cannot be read or written; 75 try again later (and
``wait`` timed out, or a local disk is full); 77 a local file is not permitted or
read-only; 78 configuration error.
"""

from __future__ import annotations

import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import click
import typer

from pilotage.cli.client import Client, locate
from pilotage.errors import PilotageError
from pilotage.statedir import StateDir, default_state_dir

app = typer.Typer(
    name="pilotage",
    help="A multi-user pilot workload management system.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)


@dataclass(frozen=True)
class Globals:
    """Options every command shares."""

    state_dir: Path
    server: str | None
    token: Path | None
    ca: Path | None
    debug: bool

    @property
    def state(self) -> StateDir:
        return StateDir(self.state_dir)

    def client(self) -> Client:
        token = self.token
        # A session token saved by 'pilotage login' serves remote calls that name none; it
        # is never sent over the socket, where the kernel already says who we are.
        if token is None and self.server is not None and not os.environ.get("PILOTAGE_TOKEN"):
            from pilotage.cli.credentials import saved_token_path

            saved = saved_token_path()
            token = saved if saved.exists() else None
        return Client(locate(self.state, self.server, token, self.ca))


def _print_version(value: bool) -> None:
    if value:
        from pilotage import __version__

        typer.echo(f"pilotage {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    state_dir: Annotated[
        Path | None,
        typer.Option(help="The pool's state directory [env PILOTAGE_STATE_DIR]."),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            envvar="PILOTAGE_SERVER",
            help="The server's https:// URL (instead of the local socket) [env PILOTAGE_SERVER].",
        ),
    ] = None,
    token: Annotated[
        Path | None, typer.Option(help="A file holding a bearer token [env PILOTAGE_TOKEN].")
    ] = None,
    ca: Annotated[
        Path | None,
        typer.Option(
            envvar="PILOTAGE_CA",
            help="The CA certificate to trust (the pool's: STATE_DIR/ca/ca.crt) [env PILOTAGE_CA].",
        ),
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """A multi-user pilot workload management system."""
    ctx.obj = Globals(state_dir or default_state_dir(), server, token, ca, debug)


def _register() -> None:
    from pilotage.cli import admin, credentials, example, jobs, pool, provisioning, web

    jobs.register(app)
    example.register(app)
    pool.register(app)
    provisioning.register(app)
    credentials.register(app)
    web.register(app)
    from pilotage.cli import session

    session.register(app)  # exec-in-job, ssh-to-job, sessions
    from pilotage.cli import tail

    tail.register(app)  # condor_tail
    app.add_typer(admin.app, name="admin")
    for name, module in (
        ("ca", "pilotage.cli.ca"),
        ("proxy", "pilotage.cli.proxy"),
        ("site-authz", "pilotage.cli.siteauthz"),
    ):
        try:
            sub = __import__(module, fromlist=["app"])
        except ImportError:
            continue
        app.add_typer(sub.app, name=name)
    _plain_help(app)


def _plain_help(group: typer.Typer) -> None:
    """Help as click writes it, for this group and those under it: rich's help, the
    default, loads rich, markdown and pygments at every ``--help``."""
    group.rich_markup_mode = None
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            _plain_help(sub.typer_instance)


#: Click's exceptions, and those of the click fork that newer typer versions carry inside
#: (``typer._click``, whose exceptions derive from ``typer.TyperException``).
_EXITS = (click.exceptions.Exit, typer.Exit)
_ABORTS = (click.exceptions.Abort, typer.Abort)
_USAGE_ERRORS = (click.ClickException, getattr(typer, "TyperException", click.ClickException))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``pilotage`` console script."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    _register()
    try:
        # Without standalone mode click returns the code of a typer.Exit instead of exiting.
        code = app(args=args, standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except _EXITS as exc:
        sys.exit(exc.exit_code)
    except _ABORTS:
        print("pilotage: interrupted", file=sys.stderr)
        sys.exit(130)
    except _USAGE_ERRORS as exc:
        exc.show()
        sys.exit(2)
    except PilotageError as exc:
        if debug:
            traceback.print_exc()
        print(f"pilotage: {exc.message}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("pilotage: interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as exc:  # a local file the system refuses (pilotage.cli.oserrors)
        from pilotage.cli.oserrors import describe

        if debug:
            traceback.print_exc()
        message, status = describe(exc)
        print(f"pilotage: {message}", file=sys.stderr)
        sys.exit(status)
    except Exception as exc:  # noqa: BLE001  (the last line of defence: one sentence)
        if debug:
            traceback.print_exc()
        print(f"pilotage: internal error: {exc!r} (run with --debug for details)", file=sys.stderr)
        sys.exit(70)
