"""The overview's plots over time, read back from the job event history.

Every state change of a job is an event row (``job_events``), so the counts at any past
moment are today's counts with the later events undone: going back over a slice of
time, a job that entered a state in it was not there before, and one that left was.
One aggregate query per plot reads the events of the window (by the index on their
time), grouped by slice; the walk back is :func:`rewind`, pure. Plots thus need no
sampler, show the pool's past since before the server started, and agree between
several servers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa

from pilotage.api.auth import Principal
from pilotage.store.tables import claims, job_events, jobs, pilots
from pilotage.web.sqlparts import bucket, owned_by

#: The states the "jobs by state" plot draws (the finished ones only grow).
PLOTTED = ("IDLE", "RUNNING", "HELD")
#: Sites drawn one by one in the cores plot; the rest are summed as "other".
TOP_SITES = 8


@dataclass(frozen=True)
class Window:
    """``points`` + 1 moments, ``step_s`` apart, the last one ``now``."""

    now: float
    span_s: float
    step_s: float

    @property
    def start(self) -> float:
        return self.now - self.span_s

    @property
    def points(self) -> int:
        return max(1, round(self.span_s / self.step_s))

    def times(self) -> list[float]:
        return [self.start + k * self.step_s for k in range(self.points + 1)]

    def slot(self, index: int | None) -> int:
        """A slice index from SQL, kept inside the window (a clock a little ahead of
        ours puts an event after ``now``: it is undone in the last slice)."""
        return min(max(int(index or 0), 0), self.points - 1)


def rewind(
    now_counts: Mapping[str, float],
    changes: Iterable[tuple[int, str | None, str | None, float]],
    points: int,
) -> dict[str, list[float]]:
    """Counts per key at each of ``points`` + 1 moments, from the counts now and the
    changes in each slice: ``(slice, left, entered, amount)`` means ``amount`` moved
    from key ``left`` to key ``entered`` during slice ``slice`` (None: from or to
    nowhere). Slice k lies between moments k and k + 1; the last moment is now.
    """
    delta: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    keys = set(now_counts)
    for index, left, entered, amount in changes:
        if entered is not None:
            delta[index][entered] += amount
            keys.add(entered)
        if left is not None:
            delta[index][left] -= amount
            keys.add(left)
    series = {key: [0.0] * (points + 1) for key in keys}
    for key in keys:
        value = float(now_counts.get(key, 0))
        series[key][points] = value
        for k in range(points - 1, -1, -1):
            value -= delta[k].get(key, 0.0)
            series[key][k] = max(0.0, value)
    return series


def job_states(
    conn: sa.Connection,
    who: Principal,
    window: Window,
    now_counts: Mapping[str, int],
    *,
    sqlite: bool,
) -> tuple[dict[str, list[float]], list[float]]:
    """Jobs by state at each moment of the window, from the counts now, and completions
    per minute in each slice (the caller's own jobs, or all for an admin)."""
    scope = owned_by(who)
    index = bucket(job_events.c.at, window.start, window.step_s, sqlite=sqlite)
    query = sa.select(index, job_events.c.from_state, job_events.c.to_state, sa.func.count()).where(
        job_events.c.at >= window.start
    )
    if not who.admin:
        query = query.join(jobs, jobs.c.id == job_events.c.job_id).where(scope)
    rows = conn.execute(query.group_by(index, job_events.c.from_state, job_events.c.to_state)).all()
    changes = [(window.slot(i), left, entered, float(n)) for i, left, entered, n in rows]
    series = rewind(now_counts, changes, window.points)
    per_minute = [0.0] * window.points
    for i, _left, entered, n in changes:
        if entered == "COMPLETED":
            per_minute[i] += n * 60.0 / window.step_s
    return {state: series.get(state, [0.0] * (window.points + 1)) for state in PLOTTED}, per_minute


def running_cores(
    conn: sa.Connection, window: Window, now_cpus: Mapping[str, float], *, sqlite: bool
) -> dict[str, list[float]]:
    """Cores claimed by running jobs, by site, at each moment of the window (the pool's
    whole, as ``pilotage status`` shows everyone), from the cores claimed now."""
    index = bucket(job_events.c.at, window.start, window.step_s, sqlite=sqlite)
    entering = job_events.c.to_state == "RUNNING"
    rows = conn.execute(
        sa.select(index, entering, pilots.c.site, sa.func.sum(claims.c.request_cpus))
        .select_from(job_events)
        .join(claims, claims.c.id == job_events.c.claim_id)
        .join(pilots, pilots.c.id == claims.c.pilot_id)
        .where(
            job_events.c.at >= window.start,
            sa.or_(entering, job_events.c.from_state == "RUNNING"),
        )
        .group_by(index, entering, pilots.c.site)
    ).all()
    changes = [
        (window.slot(i), None if enters else site, site if enters else None, float(cpus or 0))
        for i, enters, site, cpus in rows
    ]
    return _top(rewind(now_cpus, changes, window.points))


def _top(series: dict[str, list[float]]) -> dict[str, list[float]]:
    """The sites with the most cores at any moment; the others summed as ``other``."""
    ranked = sorted(series, key=lambda s: (-max(series[s], default=0.0), s))
    kept = {site: series[site] for site in ranked[:TOP_SITES]}
    rest = ranked[TOP_SITES:]
    if rest:
        length = len(next(iter(series.values())))
        kept["other"] = [sum(series[s][k] for s in rest) for k in range(length)]
    return kept
