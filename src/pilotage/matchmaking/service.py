"""The matchmaker inside a server process: its index kept in step with the database.

The database is the truth; the index of idle jobs is this process's cache of it. Every
job transition writes a row in ``job_events`` (the change feed): a job whose newest
event leaves it IDLE is added, any other is removed. Several server processes on one
database each follow the same feed. Event ids are allocated before their transaction
commits, so a row may appear behind the watermark: each catch-up re-reads a window
behind it (adding and removing are idempotent), and a full reload every
``full_sync_s`` repairs anything the window missed. A stale entry costs at most one
failed claim (the claim itself is an atomic compare-and-swap in the database).

Fair share: running cpus per submitter are summed from the live claims at each tick
(so replicas agree), usage accumulates in the accountant, and its state is saved to the
database, as are the priority factors admins set.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from pilotage import memory
from pilotage.matchmaking.ads import MatchConfig, SlotAd, Submitter
from pilotage.matchmaking.analysis_text import render_text
from pilotage.matchmaking.analyze import analyze
from pilotage.matchmaking.autocluster import AutoclusterIndex
from pilotage.matchmaking.fairshare import Accountant, FairShareConfig
from pilotage.matchmaking.matchmaker import Matchmaker
from pilotage.matchmaking.rank import RankPreference
from pilotage.matchmaking.stored_ads import StoredAds
from pilotage.queue.states import JobState
from pilotage.store.prepared import Prepared
from pilotage.store.tables import claims, fairshare_state, job_events, jobs, priority_factors

#: The events after a watermark, oldest first (a catch-up's, before every dispatch).
_EVENTS_AFTER = Prepared(
    sa.select(job_events.c.id, job_events.c.job_id)
    .where(job_events.c.id > sa.bindparam("since"))
    .order_by(job_events.c.id)
    .limit(sa.bindparam("limit"))
)

#: How far behind the watermark each catch-up looks again, in event ids.
REPLAY_WINDOW = 2000
#: Idle jobs read per statement while the index is built (memory stays flat).
RELOAD_CHUNK = 5000
#: Events taken in per hold of the lock by :meth:`MatchService.follow`.
FOLLOW_SLICE = 2000
#: Jobs read between two yields of the interpreter while the index is built or follows
#: a big submit: without them, a request's threads wait for the interpreter lock behind
#: seconds of that work, a switch interval (5 ms) at every step.
YIELD_EVERY = 256


@dataclass(frozen=True)
class MatchSettings:
    """The matchmaker's knobs, from ``[server]`` settings."""

    half_life_s: float = 86400.0
    #: A job that does not say how long it runs (``allowed_job_duration``) is assumed to
    #: fit any pilot.
    default_max_wall_time_s: float = 0.0
    full_sync_s: float = 60.0
    save_every_s: float = 30.0
    #: Static quotas in cpus by accounting group (``[server] group_quotas``).
    group_quotas: Mapping[str, float] = field(default_factory=dict)
    groups_accept_surplus: bool = True
    #: A job's Rank among slots that asked lately (matchmaking/rank.py).
    rank_window_s: float = 15.0
    rank_wait_s: float = 60.0


