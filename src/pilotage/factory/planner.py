"""What the factory does at one entry in one cycle: pure, no I/O.

Inputs: the entry (its limits and throttles), the frontends' requests for it, the
factory's pilots there, the held policy and the time. Output: how many pilots to submit
for each frontend, which to release, which to remove and why. The factory's service
applies the plan through the entry's backend and the pilot state machine.

Rules, in order:

- **held** pilots follow :class:`~pilotage.factory.pilots.HeldPolicy` (release, or remove
  once held too long or released too often); beyond ``max_held`` (per frontend and per
  entry) the oldest held are removed;
- **submissions** for a frontend: its ``idle_wanted`` less its idle pilots, capped by
  the request's ``max_running``, the per-frontend limits and the entry's limits; none
  while the frontend (or the entry) is at ``max_held`` (a site holding pilots is broken,
  more would only be held too); ``submits_per_cycle`` is shared among frontends one
  pilot at a time, in turn, so none starves another;
- **removals** the requests ask for: ``idle`` removes that many idle pilots, newest
  first (the oldest are nearest to starting); ``all`` removes every idle pilot of the
  frontend and **retires** its running ones: the pool tells them to end their jobs and
  leave (``retire``), and one still there ``retire_grace_s`` after that is removed;
  ``removals_per_cycle`` caps the total, held ones first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pilotage.factory.entries import Entry
from pilotage.factory.pilots import HeldAction, HeldPolicy, Pilot, PilotState
from pilotage.frontend.pressure import Removal


@dataclass(frozen=True)
class Wanted:
    """One frontend's request for one entry, as the factory reads it from the collector.

    The frontend sums its groups' :class:`~pilotage.frontend.pressure.Request` s for the
    entry into one of these; limits per frontend apply to the sum.
    """

    frontend: str
    entry: str
    idle_wanted: int
    max_running: int
    removal: Removal = Removal.NONE
    remove_idle: int = 0


@dataclass(frozen=True)
class EntryPlan:
    """The factory's actions at one entry for one cycle."""

    entry: str
    #: Pilots to submit, by frontend.
    submit: dict[str, int] = field(default_factory=dict)
    release: list[str] = field(default_factory=list)
    #: (pilot id, reason) pairs.
    remove: list[tuple[str, str]] = field(default_factory=list)
    #: Running pilots to retire (they end their jobs, then leave), by frontend.
    retire: dict[str, list[str]] = field(default_factory=dict)


def _count(pilots: Sequence[Pilot], state: PilotState) -> int:
    return sum(1 for p in pilots if p.state is state)


def plan_entry(
    entry: Entry,
    requests: Sequence[Wanted],
    pilots: Sequence[Pilot],
    held_policy: HeldPolicy,
    now: float,
) -> EntryPlan:
    """The plan for ``entry`` from the frontends' ``requests`` (others' are ignored)."""
    live = [p for p in pilots if p.entry == entry.name and not p.state.final]
    limits, per = entry.limits, entry.limits.per_frontend
    release: list[str] = []
    removals: list[tuple[str, str]] = []
    retire: dict[str, list[str]] = {}

    held = sorted((p for p in live if p.state is PilotState.HELD), key=lambda p: p.since)
    kept_held: list[Pilot] = []
    for p in held:
        action = held_policy.decide(p, now)
        if action is HeldAction.REMOVE:
            removals.append((p.id, f"held too long or too often: {p.reason}".rstrip(": ")))
        else:
            kept_held.append(p)
            if action is HeldAction.RELEASE:
                release.append(p.id)
    by_frontend: dict[str, list[Pilot]] = {}
    for p in kept_held:
        by_frontend.setdefault(p.frontend, []).append(p)
    for mine in by_frontend.values():
        for p in mine[: max(0, len(mine) - per.max_held)]:
            removals.append((p.id, "over the per-frontend max_held"))
    gone = {pid for pid, _ in removals}
    still_held = [p for p in kept_held if p.id not in gone]
    for p in still_held[: max(0, len(still_held) - limits.max_held)]:
        removals.append((p.id, "over the entry's max_held"))
    gone = {pid for pid, _ in removals}
    release = [pid for pid in release if pid not in gone]

    idle_all = _count(live, PilotState.IDLE)
    running_all = _count(live, PilotState.RUNNING)
    held_all = len(still_held) - max(0, len(still_held) - limits.max_held)
    wants: dict[str, int] = {}
    for r in sorted(requests, key=lambda r: r.frontend):
        if r.entry != entry.name:
            continue
        mine = [p for p in live if p.frontend == r.frontend and p.id not in gone]
        idle, running = _count(mine, PilotState.IDLE), _count(mine, PilotState.RUNNING)
        if r.removal is Removal.ALL:
            idle_ones = sorted(
                (p for p in mine if p.state is PilotState.IDLE), key=lambda p: -p.submitted_at
            )
            removals += [(p.id, "the frontend wants no more pilots here") for p in idle_ones]
            for p in sorted(mine, key=lambda p: p.submitted_at):
                if p.state is not PilotState.RUNNING:
                    continue
                if p.retiring_since is None:
                    retire.setdefault(r.frontend, []).append(p.id)
                elif now - p.retiring_since >= entry.throttle.retire_grace_s:
                    grace = entry.throttle.retire_grace_s
                    removals.append((p.id, f"still running {grace:.0f} s after retiring"))
        elif r.removal is Removal.IDLE and r.remove_idle > 0:
            newest = sorted(
                (p for p in mine if p.state is PilotState.IDLE), key=lambda p: -p.submitted_at
            )
            removals += [(p.id, "idle pilot not wanted") for p in newest[: r.remove_idle]]
        if _count(mine, PilotState.HELD) >= per.max_held or held_all >= limits.max_held:
            continue
        want = min(
            r.idle_wanted - idle,
            r.max_running - idle - running,
            per.max_idle - idle,
            per.max_running - idle - running,
        )
        if want > 0:
            wants[r.frontend] = want
    room = min(limits.max_idle - idle_all, limits.max_running - idle_all - running_all)
    budget = max(0, min(room, entry.throttle.submits_per_cycle))
    submit: dict[str, int] = {}
    while budget > 0 and wants:
        for frontend in sorted(wants):
            if budget == 0:
                break
            submit[frontend] = submit.get(frontend, 0) + 1
            budget -= 1
            wants[frontend] -= 1
            if wants[frontend] == 0:
                del wants[frontend]
    return EntryPlan(
        entry.name,
        submit=submit,
        release=release,
        remove=removals[: entry.throttle.removals_per_cycle],
        retire=retire,
    )
