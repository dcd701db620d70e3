"""The pool's own PKI: a CA, server certificates it signs, and the token signing key.

``pilotage init`` uses these to make a pool that runs on one machine without a real CA.
Every key is EC P-256 and every signature SHA-256. The CA has ``pathlen:0``: it signs
end-entity certificates only, never another CA, so a stolen server key cannot mint a
sub-CA. Certificates start five minutes in the past so a peer whose clock is slightly
behind still accepts them.

Private keys are written by :func:`write_private` only, which never overwrites: replacing
a key invalidates everything it signed, so it must be a deliberate act of the operator.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pilotage.errors import BadInput, OperatorError

#: How far back ``notBefore`` is set, for peers whose clock lags ours.
BACKDATE = datetime.timedelta(minutes=5)

# One DNS label: letters, digits and inner hyphens (RFC 1123), as certificates carry them.
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def create_pool_ca(common_name: str, *, lifetime_days: int = 3650) -> tuple[bytes, bytes]:
    """Make a self-signed pool CA; return ``(certificate PEM, private key PEM)``.

    The CA may sign certificates (``keyCertSign``) and revocation lists (``cRLSign``) and
    nothing else, and only end-entity certificates (``pathlen:0``).
    """
    _check_common_name(common_name)
    _check_lifetime(lifetime_days)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=lifetime_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _private_pem(key)


def issue_server_cert(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    *,
    hostnames: list[str],
    ip_addresses: list[str],
    lifetime_days: int = 825,
) -> tuple[bytes, bytes]:
    """Sign a TLS server certificate for these names; return ``(certificate PEM, key PEM)``.

    The names go into the subject alternative name, which is all that TLS clients check;
    the subject's common name is the first of them, for people reading logs. The
    certificate never outlives the CA: its lifetime is cut to the CA's end.

    Raises :class:`BadInput` for a malformed host name or IP address and
    :class:`OperatorError` when the CA files are unusable (not PEM, not a CA, key and
    certificate that do not belong together, CA expired).
    """
    dns_names = _checked_hostnames(hostnames)
    ips = _checked_ip_addresses(ip_addresses)
    if not dns_names and not ips:
        raise BadInput("a server certificate needs at least one host name or IP address")
    _check_lifetime(lifetime_days)
    ca_cert, ca_key = _load_ca(ca_cert_pem, ca_key_pem)

    now = _now()
    not_after = min(now + datetime.timedelta(days=lifetime_days), ca_cert.not_valid_after_utc)
    if not_after <= now:
        raise OperatorError(
            f"the pool CA expired on {ca_cert.not_valid_after_utc:%Y-%m-%d}; make a new one"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    first_name = dns_names[0] if dns_names else str(ips[0])
    san: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    san += [x509.IPAddress(ip) for ip in ips]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                # ECDHE-ECDSA handshakes sign with the server key; nothing else is needed.
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _private_pem(key)


def create_token_signing_key() -> bytes:
    """Make a new EC P-256 key for signing pool tokens (ES256); return it as PEM."""
    return _private_pem(ec.generate_private_key(ec.SECP256R1()))


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 and write ``data`` to it; never overwrite.

    The file is created exclusively (``O_EXCL``, which also refuses a symbolic link in
    its place), so an existing key is never replaced by accident. If writing fails
    half-way the partial file is removed.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise OperatorError(
            f"{path} already exists and pilotage never overwrites a private key; "
            "remove it deliberately if you mean to replace it"
        ) from None
    except OSError as exc:
        raise OperatorError(f"cannot create {path}: {exc.strerror}") from exc
    try:
        # The umask may only have removed bits, but say exactly what we mean.
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def _now() -> datetime.datetime:
    # Certificates carry whole seconds; drop the rest so what we build is what we read back.
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _check_common_name(common_name: str) -> None:
    # X.520 limits commonName to 64 characters; cryptography would refuse it later, less clearly.
    if not common_name or len(common_name) > 64 or not common_name.isprintable():
        raise BadInput(f"CA name {common_name!r} must be 1 to 64 printable characters")


def _check_lifetime(lifetime_days: int) -> None:
    if isinstance(lifetime_days, bool) or not isinstance(lifetime_days, int) or lifetime_days < 1:
        raise BadInput(f"certificate lifetime {lifetime_days!r} must be a positive number of days")


def _checked_hostnames(hostnames: list[str]) -> list[str]:
    checked: list[str] = []
    for name in hostnames:
        labels = name.split(".") if isinstance(name, str) else []
        if not labels or len(name) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
            raise BadInput(
                f"host name {name!r} is not a DNS name (letters, digits, hyphens and dots; "
                "write internationalised names in their xn-- form)"
            )
        if name.lower() not in checked:
            checked.append(name.lower())
    return checked


def _checked_ip_addresses(
    ip_addresses: list[str],
) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    checked: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for text in ip_addresses:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            raise BadInput(f"{text!r} is not an IPv4 or IPv6 address") from None
        if ip not in checked:
            checked.append(ip)
    return checked


def _load_ca(
    ca_cert_pem: bytes, ca_key_pem: bytes
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    except ValueError:
        raise OperatorError("the pool CA certificate is not a PEM certificate") from None
    try:
        ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    except (ValueError, TypeError):
        raise OperatorError("the pool CA key is not an unencrypted PEM private key") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise OperatorError("the pool CA key is not an EC key")
    if ca_key.public_key() != ca_cert.public_key():
        raise OperatorError("the pool CA key does not belong to the pool CA certificate")
    try:
        constraints = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise OperatorError(
            "the pool CA certificate is not a CA certificate (no basicConstraints CA:TRUE "
            "or no subject key identifier)"
        )
    return ca_cert, ca_key
