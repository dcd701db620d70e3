"""Reading a credential file the caller names, and finding whom it speaks for.

A credential is an X.509 proxy (PEM: certificates and the proxy's private key), checked
by ``x509.validate_chain`` against the site's CA directory, or a bearer token (a JWT),
checked by ``bearer.verify`` against the site's issuer keys. The file must belong to the
caller and be closed to everyone else, so a caller cannot present a credential it merely
found readable. Validation results are cached by a digest of the file's bytes (see
``state.Cache``): cryptography is only imported on a miss.
"""

from __future__ import annotations

import os
import stat
import time

from .refusals import ClientError, SiteError
from .state import digest as digest_of

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .config import Config
    from .state import Cache

MAX_CREDENTIAL_BYTES = 1 << 20


class Identity:
    """Whom a credential speaks for: a DN (``x509``) or an issuer and subject (``token``).

    ``digest`` is that of the credential's bytes; ``not_after`` its end (Unix time).
    """

    def __init__(self, kind: str, subject: str, issuer: str, groups: tuple[str, ...],
                 not_after: float, digest: str) -> None:  # fmt: skip
        self.kind, self.subject, self.issuer, self.groups = kind, subject, issuer, groups
        self.not_after, self.digest = not_after, digest

    def fields(self) -> tuple[str, str, str, tuple[str, ...], float]:
        """What the cache keeps (all but the digest, which is its key)."""
        return self.kind, self.subject, self.issuer, self.groups, self.not_after

    @property
    def key(self) -> str:
        """One string per person: what leases and ``--refresh`` compare."""
        return (
            f"dn:{self.subject}" if self.kind == "x509" else f"token:{self.issuer} {self.subject}"
        )


def read_credential(path: str, caller_uid: int, what: str) -> bytes:
    """The bytes of the file at ``path``, if it is a regular file of the caller, mode 0600.

    Opened with the caller's rights (``access.open_as_caller``), checked before any read.
    """
    from .access import open_as_caller

    fd = open_as_caller(path, caller_uid, what)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ClientError(f"The {what} {path} is not a regular file.")
        if st.st_uid != caller_uid:
            raise ClientError(
                f"The {what} {path} is owned by uid {st.st_uid}, not by the caller "
                f"(uid {caller_uid})."
            )
        if st.st_mode & 0o077:
            raise ClientError(
                f"The {what} {path} is open to group or others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); it must be 0600 or 0400."
            )
        data = os.read(fd, MAX_CREDENTIAL_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_CREDENTIAL_BYTES or not data.strip():
        raise ClientError(f"The {what} {path} is empty or larger than 1 MiB.")
    return data


def identify(data: bytes, config: Config, cache: Cache, what: str) -> Identity:
    """Validate a credential's bytes; its identity, from the cache when seen recently."""
    digest = digest_of(data)
    try:
        trust_stamp = os.stat(config.trust_dir).st_mtime_ns
    except OSError:
        trust_stamp = 0
    key = f"{digest} {trust_stamp} {config.allow_limited} {config.require_namespaces}"
    cached = cache.get("credential", key)
    if isinstance(cached, tuple) and len(cached) == 5:
        identity = Identity(*cached, digest)
        if identity.not_after > time.time():
            return identity
    if data.lstrip().startswith(b"-----BEGIN"):
        identity = _x509_identity(data, config, digest, what)
    else:
        identity = _token_identity(data, config, digest, what)
    cache.put("credential", key, identity.fields())
    return identity


def _x509_identity(data: bytes, config: Config, digest: str, what: str) -> Identity:
    from ..x509.chain import (
        CredentialError,
        TrustStore,
        TrustStoreError,
        load_credential,
        validate_chain,
    )

    try:
        chain, key = load_credential(data)
        if key is None:
            raise ClientError(f"The {what} holds no private key.")
        trust = TrustStore.from_directory(
            config.trust_dir, require_namespaces=config.require_namespaces
        )
        result = validate_chain(chain, trust, key=key, allow_limited=config.allow_limited)
    except TrustStoreError as exc:
        raise SiteError(f"The CA directory cannot check the {what}: {exc.message}") from None
    except CredentialError as exc:
        raise ClientError(f"The {what} is not valid: {exc.message}") from None
    issuer = result.path[result.proxy_depth + 1].subject if len(result.path) > 1 else None
    from ..x509.certificate import dn_slash

    return Identity(
        "x509",
        result.identity_dn,
        dn_slash(issuer) if issuer is not None else "",
        (),
        result.not_after.timestamp(),
        digest,
    )


def _token_identity(data: bytes, config: Config, digest: str, what: str) -> Identity:
    from . import bearer

    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ClientError(f"The {what} is neither a PEM proxy nor a token.") from None
    try:
        token = bearer.verify(text, config.token_issuers, config.token_audiences)
    except ClientError as exc:
        raise ClientError(f"The {what} is not valid: {exc.message}") from None
    return Identity("token", token.subject, token.issuer, token.groups, token.expires_at, digest)


def claimed(data: bytes) -> tuple[str, float]:
    """The identity key and end time a credential *claims*, unverified (for ``--refresh``).

    Used only on the copy already in the target directory, which this switch validated
    when it wrote it; never to authorize anything.
    """
    if data.lstrip().startswith(b"-----BEGIN"):
        from ..x509.certificate import load_credential
        from ..x509.errors import CredentialError
        from ..x509.proxy_info import proxy_info

        try:
            info = proxy_info(load_credential(data)[0])
        except CredentialError as exc:
            raise ClientError(
                f"The current credential copy cannot be read: {exc.message}"
            ) from None
        return f"dn:{info.identity}", info.not_after.timestamp()
    import base64
    import binascii
    import json

    try:
        part = data.decode("ascii").strip().split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        return f"token:{claims['iss']} {claims['sub']}", float(claims["exp"])
    except (UnicodeDecodeError, IndexError, ValueError, KeyError, TypeError, binascii.Error):
        raise ClientError("The current credential copy is not a readable token.") from None
