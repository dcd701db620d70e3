"""The credential API: X.509 login, delegation, VO membership, and releases to pilots.

The checks live in :mod:`pilotage.credentials`; this module only reads bodies, opens
transactions and audits. Delegations and every pilot call are audited whatever their
outcome: a refusal is recorded in a transaction of its own, then raised.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ConfigDict, Field

from pilotage.api.admin import PRINTABLE, Admin
from pilotage.api.auth import require
from pilotage.api.context import ServerContext
from pilotage.api.users import Ctx, User
from pilotage.api.wire import PILOT_SECRET_HEADER, Strict
from pilotage.bodies import Body
from pilotage.collector import pilots as pilot_registry
from pilotage.credentials import delegation, login, release, store, vo
from pilotage.credentials.audit import GRANTED, AuditRecord
from pilotage.credentials.errors import ClaimEnded, IdentityChanged
from pilotage.credentials.service import CredentialService
from pilotage.credentials.tokens import Role
from pilotage.errors import BadInput, NotFound, PilotageError

router = APIRouter()
log = logging.getLogger("pilotage.api.credentials")

MAX_PEM_CHARS = 1 << 20
#: Standard base64, padded (what ``base64.b64decode(validate=True)`` takes).
BASE64 = r"^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def service(request: Request) -> CredentialService:
    """The server's credential parts."""
    creds: CredentialService = request.app.state.credentials
    return creds


Creds = Annotated[CredentialService, Depends(service)]


def _refused(
    ctx: ServerContext, creds: CredentialService, record: AuditRecord, exc: Exception
) -> None:
    """Audit a refused attempt in its own transaction (the refusal rolled its own back)."""
    error = exc if isinstance(exc, PilotageError) else PilotageError(repr(exc))
    refused = record.refused(error)
    with ctx.store.write() as conn:
        creds.audit.insert(conn, refused)
        if isinstance(exc, ClaimEnded) and record.claim_id is not None:
            release.retire_keys(conn, record.claim_id, refused.at)
        if isinstance(exc, IdentityChanged):
            # Why: seed 000 §4.5: the job keeps its identity; its owner sees why in its history.
            reason = f"a credential of another identity was refused, the job keeps its own: {exc}"
            if record.claim_id is not None:
                actor = f"pilot:{record.pilot_id}"
                release.note_identity_refused(
                    conn, reason, actor=actor, now=refused.at, claim_id=record.claim_id
                )
            else:
                release.note_identity_refused(
                    conn, reason, actor=record.caller, now=refused.at, owner=record.caller
                )
    creds.audit.append(refused)


# --- X.509 login --------------------------------------------------------------------


class X509Login(Body):
    """A signed nonce and the chain whose key signed it."""

    model_config = ConfigDict(extra="forbid")

    nonce: str = Field(min_length=1, max_length=128)
    chain_pem: str = Field(min_length=1, max_length=MAX_PEM_CHARS)
    signature: str = Field(
        min_length=1, max_length=4096, description="base64", json_schema_extra={"pattern": BASE64}
    )
    role: Role = Role.USER


@router.post("/api/v1/login/nonce", status_code=201)
def login_nonce(ctx: Ctx) -> dict[str, Any]:
    """A one-time nonce for an X.509 login, and the audience the signature must name."""
    with ctx.store.write() as conn:
        nonce, expires_at = login.issue_nonce(conn, ctx.clock())
    return {"nonce": nonce, "expires_at": expires_at, "audience": ctx.issuer.audience}


