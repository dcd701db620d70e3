"""``pilotage web``: a one-time link that signs you in to the pool's web pages.

The link signs in whoever this command authenticates as (the local account over the
socket, a token, or the session of ``pilotage login``), works once, and only for a few
minutes; the session it opens ends no later than the credential the command used.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from pilotage.errors import BadInput, OperatorError

PAGES = ("overview", "jobs", "history", "sites", "users", "accounting")


def register(app: typer.Typer) -> None:
    """Add ``web`` to the root command."""

    @app.command("web")
    def web_cmd(
        ctx: typer.Context,
        page: Annotated[
            str,
            typer.Option(help=f"The page to open: {', '.join(PAGES)}, or a job id."),
        ] = "overview",
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    ) -> None:
        """Print a one-time link that signs you in to the pool's web pages."""
        target = _target(page)
        with ctx.obj.client() as client:
            answer = client.call("POST", "/api/v1/web/links", json={"v": 1, "next": target})
            base = client.endpoint.url
            if client.endpoint.socket is not None:
                base = _server_url(ctx)
        url = base.rstrip("/") + answer["path"]
        if as_json:
            typer.echo(json.dumps({**answer, "url": url}, indent=2, sort_keys=True))
            return
        minutes = max(1, round((answer["expires_at"] - time.time()) / 60))
        typer.echo(url)
        typer.echo(
            f"This link signs you in as {answer['name']} ({answer['role']}); it works once, "
            f"within {minutes} minutes. Keep it to yourself.",
            err=True,
        )


def _target(page: str) -> str:
    """The path a page name (or a job id) stands for."""
    if page == "overview":
        return "/web/"
    if page in PAGES:
        return f"/web/{page}"
    if all(part.isdigit() for part in page.split(".")) and page.count(".") == 1:
        return f"/web/jobs/{page}"
    raise BadInput(f"--page {page!r}: name one of {', '.join(PAGES)}, or a job as CLUSTER.PROC")


def _server_url(ctx: typer.Context) -> str:
    """The server's https URL, as it wrote it into the state directory."""
    url_file = ctx.obj.state.url_file
    try:
        return str(url_file.read_text(encoding="utf-8").strip())
    except OSError:
        raise OperatorError(
            f"the server's URL is not in {url_file}; name it with --server URL"
        ) from None
