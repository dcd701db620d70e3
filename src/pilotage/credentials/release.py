"""Releasing a job's credential to the pilot that holds its claim, with one-time keys.

The flow (docs/pilot-protocol.md, "The job's credential")::

    pilot (pilot role)                                   server
      POST /pilot/v1/claims/{claim}/credential-key  ──▶  claim live and the caller's?
                                                    ◀──  key 0: random 256 bits, stored
                                                         hashed, handed out once per claim
      POST /pilot/v1/claims/{claim}/credential      ──▶  claim live and the caller's? key of
        {key, csr_pem}                                   this claim, unused, unexpired? job's
                                                         identity still the stored one?
                                                    ◀──  a proxy for the CSR's key signed by
                                                         the stored credential (limited by
                                                         default), and key n+1 for renewal

Each check answers a threat (docs/security.md): the pilot role keeps user and stolen
user tokens out; "the caller's claim" keeps a compromised pilot from harvesting the
credentials of jobs it does not run; the key, one-time and bound to one claim, makes a
leaked key useless once used and every key useless once the claim ends; the identity
check stops a credential of another identity reaching a running job; the lifetime of a
release never exceeds the stored credential's. Every attempt is audited by the caller:
as ``release`` with key 0, as ``renew`` with a renewal key (:func:`is_renewal`).

A credential of another identity, offered by re-delegation or met at a renewal, is
refused and the running jobs concerned keep their own; :func:`note_identity_refused`
writes that event into each one's history (trigger ``identity_refused``, state
unchanged), where its owner sees it (docs/pilot.md, "Keeping control").
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pilotage.config import CredentialSettings
from pilotage.credentials import store
from pilotage.credentials.errors import (
    ClaimEnded,
    ClaimNotHeld,
    IdentityChanged,
    JobWithoutCredential,
    NoStoredCredential,
    RetrievalKeyAlreadyIssued,
    RetrievalKeyExpired,
    RetrievalKeyUsed,
    StoredCredentialUnusable,
    WrongRetrievalKey,
)
from pilotage.credentials.proxy import sign_proxy_request
from pilotage.credentials.store import StoreKey
from pilotage.errors import BadInput, NotFound
from pilotage.store.tables import claims, job_events, jobs, pilots, retrieval_keys
from pilotage.x509.errors import CredentialError, WeakKey


@dataclass(frozen=True)
class HeldClaim:
    """A claim, its pilot and the job it holds; :func:`require_held` checks it is the caller's."""

    claim_id: str
    pilot_id: str
    pilot_subject: str
    live: bool
    job_ref: str
    owner: str
    x509_identity: str | None


@dataclass(frozen=True)
class Release:
    """A derived proxy (leaf first, no key: the pilot has it) and the next key."""

    chain_pem: str
    not_after: float
    identity: str
    limited: bool
    renewal_key: str
    renewal_key_expires_at: float


def claim_of(conn: sa.Connection, claim_id: str) -> HeldClaim:
    """The claim ``claim_id``, its pilot and its job, as the store has them (not checked)."""
    row = conn.execute(
        sa.select(
            claims.c.state,
            claims.c.pilot_id,
            pilots.c.subject,
            jobs.c.cluster_id,
            jobs.c.proc_id,
            jobs.c.owner,
            jobs.c.spec,
        )
        .join(pilots, pilots.c.id == claims.c.pilot_id)
        .join(jobs, jobs.c.id == claims.c.job_id)
        .where(claims.c.id == claim_id)
    ).first()
    if row is None:
        raise NotFound(f"claim {claim_id} does not exist")
    return HeldClaim(
        claim_id=claim_id,
        pilot_id=row.pilot_id,
        pilot_subject=row.subject,
        live=row.state == "active",
        job_ref=f"{row.cluster_id}.{row.proc_id}",
        owner=row.owner,
        x509_identity=json.loads(row.spec).get("x509_identity"),
    )


