"""Test helpers for X.509: a throwaway PKI, and a forge for deviant certificates.

Shipped in the package (as trio ships ``trio.testing``) so tests of the server, the
credential store and the switch build real credentials the same way. ``forge`` makes
certificates that break one rule at a time; never use it outside tests.
"""

from __future__ import annotations

import datetime as dt
import functools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from pilotage.credentials.ca import CertificateAuthority, IssuedCredential
from pilotage.credentials.proxy import encode_proxy_cert_info, make_proxy
from pilotage.credentials.trustdir import ALL_SUBJECTS
from pilotage.x509.certificate import PPL_INHERIT_ALL, PROXY_CERT_INFO_OID, CredentialKey
from pilotage.x509.chain import TrustStore

Extension = tuple[x509.ExtensionType, bool]


@functools.cache
def spare_key(bits: int = 2048, index: int = 0) -> rsa.RSAPrivateKey:
    """An RSA key made once per process, to keep tests fast where any key will do."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@dataclass
class Pki:
    """A CA in ``root / "ca"``, a user Alice, and the CA's trust directory loaded."""

    ca: CertificateAuthority
    user: IssuedCredential
    trust_dir: Path
    trust: TrustStore

    def proxy(
        self, *, depth: int = 1, lifetime_s: int = 3600, limited: bool = False
    ) -> tuple[list[x509.Certificate], CredentialKey]:
        """A chain of ``depth`` proxies of the user (leaf first, user last) and the leaf key."""
        chain: list[x509.Certificate] = [self.user.cert]
        key: CredentialKey = self.user.key
        for _ in range(depth):
            cert, key = make_proxy(chain[0], key, chain[1:], lifetime_s=lifetime_s, limited=limited)
            chain.insert(0, cert)
        return chain, key


def make_pki(
    root: Path,
    *,
    ca_subject: str = "CN=pilotage test CA,O=Example",
    user_subject: str = "CN=Alice,O=Example",
    subjects: Sequence[str] = ALL_SUBJECTS,
) -> Pki:
    """Create a CA (2048-bit key, for speed) and a user under ``root``.

    ``subjects`` is the CA's namespace (globs); its trust directory carries it as
    ``<hash>.namespaces`` and ``<hash>.signing_policy``, as validators require.
    """
    ca = CertificateAuthority.init(root / "ca", ca_subject, key_bits=2048, subjects=subjects)
    user = ca.issue_user(user_subject)
    trust_dir = root / "ca" / "certificates"
    return Pki(ca, user, trust_dir, TrustStore.from_directory(trust_dir))


def proxy_extension(
    language: str = PPL_INHERIT_ALL, path_length: int | None = None, *, critical: bool = True
) -> Extension:
    """A ProxyCertInfo extension, ready for ``forge``."""
    der = encode_proxy_cert_info(language, path_length)
    return x509.UnrecognizedExtension(PROXY_CERT_INFO_OID, der), critical


def proxy_subject(issuer: x509.Certificate, cn: str | None = None) -> x509.Name:
    """The RFC 3820 subject of a proxy of ``issuer``: its subject plus ``CN=cn``."""
    last = x509.NameAttribute(NameOID.COMMON_NAME, cn or str(secrets.randbelow(10**12) + 1))
    return x509.Name([*issuer.subject.rdns, x509.RelativeDistinguishedName([last])])


def forge(
    subject: x509.Name,
    signer: tuple[x509.Certificate, CredentialKey] | None,
    *,
    key: rsa.RSAPrivateKey | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    extensions: Sequence[Extension] = (),
    algorithm: hashes.HashAlgorithm | None = None,
    issuer_name: x509.Name | None = None,
    serial: int | None = None,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A certificate exactly as described, signed by ``signer`` (self-signed when None).

    Defaults: a fresh RSA 2048 key, valid from five minutes ago for one hour, SHA-256.
    """
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    signing_cert, signing_key = signer if signer is not None else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name or (signing_cert.subject if signing_cert else subject))
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(minutes=5))
        .not_valid_after(not_after or now + dt.timedelta(hours=1))
    )
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(signing_key, algorithm or hashes.SHA256()), key  # type: ignore[arg-type]
