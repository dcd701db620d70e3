"""The job state machine: one table, every illegal transition refused."""

from __future__ import annotations

import itertools

import pytest

from pilotage.errors import Conflict
from pilotage.queue.states import TRANSITIONS, JobState, Trigger, sources_of, transition


def test_terminal_states_never_change() -> None:
    for state, trigger in itertools.product(JobState, Trigger):
        if state.terminal:
            with pytest.raises(Conflict, match=f"a {state.value} job cannot take"):
                transition(state, trigger)


@pytest.mark.parametrize(
    ("start", "trigger", "end"),
    [
        (JobState.IDLE, Trigger.CLAIM, JobState.RUNNING),
        (JobState.RUNNING, Trigger.EXIT, JobState.COMPLETED),
        (JobState.RUNNING, Trigger.LEASE_EXPIRED, JobState.IDLE),
        (JobState.RUNNING, Trigger.FAILURE, JobState.HELD),
        (JobState.HELD, Trigger.RELEASE, JobState.IDLE),
        (JobState.HELD, Trigger.REMOVE, JobState.REMOVED),
        (JobState.RUNNING, Trigger.REMOVE, JobState.REMOVED),
    ],
)
def test_legal(start: JobState, trigger: Trigger, end: JobState) -> None:
    change = transition(start, trigger)
    assert (change.from_state, change.to_state, change.trigger) == (start, end, trigger)


def test_illegal_examples() -> None:
    for start, trigger in [
        (JobState.IDLE, Trigger.EXIT),
        (JobState.IDLE, Trigger.RELEASE),
        (JobState.HELD, Trigger.CLAIM),
        (JobState.HELD, Trigger.HOLD),
        (JobState.RUNNING, Trigger.CLAIM),
    ]:
        with pytest.raises(Conflict):
            transition(start, trigger)


def test_sources_agree_with_table() -> None:
    for trigger in Trigger:
        assert sources_of(trigger) == {s for (s, t) in TRANSITIONS if t is trigger}
    assert sources_of(Trigger.CLAIM) == {JobState.IDLE}
