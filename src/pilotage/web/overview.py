"""The pool overview: jobs by state over time, running cores by site, pilots by entry
and state, throughput, held jobs by reason; and the slots of each site now.

A user sees their own jobs (counts, plots, held, recent) and the pool's capacity by site
(as ``pilotage status`` shows everyone); an admin sees every job and the factories'
pilots by entry. Everything is an aggregate query or a short page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from pilotage.api.auth import Principal
from pilotage.collector.pilots import token_entry
from pilotage.queue.states import JobState
from pilotage.store.tables import claims, entry_ads, jobs, pilots
from pilotage.web import series
from pilotage.web.filters import WINDOWS
from pilotage.web.sqlparts import owned_by

STATES = tuple(s.value for s in JobState)
#: Rows of the short tables (held jobs, recent jobs).
SHORT = 10
NO_ENTRY = "(no entry)"


def state_counts(conn: sa.Connection, who: Principal) -> dict[str, int]:
    """How many of the caller's (an admin: all) jobs are in each state."""
    found: dict[str, int] = dict(
        conn.execute(
            sa.select(jobs.c.state, sa.func.count()).where(owned_by(who)).group_by(jobs.c.state)
        ).all()
    )
    return {state: int(found.get(state, 0)) for state in STATES}


@dataclass(frozen=True)
class PilotGroups:
    """The active pilots grouped by (site, token subject), once per page: slots, cores
    and memory; and their running jobs, claimed cores and busy pilots."""

    slots: list[tuple[str, str, int, int, int]]
    busy: dict[tuple[str, str], tuple[int, int, int]]

    @classmethod
    def read(cls, conn: sa.Connection) -> PilotGroups:
        slots = conn.execute(
            sa.select(
                pilots.c.site,
                pilots.c.subject,
                sa.func.count(),
                sa.func.sum(pilots.c.cpus),
                sa.func.sum(pilots.c.memory_mb),
            )
            .where(pilots.c.state == "active")
            .group_by(pilots.c.site, pilots.c.subject)
        ).all()
        busy = conn.execute(
            sa.select(
                pilots.c.site,
                pilots.c.subject,
                sa.func.count(),
                sa.func.sum(claims.c.request_cpus),
                sa.func.count(sa.distinct(claims.c.pilot_id)),
            )
            .join(pilots, pilots.c.id == claims.c.pilot_id)
            .where(claims.c.state == "active")
            .group_by(pilots.c.site, pilots.c.subject)
        ).all()
        return cls(
            [(site, subject, int(n), int(c or 0), int(m or 0)) for site, subject, n, c, m in slots],
            {(site, subject): (int(n), int(c or 0), int(p)) for site, subject, n, c, p in busy},
        )

    def claimed_cpus(self) -> dict[str, float]:
        """Cores claimed by running jobs, by site."""
        out: dict[str, float] = {}
        for (site, _subject), (_jobs, cpus, _pilots) in self.busy.items():
            out[site] = out.get(site, 0.0) + cpus
        return out


def sites_now(groups: PilotGroups) -> list[dict[str, Any]]:
    """Per site: active pilots (slots), cores and memory, claimed cores, running jobs."""
    out: dict[str, dict[str, Any]] = {}
    for site, subject, slots, cpus, memory in groups.slots:
        row = out.setdefault(
            site,
            dict(site=site, slots=0, claimed_slots=0, cpus=0, claimed_cpus=0, memory_mb=0, jobs=0),
        )
        running, claimed, busy = groups.busy.get((site, subject), (0, 0, 0))
        row["slots"] += slots
        row["cpus"] += cpus
        row["memory_mb"] += memory
        row["jobs"] += running
        row["claimed_cpus"] += claimed
        row["claimed_slots"] += busy
    return [out[site] for site in sorted(out)]


def pilots_by_entry(conn: sa.Connection, groups: PilotGroups) -> list[dict[str, Any]]:
    """Per entry: the factory's pilots by state (idle, running, held) and the pilots that
    joined the pool from it (busy: running at least one job)."""
    joined: dict[str, list[int]] = {}
    for site, subject, count, _cpus, _memory in groups.slots:
        entry = token_entry(subject) or NO_ENTRY
        seen = joined.setdefault(entry, [0, 0])
        seen[0] += count
        seen[1] += groups.busy.get((site, subject), (0, 0, 0))[2]
    out = []
    for name, counts_text in conn.execute(
        sa.select(entry_ads.c.name, entry_ads.c.pilots).order_by(entry_ads.c.name)
    ).all():
        total = json.loads(counts_text).get("total", {})
        here = joined.pop(name, [0, 0])
        out.append(_entry_row(name, total, here))
    for name, here in sorted(joined.items()):
        out.append(_entry_row(name, {}, here))
    return out


