"""Entries whose switch keeps failing for a passing reason: no pilots there for a while.

A pilot whose switch answered 202 through all its retries (the site's authorization
service down or overloaded; seed 000 §4.5) gives its job back, and the server records a
validation report ``switch_transient`` for the pilot's entry (queue/vacate.py). Sending
more pilots there only loads the failing service and strands jobs for a while, so:

    ``reports`` such reports of one entry within the last ``window_s`` seconds, none older
    than its newest successful validation report, and the entry's pressure is 0,

until they age out of the window (or a pilot there validates again). Pure: the frontend
service reads the reports and zeroes the entry's demand.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: The reason a pilot's give-back after repeated 202s is reported with.
TRANSIENT_REASON = "switch_transient"


@dataclass(frozen=True)
class Report:
    """What the rule needs of one validation report."""

    entry: str
    at: float
    ok: bool
    reason: str


@dataclass(frozen=True)
class HealthRule:
    """``[frontend]`` ``transient_reports`` within ``transient_window_s``."""

    reports: int = 3
    window_s: float = 900.0


def paused_entries(reports: Iterable[Report], now: float, rule: HealthRule) -> dict[str, int]:
    """The entries to send no pilots to now, each with its count of recent 202 reports."""
    since: dict[str, float] = {}
    recent: dict[str, list[float]] = {}
    for r in reports:
        if r.ok:
            since[r.entry] = max(since.get(r.entry, r.at), r.at)
        elif r.reason == TRANSIENT_REASON and now - r.at <= rule.window_s:
            recent.setdefault(r.entry, []).append(r.at)
    paused = {}
    for entry, times in recent.items():
        count = sum(1 for at in times if at > since.get(entry, float("-inf")))
        if rule.reports > 0 and count >= rule.reports:
            paused[entry] = count
    return paused
