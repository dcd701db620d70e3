"""The tokens the server issued: recorded at minting, listed, revoked, refused once revoked.

Every token the server mints (an admin's ``token issue``, a frontend's pilot tokens, an
X.509 login's session) is recorded by its ``jti`` with its subject, role, lifetime and
who asked for it (:func:`record`). ``pilotage token revoke`` marks tokens revoked
(:func:`revoke`); from then on every call that presents one is refused.

The check is on every call and costs a dictionary look-up: each server process keeps
the revoked, unexpired token ids in memory (:class:`RevocationList`). A revocation made
through a server takes effect there at once; other servers sharing the database see it
at their next refresh, at most ``[server] revocation_refresh_s`` later (the refresh runs
in the server's reaper thread, never on the event loop).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from pilotage.credentials.tokens import TokenClaims
from pilotage.errors import BadInput, NotFound, Unauthenticated
from pilotage.store.engine import Store
from pilotage.store.tables import issued_tokens

#: Rows of tokens expired longer than this are deleted when new tokens are recorded.
KEEP_EXPIRED_S = 7 * 86400


def record(conn: sa.Connection, claims: TokenClaims, issued_by: str, now: float) -> None:
    """Remember a token just minted; forget tokens long expired."""
    conn.execute(
        sa.insert(issued_tokens).values(
            token_id=claims.token_id,
            subject=claims.subject,
            role=claims.role.value,
            groups=json.dumps(list(claims.groups)),
            issued_at=claims.issued_at,
            expires_at=claims.expires_at,
            issued_by=issued_by,
        )
    )
    conn.execute(sa.delete(issued_tokens).where(issued_tokens.c.expires_at < now - KEEP_EXPIRED_S))


def record_if_missing(conn: sa.Connection, claims: TokenClaims, issued_by: str, now: float) -> None:
    """:func:`record` a token unless it is recorded already."""
    known = conn.execute(
        sa.select(issued_tokens.c.token_id).where(issued_tokens.c.token_id == claims.token_id)
    ).first()
    if known is None:
        record(conn, claims, issued_by, now)


def _view(row: Any, now: float) -> dict[str, Any]:
    if row.revoked_at is not None:
        state = "revoked"
    elif row.expires_at <= now:
        state = "expired"
    else:
        state = "valid"
    return {
        "token_id": row.token_id,
        "subject": row.subject,
        "role": row.role,
        "groups": json.loads(row.groups),
        "issued_at": row.issued_at,
        "expires_at": row.expires_at,
        "issued_by": row.issued_by,
        "state": state,
        "revoked_at": row.revoked_at,
        "revoked_by": row.revoked_by,
        "revoke_reason": row.revoke_reason,
    }


def list_tokens(
    conn: sa.Connection,
    now: float,
    *,
    subject: str | None = None,
    role: str | None = None,
    include_ended: bool = False,
) -> list[dict[str, Any]]:
    """Issued tokens, oldest first: the valid ones, or all kept (``include_ended``)."""
    query = sa.select(issued_tokens).order_by(issued_tokens.c.issued_at, issued_tokens.c.token_id)
    if subject is not None:
        query = query.where(issued_tokens.c.subject == subject)
    if role is not None:
        query = query.where(issued_tokens.c.role == role)
    if not include_ended:
        query = query.where(issued_tokens.c.revoked_at.is_(None), issued_tokens.c.expires_at > now)
    return [_view(row, now) for row in conn.execute(query)]


@dataclass(frozen=True)
class Revocation:
    """A token revoked now (or already revoked before)."""

    token_id: str
    subject: str
    expires_at: float
    already: bool


def revoke(
    conn: sa.Connection,
    *,
    token_ids: list[str],
    subject: str | None,
    by: str,
    reason: str,
    now: float,
) -> list[Revocation]:
    """Revoke the named tokens, and every unexpired token of ``subject``.

    A token id that was never recorded is :class:`NotFound` (nothing is changed then); a
    subject with no unexpired token is :class:`NotFound` too.
    """
    if not token_ids and subject is None:
        raise BadInput("name the tokens to revoke: token ids, or a subject")
    rows = []
    if token_ids:
        found = {
            row.token_id: row
            for row in conn.execute(
                sa.select(issued_tokens).where(issued_tokens.c.token_id.in_(token_ids))
            )
        }
        missing = [t for t in token_ids if t not in found]
        if missing:
            raise NotFound(
                f"no token with id {', '.join(missing)} was issued by this pool "
                "(see 'pilotage token list --all')"
            )
        rows += [found[t] for t in token_ids]
    if subject is not None:
        of_subject = conn.execute(
            sa.select(issued_tokens).where(
                issued_tokens.c.subject == subject, issued_tokens.c.expires_at > now
            )
        ).all()
        if not of_subject and not token_ids:
            raise NotFound(f"{subject} holds no unexpired token of this pool")
        rows += [r for r in of_subject if r.token_id not in {x.token_id for x in rows}]
    done = []
    for row in rows:
        already = row.revoked_at is not None
        if not already:
            conn.execute(
                sa.update(issued_tokens)
                .where(issued_tokens.c.token_id == row.token_id)
                .values(revoked_at=now, revoked_by=by, revoke_reason=reason)
            )
        done.append(Revocation(row.token_id, row.subject, row.expires_at, already))
    return done


class RevocationList:
    """The revoked, unexpired token ids, in memory; thread-safe.

    Invariant: every id here was revoked in the database; an id revoked in the database
    is here at the latest ``refresh_s`` after it was revoked (plus one reaper pass).
    """

    def __init__(self, refresh_s: float) -> None:
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._revoked: dict[str, float] = {}  # token id -> its expiry
        self._loaded_at = float("-inf")

    def is_revoked(self, token_id: str) -> bool:
        # A dict read is atomic: no lock on the path of every call.
        return token_id in self._revoked

    def check(self, token_id: str) -> None:
        """Refuse a revoked token (401)."""
        if token_id and token_id in self._revoked:
            raise Unauthenticated(
                f"token {token_id} was revoked by the pool's admin; ask for a new one"
            )

    def add(self, token_id: str, expires_at: float) -> None:
        """Note a revocation this process made (effective at once here)."""
        with self._lock:
            self._revoked[token_id] = expires_at

    def load(self, conn: sa.Connection, now: float) -> None:
        """Read the revoked, unexpired tokens from the database."""
        rows = conn.execute(
            sa.select(issued_tokens.c.token_id, issued_tokens.c.expires_at).where(
                issued_tokens.c.revoked_at.is_not(None), issued_tokens.c.expires_at > now
            )
        ).all()
        fresh = {row.token_id: row.expires_at for row in rows}
        with self._lock:
            self._revoked = fresh
            self._loaded_at = now

    def refresh_if_due(self, store: Store, now: float) -> None:
        """:meth:`load` again when ``refresh_s`` has passed since the last load."""
        if now - self._loaded_at < self.refresh_s:
            return
        with store.read() as conn:
            self.load(conn, now)
