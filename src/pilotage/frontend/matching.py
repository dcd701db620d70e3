"""Which entries each autocluster of idle jobs could run at, and the demand per entry.

The frontend's half of matchmaking (seed 001 §2.2: "glideins will be sent to all the
CEs that match at least one user job"). An entry's ad describes a would-be pilot's
slot (:meth:`pilotage.factory.entries.Entry.ad`), so a job's ``Requirements`` read it
as they read a slot. Pure computation, no I/O.

Cost: one cycle looks at every (autocluster, entry) pair, so the work is kept out of
that product:

- resources and wall time are checked in Python, once per distinct request, into a
  bitmask of the entries that fit (an ``int``, one bit per entry);
- ``Requirements`` are evaluated once per distinct (expression, the job values it
  reads, the entry values it reads): entries that agree on every attribute an
  expression reads share one evaluation, and results are memoised across cycles (the
  key holds everything the result depends on);
- an autocluster's idle jobs are shared evenly among the entries it matches, and turned
  into pilots by how many of its jobs fit in one pilot there.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pilotage.matchmaking.classads import hashable_value, new_ad, parse_expr, references

#: Bound on memoised evaluations (a hostile mix of expressions cannot grow it forever).
MAX_MEMO = 200_000


@dataclass(frozen=True)
class JobGroup:
    """One autocluster as the frontend sees it: its jobs are alike for matching."""

    id: int
    idle: int
    cpus: int = 1
    memory_mb: int = 1024
    disk_mb: int = 1024
    gpus: int = 0
    max_wall_time_s: float = 3600.0
    #: The job's own ``Requirements`` (without the standard resource clauses).
    requirements: str = "true"
    #: The job attributes ``requirements`` may read (``MY.``), as ClassAd literals.
    attrs: Mapping[str, object] = field(default_factory=dict)
    #: The frontend group these jobs belong to.
    group: str = "main"


@dataclass
class _Entry:
    name: str
    ad: Any
    values: dict[str, Hashable]
    cpus: int
    memory_mb: int
    disk_mb: int
    gpus: int
    ttl_s: float


def _number(attrs: Mapping[str, object], key: str, default: float) -> float:
    value = attrs.get(key, default)
    return (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default
    )


class Matcher:
    """Matches job groups to entries; keep one across cycles for its memo."""

    def __init__(self) -> None:
        self._memo: dict[tuple[Hashable, ...], bool] = {}
        self._parsed: dict[
            tuple[str, frozenset[str]], tuple[Any, frozenset[str], frozenset[str]]
        ] = {}
        self._job_ads: dict[tuple[str, tuple[tuple[str, Hashable], ...]], Any] = {}

    def _expression(
        self, text: str, job_attrs: frozenset[str]
    ) -> tuple[Any, frozenset[str], frozenset[str]]:
        """Parsed ``text`` and the (job, entry) attributes it reads, lower case.

        As in matchmaking, a name the job defines is the job's; any other is the entry's.
        """
        key = (text, job_attrs)
        found = self._parsed.get(key)
        if found is None:
            expr = parse_expr(text, "requirements")
            mine, theirs = references(new_ad(dict.fromkeys(job_attrs, 0)), expr)
            found = self._parsed[key] = (expr, mine, theirs)
        return found

    def demand(
        self, groups: Sequence[JobGroup], entry_ads: Mapping[str, Mapping[str, object]]
    ) -> dict[tuple[str, str], float]:
        """Idle demand in pilots per (frontend group, entry); pairs without demand absent."""
        entries = [_entry(name, attrs) for name, attrs in sorted(entry_ads.items())]
        fit_masks: dict[tuple[int, int, int, int, float], tuple[int, list[float]]] = {}
        req_masks: dict[tuple[str, tuple[Hashable, ...]], int] = {}
        partitions: dict[str, dict[tuple[Hashable, ...], int]] = {}
        by_mask: dict[tuple[str, int, tuple[int, int, int, int, float]], float] = {}
        for g in groups:
            if g.idle <= 0:
                continue
            request = (g.cpus, g.memory_mb, g.disk_mb, g.gpus, g.max_wall_time_s)
            fit = fit_masks.get(request)
            if fit is None:
                fit = fit_masks[request] = _fit(entries, request)
            if not fit[0]:
                continue
            lowered = {k.lower(): v for k, v in g.attrs.items()}
            expr, my_refs, their_refs = self._expression(g.requirements, frozenset(lowered))
            my_key = tuple(hashable_value(lowered.get(r)) for r in sorted(my_refs))
            mask = req_masks.get((g.requirements, my_key))
            if mask is None:
                part = partitions.get(g.requirements)
                if part is None:
                    part = partitions[g.requirements] = _partition(entries, sorted(their_refs))
                mask = 0
                job_ad = self._job_ad(g.requirements, lowered, my_refs)
                for values, members in part.items():
                    memo_key = (g.requirements, my_key, values)
                    ok = self._memo.get(memo_key)
                    if ok is None:
                        first = entries[(members & -members).bit_length() - 1]
                        ok = expr.eval(job_ad, first.ad) is True
                        if len(self._memo) >= MAX_MEMO:
                            self._memo.clear()
                        self._memo[memo_key] = ok
                    if ok:
                        mask |= members
                req_masks[(g.requirements, my_key)] = mask
            matched = fit[0] & mask
            if matched:
                slot = (g.group, matched, request)
                by_mask[slot] = by_mask.get(slot, 0.0) + g.idle
        result: dict[tuple[str, str], float] = {}
        for (group, matched, request), idle in by_mask.items():
            per_pilot = fit_masks[request][1]
            share = idle / matched.bit_count()
            bits = matched
            while bits:
                low = bits & -bits
                i = low.bit_length() - 1
                key = (group, entries[i].name)
                result[key] = result.get(key, 0.0) + share / per_pilot[i]
                bits ^= low
        return result

    def _job_ad(self, text: str, lowered: Mapping[str, object], my_refs: frozenset[str]) -> Any:
        values = tuple(sorted((r, hashable_value(lowered.get(r))) for r in my_refs))
        ad = self._job_ads.get((text, values))
        if ad is None:
            ad = new_ad({r: lowered.get(r) for r in my_refs})
            if len(self._job_ads) >= MAX_MEMO:
                self._job_ads.clear()
            self._job_ads[(text, values)] = ad
        return ad


def _entry(name: str, attrs: Mapping[str, object]) -> _Entry:
    lowered = {k.lower(): v for k, v in attrs.items()}
    return _Entry(
        name=name,
        ad=new_ad(attrs),
        values={k: hashable_value(v) for k, v in lowered.items()},
        cpus=int(_number(lowered, "cpus", 1)),
        memory_mb=int(_number(lowered, "memory", 0)),
        disk_mb=int(_number(lowered, "disk", 0)),
        gpus=int(_number(lowered, "gpus", 0)),
        ttl_s=_number(lowered, "timetolive", math.inf),
    )


def _fit(
    entries: list[_Entry], request: tuple[int, int, int, int, float]
) -> tuple[int, list[float]]:
    """Bitmask of the entries a request fits in, and jobs per pilot at each entry."""
    cpus, memory_mb, disk_mb, gpus, wall_s = request
    mask = 0
    per_pilot = [1.0] * len(entries)
    for i, e in enumerate(entries):
        fits = cpus <= e.cpus and memory_mb <= e.memory_mb and disk_mb <= e.disk_mb
        if fits and gpus <= e.gpus and wall_s <= e.ttl_s:
            mask |= 1 << i
            counts = [e.cpus // max(1, cpus)]
            if memory_mb:
                counts.append(e.memory_mb // memory_mb)
            if disk_mb:
                counts.append(e.disk_mb // disk_mb)
            if gpus:
                counts.append(e.gpus // gpus)
            per_pilot[i] = float(max(1, min(counts)))
    return mask, per_pilot


def _partition(entries: list[_Entry], names: list[str]) -> dict[tuple[Hashable, ...], int]:
    """Entries grouped by their values of ``names``: values -> bitmask of entries."""
    classes: dict[tuple[Hashable, ...], int] = {}
    missing = hashable_value(None)
    for i, e in enumerate(entries):
        key = tuple(e.values.get(n, missing) for n in names)
        classes[key] = classes.get(key, 0) | (1 << i)
    return classes
