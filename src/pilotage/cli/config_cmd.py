"""``pilotage config``: the effective settings; ``config check FILE``: is a file valid,
and which of its changes would a running server take on reload, which need a restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from pilotage.config import Settings, load_settings
from pilotage.config_reload import Change, changes
from pilotage.errors import NotFound, PilotageError

app = typer.Typer(
    help="The effective configuration; 'config check FILE' before a reload.",
    invoke_without_command=True,
)


@app.callback()
def show(ctx: typer.Context) -> None:
    """Print the effective configuration (file, environment and defaults)."""
    if ctx.invoked_subcommand is None:
        settings = ctx.find_root().obj.state.settings()
        typer.echo(json.dumps(settings.as_dict(), indent=2, sort_keys=True))


def _running(ctx: typer.Context) -> tuple[dict[str, Any], str] | None:
    """The settings of the pool's running server, if one answers (as admin)."""
    try:
        with ctx.find_root().obj.client() as client:
            answer = client.call("GET", "/api/v1/admin/config")
    except PilotageError:
        return None
    return dict(answer["settings"]), "the running server"


def _report(found: list[Change], against: str) -> list[str]:
    if not found:
        return [f"no change from {against}"]
    lines = [c.describe() for c in found]
    now = sum(1 for c in found if c.reloads)
    later = len(found) - now
    hint = []
    if now:
        hint.append(f"{now} reload ('pilotage admin reload' or SIGHUP)")
    if later:
        hint.append(f"{later} need a restart")
    lines.append(f"against {against}: " + ", ".join(hint))
    return lines


@app.command("check")
def check(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The configuration file to check.")],
    against: Annotated[
        Path | None,
        typer.Option(help="Compare with this file instead of the running server's settings."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Check a configuration file, and say which of its changes reload and which need a
    restart (compared with the running server, or with --against FILE)."""
    if not file.is_file():
        raise NotFound(f"{file} is not a file; give the pilotage.toml to check")
    new = load_settings(file)  # an invalid file stops here, naming the key (exit 78)
    from pilotage.credentials.service import CredentialService

    CredentialService.check(new)  # so do [authz] rules and an [x509] ca_dir that do not load
    base: tuple[Settings | dict[str, Any], str] | None
    if against is not None:
        if not against.is_file():
            raise NotFound(f"--against {against} is not a file")
        base = load_settings(against), str(against)
    else:
        base = _running(ctx)
    found = [] if base is None else changes(base[0], new)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "file": str(file),
                    "valid": True,
                    "against": None if base is None else base[1],
                    "changes": [
                        {"key": c.name, "old": c.old, "new": c.new, "reloads": c.reloads}
                        for c in found
                    ],
                },
                indent=2,
            )
        )
        return
    typer.echo(f"{file} is valid")
    if base is None:
        typer.echo(
            "no server answers to compare with: every setting applies when it starts "
            "(or give --against FILE)"
        )
        return
    for line in _report(found, base[1]):
        typer.echo(line)