def require_held(claim: HeldClaim, caller: str) -> None:
    """Refuse a claim that is not the caller's (token subject), or no longer live."""
    # Why: a pilot may hold the credential of the jobs it runs, never of another's.
    if claim.pilot_subject != caller:
        raise ClaimNotHeld(f"claim {claim.claim_id} (job {claim.job_ref}) is held by another pilot")
    # Why: keys die with their claim; a finished, lost or revoked claim releases nothing.
    if not claim.live:
        raise ClaimEnded(f"claim {claim.claim_id} has ended; its credential keys died with it")


def issue_first_key(
    conn: sa.Connection, held: HeldClaim, settings: CredentialSettings, now: float
) -> tuple[str, float]:
    """Key 0 of a claim: once per claim, for a job submitted with a credential."""
    if held.x509_identity is None:
        raise JobWithoutCredential(f"job {held.job_ref} was submitted without an X.509 credential")
    issued = conn.execute(
        sa.select(retrieval_keys.c.key_hash).where(retrieval_keys.c.claim_id == held.claim_id)
    ).first()
    if issued is not None:
        raise RetrievalKeyAlreadyIssued(
            f"claim {held.claim_id} already had its key; it is handed out once"
        )
    expires_at = now + settings.retrieval_key_ttl_s
    try:
        return _new_key(conn, held, 0, expires_at, now), expires_at
    except sa.exc.IntegrityError:
        # Why: the unique (claim_id, generation) lets only one of two concurrent asks win.
        raise RetrievalKeyAlreadyIssued(
            f"claim {held.claim_id} already had its key; it is handed out once"
        ) from None


def release(
    conn: sa.Connection,
    held: HeldClaim,
    key: str,
    csr_pem: str,
    *,
    store_key: StoreKey,
    settings: CredentialSettings,
    now: float,
) -> Release:
    """Spend ``key`` and sign a proxy for the CSR with the job owner's stored credential."""
    generation = _spend(conn, held, key, now)
    if held.x509_identity is None:
        raise JobWithoutCredential(f"job {held.job_ref} was submitted without an X.509 credential")
    stored = store.get(conn, held.owner)
    if stored is None:
        raise NoStoredCredential(f"{held.owner} has no stored credential for job {held.job_ref}")
    # Why: seed 000, 4.5: a job must never receive a credential of another identity.
    if stored.identity_dn != held.x509_identity:
        raise IdentityChanged(
            f"job {held.job_ref} was submitted for {held.x509_identity}, but the stored "
            f"credential is now for {stored.identity_dn}"
        )
    if stored.not_after <= now:
        raise StoredCredentialUnusable(
            f"the stored credential of {held.owner} expired at {stored.not_after_text}"
        )
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError:
        raise BadInput("csr_pem is not a PEM certificate signing request") from None
    try:
        proxy = sign_proxy_request(
            csr,
            stored.chain[0],
            stored.key(store_key),
            stored.chain[1:],
            lifetime_s=settings.release_lifetime_s,
            limited=settings.release_limited or stored.limited,
        )
    except WeakKey as exc:
        raise BadInput(f"csr_pem: {exc.message}") from None
    except CredentialError as exc:
        raise StoredCredentialUnusable(
            f"the stored credential of {held.owner} cannot sign: {exc.message}"
        ) from None
    not_after = proxy.not_valid_after_utc.timestamp()
    # Renewal: the next key lives as long as this proxy; renew before it ends.
    renewal = _new_key(conn, held, generation + 1, not_after, now)
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (proxy, *stored.chain))
    return Release(
        chain_pem=pem.decode(),
        not_after=not_after,
        identity=stored.identity_dn,
        limited=settings.release_limited or stored.limited,
        renewal_key=renewal,
        renewal_key_expires_at=not_after,
    )


def is_renewal(conn: sa.Connection, key: str) -> bool:
    """Whether ``key`` is a renewal key (generation 1 and up) rather than a claim's first."""
    generation = conn.execute(
        sa.select(retrieval_keys.c.generation).where(retrieval_keys.c.key_hash == _hash(key))
    ).scalar()
    return generation is not None and int(generation) > 0


