"""The audit of the credential store: every delegation, key and release attempt.

Each attempt, granted or refused, becomes one row of ``credential_audit`` and one JSON
line of ``<state>/audit/credentials.log`` (mode 0600, append only): who called, which
pilot, claim and job, which identity, the outcome, and why. A refused attempt is
recorded in a transaction of its own, so the refusal's rollback cannot erase it; a
granted one is recorded in the transaction that grants it, and its line is written
once that transaction has committed, so the file never shows a grant that did not
happen.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import sqlalchemy as sa

from pilotage.errors import PilotageError
from pilotage.store.tables import credential_audit

log = logging.getLogger("pilotage.credentials.audit")

GRANTED = "granted"
REFUSED = "refused"


@dataclass(frozen=True)
class AuditRecord:
    """One attempt. ``reason`` is the refusal's class and sentence (None when granted)."""

    at: float
    event: str
    outcome: str
    caller: str
    pilot_id: str | None = None
    claim_id: str | None = None
    job_id: str | None = None
    identity: str | None = None
    reason: str | None = None

    def refused(self, error: PilotageError) -> AuditRecord:
        """This attempt, refused by ``error``."""
        values = {**asdict(self), "outcome": REFUSED}
        values["reason"] = f"{type(error).__name__}: {error.message}"
        return AuditRecord(**values)


class AuditLog:
    """The audit table and its JSON-lines file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def insert(self, conn: sa.Connection, record: AuditRecord) -> None:
        """Add ``record`` to the table inside the caller's transaction."""
        conn.execute(sa.insert(credential_audit).values(**asdict(record)))

    def append(self, record: AuditRecord) -> None:
        """Append ``record`` to the file (after its transaction committed)."""
        line = json.dumps(asdict(record), sort_keys=True, separators=(",", ":")) + "\n"
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        with self._lock:
            fd = os.open(self.path, flags, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        log.info("credential %s %s: %s", record.event, record.outcome, line.strip())


def records(conn: sa.Connection, *, claim_id: str | None = None) -> list[AuditRecord]:
    """The audit rows, oldest first (of one claim when given)."""
    query = sa.select(credential_audit).order_by(credential_audit.c.id)
    if claim_id is not None:
        query = query.where(credential_audit.c.claim_id == claim_id)
    return [
        AuditRecord(
            at=r.at,
            event=r.event,
            outcome=r.outcome,
            caller=r.caller,
            pilot_id=r.pilot_id,
            claim_id=r.claim_id,
            job_id=r.job_id,
            identity=r.identity,
            reason=r.reason,
        )
        for r in conn.execute(query)
    ]
