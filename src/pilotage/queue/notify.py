"""Mail for ``notification`` / ``notify_user``, through the pool's SMTP relay.

Which events mail the job's owner, by ``notification`` (HTCondor's meaning, as its
``condor_submit`` page gives it):

- ``always`` and ``complete``: the job terminated (it exited: ``COMPLETED``);
- ``start``: the job started for the first time;
- ``error``: it terminated abnormally (killed by a signal, or an exit code other than its
  ``success_exit_code``, 0 by default), or it was held because of a failure, not by a user;
- ``never`` (the default): none.

The mail goes to ``notify_user`` (comma-separated addresses), else to
``<owner>@<mail_domain>``; its subject starts ``[pilotage] Job 12.3``, as HTCondor's
``Condor Job 12.3``.

:class:`Mailer` follows the job events (the same change feed as the matchmaker) from the
newest one it has dealt with, re-reading a window behind it for transactions that
committed late. Each event that calls for mail gets a row in ``mail_notices`` before
the mail is sent; its primary key (the event id) makes one server of several send it.
A mail the relay cannot take is logged and recorded as ``failed``, not retried.
"""

from __future__ import annotations

import json
import logging
import smtplib
import socket
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import sqlalchemy as sa

from pilotage.errors import OperatorError
from pilotage.store.engine import Store
from pilotage.store.outage import Outage
from pilotage.store.tables import job_events, jobs, mail_notices

log = logging.getLogger("pilotage.mail")

#: JobNotification numbers (jobad.NOTIFICATION).
ALWAYS, COMPLETE, ERROR, START = 1, 2, 3, 4
#: How far behind the newest event dealt with each pass looks again, in event ids.
REPLAY_WINDOW = 500
_BATCH = 1000
#: What a mail says of its job, read with each event.
_JOB_COLUMNS = tuple(
    jobs.c[name]
    for name in ("notification", "spec", "owner", "cluster_id", "proc_id", "exit_code",
                 "exit_signal", "wall_s", "cpu_s")
)  # fmt: skip


@dataclass(frozen=True)
class MailSettings:
    """The relay and the addresses, from ``[server] mail_*``."""

    host: str
    port: int
    sender: str
    domain: str

    @classmethod
    def parse(cls, relay: str, sender: str = "", domain: str = "") -> MailSettings | None:
        """``host:port`` (port 25 when absent); ``None`` when ``relay`` is empty."""
        if not relay:
            return None
        host, sep, port = relay.rpartition(":")
        if not sep:
            host, port = relay, "25"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise OperatorError(
                f"[server] mail_relay = {relay!r} is not host:port (e.g. smtp.example.org:25)"
            )
        fqdn = socket.getfqdn()
        return cls(host.strip("[]"), int(port), sender or f"pilotage@{fqdn}", domain or fqdn)


def reason_to_mail(
    level: int | None, event: Any, job: Any, *, first_start: bool = False
) -> str | None:
    """What to say in the subject for ``event`` of ``job``, or None for no mail.

    ``first_start``: the event is the job's first start (``start`` mails only that one).
    """
    if not level:
        return None
    to = event.to_state
    if to == "COMPLETED" and level in (ALWAYS, COMPLETE, ERROR):
        spec = json.loads(job.spec)
        success = (spec.get("policy") or {}).get("success_exit_code") or 0
        failed = job.exit_signal is not None or job.exit_code != success
        if level == ERROR and not failed:
            return None
        if job.exit_signal is not None:
            return f"was killed by signal {job.exit_signal}"
        return f"exited with status {job.exit_code}"
    if to == "HELD" and level == ERROR:
        by_user = event.trigger == "hold" and event.actor != "policy"
        return None if by_user else f"was held: {event.reason or 'no reason given'}"
    if to == "RUNNING" and level == START and first_start:
        return "started"
    return None


def compose(settings: MailSettings, job: Any, event: Any, what: str) -> EmailMessage:
    """The mail for one event of one job."""
    spec = json.loads(job.spec)
    name = f"{job.cluster_id}.{job.proc_id}"
    recipients = spec.get("notify_user") or f"{job.owner}@{settings.domain}"
    message = EmailMessage()
    message["From"] = settings.sender
    message["To"] = recipients
    message["Subject"] = f"[pilotage] Job {name} {what}"[:200]
    arguments = " ".join(spec.get("arguments") or [])
    lines = [
        f"Job {name} of {job.owner} {what}.",
        "",
        f"Command:        {spec.get('executable')} {arguments}".rstrip(),
        f"Submitted from: {spec.get('iwd')}",
        f"State:          {event.to_state} ({event.trigger} by {event.actor})",
    ]
    if event.to_state == "COMPLETED":
        lines.append(f"Wall time:      {job.wall_s or 0:.0f} s, cpu {job.cpu_s or 0:.0f} s")
    if spec.get("batch_name"):
        lines.append(f"Batch:          {spec['batch_name']}")
    lines += ["", f"Run 'pilotage q {name} -l' or 'pilotage history {name} -l' for more."]
    message.set_content("\n".join(lines) + "\n")
    return message


