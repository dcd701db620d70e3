"""OpenSSL's subject hash and canonical names, checked against ``openssl x509 -hash``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from pilotage.credentials.names import parse_subject
from pilotage.credentials.x509_testing import forge, spare_key
from pilotage.x509.der import DerError, canonical_name, subject_hash

A = x509.NameAttribute
RDN = x509.RelativeDistinguishedName

SUBJECTS = {
    "simple": x509.Name(
        [RDN([A(NameOID.ORGANIZATION_NAME, "Example")]), RDN([A(NameOID.COMMON_NAME, "Alice")])]
    ),
    "case and spaces": x509.Name(
        [
            RDN([A(NameOID.ORGANIZATION_NAME, "  Example   Org ")]),
            RDN([A(NameOID.COMMON_NAME, "ALICE\t  Smith")]),
        ]
    ),
    "printable and ia5": x509.Name(
        [
            RDN([A(NameOID.COUNTRY_NAME, "CH")]),
            RDN([A(NameOID.DOMAIN_COMPONENT, "Org")]),
            RDN([A(NameOID.COMMON_NAME, "Bob Jones", _type=_ASN1Type.PrintableString)]),
            RDN([A(NameOID.EMAIL_ADDRESS, "Bob@Example.ORG")]),
        ]
    ),
    "multi-valued rdn": x509.Name(
        [
            RDN([A(NameOID.ORGANIZATION_NAME, "Example")]),
            RDN([A(NameOID.COMMON_NAME, "Carol"), A(NameOID.USER_ID, "carol01")]),
        ]
    ),
    "non-ascii": x509.Name(
        [
            RDN([A(NameOID.ORGANIZATION_NAME, "Société Générale")]),
            RDN([A(NameOID.COMMON_NAME, "José ÑÚÑEZ")]),
        ]
    ),
    "bmp string": x509.Name(
        [RDN([A(NameOID.COMMON_NAME, "Dave Ünal", _type=_ASN1Type.BMPString)])]
    ),
    "grid host": x509.Name(
        [
            RDN([A(NameOID.DOMAIN_COMPONENT, "org")]),
            RDN([A(NameOID.DOMAIN_COMPONENT, "example")]),
            RDN([A(NameOID.ORGANIZATIONAL_UNIT_NAME, "Services")]),
            RDN([A(NameOID.COMMON_NAME, "host/node1.example.org")]),
        ]
    ),
}


def openssl_hash(tmp_path: Path, name: x509.Name) -> str:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, _ = forge(name, None, key=spare_key())
    path = tmp_path / "cert.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


@pytest.mark.parametrize("label", sorted(SUBJECTS))
def test_subject_hash_matches_openssl(tmp_path: Path, label: str) -> None:
    name = SUBJECTS[label]
    assert subject_hash(name.public_bytes()) == openssl_hash(tmp_path, name)


def test_canonical_name_folds_case_spaces_and_string_type() -> None:
    loud = x509.Name(
        [
            RDN([A(NameOID.ORGANIZATION_NAME, " EXAMPLE ", _type=_ASN1Type.PrintableString)]),
            RDN([A(NameOID.COMMON_NAME, "Alice   Smith")]),
        ]
    )
    quiet = x509.Name(
        [
            RDN([A(NameOID.ORGANIZATION_NAME, "example")]),
            RDN([A(NameOID.COMMON_NAME, "alice smith")]),
        ]
    )
    assert canonical_name(loud.public_bytes()) == canonical_name(quiet.public_bytes())
    other = x509.Name([RDN([A(NameOID.COMMON_NAME, "alice smith")])])
    assert canonical_name(other.public_bytes()) != canonical_name(quiet.public_bytes())


def test_canonical_name_refuses_trailing_bytes() -> None:
    der = SUBJECTS["simple"].public_bytes()
    with pytest.raises(DerError):
        canonical_name(der + b"\x00")
    with pytest.raises(DerError):
        canonical_name(der[:-3])


def test_slash_and_rfc4514_subjects_are_the_same_name() -> None:
    slash = parse_subject("/DC=org/DC=example/O=Example/CN=host/node1.example.org")
    rfc = parse_subject("CN=host/node1.example.org,O=Example,DC=example,DC=org")
    assert slash == rfc
    assert subject_hash(slash.public_bytes()) == subject_hash(rfc.public_bytes())
