"""``pilotage admin check``: is this pool's state fit to serve?

Run on the server's host, with the server's state directory; it reads the database and
the spool directly (no server needed), changes nothing, and prints one line per check:
the state directory and the spool can be written and have room; the database file (for
SQLite) is not empty, is SQLite and passes its quick check; the database answers,
passes SQLite's full integrity check and is at this version's schema; every sandbox the
database records is in the spool with its size (:func:`pilotage.store.health.admin_check`).

Exit 0 when every check passes; 75 when only checks that may pass by themselves failed
(the database server is down: try again); 78 otherwise (the operator must act).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

#: Exit codes (docs/cli.md): the operator must act; or try again later.
EXIT_CONFIG = 78
EXIT_TEMPFAIL = 75


def check_cmd(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Check the database (integrity, schema at this version) and the spool."""
    from pilotage.store.health import admin_check

    state = ctx.find_root().obj.state
    settings = state.settings()
    db_url = settings.server.db or state.sqlite_url()
    checks = admin_check(state.root, state.spool, db_url)
    if as_json:
        typer.echo(json.dumps({c.name: c.as_dict() for c in checks}, indent=2, sort_keys=True))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            typer.echo(f"{'ok' if c.ok else 'FAILED':6}  {c.name:{width}}  {c.detail}")
    failed = [c for c in checks if not c.ok]
    if not failed:
        return
    if not as_json:
        typer.echo(f"pilotage: {len(failed)} of {len(checks)} checks failed", err=True)
    raise typer.Exit(EXIT_TEMPFAIL if all(c.transient for c in failed) else EXIT_CONFIG)
