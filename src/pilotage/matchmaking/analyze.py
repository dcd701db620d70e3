"""Why a job does not run: ``pilotage q -analyze ID``.

The analysis walks the same path as the matchmaker and stops at the first obstacle:

1. no slot in the pool at all;
2. a clause of the job's Requirements that no slot satisfies even with nothing running
   on it (with a plain-English fix: "RequestMemory = 64000 MB but the largest slot has
   16000 MB: lower request_memory", or the values the slots do have);
3. clauses each satisfied by some slot but never together (names the conflicting pair);
4. the slots' own START expressions refuse the job (names the most common refusing clause);
5. the job's MaxWallTime is longer than every matching pilot has left to live;
6. matching slots exist but are busy (not enough free resources right now);
7. matching slots are free, and the job waits for fair share (its submitter's effective
   priority and position), or should start at the next request for work.

Each clause is counted twice: against the slots as they are (free resources) and as they
would be with nothing running (``Total*`` resources). The standard resource clauses are
added when the job's Requirements lacks them, as the matchmaker enforces them anyway.
The result is a frozen dataclass tree: :func:`render_text` for the CLI, ``to_dict()`` for
``--json``.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pilotage.matchmaking.ads import JobAd, MatchConfig, SlotAd, Submitter
from pilotage.matchmaking.analysis_text import clause_suggestion, conflict_sentence, render_text
from pilotage.matchmaking.classads import copy_ad, new_ad, parse_expr
from pilotage.matchmaking.classads import is_true as _true
from pilotage.matchmaking.classads import references as _references
from pilotage.matchmaking.clauses import (
    EXCLUDED_SITES,
    RESOURCE_REQUIREMENTS,
    resource_of,
    split_clauses,
)
from pilotage.matchmaking.fairshare import Accountant

__all__ = ["Analysis", "ClauseReport", "FairShareReport", "Verdict", "analyze", "render_text"]


class Verdict(enum.Enum):
    """The first obstacle between the job and a slot."""

    NO_SLOTS = "no-slots"
    REQUIREMENTS_UNSATISFIABLE = "requirements-unsatisfiable"
    CLAUSES_CONFLICT = "clauses-conflict"
    REJECTED_BY_SLOTS = "rejected-by-slots"
    WALL_TIME_TOO_LONG = "wall-time-too-long"
    SLOTS_BUSY = "slots-busy"
    WAITING_FOR_FAIR_SHARE = "waiting-for-fair-share"
    SHOULD_START = "should-start"


@dataclass(frozen=True)
class ClauseReport:
    """One top-level ``&&`` clause of the job's Requirements and how many slots satisfy it."""

    text: str
    #: ``"cpus"``, ``"memory"``, ``"disk"`` or ``"gpus"`` for a standard resource clause.
    resource: str | None
    #: Added by the analysis: enforced by the matchmaker but absent from the job's ad.
    implicit: bool
    slots_now: int
    slots_idle: int
    suggestion: str | None


@dataclass(frozen=True)
class FairShareReport:
    """Where the job's submitter stands among the submitters with idle jobs."""

    submitter: str
    effective_priority: float
    real_priority: float
    factor: float
    #: 1 = first in line; 0 = left out (its group is over quota and takes no surplus).
    position: int
    competing: int
    ahead: tuple[str, ...]
    group_over_quota: bool


