"""``pilotage proxy``: make and describe RFC 3820 proxy certificates, as grid tools do.

``proxy init`` reads ``~/.globus/usercert.pem`` and ``~/.globus/userkey.pem`` (or
``X509_USER_CERT`` / ``X509_USER_KEY``, or ``--cert`` / ``--key``; a proxy file given as
``--cert`` brings its own key, which makes a proxy of a proxy) and writes
``X509_USER_PROXY`` or ``/tmp/x509up_u<uid>`` with mode 0600. Only unencrypted keys are
read for now. When a trust directory is known (``--ca-dir``, ``X509_CERT_DIR`` or
``/etc/grid-security/certificates``) the new proxy is validated before it is written.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pilotage.cli.x509_errors import one_sentence_errors
from pilotage.errors import BadInput

if TYPE_CHECKING:  # loaded by the commands (the CLI starts without cryptography)
    from cryptography import x509

    from pilotage.x509.certificate import CredentialKey

app = typer.Typer(
    help="RFC 3820 proxy certificates: make one (init), describe one (info).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

GRID_CA_DIR = Path("/etc/grid-security/certificates")
_HH_MM = re.compile(r"^(\d{1,4}):([0-5]\d)$")


def parse_valid(text: str) -> int:
    """Seconds in an ``HH:MM`` lifetime (hours may exceed 24, as in ``168:00``)."""
    match = _HH_MM.match(text.strip())
    if not match or (int(match.group(1)) == 0 and int(match.group(2)) == 0):
        raise BadInput(f"--valid '{text}' is not a positive lifetime written HH:MM.")
    return int(match.group(1)) * 3600 + int(match.group(2)) * 60


def _issuer(cert: Path | None, key: Path | None) -> tuple[list[x509.Certificate], CredentialKey]:
    """The signing certificate (first), its non-CA chain, and its key.

    Files are read by ``read_credential_file``: one holding a key must be private.
    """
    from pilotage.credentials.private_file import read_credential_file
    from pilotage.x509.certificate import check_key, is_ca, load_private_key
    from pilotage.x509.chain import load_credential

    globus = Path.home() / ".globus"
    cert_path = cert or globus / "usercert.pem"
    chain, key_in_file = load_credential(read_credential_file(cert_path, "certificate file"))
    if key is None and key_in_file is not None:
        return [c for c in chain if not is_ca(c)], key_in_file
    key_path = key or globus / "userkey.pem"
    signing_key = load_private_key(read_credential_file(key_path, "key file", private=True))
    check_key(chain[0], signing_key)
    return [c for c in chain if not is_ca(c)], signing_key


@app.command("init")
def init_cmd(
    cert: Annotated[
        Path | None,
        typer.Option(envvar="X509_USER_CERT", help="Certificate [~/.globus/usercert.pem]."),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(envvar="X509_USER_KEY", help="Unencrypted key [~/.globus/userkey.pem]."),
    ] = None,
    valid: Annotated[str, typer.Option(help="Lifetime HH:MM, clipped to the certificate's.")] = (
        "12:00"
    ),
    limited: Annotated[bool, typer.Option(help="A limited proxy (no job start).")] = False,
    independent: Annotated[bool, typer.Option(help="An independent proxy.")] = False,
    path_length: Annotated[
        int | None, typer.Option(min=0, help="How many proxies may be made from this one.")
    ] = None,
    bits: Annotated[int, typer.Option(min=2048, help="RSA key size of the proxy.")] = 2048,
    out: Annotated[
        Path | None,
        typer.Option(envvar="X509_USER_PROXY", help="Output (default /tmp/x509up_u<uid>)."),
    ] = None,
    ca_dir: Annotated[
        Path | None, typer.Option(envvar="X509_CERT_DIR", help="Trust directory to verify with.")
    ] = None,
) -> None:
    """Make a proxy of your certificate (or of a proxy) and write it with mode 0600."""
    from pilotage.credentials.proxy import default_proxy_path, make_proxy, write_proxy_file
    from pilotage.x509.certificate import utc_text
    from pilotage.x509.chain import TrustStore, proxy_info, validate_chain

    with one_sentence_errors():
        lifetime_s = parse_valid(valid)
        chain, signing_key = _issuer(cert, key)
        proxy, proxy_key = make_proxy(
            chain[0],
            signing_key,
            chain[1:],
            lifetime_s=lifetime_s,
            limited=limited,
            independent=independent,
            key_bits=bits,
            path_length=path_length,
        )
        full_chain = [proxy, *chain]
        trust_dir = ca_dir or (GRID_CA_DIR if GRID_CA_DIR.is_dir() else None)
        if trust_dir is not None:
            validate_chain(full_chain, TrustStore.from_directory(trust_dir), key=proxy_key)
        target = write_proxy_file(out or default_proxy_path(), proxy, proxy_key, chain)
        info = proxy_info(full_chain)
        typer.echo(f"Your identity: {info.identity}")
        typer.echo(f"Proxy ({info.proxy_type}) written to {target}")
        clipped = info.time_left_s < lifetime_s - 60
        note = " (clipped to the end of the signing certificate)" if clipped else ""
        typer.echo(f"Valid until {utc_text(info.not_after)}{note}")
        if trust_dir is None:
            typer.echo("Not verified: no trust directory (--ca-dir or X509_CERT_DIR).", err=True)


@app.command("info")
def info_cmd(
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            envvar="X509_USER_PROXY",
            help="Proxy file (default /tmp/x509up_u<uid>).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Describe a proxy: subject, identity, issuer, type, path length, time left, key bits."""
    from pilotage.credentials.private_file import read_credential_file
    from pilotage.credentials.proxy import default_proxy_path
    from pilotage.x509.chain import load_credential, proxy_info

    with one_sentence_errors():
        path = file or default_proxy_path()
        chain, _ = load_credential(read_credential_file(path, "proxy file"))
        info = proxy_info(chain)
        if as_json:
            typer.echo(json.dumps({**info.to_dict(), "path": os.fspath(path)}, indent=1))
            return
        hours, rest = divmod(info.time_left_s, 3600)
        rows = {
            "subject": info.subject,
            "issuer": info.issuer,
            "identity": info.identity,
            "type": info.proxy_type
            if info.proxy_type == "none"
            else f"{info.proxy_type} (RFC 3820)",
            "strength": f"{info.key_bits} bits",
            "path": os.fspath(path),
            "path length": "unlimited" if info.path_length is None else str(info.path_length),
            "timeleft": f"{hours}:{rest // 60:02d}:{rest % 60:02d}",
        }
        for label, value in rows.items():
            typer.echo(f"{label:<12}: {value}")
        if info.time_left_s == 0:
            typer.echo("The proxy has expired.", err=True)
