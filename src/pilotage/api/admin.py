"""Admin verbs over the API: issuing tokens; and the issuer's public keys."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from pilotage.api.auth import Principal, require
from pilotage.api.users import Ctx, context
from pilotage.credentials.tokens import Role

router = APIRouter(prefix="/api/v1")


def admin(request: Request) -> Principal:
    """The caller, who must hold the admin role."""
    return require(context(request).authenticator.principal(request), Role.ADMIN)


Admin = Annotated[Principal, Depends(admin)]


class TokenRequest(BaseModel):
    """What token to mint."""

    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1, max_length=256)
    role: Role
    lifetime_s: int = Field(gt=0, le=366 * 86400)
    groups: list[str] = Field(default_factory=list, max_length=64)


@router.post("/tokens", status_code=201)
def issue_token(body: TokenRequest, ctx: Ctx, who: Admin) -> dict[str, Any]:
    token = ctx.issuer.mint(body.subject, body.role, body.lifetime_s, body.groups)
    claims = ctx.issuer.verify(token)
    return {
        "token": token,
        "subject": claims.subject,
        "role": claims.role.value,
        "expires_at": claims.expires_at,
        "issued_by": who.name,
    }


@router.get("/jwks")
def jwks(ctx: Ctx) -> dict[str, Any]:
    """The issuer's public keys (JWKS), so others can verify the pool's tokens."""
    return ctx.issuer.jwks()
