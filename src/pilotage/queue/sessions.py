"""Sessions inside running jobs (``exec-in-job``, ``ssh-to-job``): who may open one, and
the audit of every attempt.

Only a job's owner or an admin may open a session, and only in a job that is RUNNING
(so it has a claim and a pilot to relay it). Every attempt is one row of ``job_sessions``
(see the table's comments), granted or refused: a refusal is written in a transaction
of its own, so the refusal itself is never lost. A granted session goes ``waiting`` (for
its pilot to join), ``open`` (relayed), ``ended`` (with its exit, why it ended, and the
bytes it carried each way). The relay itself is :mod:`pilotage.api.relay`.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from pilotage.errors import BadInput, Conflict, Denied, NotFound, PilotageError
from pilotage.queue.history import Actor
from pilotage.queue.jobs import parse_job_ref
from pilotage.queue.states import JobState
from pilotage.store.tables import job_sessions, jobs

#: Bounds of a session's command: arguments, one argument, all of them (bytes of UTF-8).
MAX_ARGS = 256
MAX_ARG_BYTES = 4096
MAX_COMMAND_BYTES = 16 * 1024
_TERM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


@dataclass(frozen=True)
class SessionRequest:
    """What a user asks for: ``command`` (empty: an interactive shell), a terminal or not,
    its size and ``TERM``."""

    command: tuple[str, ...]
    tty: bool
    rows: int = 24
    cols: int = 80
    term: str = "dumb"

    @property
    def kind(self) -> str:
        """``exec`` (a command) or ``shell``."""
        return "exec" if self.command else "shell"

    @classmethod
    def parse(cls, command: list[str], tty: str, rows: str, cols: str, term: str) -> SessionRequest:
        """Check the request's parts (query parameters); BadInput naming the first bad one."""
        if len(command) > MAX_ARGS:
            raise BadInput(f"the command has {len(command)} arguments; at most {MAX_ARGS}")
        for arg in command:
            if "\0" in arg or len(arg.encode()) > MAX_ARG_BYTES:
                raise BadInput(
                    f"a command argument has a NUL byte or is longer than {MAX_ARG_BYTES} bytes"
                )
        if sum(len(a.encode()) for a in command) > MAX_COMMAND_BYTES:
            raise BadInput(f"the command is longer than {MAX_COMMAND_BYTES} bytes")
        if command and not command[0]:
            raise BadInput("the command's program name is empty")
        if tty not in ("0", "1"):
            raise BadInput(f"tty={tty[:20]!r}: use 0 or 1")
        size = []
        for name, text in (("rows", rows), ("cols", cols)):
            if not text.isdigit() or not 1 <= int(text) <= 1000:
                raise BadInput(f"{name}={text[:20]!r}: use a whole number from 1 to 1000")
            size.append(int(text))
        if not _TERM.match(term):
            raise BadInput(f"term={term[:20]!r} is not a terminal name (letters, digits, ._+-)")
        return cls(tuple(command), tty == "1", size[0], size[1], term)


@dataclass(frozen=True)
class Opened:
    """A granted session, waiting for its pilot."""

    session_id: str
    job: str
    owner: str
    claim_id: str
    pilot_id: str


@dataclass(frozen=True)
class Ending:
    """How a session ended: ``why`` (``exit``, ``job-ended``, ``limit``, ...), a sentence,
    the command's exit code if it ran to its end, and the bytes carried each way."""

    why: str
    reason: str
    exit_code: int | None
    bytes_in: int
    bytes_out: int


def _command_text(request: SessionRequest) -> str | None:
    return json.dumps(list(request.command)) if request.command else None


