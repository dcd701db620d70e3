"""q -analyze: the first obstacle between a job and the pool, in plain English."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pilotage.matchmaking.ads import Submitter
from pilotage.matchmaking.analyze import Verdict, analyze, render_text
from pilotage.matchmaking.fairshare import Accountant
from pilotage.matchmaking.partitionable import Resources

BIG = Resources(8, 16_000, 100_000, 0)


def _pool(make_slot: Callable[..., Any], n: int = 10, **kw: Any) -> list[Any]:
    return [make_slot(f"slot1@p{i}", site=f"Site{i % 3}", **kw) for i in range(n)]


def test_memory_larger_than_any_slot(
    make_job: Callable[..., Any], make_slot: Callable[..., Any]
) -> None:
    slots = _pool(make_slot, cpus=2, memory_mb=4000, total=BIG)
    a = analyze(make_job(memory_mb=64_000), slots, accountant=Accountant(), now=0)
    assert a.verdict is Verdict.REQUIREMENTS_UNSATISFIABLE
    assert (
        a.summary
        == "RequestMemory = 64000 MB but the largest slot has 16000 MB: lower request_memory."
    )
    memory = next(c for c in a.clauses if c.resource == "memory")
    assert (memory.slots_now, memory.slots_idle) == (0, 0)
    assert a.slots_matching_now == 0
    text = render_text(a)
    assert "lower request_memory" in text and "<- no slot" in text
    assert json.loads(json.dumps(a.to_dict()))["verdict"] == "requirements-unsatisfiable"


def test_clause_no_slot_satisfies_names_the_values(
    make_job: Callable[..., Any], make_slot: Callable[..., Any]
) -> None:
    a = analyze(
        make_job(requirements='Site == "CERN"'), _pool(make_slot), accountant=Accountant(), now=0
    )
    assert a.verdict is Verdict.REQUIREMENTS_UNSATISFIABLE
    assert a.summary.startswith(
        'No slot satisfies Site == "CERN"; the slots have Site = "Site0" (4)'
    )


def test_conflicting_clauses(make_job: Callable[..., Any], make_slot: Callable[..., Any]) -> None:
    job = make_job(requirements='Site == "Site0" && TARGET.TimeToLive > 100 && Site == "Site1"')
    a = analyze(job, _pool(make_slot), accountant=Accountant(), now=0)
    assert a.verdict is Verdict.CLAUSES_CONFLICT
    assert 'both Site == "Site0" and Site == "Site1"' in a.summary


def test_rejected_by_slots(make_job: Callable[..., Any], make_slot: Callable[..., Any]) -> None:
    slots = _pool(make_slot, start='TARGET.Owner =!= "mallory" && MY.Cpus > 0')
    a = analyze(make_job("mallory"), slots, accountant=Accountant(), now=0)
    assert a.verdict is Verdict.REJECTED_BY_SLOTS
    assert a.slots_rejecting == 10
    assert 'TARGET.Owner isnt "mallory" is false for this job on 10' in a.summary
    assert "owner" in a.summary


def test_wall_time_too_long(make_job: Callable[..., Any], make_slot: Callable[..., Any]) -> None:
    a = analyze(
        make_job(wall_s=90_000), _pool(make_slot, ttl_s=7200), accountant=Accountant(), now=0
    )
    assert a.verdict is Verdict.WALL_TIME_TOO_LONG
    assert "retires in 7200 s" in a.summary
    assert a.slots_ttl_too_short == 10


def test_busy_slots(make_job: Callable[..., Any], make_slot: Callable[..., Any]) -> None:
    slots = _pool(make_slot, cpus=1, memory_mb=1000, total=BIG)
    a = analyze(make_job(cpus=4), slots, accountant=Accountant(), now=0)
    assert a.verdict is Verdict.SLOTS_BUSY
    cpus = next(c for c in a.clauses if c.resource == "cpus")
    assert (cpus.slots_now, cpus.slots_idle) == (0, 10)
    assert cpus.suggestion is not None and "none has it free now" in cpus.suggestion


def test_waiting_for_fair_share(
    make_job: Callable[..., Any], make_slot: Callable[..., Any]
) -> None:
    acc = Accountant()
    acc.charge(Submitter("alice"), 5_000_000, at=0)
    idle = [Submitter("alice"), Submitter("bob"), Submitter("carol")]
    a = analyze(make_job("alice"), _pool(make_slot), accountant=acc, now=0, idle_submitters=idle)
    assert a.verdict is Verdict.WAITING_FOR_FAIR_SHARE
    assert a.fair_share.position == 3 and a.fair_share.ahead == ("bob", "carol")
    assert "3 of 3" in a.details[0]
    b = analyze(make_job("bob"), _pool(make_slot), accountant=acc, now=0, idle_submitters=idle)
    assert b.verdict is Verdict.SHOULD_START


def test_no_slots(make_job: Callable[..., Any]) -> None:
    a = analyze(make_job(), [], accountant=Accountant(), now=0)
    assert a.verdict is Verdict.NO_SLOTS
    assert "no slots" in render_text(a)


def test_missing_resource_clauses_are_added(
    make_job: Callable[..., Any], make_slot: Callable[..., Any]
) -> None:
    from pilotage.matchmaking.classads import parse_expr

    job = make_job(memory_mb=64_000)
    job["Requirements"] = parse_expr('OpSys == "LINUX"')
    a = analyze(job, _pool(make_slot), accountant=Accountant(), now=0)
    assert [c.implicit for c in a.clauses] == [True, True, True, True, False]
    assert a.verdict is Verdict.REQUIREMENTS_UNSATISFIABLE
