"""The factory's view of its pilots: one state machine, one transition table, no I/O.

A pilot, as the factory sees it through an entry's batch system::

    submit ─▶ IDLE ──start──▶ RUNNING ──exit──▶ FINISHED
               │  ▲             │
          hold │  │ release     ├──fail──▶ FAILED
               ▼  │             │
               HELD ───remove───┴──remove──▶ FINISHED (reason "removed")

Every state but FINISHED and FAILED can also ``fail`` (the batch system lost it, it
exited non-zero, validation refused the node) or be ``remove``\\ d. Every change goes
through :data:`TRANSITIONS` via :func:`transition`, which refuses anything else with
:class:`~pilotage.errors.Conflict` and logs each change with the pilot's id.

:func:`observe` turns what a backend reports into the events to apply, and
:class:`HeldPolicy` decides whether a held pilot is released, removed, or left alone.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, replace

from pilotage.errors import Conflict

log = logging.getLogger("pilotage.factory.pilots")


class PilotState(enum.Enum):
    """Where a pilot is, as its batch system reports it."""

    IDLE = "idle"
    RUNNING = "running"
    HELD = "held"
    FINISHED = "finished"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        """Whether no transition leaves this state."""
        return self in (PilotState.FINISHED, PilotState.FAILED)


class PilotEvent(enum.Enum):
    """What can happen to a pilot."""

    START = "start"
    HOLD = "hold"
    RELEASE = "release"
    EXIT = "exit"
    FAIL = "fail"
    REMOVE = "remove"


_S, _E = PilotState, PilotEvent

#: (state, event) -> new state. Anything absent is an illegal transition.
TRANSITIONS: dict[tuple[PilotState, PilotEvent], PilotState] = {
    (_S.IDLE, _E.START): _S.RUNNING,
    (_S.IDLE, _E.HOLD): _S.HELD,
    (_S.IDLE, _E.EXIT): _S.FINISHED,
    (_S.IDLE, _E.FAIL): _S.FAILED,
    (_S.IDLE, _E.REMOVE): _S.FINISHED,
    (_S.RUNNING, _E.HOLD): _S.HELD,
    (_S.RUNNING, _E.EXIT): _S.FINISHED,
    (_S.RUNNING, _E.FAIL): _S.FAILED,
    (_S.RUNNING, _E.REMOVE): _S.FINISHED,
    (_S.HELD, _E.RELEASE): _S.IDLE,
    (_S.HELD, _E.FAIL): _S.FAILED,
    (_S.HELD, _E.REMOVE): _S.FINISHED,
    (_S.HELD, _E.EXIT): _S.FINISHED,
}


@dataclass(frozen=True)
class Pilot:
    """One pilot the factory submitted."""

    id: str
    entry: str
    #: The backend's own id (a PID, a Slurm job id, a condor cluster.proc, ...).
    backend_id: str
    state: PilotState
    #: When the pilot entered ``state`` (epoch seconds).
    since: float
    submitted_at: float
    #: Why it is held, failed or finished, when known.
    reason: str = ""
    releases: int = 0
    #: The frontend whose request the pilot was submitted for.
    frontend: str = ""
    #: When the factory asked the pool to retire it (its frontend wants no more pilots at
    #: the entry): it ends its jobs and leaves; removed only if still there after a grace.
    retiring_since: float | None = None


def new_pilot(pilot_id: str, entry: str, backend_id: str, at: float, frontend: str = "") -> Pilot:
    """A pilot just submitted: IDLE (queued at its entry)."""
    log.info("pilot %s submitted to entry %s as %s", pilot_id, entry, backend_id)
    return Pilot(pilot_id, entry, backend_id, PilotState.IDLE, at, at, frontend=frontend)


def transition(pilot: Pilot, event: PilotEvent, at: float, reason: str = "") -> Pilot:
    """Apply ``event``; raise :class:`Conflict` when the table does not allow it."""
    target = TRANSITIONS.get((pilot.state, event))
    if target is None:
        raise Conflict(f"pilot {pilot.id} cannot {event.value} while {pilot.state.value}")
    if event is PilotEvent.REMOVE and not reason:
        reason = "removed"
    releases = pilot.releases + (1 if event is PilotEvent.RELEASE else 0)
    log.info(
        "pilot %s: %s -> %s (%s)%s",
        pilot.id,
        pilot.state.value,
        target.value,
        event.value,
        f": {reason}" if reason else "",
    )
    return replace(pilot, state=target, since=at, reason=reason, releases=releases)


@dataclass(frozen=True)
class Observed:
    """What a backend reports of one pilot: its state and, when it ended, why."""

    state: PilotState
    reason: str = ""


def observe(pilot: Pilot, seen: Observed) -> list[PilotEvent]:
    """The events that take ``pilot`` to the state its backend reports.

    A pilot already final stays so (a late report changes nothing). A pilot seen
    finished or failed from any live state ends there directly; a held pilot seen
    running again was released and started.
    """
    now, then = pilot.state, seen.state
    if now.final or now is then:
        return []
    if then is PilotState.FINISHED:
        return [PilotEvent.EXIT]
    if then is PilotState.FAILED:
        return [PilotEvent.FAIL]
    if then is PilotState.HELD:
        return [PilotEvent.HOLD]
    if then is PilotState.RUNNING:
        return (
            [PilotEvent.RELEASE, PilotEvent.START] if now is PilotState.HELD else [PilotEvent.START]
        )
    # Seen idle: only a held pilot can go back to idle.
    return [PilotEvent.RELEASE] if now is PilotState.HELD else []


def apply_observed(pilot: Pilot, seen: Observed, at: float) -> Pilot:
    """Apply :func:`observe`'s events to ``pilot``, with the backend's reason."""
    for event in observe(pilot, seen):
        pilot = transition(pilot, event, at, seen.reason)
    return pilot


class HeldAction(enum.Enum):
    """What to do with a held pilot."""

    WAIT = "wait"
    RELEASE = "release"
    REMOVE = "remove"


@dataclass(frozen=True)
class HeldPolicy:
    """Release a held pilot after ``release_after_s``, at most ``max_releases`` times;
    remove it once held for ``remove_after_s`` or when it may no longer be released.
    """

    release_after_s: float = 60.0
    max_releases: int = 3
    remove_after_s: float = 3600.0

    def decide(self, pilot: Pilot, now: float) -> HeldAction:
        """The action for ``pilot`` at ``now`` (WAIT for any pilot not held)."""
        if pilot.state is not PilotState.HELD:
            return HeldAction.WAIT
        held_for = now - pilot.since
        if held_for >= self.remove_after_s:
            return HeldAction.REMOVE
        if held_for >= self.release_after_s:
            if pilot.releases < self.max_releases:
                return HeldAction.RELEASE
            return HeldAction.REMOVE
        return HeldAction.WAIT
