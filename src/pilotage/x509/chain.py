"""Validation of X.509 credentials and RFC 3820 proxy chains, for the switch and the server.

Read ``validate_chain`` top to bottom, then the rules it calls, each with a ``# Why:``.
Around it, in this package: ``trust_store.py`` (the trusted CAs, their CRLs and
namespace policies, the last read by ``namespaces.py``), ``certificate.py`` (reading a
credential file and one certificate), ``der.py`` (ProxyCertInfo, canonical names),
``errors.py`` (one exception per refusal), ``proxy_info.py`` (description without
judgement).

Trust comes only from the site's CA directory in the usual grid layout (``<hash>.0`` CA
certificates, ``<hash>.r0`` CRLs, ``*.pem``, ``<hash>.namespaces`` and
``<hash>.signing_policy``), and each CA is trusted only for its namespace. CA
certificates carried inside a credential are ignored. A path is: proxies (leaf first),
one end-entity certificate (a user's or a host's), then CAs of the directory up to a
self-signed one.

Imports: the standard library, ``cryptography`` and the sibling modules of this
package (which import no more), nothing else of pilotage.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtensionOID

from .certificate import (
    PPL_LIMITED,
    PROXY_CERT_INFO_OID,
    PROXY_TYPES,
    CredentialKey,
    check_key,
    dn_slash,
    extension,
    is_ca,
    key_bits,
    key_usage,
    load_credential,
    name_key,
    proxy_cert_info,
    subject_of,
    utc_text,
    verify_signature,
)
from .der import ProxyCertInfo
from .errors import (
    BadSignature,
    CredentialError,
    Expired,
    KeyMismatch,
    LegacyProxyRefused,
    LimitedProxyRefused,
    MalformedCredential,
    NamespacePolicyMalformed,
    NamespacePolicyMissing,
    NamespaceViolation,
    NotYetValid,
    PathLengthExceeded,
    ProfileViolation,
    ProxyNamingViolation,
    ProxyOutlivesIssuer,
    ProxyPolicyViolation,
    Revoked,
    TrustStoreError,
    UntrustedIssuer,
    WeakKey,
)
from .proxy_info import ProxyInfo, proxy_info
from .trust_store import TrustStore

__all__ = [
    "BadSignature",
    "CredentialError",
    "CredentialKey",
    "Expired",
    "KeyMismatch",
    "LegacyProxyRefused",
    "LimitedProxyRefused",
    "MalformedCredential",
    "NamespacePolicyMalformed",
    "NamespacePolicyMissing",
    "NamespaceViolation",
    "NotYetValid",
    "PathLengthExceeded",
    "ProfileViolation",
    "ProxyInfo",
    "ProxyNamingViolation",
    "ProxyOutlivesIssuer",
    "ProxyPolicyViolation",
    "Revoked",
    "TrustStore",
    "TrustStoreError",
    "UntrustedIssuer",
    "ValidatedChain",
    "WeakKey",
    "load_credential",
    "proxy_info",
    "validate_chain",
]

_MAX_CA_DEPTH = 8
#: Extensions understood here; any other one marked critical refuses the chain.
_KNOWN_EXTENSIONS = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.ISSUER_ALTERNATIVE_NAME,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.CRL_DISTRIBUTION_POINTS,
        ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
        PROXY_CERT_INFO_OID,
    }
)


@dataclass(frozen=True)
class ValidatedChain:
    """A chain that passed every rule: whom it speaks for, how, and until when.

    Compare identities with ``identity_rfc4514`` (unambiguous); ``identity_dn`` is the grid
    form for display, logs and grid-mapfiles. ``proxy_type`` is the most restrictive type
    in the chain: ``limited`` if any proxy is, else ``independent`` if any proxy is, else
    ``full``; ``none`` when the chain has no proxy.
    """

    identity_dn: str
    identity_rfc4514: str
    subject_dn: str
    proxy_type: str
    limited: bool
    not_after: dt.datetime
    key_bits: int
    proxy_depth: int
    path: tuple[x509.Certificate, ...]

    @property
    def end_entity(self) -> x509.Certificate:
        """The user's (or host's) own certificate."""
        return self.path[self.proxy_depth]


def validate_chain(
    chain: Sequence[x509.Certificate],
    trust: TrustStore,
    *,
    now: dt.datetime | None = None,
    allow_limited: bool = True,
    skew_s: float = 300,
    key: CredentialKey | None = None,
    require_crl: bool = False,
    min_key_bits: int = 2048,
) -> ValidatedChain:
    """Check ``chain`` (leaf first, as ``load_credential`` returns it) against ``trust``.

    Raises the ``CredentialError`` subclass of the first rule broken, in this order:
    key, links and signatures, profile and naming, proxy policy and path lengths,
    the CAs' namespace policies, validity windows, key sizes, revocation, then the
    limited-proxy policy.
    """
    if not chain:
        raise MalformedCredential("The credential holds no certificate.")
    # Why: with no CA at all every user would be refused for what is the site's problem.
    if trust.ca_count == 0:
        raise TrustStoreError(f"The trust directory {trust.directory} holds no CA certificate.")
    if now is not None and now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now or dt.datetime.now(dt.UTC)
    if key is not None:
        check_key(chain[0], key)
    proxies, end_entity = _proxy_path(chain)
    cas = _ca_path(end_entity, trust)
    path = [p for p, _ in proxies] + [end_entity] + cas
    for cert in path:
        _check_extensions(cert)
    _check_proxies(proxies, end_entity)
    # Why: a CA certificate is nobody's identity; presenting one is a mistake or an attack.
    if is_ca(end_entity):
        raise ProfileViolation(f"The certificate '{subject_of(end_entity)}' is a CA, not a user.")
    _check_cas(cas)
    # Pairs (end entity, its CA), (CA, its parent) ...; the self-signed root has no issuer.
    signed_by = list(zip(path[len(proxies) :], cas, strict=False))
    for cert, ca in signed_by:
        trust.check_namespace(cert, ca)
    for cert in path:
        _check_window(cert, now, skew_s)
    for (proxy, _), issuer in zip(proxies, path[1:], strict=False):
        # Why: a proxy speaks for its issuer, so it cannot be valid longer than the issuer.
        if proxy.not_valid_after_utc > issuer.not_valid_after_utc:
            raise ProxyOutlivesIssuer(
                f"The proxy '{subject_of(proxy)}' ends at {utc_text(proxy.not_valid_after_utc)}, "
                f"after its issuer '{subject_of(issuer)}'."
            )
    for cert in path:
        _check_key_size(cert, min_key_bits)
    for cert, ca in signed_by:
        trust.check_revocation(cert, ca, now, require_crl=require_crl)
    types = {PROXY_TYPES[info.policy_language] for _, info in proxies}
    limited = "limited" in types
    # Why: a limited proxy is meant for data transfer only, never to start a job.
    if limited and not allow_limited:
        raise LimitedProxyRefused(
            f"The proxy '{subject_of(chain[0])}' is limited and a full proxy is required here."
        )
    proxy_type = next((t for t in ("limited", "independent", "full") if t in types), "none")
    return ValidatedChain(
        identity_dn=dn_slash(end_entity.subject),
        identity_rfc4514=end_entity.subject.rfc4514_string(),
        subject_dn=subject_of(chain[0]),
        proxy_type=proxy_type,
        limited=limited,
        not_after=min(c.not_valid_after_utc for c in path),
        key_bits=key_bits(chain[0]),
        proxy_depth=len(proxies),
        path=tuple(path),
    )


def _pick_signer(
    cert: x509.Certificate, candidates: Sequence[x509.Certificate]
) -> x509.Certificate:
    """The candidate whose key signed ``cert``; the first one's error when none did."""
    errors: list[BadSignature] = []
    for candidate in candidates:
        try:
            verify_signature(cert, candidate)
            return candidate
        except BadSignature as exc:
            errors.append(exc)
    raise errors[0]