@router.post("/api/v1/login/x509")
def login_x509(body: X509Login, ctx: Ctx, creds: Creds) -> dict[str, Any]:
    """Check the proof of possession and return a session token for the identity."""
    trust = creds.trust()
    now = ctx.clock()
    # Its own transaction: any attempt spends the nonce, whatever comes next.
    with ctx.store.write() as conn:
        login.spend_nonce(conn, body.nonce, now)
    try:
        signature = base64.b64decode(body.signature, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput("signature must be base64") from None
    message = login.login_message(body.nonce, ctx.issuer.audience)
    validated = login.check_login(
        body.chain_pem.encode(), signature, message, trust=trust, require_crl=creds.require_crl
    )
    with ctx.store.read() as conn:
        groups = vo.groups_of(conn, validated.identity_dn)
    creds.rules.check_login(validated.identity_dn, body.role, groups)
    lifetime_s = int(min(creds.settings.session_lifetime_s, validated.not_after.timestamp() - now))
    token = ctx.issuer.mint(
        validated.identity_dn, body.role, max(1, lifetime_s), groups, issued_by="x509 login"
    )
    log.info("X.509 login of %s as %s", validated.identity_dn, body.role.value)
    return {
        "token": token,
        "subject": validated.identity_dn,
        "role": body.role.value,
        "groups": list(groups),
        "expires_at": now + max(1, lifetime_s),
    }


# --- Delegation and the caller's stored credential ------------------------------------


class SignedProxy(Body):
    """The proxy the client signed for the delegation's key, with its chain (no key)."""

    model_config = ConfigDict(extra="forbid")

    chain_pem: str = Field(min_length=1, max_length=MAX_PEM_CHARS)


def _stored_view(stored: store.StoredCredential) -> dict[str, Any]:
    return {
        "owner": stored.owner,
        "identity": stored.identity_dn,
        "not_after": stored.not_after,
        "limited": stored.limited,
        "updated_at": stored.updated_at,
    }


@router.post("/api/v1/delegations", status_code=201)
def start_delegation(ctx: Ctx, creds: Creds, who: User) -> dict[str, Any]:
    """Make a key pair for the caller's delegation; answer its CSR to sign."""
    creds.trust()  # Refuse now, not after the user signed, when X.509 is off.
    with ctx.store.write() as conn:
        pending = delegation.start(
            conn, who.name, creds.store_key, ttl_s=creds.settings.delegation_ttl_s, now=ctx.clock()
        )
    return dataclasses.asdict(pending)


@router.put("/api/v1/delegations/{delegation_id}")
def finish_delegation(
    delegation_id: str, body: SignedProxy, ctx: Ctx, creds: Creds, who: User
) -> dict[str, Any]:
    """Store the proxy signed for the delegation's key (a refresh keeps the identity)."""
    now = ctx.clock()
    record = AuditRecord(at=now, event="delegate", outcome=GRANTED, caller=who.name)
    try:
        trust = creds.trust()
        with ctx.store.write() as conn:
            key = delegation.take(conn, who.name, delegation_id, creds.store_key, now=now)
        with ctx.store.write() as conn:
            validated, refreshed = delegation.finish(
                conn,
                who.name,
                key,
                body.chain_pem.encode(),
                store_key=creds.store_key,
                trust=trust,
                require_crl=creds.require_crl,
                now=now,
            )
            record = dataclasses.replace(record, identity=validated.identity_dn)
            # Why: jobs will run under this identity; it must be one allowed to be a user.
            creds.rules.check_login(
                validated.identity_dn, Role.USER, vo.groups_of(conn, validated.identity_dn)
            )
            creds.audit.insert(conn, record)
    except PilotageError as exc:
        _refused(ctx, creds, record, exc)
        raise
    creds.audit.append(record)
    return {
        "owner": who.name,
        "identity": validated.identity_dn,
        "not_after": validated.not_after.timestamp(),
        "limited": validated.limited,
        "updated_at": now,
        "refreshed": refreshed,
    }


@router.get("/api/v1/credential")
def stored_credential(ctx: Ctx, who: User) -> dict[str, Any]:
    """What the store holds for the caller (never the key)."""
    with ctx.store.read() as conn:
        stored = store.get(conn, who.name)
    if stored is None:
        raise NotFound(f"{who.name} has no stored credential; run 'pilotage delegate'")
    return _stored_view(stored)


@router.delete("/api/v1/credential", status_code=204)
def destroy_credential(ctx: Ctx, creds: Creds, who: User) -> Response:
    """Destroy the caller's stored credential (jobs submitted for it get no credential)."""
    now = ctx.clock()
    record = AuditRecord(at=now, event="destroy", outcome=GRANTED, caller=who.name)
    with ctx.store.write() as conn:
        stored = store.get(conn, who.name)
        if stored is None:
            raise NotFound(f"{who.name} has no stored credential")
        store.remove(conn, who.name)
        record = dataclasses.replace(record, identity=stored.identity_dn)
        creds.audit.insert(conn, record)
    creds.audit.append(record)
    return Response(status_code=204)


# --- VO membership (admin) ----------------------------------------------------------


class Membership(Body):
    """One FQAN of one identity."""

    model_config = ConfigDict(extra="forbid")

    identity: str = Field(
        min_length=1, max_length=vo.MAX_IDENTITY_CHARS, json_schema_extra=PRINTABLE
    )
    fqan: str = Field(min_length=1, max_length=256, json_schema_extra={"pattern": vo.FQAN.pattern})


@router.get("/api/v1/vo/members")
def vo_members(ctx: Ctx, who: Admin, identity: str | None = None) -> list[dict[str, Any]]:
    """Every VO membership, or those of one identity."""
    if identity is not None:
        vo.check_identity(identity)
    with ctx.store.read() as conn:
        return [dataclasses.asdict(m) for m in vo.members(conn, identity)]


@router.post("/api/v1/vo/members", status_code=201)
def vo_add(body: Membership, ctx: Ctx, who: Admin) -> dict[str, Any]:
    """Give an identity an FQAN (idempotent: ``added`` says whether it changed anything)."""
    with ctx.store.write() as conn:
        added = vo.add(conn, body.identity, body.fqan, by=who.name, now=ctx.clock())
    return {"identity": body.identity, "fqan": body.fqan, "added": added}


@router.delete("/api/v1/vo/members", status_code=204)
def vo_remove(identity: str, fqan: str, ctx: Ctx, who: Admin) -> Response:
    """Take an FQAN from an identity."""
    vo.check_identity(identity)
    vo.check_fqan(fqan)
    with ctx.store.write() as conn:
        vo.remove(conn, identity, fqan)
    return Response(status_code=204)


# --- Releases to pilots (docs/pilot-protocol.md) --------------------------------------


class RetrievalKey(Strict):
    """A claim's first retrieval key; it is handed out once."""

    claim_id: str
    key: str
    expires_at: float


class CredentialRequest(Strict):
    """A retrieval key and a CSR for the key the pilot made."""

    key: str = Field(min_length=1, max_length=128)
    csr_pem: str = Field(min_length=1, max_length=64 * 1024)


class CredentialRelease(Strict):
    """A proxy for the pilot's key (leaf first, no key) and the key for the next renewal."""

    claim_id: str
    chain_pem: str
    not_after: float
    identity: str
    limited: bool
    renewal_key: str
    renewal_key_expires_at: float


def _pilot_attempt(
    event: str, claim_id: str, request: Request, ctx: ServerContext
) -> tuple[AuditRecord, release.HeldClaim]:
    """Authenticate, require the pilot role, the caller's live claim and the secret of the
    pilot holding it (pilots sharing a token are apart); audit refusals."""
    record = AuditRecord(
        at=ctx.clock(), event=event, outcome=GRANTED, caller="(unauthenticated)", claim_id=claim_id
    )
    creds = service(request)
    try:
        who = ctx.authenticator.principal(request)
        record = dataclasses.replace(record, caller=who.name)
        require(who, Role.PILOT)
        with ctx.store.read() as conn:
            claim = release.claim_of(conn, claim_id)
        record = _about(record, claim)
        release.require_held(claim, who.name)
        secret = pilot_registry.require_secret_header(request.headers.get(PILOT_SECRET_HEADER))
        with ctx.store.read() as conn:
            pilot_registry.check_secret_of(conn, claim.pilot_id, secret)
    except PilotageError as exc:
        _refused(ctx, creds, _with_claim(ctx, record), exc)
        raise
    return record, claim


def _about(record: AuditRecord, claim: release.HeldClaim) -> AuditRecord:
    return dataclasses.replace(
        record, pilot_id=claim.pilot_id, job_id=claim.job_ref, identity=claim.x509_identity
    )


def _with_claim(ctx: ServerContext, record: AuditRecord) -> AuditRecord:
    """``record`` naming the claim's pilot, job and identity when the claim exists."""
    if record.claim_id is None or record.job_id is not None:
        return record
    try:
        with ctx.store.read() as conn:
            return _about(record, release.claim_of(conn, record.claim_id))
    except NotFound:
        return record


@router.post("/pilot/v1/claims/{claim_id}/credential-key", status_code=201)
def credential_key(claim_id: str, request: Request, ctx: Ctx, creds: Creds) -> RetrievalKey:
    """The claim's first retrieval key, for the claim's own pilot, once."""
    record, claim = _pilot_attempt("key", claim_id, request, ctx)
    try:
        with ctx.store.write() as conn:
            release.require_held(release.claim_of(conn, claim_id), record.caller)
            key, expires_at = release.issue_first_key(conn, claim, creds.settings, record.at)
            creds.audit.insert(conn, record)
    except PilotageError as exc:
        _refused(ctx, creds, record, exc)
        raise
    creds.audit.append(record)
    return RetrievalKey(claim_id=claim_id, key=key, expires_at=expires_at)


@router.post("/pilot/v1/claims/{claim_id}/credential")
def credential(
    claim_id: str, body: CredentialRequest, request: Request, ctx: Ctx, creds: Creds
) -> CredentialRelease:
    """A short-lived proxy derived from the job owner's stored credential (audited as
    ``release``, or ``renew`` with a renewal key)."""
    with ctx.store.read() as conn:  # only the audit's word for the attempt: nothing answered
        event = "renew" if release.is_renewal(conn, body.key) else "release"
    record, claim = _pilot_attempt(event, claim_id, request, ctx)
    try:
        with ctx.store.write() as conn:
            # Checked again inside the write: the claim may have ended since.
            release.require_held(release.claim_of(conn, claim_id), record.caller)
            granted = release.release(
                conn,
                claim,
                body.key,
                body.csr_pem,
                store_key=creds.store_key,
                settings=creds.settings,
                now=record.at,
            )
            creds.audit.insert(conn, record)
    except PilotageError as exc:
        _refused(ctx, creds, record, exc)
        raise
    creds.audit.append(record)
    return CredentialRelease(claim_id=claim_id, **dataclasses.asdict(granted))
