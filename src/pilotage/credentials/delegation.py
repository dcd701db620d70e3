"""Delegation into the credential store, without a private key ever crossing the wire.

The flow (``pilotage delegate``), as GSI delegation in the documents (seed 001, 2.4)::

    client                                        server
      POST /api/v1/delegations             ──▶    make an RSA key pair and a CSR; keep the
                                           ◀──    key sealed for DELEGATION_TTL; send the CSR
      sign a proxy for the CSR's key with
      the user's own proxy (--valid HH:MM)
      PUT /api/v1/delegations/{id}         ──▶    the pending key is spent; the proxy must
        {chain_pem}                               certify exactly that key; the chain must
                                                  validate; [authz] must allow the identity
                                                  the user role; a stored credential of
                                                  another identity is never replaced
                                           ◀──    the identity and the new end

Re-delegating refreshes the stored credential. A re-delegation whose identity differs
from the stored one is refused (:class:`IdentityChanged`) and audited; the stored one is
kept, because running jobs were submitted for it (seed 000, 4.5: losing control of a
job when the proxy's identity changes). To change identity, destroy the stored
credential first (``pilotage delegate --destroy``), knowing that the jobs submitted for
the old identity will then be refused their credential.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization

from pilotage.credentials import store
from pilotage.credentials.errors import (
    CredentialRefused,
    DelegationKeyMismatch,
    IdentityChanged,
    UnknownDelegation,
)
from pilotage.credentials.proxy import make_proxy_request
from pilotage.credentials.store import StoreKey
from pilotage.errors import Conflict
from pilotage.store.tables import delegations
from pilotage.x509.certificate import CredentialKey
from pilotage.x509.chain import (
    CredentialError,
    TrustStore,
    ValidatedChain,
    load_credential,
    validate_chain,
)

#: Delegations one owner may have in progress at once.
MAX_PENDING = 4


@dataclass(frozen=True)
class PendingDelegation:
    """What the server hands the client: the request to sign."""

    delegation_id: str
    csr_pem: str
    expires_at: float


def start(
    conn: sa.Connection, owner: str, store_key: StoreKey, *, ttl_s: float, now: float
) -> PendingDelegation:
    """Make the key pair and CSR of a new delegation by ``owner``."""
    # Abandoned delegations hold nothing of value (a key nobody certified); drop them.
    conn.execute(sa.delete(delegations).where(delegations.c.expires_at < now))
    pending = conn.execute(
        sa.select(sa.func.count()).select_from(delegations).where(delegations.c.owner == owner)
    ).scalar_one()
    # Why: each key pair costs the server an RSA key generation; a user needs one or two.
    if pending >= MAX_PENDING:
        raise Conflict(
            f"{owner} already has {pending} delegations in progress; finish them or wait "
            f"{int(ttl_s)} s"
        )
    csr, key = make_proxy_request()
    delegation_id = secrets.token_hex(16)
    expires_at = now + ttl_s
    conn.execute(
        sa.insert(delegations).values(
            id=delegation_id,
            owner=owner,
            key_sealed=store_key.seal_key(key, f"delegation:{delegation_id}", owner),
            created_at=now,
            expires_at=expires_at,
        )
    )
    pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    return PendingDelegation(delegation_id, pem, expires_at)


def take(
    conn: sa.Connection, owner: str, delegation_id: str, store_key: StoreKey, *, now: float
) -> CredentialKey:
    """Spend ``owner``'s pending delegation and return its key; commit this on its own.

    Why its own transaction: the key pair serves one attempt, whatever its outcome, so a
    refused proxy cannot be retried against the same key.
    """
    row = conn.execute(
        sa.select(delegations).where(
            delegations.c.id == delegation_id, delegations.c.owner == owner
        )
    ).first()
    if row is None:
        raise UnknownDelegation(f"no delegation {delegation_id} of yours is waiting; start again")
    # An expired row is left for start() to sweep: it can never pass this check again.
    if row.expires_at < now:
        raise UnknownDelegation(f"delegation {delegation_id} timed out; start again")
    conn.execute(sa.delete(delegations).where(delegations.c.id == delegation_id))
    return store_key.unseal_key(row.key_sealed, f"delegation:{delegation_id}", owner)


def finish(
    conn: sa.Connection,
    owner: str,
    key: CredentialKey,
    chain_pem: bytes,
    *,
    store_key: StoreKey,
    trust: TrustStore,
    require_crl: bool,
    now: float,
) -> tuple[ValidatedChain, bool]:
    """Check the proxy signed for ``key`` and store it; say whether it refreshed one.

    The caller applies ``[authz]`` to the identity before committing.
    """
    try:
        chain, _ = load_credential(chain_pem)
    except CredentialError as exc:
        raise CredentialRefused(exc) from None
    if _spki(chain[0].public_key()) != _spki(key.public_key()):
        raise DelegationKeyMismatch(
            "the proxy returned does not certify the key this delegation made"
        )
    try:
        validated = validate_chain(chain, trust, key=key, require_crl=require_crl)
    except CredentialError as exc:
        raise CredentialRefused(exc) from None
    existing = store.get(conn, owner)
    if existing is not None and existing.identity_rfc4514 != validated.identity_rfc4514:
        raise IdentityChanged(
            f"your stored credential is for {existing.identity_dn}, this proxy for "
            f"{validated.identity_dn}; a re-delegation must keep the identity "
            "(remove the stored one with 'pilotage delegate --destroy' first)"
        )
    store.put(conn, owner, validated, key, store_key, now)
    return validated, existing is not None


def _spki(public_key: Any) -> bytes:
    der: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der
