"""The idle jobs of the queue as the frontend needs them: autoclusters with counts.

Built by the server from the jobs table for ``GET /api/v1/idle-autoclusters``. The
frontend matches job *groups* against entry ads (:mod:`pilotage.frontend.matching`), so
what it needs of a group is only what decides where its jobs could run: the requests
(cpus, memory, disk, gpus), ``MaxWallTime``, the user's own ``Requirements`` (the
standard resource clauses are checked from the requests) and the values of the job
attributes those ``Requirements`` read.

Cost: one ``GROUP BY`` over the idle jobs (by cluster, owner and requests), then one
ad parsed per such row, not per job. Jobs of one cluster share their submit
description, so their ``Requirements`` and the attributes it reads are taken from the
cluster's first idle job (a ``$(Process)``-dependent ``Requirements`` is rare; such a
cluster is provisioned for as if all its jobs were like its first). Rows that agree on
everything above merge into one autocluster.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import sqlalchemy as sa

from pilotage.frontend.wire import IdleAutocluster, Literal_
from pilotage.matchmaking.ads import MatchConfig
from pilotage.matchmaking.classads import LITERAL_TYPES, evaluate, parse_expr, references
from pilotage.matchmaking.clauses import join_clauses, resource_of, split_clauses
from pilotage.queue.jobad import load_ad
from pilotage.queue.states import JobState
from pilotage.store.tables import jobs

_GROUPS = (
    sa.select(
        jobs.c.cluster_id,
        jobs.c.owner,
        jobs.c.request_cpus,
        jobs.c.request_memory_mb,
        jobs.c.request_disk_mb,
        jobs.c.request_gpus,
        sa.func.min(jobs.c.id).label("first"),
        sa.func.count().label("idle"),
    )
    .where(jobs.c.state == JobState.IDLE.value)
    .group_by(
        jobs.c.cluster_id,
        jobs.c.owner,
        jobs.c.request_cpus,
        jobs.c.request_memory_mb,
        jobs.c.request_disk_mb,
        jobs.c.request_gpus,
    )
)


def _literal(value: object) -> Literal_:
    """A job attribute's value as a JSON literal (expressions and lists as ``None``)."""
    if type(value) in LITERAL_TYPES:
        return value  # type: ignore[return-value]
    return None


def user_requirements(ad: Any) -> str:
    """The job's ``Requirements`` without the standard resource clauses (``true`` if none)."""
    expr = ad.lookup("Requirements") if "Requirements" in ad else None
    if expr is None:
        return "true"
    kept = [c for c in split_clauses(str(expr)) if resource_of(c) is None]
    return join_clauses(kept)


def _shape(ad: Any, config: MatchConfig) -> tuple[str, dict[str, Literal_], float]:
    """(user Requirements, the job attributes they read with values, max wall time)."""
    text = user_requirements(ad)
    mine, _theirs = references(ad, parse_expr(text, "requirements"))
    attrs = {name: _literal(evaluate(ad, name)) for name in sorted(mine)}
    wall = evaluate(ad, "MaxWallTime")
    wall_s = (
        float(wall)
        if isinstance(wall, int | float) and not isinstance(wall, bool) and math.isfinite(wall)
        else config.default_max_wall_time_s
    )
    return text, attrs, wall_s


def idle_autoclusters(
    conn: sa.Connection, config: MatchConfig | None = None
) -> list[IdleAutocluster]:
    """The idle jobs of the queue, grouped for provisioning; largest groups first."""
    config = config or MatchConfig()
    rows: Sequence[sa.Row[Any]] = conn.execute(_GROUPS).all()
    if not rows:
        return []
    firsts = [int(r.first) for r in rows]
    ads: dict[int, str] = {}
    for start in range(0, len(firsts), 500):
        chunk = firsts[start : start + 500]
        query = sa.select(jobs.c.id, jobs.c.ad).where(jobs.c.id.in_(chunk))
        ads.update({int(i): str(a) for i, a in conn.execute(query)})
    merged: dict[tuple[Hashable, ...], IdleAutocluster] = {}
    for r in rows:
        text, attrs, wall_s = _shape(load_ad(ads[int(r.first)]), config)
        requests = (r.request_cpus, r.request_memory_mb, r.request_disk_mb, r.request_gpus)
        key = (*requests, wall_s, text, tuple(sorted((k, repr(v)) for k, v in attrs.items())))
        found = merged.get(key)
        if found is None:
            merged[key] = IdleAutocluster(
                id=len(merged) + 1,
                idle=int(r.idle),
                cpus=int(r.request_cpus),
                memory_mb=int(r.request_memory_mb),
                disk_mb=int(r.request_disk_mb),
                gpus=int(r.request_gpus),
                max_wall_time_s=wall_s,
                requirements=text,
                attrs=attrs,
                owners=[str(r.owner)],
            )
        else:
            found.idle += int(r.idle)
            if r.owner not in found.owners:
                found.owners.append(str(r.owner))
    return sorted(merged.values(), key=lambda a: (-a.idle, a.id))
