"""The collector's view of pilots: registration, their slot ads, liveness, departure.

Which slot a registration may claim to be (docs/security.md, "Pilot registrations"):

* a token minted for an entry (subject ``entry:<entry>/<frontend>``, as frontends mint
  them, see :mod:`pilotage.api.provisioning`) registers only pilots of that entry: the
  slot's ``EntryName`` is set to the entry, its site must be the entry's advertised
  ``Site``, and its size at most what the entry advertises (:func:`check_entry`);
* a token bound to no entry (one an admin issued) may not pass for an advertised entry:
  neither an ``EntryName`` nor a site that an entry advertises.

Every registration gets a secret of its own (:func:`new_secret`), of which only the
SHA-256 is stored. Every later call acting on the pilot or one of its claims must prove
it (:func:`check_secret`), on top of the token subject: pilots that share a token are
thus kept apart.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import secrets
from typing import Any

import sqlalchemy as sa

from pilotage.api.wire import PILOT_SECRET_HEADER, PilotRegistration, Resources
from pilotage.errors import Conflict, Denied, NotFound, Unauthenticated
from pilotage.queue.gpus import check_registration as check_gpus
from pilotage.queue.jobad import load_ad, parse_expr, slot_ad
from pilotage.store.prepared import Prepared
from pilotage.store.tables import claims, entry_ads, pilots

_P = sa.bindparam
# Statements of the dispatch path, built once (see pilotage.queue.claims).
# Every request for work runs these: prepared (store/prepared.py).
_PILOT = Prepared(sa.select(pilots).where(pilots.c.id == _P("pilot")))
_USED = Prepared(
    sa.select(
        sa.func.coalesce(sa.func.sum(claims.c.request_cpus), 0),
        sa.func.coalesce(sa.func.sum(claims.c.request_memory_mb), 0),
        sa.func.coalesce(sa.func.sum(claims.c.request_disk_mb), 0),
        sa.func.coalesce(sa.func.sum(claims.c.request_gpus), 0),
    ).where(claims.c.pilot_id == _P("pilot"), claims.c.state == "active")
)
_TOUCH = Prepared(
    sa.update(pilots).where(pilots.c.id == _P("pilot")).values(last_seen_at=_P("now"))
)


def register(
    conn: sa.Connection, subject: str, reg: PilotRegistration, now: float
) -> tuple[str, str]:
    """Record a new pilot for the token subject ``subject``; returns its id and secret.

    The secret is answered once, to the registering pilot; only its hash is stored.
    """
    for name, value in reg.attrs.items():
        parse_expr(value, f"pilot attribute {name}")
    parse_expr(reg.start, "the pilot's start expression")
    check_gpus(reg.gpus, reg.attrs)
    attrs = check_entry(conn, subject, reg)
    pilot_id = "p-" + secrets.token_hex(12)
    secret, digest = new_secret()
    ad = {"attrs": attrs, "start": reg.start}
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
            secret_sha256=digest,
        )
    )
    return pilot_id, secret


def new_secret() -> tuple[str, str]:
    """A fresh pilot secret (256 random bits) and the SHA-256 the server keeps of it."""
    secret = secrets.token_urlsafe(32)
    return secret, secret_digest(secret)


def secret_digest(secret: str) -> str:
    """The stored form of a pilot secret. One SHA-256 suffices: the secret is random,
    so there is nothing to guess that a slow hash would protect."""
    return hashlib.sha256(secret.encode()).hexdigest()


def require_secret_header(secret: str | None) -> str:
    """The pilot secret a call carries; 401 when it carries none."""
    if not secret:
        raise Unauthenticated(
            f"no pilot secret: send the {PILOT_SECRET_HEADER} header with the secret "
            "your registration answered (a pilot that lost it must register again)"
        )
    return secret


def check_secret(row: Any, secret: str) -> None:
    """Refuse (403) a call whose pilot secret is not the one ``row``'s pilot was given.

    ``row`` is the pilot's row (any row with its ``id`` and ``secret_sha256``).
    """
    stored = row.secret_sha256
    # compare_digest: the time taken says nothing about how much of the hash matched.
    if stored is None or not hmac.compare_digest(stored, secret_digest(secret)):
        raise Denied(
            f"the pilot secret does not match pilot {row.id}: only the pilot that "
            "registered it may act for it or its claims"
        )


_SECRET = sa.select(pilots.c.id, pilots.c.secret_sha256).where(pilots.c.id == _P("pilot"))


def check_secret_of(conn: sa.Connection, pilot_id: str, secret: str) -> None:
    """:func:`check_secret` for a pilot known by its id (a claim's holder)."""
    row = conn.execute(_SECRET, {"pilot": pilot_id}).first()
    if row is None:
        raise NotFound(f"pilot {pilot_id} is not registered")
    check_secret(row, secret)


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


#: A registration's sizes and the entry ad attributes that bound them.
_SIZES = (("cpus", "Cpus"), ("memory_mb", "Memory"), ("disk_mb", "Disk"), ("gpus", "GPUs"))


def check_entry(conn: sa.Connection, subject: str, reg: PilotRegistration) -> dict[str, str]:
    """Refuse a registration claiming another entry or site than its token allows;
    return the slot attributes to store.

    A token minted for an entry: every ``EntryName`` attribute (ClassAd names ignore
    case) must evaluate to the token's entry, and one must be there; the pilot's site
    must be the ``Site`` of the entry's advertised ad, and its cpus, memory, disk and
    gpus at most the entry's. The stored ``EntryName`` is then the entry itself (one
    literal), whatever expression the pilot sent. A token bound to no entry:
    :func:`check_unbound`. Raises :class:`Denied` (403) naming what differs.
    """
    entry = token_entry(subject)
    if entry is None:
        check_unbound(conn, reg)
        return dict(reg.attrs)
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
    advertised = json.loads(text)
    site = advertised.get("Site")
    if reg.site != site:
        raise Denied(
            f"pilot token minted for entry {entry} (site {site}) cannot register a pilot "
            f"of site {reg.site}"
        )
    for field, attr in _SIZES:
        limit, asked = advertised.get(attr), getattr(reg, field)
        if isinstance(limit, int) and asked > limit:
            raise Denied(
                f"pilot token minted for entry {entry} ({attr} {limit}) cannot register a "
                f"pilot with {field} = {asked}"
            )
    attrs = {k: v for k, v in reg.attrs.items() if k.lower() != "entryname"}
    attrs["EntryName"] = json.dumps(entry)
    return attrs


def check_unbound(conn: sa.Connection, reg: PilotRegistration) -> None:
    """Refuse a registration by a token bound to no entry that passes for an advertised
    entry: an ``EntryName`` other than one string literal, one naming an advertised
    entry, or the ``Site`` of an advertised entry. Such pilots are the admin's own, at
    sites of their own (docs/security.md, "Pilot registrations")."""
    sites: dict[str, str] = {}
    entries = set()
    for name, text in conn.execute(sa.select(entry_ads.c.name, entry_ads.c.ad)):
        entries.add(name)
        site = json.loads(text).get("Site")
        if isinstance(site, str):
            sites.setdefault(site, name)
    for key, value in reg.attrs.items():
        if key.lower() != "entryname":
            continue
        # Only a literal: an expression could read another attribute in the slot's ad.
        claimed = parse_expr(value, "pilot attribute EntryName").eval()
        if not isinstance(claimed, str):
            raise Denied(
                f"EntryName = {value}: a pilot token bound to no entry may give "
                "EntryName only as a string literal"
            )
        if claimed in entries:
            raise Denied(
                f"a pilot token bound to no entry cannot register a pilot of entry "
                f"{claimed}: use a token minted for that entry"
            )
    if reg.site in sites:
        raise Denied(
            f"a pilot token bound to no entry cannot register a pilot of site {reg.site}, "
            f"which entry {sites[reg.site]} advertises: use a token minted for that entry"
        )


def owned(conn: sa.Connection, pilot_id: str, subject: str, secret: str) -> sa.Row[Any]:
    """The pilot row, if it exists, belongs to ``subject`` and ``secret`` is its secret;
    else NotFound or Denied."""
    row: sa.Row[Any] | None = _PILOT.first(conn, {"pilot": pilot_id})  # read as a Row is
    if row is None:
        raise NotFound(f"pilot {pilot_id} is not registered")
    check_owner(row, subject)
    check_secret(row, secret)
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
    used = _USED.first(conn, {"pilot": row.id})
    return Resources(
        cpus=max(0, row.cpus - int(used[0])),
        memory_mb=max(0, row.memory_mb - int(used[1])),
        disk_mb=max(0, row.disk_mb - int(used[2])),
        gpus=max(0, row.gpus - int(used[3])),
    )


def offer_ad(row: sa.Row[Any], free: Resources, time_left_s: float) -> Any:
    """The slot ad a pilot offers now: its attributes with its free resources."""
    ad = load_ad(
        _offer_text(row.ad, row.name, row.id, row.site, row.host,
                    row.cpus, row.memory_mb, row.disk_mb, row.gpus)
    )  # fmt: skip
    ad["Cpus"] = free.cpus
    ad["Memory"] = free.memory_mb
    ad["Disk"] = free.disk_mb
    ad["GPUs"] = free.gpus
    ad["TimeToLive"] = int(time_left_s)
    return ad


@functools.lru_cache(maxsize=4096)
def _offer_text(
    text: str, name: str, pilot_id: str, site: str, host: str,
    cpus: int, memory_mb: int, disk_mb: int, gpus: int,
) -> str:  # fmt: skip
    """A pilot's slot ad as text, its free resources left to set: built once per pilot
    (parsing it whole for each offer costs a fourth of building it attribute by
    attribute, each expression parsed afresh since a tree belongs to its ad)."""
    registered, start = _registered_ad(text)
    attrs: dict[str, Any] = {name: parse_expr(value, name) for name, value in registered}
    attrs.update(
        {
            "Name": name,
            "PilotId": pilot_id,
            "Site": site,
            "Machine": host,
            "TotalCpus": cpus,
            "TotalMemory": memory_mb,
            "TotalDisk": disk_mb,
            "TotalGPUs": gpus,
        }
    )
    return str(slot_ad(attrs, start))


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
        _TOUCH.rowcount(conn, {"pilot": row.id, "now": now})


def leave(conn: sa.Connection, pilot_id: str, state: str, reason: str, now: float) -> None:
    """Mark the pilot exited (it said so) or lost (it went silent)."""
    conn.execute(
        sa.update(pilots)
        .where(pilots.c.id == pilot_id, pilots.c.state == "active")
        .values(state=state, exit_reason=reason, last_seen_at=now)
    )


def pool_summary(slots: list[dict[str, Any]]) -> dict[str, Any]:
    """What anyone may see of :func:`pool_status`'s slots: counts and resources by site
    and state (``by_site``) and for the whole pool (``total``); no pilot id or host."""
    keys = ("pilots", "jobs", "cpus", "free_cpus", "memory_mb", "free_memory_mb")
    groups: dict[tuple[str, str], dict[str, int]] = {}
    total = dict.fromkeys(keys, 0)
    for s in slots:
        group = groups.setdefault((s["site"], s["state"]), dict.fromkeys(keys, 0))
        free = s["free"]
        values = (1, s["jobs"], s["cpus"], free["cpus"], s["memory_mb"], free["memory_mb"])
        for key, value in zip(keys, values, strict=True):
            group[key] += value
            total[key] += value
    by_site = [{"site": site, "state": state, **n} for (site, state), n in sorted(groups.items())]
    return {"by_site": by_site, "total": total}


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
