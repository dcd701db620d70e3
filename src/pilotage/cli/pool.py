"""Pool verbs: init, server, config, status, token, pilot, demo."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pilotage.credentials.roles import Role
from pilotage.errors import BadInput

if TYPE_CHECKING:  # loaded by the commands that use them (the CLI starts without them)
    from rich.table import Table

    from pilotage.config import Settings

token_app = typer.Typer(
    help="Bearer tokens for remote users, pilots and admins.", no_args_is_help=True
)


def _fit_table(title: str, columns: tuple[tuple[str, int], ...], rows: list[list[str]]) -> Table:
    """A table that fits an 80-column terminal: no borders; numbers (width 0 here)
    kept whole; names cut with an ellipsis at their width (and more on a narrower one)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for index, (header, width) in enumerate(columns):
        if width:
            table.add_column(header, no_wrap=True, overflow="ellipsis", max_width=width)
        else:
            widest = max([len(header), *(len(row[index]) for row in rows)])
            table.add_column(header, justify="right", no_wrap=True, min_width=widest)
    for row in rows:
        table.add_row(*row)
    return table


def _gb(free_mb: int, total_mb: int) -> str:
    return f"{free_mb / 1024:.1f}/{total_mb / 1024:.1f}"


def _status_table(slots: list[dict[str, Any]]) -> Table:
    """Each pilot's slot (what an admin is shown)."""
    rows = [
        [
            s["name"],
            s["site"],
            s["host"],
            s["state"],
            str(s["jobs"]),
            f"{s['free']['cpus']}/{s['cpus']}",
            _gb(s["free"]["memory_mb"], s["memory_mb"]),
        ]
        for s in slots
    ]
    columns = (
        ("PILOT", 14),
        ("SITE", 10),
        ("HOST", 14),
        ("STATE", 9),
        ("JOBS", 0),
        ("CPUS", 0),
        ("MEM GB", 0),
    )
    return _fit_table("Pool slots (CPUS and MEM GB: free/total)", columns, rows)


def _summary_table(groups: list[dict[str, Any]]) -> Table:
    """Slots by site and state: what a user (not an admin) is shown."""
    rows = [
        [
            g["site"],
            g["state"],
            str(g["pilots"]),
            str(g["jobs"]),
            f"{g['free_cpus']}/{g['cpus']}",
            _gb(g["free_memory_mb"], g["memory_mb"]),
        ]
        for g in groups
    ]
    columns = (
        ("SITE", 20),
        ("STATE", 9),
        ("PILOTS", 0),
        ("JOBS", 0),
        ("CPUS", 0),
        ("MEM GB", 0),
    )
    return _fit_table("Pool slots by site (CPUS and MEM GB: free/total)", columns, rows)


