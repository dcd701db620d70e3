"""``/metrics``: the pool for Prometheus.

Three kinds of figures, each where it is cheapest and right:

* gauges of the pool as it is (jobs by state, slots and cores by site, pilots by entry,
  requests, held jobs by code) are read from the database at each scrape, by a custom
  collector running a few aggregate queries (:class:`PoolCollector`);
* counters of what happened (submissions, starts, completions, holds, switch refusals,
  credential releases, validations) follow the pool's own records
  (:mod:`pilotage.web.metrics_feed`);
* timings of this server process (API requests by route template and status, database
  statements) are measured in process (:mod:`pilotage.web.metrics_http`).

Names follow Prometheus's conventions: a ``pilotage_`` prefix, base units in the name
(``_seconds``), ``_total`` on counters. No label carries a user name: the metrics are for
anyone the pool lets in (users, admins, frontends, factories), as ``pilotage status`` is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pilotage import __version__
from pilotage.collector.pilots import token_entry
from pilotage.queue.states import JobState
from pilotage.store.engine import Store
from pilotage.store.tables import claims, entry_ads, jobs, pilot_requests, pilots
from pilotage.web.metrics_feed import EventFeed

NO_ENTRY = "none"


class PoolCollector(Collector):
    """Gauges read from the database at scrape time."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        with self._store.read() as conn:
            yield from _jobs(conn)
            yield from _slots(conn)
            yield from _pilots(conn)
            yield from _requests(conn)
        info = GaugeMetricFamily("pilotage_info", "This server's version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info


def _jobs(conn: sa.Connection) -> Iterator[Metric]:
    counts: dict[str, int] = dict(
        conn.execute(sa.select(jobs.c.state, sa.func.count()).group_by(jobs.c.state)).all()
    )
    family = GaugeMetricFamily("pilotage_jobs", "Jobs by state.", labels=["state"])
    for state in JobState:
        family.add_metric([state.value], int(counts.get(state.value, 0)))
    yield family
    held = GaugeMetricFamily("pilotage_held_jobs", "Held jobs by hold code.", labels=["code"])
    for code, count in conn.execute(
        sa.select(jobs.c.hold_code, sa.func.count())
        .where(jobs.c.state == "HELD")
        .group_by(jobs.c.hold_code)
    ).all():
        held.add_metric(["none" if code is None else str(code)], int(count))
    yield held


def _slots(conn: sa.Connection) -> Iterator[Metric]:
    slots = GaugeMetricFamily("pilotage_slots", "Slots (active pilots) by site.", labels=["site"])
    cpus = GaugeMetricFamily("pilotage_slot_cpus", "Cores of the slots by site.", labels=["site"])
    for site, count, total in conn.execute(
        sa.select(pilots.c.site, sa.func.count(), sa.func.sum(pilots.c.cpus))
        .where(pilots.c.state == "active")
        .group_by(pilots.c.site)
    ).all():
        slots.add_metric([site], int(count))
        cpus.add_metric([site], int(total or 0))
    claimed = GaugeMetricFamily(
        "pilotage_claimed_cpus", "Cores claimed by running jobs, by site.", labels=["site"]
    )
    for site, total in conn.execute(
        sa.select(pilots.c.site, sa.func.sum(claims.c.request_cpus))
        .join(pilots, pilots.c.id == claims.c.pilot_id)
        .where(claims.c.state == "active")
        .group_by(pilots.c.site)
    ).all():
        claimed.add_metric([site], int(total or 0))
    yield from (slots, cpus, claimed)


def _pilots(conn: sa.Connection) -> Iterator[Metric]:
    factory = GaugeMetricFamily(
        "pilotage_pilots",
        "The factories' pilots by entry and state (idle, running, held at the batch system).",
        labels=["entry", "state"],
    )
    for name, text in conn.execute(sa.select(entry_ads.c.name, entry_ads.c.pilots)).all():
        total = json.loads(text).get("total", {})
        for state in ("idle", "running", "held"):
            factory.add_metric([name, state], int(total.get(state, 0)))
    yield factory
    joined: dict[str, int] = {}
    for subject, count in conn.execute(
        sa.select(pilots.c.subject, sa.func.count())
        .where(pilots.c.state == "active")
        .group_by(pilots.c.subject)
    ).all():
        entry = token_entry(subject) or NO_ENTRY
        joined[entry] = joined.get(entry, 0) + int(count)
    family = GaugeMetricFamily(
        "pilotage_pilots_joined",
        "Pilots registered with the server now, by the entry their token is bound to.",
        labels=["entry"],
    )
    for entry, count in sorted(joined.items()):
        family.add_metric([entry], count)
    yield family


def _requests(conn: sa.Connection) -> Iterator[Metric]:
    family = GaugeMetricFamily(
        "pilotage_requested_pilots",
        "What each frontend asks of each entry: idle pilots wanted, running pilots at most.",
        labels=["entry", "frontend", "limit"],
    )
    for entry, frontend, idle, running in conn.execute(
        sa.select(
            pilot_requests.c.entry,
            pilot_requests.c.frontend,
            pilot_requests.c.idle_wanted,
            pilot_requests.c.max_running,
        )
    ).all():
        family.add_metric([entry, frontend, "idle"], int(idle))
        family.add_metric([entry, frontend, "running"], int(running))
    yield family


def build_registry(store: Store, feed_clock: Any) -> tuple[CollectorRegistry, EventFeed]:
    """A registry of this server's metrics (its own, not the process-wide default one,
    so two apps in one process never share counters)."""
    registry = CollectorRegistry(auto_describe=False)
    feed = EventFeed(store, feed_clock)
    registry.register(feed)
    registry.register(PoolCollector(store))
    return registry, feed
