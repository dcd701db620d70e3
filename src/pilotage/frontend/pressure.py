"""Constant pressure: how many idle pilots the frontend wants queued at each entry.

Pure state logic, no I/O: :func:`plan` takes one cycle's observations and the state kept
from the previous cycle, and returns the requests to publish and the state to keep.

The idea (seed 001 §2.2): while jobs that could run at an entry are idle, keep a *small*
number of pilots queued there, never one per job. Per (group, entry), in this order:

1. **demand** — the idle jobs matching the entry, in pilots (the matcher has already
   divided each autocluster's jobs among the entries it matches and by jobs per pilot);
   the target never exceeds it, rounded up.
2. **curb** — above ``idle_curb`` only half of the rest is asked for, so an entry that does
   not start its pilots does not get a queue as long as ``max_idle`` at once.
3. **max_idle** — a hard cap on the target.
4. **ramp-up attenuation** — the target grows at most to ``ramp_up_factor`` times the
   previous cycle's target or of the pilots already queued, whichever is larger (and to
   at least ``ramp_up_min``): a burst of jobs grows the queue
   over a few cycles instead of flooding a site with pilots that may never be needed.
5. **max_running** — queued plus running pilots never exceed it.
6. **group and global limits** — the same two caps (idle, running) over the entries of a
   frontend group, then over every entry; when a sum is too high the targets are cut in
   proportion (largest remainders keep the extra units, ties by entry name).

When the target is below the idle pilots already queued, the difference is *excess*, and
the remove-excess policy says what to do: ``no`` keeps them, ``wait`` removes them only
after ``remove_wait_cycles`` cycles of excess in a row (a queue that drains for one cycle
comes back often), ``idle`` removes them at once, ``all`` does too and, when no job wants
the entry any more, also retires the running pilots.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from pilotage.errors import OperatorError


class RemoveExcess(enum.Enum):
    """What to do with pilots the frontend no longer wants."""

    NO = "no"
    WAIT = "wait"
    IDLE = "idle"
    ALL = "all"


class Removal(enum.Enum):
    """What a request asks the factory to remove."""

    NONE = "none"
    #: ``remove_idle`` of the entry's queued pilots.
    IDLE = "idle"
    #: every queued pilot, and retire the running ones.
    ALL = "all"


@dataclass(frozen=True)
class Limits:
    """Caps on queued (idle) and on queued plus running pilots.

    Invariant (checked): ``0 <= idle_curb <= max_idle`` and ``max_running >= 0``.
    """

    max_idle: int = 10
    max_running: int = 1000
    idle_curb: int = 5

    def __post_init__(self) -> None:
        if self.max_idle < 0 or self.max_running < 0:
            raise OperatorError(f"limits must not be negative: {self}")
        if not 0 <= self.idle_curb <= self.max_idle:
            raise OperatorError(
                f"idle_curb ({self.idle_curb}) must lie between 0 and max_idle ({self.max_idle})"
            )


#: No cap: what a group or the whole frontend gets when it configures none.
UNLIMITED = Limits(max_idle=2**31, max_running=2**31, idle_curb=2**31)


@dataclass(frozen=True)
class PressureConfig:
    """The frontend's pressure settings."""

    entry: Limits = field(default_factory=Limits)
    #: Per-entry overrides of ``entry``, by entry name.
    entries: Mapping[str, Limits] = field(default_factory=dict)
    groups: Mapping[str, Limits] = field(default_factory=dict)
    total: Limits = UNLIMITED
    ramp_up_min: int = 2
    ramp_up_factor: float = 2.0
    remove_excess: RemoveExcess = RemoveExcess.WAIT
    remove_wait_cycles: int = 3

    def __post_init__(self) -> None:
        if self.ramp_up_min < 1 or self.ramp_up_factor < 1.0:
            raise OperatorError("ramp_up_min must be at least 1 and ramp_up_factor at least 1.0")
        if self.remove_wait_cycles < 0:
            raise OperatorError("remove_wait_cycles must not be negative")

    def limits_of(self, entry: str) -> Limits:
        """The limits of one entry: its override or the default."""
        return self.entries.get(entry, self.entry)


@dataclass(frozen=True)
class Observation:
    """One (group, entry) in one cycle: the demand and the pilots seen there."""

    group: str
    entry: str
    #: Idle jobs that could run at this entry, in pilots (fractional shares allowed).
    demand: float
    pilots_idle: int = 0
    pilots_running: int = 0
    pilots_held: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.entry)


@dataclass(frozen=True)
class EntryState:
    """What the algorithm remembers of one (group, entry) between cycles."""

    target: int = 0
    #: Consecutive cycles in which the target was below the idle pilots.
    excess_cycles: int = 0


@dataclass(frozen=True)
class Request:
    """What the frontend publishes for one (group, entry)."""

    group: str
    entry: str
    #: Pilots to keep queued; the factory submits ``idle_wanted - idle`` when positive.
    idle_wanted: int
    #: Queued plus running pilots the factory may have for this request.
    max_running: int
    removal: Removal = Removal.NONE
    #: With ``Removal.IDLE``: how many queued pilots to remove.
    remove_idle: int = 0


