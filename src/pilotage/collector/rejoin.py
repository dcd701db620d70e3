"""A pilot that registers again after the server lost sight of it.

The server declares a pilot lost when it has not been heard from for
``max(3 * heartbeat_s, lease_s)`` (:mod:`pilotage.queue.reaper`); after a server outage
that long, every pilot still alive is lost, and an upgrade or a reboot would empty the
pool. So an agent told its pilot is lost (or unknown) registers again, naming the pilot
it was (``resume``) and proving that pilot's secret in the usual header, with the
claims it still holds (docs/pilot-protocol.md, "Registering again").

:func:`rejoin` then takes the pilot back under its own id and secret — lost or still
active, not if it left or its lifetime is over — and the claims it names that are still
live and its own keep running: their leases are renewed at once and they are answered
as ``resumed``. Its live claims it does not name are freed (their answers were lost,
:mod:`pilotage.queue.orphans`). Anything else it names is not resumed, and the agent
stops it. When the pilot cannot be taken back, the caller registers a new pilot instead.
"""

from __future__ import annotations

import hmac
import logging

import sqlalchemy as sa

from pilotage.api.wire import PilotRegistration
from pilotage.collector.pilots import secret_digest
from pilotage.queue.orphans import free_unheld
from pilotage.store.tables import claims, pilots

log = logging.getLogger("pilotage.collector")


def rejoin(
    conn: sa.Connection,
    subject: str,
    reg: PilotRegistration,
    secret: str | None,
    *,
    lease_s: float,
    now: float,
) -> tuple[str, list[str]] | None:
    """Take back the pilot ``reg.resume`` names; its id and the claims resumed, or None
    when it cannot be (no resume, unknown pilot, another subject, wrong secret, left, or
    past its lifetime)."""
    resume = reg.resume
    if resume is None or not secret:
        return None
    row = conn.execute(sa.select(pilots).where(pilots.c.id == resume.pilot_id)).first()
    if row is None or row.subject != subject or row.secret_sha256 is None:
        return None
    if not hmac.compare_digest(row.secret_sha256, secret_digest(secret)):
        return None
    if row.state not in ("active", "lost") or row.expires_at <= now:
        return None
    conn.execute(
        sa.update(pilots)
        .where(pilots.c.id == row.id)
        .values(state="active", exit_reason=None, last_seen_at=now)
    )
    named = set(resume.claims)
    free_unheld(conn, row.id, named, now=now)
    resumed = sorted(
        conn.execute(
            sa.update(claims)
            .where(
                claims.c.pilot_id == row.id,
                claims.c.state == "active",
                claims.c.id.in_(named),
            )
            .values(lease_expires_at=now + lease_s)
            .returning(claims.c.id)
        )
        .scalars()
        .all()
    ) if named else []  # fmt: skip
    log.info(
        "pilot %s registered again (was %s); %d of its %d claims resumed",
        row.id, row.state, len(resumed), len(named),
    )  # fmt: skip
    return row.id, resumed
