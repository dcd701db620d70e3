"""Users and fair share: each submitter's usage, priority and factor, its accounting
group, and who is waiting for what (idle jobs by owner and request).

A user sees their own rows only (as ``pilotage userprio`` shows them), with the pool's
totals; an admin sees everyone.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from pilotage.api.auth import Principal
from pilotage.matchmaking.service import MatchService
from pilotage.store.tables import jobs
from pilotage.web.sqlparts import owned_by

#: Rows of the "waiting" table.
WAITING_ROWS = 50


def priorities(matcher: MatchService, who: Principal, now: float) -> dict[str, Any]:
    """The submitters the caller may see, and the pool's totals."""
    every = matcher.priorities(now)
    mine = every if who.admin else [r for r in every if r["owner"] == who.name]
    rows = []
    for r in mine:
        suffix = "." + r["owner"]
        group = r["submitter"][: -len(suffix)] if r["submitter"].endswith(suffix) else ""
        rows.append({**r, "group": group, "usage_cpu_h": r["usage_cpu_s"] / 3600})
    total = {
        "submitters": len(every),
        "usage_cpu_h": sum(r["usage_cpu_s"] for r in every) / 3600,
        "running_cpus": sum(r["running_cpus"] for r in every),
        "idle_jobs": sum(r["idle_jobs"] for r in every),
    }
    return {"rows": rows, "total": total}


def waiting(conn: sa.Connection, who: Principal, now: float) -> list[dict[str, Any]]:
    """Idle jobs by owner and what they ask for, the biggest groups first."""
    rows = conn.execute(
        sa.select(
            jobs.c.owner,
            jobs.c.request_cpus,
            jobs.c.request_memory_mb,
            jobs.c.request_gpus,
            sa.func.count(),
            sa.func.min(jobs.c.qdate),
        )
        .where(owned_by(who), jobs.c.state == "IDLE")
        .group_by(jobs.c.owner, jobs.c.request_cpus, jobs.c.request_memory_mb, jobs.c.request_gpus)
        .order_by(sa.func.count().desc(), jobs.c.owner)
        .limit(WAITING_ROWS)
    ).all()
    return [
        {
            "owner": owner,
            "cpus": cpus,
            "memory_mb": memory,
            "gpus": gpus,
            "jobs": int(count),
            "oldest_wait_s": max(0.0, now - float(oldest)),
        }
        for owner, cpus, memory, gpus, count, oldest in rows
    ]


def usage_chart(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Usage (cpu hours, decayed) and running cpus per submitter."""
    return {
        "kind": "bar",
        "labels": [r["submitter"] for r in rows],
        "y": "cpu hours / cpus",
        "series": [
            {"label": "usage (cpu h)", "data": [round(r["usage_cpu_h"], 3) for r in rows]},
            {"label": "running cpus", "data": [r["running_cpus"] for r in rows]},
        ],
    }
