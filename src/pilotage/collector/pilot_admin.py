"""What an admin (or a factory) does to pilots: list, drain, resume, retire, kill.

* **drain**: the pilot gets no new claim (the server refuses it, :func:`pilotage.queue.
  claims.dispatch`), its running jobs finish, and it hears ``drain`` in its heartbeat
  and work answers, so it stops asking. It stays in the pool until **resume**, or
  leaves at its idle timeout.
* **retire**: as drain, and the pilot leaves once its running jobs have ended. This is
  what a factory asks for when its frontends want no more pilots at an entry
  (:func:`retire_entry`): pilots end their jobs rather than being killed.
* **kill**: every live claim of the pilot ends now, its jobs go back to IDLE (trigger
  ``pilot_killed``), the pilot hears the stop orders in its next heartbeat, kills the
  jobs and, retired, leaves.

Each action applies to active pilots only; naming a pilot that has left is a
:class:`~pilotage.errors.Conflict`, an unknown one :class:`~pilotage.errors.NotFound`,
and nothing is changed then.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from pilotage.collector.pilots import ENTRY_TOKEN_PREFIX, entry_token_subject
from pilotage.errors import Conflict, NotFound
from pilotage.queue import endings
from pilotage.queue.states import Trigger
from pilotage.store.engine import note
from pilotage.store.tables import claims, pilots

ACTIONS = ("drain", "resume", "retire", "kill")
#: The note (:func:`pilotage.store.engine.note`) of a transaction that drained, resumed,
#: retired or killed pilots: their requests for work held open answer at once.
PILOTS_NOTE = "pilots-changed"


def _entry_of(row: Any) -> str | None:
    if row.subject.startswith(ENTRY_TOKEN_PREFIX):
        return str(row.subject[len(ENTRY_TOKEN_PREFIX) :].partition("/")[0])
    attrs = json.loads(row.ad).get("attrs", {})
    value = next((v for k, v in attrs.items() if k.lower() == "entryname"), None)
    return str(json.loads(value)) if isinstance(value, str) and value.startswith('"') else None


def list_pilots(conn: sa.Connection, *, include_gone: bool = False) -> list[dict[str, Any]]:
    """Pilots with their state, flags and running jobs, oldest first."""
    query = sa.select(pilots).order_by(pilots.c.started_at, pilots.c.id)
    if not include_gone:
        query = query.where(pilots.c.state == "active")
    running: dict[str, int] = dict(
        conn.execute(
            sa.select(claims.c.pilot_id, sa.func.count())
            .where(claims.c.state == "active")
            .group_by(claims.c.pilot_id)
        ).all()
    )
    out = []
    for row in conn.execute(query):
        if row.state != "active":
            flag = row.state
        elif row.retire:
            flag = "retiring"
        elif row.drain:
            flag = "draining" if running.get(row.id) else "drained"
        else:
            flag = "active"
        out.append(
            {
                "pilot": row.id,
                "name": row.name,
                "site": row.site,
                "host": row.host,
                "entry": _entry_of(row),
                "subject": row.subject,
                "state": flag,
                "jobs": int(running.get(row.id, 0)),
                "cpus": row.cpus,
                "memory_mb": row.memory_mb,
                "started_at": row.started_at,
                "last_seen_at": row.last_seen_at,
                "expires_at": row.expires_at,
                "exit_reason": row.exit_reason,
            }
        )
    return out


def _targets(conn: sa.Connection, ids: list[str], every: bool) -> list[Any]:
    if every:
        return list(conn.execute(sa.select(pilots).where(pilots.c.state == "active")))
    found = {r.id: r for r in conn.execute(sa.select(pilots).where(pilots.c.id.in_(ids)))}
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFound(f"no pilot {', '.join(missing)} (see 'pilotage pilot list --all')")
    gone = [f"{i} ({found[i].state})" for i in ids if found[i].state != "active"]
    if gone:
        raise Conflict(f"pilot {', '.join(gone)} has left the pool already")
    return [found[i] for i in ids]


def act(
    conn: sa.Connection,
    action: str,
    ids: list[str],
    *,
    every: bool,
    by: str,
    max_attempts: int,
    now: float,
) -> list[dict[str, Any]]:
    """Apply ``action`` (one of :data:`ACTIONS`) to the named pilots, or to every active
    one; return what was done to each."""
    if action not in ACTIONS:
        raise NotFound(f"unknown pilot action {action!r}; one of {', '.join(ACTIONS)}")
    rows = _targets(conn, ids, every)
    done = []
    for row in rows:
        stopped = 0
        if action == "drain":
            values: dict[str, Any] = {"drain": True}
        elif action == "resume":
            values = {"drain": False}
        elif action == "retire":
            values = {"retire": True}
        else:
            values = {"retire": True}
            for claim_id, job_id in endings.pilot_claims(conn, row.id):
                endings.release_claim(
                    conn,
                    claim_id,
                    job_id,
                    trigger=Trigger.PILOT_KILLED,
                    reason=f"pilot {row.id} killed by {by}",
                    max_attempts=max_attempts,
                    now=now,
                )
                stopped += 1
        conn.execute(sa.update(pilots).where(pilots.c.id == row.id).values(**values))
        done.append({"pilot": row.id, "action": action, "jobs_stopped": stopped})
    if done:
        note(conn, PILOTS_NOTE)
    return done


def retire_entry(conn: sa.Connection, entry: str, frontend: str) -> int:
    """Retire the active pilots a frontend's token started at ``entry``; how many."""
    result = conn.execute(
        sa.update(pilots)
        .where(
            pilots.c.subject == entry_token_subject(entry, frontend),
            pilots.c.state == "active",
            pilots.c.retire == sa.false(),
        )
        .values(retire=True)
    )
    if result.rowcount:
        note(conn, PILOTS_NOTE)
    return int(result.rowcount or 0)