def _entry_row(name: str, factory: dict[str, int], joined: list[int]) -> dict[str, Any]:
    return {
        "entry": name,
        "idle": int(factory.get("idle", 0)),
        "running": int(factory.get("running", 0)),
        "held": int(factory.get("held", 0)),
        "joined": joined[0],
        "busy": joined[1],
    }


def held_by_reason(conn: sa.Connection, who: Principal) -> list[dict[str, Any]]:
    """Held jobs by hold code, with one reason of each as an example."""
    rows = conn.execute(
        sa.select(jobs.c.hold_code, sa.func.count(), sa.func.min(jobs.c.hold_reason))
        .where(owned_by(who), jobs.c.state == "HELD")
        .group_by(jobs.c.hold_code)
        .order_by(sa.func.count().desc())
    ).all()
    return [{"code": code, "jobs": int(n), "example": reason or ""} for code, n, reason in rows]


def held_jobs(conn: sa.Connection, who: Principal) -> list[Any]:
    """The most recently held jobs."""
    return list(
        conn.execute(
            sa.select(
                jobs.c.cluster_id,
                jobs.c.proc_id,
                jobs.c.owner,
                jobs.c.hold_code,
                jobs.c.hold_reason,
                jobs.c.entered_state_at,
            )
            .where(owned_by(who), jobs.c.state == "HELD")
            .order_by(jobs.c.entered_state_at.desc())
            .limit(SHORT)
        ).all()
    )


def recent_jobs(conn: sa.Connection, who: Principal) -> list[Any]:
    """The newest jobs (by submission)."""
    return list(
        conn.execute(
            sa.select(
                jobs.c.cluster_id,
                jobs.c.proc_id,
                jobs.c.owner,
                jobs.c.state,
                jobs.c.site,
                jobs.c.qdate,
                jobs.c.exit_code,
            )
            .where(owned_by(who))
            .order_by(jobs.c.id.desc())
            .limit(SHORT)
        ).all()
    )


def overview(
    conn: sa.Connection, who: Principal, window_name: str, now: float, *, sqlite: bool
) -> dict[str, Any]:
    """Everything the overview page shows, in one read transaction."""
    span_s, step_s = WINDOWS[window_name]
    window = series.Window(now, span_s, step_s)
    groups = PilotGroups.read(conn)
    counts = state_counts(conn, who)
    by_state, per_minute = series.job_states(conn, who, window, counts, sqlite=sqlite)
    cores = series.running_cores(conn, window, groups.claimed_cpus(), sqlite=sqlite)
    times = window.times()
    charts = {
        "states": {
            "kind": "line",
            "x": times,
            "y": "jobs",
            "series": [{"label": s, "data": v} for s, v in by_state.items()],
        },
        "cores": {
            "kind": "line",
            "x": times,
            "y": "cores",
            "stacked": True,
            "series": [{"label": s, "data": v} for s, v in cores.items()],
        },
        "throughput": {
            "kind": "bar",
            "x": times[:-1],
            "y": "completions per minute",
            "series": [{"label": "completed", "data": per_minute}],
        },
    }
    entries = pilots_by_entry(conn, groups) if who.admin else []
    if entries:
        charts["pilots"] = {
            "kind": "bar",
            "labels": [e["entry"] for e in entries],
            "y": "pilots",
            "stacked": True,
            "series": [
                {"label": k, "data": [e[k] for e in entries]} for k in ("idle", "running", "held")
            ],
        }
    per_minute_total = sum(per_minute) * step_s / 60.0
    return {
        "window": window_name,
        "windows": list(WINDOWS),
        "counts": counts,
        "sites": sites_now(groups),
        "entries": entries,
        "held_reasons": held_by_reason(conn, who),
        "held": held_jobs(conn, who),
        "recent": recent_jobs(conn, who),
        "completed_in_window": round(per_minute_total),
        "charts": charts,
        "now": now,
    }
