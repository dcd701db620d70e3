"""Accounting: CPU and wall hours of finished jobs by user, accounting group, site, day,
or, for a site, by final user; as a table, a plot and CSV.

Usage counts once per finished job (completed or removed after it ran), at its end
time. "Final user" is who the work ran for at a site: the job's owner, with the
identity (certificate subject) its credential carried. The account the site's switch
mapped it to stays at the site, in the switch's own audit (``pilotage-exec
--accounting`` on the node); the server never learns it.

A user sees their own usage only; an admin sees everyone's.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from pilotage.api.auth import Principal
from pilotage.store.tables import jobs
from pilotage.web.sqlparts import day, owned_by, spec_field

#: The default time range: the last 30 days.
DEFAULT_SPAN_S = 30 * 86400
#: Rows in a plot (the table has them all).
PLOTTED = 25
NONE = "(none)"


@dataclass(frozen=True)
class Usage:
    """The usage of one key (a user, a group, a site, a day, or a site and user)."""

    key: tuple[str, ...]
    jobs: int
    cpu_h: float
    wall_h: float


def _keys(by: str, *, sqlite: bool) -> list[sa.ColumnElement[Any]]:
    if by == "user":
        return [jobs.c.owner]
    if by == "group":
        # A column of its own where the schema has one (cheap); else read from the spec.
        column = jobs.c.get("acct_group")
        group = spec_field("accounting_group", sqlite=sqlite) if column is None else column
        return [sa.func.coalesce(group, NONE)]
    if by == "site":
        return [sa.func.coalesce(jobs.c.site, NONE)]
    if by == "day":
        return [day(jobs.c.completed_at, sqlite=sqlite)]
    return [
        sa.func.coalesce(jobs.c.site, NONE),
        jobs.c.owner,
        sa.func.coalesce(spec_field("x509_identity", sqlite=sqlite), ""),
    ]


HEADERS = {
    "user": ("user",),
    "group": ("accounting group",),
    "site": ("site",),
    "day": ("day (UTC)",),
    "final_user": ("site", "final user", "identity"),
}


def usage(
    conn: sa.Connection,
    who: Principal,
    by: str,
    since: float,
    until: float,
    *,
    site: str | None,
    sqlite: bool,
) -> list[Usage]:
    """The sums for each key of ``by`` over jobs that ended in [since, until)."""
    keys = _keys(by, sqlite=sqlite)
    conds = [
        owned_by(who),
        jobs.c.completed_at >= since,
        jobs.c.completed_at < until,
        jobs.c.wall_s.is_not(None),
    ]
    if site is not None:
        conds.append(jobs.c.site == site)
    rows = conn.execute(
        sa.select(
            *keys,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(jobs.c.cpu_s), 0.0),
            sa.func.coalesce(sa.func.sum(jobs.c.wall_s), 0.0),
        )
        .where(*conds)
        .group_by(*keys)
    ).all()
    width = len(keys)
    out = [
        Usage(
            key=tuple(_label(by, v) for v in row[:width]),
            jobs=int(row[width]),
            cpu_h=float(row[width + 1]) / 3600,
            wall_h=float(row[width + 2]) / 3600,
        )
        for row in rows
    ]
    if by == "day":
        return sorted(out, key=lambda u: u.key)
    return sorted(out, key=lambda u: (-u.wall_h, u.key))


def _label(by: str, value: Any) -> str:
    if by == "day" and value is not None:
        return time.strftime("%Y-%m-%d", time.gmtime(int(value) * 86400))
    return NONE if value is None else str(value)


def chart(by: str, rows: list[Usage]) -> dict[str, Any]:
    """CPU and wall hours per key (by day: in order; otherwise the biggest first)."""
    shown = rows if by == "day" else rows[:PLOTTED]
    return {
        "kind": "bar",
        "labels": [" / ".join(u.key[:2]) for u in shown],
        "y": "hours",
        "series": [
            {"label": "cpu hours", "data": [u.cpu_h for u in shown]},
            {"label": "wall hours", "data": [u.wall_h for u in shown]},
        ],
    }


def as_csv(by: str, rows: list[Usage]) -> Iterator[str]:
    """The table as CSV: the key's columns, then jobs, cpu_hours, wall_hours."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*HEADERS[by], "jobs", "cpu_hours", "wall_hours"])
    for u in rows:
        cells = [("'" + k) if k[:1] in ("=", "+", "-", "@") else k for k in u.key]
        writer.writerow([*cells, u.jobs, f"{u.cpu_h:.4f}", f"{u.wall_h:.4f}"])
    yield buffer.getvalue()
