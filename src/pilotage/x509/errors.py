"""Why an X.509 credential was refused: one exception class per rule.

It imports the standard library only, so a site's security officer can read it alone
(the switch and the server both raise these). The tree::

    CredentialError                 base; ``code`` is a stable string for logs and APIs
    ├── MalformedCredential         unreadable PEM/DER, missing certificate, bad extension
    ├── KeyMismatch                 the private key does not belong to the certificate
    ├── Expired                     a certificate of the chain has ended
    ├── NotYetValid                 a certificate of the chain has not started yet
    ├── UntrustedIssuer             the chain does not end at a CA of the trust directory
    ├── BadSignature                a signature does not verify, or uses a weak hash
    ├── Revoked                     a certificate is on its CA's revocation list
    ├── WeakKey                     a public key is shorter than the minimum
    ├── ProfileViolation            a certificate breaks the X.509 / RFC 3820 profile
    ├── ProxyNamingViolation        a proxy's subject is not its issuer's plus one CN
    ├── PathLengthExceeded          more proxies (or CAs) than a path length allows
    ├── ProxyPolicyViolation        unknown proxy policy, or a full proxy under a limited one
    ├── LimitedProxyRefused         a limited proxy where a full one is required
    ├── ProxyOutlivesIssuer         a proxy ends after the certificate that signed it
    ├── LegacyProxyRefused          a pre-RFC Globus proxy (``CN=proxy``, no ProxyCertInfo)
    ├── NamespaceViolation          a CA signed a subject outside its namespace policy
    └── TrustStoreError             the site's CA directory is at fault (CRL expired, ...)
        ├── NamespacePolicyMissing  a CA has neither ``.namespaces`` nor ``.signing_policy``
        └── NamespacePolicyMalformed  a CA's policy file cannot be parsed

Every class outside ``TrustStoreError`` means "the presented credential is bad" (the switch's
exit 201); ``TrustStoreError`` means the site must act (exit 202), so the two are never
confused. Messages are one sentence naming the certificate concerned by its subject.
"""

from __future__ import annotations


class CredentialError(Exception):
    """Base of every refusal of an X.509 credential."""

    code = "credential_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedCredential(CredentialError):
    """The PEM or DER cannot be read, or a required part is missing or badly encoded."""

    code = "malformed"


class KeyMismatch(CredentialError):
    """The private key given with a certificate is not the key of that certificate."""

    code = "key_mismatch"


class Expired(CredentialError):
    """A certificate of the chain is past its notAfter time."""

    code = "expired"


class NotYetValid(CredentialError):
    """A certificate of the chain starts later than now plus the clock-skew allowance."""

    code = "not_yet_valid"


class UntrustedIssuer(CredentialError):
    """The chain cannot be completed up to a self-signed CA of the trust directory."""

    code = "untrusted_issuer"


class BadSignature(CredentialError):
    """A certificate's signature does not verify with its issuer's key, or uses a weak hash."""

    code = "bad_signature"


class Revoked(CredentialError):
    """A certificate's serial number is on the revocation list of the CA that issued it."""

    code = "revoked"


class WeakKey(CredentialError):
    """A public key in the chain is shorter than the configured minimum."""

    code = "weak_key"


class ProfileViolation(CredentialError):
    """A certificate breaks the X.509 or RFC 3820 profile (a CA bit, a critical unknown ...)."""

    code = "profile_violation"


class ProxyNamingViolation(CredentialError):
    """A proxy's subject is not its issuer's subject followed by exactly one CN."""

    code = "proxy_naming"


class PathLengthExceeded(CredentialError):
    """A proxy (or CA) path-length constraint is exceeded by the certificates below it."""

    code = "path_length_exceeded"


class ProxyPolicyViolation(CredentialError):
    """A proxy uses an unknown policy language, or a limited proxy signed a full one."""

    code = "proxy_policy"


class LimitedProxyRefused(CredentialError):
    """The chain contains a limited proxy and the caller requires a full one."""

    code = "limited_proxy_refused"


class ProxyOutlivesIssuer(CredentialError):
    """A proxy's notAfter is later than that of the certificate that signed it."""

    code = "proxy_outlives_issuer"


class LegacyProxyRefused(CredentialError):
    """A legacy Globus proxy (``grid-proxy-init -old``): named as a proxy, with no extension.

    Taken as an end entity it would speak for ``.../CN=proxy``, a wrong identity.
    """

    code = "legacy_proxy"


class NamespaceViolation(CredentialError):
    """The CA's ``.namespaces`` or ``.signing_policy`` does not let it sign this subject."""

    code = "namespace_violation"


class TrustStoreError(CredentialError):
    """The site's trust directory cannot decide: a CRL is expired, forged or missing."""

    code = "trust_store"


class NamespacePolicyMissing(TrustStoreError):
    """A CA of the chain has no namespace policy file and the site requires one."""

    code = "namespace_policy_missing"


class NamespacePolicyMalformed(TrustStoreError):
    """A CA's ``.namespaces`` or ``.signing_policy`` file does not follow its format."""

    code = "namespace_policy_malformed"
