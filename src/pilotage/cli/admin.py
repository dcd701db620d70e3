"""``pilotage admin``: the pool admin's verbs; for now VO membership (``admin vo``)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

app = typer.Typer(help="The pool admin's verbs.", no_args_is_help=True)
vo_app = typer.Typer(
    help="VO membership: the groups and roles (FQANs such as /vo/Role=pilot) of identities.",
    no_args_is_help=True,
)
app.add_typer(vo_app, name="vo")


@vo_app.command("add")
def vo_add(
    ctx: typer.Context,
    identity: Annotated[str, typer.Argument(help="A DN in grid form, or a token subject.")],
    fqan: Annotated[str, typer.Argument(help="/vo, /vo/group or /vo/group/Role=role.")],
) -> None:
    """Give an identity a VO group or role."""
    with ctx.find_root().obj.client() as client:
        answer = client.call(
            "POST", "/api/v1/vo/members", json={"identity": identity, "fqan": fqan}
        )
    state = "now holds" if answer["added"] else "already held"
    typer.echo(f"{identity} {state} {fqan}")


@vo_app.command("remove")
def vo_remove(
    ctx: typer.Context,
    identity: Annotated[str, typer.Argument(help="A DN in grid form, or a token subject.")],
    fqan: Annotated[str, typer.Argument(help="The FQAN to take away.")],
) -> None:
    """Take a VO group or role from an identity."""
    with ctx.find_root().obj.client() as client:
        client.call("DELETE", "/api/v1/vo/members", params={"identity": identity, "fqan": fqan})
    typer.echo(f"{identity} no longer holds {fqan}")


@vo_app.command("list")
def vo_list(
    ctx: typer.Context,
    identity: Annotated[str | None, typer.Argument(help="Only this identity.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List VO memberships, of everyone or of one identity."""
    params = {} if identity is None else {"identity": identity}
    with ctx.find_root().obj.client() as client:
        members = client.call("GET", "/api/v1/vo/members", params=params)
    if as_json:
        typer.echo(json.dumps(members, indent=2, sort_keys=True))
        return
    for member in members:
        typer.echo(f"{member['identity']}\t{member['fqan']}")
