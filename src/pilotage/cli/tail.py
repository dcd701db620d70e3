"""``pilotage tail ID`` (``condor_tail``): the end of a running job's stdout."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer

from pilotage.errors import Conflict

#: How often ``-f`` asks for more.
FOLLOW_EVERY_S = 2.0


def register(app: typer.Typer) -> None:
    @app.command("tail")
    def tail_cmd(
        ctx: typer.Context,
        job: Annotated[str, typer.Argument(help="CLUSTER.PROC of a running job.")],
        follow: Annotated[
            bool, typer.Option("-f", "-follow", "--follow", help="Keep printing until it ends.")
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    ) -> None:
        """The end of a running job's stdout (condor_tail); the job needs stream_output."""
        with ctx.obj.client() as client:
            answer = client.call("GET", f"/api/v1/jobs/{job}/tail")
            if as_json:
                typer.echo(json.dumps(answer, indent=2, sort_keys=True))
                return
            sys.stdout.write(answer["text"])
            sys.stdout.flush()
            shown = int(answer["size"])
            while follow and answer["state"] == "RUNNING":
                time.sleep(FOLLOW_EVERY_S)
                try:
                    answer = client.call("GET", f"/api/v1/jobs/{job}/tail?ended=true")
                except Conflict:  # ended long ago: what it wrote is in its outputs
                    return
                size, start = int(answer["size"]), int(answer["offset"])
                if size > shown:
                    text = answer["text"].encode()[max(0, shown - start) :]
                    sys.stdout.write(text.decode("utf-8", errors="replace"))
                    sys.stdout.flush()
                    shown = size
