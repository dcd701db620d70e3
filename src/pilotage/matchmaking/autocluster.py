"""The in-memory index of idle jobs, grouped into autoclusters.

An autocluster is the set of idle jobs that agree on every *significant* attribute:
the standard requests, ``MaxWallTime``, ``Requirements`` and everything it reads (through
the job's own attributes), the attributes configured as significant, and every job
attribute a slot's START expression has been seen to read. Jobs of one autocluster are
interchangeable for matching, so the matchmaker evaluates one representative ad per
autocluster, and the cost of a match grows with the number of job shapes, not of jobs.

The database is the truth; this index is each server process's cache of it, fed by job
events: :meth:`AutoclusterIndex.add` when a job becomes idle, :meth:`~AutoclusterIndex.remove`
when it leaves idle (claimed, held, removed, or claimed by another server).

Memory: no ClassAd per job. Each job keeps one small tuple (its ordering key, id, shape
and queue); a *shape* (every attribute but ``ClusterId``, ``ProcId``, ``QDate``,
``JobPrio``) is interned and shared by all jobs that have it, and is what lets the index
re-cluster itself without the database when a new START expression makes another
attribute significant.

Within an autocluster, each submitter has a queue of its jobs, best first, and each
submitter's queues are ordered by their best job (:mod:`pilotage.matchmaking.queues`).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Hashable, Iterable
from collections.abc import Set as AbstractSet
from typing import Any

from pilotage.matchmaking.ads import (
    IDENTITY_ATTRS,
    STANDARD_SIGNIFICANT,
    JobAd,
    MatchConfig,
    SlotAd,
    Submitter,
    ad_from_shape,
    job_shape,
)
from pilotage.matchmaking.classads import attributes, parse_expr, references
from pilotage.matchmaking.clauses import join_clauses, resource_of, split_clauses
from pilotage.matchmaking.partitionable import Resources
from pilotage.matchmaking.queues import Entry, Floor, JobQueue, SubmitterQueues

Shape = tuple[tuple[str, Hashable], ...]
#: Bound on remembered START texts (a pilot cannot grow the index without limit).
_MAX_STARTS_SEEN = 10_000
#: Bound on memoised key layouts (one per distinct set of expressions, usually few).
_MAX_LAYOUTS = 4096


class Autocluster:
    """Jobs that are alike for matching: one representative ad and the match caches."""

    __slots__ = (
        "cpus",
        "disk_mb",
        "gpus",
        "id",
        "job_cache",
        "key",
        "max_wall_time_s",
        "memory_mb",
        "queues",
        "rep",
        "residual",
        "slot_cache",
        "slot_refs",
    )

    def __init__(self, ac_id: int, key: tuple[Hashable, ...], job: JobAd, rep: Any) -> None:
        self.id = ac_id
        self.key = key
        self.rep = rep
        self.cpus = job.request.cpus
        self.memory_mb = job.request.memory_mb
        self.disk_mb = job.request.disk_mb
        self.gpus = job.request.gpus
        self.max_wall_time_s = job.max_wall_time_s
        # The job's Requirements minus the resource clauses (checked in Python instead);
        # None when nothing is left.
        text = str(rep.lookup("Requirements")) if "Requirements" in rep else "true"
        rest = [c for c in split_clauses(text) if resource_of(c) is None]
        self.residual = parse_expr(join_clauses(rest)) if rest else None
        # The slot attributes the residual reads: the job-side cache key.
        self.slot_refs: tuple[str, ...] = (
            tuple(sorted(references(rep, self.residual)[1])) if self.residual else ()
        )
        self.queues: dict[Submitter, JobQueue] = {}
        # Match results by slot values (job side) and by START key (slot side).
        self.job_cache: dict[tuple[Hashable, ...], bool] = {}
        self.slot_cache: dict[tuple[Hashable, ...], bool] = {}

    def __repr__(self) -> str:
        return f"<Autocluster {self.id} jobs={sum(q.live for q in self.queues.values())}>"


class ShapeInfo:
    """A distinct job shape: its autocluster key and how many idle jobs have it."""

    __slots__ = ("base_key", "identity", "pairs", "refs")

    def __init__(self, pairs: Shape) -> None:
        self.pairs = pairs
        self.base_key: tuple[Hashable, ...] = ()
        self.identity: tuple[str, ...] = ()  # per-job attributes that are significant too
        self.refs = 0  # live jobs with this shape


class AutoclusterIndex:
    """The idle jobs of the pool by autocluster and submitter. Pure: no I/O, no clock."""

    def __init__(self, config: MatchConfig | None = None) -> None:
        self.config = config or MatchConfig()
        self._significant = STANDARD_SIGNIFICANT | {
            a.lower() for a in self.config.significant_attrs
        }
        self._starts_seen: set[str] = set()
        # (names defined, expressions) -> (significant per-job names, other significant names)
        self._layouts: dict[tuple[Hashable, ...], tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._seq = itertools.count()
        self._ac_ids = itertools.count(1)
        self._jobs: dict[int, Entry] = {}
        self._shapes: dict[Shape, ShapeInfo] = {}
        self._autoclusters: dict[tuple[Hashable, ...], Autocluster] = {}
        self._by_submitter: dict[Submitter, SubmitterQueues] = {}
        self._empty = 0  # autoclusters without jobs, kept for their caches until swept
        self.reclusters = 0

    # --- feeding ------------------------------------------------------------------------

    def add(self, job_id: int, ad: Any) -> None:
        """Index an idle job (replacing an entry with the same id). Raises ``BadInput``."""
        values = attributes(ad)
        job = JobAd.from_classad(job_id, ad, self.config, values)
        self.add_job(job, job_shape(ad, self.config.ignored_job_attrs, values))

    def add_job(self, job: JobAd, pairs: Shape) -> None:
        """Index an idle job already read, with its shape (:meth:`add` reads both from its
        ad; :mod:`~pilotage.matchmaking.stored_ads` from a stored ad of the same shape)."""
        job_id, ad = job.job_id, job.ad
        if job_id in self._jobs:
            self.remove(job_id)
        identity = _identity_of(job)
        shape = self._shapes.get(pairs)
        if shape is None:
            shape = self._shapes[pairs] = ShapeInfo(pairs)
            # A job read from a remembered shape comes without its ad: its shape makes one.
            self._derive_key(shape, ad if ad is not None else ad_from_shape(pairs, identity))
        shape.refs += 1
        key = shape.base_key
        if shape.identity:
            key += tuple(identity[name] for name in shape.identity)
        ac = self._autoclusters.get(key)
        if ac is None:
            rep = ad_from_shape(pairs, identity)
            ac = self._autoclusters[key] = Autocluster(next(self._ac_ids), key, job, rep)
            self._empty += 1
        queue = self._queue(ac, job.submitter)
        entry = Entry(
            -job.job_prio, job.qdate, job.cluster_id, job.proc_id, next(self._seq), job_id,
            shape, queue,
        )  # fmt: skip
        self._jobs[job_id] = entry
        old_top = queue.heap[0] if queue.heap else None
        heapq.heappush(queue.heap, entry)
        queue.live += 1
        if queue.heap[0] is entry:
            self._by_submitter[job.submitter].moved(queue, old_top)

    def remove(self, job_id: int) -> bool:
        """Forget a job that left idle; ``False`` if it was not indexed (not an error)."""
        entry = self._jobs.pop(job_id, None)
        if entry is None:
            return False
        queue = entry.queue
        queue.live -= 1
        if queue.live == 0:
            queue.heap = []  # its one live entry was the top: moved() takes it out
            self._by_submitter[queue.submitter].moved(queue, entry)
            self._drop_queue(queue)
        else:
            if queue.heap[0] is entry:
                queue.drop_dead_top(self._jobs)
                self._by_submitter[queue.submitter].moved(queue, entry)
            queue.compact(self._jobs)
        shape = entry.shape
        shape.refs -= 1
        if shape.refs == 0:
            del self._shapes[shape.pairs]
        return True

    def observe_start(self, slot: SlotAd) -> bool:
        """Learn the job attributes a slot's START reads; re-cluster if any is new.

        Returns whether the index was re-clustered (an O(jobs) step, rare: once per new
        attribute named by any START expression).
        """
        if slot.start_text in self._starts_seen:
            return False
        if len(self._starts_seen) >= _MAX_STARTS_SEEN:
            self._starts_seen.clear()
        self._starts_seen.add(slot.start_text)
        new = slot.job_refs() - self._significant
        if not new:
            return False
        self._significant = self._significant | new
        self._recluster()
        return True

    # --- reading ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    @property
    def significant_attrs(self) -> frozenset[str]:
        """The job attributes every autocluster key includes (lower case)."""
        return self._significant

    def autocluster_count(self) -> int:
        """Autoclusters that hold at least one idle job."""
        return len(self._autoclusters) - self._empty

    def autocluster_of(self, job_id: int) -> int | None:
        """The id of the autocluster an idle job is in, ``None`` if not indexed."""
        entry = self._jobs.get(job_id)
        return None if entry is None else entry.queue.autocluster.id

    def autocluster(self, job_id: int) -> Autocluster | None:
        """The autocluster an idle job is in, ``None`` if not indexed."""
        entry = self._jobs.get(job_id)
        return None if entry is None else entry.queue.autocluster

    def request_of(self, job_id: int) -> Resources | None:
        """What an idle job requests (its autocluster's requests), ``None`` if not indexed."""
        entry = self._jobs.get(job_id)
        if entry is None:
            return None
        ac = entry.queue.autocluster
        return Resources(ac.cpus, ac.memory_mb, ac.disk_mb, ac.gpus)

    def submitter_of(self, job_id: int) -> Submitter | None:
        """Who an idle job is charged to, ``None`` if not indexed."""
        entry = self._jobs.get(job_id)
        return None if entry is None else entry.queue.submitter

    def submitters(self) -> AbstractSet[Submitter]:
        """Submitters with at least one idle job."""
        return self._by_submitter.keys()

    def queues_of(self, submitter: Submitter) -> Iterable[JobQueue]:
        """A submitter's non-empty queues, one per autocluster it has idle jobs in."""
        group = self._by_submitter.get(submitter)
        return () if group is None else group.by_ac.values()

    def floor_of(self, submitter: Submitter) -> Floor | None:
        """A submitter's smallest requests (see :meth:`SubmitterQueues.floor`), if it has jobs."""
        group = self._by_submitter.get(submitter)
        return None if group is None else group.floor()

    def best_for(
        self, submitter: Submitter, limit: int, matches: Callable[[Autocluster], bool]
    ) -> list[int]:
        """The ids of a submitter's ``limit`` best idle jobs in autoclusters that ``matches``.

        ``matches`` is asked only about the autoclusters the walk reaches (see
        :meth:`~pilotage.matchmaking.queues.SubmitterQueues.best`).
        """
        group = self._by_submitter.get(submitter)
        return [] if group is None else group.best(limit, self._jobs, matches)

    # --- internals ----------------------------------------------------------------------

    def _derive_key(self, shape: ShapeInfo, ad: Any) -> None:
        """Set a shape's autocluster key: its values of every significant attribute.

        Which attributes are significant for a shape depends only on the names it
        defines and on its expressions (what they read), not on its literal values: the
        answer is memoised on those, so jobs that differ only in a literal ``+Attr``
        (``+Index = $(Process)``) do not each pay for ``references()``.
        """
        values = dict(shape.pairs)
        expressions = tuple(p for p in shape.pairs if isinstance(p[1], tuple) and p[1][0] == "expr")
        memo_key = (tuple(values), expressions)
        layout = self._layouts.get(memo_key)
        if layout is None:
            names = set(self._significant)
            for name in list(names):
                value = values.get(name)
                if isinstance(value, tuple) and value[0] == "expr" and name in ad:
                    names |= references(ad, ad.lookup(name))[0]
            identity = set(IDENTITY_ATTRS)
            layout = (tuple(sorted(names & identity)), tuple(sorted(names - identity)))
            if len(self._layouts) >= _MAX_LAYOUTS:
                self._layouts.clear()
            self._layouts[memo_key] = layout
        shape.identity, key_names = layout
        shape.base_key = tuple((n, values.get(n)) for n in key_names)

    def _queue(self, ac: Autocluster, submitter: Submitter) -> JobQueue:
        queue = ac.queues.get(submitter)
        if queue is None:
            if not ac.queues:
                self._empty -= 1
            queue = ac.queues[submitter] = JobQueue(ac, submitter)
            group = self._by_submitter.get(submitter)
            if group is None:
                group = self._by_submitter[submitter] = SubmitterQueues()
            group.by_ac[ac.id] = queue
            group.changed()
        return queue

    def _drop_queue(self, queue: JobQueue) -> None:
        ac = queue.autocluster
        del ac.queues[queue.submitter]
        group = self._by_submitter[queue.submitter]
        del group.by_ac[ac.id]
        group.changed()
        if not group.by_ac:
            del self._by_submitter[queue.submitter]
        if not ac.queues:
            self._empty += 1
            # Empty autoclusters keep their match caches for jobs of the same shape that
            # come back; sweep them when they outnumber the live ones.
            if self._empty > max(256, len(self._autoclusters) - self._empty):
                self._autoclusters = {k: a for k, a in self._autoclusters.items() if a.queues}
                self._empty = 0

    def _recluster(self) -> None:
        """Re-key every autocluster after the significant set grew; split those that must.

        More significant attributes only refine the partition (two jobs apart stay
        apart), so an autocluster whose jobs all agree on the new attributes keeps its
        object, queues and caches under its new key; only those that split move jobs.
        """
        self.reclusters += 1
        self._layouts.clear()
        placeholder = dict.fromkeys(IDENTITY_ATTRS, 0)  # so references() sees them as the job's
        for shape in self._shapes.values():
            self._derive_key(shape, ad_from_shape(shape.pairs, placeholder))
        groups: dict[Autocluster, dict[tuple[Hashable, ...], list[Entry]]] = {}
        for entry in self._jobs.values():
            shape = entry.shape
            key = shape.base_key
            if shape.identity:
                identity = entry.identity()
                key += tuple(identity[name] for name in shape.identity)
            by_key = groups.setdefault(entry.queue.autocluster, {})
            by_key.setdefault(key, []).append(entry)
        self._autoclusters = {}  # empty autoclusters kept for their caches go now
        for ac, by_key in groups.items():
            if len(by_key) == 1:
                (ac.key,) = by_key
                self._autoclusters[ac.key] = ac
                continue
            for queue in ac.queues.values():
                group = self._by_submitter[queue.submitter]
                del group.by_ac[ac.id]
                if not group.by_ac:
                    del self._by_submitter[queue.submitter]
            ac.queues.clear()
            for key, entries in by_key.items():
                first = entries[0]
                rep = ad_from_shape(first.shape.pairs, first.identity())
                job = JobAd.from_classad(first.job_id, rep, self.config)
                new = self._autoclusters[key] = Autocluster(next(self._ac_ids), key, job, rep)
                for old in entries:
                    queue = self._queue(new, old.queue.submitter)
                    moved = Entry(*old[:-1], queue)
                    self._jobs[old.job_id] = moved
                    queue.heap.append(moved)
                    queue.live += 1
                for queue in new.queues.values():
                    heapq.heapify(queue.heap)
        self._empty = 0  # every autocluster left holds jobs (_queue's count is moot here)
        for group in self._by_submitter.values():
            group.reorder()
            group.changed()


def _identity_of(job: JobAd) -> dict[str, int]:
    return {
        "jobprio": job.job_prio,
        "qdate": job.qdate,
        "clusterid": job.cluster_id,
        "procid": job.proc_id,
    }