#: The ``trigger`` of a job event recording a refused change of identity.
IDENTITY_REFUSED = "identity_refused"


def note_identity_refused(
    conn: sa.Connection,
    reason: str,
    *,
    actor: str,
    now: float,
    owner: str | None = None,
    claim_id: str | None = None,
) -> int:
    """Record, in each running X.509 job of ``owner`` (or the job of ``claim_id``), that a
    credential of another identity was refused; how many jobs. The state is unchanged.

    ``actor`` is who offered it: the owner re-delegating, or the claim's pilot renewing.
    For a claim the event is written once: its renewals are retried, the refusal is one.
    """
    query = (
        sa.select(jobs.c.id, jobs.c.claim_id, jobs.c.spec, claims.c.pilot_id)
        .join(claims, claims.c.id == jobs.c.claim_id)
        .where(jobs.c.state == "RUNNING")
    )
    if owner is not None:
        query = query.where(jobs.c.owner == owner)
    if claim_id is not None:
        query = query.where(jobs.c.claim_id == claim_id)
        noted = conn.execute(
            sa.select(job_events.c.id).where(
                job_events.c.claim_id == claim_id,
                job_events.c.trigger == IDENTITY_REFUSED,
                job_events.c.actor == actor,
            )
        ).first()
        if noted is not None:
            return 0
    rows = [r for r in conn.execute(query) if json.loads(r.spec).get("x509_identity")]
    for row in rows:
        conn.execute(
            sa.insert(job_events).values(
                job_id=row.id,
                at=now,
                from_state="RUNNING",
                to_state="RUNNING",
                trigger=IDENTITY_REFUSED,
                actor=actor,
                reason=reason,
                claim_id=row.claim_id,
                pilot_id=row.pilot_id,
            )
        )
    return len(rows)


def retire_keys(conn: sa.Connection, claim_id: str, now: float) -> None:
    """Mark every unused key of an ended claim used (they are dead already: belt and braces)."""
    conn.execute(
        sa.update(retrieval_keys)
        .where(retrieval_keys.c.claim_id == claim_id, retrieval_keys.c.used_at.is_(None))
        .values(used_at=now)
    )


def _spend(conn: sa.Connection, held: HeldClaim, key: str, now: float) -> int:
    """Mark ``key`` used; return its generation. Refuse a wrong, used or expired key."""
    row = conn.execute(
        sa.select(retrieval_keys).where(retrieval_keys.c.key_hash == _hash(key))
    ).first()
    if row is None or row.claim_id != held.claim_id:
        raise WrongRetrievalKey(f"that is not a retrieval key of claim {held.claim_id}")
    if row.used_at is not None:
        raise RetrievalKeyUsed(f"that retrieval key of claim {held.claim_id} was already used")
    if row.expires_at < now:
        raise RetrievalKeyExpired(f"that retrieval key of claim {held.claim_id} has expired")
    # Why: the conditional update is the atomic test-and-set against a concurrent use.
    spent = conn.execute(
        sa.update(retrieval_keys)
        .where(retrieval_keys.c.key_hash == row.key_hash, retrieval_keys.c.used_at.is_(None))
        .values(used_at=now)
    )
    if spent.rowcount != 1:
        raise RetrievalKeyUsed(f"that retrieval key of claim {held.claim_id} was already used")
    return int(row.generation)


def _new_key(
    conn: sa.Connection, held: HeldClaim, generation: int, expires_at: float, now: float
) -> str:
    key = secrets.token_urlsafe(32)
    conn.execute(
        sa.insert(retrieval_keys).values(
            key_hash=_hash(key),
            claim_id=held.claim_id,
            generation=generation,
            pilot_id=held.pilot_id,
            created_at=now,
            expires_at=expires_at,
            used_at=None,
        )
    )
    return key


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
