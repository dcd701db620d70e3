"""Spreading stop orders over time, per pilot and per site (seed 000 §4.6).

A user who removes (holds, vacates) a thousand running jobs ends a thousand claims in one
transaction. Each running job learns it at its pilot's next heartbeat, and each stop is
one or more calls of the switch, each an authorization by the site's service: handed out
together, they would hit that service at once, the documents' DoS. So the server paces
the stop orders it hands out: one pilot gets at most one per ``per_pilot_s`` and all the
pilots of a site at most one per ``per_site_s``.

Each stop order gets a due time when it is first seen: the later of now, the pilot's
next free slot and the site's, which then move on by their interval. A heartbeat hands
out the orders due before the next one, each with ``delay_s`` (how long after the answer
the agent acts on it, docs/pilot-protocol.md), and lists the others as renewed, so the
agent keeps those jobs until their turn. Pure and in memory: several server processes
each pace their own answers (the rates then add up); a restart starts afresh.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

#: Due times this far in the past are forgotten (their pilot went away).
_FORGET_S = 3600.0


@dataclass(frozen=True)
class StopOrder:
    """A claim to stop, ``delay_s`` after the heartbeat's answer."""

    claim_id: str
    reason: str
    delay_s: float


class StopPacer:
    """Due times of stop orders, and the next free slot of each pilot and site."""

    def __init__(self, per_pilot_s: float, per_site_s: float) -> None:
        self.per_pilot_s = max(0.0, per_pilot_s)
        self.per_site_s = max(0.0, per_site_s)
        self._lock = threading.Lock()
        # Invariant: a claim id is in _due from its first sighting until handed out.
        self._due: dict[str, float] = {}
        self._pilot_next: dict[str, float] = {}
        self._site_next: dict[str, float] = {}
        self._swept_at = 0.0

    def pace(
        self,
        pilot_id: str,
        site: str,
        stops: list[tuple[str, str]],
        now: float,
        horizon_s: float,
    ) -> tuple[list[StopOrder], list[str]]:
        """The orders to hand out now among ``stops`` ((claim id, reason), in the order
        they were asked), and the claim ids held back for a later heartbeat."""
        out: list[StopOrder] = []
        held: list[str] = []
        with self._lock:
            self._forget(now)
            for claim_id, reason in stops:
                due = self._due.get(claim_id)
                if due is None:
                    due = max(now, self._pilot_next.get(pilot_id, now),
                              self._site_next.get(site, now))  # fmt: skip
                    self._pilot_next[pilot_id] = due + self.per_pilot_s
                    self._site_next[site] = due + self.per_site_s
                    self._due[claim_id] = due
                if due - now < horizon_s:
                    del self._due[claim_id]
                    out.append(StopOrder(claim_id, reason, round(max(0.0, due - now), 3)))
                else:
                    held.append(claim_id)
        return out, held

    def _forget(self, now: float) -> None:
        if now - self._swept_at < 60.0:
            return
        self._swept_at = now
        old = now - _FORGET_S
        for table in (self._due, self._pilot_next, self._site_next):
            for key in [k for k, t in table.items() if t < old]:
                del table[key]
