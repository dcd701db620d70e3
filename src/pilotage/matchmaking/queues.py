"""Idle jobs in order: one queue per (autocluster, submitter), and each submitter's
queues ordered by their best job.

Order of jobs: ``JobPrio`` (highest first), then ``QDate``, ``ClusterId``, ``ProcId``
(submission order), then arrival order (``seq``). A queue is a binary heap with lazy
deletion: removing a job only forgets it in the index's ``jobs`` map, and dead entries
are dropped when they reach the top or when they outnumber the live ones.

Each submitter's queues are kept sorted by their best (top) job, so picking the best
jobs for a slot visits queues best first and stops as soon as no queue left can hold a
better job than those already taken: the cost grows with the few queues that matter
for the answer, not with every autocluster a submitter has.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from pilotage.matchmaking.ads import Submitter
    from pilotage.matchmaking.autocluster import Autocluster, ShapeInfo


class Entry(NamedTuple):
    """A job in a queue heap; ``seq`` is unique, so comparison never reaches the objects."""

    neg_prio: int
    qdate: int
    cluster_id: int
    proc_id: int
    seq: int
    job_id: int
    shape: ShapeInfo
    queue: JobQueue

    def identity(self) -> dict[str, int]:
        """The per-job attributes, by lower-case name."""
        return {
            "jobprio": -self.neg_prio,
            "qdate": self.qdate,
            "clusterid": self.cluster_id,
            "procid": self.proc_id,
        }


#: The index's live jobs: an entry is live iff ``jobs[entry.job_id] is entry``.
Jobs = dict[int, Entry]
#: Smallest requests of a submitter: (cpus, memory_mb, disk_mb, gpus, max_wall_time_s).
Floor = tuple[int, int, int, int, float]


class JobQueue:
    """One submitter's idle jobs within one autocluster, best first."""

    __slots__ = ("autocluster", "heap", "live", "submitter")

    def __init__(self, autocluster: Autocluster, submitter: Submitter) -> None:
        self.autocluster = autocluster
        self.submitter = submitter
        # Invariant: every live job of this queue has exactly one entry in heap, live
        # counts them, and heap[0] is live whenever live > 0 (the queue's best job).
        self.heap: list[Entry] = []
        self.live = 0

    def drop_dead_top(self, jobs: Jobs) -> None:
        """Pop dead entries off the top until the top is live (or the heap is empty)."""
        heap = self.heap
        while heap and jobs.get(heap[0].job_id) is not heap[0]:
            heapq.heappop(heap)

    def compact(self, jobs: Jobs) -> None:
        """Drop dead entries once they outnumber the live ones (keeps the top in place)."""
        if len(self.heap) > 2 * self.live + 16:
            self.heap = [e for e in self.heap if jobs.get(e.job_id) is e]
            heapq.heapify(self.heap)

    def in_order(self, jobs: Jobs) -> Iterator[Entry]:
        """The live entries in order, without popping them (walks the heap as a tree)."""
        heap = self.heap
        if not heap:
            return
        frontier = [(heap[0], 0)]
        size = len(heap)
        while frontier:
            entry, i = heapq.heappop(frontier)
            if jobs.get(entry.job_id) is entry:
                yield entry
            for child in (2 * i + 1, 2 * i + 2):
                if child < size:
                    heapq.heappush(frontier, (heap[child], child))


class SubmitterQueues:
    """One submitter's queues, by autocluster id and ordered by their top job."""

    __slots__ = ("_floor", "by_ac", "ordered")

    def __init__(self) -> None:
        self.by_ac: dict[int, JobQueue] = {}
        # Invariant: one (queue.heap[0], queue) per non-empty queue of by_ac, sorted.
        self.ordered: list[tuple[Entry, JobQueue]] = []
        self._floor: Floor | None = None  # cache of floor(); None when by_ac changed

    def changed(self) -> None:
        """Note that a queue was added to or removed from ``by_ac``."""
        self._floor = None

    def floor(self) -> Floor:
        """The smallest request in each dimension over the queues: (cpus, memory_mb,
        disk_mb, gpus, max_wall_time_s). A slot short of any of them can run none of them.
        """
        if self._floor is None:
            acs = [q.autocluster for q in self.by_ac.values()]
            self._floor = (
                min(ac.cpus for ac in acs),
                min(ac.memory_mb for ac in acs),
                min(ac.disk_mb for ac in acs),
                min(ac.gpus for ac in acs),
                min(ac.max_wall_time_s for ac in acs),
            )
        return self._floor

    def moved(self, queue: JobQueue, old_top: Entry | None) -> None:
        """Re-place ``queue`` after its top changed from ``old_top`` (``None``: was absent)."""
        ordered = self.ordered
        if old_top is not None:
            # (old_top,) sorts just before (old_top, queue): no queue is ever compared.
            i = bisect.bisect_left(ordered, (old_top,))
            assert ordered[i][1] is queue, "submitter queues out of order"
            del ordered[i]
        if queue.heap:
            bisect.insort(ordered, (queue.heap[0], queue))

    def reorder(self) -> None:
        """Rebuild ``ordered`` from scratch (after a re-clustering)."""
        self.ordered = sorted((q.heap[0], q) for q in self.by_ac.values())

    def best(self, limit: int, jobs: Jobs, matches: Callable[[Autocluster], bool]) -> list[int]:
        """The ids of the ``limit`` best jobs in queues whose autocluster ``matches``.

        Queues are visited best top first; a matching queue's jobs are merged in, and a
        job is taken once it beats the top of every queue not yet visited. So the walk
        stops after the queues that hold the answer (and any non-matching ones before).
        """
        found: list[int] = []
        if limit <= 0:
            return found
        pending: list[tuple[Entry, Iterator[Entry]]] = []
        for top, queue in self.ordered:
            while pending and pending[0][0] < top:
                _take(pending, found)
                if len(found) >= limit:
                    return found
            if matches(queue.autocluster):
                walk = queue.in_order(jobs)
                heapq.heappush(pending, (next(walk), walk))
        while pending and len(found) < limit:
            _take(pending, found)
        return found


def _take(pending: list[tuple[Entry, Iterator[Entry]]], found: list[int]) -> None:
    entry, walk = pending[0]
    found.append(entry.job_id)
    following = next(walk, None)
    if following is None:
        heapq.heappop(pending)
    else:
        heapq.heapreplace(pending, (following, walk))