def _proxy_path(
    chain: Sequence[x509.Certificate],
) -> tuple[list[tuple[x509.Certificate, ProxyCertInfo]], x509.Certificate]:
    """Follow proxies from the leaf to the end entity, checking each link's signature."""
    proxies: list[tuple[x509.Certificate, ProxyCertInfo]] = []
    current, pool = chain[0], list(chain[1:])
    while (info := proxy_cert_info(current)) is not None:
        proxies.append((current, info))
        wanted = name_key(current.issuer)
        candidates = [c for c in pool if name_key(c.subject) == wanted]
        if not candidates:
            raise UntrustedIssuer(
                f"The issuer '{dn_slash(current.issuer)}' of the proxy '{subject_of(current)}' "
                "is missing from the credential."
            )
        issuer = _pick_signer(current, candidates)
        # Why: RFC 3820 §3.1: only an end entity or a proxy may sign a proxy, never a CA.
        if is_ca(issuer):
            raise ProfileViolation(
                f"The proxy '{subject_of(current)}' is signed directly by the CA "
                f"'{subject_of(issuer)}'."
            )
        pool.remove(issuer)
        current = issuer
    return proxies, current


def _ca_path(end_entity: x509.Certificate, trust: TrustStore) -> list[x509.Certificate]:
    """The trusted CAs from the end entity's issuer up to a self-signed one."""
    cas: list[x509.Certificate] = []
    current = end_entity
    # Why: only CAs of the directory count; a CA inside the credential is never an anchor.
    while not cas or name_key(current.issuer) != name_key(current.subject):
        candidates = trust.cas_named(current.issuer)
        if not candidates or len(cas) >= _MAX_CA_DEPTH:
            raise UntrustedIssuer(
                f"The issuer '{dn_slash(current.issuer)}' of '{subject_of(current)}' "
                "is not a CA of the trust directory."
            )
        current = _pick_signer(current, candidates)
        cas.append(current)
    return cas


