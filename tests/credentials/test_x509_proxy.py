"""Proxies as made here: RFC 3820 structure, delegation by CSR, and proxy files."""

from __future__ import annotations

import datetime as dt
import os
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtensionOID, NameOID

from pilotage.credentials.proxy import (
    default_proxy_path,
    encode_proxy_cert_info,
    make_proxy,
    make_proxy_request,
    sign_proxy_request,
    write_proxy_file,
)
from pilotage.credentials.x509_testing import Pki, make_pki, spare_key
from pilotage.errors import BadInput
from pilotage.x509.certificate import (
    PPL_INDEPENDENT,
    PPL_INHERIT_ALL,
    PPL_LIMITED,
    PROXY_CERT_INFO_OID,
    proxy_cert_info,
)
from pilotage.x509.chain import (
    Expired,
    KeyMismatch,
    ProfileViolation,
    WeakKey,
    load_credential,
    validate_chain,
)
from pilotage.x509.der import ProxyCertInfo, decode_proxy_cert_info


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_proxy_follows_rfc_3820(pki: Pki) -> None:
    proxy, key = make_proxy(pki.user.cert, pki.user.key, lifetime_s=3600)
    assert proxy.issuer == pki.user.cert.subject
    assert proxy.subject.rdns[:-1] == pki.user.cert.subject.rdns
    (cn,) = proxy.subject.rdns[-1]
    assert cn.oid == NameOID.COMMON_NAME and cn.value == str(proxy.serial_number)
    pci = proxy.extensions.get_extension_for_oid(PROXY_CERT_INFO_OID)
    assert pci.critical
    assert proxy_cert_info(proxy) == ProxyCertInfo(None, PPL_INHERIT_ALL, None)
    usage = proxy.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE)
    assert usage.critical
    assert isinstance(usage.value, x509.KeyUsage)
    assert usage.value.digital_signature and usage.value.key_encipherment
    assert not usage.value.key_cert_sign and not usage.value.content_commitment
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    lifetime = proxy.not_valid_after_utc - proxy.not_valid_before_utc
    assert dt.timedelta(minutes=64) <= lifetime <= dt.timedelta(minutes=66)  # 5 min backdated


def test_proxy_validity_is_clipped_inside_the_issuers(pki: Pki) -> None:
    proxy, _ = make_proxy(pki.user.cert, pki.user.key, lifetime_s=10 * 365 * 86400)
    assert proxy.not_valid_after_utc == pki.user.cert.not_valid_after_utc
    assert proxy.not_valid_before_utc >= pki.user.cert.not_valid_before_utc


@pytest.mark.parametrize(
    ("limited", "independent", "language"),
    [(False, False, PPL_INHERIT_ALL), (True, False, PPL_LIMITED), (False, True, PPL_INDEPENDENT)],
)
def test_policy_languages(pki: Pki, limited: bool, independent: bool, language: str) -> None:
    proxy, _ = make_proxy(
        pki.user.cert, pki.user.key, limited=limited, independent=independent, path_length=3
    )
    assert proxy_cert_info(proxy) == ProxyCertInfo(3, language, None)


def test_proxy_cert_info_der_by_hand() -> None:
    # SEQUENCE { SEQUENCE { OID 1.3.6.1.5.5.7.21.1 } }
    assert encode_proxy_cert_info(PPL_INHERIT_ALL).hex() == "300c300a06082b06010505071501"
    # SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.6.1.4.1.3536.1.1.1.9 } }, as made by
    # "openssl asn1parse -genconf": 3536 is the two base-128 bytes 9b 50.
    expected = "3012020100300d060b2b060104019b5001010109"
    assert encode_proxy_cert_info(PPL_LIMITED, 0).hex() == expected


@pytest.mark.parametrize("path_length", [0, 1, 127, 128, 255, 256, 2**31 - 1])
def test_proxy_cert_info_round_trip(path_length: int) -> None:
    der = encode_proxy_cert_info(PPL_INDEPENDENT, path_length, b"policy bytes")
    assert decode_proxy_cert_info(der) == ProxyCertInfo(
        path_length, PPL_INDEPENDENT, b"policy bytes"
    )


