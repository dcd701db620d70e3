"""``pilotage site-authz``: the site's authorization and mapping service, and a policy check.

``serve`` answers the switches of a whole site over HTTPS (``POST /v1/decision``);
``decide`` asks the same engine offline, for an admin testing a policy change.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from pilotage.errors import OperatorError

app = typer.Typer(
    help="The site authorization service (bans, DN/group mapping, pool accounts).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

PolicyFile = Annotated[Path, typer.Option(help="The policy file (TOML, see docs/switch.md).")]


@app.command("serve")
def serve_cmd(
    policy: PolicyFile,
    cert: Annotated[Path, typer.Option(help="The service's TLS certificate (PEM).")],
    key: Annotated[Path, typer.Option(help="Its private key (PEM).")],
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "0.0.0.0",  # noqa: S104
    port: Annotated[int, typer.Option(help="The port (0: any free one).")] = 8443,
    client_ca: Annotated[
        Path | None, typer.Option(help="Require client certificates from this CA.")
    ] = None,
    limit_concurrency: Annotated[
        int, typer.Option(min=1, help="Requests in flight before answering 503.")
    ] = 1000,
    port_file: Annotated[
        Path | None, typer.Option(help="Write the port here once listening.")
    ] = None,
    decision_log: Annotated[
        Path | None,
        typer.Option(help="Append a JSON line per decision here (reopened on SIGHUP)."),
    ] = None,
) -> None:
    """Serve decisions over HTTPS; SIGHUP reloads the policy without dropping requests."""
    from pilotage.siteauthz.service import PolicyHolder, bind, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    holder = PolicyHolder(policy)
    sock = bind(host, port)
    serve(holder, sock, cert=cert, key=key, client_ca=client_ca,
          limit_concurrency=limit_concurrency, port_file=port_file,
          decision_log=decision_log)  # fmt: skip


@app.command("decide")
def decide_cmd(
    policy: PolicyFile,
    dn: Annotated[str | None, typer.Option(help="A user's DN, /O=.../CN=... form.")] = None,
    subject: Annotated[str | None, typer.Option(help="A token subject.")] = None,
    issuer: Annotated[str, typer.Option(help="The token's (or certificate's) issuer.")] = "",
    group: Annotated[list[str] | None, typer.Option(help="A group (FQAN); repeat.")] = None,
) -> None:
    """Print the decision the policy makes for one identity (leases a pool account)."""
    from pilotage.sitepolicy.policy import Policy, PolicyError, Subject

    if (dn is None) == (subject is None):
        raise OperatorError("give exactly one of --dn and --subject")
    try:
        engine = Policy.from_file(str(policy))
    except PolicyError as exc:
        raise OperatorError(str(exc)) from None
    who = Subject("x509" if dn else "token", dn or subject or "", issuer, tuple(group or ()))
    typer.echo(json.dumps(engine.decide(who)._asdict()))


if __name__ == "__main__":
    app()
