"""A job's Rank among the slots that asked lately: it waits (a bounded time) for the one
it ranks highest, as HTCondor's negotiator would give it that slot."""

from __future__ import annotations

from typing import Any

import pytest

from pilotage.matchmaking.ads import build_job_ad
from pilotage.matchmaking.partitionable import Resources
from pilotage.matchmaking.service import MatchService, MatchSettings

from .conftest import slot

SMALL = {"name": "slot@small", "memory_mb": 2000}
BIG = {"name": "slot@big", "memory_mb": 8000}


def service(*ranks: str | None) -> MatchService:
    matcher = MatchService(MatchSettings(rank_window_s=10, rank_wait_s=30))
    for n, rank in enumerate(ranks):
        ad = build_job_ad(
            cluster_id=1, proc_id=n, owner="alice", qdate=1000,
            request=Resources(1, 1000, 100, 0), rank=rank,
        )  # fmt: skip
        matcher.index.add(n + 1, ad)
    return matcher


def test_the_job_waits_for_the_bigger_slot_that_asked_then_takes_it() -> None:
    matcher = service("Memory")
    assert matcher.candidates(slot(**BIG, cpus=0), now=0) == []  # busy: offers nothing
    assert matcher.candidates(slot(**BIG), now=1) == [1]  # not claimed (a racing server)
    assert matcher.candidates(slot(**SMALL), now=2) == []  # the big slot ranks higher
    assert matcher.ranks.waiting() == 1
    assert matcher.candidates(slot(**BIG), now=3) == [1]
    matcher.claimed(1, 1, now=3, pilot="big")
    assert matcher.ranks.waiting() == 0


@pytest.mark.parametrize(
    ("rank", "big", "small_at", "why"),
    [
        (None, BIG, 2, "no Rank"),
        ("1000", BIG, 2, "a Rank that reads nothing of the slot"),
        ("Memory", BIG, 11.5, "the big slot asked longer ago than the window"),
        ("-Memory", BIG, 2, "the small slot ranks higher"),
        ("Memory", {**BIG, "start": 'TARGET.Owner == "bob"'}, 2, "the big slot refuses it"),
        ("Memory", {**BIG, "cpus": 0}, 2, "the big slot has no cpu free"),
        ("Memory > 4000 && Disk > 10", BIG, 2, "a boolean Rank, true on the big slot"),
    ],
)
def test_the_small_slot_gets_the_job_when(
    rank: str | None, big: dict[str, Any], small_at: float, why: str
) -> None:
    matcher = service(rank)
    matcher.candidates(slot(**big), now=1)
    expected = [] if "boolean" in why else [1]
    assert matcher.candidates(slot(**SMALL), now=small_at) == expected, why


def test_a_waiting_job_takes_any_slot_after_the_wait() -> None:
    matcher = service("Memory", None)
    matcher.candidates(slot(**BIG), now=0)
    assert matcher.candidates(slot(**SMALL), now=1) == [2]  # job 2 has no preference
    for now in (5, 9):  # the big slot keeps offering, yet never claims it
        matcher.candidates(slot(**BIG), now=now)
        assert matcher.candidates(slot(**SMALL), now=now + 0.5) == [2]
    assert matcher.candidates(slot(**SMALL), now=31) == [1, 2]


def test_a_claim_withdraws_the_pilots_offer() -> None:
    matcher = service(None, "Memory")
    assert matcher.candidates(slot(**BIG), now=0) == [1, 2]
    matcher.claimed(1, 1, now=0, pilot="big")
    assert matcher.candidates(slot(**SMALL), now=1) == [2]
