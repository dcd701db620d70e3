"""``pilotage token list`` and ``pilotage token revoke``: the tokens the pool issued.

A revoked token is refused from the next call on by the server that revoked it, and by
every other server sharing the database within ``[server] revocation_refresh_s``.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pilotage.credentials.roles import Role
from pilotage.errors import BadInput

if TYPE_CHECKING:
    from rich.table import Table


def _when(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _table(rows: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(title="Issued tokens", title_justify="left")
    for col in ("ID", "SUBJECT", "ROLE", "ISSUED (UTC)", "EXPIRES (UTC)", "BY", "STATE"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["token_id"],
            r["subject"],
            r["role"],
            _when(r["issued_at"]),
            _when(r["expires_at"]),
            r["issued_by"],
            r["state"],
        )
    return table


def register(token_app: typer.Typer) -> None:
    """Add ``list`` and ``revoke`` to ``pilotage token``."""

    @token_app.command("list")
    def token_list(
        ctx: typer.Context,
        subject: Annotated[str | None, typer.Option(help="Only this subject's tokens.")] = None,
        role: Annotated[Role | None, typer.Option(help="Only tokens of this role.")] = None,
        show_all: Annotated[
            bool, typer.Option("--all", help="Also expired and revoked tokens.")
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    ) -> None:
        """List the tokens the pool issued (admin only): the valid ones, or --all."""
        params: dict[str, Any] = {"all": show_all}
        if subject is not None:
            params["subject"] = subject
        if role is not None:
            params["role"] = role.value
        with ctx.find_root().obj.client() as client:
            rows = client.call("GET", "/api/v1/tokens", params=params)
        if as_json:
            typer.echo(json.dumps(rows, indent=2, sort_keys=True))
            return
        from rich.console import Console

        Console(width=160).print(_table(rows))

    @token_app.command("revoke")
    def token_revoke(
        ctx: typer.Context,
        token_ids: Annotated[
            list[str] | None, typer.Argument(help="Token ids, as 'token list' shows them.")
        ] = None,
        subject: Annotated[
            str | None, typer.Option(help="Revoke every unexpired token of this subject.")
        ] = None,
        token_file: Annotated[
            Path | None,
            typer.Option("--file", help="Revoke the token in this file (its id not at hand)."),
        ] = None,
        reason: Annotated[str, typer.Option(help="Why (kept with the revocation).")] = (
            "revoked by an admin"
        ),
    ) -> None:
        """Revoke tokens (admin only): refused from the next call on."""
        body: dict[str, Any] = {"token_ids": token_ids or [], "reason": reason}
        if subject is not None:
            body["subject"] = subject
        if token_file is not None:
            try:
                body["token"] = token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise BadInput(f"cannot read the token file {token_file}: {exc.strerror}") from None
        if not token_ids and subject is None and token_file is None:
            raise BadInput("name the tokens to revoke: token ids, --subject or --file")
        with ctx.find_root().obj.client() as client:
            done = client.call("POST", "/api/v1/tokens/revocations", json=body)
        for r in done:
            state = "was already revoked" if r["already_revoked"] else "revoked"
            typer.echo(f"token {r['token_id']} of {r['subject']} {state}")
