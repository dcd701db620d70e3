"""Every refusal of login, delegation, the credential store and its releases: one class each.

Each class subclasses the :mod:`pilotage.errors` class whose HTTP status and exit code it
shares, so the API answers ``{"error": "<class name>", "message": ...}`` and the CLI
exits with the documented code; the class name tells a test, a log reader or a pilot
exactly which check refused. The tree::

    Unauthenticated (401)
    ├── UnknownNonce               a login nonce the server never issued
    ├── NonceExpired               a login nonce older than its lifetime
    ├── NonceReplayed              a login nonce already spent (replay)
    ├── LoginSignatureInvalid      the nonce was not signed by the proxy's key
    └── CredentialRefused          the X.509 chain failed validation (``code`` says why)
    Denied (403)
    ├── IdentityNotAuthorized      no [authz] rule grants this identity the role
    ├── ClaimNotHeld               the claim is another pilot's
    ├── WrongRetrievalKey          no key of this claim has that value
    ├── RetrievalKeyUsed           the key was spent by an earlier retrieval
    ├── RetrievalKeyExpired        the key is past its end
    └── X509Disabled               the pool trusts no CA ([x509] ca_dir is empty)
    NotFound (404)
    ├── NoStoredCredential         the owner has delegated nothing (or it was removed)
    └── UnknownDelegation          no pending delegation of that id for this caller
    Conflict (409)
    ├── IdentityChanged            a re-delegation or a job names another identity
    ├── CredentialTooShort         the stored credential ends before the job could
    ├── ClaimEnded                 the claim is over; its keys died with it
    ├── RetrievalKeyAlreadyIssued  a claim's first key is handed out once
    ├── StoredCredentialUnusable   the stored credential expired or cannot sign
    └── JobWithoutCredential       the claimed job was submitted without X.509
    BadInput (422)
    └── DelegationKeyMismatch      the signed proxy is not for the key the server made
"""

from __future__ import annotations

from pilotage.errors import BadInput, Conflict, Denied, NotFound, Unauthenticated
from pilotage.x509.errors import CredentialError


class UnknownNonce(Unauthenticated):
    """The login nonce was never issued by this pool."""


class NonceExpired(Unauthenticated):
    """The login nonce is older than its lifetime."""


class NonceReplayed(Unauthenticated):
    """The login nonce was already spent by an earlier attempt (a replay)."""


class LoginSignatureInvalid(Unauthenticated):
    """The login signature does not verify with the public key of the proxy presented."""


class CredentialRefused(Unauthenticated):
    """The X.509 chain failed validation; ``code`` is the validator's rule code."""

    def __init__(self, error: CredentialError) -> None:
        super().__init__(f"the X.509 credential is refused ({error.code}): {error.message}")
        self.code = error.code


class IdentityNotAuthorized(Denied):
    """No ``[authz]`` rule grants this identity the role it asks for or holds."""


class ClaimNotHeld(Denied):
    """The claim belongs to another pilot than the caller's."""


class WrongRetrievalKey(Denied):
    """No retrieval key of this claim has the value presented."""


class RetrievalKeyUsed(Denied):
    """The retrieval key was already spent; keys are one-time."""


class RetrievalKeyExpired(Denied):
    """The retrieval key is past its end."""


class NoStoredCredential(NotFound):
    """The owner has no delegated credential in the store."""


class UnknownDelegation(NotFound):
    """No pending delegation of that id belongs to the caller (or it timed out)."""


class IdentityChanged(Conflict):
    """A credential names another identity than the one stored (or the job's)."""


class CredentialTooShort(Conflict):
    """The stored credential ends before the job's walltime plus the margin."""


class ClaimEnded(Conflict):
    """The claim is no longer active; every key bound to it is dead."""


class RetrievalKeyAlreadyIssued(Conflict):
    """The claim's first retrieval key was already handed out."""


class StoredCredentialUnusable(Conflict):
    """The stored credential has expired, or can no longer sign a proxy."""


class JobWithoutCredential(Conflict):
    """The claimed job was submitted without an X.509 credential."""


class DelegationKeyMismatch(BadInput):
    """The proxy returned for a delegation certifies another key than the server's."""


class X509Disabled(Denied):
    """An X.509 credential was presented but the pool trusts no CA (``[x509] ca_dir``)."""