class MatchService:
    """Index, accountant and matchmaker of one server process; thread-safe."""

    def __init__(self, settings: MatchSettings) -> None:
        self.settings = settings
        self._lock = threading.RLock()
        self._config = MatchConfig(default_max_wall_time_s=settings.default_max_wall_time_s)
        self._fair = FairShareConfig(
            half_life_s=settings.half_life_s,
            group_quotas=dict(settings.group_quotas),
            groups_accept_surplus=settings.groups_accept_surplus,
        )
        self.ranks = RankPreference(settings.rank_window_s, settings.rank_wait_s)
        self.index = AutoclusterIndex(self._config)
        self._stored = StoredAds(self._config)  # reads stored ads, each shape parsed once
        self.accountant = Accountant(self._fair)
        self.matchmaker = Matchmaker(self.index, self.accountant)
        self._watermark = 0
        self._following = 0  # follow() calls under way (each takes in every event)
        self._last_full = float("-inf")
        self._last_save = float("-inf")

    # -- following the database ------------------------------------------------------

    def sync(self, conn: sa.Connection) -> None:
        """Take in the events written since the last look (cheap: run before each dispatch).

        At most a slice of them, and none while :meth:`follow` takes in a big submit
        (it takes in every event): a request for work is not held up for seconds."""
        if self._following:
            return
        with self._lock:
            self._catch_up(conn, self._watermark, limit=FOLLOW_SLICE)

    def passed(self, events: list[tuple[int, int]]) -> None:
        """Take in events this process wrote, ``(event id, job id)`` each, after which
        their jobs are not IDLE (a claim, an exit), without reading them back: each job
        leaves the index, and the watermark passes them while no other event lies
        between (an event another transaction may still commit below them is read by
        the next catch-up, as any). One the catch-up already passed is left to it: it
        read the job as it is now."""
        with self._lock:
            for event_id, job_id in sorted(events):
                if event_id <= self._watermark:
                    continue
                self.index.remove(job_id)
                if event_id == self._watermark + 1:
                    self._watermark = event_id

    def follow(self, conn: sa.Connection) -> None:
        """Take in every event written so far, after a big submit: a slice at a time,
        each read without the lock (the database, the ads) and applied under it, so that
        dispatch goes on meanwhile and the index has the jobs before the next request for
        work must wait for them.

        A job read idle here may be claimed before its slice is applied: it is then in
        the index until the claim's own event is taken in, which costs at most one failed
        claim (the module's docstring).
        """
        with self._lock:
            self._following += 1
        try:
            self._follow(conn)
        finally:
            with self._lock:
                self._following -= 1

    def _follow(self, conn: sa.Connection) -> None:
        while True:
            events = conn.execute(
                sa.select(job_events.c.id, job_events.c.job_id)
                .where(job_events.c.id > self._watermark)
                .order_by(job_events.c.id)
                .limit(FOLLOW_SLICE)
            ).all()
            if not events:
                return
            rows = conn.execute(
                sa.select(jobs.c.id, jobs.c.state, jobs.c.ad).where(
                    jobs.c.id.in_({e.job_id for e in events})
                )
            ).all()
            idle = [r for r in rows if r.state == JobState.IDLE.value]
            read = []
            for n, row in enumerate(idle, 1):
                if row.id not in self.index:
                    read.append(self._stored.read(row.id, row.ad))
                if n % YIELD_EVERY == 0:
                    time.sleep(0)  # let requests in between (see YIELD_EVERY)
            with self._lock:
                for row in rows:
                    if row.state != JobState.IDLE.value:
                        self.index.remove(row.id)
                for job, shape in read:
                    if job.job_id not in self.index:
                        self.index.add_job(job, shape)
                self._watermark = max(self._watermark, events[-1].id)
            if len(events) < FOLLOW_SLICE:
                return

    def repair(self, conn: sa.Connection, now: float) -> None:
        """Periodic care: a full reload when due, else re-read a window behind the watermark
        for events whose transactions committed late, then take in the new ones as
        :meth:`follow` does (a big submit not yet taken in is read without the lock)."""
        with self._lock:
            due = now - self._last_full >= self.settings.full_sync_s
            if not due:
                since = max(0, self._watermark - REPLAY_WINDOW)
                self._catch_up(conn, since, limit=REPLAY_WINDOW)
        if due:
            self._reload(conn, now)
        else:
            self.follow(conn)

    def _reload(self, conn: sa.Connection, now: float) -> None:
        """Build the index again from the database, then put it in place.

        It is built without the lock (dispatch goes on with the old index meanwhile),
        then takes in the events written since its build began, under the lock. The
        idle jobs are read a chunk at a time, so the ads never are all in memory.
        """
        top = conn.execute(sa.select(sa.func.max(job_events.c.id))).scalar() or 0
        index = AutoclusterIndex(self._config)
        # In the order of the index on (state, priority, id): each chunk starts where the
        # last ended (in id order, each would sort every idle job again).
        key = sa.tuple_(jobs.c.priority, jobs.c.id)
        query = (
            sa.select(jobs.c.priority, jobs.c.id, jobs.c.ad)
            .where(jobs.c.state == JobState.IDLE.value)
            .order_by(jobs.c.priority, jobs.c.id)
            .limit(RELOAD_CHUNK)
        )
        rows = conn.execute(query).all()
        while rows:
            for n, (_, job_id, ad) in enumerate(rows, 1):
                self._stored.add(index, job_id, ad)
                if n % YIELD_EVERY == 0:
                    time.sleep(0)  # let requests in between (see YIELD_EVERY)
            if len(rows) < RELOAD_CHUNK:
                break
            after = sa.tuple_(rows[-1].priority, rows[-1].id)
            rows = conn.execute(query.where(key > after)).all()
        with self._lock:
            self.index = index
            self.matchmaker = Matchmaker(index, self.accountant)
            self._watermark = int(top)
            self._last_full = now
            self._catch_up(conn, max(0, self._watermark - REPLAY_WINDOW))
            self._load_factors(conn)
        del rows
        memory.give_back()  # the old index, and the ads read

    def _catch_up(self, conn: sa.Connection, since: int, limit: int | None = None) -> int:
        """Apply the events after ``since`` (the first ``limit`` of them); how many."""
        events: list[tuple[int, int]]
        if limit is None:
            query = sa.select(job_events.c.id, job_events.c.job_id)
            query = query.where(job_events.c.id > since).order_by(job_events.c.id)
            events = [(int(e.id), int(e.job_id)) for e in conn.execute(query)]
        else:  # before every dispatch: usually nothing new, so the statement's own cost
            cursor = _EVENTS_AFTER.run(conn, {"since": since, "limit": limit})
            events = cursor.fetchall()
            cursor.close()
        if not events:
            return 0
        changed = {job_id for _, job_id in events}
        rows = conn.execute(
            sa.select(jobs.c.id, jobs.c.state, jobs.c.ad).where(jobs.c.id.in_(changed))
        ).all()
        for row in rows:
            if row.state == JobState.IDLE.value:
                if self.index.submitter_of(row.id) is None:
                    self._stored.add(self.index, row.id, row.ad)
            else:
                self.index.remove(row.id)
        self._watermark = max(self._watermark, max(event_id for event_id, _ in events))
        return len(events)

    def _load_factors(self, conn: sa.Connection) -> None:
        for name, factor in conn.execute(
            sa.select(priority_factors.c.name, priority_factors.c.factor)
        ):
            self.accountant.set_factor(name, float(factor))

    # -- dispatch --------------------------------------------------------------------

    def candidates(self, slot_ad: Any, now: float, limit: int = 8) -> list[int]:
        """Idle jobs the slot can run, best first (see :class:`Matchmaker`), less those
        that wait for a slot they rank higher (:class:`RankPreference`)."""
        slot = slot_ad if isinstance(slot_ad, SlotAd) else SlotAd.from_classad(slot_ad)
        with self._lock:
            found = self.matchmaker.candidates(slot, now, limit)
            kept = [job for job in found if self._may_take(job, slot, now)]
            self.ranks.offered(slot, now)
            return kept

    def _may_take(self, job_id: int, slot: SlotAd, now: float) -> bool:
        ac = self.index.autocluster(job_id)
        return ac is None or self.ranks.may_take(job_id, ac, slot, now, self.matchmaker.matches)

    def taken(self, job_id: int) -> None:
        """The job was found no longer idle (another server took it, or it was held)."""
        with self._lock:
            self.index.remove(job_id)
            self.ranks.done(job_id)

    def claimed(self, job_id: int, cpus: int, now: float, pilot: str | None = None) -> None:
        """This server claimed the job: out of the index, and its submitter is charged at
        once, so a burst of requests in one second spreads over submitters. The pilot's
        offer is forgotten: its free resources changed."""
        with self._lock:
            submitter = self.index.submitter_of(job_id)
            self.index.remove(job_id)
            self.ranks.done(job_id)
            if pilot is not None:
                self.ranks.withdraw(pilot)
            if submitter is not None:
                self.accountant.adjust(submitter, cpus, at=now)

    # -- fair share ------------------------------------------------------------------

    def tick(self, conn: sa.Connection, now: float) -> bool:
        """Observe running cpus per submitter; return whether the state is due for saving.

        ``conn`` must be a write transaction. A claim charges its submitter (:meth:`claimed`)
        before its transaction commits; a snapshot that missed that claim would then reset
        the charge, and a group could run past its quota. So the snapshot waits for the
        claims in flight: SQLite's write transactions are serial already, and on PostgreSQL
        the claims table is locked against writers until this transaction ends (claims
        charged after the snapshot block until then, so they are charged after it)."""
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("LOCK TABLE claims IN SHARE MODE")
        rows = conn.execute(
            sa.select(jobs.c.owner, jobs.c.acct_group, sa.func.sum(claims.c.request_cpus))
            .select_from(claims.join(jobs, claims.c.job_id == jobs.c.id))
            .where(claims.c.state == "active")
            .group_by(jobs.c.owner, jobs.c.acct_group)
        ).all()
        running = {Submitter(owner, group): float(cpus) for owner, group, cpus in rows}
        with self._lock:
            self.accountant.observe(running, at=now)
            due = now - self._last_save >= self.settings.save_every_s
            if due:
                self._last_save = now
            return due

    def save(self, conn: sa.Connection, now: float) -> None:
        """Write the accountant's state (one row)."""
        with self._lock:
            state = json.dumps(self.accountant.to_dict())
        updated = conn.execute(
            sa.update(fairshare_state)
            .where(fairshare_state.c.id == 1)
            .values(state=state, saved_at=now)
        )
        if updated.rowcount == 0:
            conn.execute(sa.insert(fairshare_state).values(id=1, state=state, saved_at=now))

    def restore(self, conn: sa.Connection) -> None:
        """Take up the accountant's saved state, if any (at start); follow the events from
        now on (the index, built next by :meth:`repair`, reads the jobs themselves)."""
        row = conn.execute(
            sa.select(fairshare_state.c.state).where(fairshare_state.c.id == 1)
        ).first()
        top = conn.execute(sa.select(sa.func.max(job_events.c.id))).scalar() or 0
        with self._lock:
            self._watermark = max(self._watermark, int(top))
            if row is not None:
                self.accountant = Accountant.from_dict(json.loads(row.state), self._fair)
                self.matchmaker = Matchmaker(self.index, self.accountant)
            self._load_factors(conn)

    def analyze(self, job_ad: Any, slot_ads: list[Any], now: float) -> dict[str, Any]:
        """``q -analyze``: why the job does (not) run on these slots, with the text too."""
        with self._lock:
            analysis = analyze(
                job_ad,
                slot_ads,
                accountant=self.accountant,
                now=now,
                idle_submitters=tuple(self.index.submitters()),
                config=self._config,
            )
        return {**analysis.to_dict(), "text": render_text(analysis)}

    def priorities(self, now: float) -> list[dict[str, Any]]:
        """Every known submitter's usage and priorities (``pilotage userprio``)."""
        with self._lock:
            acc = self.accountant
            known = set(self.index.submitters()) | set(acc.submitters())
            rows = [
                {
                    "submitter": s.name,
                    "owner": s.owner,
                    "effective_priority": acc.effective_priority(s, now),
                    "real_priority": acc.real_priority(s, now),
                    "factor": acc.factor(s),
                    "usage_cpu_s": acc.usage(s, now),
                    "running_cpus": acc.running(s),
                    "idle_jobs": sum(q.live for q in self.index.queues_of(s)),
                }
                for s in known
            ]
        return sorted(rows, key=lambda r: (r["effective_priority"], r["submitter"]))

    def set_factor(
        self, conn: sa.Connection, name: str, factor: float, by: str, now: float
    ) -> None:
        """Store a priority factor and apply it at once."""
        with self._lock:
            self.accountant.set_factor(name, factor)
        updated = conn.execute(
            sa.update(priority_factors)
            .where(priority_factors.c.name == name)
            .values(factor=factor, set_by=by, set_at=now)
        )
        if updated.rowcount == 0:
            conn.execute(
                sa.insert(priority_factors).values(name=name, factor=factor, set_by=by, set_at=now)
            )
