"""The collector's provisioning ads: entries, requests, idle autoclusters, validation.

Factories advertise their entries (``PUT /api/v1/entries/{name}``) and read what the
frontends want of them (``GET /api/v1/requests``); frontends read entries and idle job
groups, publish their requests (``PUT /api/v1/requests/{frontend}/{entry}``) and mint
the pilot tokens those requests carry (``POST /api/v1/pilot-tokens``); pilots (or their
factory) report validation outcomes. Bodies and answers are the models of
:mod:`pilotage.frontend.wire`.

Who may do what:

- an entry belongs to the factory that first advertised it; another factory's update
  is a conflict;
- a frontend publishes requests only under its own name, and only for known entries;
  the token a request carries must be a pilot token minted for that entry;
- a frontend mints only pilot tokens, named ``entry:<entry>/<frontend>``, short-lived
  (:data:`~pilotage.frontend.wire.MAX_PILOT_TOKEN_S`);
- a factory reads the requests (tokens included) of its own entries only; an admin
  reads every request without its token;
- a pilot reports validation only for the entry its token names.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request, Response

from pilotage.api.auth import Principal, require
from pilotage.api.users import Ctx, context
from pilotage.collector import pilots as registry
from pilotage.credentials.tokens import Role
from pilotage.errors import BadInput, Conflict, Denied, NotFound, Unauthenticated
from pilotage.frontend.idle import idle_autoclusters
from pilotage.frontend.wire import (
    EntryAdvert,
    EntryName,
    EntryView,
    IdleAutocluster,
    PilotCounts,
    PilotRequest,
    PilotToken,
    PilotTokenRequest,
    Registered,
    RequestView,
    ValidationReport,
    ValidationView,
)
from pilotage.store.tables import claims, entry_ads, pilot_requests, pilots, validation_reports

router = APIRouter(prefix="/api/v1")


def _caller(*roles: Role) -> Any:
    def dependency(request: Request) -> Principal:
        return require(context(request).authenticator.principal(request), *roles)

    return Depends(dependency)


Factory = Annotated[Principal, _caller(Role.FACTORY)]
FactoryOrAdmin = Annotated[Principal, _caller(Role.FACTORY, Role.ADMIN)]
Frontend = Annotated[Principal, _caller(Role.FRONTEND)]
FrontendOrAdmin = Annotated[Principal, _caller(Role.FRONTEND, Role.ADMIN)]
Reporter = Annotated[Principal, _caller(Role.PILOT, Role.FACTORY)]
Reader = Annotated[Principal, _caller(Role.FRONTEND, Role.FACTORY, Role.ADMIN)]


# --- entries ------------------------------------------------------------------------------


@router.put("/entries/{name}", status_code=204)
def advertise_entry(name: EntryName, body: EntryAdvert, ctx: Ctx, who: Factory) -> Response:
    """Create or update an entry's ad and pilot counts (its factory only)."""
    named = body.ad.get("EntryName", name)
    if named != name:
        raise BadInput(f"ad.EntryName: {named!r} differs from the entry in the path ({name})")
    row = {
        "factory": who.name,
        "ad": json.dumps({**body.ad, "EntryName": name}, sort_keys=True),
        "pilots": json.dumps(
            {
                "total": body.pilots.model_dump(),
                "by_frontend": {k: v.model_dump() for k, v in body.by_frontend.items()},
            }
        ),
        "updated_at": ctx.clock(),
    }
    with ctx.store.write() as conn:
        owner = conn.execute(
            sa.select(entry_ads.c.factory).where(entry_ads.c.name == name)
        ).scalar_one_or_none()
        if owner is None:
            conn.execute(sa.insert(entry_ads).values(name=name, **row))
        elif owner != who.name:
            raise Conflict(f"entry {name} is advertised by another factory ({owner})")
        else:
            conn.execute(sa.update(entry_ads).where(entry_ads.c.name == name).values(**row))
    return Response(status_code=204)


def _registered(conn: sa.Connection) -> dict[str, Registered]:
    """Active pilots by the ``EntryName`` they registered with: joined, and busy."""
    busy = (
        sa.select(sa.func.count())
        .where(claims.c.pilot_id == pilots.c.id, claims.c.state == "active")
        .scalar_subquery()
    )
    found: dict[str, Registered] = {}
    for ad_text, jobs in conn.execute(
        sa.select(pilots.c.ad, busy).where(pilots.c.state == "active")
    ):
        try:
            value = json.loads(ad_text).get("attrs", {}).get("EntryName")
            entry = json.loads(value) if isinstance(value, str) else None
        except ValueError:
            continue
        if isinstance(entry, str):
            seen = found.setdefault(entry, Registered())
            seen.total += 1
            seen.busy += 1 if jobs else 0
    return found


@router.get("/entries", response_model=list[EntryView])
def list_entries(ctx: Ctx, who: Reader) -> list[EntryView]:
    """Every advertised entry, with its factory's counts and the pool's own."""
    with ctx.store.read() as conn:
        rows = conn.execute(sa.select(entry_ads).order_by(entry_ads.c.name)).all()
        registered = _registered(conn)
    views = []
    for r in rows:
        counts = json.loads(r.pilots)
        views.append(
            EntryView(
                name=r.name,
                factory=r.factory,
                ad=json.loads(r.ad),
                pilots=PilotCounts(**counts["total"]),
                by_frontend={k: PilotCounts(**v) for k, v in counts["by_frontend"].items()},
                registered=registered.get(r.name, Registered()),
                updated_at=r.updated_at,
            )
        )
    return views


def _entry_factory(conn: sa.Connection, entry: str) -> str:
    owner = conn.execute(
        sa.select(entry_ads.c.factory).where(entry_ads.c.name == entry)
    ).scalar_one_or_none()
    if owner is None:
        raise NotFound(f"no factory advertises entry {entry}")
    return str(owner)


