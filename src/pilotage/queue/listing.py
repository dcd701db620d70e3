"""Listing jobs a page at a time, in job id order, without holding the queue in memory.

A listing walks the jobs by keyset: each page is "the next N jobs after job C.P" in job
id order (cluster, then proc), read in a short transaction of its own, so listing a
million jobs holds one page at a time and no transaction stays open while a slow client
reads. A page's cursor is the id of its last job. A job that changes state between two
pages is listed once or not at all, never twice.

Each state is one run of the index ``ix_jobs_state_cluster`` (state, cluster, proc,
owner); a page reads the runs of the states asked for and merges them, so listing the
queue (idle, running, held) never reads a row of history, and finds a page's jobs
before it reads their rows.

Visibility is part of every page's query: a user's listing has their name as its owner,
whatever cursor they pass.
"""

from __future__ import annotations

import heapq
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from pilotage.errors import Denied, NotFound, UserError
from pilotage.queue.history import Actor
from pilotage.queue.job_lines import STATE, read_rows
from pilotage.queue.jobs import JobRef
from pilotage.queue.states import JobState
from pilotage.store.engine import Store
from pilotage.store.tables import jobs

#: Jobs read per transaction while streaming a listing.
CHUNK = 1000
#: The largest page a caller may ask for (``limit``).
MAX_PAGE = 10_000

#: A job's place in a listing: (cluster, proc).
Position = tuple[int, int]
#: A job's place and its row's key: (cluster, proc, id).
Place = tuple[int, int, int]

_CURSOR = re.compile(r"^(\d{1,18})\.(\d{1,9})$")


@dataclass(frozen=True)
class Listing:
    """Which jobs a listing shows, the caller's visibility applied."""

    #: Only this owner's jobs; ``None`` (admins only): everyone's.
    owner: str | None
    states: tuple[JobState, ...] = tuple(JobState)
    refs: tuple[JobRef, ...] = ()

    @classmethod
    def visible_to(
        cls,
        actor: Actor,
        *,
        owner: str | None = None,
        states: Sequence[JobState] = (),
        refs: Sequence[JobRef] = (),
    ) -> Listing:
        """The listing ``actor`` asked for: a user's own jobs only (another owner named
        is denied), an admin's of ``owner`` or of everyone. No states: every state."""
        if not actor.admin:
            if owner is not None and owner != actor.name:
                raise Denied(f"{actor.name} may not list the jobs of {owner}")
            owner = actor.name
        return cls(owner, tuple(dict.fromkeys(states)) or tuple(JobState), tuple(refs))

    def conditions(self) -> list[sa.ColumnElement[bool]]:
        conds: list[sa.ColumnElement[bool]] = []
        if self.owner is not None:
            conds.append(jobs.c.owner == self.owner)
        if self.refs:
            conds.append(sa.or_(*(_ref_filter(r) for r in self.refs)))
        return conds


def parse_cursor(text: str) -> Position:
    """A cursor as a page gave it (the id of its last job), or a clear refusal (400)."""
    match = _CURSOR.match(text)
    if match is None:
        raise UserError(
            f"cursor {text[:40]!r} is not one a page gave (the id of its last job, "
            "CLUSTER.PROC): pass the previous page's next cursor unchanged, or none to "
            "start from the first job"
        )
    return int(match.group(1)), int(match.group(2))


def format_cursor(position: Position) -> str:
    return f"{position[0]}.{position[1]}"


def check_refs(conn: sa.Connection, actor: Actor, refs: Sequence[JobRef]) -> None:
    """Each job named exists (in any state), and a user named only their own."""
    if not refs:
        return
    if not actor.admin:
        other = conn.execute(
            sa.select(jobs.c.cluster_id, jobs.c.proc_id, jobs.c.owner)
            .where(sa.or_(*(_ref_filter(r) for r in refs)), jobs.c.owner != actor.name)
            .limit(1)
        ).first()
        if other is not None:
            raise Denied(
                f"job {other.cluster_id}.{other.proc_id} belongs to {other.owner}, not {actor.name}"
            )
    for ref in refs:
        if conn.execute(sa.select(jobs.c.id).where(_ref_filter(ref)).limit(1)).first() is None:
            raise NotFound(f"job {ref} does not exist")


def positions(
    conn: sa.Connection,
    listing: Listing,
    after: Position | None,
    count: int,
    upto: Position | None = None,
) -> list[Place]:
    """The places of the next ``count`` jobs after ``after`` (up to ``upto``, included),
    read from the index alone (on SQLite; PostgreSQL reads the row's id too)."""
    key = sa.tuple_(jobs.c.cluster_id, jobs.c.proc_id)
    conds = listing.conditions()
    if after is not None:
        conds.append(key > sa.tuple_(*after))
    if upto is not None:
        conds.append(key <= sa.tuple_(*upto))
    runs = []
    for state in listing.states:
        query = (
            sa.select(jobs.c.cluster_id, jobs.c.proc_id, jobs.c.id)
            .where(jobs.c.state == state.value, *conds)
            .order_by(jobs.c.cluster_id, jobs.c.proc_id)
            .limit(count)
        )
        runs.append([(int(c), int(p), int(i)) for c, p, i in conn.execute(query)])
    return list(itertools.islice(heapq.merge(*runs), count))


def rows_at(conn: sa.Connection, listing: Listing, places: Sequence[Place]) -> list[Any]:
    """The rows (:func:`~pilotage.queue.job_lines.read_rows`) of the jobs at ``places``, in
    order; a job that left the listing's states since its place was read is left out."""
    found = read_rows(conn, [p[2] for p in places])
    wanted = {s.value for s in listing.states}
    kept = [r for r in found if r[STATE] in wanted]
    kept.sort()
    return kept


def chunks(
    store: Store,
    listing: Listing,
    after: Position | None,
    *,
    upto: Position | None = None,
    cap: int | None = None,
) -> Iterator[list[Any]]:
    """The rows after ``after`` (up to ``upto``; at most ``cap`` jobs), a chunk per read
    transaction."""
    left = cap
    while left is None or left > 0:
        count = CHUNK if left is None else min(CHUNK, left)
        with store.read() as conn:
            places = positions(conn, listing, after, count, upto)
            rows = rows_at(conn, listing, places)
        if rows:
            yield rows
        if len(places) < count:
            return
        after = places[-1][:2]
        if left is not None:
            left -= count


def _ref_filter(ref: JobRef) -> sa.ColumnElement[bool]:
    cond = jobs.c.cluster_id == ref.cluster
    if ref.proc is not None:
        cond = sa.and_(cond, jobs.c.proc_id == ref.proc)
    return cond
