"""The collector's view of pilots: registration, their slot ads, liveness, departure.

A pilot whose token is entry-scoped (subject ``entry:<entry>/<frontend>``, as frontends mint
them, see :mod:`pilotage.api.provisioning`) may register only as a pilot of that entry:
its ``EntryName`` attribute must name the entry and its site must be the entry's
advertised ``Site`` (:func:`check_entry`). A token whose subject has no ``/`` (one an
admin issued) is not bound to an entry. Only registration checks this: every later
call is tied to the registered pilot by its token subject already.
"""

from __future__ import annotations

import functools
import json
import secrets
from typing import Any

import sqlalchemy as sa

from pilotage.api.wire import PilotRegistration, Resources
from pilotage.errors import Conflict, Denied, NotFound
from pilotage.queue.jobad import parse_expr, slot_ad
from pilotage.store.tables import claims, entry_ads, pilots

_P = sa.bindparam
# Statements of the dispatch path, built once (see pilotage.queue.claims).
_PILOT = sa.select(pilots).where(pilots.c.id == _P("pilot"))
_USED = sa.select(
    sa.func.coalesce(sa.func.sum(claims.c.request_cpus), 0),
    sa.func.coalesce(sa.func.sum(claims.c.request_memory_mb), 0),
    sa.func.coalesce(sa.func.sum(claims.c.request_disk_mb), 0),
    sa.func.coalesce(sa.func.sum(claims.c.request_gpus), 0),
).where(claims.c.pilot_id == _P("pilot"), claims.c.state == "active")
_TOUCH = sa.update(pilots).where(pilots.c.id == _P("pilot")).values(last_seen_at=_P("now"))


def register(conn: sa.Connection, subject: str, reg: PilotRegistration, now: float) -> str:
    """Record a new pilot for the token subject ``subject``; returns its id."""
    for name, value in reg.attrs.items():
        parse_expr(value, f"pilot attribute {name}")
    parse_expr(reg.start, "the pilot's start expression")
    check_entry(conn, subject, reg)
    pilot_id = "p-" + secrets.token_hex(12)
    ad = {"attrs": reg.attrs, "start": reg.start}
    conn.execute(
        sa.insert(pilots).values(
            id=pilot_id,
            subject=subject,
            name=reg.name,
            site=reg.site,
            host=reg.host,
            cpus=reg.cpus,
            memory_mb=reg.memory_mb,
            disk_mb=reg.disk_mb,
            gpus=reg.gpus,
            ad=json.dumps(ad),
            started_at=now,
            last_seen_at=now,
            expires_at=now + reg.lifetime_s,
            state="active",
            retire=False,
        )
    )
    return pilot_id


#: Subjects of the pilot tokens frontends mint for one entry: ``entry:<entry>/<frontend>``.
#: The prefix keeps them apart from every other subject (a DN has slashes too).
ENTRY_TOKEN_PREFIX = "entry:"  # noqa: S105  (a name prefix, not a secret)


def entry_token_subject(entry: str, frontend: str) -> str:
    """The subject of a pilot token a frontend mints for ``entry``."""
    return f"{ENTRY_TOKEN_PREFIX}{entry}/{frontend}"


def token_entry(subject: str) -> str | None:
    """The entry an entry-scoped pilot token was minted for; ``None`` for other tokens."""
    if not subject.startswith(ENTRY_TOKEN_PREFIX):
        return None
    entry, slash, _frontend = subject[len(ENTRY_TOKEN_PREFIX) :].partition("/")
    return entry if slash else None


def check_entry(conn: sa.Connection, subject: str, reg: PilotRegistration) -> None:
    """Refuse a registration claiming another entry or site than its token's entry.

    Every ``EntryName`` attribute (ClassAd names ignore case) must evaluate to the
    token's entry, and one must be there; the pilot's site must be the ``Site`` of the
    entry's advertised ad. Raises :class:`Denied` (403) naming what differs.
    """
    entry = token_entry(subject)
    if entry is None:
        return
    named = [value for key, value in reg.attrs.items() if key.lower() == "entryname"]
    if not named:
        raise Denied(f"a pilot of entry {entry} must register with EntryName = {entry!r}")
    for value in named:
        claimed = parse_expr(value, "pilot attribute EntryName").eval()
        if claimed != entry:
            raise Denied(
                f"pilot token minted for entry {entry} cannot register a pilot of entry "
                f"{value} (EntryName)"
            )
    text = conn.execute(
        sa.select(entry_ads.c.ad).where(entry_ads.c.name == entry)
    ).scalar_one_or_none()
    if text is None:
        raise Denied(f"pilot token minted for entry {entry}, which no factory advertises")
    site = json.loads(text).get("Site")
    if reg.site != site:
        raise Denied(
            f"pilot token minted for entry {entry} (site {site}) cannot register a pilot "
            f"of site {reg.site}"
        )


