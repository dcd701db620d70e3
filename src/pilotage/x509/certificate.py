"""Reading one credential and inspecting one certificate, for the X.509 validator.

Nothing here decides trust; ``chain.py`` does, using these helpers. Imports: the standard
library, ``cryptography`` and the sibling ``errors`` and ``der`` modules only.
"""

from __future__ import annotations

import datetime as dt
import re

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import ExtensionOID, NameOID

from .der import DerError, ProxyCertInfo, canonical_name, decode_proxy_cert_info
from .errors import (
    BadSignature,
    KeyMismatch,
    LegacyProxyRefused,
    MalformedCredential,
    ProfileViolation,
)

PROXY_CERT_INFO_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.14")
DRAFT_PROXY_CERT_INFO_OID = x509.ObjectIdentifier("1.3.6.1.4.1.3536.1.222")
PPL_INHERIT_ALL = "1.3.6.1.5.5.7.21.1"
PPL_INDEPENDENT = "1.3.6.1.5.5.7.21.2"
PPL_LIMITED = "1.3.6.1.4.1.3536.1.1.1.9"
#: Policy language → proxy type. Any other language is refused (we cannot obey it).
PROXY_TYPES = {PPL_INHERIT_ALL: "full", PPL_INDEPENDENT: "independent", PPL_LIMITED: "limited"}

