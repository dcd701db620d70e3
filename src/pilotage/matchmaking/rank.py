"""The job's ``Rank``: its preference among the slots that match it, in a pull model.

HTCondor's negotiator looks at every slot at once: for each job, in submitter order, it
takes the matching slot on which the job's ``Rank`` is highest. Here slots ask one at a
time and the matchmaker picks a job for the slot that asks, so a job has only that slot
to choose. The negotiator's meaning is kept with a short memory of the other slots:

- every slot that asks for work is remembered as an *offer* (its ad with the resources
  it had free) for ``window_s`` seconds, one per pilot, the latest;
- when a slot asks and a candidate job has a ``Rank`` that reads the slot, the job is
  *passed over* if another pilot's remembered offer matches it (its free resources fit
  and both sides' Requirements hold) and its Rank there is strictly higher. That pilot
  asks again, or its request held open by the server looks again (api/workwait.py),
  within the server's ``retry_after_s`` and gets the job then;
- a job is passed over for at most ``wait_s`` seconds from the first time: a preferred
  slot that does not come back (it left, took other work, its START changed) delays the
  job that long at most, after which it takes any slot that matches.

So a job with ``Rank = Memory`` lands on the larger of two free slots, whichever asks
first, as it would under the negotiator. A pilot's offer is dropped when it claims a job
(its free resources changed; its next request brings a new one). Not done: preempting a
running job for a better slot or a better job (HTCondor's rank preemption), and the
slot's own ``Rank`` over jobs. A Rank that is not a number counts as 0, a boolean as 1
or 0, as in HTCondor.

Cost: nothing for jobs without a Rank or with a constant one. For the others, one Rank
evaluation per remembered offer, cached per autocluster and slot values. Only the
``max_offers`` (64) most recent offers are kept: an idle pilot's held request looks
again every ``retry_after_s``, so the slots free now are among the latest asks, and a
job compares
at most that many (bench/rank.py, docs/benchmarks.md).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from pilotage.matchmaking.ads import SlotAd
from pilotage.matchmaking.autocluster import Autocluster
from pilotage.matchmaking.classads import references

#: Entries kept in each bounded cache before it is cleared.
_CACHE_ENTRIES = 65_536


def rank_value(expr: Any, job: Any, slot: Any) -> float:
    """The job's Rank over ``slot``: a number, a boolean as 1 or 0, anything else 0."""
    try:
        value = expr.eval(job, slot)
    except Exception:  # noqa: BLE001  (classad2 raises its own untyped exception)
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return 0.0


class RankPreference:
    """Offers of the slots that asked lately and the jobs waiting for a better one.

    Pure (time is passed in); the caller holds the matchmaker's lock around every call.
    """

    def __init__(self, window_s: float, wait_s: float, max_offers: int = 64) -> None:
        self.window_s = window_s
        self.wait_s = wait_s
        self.max_offers = max_offers
        # Invariant: at most max_offers entries, oldest offer first.
        self._offers: OrderedDict[Hashable, tuple[SlotAd, float]] = OrderedDict()
        self._waiting: dict[int, float] = {}  # job id -> when first passed over
        # autocluster id -> (Rank expression, slot attributes it reads), None: no preference
        self._ranks: dict[int, tuple[Any, tuple[str, ...]] | None] = {}
        self._values: dict[tuple[int, tuple[Hashable, ...]], float] = {}

    @staticmethod
    def pilot_of(slot: SlotAd) -> Hashable:
        """Whose offer a slot ad is: its ``PilotId`` (else its ``Name``)."""
        pilot = slot.value("pilotid")
        return pilot if isinstance(pilot, str) else slot.name

    def offered(self, slot: SlotAd, now: float) -> None:
        """Remember that ``slot`` asked for work at ``now`` with its free resources."""
        pilot = self.pilot_of(slot)
        self._offers.pop(pilot, None)
        self._offers[pilot] = (slot, now)
        while len(self._offers) > self.max_offers:
            self._offers.popitem(last=False)

    def withdraw(self, pilot: Hashable) -> None:
        """Forget a pilot's offer (it claimed a job: its free resources changed)."""
        self._offers.pop(pilot, None)

    def done(self, job_id: int) -> None:
        """The job left the idle queue: it waits for nothing any more."""
        self._waiting.pop(job_id, None)

    def waiting(self) -> int:
        """Jobs passed over lately for a slot they rank higher."""
        return len(self._waiting)

    def may_take(
        self,
        job_id: int,
        ac: Autocluster,
        slot: SlotAd,
        now: float,
        matches: Callable[[Autocluster, SlotAd], bool],
    ) -> bool:
        """Whether ``slot`` may have the job now, or it should wait for a slot it ranks
        higher (see the module's docstring). ``matches`` is the matchmaker's test."""
        rank = self._rank_of(ac)
        if rank is None:
            return True
        here = self._value(ac, rank, slot)
        own = self.pilot_of(slot)
        better = False
        for pilot, (other, at) in reversed(self._offers.items()):
            if now - at > self.window_s:
                break  # older offers follow: the rest are stale too
            if pilot == own or self._value(ac, rank, other) <= here:
                continue
            if matches(ac, other):
                better = True
                break
        if not better:
            self._waiting.pop(job_id, None)
            return True
        if len(self._waiting) >= _CACHE_ENTRIES:
            self._waiting.clear()
        first = self._waiting.setdefault(job_id, now)
        return now - first >= self.wait_s

    def _rank_of(self, ac: Autocluster) -> tuple[Any, tuple[str, ...]] | None:
        if ac.id in self._ranks:
            return self._ranks[ac.id]
        found: tuple[Any, tuple[str, ...]] | None = None
        if "Rank" in ac.rep:
            expr = ac.rep.lookup("Rank")
            reads = tuple(sorted(references(ac.rep, expr)[1]))
            if reads:  # a Rank that reads nothing of the slot prefers no slot
                found = (expr, reads)
        if len(self._ranks) >= _CACHE_ENTRIES:
            self._ranks.clear()
        self._ranks[ac.id] = found
        return found

    def _value(self, ac: Autocluster, rank: tuple[Any, tuple[str, ...]], slot: SlotAd) -> float:
        key = (ac.id, slot.key_for(rank[1]))
        value = self._values.get(key)
        if value is None:
            value = rank_value(rank[0], ac.rep, slot.ad)
            if len(self._values) >= _CACHE_ENTRIES:
                self._values.clear()
            self._values[key] = value
        return value