def _check_extensions(cert: x509.Certificate) -> None:
    try:
        extensions = list(cert.extensions)
    except ValueError as exc:
        raise MalformedCredential(
            f"The certificate '{subject_of(cert)}' has malformed extensions ({exc})."
        ) from exc
    for ext in extensions:
        # Why: RFC 5280 §4.2: a critical extension one cannot interpret must be refused.
        if ext.critical and ext.oid not in _KNOWN_EXTENSIONS:
            raise ProfileViolation(
                f"The certificate '{subject_of(cert)}' has the unknown critical extension "
                f"{ext.oid.dotted_string}."
            )


def _check_proxies(
    proxies: list[tuple[x509.Certificate, ProxyCertInfo]], end_entity: x509.Certificate
) -> None:
    """RFC 3820 naming, profile, policy and path-length rules, leaf to end entity."""
    if not proxies:
        return
    issuers = [p for p, _ in proxies[1:]] + [end_entity]
    issuer_infos: list[ProxyCertInfo | None] = [i for _, i in proxies[1:]] + [None]
    for (proxy, info), issuer, issuer_info in zip(proxies, issuers, issuer_infos, strict=True):
        name = subject_of(proxy)
        rdns = proxy.subject.rdns
        last = list(rdns[-1]) if rdns else []
        # Why: RFC 3820 §3.4: the issuer's subject plus one CN, so the identity can't change.
        if (
            len(last) != 1
            or last[0].oid != x509.NameOID.COMMON_NAME
            or not last[0].value
            or name_key(x509.Name(rdns[:-1])) != name_key(issuer.subject)
        ):
            raise ProxyNamingViolation(
                f"The proxy '{name}' is not named as its issuer '{subject_of(issuer)}' "
                "followed by one CN."
            )
        # Why: RFC 3820 §3.5-3.7: a proxy names no one else and can sign no certificate.
        bc = extension(proxy, ExtensionOID.BASIC_CONSTRAINTS)
        usage = key_usage(proxy)
        if (
            (bc is not None and isinstance(bc.value, x509.BasicConstraints) and bc.value.ca)
            or extension(proxy, ExtensionOID.SUBJECT_ALTERNATIVE_NAME) is not None
            or extension(proxy, ExtensionOID.ISSUER_ALTERNATIVE_NAME) is not None
            or (usage is not None and (usage.key_cert_sign or usage.content_commitment))
        ):
            raise ProfileViolation(
                f"The proxy '{name}' carries a CA flag, an alternative name, "
                "or a certificate-signing or non-repudiation key usage."
            )
        # Why: RFC 3820 §3.1: the issuer's key must be allowed to sign (digitalSignature).
        issuer_usage = key_usage(issuer)
        if issuer_usage is not None and not issuer_usage.digital_signature:
            raise ProfileViolation(
                f"The certificate '{subject_of(issuer)}' lacks the digitalSignature key usage "
                "needed to sign proxies."
            )
        # Why: a policy we cannot read cannot be obeyed; RFC 3820 §4.1.3 says refuse it.
        if info.policy_language not in PROXY_TYPES:
            raise ProxyPolicyViolation(
                f"The proxy '{name}' has the unknown policy language {info.policy_language}."
            )
        # Why: limitation must not be shed by making a full proxy from a limited one.
        issuer_limited = issuer_info is not None and issuer_info.policy_language == PPL_LIMITED
        if issuer_limited and info.policy_language != PPL_LIMITED:
            raise ProxyPolicyViolation(
                f"The proxy '{name}' is not limited but its issuer '{subject_of(issuer)}' is."
            )
    _check_proxy_path_lengths(proxies)


