"""History: finished jobs searched by user, site, exit code and time range; one page at a
time on the page, every match in the CSV and JSON downloads.

Finished jobs (completed or removed) carry their end time (``completed_at``), which is
indexed: the newest come first without sorting the whole history. Downloads stream in
chunks walked by (end time, id), so a download of the whole history holds one chunk in
memory at a time.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from pilotage.api.auth import Principal
from pilotage.errors import Denied
from pilotage.store.engine import Store
from pilotage.store.tables import jobs
from pilotage.web.filters import PAGE_SIZE, HistoryFilter
from pilotage.web.jobs_view import row_view
from pilotage.web.render import when
from pilotage.web.sqlparts import owned_by

#: What a download holds per job, in this order (the CSV's header).
COLUMNS = (
    "id",
    "owner",
    "state",
    "exit_code",
    "exit_signal",
    "site",
    "qdate",
    "completed_at",
    "wall_s",
    "cpu_s",
    "max_rss_kb",
    "request_cpus",
    "request_memory_mb",
    "attempts",
    "hold_reason",
    "command",
)
CHUNK = 2000
#: The history page counts matches up to this many.
COUNT_CAP = 10_000


def conditions(who: Principal, wanted: HistoryFilter) -> list[sa.ColumnElement[bool]]:
    """The SQL of a search, the caller's scope first."""
    if wanted.user is not None and not who.admin and wanted.user != who.name:
        raise Denied(f"{who.name} may see only their own jobs, not those of {wanted.user}")
    # Invariant (queue): completed_at is set exactly when a job enters COMPLETED or
    # REMOVED, which it never leaves; so "finished" is read from the index alone.
    conds = [owned_by(who), jobs.c.completed_at.is_not(None)]
    if wanted.user is not None:
        conds.append(jobs.c.owner == wanted.user)
    if wanted.site is not None:
        conds.append(jobs.c.site == wanted.site)
    if wanted.exit_code is not None:
        conds.append(jobs.c.exit_code == wanted.exit_code)
    if wanted.since is not None:
        conds.append(jobs.c.completed_at >= wanted.since)
    if wanted.until is not None:
        conds.append(jobs.c.completed_at < wanted.until)
    return conds


def search(
    conn: sa.Connection, who: Principal, wanted: HistoryFilter, page: int
) -> tuple[list[dict[str, Any]], int]:
    """One page of matching jobs, newest first, and how many match."""
    conds = conditions(who, wanted)
    # Counted up to a bound: past it the page says "more than", and a search over a
    # long history costs no more than one over its newest jobs.
    matching = sa.select(jobs.c.id).where(*conds).limit(COUNT_CAP + 1).subquery()
    total = conn.execute(sa.select(sa.func.count()).select_from(matching)).scalar_one()
    rows = conn.execute(
        sa.select(jobs)
        .where(*conds)
        .order_by(jobs.c.completed_at.desc(), jobs.c.id.desc())
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    ).all()
    return [row_view(r) for r in rows], int(total)


def _record(row: sa.Row[Any]) -> dict[str, Any]:
    view = row_view(row)
    return {key: view[key] for key in COLUMNS}


def matches(store: Store, who: Principal, wanted: HistoryFilter) -> Iterator[dict[str, Any]]:
    """Every matching job, newest first, read in chunks (each its own short read)."""
    conds = conditions(who, wanted)
    after: tuple[float, int] | None = None
    while True:
        query = sa.select(jobs).where(*conds)
        if after is not None:
            query = query.where(
                sa.or_(
                    jobs.c.completed_at < after[0],
                    sa.and_(jobs.c.completed_at == after[0], jobs.c.id < after[1]),
                )
            )
        query = query.order_by(jobs.c.completed_at.desc(), jobs.c.id.desc()).limit(CHUNK)
        with store.read() as conn:
            rows = conn.execute(query).all()
        for row in rows:
            yield _record(row)
        if len(rows) < CHUNK:
            return
        after = (rows[-1].completed_at, rows[-1].id)


def as_csv(records: Iterator[dict[str, Any]]) -> Iterator[str]:
    """CSV text, a header line first; times as UTC text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for number, record in enumerate(records):
        values = dict(
            record, qdate=when(record["qdate"]), completed_at=when(record["completed_at"])
        )
        writer.writerow([_cell(values[key]) for key in COLUMNS])
        if number % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _cell(value: Any) -> Any:
    """A cell that a spreadsheet will not run as a formula (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def as_json(records: Iterator[dict[str, Any]]) -> Iterator[str]:
    """A JSON array, one job per line."""
    yield "["
    for number, record in enumerate(records):
        yield ("\n" if number == 0 else ",\n") + json.dumps(record, sort_keys=True)
    yield "\n]\n"
