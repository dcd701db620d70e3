"""Counters of what happens to jobs, credentials and pilots, fed by the pool's own records.

Every job state change is a ``job_events`` row, every credential release or refusal a
``credential_audit`` row, every pilot validation a ``validation_reports`` row. At each
scrape the feed reads the rows added since the last one (by their ids, from where they
stood when this server started) and counts them. Counting committed rows, not calls,
means a transaction the write queue rolled back and ran again (see
:class:`pilotage.store.engine.WriteQueue`) is counted once, and changes made by the
reaper or another server are counted too: every server of a pool reports the whole
pool's events, so aggregate them across servers with ``max``, not ``sum``.

Invariant: ``_after[table]`` is the id of the last row counted; rows are counted in id
order and never twice. On PostgreSQL an id can become visible after a higher one (two
transactions committing out of order), so rows younger than :data:`PG_SETTLE_S` wait
for the next scrape, and the feed stops at the first such row.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client import Counter, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from pilotage.store.engine import Store
from pilotage.store.tables import credential_audit, job_events, jobs, validation_reports

#: How old a row must be before a PostgreSQL feed counts it (see the invariant).
PG_SETTLE_S = 10.0
#: Rows read per query.
BATCH = 5000

_REFUSED = re.compile(r"pilotage-exec refused \((\d{3})\)")
_BYPASS = "without identity switching"

WALL_BUCKETS = (1, 10, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 172800)
LATENCY_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400)

_before = job_events.alias("before")
_PREVIOUS = (
    sa.select(sa.func.max(_before.c.at))
    .where(_before.c.job_id == job_events.c.job_id, _before.c.id < job_events.c.id)
    .scalar_subquery()
)
_JOB_EVENTS = (
    sa.select(
        job_events.c.id,
        job_events.c.at,
        job_events.c.from_state,
        job_events.c.to_state,
        job_events.c.trigger,
        job_events.c.reason,
        jobs.c.exit_code,
        jobs.c.exit_signal,
        jobs.c.wall_s,
        jobs.c.cpu_s,
        sa.case((job_events.c.to_state == "RUNNING", _PREVIOUS), else_=None),
    )
    .join(jobs, jobs.c.id == job_events.c.job_id)
    .where(job_events.c.id > sa.bindparam("after"))
    .order_by(job_events.c.id)
    .limit(BATCH)
)
_AUDIT = (
    sa.select(
        credential_audit.c.id,
        credential_audit.c.at,
        credential_audit.c.event,
        credential_audit.c.outcome,
    )
    .where(credential_audit.c.id > sa.bindparam("after"))
    .order_by(credential_audit.c.id)
    .limit(BATCH)
)
_VALIDATIONS = (
    sa.select(
        validation_reports.c.id,
        validation_reports.c.at,
        validation_reports.c.entry,
        validation_reports.c.ok,
        validation_reports.c.reason,
    )
    .where(validation_reports.c.id > sa.bindparam("after"))
    .order_by(validation_reports.c.id)
    .limit(BATCH)
)


class EventFeed(Collector):
    """The event counters, and where the feed stands in each table: a collector that
    catches up before its counters are read."""

    def __init__(self, store: Store, clock: Callable[[], float]):
        self._store = store
        self._clock = clock
        self._settle_s = 0.0 if store.is_sqlite else PG_SETTLE_S
        self._lock = threading.Lock()
        with store.read() as conn:
            self._after = {
                "job_events": _top(conn, job_events),
                "credential_audit": _top(conn, credential_audit),
                "validation_reports": _top(conn, validation_reports),
            }
        r = None  # not registered one by one: collect() reads them after catching up
        self.submitted = Counter("pilotage_jobs_submitted", "Jobs submitted.", registry=r)
        self.started = Counter(
            "pilotage_job_starts", "Jobs claimed by a slot (each attempt).", registry=r
        )
        self.completed = Counter(
            "pilotage_job_completions",
            "Jobs that completed, by result: success (exit code 0) or failure.",
            ["result"],
            registry=r,
        )
        self.held = Counter("pilotage_job_holds", "Jobs put on hold.", registry=r)
        self.removed = Counter("pilotage_job_removals", "Jobs removed.", registry=r)
        self.requeued = Counter(
            "pilotage_job_requeues",
            "Running jobs sent back to idle, by why (lease_expired, released_by_pilot, retry).",
            ["trigger"],
            registry=r,
        )
        self.wall = Histogram(
            "pilotage_job_wall_seconds",
            "Wall time of completed jobs.",
            buckets=WALL_BUCKETS,
            registry=r,
        )
        self.cpu = Counter(
            "pilotage_job_cpu_seconds", "CPU time used by completed jobs.", registry=r
        )
        self.claim_latency = Histogram(
            "pilotage_claim_latency_seconds",
            "How long a job waited idle (since it became idle) before a slot claimed it.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.switch = Counter(
            "pilotage_switch_refusals",
            "Switch (pilotage-exec) refusals that pilots reported, by exit code.",
            ["code"],
            registry=r,
        )
        self.bypass = Counter(
            "pilotage_switch_bypasses",
            "Jobs run as the pilot account after a switch error, where the site allows it.",
            registry=r,
        )
        self.credentials = Counter(
            "pilotage_credential_operations",
            "Credential store operations (delegate, key, release), by outcome (granted, refused).",
            ["event", "outcome"],
            registry=r,
        )
        self.validations = Counter(
            "pilotage_validation_reports",
            "Pilot validation reports, by entry, result (ok, failed) and reason.",
            ["entry", "result", "reason"],
            registry=r,
        )

    def collect(self) -> Iterator[Metric]:
        self.catch_up()
        for counter in self._counters():
            yield from counter.collect()

    def _counters(self) -> tuple[Counter | Histogram, ...]:
        return (
            self.submitted,
            self.started,
            self.completed,
            self.held,
            self.removed,
            self.requeued,
            self.wall,
            self.cpu,
            self.claim_latency,
            self.switch,
            self.bypass,
            self.credentials,
            self.validations,
        )

    def catch_up(self) -> None:
        """Count every row added since the last call."""
        with self._lock:
            cutoff = self._clock() - self._settle_s if self._settle_s else float("inf")
            self._follow("job_events", _JOB_EVENTS, self._job_event, cutoff)
            self._follow("credential_audit", _AUDIT, self._audit, cutoff)
            self._follow("validation_reports", _VALIDATIONS, self._validation, cutoff)

    def _follow(
        self, table: str, query: sa.Select[Any], count: Callable[[Any], None], cutoff: float
    ) -> None:
        while True:
            with self._store.read() as conn:
                rows = conn.execute(query, {"after": self._after[table]}).all()
            for row in rows:
                if row.at > cutoff:
                    return
                count(row)
                self._after[table] = row.id
            if len(rows) < BATCH:
                return

    def _job_event(self, row: Any) -> None:
        to_state = row.to_state
        if row.from_state is None:
            self.submitted.inc()
        elif to_state == "RUNNING":
            self.started.inc()
            if row[-1] is not None:
                self.claim_latency.observe(max(0.0, row.at - row[-1]))
        elif to_state == "COMPLETED":
            ok = row.exit_code == 0 and row.exit_signal is None
            self.completed.labels("success" if ok else "failure").inc()
            self.wall.observe(row.wall_s or 0.0)
            self.cpu.inc(row.cpu_s or 0.0)
        elif to_state == "HELD":
            self.held.inc()
        elif to_state == "REMOVED":
            self.removed.inc()
        elif to_state == "IDLE" and row.from_state == "RUNNING":
            self.requeued.labels(row.trigger).inc()
        reason = row.reason or ""
        refused = _REFUSED.search(reason)
        if refused:
            self.switch.labels(refused.group(1)).inc()
        if _BYPASS in reason:
            self.bypass.inc()

    def _audit(self, row: Any) -> None:
        self.credentials.labels(row.event, row.outcome).inc()

    def _validation(self, row: Any) -> None:
        self.validations.labels(row.entry, "ok" if row.ok else "failed", row.reason).inc()


def _top(conn: sa.Connection, table: sa.Table) -> int:
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(table.c.id), 0))).scalar_one())
