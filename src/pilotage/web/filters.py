"""The pages' query strings, read at the edge: each value checked, each refusal a sentence
that names the field and says what it takes. Pure functions, no I/O.

Filters live in the URL so every view can be shared as a link.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pilotage.errors import BadInput
from pilotage.queue.states import JobState

#: A user name as the pool knows them: a Unix name, or a token subject (a DN has '/').
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@=/,:+ -]{0,511}$")
_SITE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$")
_BATCH = re.compile(r"^[^\x00-\x1f]{1,256}$")

#: Time windows of the overview's plots: seconds, and the width of one point.
WINDOWS = {"1h": (3600, 60), "6h": (6 * 3600, 300), "24h": (86400, 900)}

#: How the accounting page may group usage.
GROUPINGS = ("user", "group", "site", "day", "final_user")

PAGE_SIZE = 50
MAX_PAGE = 100_000


def _one(query: Mapping[str, str], name: str) -> str | None:
    value = query.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def name(query: Mapping[str, str], field: str) -> str | None:
    """A user name filter (or none)."""
    value = _one(query, field)
    if value is not None and not _NAME.match(value):
        raise BadInput(f"{field}: {value[:60]!r} is not a user name")
    return value


def site(query: Mapping[str, str], field: str = "site") -> str | None:
    """A site name filter (or none)."""
    value = _one(query, field)
    if value is not None and not _SITE.match(value):
        raise BadInput(f"{field}: {value[:60]!r} is not a site name (letters, digits, . _ : -)")
    return value


def whole(query: Mapping[str, str], field: str, low: int, high: int) -> int | None:
    """A whole number in [low, high] (or none)."""
    value = _one(query, field)
    if value is None:
        return None
    if not re.fullmatch(r"-?\d{1,12}", value):
        raise BadInput(f"{field}: {value[:60]!r} is not a whole number")
    number = int(value)
    if not low <= number <= high:
        raise BadInput(f"{field}: {number} is out of range; give {low} to {high}")
    return number


def page_number(query: Mapping[str, str]) -> int:
    """The page of a paged table, from 1."""
    return whole(query, "page", 1, MAX_PAGE) or 1


def states(query: Mapping[str, str], allowed: tuple[JobState, ...]) -> tuple[JobState, ...]:
    """A state filter among ``allowed`` (all of them when absent)."""
    value = _one(query, "state")
    if value is None:
        return allowed
    try:
        state = JobState(value.upper())
    except ValueError:
        state = None
    if state not in allowed:
        names = ", ".join(s.value for s in allowed)
        raise BadInput(f"state: {value[:30]!r} is not one of {names}")
    return (state,)


def batch(query: Mapping[str, str]) -> str | None:
    """A batch name filter (``JobBatchName``)."""
    value = _one(query, "batch")
    if value is not None and not _BATCH.match(value):
        raise BadInput("batch: a batch name has no control characters and at most 256 letters")
    return value


def moment(query: Mapping[str, str], field: str, *, end_of_day: bool = False) -> float | None:
    """A date (``2026-12-01``) or date and time (``2026-12-01T13:30``) in UTC, as epoch
    seconds; a bare date as an upper bound means the end of that day."""
    value = _one(query, field)
    if value is None:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise BadInput(
            f"{field}: {value[:40]!r} is not a date; write 2026-12-01 or 2026-12-01T13:30 (UTC)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    seconds = parsed.timestamp()
    if end_of_day and len(value) == 10:
        seconds += 86400
    return seconds


def time_range(query: Mapping[str, str]) -> tuple[float | None, float | None]:
    """``since`` and ``until`` (until exclusive), checked to be in order."""
    since = moment(query, "since")
    until = moment(query, "until", end_of_day=True)
    if since is not None and until is not None and until <= since:
        raise BadInput("until: the end of the time range must come after its start (since)")
    return since, until


def window(query: Mapping[str, str]) -> str:
    """The overview's plot window: 1h (default), 6h or 24h."""
    value = _one(query, "window") or "1h"
    if value not in WINDOWS:
        raise BadInput(f"window: {value[:20]!r} is not one of {', '.join(WINDOWS)}")
    return value


def grouping(query: Mapping[str, str]) -> str:
    """How the accounting page groups usage."""
    value = _one(query, "by") or "user"
    if value not in GROUPINGS:
        raise BadInput(f"by: {value[:20]!r} is not one of {', '.join(GROUPINGS)}")
    return value


@dataclass(frozen=True)
class HistoryFilter:
    """What the history page searches for."""

    user: str | None = None
    site: str | None = None
    exit_code: int | None = None
    since: float | None = None
    until: float | None = None

    @classmethod
    def read(cls, query: Mapping[str, str]) -> HistoryFilter:
        since, until = time_range(query)
        return cls(
            user=name(query, "user"),
            site=site(query),
            exit_code=whole(query, "exit", 0, 255),
            since=since,
            until=until,
        )
