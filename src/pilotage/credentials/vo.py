"""VO membership: the groups and roles (FQANs) each identity holds in the pool's VO.

An FQAN names a group and optionally a role, as VOMS writes it: ``/pilotage``,
``/pilotage/analysis``, ``/pilotage/Role=pilot``. Admins manage them with ``pilotage
admin vo add|remove|list``. An X.509 login puts the identity's FQANs in its session
token (``wlcg.groups``), and ``[authz]`` entries ``fqan:<FQAN>`` grant roles by them,
as only pilots with a special VOMS role could retrieve credentials in the documents.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlalchemy as sa

from pilotage.errors import BadInput, NotFound
from pilotage.store.tables import vo_members

_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
FQAN = re.compile(rf"^(/{_NAME})+(/Role={_NAME})?$")
MAX_IDENTITY_CHARS = 512


@dataclass(frozen=True)
class Membership:
    """One FQAN held by one identity."""

    identity: str
    fqan: str
    added_by: str
    added_at: float


def check_fqan(fqan: str) -> str:
    """``fqan`` if it is a group path with an optional final ``Role=``; else BadInput."""
    if not FQAN.fullmatch(fqan) or fqan.startswith("/Role="):
        raise BadInput(
            f"{fqan!r} is not an FQAN: write /vo, /vo/group or /vo/group/Role=role "
            "(letters, digits, '.', '_' and '-')"
        )
    return fqan


def check_identity(identity: str) -> str:
    """``identity`` if it is a usable DN or subject; else BadInput."""
    if not identity or len(identity) > MAX_IDENTITY_CHARS or not identity.isprintable():
        raise BadInput(
            f"identity {identity!r} must be 1 to {MAX_IDENTITY_CHARS} printable characters"
        )
    return identity


def add(conn: sa.Connection, identity: str, fqan: str, *, by: str, now: float) -> bool:
    """Give ``identity`` the FQAN; False when it already held it (nothing changes)."""
    check_identity(identity)
    check_fqan(fqan)
    if fqan in groups_of(conn, identity):
        return False
    conn.execute(
        sa.insert(vo_members).values(identity=identity, fqan=fqan, added_by=by, added_at=now)
    )
    return True


def remove(conn: sa.Connection, identity: str, fqan: str) -> None:
    """Take the FQAN from ``identity``; NotFound when it did not hold it."""
    gone = conn.execute(
        sa.delete(vo_members).where(vo_members.c.identity == identity, vo_members.c.fqan == fqan)
    )
    if gone.rowcount == 0:
        raise NotFound(f"{identity} is not a member of {fqan}")


def groups_of(conn: sa.Connection, identity: str) -> tuple[str, ...]:
    """The FQANs ``identity`` holds, sorted."""
    rows = conn.execute(
        sa.select(vo_members.c.fqan)
        .where(vo_members.c.identity == identity)
        .order_by(vo_members.c.fqan)
    )
    return tuple(rows.scalars())


def members(conn: sa.Connection, identity: str | None = None) -> list[Membership]:
    """Every membership (of ``identity`` only when given), by identity then FQAN."""
    query = sa.select(vo_members).order_by(vo_members.c.identity, vo_members.c.fqan)
    if identity is not None:
        query = query.where(vo_members.c.identity == identity)
    return [Membership(r.identity, r.fqan, r.added_by, r.added_at) for r in conn.execute(query)]
