"""The factory's pilot state machine: its table, observations, and the held policy."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from pilotage.errors import Conflict
from pilotage.factory.pilots import (
    TRANSITIONS,
    HeldAction,
    HeldPolicy,
    Observed,
    Pilot,
    PilotEvent,
    PilotState,
    apply_observed,
    new_pilot,
    transition,
)

S, E = PilotState, PilotEvent


def pilot(state: PilotState = S.IDLE, since: float = 100.0, releases: int = 0) -> Pilot:
    p = new_pilot("p1", "entry-a", "4242", at=100.0)
    return replace(p, state=state, since=since, releases=releases)


def test_new_pilot_is_idle() -> None:
    p = new_pilot("p1", "entry-a", "4242", at=5.0)
    assert (p.state, p.since, p.submitted_at, p.backend_id) == (S.IDLE, 5.0, 5.0, "4242")


def test_a_whole_life() -> None:
    p = new_pilot("p1", "e", "1", at=0.0)
    p = transition(p, E.HOLD, 1.0, "site hold")
    p = transition(p, E.RELEASE, 2.0)
    p = transition(p, E.START, 3.0)
    p = transition(p, E.EXIT, 4.0)
    assert (p.state, p.since, p.releases) == (S.FINISHED, 4.0, 1)


@pytest.mark.parametrize("state", list(S))
@pytest.mark.parametrize("event", list(E))
def test_every_pair_follows_the_table(state: PilotState, event: PilotEvent) -> None:
    expected = TRANSITIONS.get((state, event))
    if expected is None:
        with pytest.raises(Conflict, match=f"pilot p1 cannot {event.value} while {state.value}"):
            transition(pilot(state), event, 1.0)
    else:
        assert transition(pilot(state), event, 1.0).state is expected


def test_final_states_have_no_way_out() -> None:
    assert not [key for key in TRANSITIONS if key[0].final]


def test_remove_records_a_reason() -> None:
    assert transition(pilot(S.RUNNING), E.REMOVE, 1.0).reason == "removed"
    assert transition(pilot(S.IDLE), E.REMOVE, 1.0, "not wanted").reason == "not wanted"


def test_transitions_are_logged_with_the_pilot_id(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pilotage.factory.pilots"):
        transition(pilot(S.IDLE), E.START, 1.0)
    assert "pilot p1: idle -> running (start)" in caplog.text


@pytest.mark.parametrize(
    ("now", "seen", "after"),
    [
        (S.IDLE, S.IDLE, S.IDLE),
        (S.IDLE, S.RUNNING, S.RUNNING),
        (S.IDLE, S.FINISHED, S.FINISHED),
        (S.RUNNING, S.FAILED, S.FAILED),
        (S.RUNNING, S.HELD, S.HELD),
        (S.HELD, S.IDLE, S.IDLE),
        (S.HELD, S.RUNNING, S.RUNNING),
        (S.RUNNING, S.IDLE, S.RUNNING),  # a batch system requeue is seen as idle: keep
        (S.FINISHED, S.RUNNING, S.FINISHED),  # a late report changes nothing
        (S.FAILED, S.FINISHED, S.FAILED),
    ],
)
def test_observations(now: PilotState, seen: PilotState, after: PilotState) -> None:
    assert apply_observed(pilot(now), Observed(seen, "why"), 2.0).state is after


def test_observed_reason_is_kept() -> None:
    p = apply_observed(pilot(S.RUNNING), Observed(S.FAILED, "exit code 3"), 2.0)
    assert p.reason == "exit code 3"


def test_held_policy() -> None:
    policy = HeldPolicy(release_after_s=60, max_releases=2, remove_after_s=600)
    assert policy.decide(pilot(S.RUNNING, since=0), 1000) is HeldAction.WAIT
    assert policy.decide(pilot(S.HELD, since=0), 59) is HeldAction.WAIT
    assert policy.decide(pilot(S.HELD, since=0), 60) is HeldAction.RELEASE
    assert policy.decide(pilot(S.HELD, since=0, releases=2), 60) is HeldAction.REMOVE
    assert policy.decide(pilot(S.HELD, since=0), 600) is HeldAction.REMOVE