def _check_proxy_path_lengths(proxies: list[tuple[x509.Certificate, ProxyCertInfo]]) -> None:
    # Why: pCPathLenConstraint caps how many proxies may follow below a proxy (RFC 3820 §3.8).
    remaining: int | None = None
    limiter: x509.Certificate | None = None
    for proxy, info in reversed(proxies):
        if remaining is not None:
            if remaining == 0:
                raise PathLengthExceeded(
                    f"The proxy '{subject_of(proxy)}' exceeds the proxy path length allowed "
                    f"by '{subject_of(limiter) if limiter else 'a proxy above it'}'."
                )
            remaining -= 1
        if info.path_length is not None and (remaining is None or info.path_length < remaining):
            remaining, limiter = info.path_length, proxy


def _check_cas(cas: list[x509.Certificate]) -> None:
    for below, ca in enumerate(cas):
        bc = extension(ca, ExtensionOID.BASIC_CONSTRAINTS)
        usage = key_usage(ca)
        # Why: only a certificate marked as a CA, allowed to sign certificates, may issue.
        if not (bc is not None and isinstance(bc.value, x509.BasicConstraints) and bc.value.ca):
            raise ProfileViolation(f"The certificate '{subject_of(ca)}' is not a CA.")
        if usage is not None and not usage.key_cert_sign:
            raise ProfileViolation(f"The CA '{subject_of(ca)}' may not sign certificates.")
        # Why: RFC 5280 §4.2.1.9: pathLenConstraint caps the intermediate CAs below a CA.
        if bc.value.path_length is not None and below > bc.value.path_length:
            raise PathLengthExceeded(
                f"The CA '{subject_of(ca)}' allows {bc.value.path_length} intermediate CAs "
                f"below it and the chain has {below}."
            )


def _check_window(cert: x509.Certificate, now: dt.datetime, skew_s: float) -> None:
    # Why: the allowance is for notBefore only: a proxy made seconds ago on a host whose
    # clock runs ahead must pass; nothing justifies using a credential past its end.
    if cert.not_valid_before_utc > now + dt.timedelta(seconds=skew_s):
        raise NotYetValid(
            f"The certificate '{subject_of(cert)}' is not valid before "
            f"{utc_text(cert.not_valid_before_utc)}."
        )
    if cert.not_valid_after_utc < now:
        raise Expired(
            f"The certificate '{subject_of(cert)}' expired at {utc_text(cert.not_valid_after_utc)}."
        )


def _check_key_size(cert: x509.Certificate, min_key_bits: int) -> None:
    bits = key_bits(cert)
    public_key = cert.public_key()
    # Why: short RSA keys can be factored; EC keys under 256 bits are as weak.
    if (isinstance(public_key, rsa.RSAPublicKey) and bits < min_key_bits) or bits < 256:
        raise WeakKey(f"The certificate '{subject_of(cert)}' has a {bits}-bit key, too short.")
