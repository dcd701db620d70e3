"""The pool admin's API: pilots (list, drain, resume, retire, kill), who submits, the
running configuration and its reload; and the factory's retirement of an entry's pilots.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from pydantic import ConfigDict, Field, model_validator

from pilotage import __version__
from pilotage.api.admin import Admin
from pilotage.api.auth import Principal, require
from pilotage.api.reload import reload
from pilotage.api.users import Ctx, context
from pilotage.bodies import Body
from pilotage.collector import pilot_admin
from pilotage.collector.pilots import entry_token_subject
from pilotage.credentials import vo
from pilotage.credentials.tokens import Role
from pilotage.errors import ConfigInvalid, Denied, NotFound, PilotageError, Transient
from pilotage.frontend.wire import EntryName
from pilotage.store.tables import clusters, entry_ads, jobs

router = APIRouter(prefix="/api/v1")


# --- pilots -----------------------------------------------------------------------------


@router.get("/pilots")
def list_pilots(
    ctx: Ctx, who: Admin, include_gone: Annotated[bool, Query(alias="all")] = False
) -> list[dict[str, Any]]:
    """Pilots in the pool (``all``: also those that left or were lost)."""
    with ctx.store.read() as conn:
        return pilot_admin.list_pilots(conn, include_gone=include_gone)


class PilotAction(Body):
    """An action on named pilots, or on every active one."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["pilots"],
                    "properties": {"pilots": {"minItems": 1}, "all": {"const": False}},
                },
                {
                    "required": ["all"],
                    "properties": {"pilots": {"maxItems": 0}, "all": {"const": True}},
                },
            ]
        },
    )

    action: Literal["drain", "resume", "retire", "kill"]
    pilots: list[str] = Field(default_factory=list, max_length=10_000)
    all: bool = False

    @model_validator(mode="after")
    def _targets(self) -> PilotAction:
        if bool(self.pilots) == self.all:
            raise ValueError("name pilots, or set all (not both)")
        return self


@router.post("/pilots/actions")
def act_on_pilots(body: PilotAction, ctx: Ctx, who: Admin) -> list[dict[str, Any]]:
    with ctx.store.write() as conn:
        return pilot_admin.act(
            conn,
            body.action,
            body.pilots,
            every=body.all,
            by=who.name,
            max_attempts=ctx.settings.server.max_attempts,
            now=ctx.clock(),
        )


def _factory(request: Request) -> Principal:
    return require(context(request).authenticator.principal(request), Role.FACTORY)


class Retirement(Body):
    """A factory retiring the pilots one frontend has at one of its entries."""

    model_config = ConfigDict(extra="forbid")

    frontend: str = Field(min_length=1, max_length=256)


@router.post("/entries/{entry}/retirements")
def retire_entry(
    entry: EntryName,
    body: Retirement,
    ctx: Ctx,
    who: Annotated[Principal, Depends(_factory)],
) -> dict[str, Any]:
    """Ask the running pilots of ``entry`` started for ``frontend`` to retire (end their
    jobs, then leave): how a factory removes running pilots without killing jobs."""
    with ctx.store.write() as conn:
        owner = conn.execute(
            sa.select(entry_ads.c.factory).where(entry_ads.c.name == entry)
        ).scalar_one_or_none()
        if owner is None:
            raise NotFound(f"no factory advertises entry {entry}")
        if owner != who.name:
            raise Denied(f"entry {entry} belongs to factory {owner}, not {who.name}")
        count = pilot_admin.retire_entry(conn, entry, body.frontend)
    return {"entry": entry, "subject": entry_token_subject(entry, body.frontend), "retired": count}


# --- users ------------------------------------------------------------------------------


def _groups_of(user: str, accounting_groups: Mapping[str, tuple[str, ...]]) -> list[str]:
    return sorted(
        g for g, members in accounting_groups.items() if user in members or "*" in members
    )


@router.get("/admin/users")
def users(ctx: Ctx, who: Admin) -> list[dict[str, Any]]:
    """Everyone who has submitted: jobs by state, first and last submission, the
    accounting groups they may use (with quotas), VO groups, priority factor and usage."""
    server = ctx.settings.server
    accounting, quotas = server.accounting_groups, server.group_quotas
    now = ctx.clock()
    with ctx.store.read() as conn:
        submitted = conn.execute(
            sa.select(
                clusters.c.owner,
                sa.func.count(),
                sa.func.min(clusters.c.created_at),
                sa.func.max(clusters.c.created_at),
            ).group_by(clusters.c.owner)
        ).all()
        by_state: dict[str, dict[str, int]] = {}
        for owner, state, count in conn.execute(
            sa.select(jobs.c.owner, jobs.c.state, sa.func.count()).group_by(
                jobs.c.owner, jobs.c.state
            )
        ):
            by_state.setdefault(owner, {})[state] = int(count)
        fqans = {owner: list(vo.groups_of(conn, owner)) for owner, *_ in submitted}
    prio: dict[str, list[dict[str, Any]]] = {}
    for row in ctx.matcher.priorities(now):
        prio.setdefault(row["owner"], []).append(row)
    out = []
    for owner, count, first, last in sorted(submitted):
        groups = _groups_of(owner, accounting)
        out.append(
            {
                "user": owner,
                "clusters": int(count),
                "first_submit_at": first,
                "last_submit_at": last,
                "jobs": by_state.get(owner, {}),
                "accounting_groups": [{"group": g, "quota_cpus": quotas.get(g)} for g in groups],
                "vo_groups": fqans.get(owner, []),
                "submitters": [
                    {
                        "submitter": r["submitter"],
                        "factor": r["factor"],
                        "usage_cpu_s": r["usage_cpu_s"],
                        "running_cpus": r["running_cpus"],
                    }
                    for r in prio.get(owner, [])
                ],
            }
        )
    return out


# --- configuration ------------------------------------------------------------------------


@router.get("/admin/config")
def running_config(request: Request, ctx: Ctx, who: Admin) -> dict[str, Any]:
    """The settings the server runs with now (after any reload)."""
    return {
        "version": __version__,
        "settings": ctx.settings.as_dict(),
        "loaded_at": getattr(request.app.state, "settings_loaded_at", None),
    }


@router.post("/admin/reload")
def reload_config(request: Request, who: Admin) -> dict[str, Any]:
    """Read the configuration again, as SIGHUP does; say what took effect and what needs
    a restart. A file that does not load or pass its checks changes nothing: 422
    ``ConfigInvalid``, naming the file and what is wrong."""
    try:
        found = reload(request.app)
    except Transient:
        raise
    except (PilotageError, OSError) as exc:
        path = request.app.state.ctx.state.config
        why = exc.message if isinstance(exc, PilotageError) else f"{path}: {exc.strerror}"
        raise ConfigInvalid(
            f"the configuration in {path} was not reloaded: {why}; the running "
            "configuration stays (fix the file, check it with 'pilotage config check', "
            "and reload again)"
        ) from None
    return {
        "changes": [
            {"key": c.name, "old": c.old, "new": c.new, "reloads": c.reloads} for c in found
        ]
    }
