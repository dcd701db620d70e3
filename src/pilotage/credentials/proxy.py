"""Making RFC 3820 proxy certificates, and writing proxy files as grid tools do.

A proxy is a short-lived certificate signed by the user's own key (or by another proxy)
that speaks for the user. Its subject is the issuer's subject plus ``CN=<serial>``; its
critical ProxyCertInfo extension says how much of the issuer's rights it carries:
``inheritAll`` (a full proxy), the Globus limited policy (a limited proxy: data transfer,
never job start) or ``independent`` (no rights of the issuer). Its validity is clipped
inside the issuer's.

For delegation the receiver makes its key and a CSR (``make_proxy_request``) and the
holder signs it (``sign_proxy_request``): the private key never crosses the wire.

Refusals reuse the switch's ``CredentialError`` classes, so the issuer that cannot sign
(expired, limited, out of path length) gets the same error as at validation.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from pilotage.credentials.atomic import write_file
from pilotage.errors import BadInput
from pilotage.x509.certificate import (
    PPL_INDEPENDENT,
    PPL_INHERIT_ALL,
    PPL_LIMITED,
    PROXY_CERT_INFO_OID,
    CredentialKey,
    check_key,
    is_ca,
    subject_of,
    utc_text,
)
from pilotage.x509.der import TAG_INTEGER, TAG_OCTET_STRING, TAG_OID, TAG_SEQUENCE, encode_tlv
from pilotage.x509.errors import (
    Expired,
    NotYetValid,
    PathLengthExceeded,
    ProfileViolation,
    ProxyPolicyViolation,
    WeakKey,
)
from pilotage.x509.proxy_info import proxy_info

#: Before "now", to absorb clock differences with the hosts that will check the proxy.
BACKDATE_S = 300
DEFAULT_LIFETIME_S = 12 * 3600
MIN_RSA_BITS = 2048


def encode_oid(dotted: str) -> bytes:
    """DER of an OBJECT IDENTIFIER given in dotted form."""
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            chunk.append(0x80 | (arc & 0x7F))
        body += bytes(reversed(chunk))
    return encode_tlv(TAG_OID, bytes(body))


def encode_proxy_cert_info(
    policy_language: str, path_length: int | None = None, policy: bytes | None = None
) -> bytes:
    """DER of ``ProxyCertInfo ::= SEQUENCE { pCPathLenConstraint INTEGER OPTIONAL,
    proxyPolicy SEQUENCE { policyLanguage OID, policy OCTET STRING OPTIONAL } }``."""
    body = b""
    if path_length is not None:
        if path_length < 0:
            raise BadInput("A proxy path length cannot be negative.")
        # One leading 0 bit keeps the INTEGER non-negative.
        body += encode_tlv(TAG_INTEGER, path_length.to_bytes(path_length.bit_length() // 8 + 1))
    proxy_policy = encode_oid(policy_language)
    if policy is not None:
        proxy_policy += encode_tlv(TAG_OCTET_STRING, policy)
    return encode_tlv(TAG_SEQUENCE, body + encode_tlv(TAG_SEQUENCE, proxy_policy))


def make_proxy(
    issuer_cert: x509.Certificate,
    issuer_key: CredentialKey,
    issuer_chain: Sequence[x509.Certificate] = (),
    *,
    lifetime_s: int = DEFAULT_LIFETIME_S,
    limited: bool = False,
    independent: bool = False,
    key_bits: int = 2048,
    path_length: int | None = None,
    now: dt.datetime | None = None,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A new RSA key and a proxy for it signed by ``issuer_key``; see ``sign_proxy_request``."""
    if key_bits < MIN_RSA_BITS:
        raise BadInput(f"A proxy key needs at least {MIN_RSA_BITS} bits, not {key_bits}.")
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_bits)
    cert = _sign(
        key.public_key(),
        issuer_cert,
        issuer_key,
        issuer_chain,
        lifetime_s=lifetime_s,
        limited=limited,
        independent=independent,
        path_length=path_length,
        now=now,
    )
    return cert, key


