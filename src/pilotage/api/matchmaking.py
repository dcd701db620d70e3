"""Matchmaking for users and admins: why a job does not run, and user priorities."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter
from pydantic import ConfigDict, Field

from pilotage.api.admin import Admin
from pilotage.api.context import actor_of
from pilotage.api.users import Ctx, User
from pilotage.bodies import Body
from pilotage.collector import pilots as registry
from pilotage.errors import BadInput
from pilotage.matchmaking.ads import Submitter
from pilotage.queue import jobs as queue
from pilotage.queue.jobad import load_ad
from pilotage.store.tables import pilots

router = APIRouter(prefix="/api/v1")

#: A submitter's name: an owner, or ``group.owner``.
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,255}$")


@router.get("/jobs/{job_id}/analysis")
def job_analysis(job_id: str, ctx: Ctx, who: User) -> dict[str, Any]:
    """Why a job does not run: per Requirements clause, the slots that satisfy it; the
    slots that refuse the job; and where its owner stands in fair share."""
    ref = queue.parse_job_ref(job_id)
    if ref.proc is None:
        raise BadInput(f"name one job as CLUSTER.PROC, not the cluster {ref}")
    now = ctx.clock()
    with ctx.store.read() as conn:
        (row,) = queue.require_jobs(conn, actor_of(who), [ref])
        active = conn.execute(sa.select(pilots).where(pilots.c.state == "active")).all()
        slots = [
            registry.offer_ad(p, registry.free_resources(conn, p), max(0.0, p.expires_at - now))
            for p in active
        ]
    result = ctx.matcher.analyze(load_ad(row.ad), slots, now)
    if not who.admin:
        _hide_others(result)
    return {"job": f"{row.cluster_id}.{row.proc_id}", "state": row.state, **result}


def _hide_others(result: dict[str, Any]) -> None:
    """Take the other submitters ahead in fair share out of a user's analysis: their
    names are theirs (their count, ``competing``, stays)."""
    fair = result["fair_share"]
    if fair["ahead"]:
        # The sentence naming them (analyze._position_sentence) is in the text, the
        # summary and the details alike.
        named = "; ahead: " + ", ".join(fair["ahead"])
        for key, value in result.items():
            if isinstance(value, str):
                result[key] = value.replace(named, "")
            elif isinstance(value, list | tuple):
                result[key] = [v.replace(named, "") if isinstance(v, str) else v for v in value]
    fair["ahead"] = []


@router.get("/userprio")
def user_priorities(ctx: Ctx, who: User) -> dict[str, Any]:
    """Submitters' effective priority (lower is better), usage and factor, and the
    pool's total: an admin sees every submitter, a user only their own (alone or in
    any accounting group). Why: one user's usage is not another user's business."""
    every = ctx.matcher.priorities(ctx.clock())
    mine = every if who.admin else [r for r in every if r["owner"] == who.name]
    total = {
        "submitters": len(every),
        "usage_cpu_s": sum(r["usage_cpu_s"] for r in every),
        "running_cpus": sum(r["running_cpus"] for r in every),
        "idle_jobs": sum(r["idle_jobs"] for r in every),
    }
    return {"scope": "all" if who.admin else "own", "submitters": mine, "total": total}


class FactorBody(Body):
    """A priority factor: usage is multiplied by it (2 means half the share of 1)."""

    model_config = ConfigDict(extra="forbid")

    factor: float = Field(gt=0, le=1e9)


@router.put("/userprio/{name}")
def set_user_factor(name: str, body: FactorBody, ctx: Ctx, who: Admin) -> dict[str, Any]:
    """Set a submitter's priority factor (admin only); it applies at once."""
    if not NAME.match(name):
        raise BadInput(f"'{name}' is not a submitter name (an owner, or group.owner)")
    with ctx.store.write() as conn:
        ctx.matcher.set_factor(conn, name, body.factor, by=who.name, now=ctx.clock())
    factor = ctx.matcher.accountant.factor(Submitter(name))
    return {"submitter": name, "factor": factor}
