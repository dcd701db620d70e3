"""The queue by batch, as ``pilotage q`` shows it first: counts grouped in SQL.

A batch is an owner's jobs that share a ``JobBatchName``; a cluster whose jobs have none
is a batch of its own (``ID: <cluster>``). The counts per cluster and state come from the
index ``ix_jobs_state_cluster`` alone; a cluster's batch name is read from one job's ad
(its first job in the queue), and the clusters of one owner with one name are merged. So
the cost grows with the number of clusters in the queue, not of jobs; no job's row is
read but one per cluster.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from pilotage.queue.jobad import load_ad
from pilotage.queue.states import JobState
from pilotage.store.tables import jobs

QUEUE = (JobState.IDLE, JobState.RUNNING, JobState.HELD)
DONE = (JobState.COMPLETED, JobState.REMOVED)
#: Clusters named in one statement (bound parameters stay well under every limit).
_IN_CHUNK = 500
#: ``JobBatchName = "..."`` on a line of its own: how both ClassAd forms store it.
_BATCH_NAME = re.compile(r'^\s*JobBatchName = "((?:[^"\\\n]|\\.)*)";?\s*$', re.MULTILINE)


@dataclass
class Batch:
    """One row of ``pilotage q``: an owner's batch with its jobs counted by state."""

    owner: str
    name: str | None
    first: tuple[int, int]
    last: tuple[int, int]
    submitted: float = 0.0
    clusters: int = 0
    idle: int = 0
    running: int = 0
    held: int = 0
    done: int = 0

    def to_dict(self) -> dict[str, Any]:
        queued = self.idle + self.running + self.held
        return {
            "owner": self.owner,
            "name": self.name,
            "submitted": self.submitted,
            "clusters": self.clusters,
            "first": f"{self.first[0]}.{self.first[1]}",
            "last": f"{self.last[0]}.{self.last[1]}",
            "done": self.done,
            "running": self.running,
            "idle": self.idle,
            "held": self.held,
            "total": queued + self.done,
        }


@dataclass
class _Cluster:
    owner: str
    first: int
    last: int
    counts: dict[str, int]


def batches(conn: sa.Connection, owner: str | None) -> dict[str, Any]:
    """The batches with jobs in the queue (of ``owner``, or everyone's), oldest first,
    and the queue's jobs counted by state."""
    conds: list[sa.ColumnElement[bool]] = [jobs.c.state.in_([s.value for s in QUEUE])]
    if owner is not None:
        conds.append(jobs.c.owner == owner)
    found: dict[int, _Cluster] = {}
    totals = {s.value: 0 for s in QUEUE}
    query = (
        sa.select(
            jobs.c.cluster_id,
            jobs.c.state,
            sa.func.max(jobs.c.owner),  # one owner per cluster
            sa.func.count(),
            sa.func.min(jobs.c.proc_id),
            sa.func.max(jobs.c.proc_id),
        )
        .where(*conds)
        .group_by(jobs.c.state, jobs.c.cluster_id)
    )
    for cluster_id, state, who, count, first, last in conn.execute(query):
        known = found.get(cluster_id)
        if known is None:
            known = found[cluster_id] = _Cluster(who, first, last, {})
        known.first, known.last = min(known.first, first), max(known.last, last)
        known.counts[state] = int(count)
        totals[state] += int(count)
    heads = _heads(conn, found)
    done = _done(conn, list(found))
    merged: dict[tuple[str, str | int], Batch] = {}
    for cluster_id in sorted(found):
        info = found[cluster_id]
        name, qdate = heads.get(cluster_id, (None, 0.0))
        key = (info.owner, name if name is not None else cluster_id)
        batch = merged.get(key)
        if batch is None:
            batch = merged[key] = Batch(
                info.owner, name, (cluster_id, info.first), (cluster_id, info.last), qdate
            )
        batch.last = (cluster_id, info.last)
        batch.submitted = min(batch.submitted, qdate)
        batch.clusters += 1
        batch.idle += info.counts.get(JobState.IDLE.value, 0)
        batch.running += info.counts.get(JobState.RUNNING.value, 0)
        batch.held += info.counts.get(JobState.HELD.value, 0)
        batch.done += done.get(cluster_id, 0)
    return {"batches": [b.to_dict() for b in merged.values()], "counts": totals}


def _pieces(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


def _heads(conn: sa.Connection, found: dict[int, _Cluster]) -> dict[int, tuple[str | None, float]]:
    """Each cluster's batch name and submit time, from its first job in the queue."""
    out: dict[int, tuple[str | None, float]] = {}
    places = [(c, info.first) for c, info in found.items()]
    for piece in _pieces(places):
        # OR of (cluster, proc) pairs, not a row-value IN: SQLite seeks the key for each.
        at = sa.or_(*(sa.and_(jobs.c.cluster_id == c, jobs.c.proc_id == p) for c, p in piece))
        query = sa.select(jobs.c.cluster_id, jobs.c.qdate, jobs.c.ad).where(at)
        for cluster_id, qdate, ad in conn.execute(query):
            out[cluster_id] = (batch_name(ad), float(qdate))
    return out


def _done(conn: sa.Connection, clusters: list[int]) -> dict[int, int]:
    """How many jobs of each cluster have left the queue (completed or removed)."""
    out: dict[int, int] = {}
    for piece in _pieces(clusters):
        query = (
            sa.select(jobs.c.cluster_id, sa.func.count())
            .where(jobs.c.state.in_([s.value for s in DONE]), jobs.c.cluster_id.in_(piece))
            .group_by(jobs.c.cluster_id)
        )
        for cluster_id, count in conn.execute(query):
            out[cluster_id] = int(count)
    return out


def batch_name(ad_text: str) -> str | None:
    """A stored ad's ``JobBatchName``, ``None`` when it has none (or not a string)."""
    match = _BATCH_NAME.search(ad_text)
    if match is None:
        if "jobbatchname" not in ad_text.lower():
            return None
    elif "\\" not in match.group(1):
        return match.group(1)
    ad = load_ad(ad_text)  # an escape, or an expression: parse and evaluate it
    if "JobBatchName" not in ad:
        return None
    try:
        value = ad.eval("JobBatchName")
    except Exception:  # noqa: BLE001  (classad2 raises its own untyped exception)
        return None
    return value if isinstance(value, str) else None