# --- requests and pilot tokens ------------------------------------------------------------


@router.put("/requests/{frontend}/{entry}", status_code=204)
def publish_request(
    frontend: str, entry: EntryName, body: PilotRequest, ctx: Ctx, who: Frontend
) -> Response:
    """Create or replace what ``frontend`` wants at ``entry``."""
    if frontend != who.name:
        raise Denied(f"{who.name} cannot publish requests for frontend {frontend}")
    values = {
        "idle_wanted": body.idle_wanted,
        "max_running": body.max_running,
        "removal": body.removal.value,
        "remove_idle": body.remove_idle,
        "switch_mode": body.switch_mode.value,
        "pilot_token": body.pilot_token,
        "updated_at": ctx.clock(),
    }
    key = (pilot_requests.c.frontend == frontend) & (pilot_requests.c.entry == entry)
    with ctx.store.read() as conn:
        _entry_factory(conn, entry)
    if body.pilot_token is not None:
        try:
            claims_ = ctx.issuer.verify(body.pilot_token)
        except Unauthenticated as exc:
            raise BadInput(f"pilot_token: {exc.message}") from None
        if claims_.role is not Role.PILOT or registry.token_entry(claims_.subject) != entry:
            raise BadInput(f"pilot_token: not a pilot token minted for entry {entry}")
    with ctx.store.write() as conn:
        if conn.execute(sa.update(pilot_requests).where(key).values(**values)).rowcount == 0:
            conn.execute(sa.insert(pilot_requests).values(frontend=frontend, entry=entry, **values))
    return Response(status_code=204)


@router.get("/requests", response_model=list[RequestView])
def list_requests(ctx: Ctx, who: FactoryOrAdmin) -> list[RequestView]:
    """The requests for the caller's entries (a factory), or all without tokens (admin)."""
    query = sa.select(pilot_requests).order_by(pilot_requests.c.entry, pilot_requests.c.frontend)
    if who.role is Role.FACTORY:
        mine = sa.select(entry_ads.c.name).where(entry_ads.c.factory == who.name)
        query = query.where(pilot_requests.c.entry.in_(mine))
    with ctx.store.read() as conn:
        rows = conn.execute(query).all()
    return [
        RequestView(
            frontend=r.frontend,
            entry=r.entry,
            idle_wanted=r.idle_wanted,
            max_running=r.max_running,
            removal=r.removal,
            remove_idle=r.remove_idle,
            switch_mode=r.switch_mode,
            pilot_token=r.pilot_token if who.role is Role.FACTORY else None,
            updated_at=r.updated_at,
        )
        for r in rows
    ]


@router.post("/pilot-tokens", status_code=201, response_model=PilotToken)
def mint_pilot_token(body: PilotTokenRequest, ctx: Ctx, who: Frontend) -> PilotToken:
    """A pilot token for one entry, named ``entry:<entry>/<frontend>``."""
    with ctx.store.read() as conn:
        _entry_factory(conn, body.entry)
    subject = registry.entry_token_subject(body.entry, who.name)
    token = ctx.issuer.mint(subject, Role.PILOT, body.lifetime_s, issued_by=who.name)
    return PilotToken(token=token, subject=subject, expires_at=ctx.issuer.verify(token).expires_at)


# --- idle jobs ----------------------------------------------------------------------------


@router.get("/idle-autoclusters", response_model=list[IdleAutocluster])
def list_idle_autoclusters(ctx: Ctx, who: FrontendOrAdmin) -> list[IdleAutocluster]:
    """The queue's idle jobs grouped for provisioning (:mod:`pilotage.frontend.idle`)."""
    with ctx.store.read() as conn:
        return idle_autoclusters(conn)


# --- validation reports -------------------------------------------------------------------


@router.post("/validation-reports", status_code=201)
def report_validation(body: ValidationReport, ctx: Ctx, who: Reporter) -> dict[str, int]:
    """Record a pilot's validation outcome (a pilot for its own entry, or its factory)."""
    with ctx.store.write() as conn:
        owner = _entry_factory(conn, body.entry)
        if who.role is Role.PILOT and registry.token_entry(who.name) != body.entry:
            raise Denied(f"pilot {who.name} cannot report for entry {body.entry}")
        if who.role is Role.FACTORY and owner != who.name:
            raise Denied(f"entry {body.entry} belongs to another factory")
        details = dict(body.details)
        if body.file is not None:
            details["file"] = body.file
        result = conn.execute(
            sa.insert(validation_reports).values(
                at=ctx.clock(),
                reporter=who.name,
                entry=body.entry,
                pilot=body.pilot,
                ok=body.ok,
                reason=body.reason,
                message=body.message,
                details=json.dumps(details, sort_keys=True),
            )
        )
        key = result.inserted_primary_key
    return {"id": int(key[0]) if key else 0}


@router.get("/validation-reports", response_model=list[ValidationView])
def list_validation_reports(
    ctx: Ctx,
    who: Reader,
    entry: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[ValidationView]:
    """The newest validation reports, of one entry or of all."""
    query = sa.select(validation_reports).order_by(validation_reports.c.id.desc()).limit(limit)
    if entry is not None:
        query = query.where(validation_reports.c.entry == entry)
    with ctx.store.read() as conn:
        rows = conn.execute(query).all()
    return [
        ValidationView(
            id=r.id,
            at=r.at,
            reporter=r.reporter,
            entry=r.entry,
            pilot=r.pilot,
            ok=r.ok,
            reason=r.reason,
            message=r.message,
            details=json.loads(r.details),
        )
        for r in rows
    ]
