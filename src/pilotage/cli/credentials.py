"""``pilotage login`` and ``pilotage delegate``: X.509 into the pool, without sending a key.

``login`` proves possession of the proxy's key by signing a server nonce and saves the
session token it gets in ``~/.config/pilotage/token`` (0600; ``$XDG_CONFIG_HOME`` is
honoured); later commands given ``--server`` without ``--token`` use it. ``delegate``
signs a proxy for a key the server made (the server's CSR) with your own proxy, so the
server can later derive short-lived proxies for your jobs; ``--destroy`` removes it.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pilotage.cli.x509_errors import one_sentence_errors
from pilotage.credentials.roles import Role
from pilotage.errors import BadInput, NotFound

if TYPE_CHECKING:  # loaded by the commands that use them (the CLI starts without them)
    from cryptography import x509

    from pilotage.x509.certificate import CredentialKey


def saved_token_path() -> Path:
    """Where ``pilotage login`` keeps the session token."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pilotage" / "token"


def read_proxy(path: Path) -> tuple[list[x509.Certificate], CredentialKey]:
    """The certificates (leaf first) and key of a proxy file, which must be private.

    The same rule as ``proxy init`` and the switch (``private_file.check_private``).
    """
    from pilotage.credentials.private_file import read_credential_file
    from pilotage.x509.chain import load_credential

    try:
        data = read_credential_file(path, "proxy file", private=True)
    except NotFound:
        raise NotFound(f"the proxy file {path} does not exist; run 'pilotage proxy init'") from None
    chain, key = load_credential(data)
    if key is None:
        raise BadInput(f"the proxy file {path} holds no private key")
    return chain, key


def proxy_identity(path: Path) -> str:
    """The identity (grid-form DN of the end entity) of the proxy file at ``path``."""
    from pilotage.x509.chain import proxy_info

    chain, _ = read_proxy(path)
    return proxy_info(chain).identity


def _certificates_pem(chain: list[x509.Certificate]) -> str:
    from cryptography.hazmat.primitives import serialization

    # Certificates only: the private key stays in the file.
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain).decode()


def register(app: typer.Typer) -> None:
    """Add ``login`` and ``delegate`` to the root command."""

    @app.command("login")
    def login_cmd(
        ctx: typer.Context,
        proxy: Annotated[
            Path | None,
            typer.Option(envvar="X509_USER_PROXY", help="Proxy file (default /tmp/x509up_u<uid>)."),
        ] = None,
        role: Annotated[Role, typer.Option(help="The role to ask for.")] = Role.USER,
    ) -> None:
        """Log in with your proxy: sign the server's nonce, save the session token."""
        from pilotage.credentials.atomic import write_file
        from pilotage.credentials.login import login_message, sign_login
        from pilotage.credentials.proxy import default_proxy_path
        from pilotage.x509.certificate import utc_text

        with one_sentence_errors():
            chain, key = read_proxy(proxy or default_proxy_path())
            with ctx.obj.client() as client:
                nonce = client.call("POST", "/api/v1/login/nonce")
                signature = sign_login(key, login_message(nonce["nonce"], nonce["audience"]))
                answer = client.call(
                    "POST",
                    "/api/v1/login/x509",
                    json={
                        "nonce": nonce["nonce"],
                        "chain_pem": _certificates_pem(chain),
                        "signature": base64.b64encode(signature).decode(),
                        "role": role.value,
                    },
                )
            target = saved_token_path()
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_file(target, (answer["token"] + "\n").encode(), mode=0o600)
            until = utc_text(dt.datetime.fromtimestamp(answer["expires_at"], dt.UTC))
            typer.echo(f"logged in as {answer['subject']} ({answer['role']}) until {until}")
            typer.echo(f"session token saved to {target}")

    @app.command("delegate")
    def delegate_cmd(
        ctx: typer.Context,
        valid: Annotated[
            str, typer.Option(help="Lifetime HH:MM, clipped to your proxy's.")
        ] = "12:00",
        proxy: Annotated[
            Path | None,
            typer.Option(envvar="X509_USER_PROXY", help="Proxy file (default /tmp/x509up_u<uid>)."),
        ] = None,
        destroy: Annotated[
            bool, typer.Option(help="Remove your stored credential instead.")
        ] = False,
    ) -> None:
        """Delegate your proxy to the pool's credential store (the key stays here)."""
        from cryptography import x509

        from pilotage.cli.proxy import parse_valid
        from pilotage.credentials.proxy import default_proxy_path, sign_proxy_request
        from pilotage.x509.certificate import utc_text
        from pilotage.x509.chain import proxy_info

        with one_sentence_errors():
            if destroy:
                with ctx.obj.client() as client:
                    client.call("DELETE", "/api/v1/credential")
                typer.echo("your stored credential is destroyed")
                return
            lifetime_s = parse_valid(valid)
            chain, key = read_proxy(proxy or default_proxy_path())
            limited = proxy_info(chain).proxy_type == "limited"
            with ctx.obj.client() as client:
                pending = client.call("POST", "/api/v1/delegations")
                csr = x509.load_pem_x509_csr(pending["csr_pem"].encode())
                cert = sign_proxy_request(
                    csr, chain[0], key, chain[1:], lifetime_s=lifetime_s, limited=limited
                )
                answer = client.call(
                    "PUT",
                    f"/api/v1/delegations/{pending['delegation_id']}",
                    json={"chain_pem": _certificates_pem([cert, *chain])},
                )
            until = dt.datetime.fromtimestamp(answer["not_after"], dt.UTC)
            verb = "refreshed" if answer["refreshed"] else "stored"
            typer.echo(f"{verb} the credential of {answer['identity']} until {utc_text(until)}")
            if answer["not_after"] < dt.datetime.now(dt.UTC).timestamp() + lifetime_s - 60:
                typer.echo(
                    f"clipped to the end of your proxy; for {valid} run "
                    f"'pilotage proxy init --valid {valid}' first",
                    err=True,
                )
