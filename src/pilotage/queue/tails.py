"""The end of running jobs' stdout, for ``pilotage tail`` (``condor_tail``).

A job submitted with ``stream_output = true`` has its agent send, every few seconds, what
its stdout gained (pilot/streaming.py): ``offset`` (bytes of stdout before the piece)
and the piece, at most :data:`MAX_PIECE` bytes. The server keeps the last
:data:`KEPT_BYTES` of each running job's stdout, in one row per job; a piece that does
not follow what is kept (the agent skipped ahead, or a new claim runs the job) replaces
it. The rows of jobs that no longer run are deleted a few at a time as pieces arrive.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from pilotage.errors import BadInput, Conflict
from pilotage.queue.history import Actor
from pilotage.queue.jobs import JobRef, require_jobs
from pilotage.queue.states import JobState
from pilotage.store.tables import job_tails, jobs

#: What the server keeps of each job's stdout, and the most one piece may carry.
KEPT_BYTES = 64 * 1024
MAX_PIECE = 64 * 1024
#: Rows of jobs no longer running deleted with each piece received, once this old (so
#: ``tail -f`` still gets what a job wrote last).
_SWEEP = 16
_KEEP_ENDED_S = 60.0


def record(
    conn: sa.Connection, job_id: int, claim_id: str, offset: int, data: bytes, now: float
) -> None:
    """Keep a piece of a running job's stdout sent by the agent holding ``claim_id``."""
    if len(data) > MAX_PIECE:
        raise BadInput(f"a stdout piece holds at most {MAX_PIECE} bytes, not {len(data)}")
    if offset < 0:
        raise BadInput(f"offset must be >= 0, not {offset}")
    row = conn.execute(sa.select(job_tails).where(job_tails.c.job_id == job_id)).first()
    start, kept = offset, data
    if row is not None and row.claim_id == claim_id and row.offset <= offset:
        end = row.offset + len(row.data)
        if offset <= end:  # follows (or overlaps) what is kept
            start, kept = row.offset, bytes(row.data[: offset - row.offset]) + data
    if len(kept) > KEPT_BYTES:
        start, kept = start + len(kept) - KEPT_BYTES, kept[-KEPT_BYTES:]
    values = {"claim_id": claim_id, "offset": start, "data": kept, "updated_at": now}
    if row is None:
        conn.execute(sa.insert(job_tails).values(job_id=job_id, **values))
    else:
        conn.execute(sa.update(job_tails).where(job_tails.c.job_id == job_id).values(**values))
    _sweep(conn, now)


def _sweep(conn: sa.Connection, now: float) -> None:
    gone_or_moved = sa.or_(
        jobs.c.state != JobState.RUNNING.value, jobs.c.claim_id != job_tails.c.claim_id
    )
    stale = (
        sa.select(job_tails.c.job_id)
        .join(jobs, jobs.c.id == job_tails.c.job_id)
        .where(gone_or_moved, job_tails.c.updated_at < now - _KEEP_ENDED_S)
        .limit(_SWEEP)
    )
    gone = list(conn.execute(stale).scalars())
    if gone:
        conn.execute(sa.delete(job_tails).where(job_tails.c.job_id.in_(gone)))


def view(conn: sa.Connection, actor: Actor, ref: JobRef, *, ended: bool = False) -> dict[str, Any]:
    """The end of a running job's stdout as its owner (or an admin) may see it; with
    ``ended``, also what a job that just ended wrote last (for ``tail -f``).

    :class:`Conflict` says why there is none: the job is not running, or does not
    stream its output.
    """
    if ref.proc is None:
        raise BadInput(f"name one job as CLUSTER.PROC, not the cluster {ref}")
    (job,) = require_jobs(conn, actor, [ref])
    spec = json.loads(job.spec)
    last = conn.execute(sa.select(job_tails).where(job_tails.c.job_id == job.id)).first()
    if ended and last is not None and job.state != JobState.RUNNING.value:
        return _answer(ref, job.state, last)
    if job.state != JobState.RUNNING.value:
        hint = "its output is in its sandbox: pilotage fetch" if job.output_sandbox else ""
        raise Conflict(f"job {ref} is {job.state}, not running" + (f"; {hint}" if hint else ""))
    if not spec.get("stream_output") or not spec.get("output"):
        raise Conflict(
            f"job {ref} does not stream its output: submit it with output = FILE and "
            "stream_output = true to follow it with pilotage tail"
        )
    return _answer(ref, job.state, last if last and last.claim_id == job.claim_id else None)


def _answer(ref: JobRef, state: str, row: Any) -> dict[str, Any]:
    data = b"" if row is None else bytes(row.data)
    return {
        "id": str(ref),
        "state": state,
        "offset": 0 if row is None else row.offset,
        "size": 0 if row is None else row.offset + len(data),
        "updated_at": None if row is None else row.updated_at,
        "text": data.decode("utf-8", errors="replace"),
    }