MAX_CREDENTIAL_BYTES = 1 << 20
MAX_CHAIN_LENGTH = 32
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
_ENCRYPTED = "The private key is encrypted; only unencrypted keys are supported for now."
_KEY_LABELS = frozenset({b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY"})
#: OpenSSL's short names, for the grid's "/O=Example/CN=Alice" form.
SHORT_NAMES = {
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COMMON_NAME: "CN",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.USER_ID: "UID",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.STREET_ADDRESS: "street",
    NameOID.TITLE: "title",
    NameOID.GIVEN_NAME: "GN",
    NameOID.SURNAME: "SN",
}

CredentialKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)


def dn_slash(name: x509.Name) -> str:
    """The grid form of a name, most significant RDN first: ``/O=Example/CN=Alice``.

    For display and grid-mapfile compatibility only: a ``/`` inside a value makes this
    form ambiguous, so compare identities with ``rfc4514_string()`` or ``name_key``.
    """
    parts = []
    for rdn in name.rdns:
        values = []
        for attr in rdn:
            value = attr.value if isinstance(attr.value, str) else attr.value.hex()
            values.append(f"{SHORT_NAMES.get(attr.oid, attr.oid.dotted_string)}={value}")
        parts.append("/" + "+".join(values))
    return "".join(parts)


def utc_text(when: dt.datetime) -> str:
    """A UTC time as ``2030-01-31 12:00:00Z``, for messages."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def subject_of(cert: x509.Certificate) -> str:
    """The subject of ``cert`` in grid form, for messages."""
    return dn_slash(cert.subject)


def name_key(name: x509.Name) -> bytes:
    """A comparison key for names: OpenSSL's canonical encoding (case and spaces folded)."""
    try:
        return canonical_name(name.public_bytes())
    except DerError as exc:
        raise MalformedCredential(f"The name '{dn_slash(name)}' is badly encoded ({exc}).") from exc


def extension(
    cert: x509.Certificate, oid: x509.ObjectIdentifier
) -> x509.Extension[x509.ExtensionType] | None:
    """The extension ``oid`` of ``cert``, None when absent; a malformed one is refused."""
    try:
        return cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:
        raise MalformedCredential(
            f"The certificate '{subject_of(cert)}' has malformed extensions ({exc})."
        ) from exc


def proxy_cert_info(cert: x509.Certificate) -> ProxyCertInfo | None:
    """The decoded ProxyCertInfo of ``cert``, or None when it is not an RFC 3820 proxy."""
    ext = extension(cert, PROXY_CERT_INFO_OID)
    if ext is None:
        if extension(cert, DRAFT_PROXY_CERT_INFO_OID) is not None:
            raise ProfileViolation(
                f"The proxy '{subject_of(cert)}' is a pre-RFC 3820 draft proxy, "
                "which is not supported."
            )
        _refuse_legacy_proxy(cert)
        return None
    if not isinstance(ext.value, x509.UnrecognizedExtension):
        raise MalformedCredential(
            f"The proxy '{subject_of(cert)}' has an unreadable ProxyCertInfo."
        )
    # Why: RFC 3820 §3.8 makes it critical, so software unaware of proxies refuses them.
    if not ext.critical:
        raise ProfileViolation(
            f"The proxy '{subject_of(cert)}' has a ProxyCertInfo extension not marked critical."
        )
    try:
        return decode_proxy_cert_info(ext.value.value)
    except DerError as exc:
        raise MalformedCredential(
            f"The proxy '{subject_of(cert)}' has a malformed ProxyCertInfo extension ({exc})."
        ) from exc


#: The last CN of a legacy Globus proxy (``grid-proxy-init -old``), full or limited.
LEGACY_PROXY_CNS = frozenset({"proxy", "limited proxy"})


def _refuse_legacy_proxy(cert: x509.Certificate) -> None:
    """Refuse a certificate named as a legacy Globus proxy: its issuer's subject + CN=proxy."""
    rdns = cert.subject.rdns
    last = list(rdns[-1]) if rdns else []
    # Why: with no extension to mark it, it would pass for an end entity named .../CN=proxy.
    if (
        len(last) == 1
        and last[0].oid == NameOID.COMMON_NAME
        and str(last[0].value).lower() in LEGACY_PROXY_CNS
        and name_key(x509.Name(rdns[:-1])) == name_key(cert.issuer)
    ):
        raise LegacyProxyRefused(
            f"The certificate '{subject_of(cert)}' is a legacy Globus proxy, which is not "
            "accepted; make an RFC 3820 proxy ('pilotage proxy init', or grid-proxy-init -rfc "
            "or voms-proxy-init -rfc)."
        )


def is_ca(cert: x509.Certificate) -> bool:
    """Whether ``cert`` carries basicConstraints with cA true."""
    ext = extension(cert, ExtensionOID.BASIC_CONSTRAINTS)
    return ext is not None and isinstance(ext.value, x509.BasicConstraints) and ext.value.ca


def key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    """The keyUsage extension of ``cert``, None when absent (no restriction)."""
    ext = extension(cert, ExtensionOID.KEY_USAGE)
    return ext.value if ext is not None and isinstance(ext.value, x509.KeyUsage) else None


def key_bits(cert: x509.Certificate) -> int:
    """Size of the certificate's public key in bits (RSA modulus, EC curve, EdDSA)."""
    public_key = cert.public_key()
    if isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return public_key.key_size
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return 256
    if isinstance(public_key, ed448.Ed448PublicKey):
        return 456
    raise ProfileViolation(f"The certificate '{subject_of(cert)}' has an unsupported key type.")


def verify_signature(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    """Check that ``issuer``'s key signed ``cert`` with a SHA-2 (or EdDSA) signature."""
    what = f"The signature on '{subject_of(cert)}' by '{subject_of(issuer)}'"
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        raise BadSignature(f"{what} uses an unsupported algorithm.") from None
    # Why: MD5 and SHA-1 collisions let a forger get a signature over a second certificate.
    if isinstance(algorithm, hashes.MD5 | hashes.SHA1):
        raise BadSignature(f"{what} uses the weak hash {algorithm.name}.")
    public_key = issuer.public_key()
    signature, tbs = cert.signature, cert.tbs_certificate_bytes
    try:
        if isinstance(public_key, rsa.RSAPublicKey) and algorithm is not None:
            scheme = cert.signature_algorithm_parameters
            if not isinstance(scheme, padding.PKCS1v15 | padding.PSS):
                raise BadSignature(f"{what} does not match the issuer's RSA key.")
            public_key.verify(signature, tbs, scheme, algorithm)
        elif isinstance(public_key, ec.EllipticCurvePublicKey) and algorithm is not None:
            public_key.verify(signature, tbs, ec.ECDSA(algorithm))
        elif isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            public_key.verify(signature, tbs)
        else:
            raise BadSignature(f"{what} does not match the issuer's key type.")
    except InvalidSignature:
        raise BadSignature(f"{what} does not verify.") from None


#: Public key types this module verifies signatures with.
PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)


def key_matches(cert: x509.Certificate, key: CredentialKey) -> bool:
    """Whether ``key`` is the private half of ``cert``'s public key."""
    public_key = cert.public_key()
    if not isinstance(public_key, PublicKey):
        return False
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return public_key.public_bytes(*spki) == key.public_key().public_bytes(*spki)


def check_key(cert: x509.Certificate, key: CredentialKey) -> None:
    """Refuse a private key that does not belong to ``cert``."""
    # Why: a proxy signed with a key other than the certificate's would not verify, and a
    # holder must not present a certificate whose key they do not have.
    if not key_matches(cert, key):
        raise KeyMismatch(
            f"The private key does not belong to the certificate '{subject_of(cert)}'."
        )


def load_private_key(block: bytes) -> CredentialKey:
    """Read one unencrypted PEM private key (PKCS#1, SEC1 or PKCS#8)."""
    try:
        key = serialization.load_pem_private_key(block, password=None)
    except TypeError:
        # Why: cryptography raises TypeError when a password would be needed.
        raise MalformedCredential(_ENCRYPTED) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise MalformedCredential(f"The private key cannot be read ({exc}).") from exc
    if not isinstance(
        key,
        rsa.RSAPrivateKey
        | ec.EllipticCurvePrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        raise MalformedCredential("The private key is of an unsupported type.")
    return key


def load_credential(pem: bytes) -> tuple[list[x509.Certificate], CredentialKey | None]:
    """Read a PEM credential: certificates (leaf first) and the private key, if present.

    The grid order is certificate, key, then the issuer chain; a bundle written root
    first is accepted too. The leaf is the certificate of the key when there is one,
    otherwise the one that issued no other; the rest follow by issuer links, and any
    unlinked certificate comes last in file order. Encrypted keys are refused.
    """
    if len(pem) > MAX_CREDENTIAL_BYTES:
        raise MalformedCredential(f"The credential is larger than {MAX_CREDENTIAL_BYTES} bytes.")
    certs: list[x509.Certificate] = []
    keys: list[CredentialKey] = []
    for match in _PEM_BLOCK.finditer(pem):
        label, block = match.group(1), match.group(0)
        if label == b"CERTIFICATE":
            try:
                certs.append(x509.load_pem_x509_certificate(block))
            except ValueError as exc:
                raise MalformedCredential(f"A certificate cannot be read ({exc}).") from exc
        elif label == b"ENCRYPTED PRIVATE KEY":
            raise MalformedCredential(_ENCRYPTED)
        elif label in _KEY_LABELS:
            keys.append(load_private_key(block))
        else:
            raise MalformedCredential(f"The credential holds an unexpected {label.decode()} block.")
    if not certs:
        raise MalformedCredential("The credential holds no PEM certificate.")
    if len(certs) > MAX_CHAIN_LENGTH or len(keys) > 1:
        raise MalformedCredential("The credential holds too many certificates or keys.")
    key = keys[0] if keys else None
    return order_chain(certs, key), key


def order_chain(
    certs: list[x509.Certificate], key: CredentialKey | None = None
) -> list[x509.Certificate]:
    """Put the leaf first and each certificate's issuer after it (see ``load_credential``)."""
    if key is not None:
        owners = [c for c in certs if key_matches(c, key)]
        if not owners:
            raise KeyMismatch(
                f"The private key belongs to no certificate of the credential "
                f"(the first is '{subject_of(certs[0])}')."
            )
        leaf = owners[0]
    else:
        issuer_keys = {
            name_key(c.issuer) for c in certs if name_key(c.issuer) != name_key(c.subject)
        }
        leaves = [c for c in certs if name_key(c.subject) not in issuer_keys]
        leaf = leaves[0] if leaves else certs[0]
    ordered, rest = [leaf], [c for c in certs if c is not leaf]
    while True:
        wanted = name_key(ordered[-1].issuer)
        nxt = next((c for c in rest if name_key(c.subject) == wanted), None)
        if nxt is None or wanted == name_key(ordered[-1].subject):
            break
        ordered.append(nxt)
        rest.remove(nxt)
    return ordered + rest