def open_session(
    conn: sa.Connection,
    actor: Actor,
    job: str,
    request: SessionRequest,
    now: float,
    *,
    open_now: int = 0,
    max_per_job: int = 1,
) -> Opened:
    """Check that ``actor`` may open ``request`` in ``job`` now; record it as waiting.

    BadInput (not one job's id), NotFound, Denied (neither its owner nor an admin) or
    Conflict (the job is not running, or has ``open_now`` sessions open, already
    ``max_per_job``), in that order.
    """
    ref = parse_job_ref(job)
    if ref.proc is None:
        raise BadInput(f"'{job}' names a cluster; name one job: CLUSTER.PROC, e.g. {ref}.0")
    row = conn.execute(
        sa.select(jobs.c.owner, jobs.c.state, jobs.c.claim_id, jobs.c.pilot_id).where(
            jobs.c.cluster_id == ref.cluster, jobs.c.proc_id == ref.proc
        )
    ).first()
    if row is None:
        raise NotFound(f"job {ref} does not exist")
    if not actor.admin and row.owner != actor.name:
        raise Denied(
            f"job {ref} belongs to {row.owner}, not {actor.name}: only a job's owner or an "
            "admin may open a session in it"
        )
    if row.state != JobState.RUNNING.value or row.claim_id is None:
        raise Conflict(
            f"job {ref} is {row.state}, not RUNNING: a session needs a running job "
            "(see 'pilotage q')"
        )
    if open_now >= max_per_job:
        raise Conflict(
            f"job {ref} already has {max_per_job} sessions open, the most one job may have; "
            "close one first"
        )
    session_id = secrets.token_hex(12)
    conn.execute(
        sa.insert(job_sessions).values(
            id=session_id, at=now, job_id=str(ref), owner=row.owner, caller=actor.name,
            admin=actor.admin, kind=request.kind, command=_command_text(request),
            tty=request.tty, state="waiting", claim_id=row.claim_id, pilot_id=row.pilot_id,
            bytes_in=0, bytes_out=0,
        )
    )  # fmt: skip
    return Opened(session_id, str(ref), row.owner, row.claim_id, row.pilot_id)


def record_refusal(
    conn: sa.Connection,
    actor: Actor,
    job: str,
    request: SessionRequest | None,
    error: PilotageError,
    now: float,
) -> None:
    """Record a refused attempt (in its own transaction: the caller's was rolled back)."""
    owner = None
    try:
        ref = parse_job_ref(job)
        if ref.proc is not None:
            owner = conn.execute(
                sa.select(jobs.c.owner).where(
                    jobs.c.cluster_id == ref.cluster, jobs.c.proc_id == ref.proc
                )
            ).scalar()
    except BadInput:
        pass
    conn.execute(
        sa.insert(job_sessions).values(
            id=secrets.token_hex(12), at=now, job_id=job[:32], owner=owner, caller=actor.name,
            admin=actor.admin, kind=request.kind if request else "unknown",
            command=_command_text(request) if request else None,
            tty=bool(request and request.tty), state="refused", ended_at=now,
            end_reason=f"{type(error).__name__}: {error.message}", bytes_in=0, bytes_out=0,
        )
    )  # fmt: skip


def join(conn: sa.Connection, session_id: str, claim_id: str, now: float) -> None:
    """The claim's pilot has joined a waiting session: it is open. Conflict otherwise."""
    done = conn.execute(
        sa.update(job_sessions)
        .where(
            job_sessions.c.id == session_id,
            job_sessions.c.claim_id == claim_id,
            job_sessions.c.state == "waiting",
        )
        .values(state="open", started_at=now)
    )
    if done.rowcount != 1:
        raise Conflict(f"session {session_id} of claim {claim_id} is not waiting for its pilot")


def end(conn: sa.Connection, session_id: str, ending: Ending, now: float) -> None:
    """Record how a waiting or open session ended."""
    conn.execute(
        sa.update(job_sessions)
        .where(job_sessions.c.id == session_id, job_sessions.c.state.in_(("waiting", "open")))
        .values(
            state="ended", ended_at=now, exit_code=ending.exit_code,
            end_reason=f"{ending.why}: {ending.reason}", bytes_in=ending.bytes_in,
            bytes_out=ending.bytes_out,
        )
    )  # fmt: skip


def list_sessions(
    conn: sa.Connection, actor: Actor, job: str | None, limit: int = 1000
) -> list[dict[str, Any]]:
    """The audit rows ``actor`` may see, newest last: an admin every one; a user those in
    their own jobs and those they asked for."""
    query = sa.select(job_sessions)
    if job is not None:
        query = query.where(job_sessions.c.job_id == str(parse_job_ref(job)))
    if not actor.admin:
        query = query.where(
            sa.or_(job_sessions.c.owner == actor.name, job_sessions.c.caller == actor.name)
        )
    rows = conn.execute(query.order_by(job_sessions.c.at.desc()).limit(limit)).all()
    return [_view(r) for r in reversed(rows)]


def _view(row: sa.Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": row.at,
        "job": row.job_id,
        "owner": row.owner,
        "caller": row.caller,
        "admin": row.admin,
        "kind": row.kind,
        "command": json.loads(row.command) if row.command else None,
        "tty": row.tty,
        "state": row.state,
        "claim_id": row.claim_id,
        "pilot_id": row.pilot_id,
        "started_at": row.started_at,
        "ended_at": row.ended_at,
        "exit_code": row.exit_code,
        "end_reason": row.end_reason,
        "bytes_in": row.bytes_in,
        "bytes_out": row.bytes_out,
    }
