"""``pilotage admin backup DEST``: copy the pool's state (database, spool, keys) while
its server runs (:mod:`pilotage.store.backup`; docs/operations.md, "Backups and
restore"). Run on the server's host, with the server's state directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def backup_cmd(
    ctx: typer.Context,
    dest: Annotated[Path, typer.Argument(help="A new (or empty) directory for the copy.")],
) -> None:
    """Copy the database, the spool and the keys into DEST, with a manifest."""
    from pilotage.store.backup import MANIFEST, backup

    state = ctx.find_root().obj.state
    db_url = state.sqlite_url()
    if state.config.is_file():
        db_url = state.settings().server.db or db_url
    done = backup(state, dest, db_url)
    typer.echo(
        f"backed up {state.root} to {dest}: database ({done.database}, schema "
        f"{', '.join(done.schema) or 'none'}), spool ({done.spool_files} files, "
        f"{done.spool_bytes} bytes), {', '.join(done.files)}; see {dest / MANIFEST}"
    )