@dataclass(frozen=True)
class Analysis:
    """Why a job does (not) run, with the counts behind the answer."""

    job: str
    submitter: str
    verdict: Verdict
    summary: str
    details: tuple[str, ...]
    slots_total: int
    clauses: tuple[ClauseReport, ...]
    #: Slots satisfying every clause of the job's Requirements (free now / when idle).
    slots_requirements_now: int
    slots_requirements_idle: int
    #: Slots whose own Requirements (START) refuse the job.
    slots_rejecting: int
    #: Slots that retire before ``max_wall_time_s``.
    slots_ttl_too_short: int
    slots_matching_now: int
    slots_matching_idle: int
    max_wall_time_s: float
    fair_share: FairShareReport

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the verdict as its string value)."""
        data = asdict(self)
        data["verdict"] = self.verdict.value
        return data


def _idle_copy(slot: SlotAd) -> Any:
    """The slot ad as it would be with nothing running: free amounts = ``Total*`` amounts."""
    ad = copy_ad(slot.ad)
    for name in ("Cpus", "Memory", "Disk", "GPUs"):
        if f"Total{name}" in slot.ad:
            ad[name] = slot.ad.lookup(f"Total{name}")
    return ad


def _count(mask: int) -> int:
    return mask.bit_count()


def analyze(
    job_ad: Any,
    slot_ads: Sequence[Any],
    *,
    accountant: Accountant,
    now: float,
    idle_submitters: Collection[Submitter] = (),
    config: MatchConfig | None = None,
) -> Analysis:
    """Explain whether and why the job of ``job_ad`` can run on the pool's ``slot_ads``.

    ``slot_ads`` are the slots as the collector last saw them (free resources);
    ``idle_submitters`` are those with idle jobs, to place the job's submitter in line.
    """
    config = config or MatchConfig()
    job = JobAd.from_classad(0, job_ad, config)
    slots = [SlotAd.from_classad(ad) for ad in slot_ads]
    idle_ads = [_idle_copy(s) for s in slots]
    n = len(slots)

    text = str(job_ad.lookup("Requirements")) if "Requirements" in job_ad else "true"
    written = split_clauses(text)
    present = {resource_of(c) for c in written}
    implicit = [c for c in split_clauses(RESOURCE_REQUIREMENTS) if resource_of(c) not in present]
    texts = implicit + written
    exprs = [parse_expr(t, "Requirements clause") for t in texts]

    def mask(test: Any) -> tuple[int, int]:
        now_bits = idle_bits = 0
        for j, slot in enumerate(slots):
            if test(slot.ad, slot):
                now_bits |= 1 << j
            if test(idle_ads[j], slot):
                idle_bits |= 1 << j
        return now_bits, idle_bits

    masks = [mask(lambda ad, _s, e=e: _true(e, job_ad, ad)) for e in exprs]
    start_now, start_idle = mask(lambda ad, s: s.start is None or _true(s.start, ad, job_ad))
    ttl_ok = 0
    for j, slot in enumerate(slots):
        if slot.ttl_s is None or job.max_wall_time_s <= slot.ttl_s:
            ttl_ok |= 1 << j
    every = (1 << n) - 1
    req_now = req_idle = every
    for now_bits, idle_bits in masks:
        req_now &= now_bits
        req_idle &= idle_bits
    match_now = req_now & start_now & ttl_ok
    match_idle = req_idle & start_idle & ttl_ok

    clauses = tuple(
        ClauseReport(
            text=t,
            resource=resource_of(t),
            implicit=i < len(implicit),
            slots_now=_count(now_bits),
            slots_idle=_count(idle_bits),
            suggestion=(
                clause_suggestion(t, e, job, job_ad, slots, idle_ads, now_bits, idle_bits)
                if not now_bits
                else None
            ),
        )
        for i, (t, e, (now_bits, idle_bits)) in enumerate(zip(texts, exprs, masks, strict=True))
    )
    fair = _fair_share(job.submitter, accountant, now, idle_submitters)

    details: list[str] = []
    blocked = next((c for c in clauses if c.slots_idle == 0), None)
    if n == 0:
        verdict = Verdict.NO_SLOTS
        summary = "There are no slots in the pool: pilots start when the frontend asks for them."
    elif blocked is not None:
        verdict = Verdict.REQUIREMENTS_UNSATISFIABLE
        summary = blocked.suggestion or f"No slot satisfies {blocked.text}."
        details.extend(
            f"Also: {c.suggestion}"
            for c in clauses
            if c is not blocked and c.slots_idle == 0 and c.suggestion
        )
    elif not req_idle:
        verdict = Verdict.CLAUSES_CONFLICT
        summary = conflict_sentence(texts, [idle for _, idle in masks])
    elif not req_idle & start_idle:
        verdict = Verdict.REJECTED_BY_SLOTS
        summary, details = _refusals(job_ad, slots, idle_ads, req_idle)
    elif not match_idle:
        verdict = Verdict.WALL_TIME_TOO_LONG
        wanted = req_idle & start_idle
        longest = max(s.ttl_s or 0.0 for j, s in enumerate(slots) if (wanted >> j) & 1)
        summary = (
            f"MaxWallTime = {job.max_wall_time_s:.0f} s but the longest-lived slot that could "
            f"run it retires in {longest:.0f} s: lower +MaxWallTime, or wait for new pilots."
        )
    elif not match_now:
        verdict = Verdict.SLOTS_BUSY
        summary = (
            f"{_count(match_idle)} slot(s) can run this job but are busy: none has enough "
            "free resources right now."
        )
        details.append(_position_sentence(fair))
    else:
        first = fair.position == 1
        verdict = Verdict.SHOULD_START if first else Verdict.WAITING_FOR_FAIR_SHARE
        summary = f"{_count(match_now)} slot(s) can run this job now; " + (
            "it should start at the next request for work." if first else "it waits for fair share."
        )
        details.append(_position_sentence(fair))

    excluded = job_ad.eval(EXCLUDED_SITES) if EXCLUDED_SITES in job_ad else None
    if isinstance(excluded, list) and excluded:
        details.append(
            f"{EXCLUDED_SITES} = {', '.join(map(str, excluded))}: these sites denied the "
            "job's owner (pilotage-exec 203); it is matched only at other sites."
        )
    return Analysis(
        job=job.name,
        submitter=job.submitter.name,
        verdict=verdict,
        summary=summary,
        details=tuple(details),
        slots_total=n,
        clauses=clauses,
        slots_requirements_now=_count(req_now),
        slots_requirements_idle=_count(req_idle),
        slots_rejecting=n - _count(start_idle),
        slots_ttl_too_short=n - _count(ttl_ok),
        slots_matching_now=_count(match_now),
        slots_matching_idle=_count(match_idle),
        max_wall_time_s=job.max_wall_time_s,
        fair_share=fair,
    )


def _refusals(
    job_ad: Any, slots: list[SlotAd], idle_ads: list[Any], candidates: int
) -> tuple[str, list[str]]:
    """Which START clauses refuse the job, most common first, over the slots it wants."""
    refusing: Counter[str] = Counter()
    for j, slot in enumerate(slots):
        if not (candidates >> j) & 1 or slot.start is None:
            continue
        for clause in split_clauses(slot.start_text):
            if not _true(parse_expr(clause), idle_ads[j], job_ad):
                refusing[clause] += 1
    wanted = _count(candidates)
    if not refusing:
        return f"The START expressions of all {wanted} slot(s) it could use refuse it.", []
    (worst, times), *rest = refusing.most_common(4)
    _, job_refs = _references(new_ad({}), parse_expr(worst))
    summary = (
        f"All {wanted} slot(s) that satisfy its Requirements refuse it: {worst} is false "
        f"for this job on {times} of them"
        + (f" (it reads the job's {', '.join(sorted(job_refs))})." if job_refs else ".")
    )
    return summary, [f"{clause} is false for this job on {k} slot(s)." for clause, k in rest]


def _fair_share(
    submitter: Submitter, accountant: Accountant, now: float, idle: Collection[Submitter]
) -> FairShareReport:
    order = accountant.order(set(idle) | {submitter}, now)
    position = order.index(submitter) + 1 if submitter in order else 0
    ahead = order[: position - 1] if position else order
    return FairShareReport(
        submitter=submitter.name,
        effective_priority=accountant.effective_priority(submitter, now),
        real_priority=accountant.real_priority(submitter, now),
        factor=accountant.factor(submitter),
        position=position,
        competing=len(order) + (0 if position else 1),
        ahead=tuple(s.name for s in ahead[:5]),
        group_over_quota=accountant.over_quota(submitter.group),
    )


def _position_sentence(fair: FairShareReport) -> str:
    if fair.position == 0:
        return (
            f"{fair.submitter}'s accounting group is over its quota and takes no surplus: "
            "it gets no slot until its group runs less."
        )
    line = (
        f"In fair share, {fair.submitter} is {fair.position} of {fair.competing} submitter(s) "
        f"with idle jobs (effective priority {fair.effective_priority:.2f}"
        f" = real {fair.real_priority:.2f} x factor {fair.factor:g}; lower is better)"
    )
    if fair.ahead:
        line += "; ahead: " + ", ".join(fair.ahead)
    if fair.group_over_quota:
        line += "; its group is over quota, so it comes after every group under quota"
    return line + "."
