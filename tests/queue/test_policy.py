"""The job's own policy decided as HTCondor decides it: pure, from the ad and the state."""

from __future__ import annotations

from typing import Any

import pytest

from pilotage.queue.jobad import build_job_ad
from pilotage.queue.policy import Action, on_exit, periodic
from pilotage.queue.spec import JobPolicy, JobSpec


def ad_of(**policy: Any) -> str:
    spec = JobSpec(executable="/bin/true", policy=JobPolicy(**policy))
    return build_job_ad(spec, cluster_id=1, proc_id=0, owner="alice", qdate=1000)


def state(status: int, **more: Any) -> dict[str, Any]:
    return {"JobStatus": status, "EnteredCurrentStatus": 1000, "NumJobStarts": 1, **more}


def test_no_policy_decides_nothing() -> None:
    assert periodic(ad_of(), state(2)) is None
    assert on_exit(ad_of(), state(2, ExitCode=1, NumJobCompletions=1)) is None


def test_periodic_remove_comes_before_periodic_hold() -> None:
    ad = ad_of(periodic_hold="true", periodic_remove="JobStatus == 2")
    decision = periodic(ad, state(2))
    assert decision is not None and decision.action is Action.REMOVE
    decision = periodic(ad, state(1))
    assert decision is not None and decision.action is Action.HOLD


def test_periodic_hold_carries_reason_code_and_subcode() -> None:
    ad = ad_of(
        periodic_hold="NumJobStarts > 0",
        periodic_hold_reason='"too many starts"',
        periodic_hold_subcode="40 + 2",
    )
    decision = periodic(ad, state(1))
    assert decision is not None
    assert (decision.action, decision.reason, decision.code, decision.subcode) == (
        Action.HOLD,
        "too many starts",
        3,
        42,
    )


def test_without_a_reason_the_expression_is_named() -> None:
    decision = periodic(ad_of(periodic_hold="NumJobStarts > 0"), state(1))
    assert decision is not None and "PeriodicHold" in decision.reason


def test_periodic_release_applies_to_held_jobs_only() -> None:
    ad = ad_of(periodic_release="HoldReasonSubCode == 42", periodic_hold="true")
    held = periodic(ad, state(5, HoldReasonSubCode=42))
    assert held is not None and held.action is Action.RELEASE
    assert periodic(ad, state(5, HoldReasonSubCode=7)) is None  # held, no release, no re-hold


@pytest.mark.parametrize("expression", ["NoSuchAttribute > 3", '"a string"', "1 / 0"])
def test_an_undefined_or_non_boolean_expression_is_false(expression: str) -> None:
    assert periodic(ad_of(periodic_remove=expression), state(1)) is None


def test_on_exit_hold_comes_before_on_exit_remove() -> None:
    ad = ad_of(on_exit_hold="ExitCode == 3", on_exit_remove="false", on_exit_hold_subcode="7")
    decision = on_exit(ad, state(2, ExitCode=3, NumJobCompletions=1))
    assert decision is not None and (decision.action, decision.code, decision.subcode) == (
        Action.HOLD,
        3,
        7,
    )
    again = on_exit(ad, state(2, ExitCode=0, NumJobCompletions=1))
    assert again is not None and again.action is Action.REQUEUE


@pytest.mark.parametrize(
    ("code", "completions", "requeued"),
    [(0, 1, True), (2, 1, False), (5, 1, False), (1, 1, True), (1, 4, False)],
)
def test_max_retries_success_exit_code_and_retry_until(
    code: int, completions: int, requeued: bool
) -> None:
    ad = ad_of(max_retries=3, success_exit_code=2, retry_until="ExitCode == 5")
    decision = on_exit(ad, state(2, ExitCode=code, NumJobCompletions=completions))
    assert (decision is not None and decision.action is Action.REQUEUE) is requeued