def register(app: typer.Typer) -> None:
    """Add the pool verbs to the root command."""

    @app.command("init")
    def init_cmd(
        ctx: typer.Context,
        pool_name: Annotated[str, typer.Option(help="The pool's name.")] = "pilotage",
        host: Annotated[
            list[str] | None,
            typer.Option(
                help="A name (DNS or IP) clients and pilots reach the server by; repeat. "
                "Goes into the server certificate; the first is the public name."
            ),
        ] = None,
        bind: Annotated[
            str | None,
            typer.Option(help="Address to listen on, in a new config (default with --host: all)."),
        ] = None,
    ) -> None:
        """Create the state directory: pool CA, server certificate, token key, config.

        Idempotent: what exists is kept, and no key is ever overwritten.
        """
        from pilotage.cli.init_advice import config_notes, next_steps

        state = ctx.obj.state
        created = state.init(pool_name=pool_name, hosts=host or (), bind=bind)
        for path in created:
            line = path if path.startswith("re-issued") else f"created {path}"
            typer.echo(line)
        for note in config_notes(state, host or (), bind):
            typer.echo(f"note: {note}", err=True)
        typer.echo(f"pool state directory {state.root} is ready; its CA is {state.ca_cert}")
        typer.echo("next:")
        for command in next_steps(state):
            typer.echo(f"  {command}")

    @app.command("server")
    def server_cmd(
        ctx: typer.Context,
        db: Annotated[
            str | None, typer.Option(help="Database URL (sqlite:/// or postgresql://).")
        ] = None,
        host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
        port: Annotated[int | None, typer.Option(help="TCP port (0: any free port).")] = None,
        socket: Annotated[Path | None, typer.Option(help="Unix socket path.")] = None,
        url_file: Annotated[
            Path | None, typer.Option(help="Where to write the server URL.")
        ] = None,
        migrate: Annotated[bool, typer.Option(help="Upgrade the database schema first.")] = True,
        log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
        detach: Annotated[
            bool,
            typer.Option(help="Run in the background (log and pid in the state directory)."),
        ] = False,
    ) -> None:
        """Run the central services (queue, collector, matchmaker, API) until stopped.

        SIGTERM or SIGINT stops it; SIGHUP reloads pilotage.toml (docs/configuration.md).
        """
        from pilotage.api.serve import run

        state = ctx.obj.state
        if detach:
            from pilotage.cli.server_detach import detach as start_detached

            args = [f"--log-level={log_level}"] + ([] if migrate else ["--no-migrate"])
            for flag, value in (("db", db), ("host", host), ("port", port)):
                if value is not None:
                    args.append(f"--{flag}={value}")
            for flag, path in (("socket", socket), ("url-file", url_file)):
                if path is not None:
                    args.append(f"--{flag}={path.resolve()}")
            pid = start_detached(state, args, (socket or state.socket).resolve())
            typer.echo(
                f"server running (pid {pid}); log {state.root / 'server.log'}; "
                f"stop it with: kill $(cat {state.root / 'server.pid'})"
            )
            return

        logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")

        from pilotage.config import with_overrides

        def settings() -> Settings:
            return with_overrides(state.settings(), "server", db=db, host=host, port=port)

        run(
            state,
            settings(),
            migrate=migrate,
            socket_path=socket,
            url_file=url_file,
            log_level="warning" if log_level == "info" else log_level,
            settings_source=settings,
        )

    from pilotage.cli import config_cmd

    app.add_typer(config_cmd.app, name="config")

    @app.command("status")
    def status_cmd(
        ctx: typer.Context,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    ) -> None:
        """The pool's slots: each pilot with its free and total resources (admins), or
        the slots by site and state (users)."""
        with ctx.obj.client() as client:
            status = client.call("GET", "/api/v1/slots")
        if as_json:
            typer.echo(json.dumps(status, indent=2, sort_keys=True))
            return
        from rich.console import Console

        console = Console()
        if status["scope"] == "all":
            console.print(_status_table(status["slots"]))
        else:
            console.print(_summary_table(status["by_site"]))
        total = status["total"]
        console.print(f"{total['pilots']} pilots, {total['jobs']} running jobs")

    @app.command("userprio")
    def userprio_cmd(
        ctx: typer.Context,
        set_factor: Annotated[
            tuple[str, float] | None,
            typer.Option(
                "--set-factor",
                help="NAME FACTOR: a submitter's priority factor (admin only); "
                "2 means half the share of 1.",
            ),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    ) -> None:
        """User priorities: effective priority (lower is better), usage, factor."""
        with ctx.obj.client() as client:
            if set_factor is not None:
                name, factor = set_factor
                client.call("PUT", f"/api/v1/userprio/{name}", json={"factor": factor})
            prio = client.call("GET", "/api/v1/userprio")
        if as_json:
            typer.echo(json.dumps(prio, indent=2, sort_keys=True))
            return
        from rich.console import Console
        from rich.table import Table

        rows = prio["submitters"]
        table = Table(title="User priorities", title_justify="left")
        for col in ("SUBMITTER", "EFFECTIVE PRIO", "FACTOR", "USAGE (cpu h)", "RUNNING", "IDLE"):
            table.add_column(col)
        for r in rows:
            table.add_row(
                r["submitter"],
                f"{r['effective_priority']:.2f}",
                f"{r['factor']:g}",
                f"{r['usage_cpu_s'] / 3600:.2f}",
                f"{r['running_cpus']:g}",
                str(r["idle_jobs"]),
            )
        console = Console()
        console.print(table)
        total = prio["total"]
        console.print(
            f"pool: {total['submitters']} submitters, "
            f"{total['usage_cpu_s'] / 3600:.2f} cpu h, {total['running_cpus']:g} running cpus, "
            f"{total['idle_jobs']} idle jobs"
        )

    @token_app.command("issue")
    def token_issue(
        ctx: typer.Context,
        role: Annotated[Role, typer.Option(help="The role the token grants.")],
        subject: Annotated[str, typer.Option(help="Whom the token names.")],
        lifetime: Annotated[str, typer.Option(help="e.g. 3600, 90m, 12h, 7d.")] = "12h",
        out: Annotated[
            Path | None, typer.Option(help="Write the token to this file (0600).")
        ] = None,
    ) -> None:
        """Mint a token (admin only)."""
        from pilotage.credentials.tokens import parse_lifetime

        lifetime_s = parse_lifetime(lifetime)
        with ctx.obj.client() as client:
            answer = client.call(
                "POST",
                "/api/v1/tokens",
                json={"subject": subject, "role": role.value, "lifetime_s": lifetime_s},
            )
        if out is None:
            typer.echo(answer["token"])
            return
        if out.exists():
            raise BadInput(f"{out} exists; remove it first or choose another --out")
        out.touch(mode=0o600)
        out.write_text(answer["token"] + "\n", encoding="utf-8")
        typer.echo(f"wrote a {role.value} token for {subject} to {out}")

    from pilotage.cli import tokens

    tokens.register(token_app)
    app.add_typer(token_app, name="token")

    @app.command(
        "pilot",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )
    def pilot_cmd(ctx: typer.Context) -> None:
        """Run one pilot agent in the foreground (see 'pilotage pilot --help'); or, as
        'pilotage pilot list|drain|resume|retire|kill|build', manage pilots."""
        from pilotage.cli import pilots

        if ctx.args and ctx.args[0] in pilots.VERBS:
            raise typer.Exit(pilots.run_verb(ctx.obj, list(ctx.args)))
        from pilotage.pilot.__main__ import main as agent_main

        raise typer.Exit(agent_main(list(ctx.args)))

    @app.command("demo")
    def demo_cmd(
        ctx: typer.Context,
        jobs: Annotated[int, typer.Option(help="How many jobs to run.")] = 20,
        pilots: Annotated[int, typer.Option(help="How many local pilots to start.")] = 4,
        keep_running: Annotated[
            bool, typer.Option(help="Leave the pool running at the end.")
        ] = False,
        db: Annotated[str | None, typer.Option(help="Database URL (default: SQLite).")] = None,
        provisioning: Annotated[
            bool,
            typer.Option(help="Run a factory and a frontend: pilots only where jobs can run."),
        ] = False,
        switch: Annotated[
            bool,
            typer.Option(help="With --provisioning, as root: each job runs as its owner."),
        ] = False,
    ) -> None:
        """Start a throwaway pool with local pilots, run an example cluster, show results."""
        from pilotage.demo import run_demo

        if provisioning and switch:
            from pilotage.demo_switched import run_switched_demo

            raise typer.Exit(run_switched_demo(db=db))
        if provisioning:
            from pilotage.demo_provisioning import run_provisioning_demo

            raise typer.Exit(run_provisioning_demo(db=db))

        raise typer.Exit(run_demo(jobs=jobs, pilots=pilots, keep_running=keep_running, db=db))