def make_proxy_request(
    key_bits: int = 2048,
) -> tuple[x509.CertificateSigningRequest, rsa.RSAPrivateKey]:
    """The receiver's half of delegation: a fresh key and a CSR for it (subject unused)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_bits)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "proxy")]))
        .sign(key, hashes.SHA256())
    )
    return csr, key


def sign_proxy_request(
    csr: x509.CertificateSigningRequest,
    issuer_cert: x509.Certificate,
    issuer_key: CredentialKey,
    issuer_chain: Sequence[x509.Certificate] = (),
    *,
    lifetime_s: int = DEFAULT_LIFETIME_S,
    limited: bool = False,
    independent: bool = False,
    path_length: int | None = None,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """The holder's half of delegation: a proxy for the CSR's key, signed by the issuer.

    Only the CSR's public key is used: the subject is always the issuer's plus a CN, so
    a requester cannot choose whom the proxy names. ``issuer_chain`` (the issuer's own
    issuers, leaf first) is read to honour path lengths set higher up.
    """
    if not csr.is_signature_valid:
        raise BadInput("The certificate request's signature does not verify.")
    public_key = csr.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise WeakKey(f"The requested proxy key has {public_key.key_size} bits, too short.")
    elif not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise BadInput("The certificate request's key is neither RSA nor EC.")
    return _sign(
        public_key,
        issuer_cert,
        issuer_key,
        issuer_chain,
        lifetime_s=lifetime_s,
        limited=limited,
        independent=independent,
        path_length=path_length,
        now=now,
    )


def _sign(
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    issuer_cert: x509.Certificate,
    issuer_key: CredentialKey,
    issuer_chain: Sequence[x509.Certificate],
    *,
    lifetime_s: int,
    limited: bool,
    independent: bool,
    path_length: int | None,
    now: dt.datetime | None,
) -> x509.Certificate:
    now = now or dt.datetime.now(dt.UTC)
    check_key(issuer_cert, issuer_key)
    if lifetime_s <= 0:
        raise BadInput("A proxy lifetime must be positive.")
    if limited and independent:
        raise BadInput("A proxy is either limited or independent, not both.")
    _check_issuer(issuer_cert, issuer_chain, limited, now)
    serial = secrets.randbelow(2**63 - 1) + 1
    language = PPL_LIMITED if limited else PPL_INDEPENDENT if independent else PPL_INHERIT_ALL
    # RFC 3820 §3.4: the issuer's subject, RDN for RDN, then one CN naming this proxy.
    subject = x509.Name(
        [
            *issuer_cert.subject.rdns,
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, str(serial))]),
        ]
    )
    not_before = max(now - dt.timedelta(seconds=BACKDATE_S), issuer_cert.not_valid_before_utc)
    not_after = min(now + dt.timedelta(seconds=lifetime_s), issuer_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.UnrecognizedExtension(
                PROXY_CERT_INFO_OID, encode_proxy_cert_info(language, path_length)
            ),
            critical=True,
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    algorithm = (
        None
        if isinstance(issuer_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        else hashes.SHA256()
    )
    return builder.sign(issuer_key, algorithm)


def _check_issuer(
    issuer_cert: x509.Certificate,
    issuer_chain: Sequence[x509.Certificate],
    limited: bool,
    now: dt.datetime,
) -> None:
    """Refuse, as the validator would later, an issuer that cannot sign this proxy."""
    who = subject_of(issuer_cert)
    if is_ca(issuer_cert):
        raise ProfileViolation(f"The CA '{who}' cannot sign proxies; use a user certificate.")
    if issuer_cert.not_valid_after_utc <= now:
        raise Expired(
            f"The certificate '{who}' expired at {utc_text(issuer_cert.not_valid_after_utc)}."
        )
    if issuer_cert.not_valid_before_utc > now + dt.timedelta(seconds=BACKDATE_S):
        raise NotYetValid(
            f"The certificate '{who}' is not valid before "
            f"{utc_text(issuer_cert.not_valid_before_utc)}."
        )
    info = proxy_info([issuer_cert, *issuer_chain], now=now)
    if info.path_length == 0:
        raise PathLengthExceeded(f"The proxy '{who}' may not sign further proxies.")
    if info.proxy_type == "limited" and not limited:
        raise ProxyPolicyViolation(
            f"The proxy '{who}' is limited, so only a limited proxy can be made from it."
        )


def proxy_pem(
    cert: x509.Certificate, key: CredentialKey, chain: Sequence[x509.Certificate] = ()
) -> bytes:
    """A proxy file's content, in the grid order: certificate, key, then the issuer chain."""
    key_format = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if isinstance(key, rsa.RSAPrivateKey)
        else serialization.PrivateFormat.PKCS8
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, key_format, serialization.NoEncryption()
    )
    pem = cert.public_bytes(serialization.Encoding.PEM) + key_pem
    return pem + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)


def write_proxy_file(
    path: str | os.PathLike[str],
    cert: x509.Certificate,
    key: CredentialKey,
    chain: Sequence[x509.Certificate] = (),
) -> Path:
    """Write a proxy file with mode 0600 (see ``atomic.write_file`` for the safety rules)."""
    return write_file(path, proxy_pem(cert, key, chain), mode=0o600)


def default_proxy_path() -> Path:
    """``$X509_USER_PROXY``, else ``/tmp/x509up_u<uid>`` as grid tools use."""
    return Path(os.environ.get("X509_USER_PROXY") or f"/tmp/x509up_u{os.getuid()}")  # noqa: S108
