"""``pilotage admin``: the pool admin's verbs: VO membership (``admin vo``), who submits
(``admin users``), reloading the configuration (``admin reload``) and installing the
services' systemd units (``admin install-units``, :mod:`pilotage.units`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pilotage.cli.backup_cmd import backup_cmd
from pilotage.cli.check import check_cmd

app = typer.Typer(help="The pool admin's verbs.", no_args_is_help=True)
vo_app = typer.Typer(
    help="VO membership: the groups and roles (FQANs such as /vo/Role=pilot) of identities.",
    no_args_is_help=True,
)
app.add_typer(vo_app, name="vo")
app.command("check")(check_cmd)  # the state's database and spool (pilotage.cli.check)
app.command("backup")(backup_cmd)  # a copy of the state while it runs (pilotage.cli.backup_cmd)


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


@app.command("users")
def users_cmd(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Who has submitted: jobs by state, accounting groups with quotas, VO groups, and
    priority factors."""
    from rich.console import Console
    from rich.table import Table

    with ctx.find_root().obj.client() as client:
        rows = client.call("GET", "/api/v1/admin/users")
    if as_json:
        typer.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    table = Table(title="Users", title_justify="left")
    for col in (
        "USER",
        "CLUSTERS",
        "JOBS",
        "ACCOUNTING GROUPS (quota cpus)",
        "VO GROUPS",
        "FACTOR",
    ):
        table.add_column(col)
    for r in rows:
        jobs = ", ".join(f"{n} {s.lower()}" for s, n in sorted(r["jobs"].items()))
        groups = ", ".join(
            g["group"] + ("" if g["quota_cpus"] is None else f" ({g['quota_cpus']:g})")
            for g in r["accounting_groups"]
        )
        factors = ", ".join(f"{s['submitter']} {s['factor']:g}" for s in r["submitters"])
        table.add_row(
            r["user"], str(r["clusters"]), jobs, groups, ", ".join(r["vo_groups"]), factors
        )
    Console(width=160).print(table)


@app.command("reload")
def reload_cmd(ctx: typer.Context) -> None:
    """Make the running server read pilotage.toml again (as SIGHUP does) and say what
    took effect and what needs a restart."""
    with ctx.find_root().obj.client() as client:
        answer = client.call("POST", "/api/v1/admin/reload")
    changes = answer["changes"]
    if not changes:
        typer.echo("configuration reloaded: no change")
    for change in changes:
        when = "in effect" if change["reloads"] else "needs a restart"
        typer.echo(f"{change['key']}: {change['old']!r} -> {change['new']!r} ({when})")


@app.command("install-units")
def install_units_cmd(
    dest: Annotated[Path, typer.Option(help="Where systemd reads units.")] = Path(
        "/etc/systemd/system"
    ),
    sysusers_dir: Annotated[
        Path, typer.Option(help="Where the services' accounts go (systemd-sysusers).")
    ] = Path("/etc/sysusers.d"),
    confdir: Annotated[
        str, typer.Option(help="The directory of pilotage.env, tokens, entries and policies.")
    ] = "/etc/pilotage",
    pilotage: Annotated[
        str | None, typer.Option(help="The pilotage executable (default: this one).")
    ] = None,
) -> None:
    """Write systemd units for the server, factory, frontend and site authorization
    service (hardened, each under its own account), and the accounts' sysusers file."""
    from pilotage.units import install

    exe = pilotage or _this_executable()
    written = install(dest, sysusers_dir, pilotage=exe, confdir=confdir)
    for path in written:
        typer.echo(f"wrote {path}")
    typer.echo(
        "next: systemd-sysusers; systemctl daemon-reload; "
        "systemctl enable --now pilotage-server (docs/operations.md)"
    )


def _this_executable() -> str:
    """The absolute path of the running ``pilotage`` script (a venv's, say)."""
    import shutil
    import sys

    for candidate in (Path(sys.argv[0]), Path(sys.executable).with_name("pilotage")):
        if candidate.name == "pilotage" and candidate.is_file():
            return str(candidate.absolute())
    found = shutil.which("pilotage")
    if found is None:
        from pilotage.errors import OperatorError

        raise OperatorError("cannot find the pilotage executable; give --pilotage PATH")
    return str(Path(found).absolute())
