"""Job states and the one table of legal transitions between them.

Every change of a job's state goes through :func:`transition`, which refuses an illegal
one; the store records each transition as an event in the job's history.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pilotage.errors import Conflict


class JobState(enum.Enum):
    """Where a job is in its life."""

    IDLE = "IDLE"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    HELD = "HELD"
    REMOVED = "REMOVED"

    @property
    def terminal(self) -> bool:
        """A terminal job never changes again."""
        return self in (JobState.COMPLETED, JobState.REMOVED)


class Trigger(enum.Enum):
    """Why a job changes state."""

    CLAIM = "claim"  # the matchmaker gave it to a slot
    EXIT = "exit"  # the agent reported that it ended
    LEASE_EXPIRED = "lease_expired"  # its claim was not renewed in time
    RELEASED_BY_PILOT = "released_by_pilot"  # the pilot gave it back unstarted or left
    FAILURE = "failure"  # the agent could not run it (bad sandbox, no executable)
    HOLD = "hold"  # a user or admin held it
    RELEASE = "release"  # a user or admin released it
    REMOVE = "remove"  # a user or admin removed it
    TOO_MANY_ATTEMPTS = "too_many_attempts"  # started and lost too often
    RETRY = "retry"  # it exited and its policy (max_retries, on_exit_remove) runs it again
    PILOT_KILLED = "pilot_killed"  # an admin killed its pilot (pilotage pilot kill)


S = JobState
T = Trigger

#: (from state, trigger) → to state. Anything not here is illegal.
TRANSITIONS: dict[tuple[JobState, Trigger], JobState] = {
    (S.IDLE, T.CLAIM): S.RUNNING,
    (S.IDLE, T.HOLD): S.HELD,
    (S.IDLE, T.REMOVE): S.REMOVED,
    (S.IDLE, T.TOO_MANY_ATTEMPTS): S.HELD,
    (S.RUNNING, T.EXIT): S.COMPLETED,
    (S.RUNNING, T.LEASE_EXPIRED): S.IDLE,
    (S.RUNNING, T.RELEASED_BY_PILOT): S.IDLE,
    (S.RUNNING, T.FAILURE): S.HELD,
    (S.RUNNING, T.HOLD): S.HELD,
    (S.RUNNING, T.REMOVE): S.REMOVED,
    (S.RUNNING, T.TOO_MANY_ATTEMPTS): S.HELD,
    (S.RUNNING, T.RETRY): S.IDLE,
    (S.RUNNING, T.PILOT_KILLED): S.IDLE,
    (S.HELD, T.RELEASE): S.IDLE,
    (S.HELD, T.REMOVE): S.REMOVED,
}

#: Triggers that end a running claim.
ENDS_CLAIM = frozenset(
    {T.EXIT, T.LEASE_EXPIRED, T.RELEASED_BY_PILOT, T.FAILURE, T.HOLD, T.REMOVE, T.TOO_MANY_ATTEMPTS}
    | {T.RETRY, T.PILOT_KILLED}
)


class HoldCode(enum.IntEnum):
    """Why a job is HELD (also in docs/pilot-protocol.md)."""

    USER = 1
    INPUT_REFUSED = 10
    EXECUTABLE = 11
    OUTPUT = 12
    START_FAILED = 13
    TOO_MANY_ATTEMPTS = 20


@dataclass(frozen=True)
class Transition:
    """One legal change of state, ready to be recorded."""

    from_state: JobState
    to_state: JobState
    trigger: Trigger


def transition(current: JobState, trigger: Trigger) -> Transition:
    """Return the transition ``trigger`` causes from ``current``, or raise :class:`Conflict`."""
    target = TRANSITIONS.get((current, trigger))
    if target is None:
        raise Conflict(f"a {current.value} job cannot take '{trigger.value}'")
    return Transition(current, target, trigger)


def sources_of(trigger: Trigger) -> frozenset[JobState]:
    """The states from which ``trigger`` is legal (used to build guarded SQL updates)."""
    return frozenset(src for (src, trig) in TRANSITIONS if trig is trigger)
