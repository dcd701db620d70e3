"""The job queue as users see it: submit a cluster, list jobs, hold, release, remove.

Functions take an open transaction (``sa.Connection``) so the API decides its bounds.
A user sees and changes only their own jobs; an admin sees and changes all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from pilotage.errors import BadInput, Conflict, Denied, NotFound
from pilotage.queue import history
from pilotage.queue.history import Actor
from pilotage.queue.jobad import (
    NOTIFICATION,
    build_job_ad,
    check_accounting,
    check_spec_expressions,
)
from pilotage.queue.spec import JobSpec
from pilotage.queue.states import HoldCode, JobState, Trigger, transition
from pilotage.store.engine import note
from pilotage.store.tables import clusters, job_events, jobs, sandboxes

JOB_REF = re.compile(r"^(\d{1,18})(?:\.(\d{1,9}))?$")


@dataclass(frozen=True)
class JobRef:
    """``cluster`` (every job of it) or ``cluster.proc``."""

    cluster: int
    proc: int | None = None

    def __str__(self) -> str:
        return str(self.cluster) if self.proc is None else f"{self.cluster}.{self.proc}"


def parse_job_ref(text: str) -> JobRef:
    """Parse ``12`` or ``12.3``; anything else is bad input."""
    match = JOB_REF.match(text.strip())
    if not match:
        raise BadInput(f"'{text}' is not a job id; use CLUSTER or CLUSTER.PROC, e.g. 12 or 12.3")
    proc = match.group(2)
    return JobRef(int(match.group(1)), None if proc is None else int(proc))


def open_cluster(conn: sa.Connection, actor: Actor, now: float) -> int:
    """Allocate a cluster id for ``actor``; its jobs arrive with :func:`commit_cluster`."""
    result = conn.execute(
        sa.insert(clusters).values(owner=actor.name, status="open", created_at=now, num_jobs=0)
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def commit_cluster(
    conn: sa.Connection,
    cluster_id: int,
    actor: Actor,
    specs: Sequence[JobSpec],
    now: float,
    *,
    accounting_groups: Mapping[str, Collection[str]] | None = None,
) -> int:
    """Store every job of an open cluster at once, IDLE. Returns the number of jobs.

    ``accounting_groups`` maps each group to the users who may use it; with none, no
    job may name an accounting group.
    """
    accounting_groups = accounting_groups or {}
    row = conn.execute(sa.select(clusters).where(clusters.c.id == cluster_id)).first()
    if row is None:
        raise NotFound(f"cluster {cluster_id} does not exist")
    if row.owner != actor.name:
        raise Denied(f"cluster {cluster_id} belongs to {row.owner}, not {actor.name}")
    if row.status != "open":
        raise Conflict(f"cluster {cluster_id} already has its jobs; submit a new cluster")
    digests = {s.input_sandbox for s in specs if s.input_sandbox is not None}
    if digests:
        known = conn.execute(
            sa.select(sandboxes.c.digest, sandboxes.c.owner).where(sandboxes.c.digest.in_(digests))
        ).all()
        owned = {d for d, owner in known if owner == actor.name}
        missing = sorted(digests - owned)
        if missing:
            raise BadInput(f"input sandbox {missing[0]} was not uploaded by {actor.name}")
    rows = []
    for proc_id, spec in enumerate(specs):
        check_spec_expressions(spec)
        check_accounting(spec, actor.name, accounting_groups)
        rows.append(
            {
                "cluster_id": cluster_id,
                "proc_id": proc_id,
                "owner": actor.name,
                "state": JobState.IDLE.value,
                "spec": spec.model_dump_json(),
                "ad": build_job_ad(
                    spec, cluster_id=cluster_id, proc_id=proc_id, owner=actor.name, qdate=now
                ),
                "request_cpus": spec.request_cpus,
                "request_memory_mb": spec.request_memory_mb,
                "request_disk_mb": spec.request_disk_mb,
                "request_gpus": spec.request_gpus,
                "priority": spec.priority,
                "acct_group": spec.accounting_group,
                "notification": NOTIFICATION.get(spec.notification or "never") or None,
                "qdate": now,
                "entered_state_at": now,
                "attempts": 0,
            }
        )
    conn.execute(sa.insert(jobs), rows)
    note(conn, history.IDLE_NOTE, len(rows))
    ids = conn.execute(sa.select(jobs.c.id).where(jobs.c.cluster_id == cluster_id)).scalars()
    conn.execute(
        sa.insert(job_events),
        [
            {
                "job_id": job_id,
                "at": now,
                "from_state": None,
                "to_state": JobState.IDLE.value,
                "trigger": "submit",
                "actor": actor.name,
                "reason": None,
                "claim_id": None,
                "pilot_id": None,
            }
            for job_id in ids
        ],
    )
    conn.execute(
        sa.update(clusters)
        .where(clusters.c.id == cluster_id)
        .values(status="committed", num_jobs=len(rows))
    )
    return len(rows)


def _ref_filter(ref: JobRef) -> sa.ColumnElement[bool]:
    cond = jobs.c.cluster_id == ref.cluster
    if ref.proc is not None:
        cond = sa.and_(cond, jobs.c.proc_id == ref.proc)
    return cond


def select_jobs(
    conn: sa.Connection,
    actor: Actor,
    *,
    refs: Sequence[JobRef] = (),
    states: Sequence[JobState] = (),
    owner: str | None = None,
    limit: int = 100_000,
) -> list[sa.Row[Any]]:
    """Jobs visible to ``actor``, oldest first. Naming someone else's job is denied."""
    query = sa.select(jobs)
    if refs:
        query = query.where(sa.or_(*(_ref_filter(r) for r in refs)))
    if states:
        query = query.where(jobs.c.state.in_([s.value for s in states]))
    if owner is not None:
        query = query.where(jobs.c.owner == owner)
    if not actor.admin:
        if owner is not None and owner != actor.name:
            raise Denied(f"{actor.name} may not list the jobs of {owner}")
        if refs:
            others = conn.execute(
                sa.select(jobs.c.cluster_id, jobs.c.proc_id, jobs.c.owner)
                .where(sa.or_(*(_ref_filter(r) for r in refs)), jobs.c.owner != actor.name)
                .limit(1)
            ).first()
            if others is not None:
                raise Denied(
                    f"job {others.cluster_id}.{others.proc_id} belongs to {others.owner}, "
                    f"not {actor.name}"
                )
        query = query.where(jobs.c.owner == actor.name)
    return list(conn.execute(query.order_by(jobs.c.id).limit(limit)).all())


