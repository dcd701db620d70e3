"""The matchmaker: which idle jobs a slot asking for work should get, best first.

Pull model: a pilot asks with its slot ad (free resources of its partitionable slot); the
dispatcher calls :meth:`Matchmaker.candidates`, then claims the first candidate in the
database with a compare-and-swap on its state. If that fails (another server took the
job), it removes the job from the index and tries the next candidate.

Order of the candidates:

1. submitters in fair-share order (:meth:`~pilotage.matchmaking.fairshare.Accountant.order`),
   skipping those with no idle job this slot can run;
2. within a submitter, ``JobPrio`` (highest first), then submission order (``QDate``,
   ``ClusterId``, ``ProcId``).

The job's ``Rank`` plays no part: it ranks slots for a job, and here one slot asks and
the only choice is among jobs. A job matches a slot when

- its requests fit the slot's free ``Cpus``, ``Memory``, ``Disk`` and ``GPUs`` (checked in
  Python, whether or not its Requirements says so: a claim carves exactly the requests);
- its ``MaxWallTime`` (or the configured default) is at most the slot's ``TimeToLive``;
- the rest of its ``Requirements`` is ``true`` with ``MY`` = the job, ``TARGET`` = the slot;
- the slot's ``Requirements`` (START) is ``true`` with ``MY`` = the slot, ``TARGET`` = the job.

Both ClassAd results are cached in the autocluster: the job side by the values of the
slot attributes the job's expression reads, the slot side by the START text and the values
of the slot attributes START reads. Identical slots asking again cost dictionary look-ups.
(One pattern escapes the slot-side key: START reading a job attribute that is itself an
expression over the slot, ``+X = TARGET.Memory > 5`` with START ``TARGET.X``; such a START
is evaluated once per autocluster and slot START text, whatever the slot's Memory.)

Submitters whose smallest requests already exceed the slot's free resources or lifetime
are skipped without looking at their autoclusters; within a submitter, autoclusters are
visited best job first and the walk stops once the best ``limit`` jobs are certain.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from pilotage.matchmaking.ads import SlotAd
from pilotage.matchmaking.autocluster import Autocluster, AutoclusterIndex
from pilotage.matchmaking.classads import is_true
from pilotage.matchmaking.fairshare import Accountant


class Matchmaker:
    """Picks jobs for slots from an index and an accountant. Pure and deterministic."""

    def __init__(self, index: AutoclusterIndex, accountant: Accountant) -> None:
        self.index = index
        self.accountant = accountant
        #: ClassAd evaluations done (cache misses), for benchmarks and metrics.
        self.evaluations = 0

    def candidates(self, slot_ad: Any, now: float, limit: int = 8) -> list[int]:
        """The ids of up to ``limit`` idle jobs this slot can run, best first.

        ``slot_ad`` is a ``classad2.ClassAd`` or an already normalised
        :class:`~pilotage.matchmaking.ads.SlotAd`; ``now`` is the time (s since the epoch)
        at which fair-share priorities are taken. The index is not changed, except that
        START expressions never seen before may make it re-cluster.
        """
        slot = slot_ad if isinstance(slot_ad, SlotAd) else SlotAd.from_classad(slot_ad)
        index = self.index
        index.observe_start(slot)
        verdicts: dict[int, bool] = {}  # autocluster id -> matches, for this request

        def matches(ac: Autocluster) -> bool:
            ok = verdicts.get(ac.id)
            if ok is None:
                ok = verdicts[ac.id] = self.matches(ac, slot)
            return ok

        free, ttl_s = slot.free, slot.ttl_s
        found: list[int] = []
        for submitter in self.accountant.ranked(index.submitters(), now):
            floor = index.floor_of(submitter)
            if floor is None or (
                floor[0] > free.cpus
                or floor[1] > free.memory_mb
                or floor[2] > free.disk_mb
                or floor[3] > free.gpus
                or (ttl_s is not None and floor[4] > ttl_s)
            ):
                continue  # the slot is too small or too short-lived for all its jobs
            found.extend(index.best_for(submitter, limit - len(found), matches))
            if len(found) >= limit:
                break
        return found

    def matches(self, ac: Autocluster, slot: SlotAd) -> bool:
        """Whether the jobs of ``ac`` match ``slot`` (symmetrically, with the TTL check)."""
        free = slot.free
        if (
            ac.cpus > free.cpus
            or ac.memory_mb > free.memory_mb
            or ac.disk_mb > free.disk_mb
            or ac.gpus > free.gpus
            or (slot.ttl_s is not None and ac.max_wall_time_s > slot.ttl_s)
        ):
            return False
        if ac.residual is not None:
            key = slot.key_for(ac.slot_refs)
            ok = ac.job_cache.get(key)
            if ok is None:
                ok = is_true(ac.residual, ac.rep, slot.ad)
                self._remember(ac.job_cache, key, ok)
            if not ok:
                return False
        if slot.start is None:
            return True
        start_key = slot.start_key
        ok = ac.slot_cache.get(start_key)
        if ok is None:
            ok = is_true(slot.start, slot.ad, ac.rep)
            self._remember(ac.slot_cache, start_key, ok)
        return ok

    def _remember(
        self, cache: dict[tuple[Hashable, ...], bool], key: tuple[Hashable, ...], ok: bool
    ) -> None:
        self.evaluations += 1
        if len(cache) >= self.index.config.cache_entries_per_autocluster:
            cache.clear()  # crude but bounded; a cleared cache refills on demand
        cache[key] = ok
