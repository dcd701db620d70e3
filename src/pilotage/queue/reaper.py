"""The server's periodic sweep: expired leases give their jobs back; silent pilots are lost.

Safe to run in several server processes at once: every change is a guarded update.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from pilotage.collector import pilots as registry
from pilotage.config import ServerSettings
from pilotage.queue import endings
from pilotage.queue.states import Trigger
from pilotage.store.engine import Store
from pilotage.store.tables import pilots

log = logging.getLogger("pilotage.reaper")


def reap_once(store: Store, settings: ServerSettings, now: float) -> int:
    """Release every claim whose lease ran out and mark silent pilots lost.

    Returns how many claims were released.
    """
    with store.read() as conn:
        expired = endings.expired_claims(conn, now)
    for claim_id, job_id in expired:
        with store.write() as conn:
            endings.release_claim(
                conn,
                claim_id,
                job_id,
                trigger=Trigger.LEASE_EXPIRED,
                reason=f"lease of claim {claim_id} expired",
                max_attempts=settings.max_attempts,
                now=now,
            )
        log.info("claim %s expired; job id %s released", claim_id, job_id)
    silent_since = now - max(3 * settings.heartbeat_s, settings.lease_s)
    with store.write() as conn:
        lost = (
            conn.execute(
                sa.select(pilots.c.id).where(
                    pilots.c.state == "active",
                    sa.or_(pilots.c.last_seen_at < silent_since, pilots.c.expires_at < now - 60),
                )
            )
            .scalars()
            .all()
        )
        for pilot_id in lost:
            if not endings.pilot_claims(conn, pilot_id):
                registry.leave(conn, pilot_id, "lost", "no heartbeat", now)
                log.info("pilot %s lost: not heard from", pilot_id)
    return len(expired)
