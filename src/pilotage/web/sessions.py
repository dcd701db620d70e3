"""Sign-in links and browser sessions, stored hashed.

``pilotage web`` asks the server (as whoever the CLI authenticates as) for a one-time
link; opening it and pressing the button spends the link and opens a session for that
identity. A token pasted on the sign-in page opens a session the same way. Only the
SHA-256 of each secret is stored: a copy of the database opens nothing.

Invariants: a link opens at most one session (the conditional update that spends it is
the one test-and-set, also across servers); a session never outlives the credential it
came from (``session_until``), nor ``lifetime_s`` from its opening, nor the revocation
of the token it came from (``token_id``, checked on every page).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass

import sqlalchemy as sa

from pilotage.api.auth import Principal
from pilotage.credentials.tokens import Role
from pilotage.store.tables import web_login_links, web_sessions
from pilotage.web.errors import LinkExpired, LinkUsed, UnknownLink

#: How long a printed link may wait for its click.
LINK_TTL_S = 300.0


def _hash(secret: str) -> str:
    # One SHA-256 suffices: the secret is 256 random bits, nothing a slow hash protects.
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Link:
    """A sign-in link not yet spent: who it signs in, and until when it is valid."""

    name: str
    role: Role
    expires_at: float


def issue_link(conn: sa.Connection, who: Principal, now: float, session_until: float) -> str:
    """A new one-time link secret for ``who``; only its hash is stored."""
    secret = secrets.token_urlsafe(32)
    conn.execute(
        sa.insert(web_login_links).values(
            link_hash=_hash(secret),
            name=who.name,
            role=who.role.value,
            groups=json.dumps(list(who.groups)),
            created_at=now,
            expires_at=now + LINK_TTL_S,
            used_at=None,
            session_until=session_until,
            token_id=who.token_id or None,
        )
    )
    # Dead links are of no use to anyone; drop them here rather than in a timer.
    conn.execute(sa.delete(web_login_links).where(web_login_links.c.expires_at < now - 86400))
    return secret


def _link_row(conn: sa.Connection, secret: str, now: float) -> sa.Row[tuple[object, ...]]:
    row = conn.execute(
        sa.select(web_login_links).where(web_login_links.c.link_hash == _hash(secret))
    ).first()
    if row is None:
        raise UnknownLink(
            "this sign-in link is not one this pool issued; run 'pilotage web' for a new one"
        )
    if row.used_at is not None:
        raise LinkUsed("this sign-in link was already used; run 'pilotage web' for a new one")
    if row.expires_at < now:
        raise LinkExpired(
            f"this sign-in link expired {int(now - row.expires_at)} s ago; "
            "run 'pilotage web' for a new one"
        )
    return row


def peek_link(conn: sa.Connection, secret: str, now: float) -> Link:
    """Who an unspent, unexpired link signs in (without spending it), or a refusal."""
    row = _link_row(conn, secret, now)
    return Link(str(row.name), Role(row.role), float(row.expires_at))


def spend_link(
    conn: sa.Connection, secret: str, now: float, lifetime_s: float
) -> tuple[str, float]:
    """Spend the link and open its session: the session's secret and end, or a refusal."""
    row = _link_row(conn, secret, now)
    spent = conn.execute(
        sa.update(web_login_links)
        .where(web_login_links.c.link_hash == row.link_hash, web_login_links.c.used_at.is_(None))
        .values(used_at=now)
    )
    if spent.rowcount != 1:
        raise LinkUsed("this sign-in link was already used; run 'pilotage web' for a new one")
    who = Principal(
        str(row.name), Role(row.role), "session", tuple(json.loads(row.groups)),
        token_id=row.token_id or "",
    )  # fmt: skip
    until = min(now + lifetime_s, float(row.session_until))
    return open_session(conn, who, now, until), until


def open_session(conn: sa.Connection, who: Principal, now: float, until: float) -> str:
    """A new session for ``who`` ending at ``until``; the cookie's secret."""
    secret = secrets.token_urlsafe(32)
    conn.execute(
        sa.insert(web_sessions).values(
            session_hash=_hash(secret),
            name=who.name,
            role=who.role.value,
            groups=json.dumps(list(who.groups)),
            created_at=now,
            expires_at=until,
            token_id=who.token_id or None,
        )
    )
    conn.execute(sa.delete(web_sessions).where(web_sessions.c.expires_at < now))
    return secret


_SESSION = sa.select(web_sessions).where(web_sessions.c.session_hash == sa.bindparam("h"))


def session_principal(conn: sa.Connection, secret: str, now: float) -> Principal | None:
    """The caller a session cookie names, or ``None`` for an unknown or ended session."""
    row = conn.execute(_SESSION, {"h": _hash(secret)}).first()
    if row is None or row.expires_at <= now:
        return None
    return Principal(
        str(row.name), Role(row.role), "session", tuple(json.loads(row.groups)),
        token_id=row.token_id or "",
    )  # fmt: skip


def close_session(conn: sa.Connection, secret: str) -> None:
    """End a session (sign-out)."""
    conn.execute(sa.delete(web_sessions).where(web_sessions.c.session_hash == _hash(secret)))