def require_jobs(conn: sa.Connection, actor: Actor, refs: Sequence[JobRef]) -> list[sa.Row[Any]]:
    """Like :func:`select_jobs` for explicit ids, but an id that matches nothing is NotFound."""
    rows = select_jobs(conn, actor, refs=refs)
    for ref in refs:
        if not any(
            r.cluster_id == ref.cluster and (ref.proc is None or r.proc_id == ref.proc)
            for r in rows
        ):
            raise NotFound(f"job {ref} does not exist")
    return rows


ACTIONS = {"hold": Trigger.HOLD, "release": Trigger.RELEASE, "remove": Trigger.REMOVE}


@dataclass(frozen=True)
class ActionResult:
    """What one action did to one job."""

    job_id: str
    ok: bool
    state: str
    message: str


def act(
    conn: sa.Connection,
    actor: Actor,
    action: str,
    refs: Sequence[JobRef],
    *,
    reason: str | None,
    now: float,
) -> list[ActionResult]:
    """Hold, release or remove jobs. A job in a state that does not allow it is reported,
    not changed; the others still are."""
    trigger = ACTIONS.get(action)
    if trigger is None:
        raise BadInput(f"unknown action '{action}'; use hold, release or remove")
    if not refs:
        raise BadInput("name at least one job (CLUSTER or CLUSTER.PROC)")
    results = []
    for row in require_jobs(conn, actor, refs):
        name = f"{row.cluster_id}.{row.proc_id}"
        current = JobState(row.state)
        try:
            change = transition(current, trigger)
        except Conflict as exc:
            results.append(ActionResult(name, False, current.value, exc.message))
            continue
        why = reason or f"{action} by {actor.name}"
        values: dict[str, Any] = {}
        if trigger is Trigger.HOLD:
            values = {"hold_reason": why, "hold_code": int(HoldCode.USER)}
        elif trigger is Trigger.RELEASE:
            values = {"hold_reason": None, "hold_code": None, "attempts": 0}
        else:
            values = {"completed_at": now}
        ok = history.apply(
            conn,
            row.id,
            change,
            actor=actor.name,
            now=now,
            values=values,
            reason=why,
            expect_claim=row.claim_id if current is JobState.RUNNING else None,
        )
        if ok and current is JobState.RUNNING and row.claim_id:
            history.end_claim(conn, row.claim_id, reason=why, now=now)
        state = change.to_state.value if ok else current.value
        message = "done" if ok else "the job changed state meanwhile; try again"
        results.append(ActionResult(name, ok, state, message))
    return results


def job_events_of(conn: sa.Connection, actor: Actor, ref: JobRef) -> list[sa.Row[Any]]:
    """The event history of one job."""
    if ref.proc is None:
        raise BadInput(f"name one job as CLUSTER.PROC, not the cluster {ref}")
    (row,) = require_jobs(conn, actor, [ref])
    query = sa.select(job_events).where(job_events.c.job_id == row.id).order_by(job_events.c.id)
    return list(conn.execute(query).all())


def job_view(row: sa.Row[Any]) -> dict[str, Any]:
    """The public view of a job row (what ``q --json`` prints)."""
    spec = json.loads(row.spec)
    return {
        "id": f"{row.cluster_id}.{row.proc_id}",
        "cluster": row.cluster_id,
        "proc": row.proc_id,
        "owner": row.owner,
        "state": row.state,
        "exit_code": row.exit_code,
        "exit_signal": row.exit_signal,
        "hold_reason": row.hold_reason,
        "hold_code": row.hold_code,
        "hold_subcode": _hold_subcode(row.ad) if row.hold_code is not None else None,
        "site": row.site,
        "pilot": row.pilot_id,
        "attempts": row.attempts,
        "qdate": row.qdate,
        "entered_state_at": row.entered_state_at,
        "completed_at": row.completed_at,
        "wall_s": row.wall_s,
        "cpu_s": row.cpu_s,
        "max_rss_kb": row.max_rss_kb,
        "request_cpus": row.request_cpus,
        "request_memory_mb": row.request_memory_mb,
        "request_disk_mb": row.request_disk_mb,
        "executable": spec["executable"],
        "arguments": spec["arguments"],
        "iwd": spec["iwd"],
        "log": spec.get("log"),
        "transfer_output_remaps": spec.get("transfer_output_remaps") or {},
        "has_output": row.output_sandbox is not None,
    }


_SUBCODE = re.compile(r"\bHoldReasonSubCode = (\d+)")


def _hold_subcode(ad_text: str) -> int:
    """HoldReasonSubCode of a held job (set in its ad by its own policy; 0 otherwise)."""
    match = _SUBCODE.search(ad_text)
    return int(match.group(1)) if match else 0
