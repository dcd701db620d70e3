"""The pool PKI: the CA and server certificates verify with OpenSSL and in real TLS."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import stat
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from pilotage.credentials.pki import (
    create_pool_ca,
    create_token_signing_key,
    issue_server_cert,
    write_private,
)
from pilotage.errors import BadInput, OperatorError

E = TypeVar("E", bound=x509.ExtensionType)


@pytest.fixture(scope="module")
def ca() -> tuple[bytes, bytes]:
    return create_pool_ca("Test Pool CA")


@pytest.fixture(scope="module")
def server(ca: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    return issue_server_cert(
        *ca, hostnames=["localhost", "pool.example.org"], ip_addresses=["127.0.0.1", "::1"]
    )


@pytest.fixture
def pem_files(
    tmp_path: Path, ca: tuple[bytes, bytes], server: tuple[bytes, bytes]
) -> dict[str, Path]:
    files = {
        "ca": ca[0],
        "server": server[0],
        "server_key": server[1],
    }
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_bytes(data)
    return paths


@pytest.fixture
def openssl(require_service: Callable[[str, str], NoReturn]) -> str:
    path = shutil.which("openssl")
    if path is None:
        require_service("openssl", "the openssl command is not on PATH")
    return path


def extension(cert: x509.Certificate, kind: type[E]) -> x509.Extension[E]:
    return cert.extensions.get_extension_for_class(kind)


def test_ca_signs_end_entity_certificates_only(ca: tuple[bytes, bytes]) -> None:
    cert = x509.load_pem_x509_certificate(ca[0])
    constraints = extension(cert, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value == x509.BasicConstraints(ca=True, path_length=0)
    usage = extension(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    ski = extension(cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    assert cert.subject == cert.issuer
    assert cert.subject.rfc4514_string() == "CN=Test Pool CA"
    cert.verify_directly_issued_by(cert)


def test_ca_key_is_p256_and_matches(ca: tuple[bytes, bytes]) -> None:
    key = serialization.load_pem_private_key(ca[1], password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert key.public_key() == x509.load_pem_x509_certificate(ca[0]).public_key()


def test_ca_lifetime(ca: tuple[bytes, bytes]) -> None:
    cert = x509.load_pem_x509_certificate(create_pool_ca("Short", lifetime_days=30)[0])
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    # Backdated by five minutes for peers whose clock lags.
    assert lifetime == datetime.timedelta(days=30, minutes=5)


def test_server_certificate_extensions(
    ca: tuple[bytes, bytes], server: tuple[bytes, bytes]
) -> None:
    ca_cert = x509.load_pem_x509_certificate(ca[0])
    cert = x509.load_pem_x509_certificate(server[0])
    cert.verify_directly_issued_by(ca_cert)
    san = extension(cert, x509.SubjectAlternativeName).value
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "pool.example.org"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert extension(cert, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH]
    )
    assert extension(cert, x509.BasicConstraints).value.ca is False
    aki = extension(cert, x509.AuthorityKeyIdentifier).value
    ca_ski = extension(ca_cert, x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert cert.subject.rfc4514_string() == "CN=localhost"


def test_server_certificate_never_outlives_its_ca() -> None:
    ca_cert_pem, ca_key_pem = create_pool_ca("Short-lived CA", lifetime_days=10)
    cert_pem, _ = issue_server_cert(
        ca_cert_pem, ca_key_pem, hostnames=["localhost"], ip_addresses=[]
    )
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert.not_valid_after_utc == ca_cert.not_valid_after_utc


def test_server_certificate_for_an_ip_address_only(ca: tuple[bytes, bytes]) -> None:
    cert = x509.load_pem_x509_certificate(
        issue_server_cert(*ca, hostnames=[], ip_addresses=["10.0.0.7"])[0]
    )
    assert cert.subject.rfc4514_string() == "CN=10.0.0.7"


def test_openssl_verifies_the_server_certificate(openssl: str, pem_files: dict[str, Path]) -> None:
    for check in (["-verify_hostname", "localhost"], ["-verify_ip", "127.0.0.1"]):
        result = subprocess.run(
            [
                *(openssl, "verify", "-x509_strict", "-purpose", "sslserver", *check),
                *("-CAfile", str(pem_files["ca"]), str(pem_files["server"])),
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"{pem_files['server']}: OK"


def test_openssl_refuses_a_certificate_of_another_ca(
    openssl: str, pem_files: dict[str, Path], tmp_path: Path
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(create_pool_ca("Other Pool CA")[0])
    result = subprocess.run(
        [openssl, "verify", "-CAfile", str(other_ca), str(pem_files["server"])],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0


def handshake(pem_files: dict[str, Path], server_hostname: str) -> bytes:
    """Serve TLS on 127.0.0.1 port 0 with the server certificate; connect as a client.

    The client trusts the pool CA only and checks the name strictly (as Python 3.13's
    defaults do). Returns what the server sent through the TLS connection.
    """
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(pem_files["server"], pem_files["server_key"])
    client_context = ssl.create_default_context(cafile=pem_files["ca"])
    client_context.verify_flags |= ssl.VERIFY_X509_STRICT

    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(10)
                with server_context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"hello")
            except OSError:
                pass  # The client refused us; the client side reports why.

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client_context.wrap_socket(raw, server_hostname=server_hostname) as tls,
            ):
                return tls.recv(5)
        finally:
            thread.join(10)


@pytest.mark.parametrize("server_hostname", ["127.0.0.1", "localhost"])
def test_python_ssl_accepts_the_server(pem_files: dict[str, Path], server_hostname: str) -> None:
    assert handshake(pem_files, server_hostname) == b"hello"


def test_python_ssl_refuses_a_name_not_in_the_certificate(pem_files: dict[str, Path]) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(pem_files, "other.example.org")


@pytest.mark.parametrize(
    ("hostnames", "ip_addresses", "message"),
    [
        (["bad host"], [], "not a DNS name"),
        (["-lead.example.org"], [], "not a DNS name"),
        (["a..b"], [], "not a DNS name"),
        ([""], [], "not a DNS name"),
        (["bücher.example"], [], "xn--"),
        ([], ["300.1.1.1"], "not an IPv4 or IPv6 address"),
        ([], ["localhost"], "not an IPv4 or IPv6 address"),
        ([], [], "at least one host name or IP address"),
    ],
)
def test_server_certificate_refuses_bad_names(
    ca: tuple[bytes, bytes], hostnames: list[str], ip_addresses: list[str], message: str
) -> None:
    with pytest.raises(BadInput, match=message):
        issue_server_cert(*ca, hostnames=hostnames, ip_addresses=ip_addresses)


@pytest.mark.parametrize("lifetime_days", [0, -1])
def test_refuses_lifetimes_below_a_day(ca: tuple[bytes, bytes], lifetime_days: int) -> None:
    with pytest.raises(BadInput, match="positive number of days"):
        create_pool_ca("CA", lifetime_days=lifetime_days)
    with pytest.raises(BadInput, match="positive number of days"):
        issue_server_cert(*ca, hostnames=["x"], ip_addresses=[], lifetime_days=lifetime_days)


@pytest.mark.parametrize("common_name", ["", "x" * 65, "line\nbreak"])
def test_ca_refuses_a_bad_name(common_name: str) -> None:
    with pytest.raises(BadInput, match="1 to 64 printable characters"):
        create_pool_ca(common_name)


def test_refuses_a_ca_key_of_another_ca(ca: tuple[bytes, bytes]) -> None:
    other_key = create_pool_ca("Other")[1]
    with pytest.raises(OperatorError, match="does not belong"):
        issue_server_cert(ca[0], other_key, hostnames=["localhost"], ip_addresses=[])


def test_refuses_a_server_certificate_as_ca(server: tuple[bytes, bytes]) -> None:
    with pytest.raises(OperatorError, match="not a CA certificate"):
        issue_server_cert(*server, hostnames=["localhost"], ip_addresses=[])


def test_refuses_unusable_ca_files(ca: tuple[bytes, bytes]) -> None:
    with pytest.raises(OperatorError, match="not a PEM certificate"):
        issue_server_cert(b"garbage", ca[1], hostnames=["localhost"], ip_addresses=[])
    with pytest.raises(OperatorError, match="not an unencrypted PEM private key"):
        issue_server_cert(ca[0], b"garbage", hostnames=["localhost"], ip_addresses=[])
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(OperatorError, match="not an EC key"):
        issue_server_cert(ca[0], rsa_key, hostnames=["localhost"], ip_addresses=[])


def test_token_signing_key_is_p256() -> None:
    key = serialization.load_pem_private_key(create_token_signing_key(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert create_token_signing_key() != create_token_signing_key()


def test_write_private_creates_a_0600_file_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "pool-ca.key"
    old_umask = os.umask(0)
    try:
        write_private(path, b"secret")
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == b"secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_write_private_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "pool-ca.key"
    write_private(path, b"first")
    with pytest.raises(OperatorError, match=r"pool-ca\.key already exists.*remove it deliberately"):
        write_private(path, b"second")
    assert path.read_bytes() == b"first"


def test_write_private_refuses_a_symlink_in_place(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    link = tmp_path / "pool-ca.key"
    link.symlink_to(target)
    with pytest.raises(OperatorError, match="already exists"):
        write_private(link, b"secret")
    assert not target.exists()


def test_write_private_names_a_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "pool-ca.key"
    with pytest.raises(OperatorError, match=f"cannot create {path}"):
        write_private(path, b"secret")
