"""``pilotage pilot list|drain|resume|retire|kill|build``: the admin's pilot verbs.

``pilotage pilot`` followed by anything else runs an agent (``pilotage pilot --help``),
so these verbs are dispatched here by their first word (:data:`VERBS`).

* ``drain``: no new job; running jobs finish; the pilot stays until ``resume`` (or its
  idle timeout);
* ``retire``: no new job; the pilot leaves once its running jobs have ended;
* ``kill``: its jobs are stopped now and go back to the queue; the pilot leaves;
* ``build``: write the agent's zipapp (for starting pilots by hand) and print its SHA-256.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pilotage.errors import BadInput

app = typer.Typer(
    help="Manage the pool's pilots (admin), or build the agent's zipapp.",
    no_args_is_help=True,
    add_completion=False,
)

VERBS = frozenset({"list", "drain", "resume", "retire", "kill", "build"})


def run_verb(obj: Any, args: list[str]) -> int:
    """Run ``pilotage pilot ARGS`` for a verb of :data:`VERBS`; its exit code."""
    command = typer.main.get_command(app)
    code = command.main(args=args, prog_name="pilotage pilot", obj=obj, standalone_mode=False)
    return code if isinstance(code, int) else 0


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Pilots", title_justify="left")
    for col in ("PILOT", "NAME", "SITE", "ENTRY", "HOST", "STATE", "JOBS", "CPUS"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["pilot"],
            r["name"],
            r["site"],
            r["entry"] or "",
            r["host"],
            r["state"],
            str(r["jobs"]),
            str(r["cpus"]),
        )
    return table


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    show_all: Annotated[
        bool, typer.Option("--all", help="Also pilots that left or were lost.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List the pool's pilots with their state (active, draining, drained, retiring)."""
    with ctx.obj.client() as client:
        rows = client.call("GET", "/api/v1/pilots", params={"all": show_all})
    if as_json:
        typer.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    console = Console(width=160)
    console.print(_table(rows))
    console.print(f"{len(rows)} pilots, {sum(r['jobs'] for r in rows)} running jobs")


Pilots = Annotated[list[str] | None, typer.Argument(help="Pilot ids ('pilotage pilot list').")]
Every = Annotated[bool, typer.Option("--all", help="Every active pilot.")]


def _act(ctx: typer.Context, action: str, pilots: list[str] | None, every: bool) -> None:
    if bool(pilots) == every:
        raise BadInput(f"name the pilots to {action}, or give --all (not both)")
    with ctx.obj.client() as client:
        done = client.call(
            "POST",
            "/api/v1/pilots/actions",
            json={"action": action, "pilots": pilots or [], "all": every},
        )
    past = {"drain": "drained", "resume": "resumed", "retire": "retiring", "kill": "killed"}
    for r in done:
        stopped = ""
        if action == "kill":
            stopped = f" ({r['jobs_stopped']} running jobs back to the queue)"
        typer.echo(f"pilot {r['pilot']} {past[action]}{stopped}")
    if not done:
        typer.echo("no active pilot")


@app.command("drain")
def drain_cmd(ctx: typer.Context, pilots: Pilots = None, every: Every = False) -> None:
    """No new job for these pilots; their running jobs finish; they stay until resumed."""
    _act(ctx, "drain", pilots, every)


@app.command("resume")
def resume_cmd(ctx: typer.Context, pilots: Pilots = None, every: Every = False) -> None:
    """Undo 'drain': the pilots take jobs again."""
    _act(ctx, "resume", pilots, every)


@app.command("retire")
def retire_cmd(ctx: typer.Context, pilots: Pilots = None, every: Every = False) -> None:
    """No new job; the pilots leave once their running jobs have ended."""
    _act(ctx, "retire", pilots, every)


@app.command("kill")
def kill_cmd(ctx: typer.Context, pilots: Pilots = None, every: Every = False) -> None:
    """Stop the pilots' running jobs now (they go back to the queue); the pilots leave."""
    _act(ctx, "kill", pilots, every)


@app.command("build")
def build_cmd(
    out: Annotated[Path, typer.Option(help="Where to write the zipapp.")] = Path("agent.pyz"),
) -> None:
    """Write the agent's zipapp (standard library only, reproducible); print its SHA-256.

    Start a pilot by hand with: python3 agent.pyz --server URL --ca ca.crt --token FILE
    """
    from pilotage.pilot.zipapp import build_zipapp

    if out.is_dir():
        raise BadInput(f"--out {out} is a directory; name the file to write, e.g. {out}/agent.pyz")
    if not out.parent.is_dir():
        raise BadInput(f"--out {out}: the directory {out.parent} does not exist")
    build_zipapp(out)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    typer.echo(f"{digest}  {out}")
