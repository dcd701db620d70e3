""" "My jobs", a cluster, and one job: what ``q``, ``q -nobatch`` and ``q -l`` show.

The batch view has one row per cluster with its counts per state (a cluster is a batch;
its ``JobBatchName`` names the row when it has one), the job view one row per job with
``q``'s columns; both are paged in SQL. A job the caller may not see is "not found",
whoever owns it: the pages do not say whose it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from pilotage.api.auth import Principal
from pilotage.errors import BadInput, Denied
from pilotage.queue import jobquery
from pilotage.queue.jobs import job_view, parse_job_ref
from pilotage.queue.states import JobState
from pilotage.store.tables import job_events, jobs
from pilotage.web.errors import NotVisible
from pilotage.web.filters import PAGE_SIZE
from pilotage.web.sqlparts import owned_by

ACTIVE = (JobState.IDLE, JobState.RUNNING, JobState.HELD)
ALL = tuple(JobState)


@dataclass(frozen=True)
class JobFilter:
    """Which jobs the jobs page lists."""

    owner: str | None
    states: tuple[JobState, ...]
    cluster: int | None

    def where(self, who: Principal) -> list[sa.ColumnElement[bool]]:
        if self.owner is not None and not who.admin and self.owner != who.name:
            raise Denied(f"{who.name} may see only their own jobs, not those of {self.owner}")
        conds = [owned_by(who), jobs.c.state.in_([s.value for s in self.states])]
        if self.owner is not None:
            conds.append(jobs.c.owner == self.owner)
        if self.cluster is not None:
            conds.append(jobs.c.cluster_id == self.cluster)
        return conds


def _count(state: str) -> sa.ColumnElement[int]:
    return sa.func.sum(sa.case((jobs.c.state == state, 1), else_=0))


def batches(
    conn: sa.Connection, who: Principal, wanted: JobFilter, page: int
) -> tuple[list[dict[str, Any]], int]:
    """One page of batches (clusters) with counts per state, newest first; and how many
    batches match."""
    conds = wanted.where(who)
    total = conn.execute(
        sa.select(sa.func.count(sa.distinct(jobs.c.cluster_id))).where(*conds)
    ).scalar_one()
    rows = conn.execute(
        sa.select(
            jobs.c.cluster_id,
            jobs.c.owner,
            sa.func.min(jobs.c.qdate),
            sa.func.min(jobs.c.proc_id),
            sa.func.max(jobs.c.proc_id),
            _count("COMPLETED") + _count("REMOVED"),
            _count("RUNNING"),
            _count("IDLE"),
            _count("HELD"),
            sa.func.count(),
        )
        .where(*conds)
        .group_by(jobs.c.cluster_id, jobs.c.owner)
        .order_by(jobs.c.cluster_id.desc())
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    ).all()
    names = _batch_names(conn, [r[0] for r in rows])
    out = []
    for cluster, owner, qdate, first, last, done, run, idle, held, count in rows:
        out.append(
            {
                "cluster": cluster,
                "owner": owner,
                "name": names.get(cluster) or f"ID: {cluster}",
                "submitted": qdate,
                "done": int(done or 0),
                "running": int(run or 0),
                "idle": int(idle or 0),
                "held": int(held or 0),
                "total": int(count),
                "ids": f"{cluster}.{first}" if first == last else f"{cluster}.{first}-{last}",
            }
        )
    return out, int(total)


def _batch_names(conn: sa.Connection, clusters: list[int]) -> dict[int, str]:
    """The batch name of each cluster (that of its first job)."""
    if not clusters:
        return {}
    first = (
        sa.select(jobs.c.cluster_id, sa.func.min(jobs.c.proc_id).label("proc"))
        .where(jobs.c.cluster_id.in_(clusters))
        .group_by(jobs.c.cluster_id)
        .subquery()
    )
    rows = conn.execute(
        sa.select(jobs.c.cluster_id, jobs.c.spec).join(
            first, sa.and_(jobs.c.cluster_id == first.c.cluster_id, jobs.c.proc_id == first.c.proc)
        )
    ).all()
    return {cluster: json.loads(spec).get("batch_name") or "" for cluster, spec in rows}


def counts(conn: sa.Connection, who: Principal, wanted: JobFilter) -> dict[str, int]:
    """How many of the listed jobs are in each state."""
    found = conn.execute(
        sa.select(jobs.c.state, sa.func.count()).where(*wanted.where(who)).group_by(jobs.c.state)
    ).all()
    return {state: int(n) for state, n in found}


def job_rows(
    conn: sa.Connection, who: Principal, wanted: JobFilter, page: int
) -> list[dict[str, Any]]:
    """One page of jobs with ``q``'s columns, oldest first."""
    rows = conn.execute(
        sa.select(jobs)
        .where(*wanted.where(who))
        .order_by(jobs.c.id)
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    ).all()
    return [row_view(r) for r in rows]


def row_view(row: sa.Row[Any]) -> dict[str, Any]:
    """A job as the tables show it: ``q``'s fields plus its command line."""
    view = job_view(row)
    command = " ".join([view["executable"].rsplit("/", 1)[-1], *view["arguments"]])
    view["command"] = command
    view["what"] = view["hold_reason"] if view["state"] == "HELD" else command
    return view


def visible_job(conn: sa.Connection, who: Principal, job_id: str) -> sa.Row[Any]:
    """The job ``job_id`` names, if the caller may see it; otherwise :class:`NotVisible`."""
    ref = parse_job_ref(job_id[:64])
    if ref.proc is None:
        raise BadInput(f"name one job as CLUSTER.PROC, not the cluster {ref}")
    row = conn.execute(
        sa.select(jobs).where(
            jobs.c.cluster_id == ref.cluster, jobs.c.proc_id == ref.proc, owned_by(who)
        )
    ).first()
    if row is None:
        raise NotVisible(f"job {ref} does not exist, or it is not yours")
    return row


def job_detail(conn: sa.Connection, row: sa.Row[Any], now: float) -> dict[str, Any]:
    """A job's whole ad, its events, exit and usage."""
    events = conn.execute(
        sa.select(job_events).where(job_events.c.job_id == row.id).order_by(job_events.c.id)
    ).all()
    return {
        "job": row_view(row),
        "ad": jobquery.whole_ad(row, now).printOld(),
        "events": events,
    }