class Mailer:
    """Follows the job events and sends the mail they call for (see the module)."""

    def __init__(self, store: Store, settings: MailSettings) -> None:
        self.store = store
        self.settings = settings
        self._watermark: int | None = None

    def start(self) -> None:
        """Begin after the last event mailed, or after the newest event if none was."""
        with self.store.read() as conn:
            last = conn.execute(sa.select(sa.func.max(mail_notices.c.event_id))).scalar()
            if last is None:
                last = conn.execute(sa.select(sa.func.max(job_events.c.id))).scalar()
        self._watermark = int(last or 0)

    def pass_once(self, now: float) -> int:
        """Send the mail of the events since the last pass; how many were sent."""
        if self._watermark is None:
            self.start()
        assert self._watermark is not None
        since = max(0, self._watermark - REPLAY_WINDOW)
        with self.store.read() as conn:
            rows = conn.execute(
                sa.select(job_events, *_JOB_COLUMNS)
                .join_from(job_events, jobs, job_events.c.job_id == jobs.c.id)
                .where(job_events.c.id > since, jobs.c.notification.is_not(None))
                .order_by(job_events.c.id)
                .limit(_BATCH)
            ).all()
            done = set(
                conn.execute(
                    sa.select(mail_notices.c.event_id).where(mail_notices.c.event_id > since)
                ).scalars()
            )
            top = conn.execute(sa.select(sa.func.max(job_events.c.id))).scalar() or 0
        sent = 0
        for row in rows:
            if row.id in done:
                continue
            first = row.notification == START and row.to_state == "RUNNING" and self._first(row)
            what = reason_to_mail(row.notification, row, row, first_start=first)
            if what is not None and self._claim(row, now):
                sent += self._send(row, what, now)
        self._watermark = max(self._watermark, rows[-1].id if len(rows) == _BATCH else top)
        return sent

    def _first(self, row: Any) -> bool:
        """Whether this event is the job's first start."""
        with self.store.read() as conn:
            earlier = conn.execute(
                sa.select(sa.func.count())
                .select_from(job_events)
                .where(
                    job_events.c.job_id == row.job_id,
                    job_events.c.to_state == "RUNNING",
                    job_events.c.id < row.id,
                )
            ).scalar()
        return not earlier

    def _claim(self, row: Any, now: float) -> bool:
        """Record that this event is being mailed; false if another server did first."""
        try:
            with self.store.write() as conn:
                conn.execute(
                    sa.insert(mail_notices).values(
                        event_id=row.id, job_id=row.job_id, at=now, status="sending"
                    )
                )
        except sa.exc.IntegrityError:
            return False
        return True

    def _send(self, row: Any, what: str, now: float) -> int:
        message = compose(self.settings, row, row, what)
        status, detail = "sent", str(message["To"])
        try:
            with smtplib.SMTP(self.settings.host, self.settings.port, timeout=30) as smtp:
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            status, detail = "failed", f"{type(exc).__name__}: {exc}"[:2000]
            log.warning(
                "mail for job %s.%s to %s not sent: %s",
                row.cluster_id, row.proc_id, message["To"], detail,
            )  # fmt: skip
        with self.store.write() as conn:
            conn.execute(
                sa.update(mail_notices)
                .where(mail_notices.c.event_id == row.id)
                .values(status=status, detail=detail, at=now)
            )
        return 1 if status == "sent" else 0


def submit_warnings(specs: list[Any], has_relay: bool) -> list[str]:
    """What submit tells the user about mail: none will be sent (no relay, or
    ``notify_user`` without ``notification``, which defaults to never)."""
    asked = next((s for s in specs if s.notification not in (None, "never")), None)
    if asked is not None and not has_relay:
        return [
            f"notification = {asked.notification}: this pool has no mail relay, so no "
            "mail will be sent; the job event log (log = FILE) and 'pilotage wait' report "
            "the same events"
        ]
    if asked is None and any(s.notify_user for s in specs):
        return [
            "notify_user is set but notification is not (it defaults to never), so no "
            "mail will be sent; add 'notification = complete' (or error, always)"
        ]
    return []


def start_mailer(store: Store, server: Any, stop: threading.Event) -> threading.Thread | None:
    """The mailer's thread, when ``[server] mail_relay`` is set (a bad value stops the
    server at start); it passes every ``reap_interval_s`` until ``stop`` is set."""
    settings = MailSettings.parse(server.mail_relay, server.mail_from, server.mail_domain)
    if settings is None:
        return None
    mailer = Mailer(store, settings)

    def loop() -> None:
        outage = Outage("mailer", log)  # a database outage: one line as it starts and ends
        while not stop.wait(server.reap_interval_s):
            try:
                mailer.pass_once(time.time())
            except Exception as exc:  # the next pass tries again; a database outage passes
                if not outage.failed(exc):
                    log.exception("mail pass failed")
            else:
                outage.succeeded()

    thread = threading.Thread(target=loop, name="mailer", daemon=True)
    thread.start()
    log.info("mail for notification through %s:%d", settings.host, settings.port)
    return thread