def _entry_target(obs: Observation, limits: Limits, prev: EntryState, cfg: PressureConfig) -> int:
    """Steps 1 to 5 of the module docstring for one (group, entry)."""
    if obs.demand <= 0:
        return 0
    target = math.ceil(obs.demand - 1e-9)
    if target > limits.idle_curb:
        target = limits.idle_curb + (target - limits.idle_curb) // 2
    target = min(target, limits.max_idle)
    # Growth is measured from what is already queued too, so attenuation never turns
    # pilots a site has accepted into excess.
    base = max(prev.target, obs.pilots_idle)
    ramp = max(cfg.ramp_up_min, math.ceil(base * cfg.ramp_up_factor))
    target = min(target, ramp)
    return max(0, min(target, limits.max_running - obs.pilots_running))


def _cut(targets: dict[tuple[str, str], int], keys: list[tuple[str, str]], cap: int) -> None:
    """Scale ``targets[k]`` for ``k`` in ``keys`` down so they sum to at most ``cap``.

    Proportional shares, floored; the units left go to the largest remainders (ties
    broken by key, so the result does not depend on input order).
    """
    total = sum(targets[k] for k in keys)
    if total <= cap:
        return
    cap = max(0, cap)
    shares = {k: targets[k] * cap / total for k in keys}
    for k in keys:
        targets[k] = math.floor(shares[k])
    left = cap - sum(targets[k] for k in keys)
    by_remainder = sorted(keys, key=lambda k: (-(shares[k] - math.floor(shares[k])), k))
    for k in by_remainder[:left]:
        targets[k] += 1


def _apply_limits(
    targets: dict[tuple[str, str], int],
    observations: list[Observation],
    keys: list[tuple[str, str]],
    limits: Limits,
) -> None:
    running = sum(o.pilots_running for o in observations if o.key in keys)
    _cut(targets, keys, limits.max_idle)
    _cut(targets, keys, limits.max_running - running)


def _removal(
    obs: Observation, target: int, prev: EntryState, cfg: PressureConfig
) -> tuple[Removal, int, int]:
    """The removal to ask for, how many idle pilots, and the new excess count."""
    excess = obs.pilots_idle - target
    drained = obs.demand <= 0
    if excess <= 0 and not (
        drained and obs.pilots_running and cfg.remove_excess is RemoveExcess.ALL
    ):
        return Removal.NONE, 0, 0
    cycles = prev.excess_cycles + 1
    policy = cfg.remove_excess
    if policy is RemoveExcess.NO:
        return Removal.NONE, 0, cycles
    if policy is RemoveExcess.WAIT and cycles <= cfg.remove_wait_cycles:
        return Removal.NONE, 0, cycles
    if policy is RemoveExcess.ALL and drained:
        return Removal.ALL, obs.pilots_idle, cycles
    return Removal.IDLE, max(0, excess), cycles


def plan(
    observations: Iterable[Observation],
    states: Mapping[tuple[str, str], EntryState],
    cfg: PressureConfig,
) -> tuple[list[Request], dict[tuple[str, str], EntryState]]:
    """One frontend cycle: the requests to publish and the state for the next cycle.

    ``states`` is keyed by ``(group, entry)``; a key absent from it starts from
    :class:`EntryState` (target 0). State of keys not observed this cycle is dropped.
    Requests come out sorted by ``(group, entry)``.
    """
    obs = sorted(observations, key=lambda o: o.key)
    seen: set[tuple[str, str]] = set()
    for o in obs:
        if o.key in seen:
            raise ValueError(f"entry {o.entry} of group {o.group} observed twice")
        seen.add(o.key)
    targets: dict[tuple[str, str], int] = {}
    for o in obs:
        prev = states.get(o.key, EntryState())
        targets[o.key] = _entry_target(o, cfg.limits_of(o.entry), prev, cfg)
    by_group: dict[str, list[tuple[str, str]]] = {}
    for o in obs:
        by_group.setdefault(o.group, []).append(o.key)
    for group, keys in by_group.items():
        _apply_limits(targets, obs, keys, cfg.groups.get(group, UNLIMITED))
    _apply_limits(targets, obs, [o.key for o in obs], cfg.total)

    requests: list[Request] = []
    new_states: dict[tuple[str, str], EntryState] = {}
    for o in obs:
        prev = states.get(o.key, EntryState())
        target = targets[o.key]
        removal, remove_idle, cycles = _removal(o, target, prev, cfg)
        limits = cfg.limits_of(o.entry)
        # Never ask for more pilots than there is work, nor past the entry's cap.
        max_running = min(limits.max_running, o.pilots_running + target)
        requests.append(Request(o.group, o.entry, target, max_running, removal, remove_idle))
        new_states[o.key] = replace(prev, target=target, excess_cycles=cycles)
    return requests, new_states
