"""The CA over a directory: its files, the certificates it issues, revocation and CRLs."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from pilotage.credentials.ca import CertificateAuthority
from pilotage.credentials.names import parse_subject
from pilotage.credentials.x509_testing import Pki, make_pki
from pilotage.errors import BadInput, Conflict, NotFound
from pilotage.x509.chain import TrustStore, validate_chain
from pilotage.x509.der import subject_hash


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def ext(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_oid(oid)


def test_ca_directory_layout_and_modes(pki: Pki) -> None:
    root = pki.ca.directory
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "ca.key").stat().st_mode) == 0o600
    names = {p.name for p in root.iterdir()}
    assert {
        "ca.key",
        "ca.pem",
        "serial",
        "index.json",
        "crl.pem",
        "issued",
        "certificates",
    } <= names
    cert = pki.ca.cert
    assert cert.subject == cert.issuer == parse_subject("CN=pilotage test CA,O=Example")
    bc = ext(cert, ExtensionOID.BASIC_CONSTRAINTS)
    assert bc.critical and bc.value == x509.BasicConstraints(ca=True, path_length=0)
    usage = ext(cert, ExtensionOID.KEY_USAGE).value
    assert isinstance(usage, x509.KeyUsage) and usage.key_cert_sign and usage.crl_sign


def test_init_refuses_an_existing_ca_and_bad_subjects(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(Conflict, match="already holds a CA"):
        CertificateAuthority.init(pki.ca.directory, "CN=Again")
    for subject in ("", "CN", "/XX=1/CN=a", "C=Switzerland"):
        with pytest.raises(BadInput):
            CertificateAuthority.init(tmp_path / "bad", subject, key_bits=2048)
    with pytest.raises(NotFound, match="not a CA directory"):
        CertificateAuthority(tmp_path / "nothing")


def test_user_certificate(pki: Pki) -> None:
    cert = pki.user.cert
    assert cert.subject.rfc4514_string() == "CN=Alice,O=Example"
    assert cert.issuer == pki.ca.cert.subject
    assert isinstance(pki.user.key, rsa.RSAPrivateKey) and pki.user.key.key_size == 2048
    assert ext(cert, ExtensionOID.BASIC_CONSTRAINTS).value == x509.BasicConstraints(
        ca=False, path_length=None
    )
    usage = ext(cert, ExtensionOID.KEY_USAGE).value
    assert isinstance(usage, x509.KeyUsage) and usage.digital_signature
    eku = ext(cert, ExtensionOID.EXTENDED_KEY_USAGE).value
    assert isinstance(eku, x509.ExtendedKeyUsage) and ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert cert.not_valid_after_utc <= pki.ca.cert.not_valid_after_utc
    assert validate_chain([cert], pki.trust, key=pki.user.key).identity_dn == "/O=Example/CN=Alice"


def test_slash_form_subject(pki: Pki) -> None:
    bob = pki.ca.issue_user("/DC=org/DC=example/O=Example/CN=Bob Builder")
    assert bob.cert.subject.rfc4514_string() == "CN=Bob Builder,O=Example,DC=example,DC=org"


def test_host_certificate(pki: Pki) -> None:
    host = pki.ca.issue_host("Node1.Example.org")
    assert host.cert.subject.rfc4514_string() == "CN=node1.example.org,O=Example"
    san = ext(host.cert, ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == ["node1.example.org"]
    eku = ext(host.cert, ExtensionOID.EXTENDED_KEY_USAGE).value
    assert isinstance(eku, x509.ExtendedKeyUsage) and ExtendedKeyUsageOID.SERVER_AUTH in eku
    for bad in ("", "-node", "node_1.example.org", "a" * 64 + ".org"):
        with pytest.raises(BadInput, match="not a valid host name"):
            pki.ca.issue_host(bad)


def test_serials_count_up_and_the_index_records_them(tmp_path: Path) -> None:
    own = make_pki(tmp_path)
    second = own.ca.issue_user("CN=Bob,O=Example")
    assert (own.user.cert.serial_number, second.cert.serial_number) == (1, 2)
    entries = own.ca.issued()
    assert [(e.serial, e.subject_dn, e.kind) for e in entries] == [
        (1, "/O=Example/CN=Alice", "user"),
        (2, "/O=Example/CN=Bob", "user"),
    ]
    assert (own.ca.directory / "issued" / "2.pem").is_file()
    # A second handle on the same directory continues the same counter.
    assert (
        CertificateAuthority(own.ca.directory).issue_host("h.example.org").cert.serial_number == 3
    )


def test_concurrent_issuing_never_repeats_a_serial(tmp_path: Path) -> None:
    own = make_pki(tmp_path)
    serials: list[int] = []

    def issue(n: int) -> None:
        ca = CertificateAuthority(own.ca.directory)
        for i in range(2):
            serials.append(ca.issue_user(f"CN=user{n}-{i},O=Example").cert.serial_number)

    threads = [threading.Thread(target=issue, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(serials) == list(range(2, 10))


def test_revocation_and_crl(tmp_path: Path) -> None:
    own = make_pki(tmp_path)
    bob = own.ca.issue_user("CN=Bob,O=Example")
    entry = own.ca.revoke(bob.cert, reason="keyCompromise")
    assert entry.revoked_at is not None and entry.reason == "keyCompromise"
    again = own.ca.revoke(bob.cert.serial_number)  # idempotent: the first date is kept
    assert again.revoked_at == entry.revoked_at
    crl = x509.load_pem_x509_crl((own.ca.directory / "crl.pem").read_bytes())
    revoked = crl.get_revoked_certificate_by_serial_number(bob.cert.serial_number)
    assert revoked is not None
    reason = revoked.extensions.get_extension_for_class(x509.CRLReason).value
    assert reason.reason == x509.ReasonFlags.key_compromise
    assert crl.get_revoked_certificate_by_serial_number(own.user.cert.serial_number) is None
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number >= 3
    assert crl.is_signature_valid(own.ca.cert.public_key())  # type: ignore[arg-type]
    index = json.loads((own.ca.directory / "index.json").read_text())
    assert index["issued"][1]["revoked_at"] == entry.revoked_at


def test_revoke_refuses_unknown_targets(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no certificate with serial 999"):
        pki.ca.revoke(999)
    other = make_pki(tmp_path, ca_subject="CN=Other CA,O=Example")
    with pytest.raises(BadInput, match="was not issued by this CA"):
        pki.ca.revoke(other.user.cert)
    with pytest.raises(BadInput, match="not a revocation reason"):
        pki.ca.revoke(pki.user.cert, reason="boredom")


def test_export_shares_a_trust_directory_between_cas(pki: Pki, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other", ca_subject="CN=Other CA,O=Example")
    shared = tmp_path / "certificates"
    pki.ca.export_trust_dir(shared)
    other.ca.export_trust_dir(shared)
    for ca in (pki.ca, other.ca):
        name_hash = subject_hash(ca.cert.subject.public_bytes())
        policies = {f"{name_hash}.namespaces", f"{name_hash}.signing_policy"}
        assert {f"{name_hash}.0", f"{name_hash}.r0", *policies} <= {
            p.name for p in shared.iterdir()
        }
    store = TrustStore.from_directory(shared)
    assert store.ca_count == 2
    validate_chain([other.user.cert], store, require_crl=True)
    validate_chain([pki.user.cert], store, require_crl=True)


def test_a_ca_with_a_namespace_writes_it_and_issues_only_inside_it(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(
        tmp_path / "ca", "CN=Narrow CA,O=Example", key_bits=2048, subjects=["/O=Example/OU=Users/*"]
    )
    name_hash = subject_hash(ca.cert.subject.public_bytes())
    assert (ca.directory / "certificates" / f"{name_hash}.namespaces").read_text() == (
        "#NAMESPACES-VERSION: 1.0\n"
        'TO Issuer "/O=Example/CN=Narrow CA" \\\n'
        '  PERMIT Subject "/O=Example/OU=Users/.*"\n'
    )
    assert (ca.directory / "certificates" / f"{name_hash}.signing_policy").read_text() == (
        "access_id_CA X509 '/O=Example/CN=Narrow CA'\n"
        "pos_rights globus CA:sign\n"
        "cond_subjects globus '\"/O=Example/OU=Users/*\"'\n"
    )
    carol = ca.issue_user("/O=Example/OU=Users/CN=Carol")
    store = TrustStore.from_directory(ca.directory / "certificates")
    assert validate_chain([carol.cert], store).identity_dn == "/O=Example/OU=Users/CN=Carol"
    with pytest.raises(BadInput, match="outside this CA's namespace"):
        ca.issue_user("/O=Example/CN=Dave")
    assert CertificateAuthority(ca.directory).subjects == ("/O=Example/OU=Users/*",)
    with pytest.raises(BadInput, match="cannot carry"):
        CertificateAuthority.init(tmp_path / "q", "CN=Quote's CA,O=Example", key_bits=2048)
    assert not (tmp_path / "q" / "ca.key").exists()
