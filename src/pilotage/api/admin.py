"""Admin verbs over the API: issuing, listing and revoking tokens; the issuer's keys.

Every token the server mints is recorded (:func:`setup`, which hooks the issuer), so
``pilotage token list`` shows them and ``pilotage token revoke`` can refuse them from
the next call on (:mod:`pilotage.credentials.issued`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import ConfigDict, Field, model_validator

from pilotage.api.auth import Principal, require
from pilotage.api.context import ServerContext
from pilotage.api.users import Ctx, context
from pilotage.bodies import Body
from pilotage.credentials import issued
from pilotage.credentials.tokens import Role, TokenClaims

router = APIRouter(prefix="/api/v1")

#: What the schema can say of "printable characters" (``str.isprintable``): no control
#: characters. The server refuses the other non-printable ones too.
PRINTABLE: dict[str, Any] = {"pattern": r"^[^\x00-\x1f\x7f-\x9f]*$"}
Name = Annotated[str, Field(min_length=1, max_length=256, json_schema_extra=PRINTABLE)]


def admin(request: Request) -> Principal:
    """The caller, who must hold the admin role."""
    return require(context(request).authenticator.principal(request), Role.ADMIN)


Admin = Annotated[Principal, Depends(admin)]


def setup(ctx: ServerContext) -> None:
    """Record every token the server mints, and refuse revoked ones on every call.

    Called once when the app is built; the revocation list starts from the database.
    """
    revocations = issued.RevocationList(ctx.settings.server.revocation_refresh_s)
    with ctx.store.read() as conn:
        revocations.load(conn, ctx.clock())
    ctx.authenticator.revocations = revocations

    def remember(claims: TokenClaims, by: str) -> None:
        # Its own transaction: every caller of mint() holds none (an admin, a frontend,
        # a login), and a token that could not be recorded is not handed out.
        with ctx.store.write() as conn:
            issued.record(conn, claims, by, ctx.clock())

    ctx.issuer.on_mint = remember


class TokenRequest(Body):
    """What token to mint."""

    model_config = ConfigDict(extra="forbid")

    subject: Name
    role: Role
    lifetime_s: int = Field(gt=0, le=366 * 86400)
    groups: list[Name] = Field(default_factory=list, max_length=64)


@router.post("/tokens", status_code=201)
def issue_token(body: TokenRequest, ctx: Ctx, who: Admin) -> dict[str, Any]:
    token = ctx.issuer.mint(
        body.subject, body.role, body.lifetime_s, body.groups, issued_by=who.name
    )
    claims = ctx.issuer.verify(token)
    return {
        "token": token,
        "token_id": claims.token_id,
        "subject": claims.subject,
        "role": claims.role.value,
        "expires_at": claims.expires_at,
        "issued_by": who.name,
    }


@router.get("/tokens")
def list_tokens(
    ctx: Ctx,
    who: Admin,
    subject: Annotated[str | None, Query(max_length=512)] = None,
    role: Role | None = None,
    include_ended: Annotated[bool, Query(alias="all")] = False,
) -> list[dict[str, Any]]:
    """The tokens the server issued: the valid ones, or every one kept (``all``)."""
    with ctx.store.read() as conn:
        return issued.list_tokens(
            conn,
            ctx.clock(),
            subject=subject,
            role=None if role is None else role.value,
            include_ended=include_ended,
        )


class RevokeRequest(Body):
    """Which tokens to revoke: by id, every unexpired one of a subject, or the token
    itself (when its id is not at hand: a file someone found)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["token_ids"], "properties": {"token_ids": {"minItems": 1}}},
                {"required": ["subject"], "properties": {"subject": {"type": "string"}}},
                {"required": ["token"], "properties": {"token": {"type": "string"}}},
            ]
        },
    )

    token_ids: list[str] = Field(default_factory=list, max_length=1000)
    subject: str | None = Field(default=None, min_length=1, max_length=512)
    token: str | None = Field(default=None, min_length=1, max_length=16384)
    reason: str = Field(default="revoked by an admin", min_length=1, max_length=2000)

    @model_validator(mode="after")
    def _something(self) -> RevokeRequest:
        if not self.token_ids and self.subject is None and self.token is None:
            raise ValueError("name the tokens to revoke: token_ids, subject or token")
        return self


@router.post("/tokens/revocations")
def revoke_tokens(body: RevokeRequest, ctx: Ctx, who: Admin) -> list[dict[str, Any]]:
    """Revoke tokens; refused from the next call on, on this server at once."""
    ids = list(body.token_ids)
    # Verified first: only this pool's own tokens are revoked, and a forged one is no
    # reason to refuse anything.
    presented = None if body.token is None else ctx.issuer.verify(body.token)
    with ctx.store.write() as conn:
        if presented is not None:
            # A token minted before the server recorded tokens is recorded now.
            issued.record_if_missing(conn, presented, "unrecorded", ctx.clock())
            ids.append(presented.token_id)
        done = issued.revoke(
            conn,
            token_ids=ids,
            subject=body.subject,
            by=who.name,
            reason=body.reason,
            now=ctx.clock(),
        )
    revocations = ctx.authenticator.revocations
    for r in done:
        if revocations is not None:
            revocations.add(r.token_id, r.expires_at)
    return [
        {"token_id": r.token_id, "subject": r.subject, "already_revoked": r.already} for r in done
    ]


@router.get("/jwks")
def jwks(ctx: Ctx) -> dict[str, Any]:
    """The issuer's public keys (JWKS), so others can verify the pool's tokens."""
    return ctx.issuer.jwks()
