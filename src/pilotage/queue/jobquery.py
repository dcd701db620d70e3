"""A job's whole ad as ``condor_q -l`` shows it, constraints over it, and ``qedit``.

The stored ad holds what the submitter asked for; the job's state lives in columns. The
whole ad adds the state under HTCondor's names (``JobStatus``, ``HoldReason``,
``ExitCode``, ``NumJobStarts``, ``RemoteWallClockTime``, ...), so ``-constraint``,
``-af`` and ``-l`` read the attributes HTCondor users already know.
"""

from __future__ import annotations

import json
from typing import Any

import classad2
import sqlalchemy as sa

from pilotage.errors import BadInput, Conflict
from pilotage.queue import policy
from pilotage.queue.history import Actor
from pilotage.queue.jobad import RESERVED, parse_expr
from pilotage.queue.jobs import JobRef, require_jobs
from pilotage.queue.states import JobState
from pilotage.store.tables import jobs

#: Attributes ``qedit`` may change besides the user's own ``+Attr`` ones: the policy and
#: presentation ones, which nothing else in the pool derives from.
EDITABLE = frozenset(
    a.lower()
    for a in (
        "Rank",
        "JobBatchName",
        "PeriodicHold",
        "PeriodicHoldReason",
        "PeriodicHoldSubCode",
        "PeriodicRelease",
        "PeriodicRemove",
        "OnExitHold",
        "OnExitHoldReason",
        "OnExitHoldSubCode",
        "OnExitRemove",
        "JobMaxRetries",
    )
)


def whole_ad(row: Any, now: float) -> Any:
    """The job's stored ad with its state added, as a ``classad2.ClassAd``."""
    ad = classad2.ClassAd(row.ad)
    for name, value in policy.runtime_attrs(row, now).items():
        ad[name] = value
    spec = json.loads(row.spec)
    ad["Iwd"] = spec["iwd"]
    for attr, key in (("Out", "output"), ("Err", "error"), ("In", "input"), ("UserLog", "log")):
        if spec.get(key):
            ad[attr] = spec[key]
    if row.exit_code is not None or row.exit_signal is not None:
        ad["ExitBySignal"] = row.exit_signal is not None
        ad["ExitCode"] = row.exit_code if row.exit_code is not None else 0
        if row.exit_signal is not None:
            ad["ExitSignal"] = row.exit_signal
    if row.cpu_s is not None:
        ad["RemoteUserCpu"] = float(row.cpu_s)
    if row.completed_at is not None:
        ad["CompletionDate"] = int(row.completed_at)
    if row.site:
        ad["MATCH_GLIDEIN_Site"] = row.site
    return ad


def parse_constraint(text: str) -> Any:
    """A ``-constraint`` expression, or :class:`BadInput` naming it."""
    return parse_expr(text, "constraint")


def matches(ad: Any, constraint: Any) -> bool:
    """Whether ``constraint`` is true for ``ad`` (undefined or an error is false)."""
    try:
        return constraint.eval(ad) is True
    except Exception:  # noqa: BLE001  (classad2 raises its own untyped exception)
        return False


def qedit(conn: sa.Connection, actor: Actor, ref: JobRef, name: str, value: str) -> list[str]:
    """Set attribute ``name`` to the expression ``value`` in the ads of idle jobs.

    Returns the ids edited. A job that is not idle, a name the pool sets, or a value
    that is not an expression is refused, and nothing is changed.
    """
    lower = name.lower()
    if lower in RESERVED and lower not in EDITABLE:
        raise BadInput(
            f"{name} is set by the pool and cannot be edited; edit your own attributes "
            "or the policy ones (PeriodicHold, OnExitRemove, Rank, JobBatchName, ...)"
        )
    expr = parse_expr(value, f"the value of {name}")
    rows = require_jobs(conn, actor, [ref])
    busy = [r for r in rows if r.state != JobState.IDLE.value]
    if busy:
        first = busy[0]
        raise Conflict(
            f"job {first.cluster_id}.{first.proc_id} is {first.state}: only idle jobs can be "
            "edited; hold it, or wait for it to leave the queue"
        )
    edited = []
    for row in rows:
        ad = classad2.ClassAd(row.ad)
        ad[name] = expr
        guard = sa.and_(jobs.c.id == row.id, jobs.c.state == JobState.IDLE.value)
        if conn.execute(sa.update(jobs).where(guard).values(ad=str(ad))).rowcount != 1:
            raise Conflict(f"job {row.cluster_id}.{row.proc_id} started meanwhile; try again")
        edited.append(f"{row.cluster_id}.{row.proc_id}")
    return edited
