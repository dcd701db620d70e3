"""The credential store: one delegated X.509 credential per owner, its key sealed at rest.

Key handling. The server holds one 256-bit store key in ``<state>/credentials/store.key``
(mode 0600, made by ``pilotage init``, never overwritten). Every private key the store
keeps (a stored credential's, a pending delegation's) is sealed with AES-256-GCM under
it: a fresh 96-bit nonce per seal, and as associated data the record's purpose and
owner, so a sealed key copied into another owner's row does not open. A database dump
alone therefore gives no usable key; the store key and the database together do, so
keep the state directory as private as the database. Several servers on one PostgreSQL
database must share the same store key file.

Certificates are public and stored in PEM. Validation happens before anything is stored
(:mod:`pilotage.credentials.delegation`); this module only keeps and returns records.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pilotage.errors import Conflict, InternalError, OperatorError
from pilotage.store.tables import stored_credentials
from pilotage.x509.certificate import CredentialKey, load_private_key
from pilotage.x509.chain import ValidatedChain

KEY_BYTES = 32
_NONCE_BYTES = 12
_VERSION = b"\x01"
_AAD_PREFIX = b"pilotage-store-v1\x00"


class StoreKey:
    """The AES-256-GCM key that seals private keys at rest."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise OperatorError(f"the credential store key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(key)

    @classmethod
    def load(cls, path: Path) -> StoreKey:
        """Read the key, refusing a missing file or one that others may read."""
        try:
            st = os.stat(path)
            data = path.read_bytes()
        except FileNotFoundError:
            raise OperatorError(
                f"the credential store key {path} is missing; run 'pilotage init' to create it"
            ) from None
        except OSError as exc:
            raise OperatorError(
                f"cannot read the credential store key {path}: {exc.strerror}"
            ) from None
        # Why: a key others can read may already be copied; the operator must decide.
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise OperatorError(f"the credential store key {path} is readable by others; chmod 600")
        return cls(data)

    def seal(self, plaintext: bytes, purpose: str, owner: str) -> bytes:
        """``version || nonce || AES-GCM(plaintext)``, bound to ``purpose`` and ``owner``."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext, _aad(purpose, owner))
        return _VERSION + nonce + sealed

    def unseal(self, blob: bytes, purpose: str, owner: str) -> bytes:
        """The plaintext of a sealed record; InternalError if it was altered or moved."""
        if blob[:1] != _VERSION or len(blob) < 1 + _NONCE_BYTES + 16:
            raise InternalError(f"a sealed {purpose} record of {owner} has an unknown format")
        nonce, sealed = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, sealed, _aad(purpose, owner))
        except InvalidTag:
            raise InternalError(
                f"the sealed {purpose} record of {owner} does not open: it was altered, moved "
                "to another owner, or sealed under another store key"
            ) from None

    def seal_key(self, key: CredentialKey, purpose: str, owner: str) -> bytes:
        """Seal a private key (PKCS#8 PEM inside)."""
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return self.seal(pem, purpose, owner)

    def unseal_key(self, blob: bytes, purpose: str, owner: str) -> CredentialKey:
        """The private key sealed by :meth:`seal_key`."""
        return load_private_key(self.unseal(blob, purpose, owner))


def _aad(purpose: str, owner: str) -> bytes:
    return _AAD_PREFIX + purpose.encode() + b"\x00" + owner.encode()


@dataclass(frozen=True)
class StoredCredential:
    """What the store holds for one owner; the sealed key opens with :meth:`key`."""

    owner: str
    identity_dn: str
    identity_rfc4514: str
    chain: tuple[x509.Certificate, ...]
    limited: bool
    not_after: float
    updated_at: float
    key_sealed: bytes

    def key(self, store_key: StoreKey) -> CredentialKey:
        """The credential's private key, unsealed."""
        return store_key.unseal_key(self.key_sealed, "credential", self.owner)

    @property
    def not_after_text(self) -> str:
        """The end as ``2030-01-31 12:00:00Z``, for messages."""
        return dt.datetime.fromtimestamp(self.not_after, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def get(conn: sa.Connection, owner: str) -> StoredCredential | None:
    """The stored credential of ``owner``, or None."""
    row = conn.execute(
        sa.select(stored_credentials).where(stored_credentials.c.owner == owner)
    ).first()
    if row is None:
        return None
    return StoredCredential(
        owner=row.owner,
        identity_dn=row.identity_dn,
        identity_rfc4514=row.identity_rfc4514,
        chain=tuple(x509.load_pem_x509_certificates(row.chain_pem.encode())),
        limited=row.limited,
        not_after=row.not_after,
        updated_at=row.updated_at,
        key_sealed=row.key_sealed,
    )


def put(
    conn: sa.Connection,
    owner: str,
    validated: ValidatedChain,
    key: CredentialKey,
    store_key: StoreKey,
    now: float,
) -> None:
    """Store (or refresh) ``owner``'s credential; the caller checked the identity rule."""
    # The path ends with the CAs of the trust directory; only the proxies and the end
    # entity are the credential's own.
    own = validated.path[: validated.proxy_depth + 1]
    values = {
        "identity_dn": validated.identity_dn,
        "identity_rfc4514": validated.identity_rfc4514,
        "chain_pem": b"".join(c.public_bytes(serialization.Encoding.PEM) for c in own).decode(),
        "key_sealed": store_key.seal_key(key, "credential", owner),
        "limited": validated.limited,
        "not_after": validated.not_after.timestamp(),
        "updated_at": now,
    }
    updated = conn.execute(
        sa.update(stored_credentials).where(stored_credentials.c.owner == owner).values(**values)
    )
    if updated.rowcount == 0:
        try:
            conn.execute(
                sa.insert(stored_credentials).values(owner=owner, created_at=now, **values)
            )
        except sa.exc.IntegrityError:
            raise Conflict(
                f"another delegation of {owner} was stored at the same moment; delegate again"
            ) from None


def remove(conn: sa.Connection, owner: str) -> bool:
    """Destroy ``owner``'s stored credential; False when there was none."""
    gone = conn.execute(sa.delete(stored_credentials).where(stored_credentials.c.owner == owner))
    return gone.rowcount > 0