def owned(conn: sa.Connection, pilot_id: str, subject: str) -> sa.Row[Any]:
    """The pilot row, if it exists and belongs to ``subject``; else NotFound or Denied."""
    row = conn.execute(_PILOT, {"pilot": pilot_id}).first()
    if row is None:
        raise NotFound(f"pilot {pilot_id} is not registered")
    check_owner(row, subject)
    return row


def check_owner(row: sa.Row[Any], subject: str) -> None:
    """Refuse a pilot row registered by another identity than ``subject``."""
    if row.subject != subject:
        raise Denied(f"pilot {row.id} was registered by another identity")


def require_active(row: sa.Row[Any]) -> None:
    """Refuse work for a pilot that has left or was declared lost."""
    if row.state != "active":
        raise Conflict(f"pilot {row.id} is {row.state}; start a new pilot")


def free_resources(conn: sa.Connection, row: sa.Row[Any]) -> Resources:
    """The pilot's resources not carved out by its live claims (the server's own count)."""
    used = conn.execute(_USED, {"pilot": row.id}).one()
    return Resources(
        cpus=max(0, row.cpus - int(used[0])),
        memory_mb=max(0, row.memory_mb - int(used[1])),
        disk_mb=max(0, row.disk_mb - int(used[2])),
        gpus=max(0, row.gpus - int(used[3])),
    )


def offer_ad(row: sa.Row[Any], free: Resources, time_left_s: float) -> Any:
    """The slot ad a pilot offers now: its attributes with its free resources."""
    registered, start = _registered_ad(row.ad)
    # Parsed afresh for every ad: an expression tree belongs to the ad it is put in.
    attrs: dict[str, Any] = {name: parse_expr(value, name) for name, value in registered}
    attrs.update(
        {
            "Name": row.name,
            "PilotId": row.id,
            "Site": row.site,
            "Machine": row.host,
            "Cpus": free.cpus,
            "Memory": free.memory_mb,
            "Disk": free.disk_mb,
            "GPUs": free.gpus,
            "TotalCpus": row.cpus,
            "TotalMemory": row.memory_mb,
            "TotalDisk": row.disk_mb,
            "TotalGPUs": row.gpus,
            "TimeToLive": int(time_left_s),
        }
    )
    return slot_ad(attrs, start)


@functools.lru_cache(maxsize=4096)
def _registered_ad(text: str) -> tuple[tuple[tuple[str, str], ...], str]:
    """A pilot's stored ad as its attribute expressions and its start expression."""
    stored = json.loads(text)
    return tuple(stored["attrs"].items()), str(stored["start"])


def touch(conn: sa.Connection, row: sa.Row[Any], now: float, *, every_s: float = 0.0) -> None:
    """Note that the pilot was heard from, unless it was less than ``every_s`` ago.

    ``every_s`` spares the dispatch path a write per request; keep it well under the
    silence after which the reaper declares a pilot lost.
    """
    if now - row.last_seen_at >= every_s:
        conn.execute(_TOUCH, {"pilot": row.id, "now": now})


def leave(conn: sa.Connection, pilot_id: str, state: str, reason: str, now: float) -> None:
    """Mark the pilot exited (it said so) or lost (it went silent)."""
    conn.execute(
        sa.update(pilots)
        .where(pilots.c.id == pilot_id, pilots.c.state == "active")
        .values(state=state, exit_reason=reason, last_seen_at=now)
    )


def pool_status(conn: sa.Connection) -> list[dict[str, Any]]:
    """Every active pilot with its total and free resources (``pilotage status``)."""
    rows = conn.execute(
        sa.select(pilots).where(pilots.c.state == "active").order_by(pilots.c.started_at)
    ).all()
    running: dict[str, int] = dict(
        conn.execute(
            sa.select(claims.c.pilot_id, sa.func.count())
            .where(claims.c.state == "active")
            .group_by(claims.c.pilot_id)
        ).all()
    )
    out = []
    for row in rows:
        free = free_resources(conn, row)
        out.append(
            {
                "pilot": row.id,
                "name": row.name,
                "site": row.site,
                "host": row.host,
                "cpus": row.cpus,
                "memory_mb": row.memory_mb,
                "disk_mb": row.disk_mb,
                "gpus": row.gpus,
                "free": free.model_dump(),
                "jobs": int(running.get(row.id, 0)),
                "state": "Claimed" if running.get(row.id) else "Unclaimed",
                "started_at": row.started_at,
                "last_seen_at": row.last_seen_at,
                "expires_at": row.expires_at,
                "retire": row.retire,
            }
        )
    return out