def test_make_proxy_refuses_what_the_validator_would(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(KeyMismatch):
        make_proxy(pki.user.cert, spare_key(index=1))
    with pytest.raises(Expired, match="'/O=Example/CN=Alice' expired"):
        make_proxy(
            pki.user.cert, pki.user.key, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=999)
        )
    ca_key = serialization.load_pem_private_key((pki.ca.directory / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    with pytest.raises(ProfileViolation, match="cannot sign proxies"):
        make_proxy(pki.ca.cert, ca_key)
    with pytest.raises(BadInput, match="at least 2048 bits"):
        make_proxy(pki.user.cert, pki.user.key, key_bits=1024)
    with pytest.raises(BadInput, match="either limited or independent"):
        make_proxy(pki.user.cert, pki.user.key, limited=True, independent=True)


def test_delegation_by_csr_keeps_the_key_with_the_receiver(pki: Pki) -> None:
    csr, receiver_key = make_proxy_request()
    proxy = sign_proxy_request(csr, pki.user.cert, pki.user.key, lifetime_s=600)
    result = validate_chain([proxy, pki.user.cert], pki.trust, key=receiver_key)
    assert result.identity_dn == "/O=Example/CN=Alice"
    # The requester cannot choose the name: the CSR said CN=proxy, the proxy is Alice's.
    assert proxy.subject.rdns[:-1] == pki.user.cert.subject.rdns


def test_delegation_refuses_a_forged_or_weak_request(pki: Pki) -> None:
    csr, _ = make_proxy_request()
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0xFF
    forged = x509.load_der_x509_csr(bytes(der))
    with pytest.raises(BadInput, match="signature does not verify"):
        sign_proxy_request(forged, pki.user.cert, pki.user.key)
    weak, _ = make_proxy_request(key_bits=1024)
    with pytest.raises(WeakKey, match="1024 bits"):
        sign_proxy_request(weak, pki.user.cert, pki.user.key)


# --- Proxy files -------------------------------------------------------------------------


def test_proxy_file_is_private_and_in_grid_order(pki: Pki, tmp_path: Path) -> None:
    proxy, key = make_proxy(pki.user.cert, pki.user.key)
    old_umask = os.umask(0)
    try:
        path = write_proxy_file(tmp_path / "x509up", proxy, key, [pki.user.cert])
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    labels = re.findall(rb"-----BEGIN ([A-Z ]+)-----", path.read_bytes())
    assert labels == [b"CERTIFICATE", b"RSA PRIVATE KEY", b"CERTIFICATE"]
    certs, loaded = load_credential(path.read_bytes())
    assert certs == [proxy, pki.user.cert] and loaded is not None
    # Replacing one's own proxy works, and leaves no temporary file behind.
    write_proxy_file(path, proxy, key, [pki.user.cert])
    assert [p.name for p in tmp_path.iterdir()] == ["x509up"]


def test_proxy_file_refuses_a_planted_symlink(pki: Pki, tmp_path: Path) -> None:
    proxy, key = make_proxy(pki.user.cert, pki.user.key)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "x509up").symlink_to(victim)
    with pytest.raises(BadInput, match="not a regular file"):
        write_proxy_file(tmp_path / "x509up", proxy, key)
    assert victim.read_text() == "precious"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a file owned by another user")
def test_proxy_file_refuses_another_users_file(pki: Pki, tmp_path: Path) -> None:
    proxy, key = make_proxy(pki.user.cert, pki.user.key)
    target = tmp_path / "x509up"
    target.write_text("someone else's")
    os.chown(target, 65534, 65534)
    with pytest.raises(BadInput, match="belongs to another user"):
        write_proxy_file(target, proxy, key)
    assert target.read_text() == "someone else's"


def test_default_proxy_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("X509_USER_PROXY", raising=False)
    assert default_proxy_path() == Path(f"/tmp/x509up_u{os.getuid()}")
    monkeypatch.setenv("X509_USER_PROXY", "/somewhere/proxy.pem")
    assert default_proxy_path() == Path("/somewhere/proxy.pem")
