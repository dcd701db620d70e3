"""``pilotage ca``: a certification authority for pools and tests.

The CA lives in a directory (``--dir`` or ``PILOTAGE_CA_DIR``); its ``certificates/``
sub-directory is a trust directory in the grid layout, kept current on every change,
that can be used as ``X509_CERT_DIR`` or ``openssl verify -CApath`` as it is.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pilotage.cli.x509_errors import one_sentence_errors
from pilotage.errors import BadInput

if TYPE_CHECKING:
    from pilotage.credentials.ca import CertificateAuthority

app = typer.Typer(
    help="A certification authority for pools and tests: certificates, revocation, CRLs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _authority() -> type[CertificateAuthority]:
    """The CA class, loaded when a command runs (the CLI starts without cryptography)."""
    from pilotage.credentials.ca import CertificateAuthority

    return CertificateAuthority


CaDir = Annotated[Path, typer.Option("--dir", envvar="PILOTAGE_CA_DIR", help="The CA directory.")]


@app.command("init")
def init_cmd(
    directory: CaDir,
    subject: Annotated[
        str, typer.Option(help="The CA's subject, e.g. 'CN=pilotage test CA,O=Example'.")
    ] = "CN=pilotage test CA,O=Example",
    days: Annotated[int, typer.Option(min=1, help="How long the CA certificate is valid.")] = 3650,
    key_bits: Annotated[int, typer.Option(min=2048, help="RSA key size of the CA.")] = 3072,
) -> None:
    """Create a CA: key (0600), self-signed certificate, empty CRL and trust directory."""
    with one_sentence_errors():
        ca = _authority().init(directory, subject, lifetime_days=days, key_bits=key_bits)
        typer.echo(f"created CA '{ca.cert.subject.rfc4514_string()}' in {directory}")
        typer.echo(f"trust directory: {directory / 'certificates'}")


@app.command("issue")
def issue_cmd(
    directory: CaDir,
    user: Annotated[
        str | None, typer.Option(help="A user subject, e.g. 'CN=Alice,O=Example'.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="A host name, e.g. node1.example.org.")] = None,
    days: Annotated[int | None, typer.Option(min=1, help="Validity (user 365, host 395).")] = None,
    out: Annotated[
        Path, typer.Option(help="Directory for usercert.pem/userkey.pem or hostcert/hostkey.")
    ] = Path(),
) -> None:
    """Issue a user or host certificate with a new RSA 2048 key (written unencrypted, 0600)."""
    with one_sentence_errors():
        if (user is None) == (host is None):
            raise BadInput("Give exactly one of --user SUBJECT or --host NAME.")
        prefix = "user" if user is not None else "host"
        cert_path, key_path = out / f"{prefix}cert.pem", out / f"{prefix}key.pem"
        for path in (cert_path, key_path):
            if path.exists():
                raise BadInput(f"{path} already exists; remove it or choose another --out.")
        ca = _authority()(directory)
        if user is not None:
            issued = ca.issue_user(user, lifetime_days=days or 365)
        else:
            assert host is not None
            issued = ca.issue_host(host, lifetime_days=days or 395)
        from pilotage.credentials.atomic import write_file

        out.mkdir(parents=True, exist_ok=True)
        write_file(key_path, issued.key_pem(), mode=0o600, replace=False)
        write_file(cert_path, issued.cert_pem(), mode=0o644, replace=False)
        typer.echo(
            f"issued serial {issued.cert.serial_number}: {issued.cert.subject.rfc4514_string()}"
        )
        typer.echo(f"certificate: {cert_path}")
        typer.echo(f"key: {key_path} (unencrypted, mode 0600)")


@app.command("revoke")
def revoke_cmd(
    directory: CaDir,
    target: Annotated[str, typer.Argument(help="A serial number or a certificate file.")],
    reason: Annotated[
        str, typer.Option(help="unspecified, keyCompromise, superseded, cessationOfOperation ...")
    ] = "unspecified",
) -> None:
    """Revoke a certificate and publish a new CRL (also in the trust directory)."""
    with one_sentence_errors():
        from cryptography import x509

        ca = _authority()(directory)
        what: int | x509.Certificate
        if target.isdigit():
            what = int(target)
        else:
            try:
                what = x509.load_pem_x509_certificate(Path(target).read_bytes())
            except (OSError, ValueError) as exc:
                raise BadInput(
                    f"'{target}' is neither a serial number nor a PEM certificate."
                ) from exc
        entry = ca.revoke(what, reason=reason)
        typer.echo(f"revoked serial {entry.serial}: {entry.subject}")


@app.command("crl")
def crl_cmd(directory: CaDir) -> None:
    """Sign a fresh CRL (do this before the previous one's next update)."""
    with one_sentence_errors():
        crl = _authority()(directory).crl()
        revoked, until = len(list(crl)), crl.next_update_utc
        typer.echo(f"CRL {directory / 'crl.pem'}: {revoked} revoked, next update {until}")


@app.command("export")
def export_cmd(
    directory: CaDir,
    trust_dir: Annotated[Path, typer.Argument(help="The trust directory to write into.")],
) -> None:
    """Copy the CA certificate and CRL into a trust directory as <hash>.0 and <hash>.r0."""
    with one_sentence_errors():
        for path in _authority()(directory).export_trust_dir(trust_dir):
            typer.echo(f"wrote {path}")


@app.command("list")
def list_cmd(
    directory: CaDir,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
) -> None:
    """List the certificates this CA issued, revoked ones marked."""
    with one_sentence_errors():
        entries = _authority()(directory).issued()
        if as_json:
            typer.echo(json.dumps([asdict(e) for e in entries], indent=1))
            return
        for e in entries:
            state = (
                f"revoked {e.revoked_at} ({e.reason})" if e.revoked_at else f"until {e.not_after}"
            )
            typer.echo(f"{e.serial:>6}  {e.kind:<4}  {e.subject_dn}  {state}")
