"""The service's record of its decisions: one JSON line per answer, for the site's audit.

A site traces who was let in, as which account, and when, and sees the load its switches
put on the service (seed 000 §4.6: a mass removal must not reach it as a burst). Each
line: ``time`` (ISO 8601 UTC, milliseconds), ``user`` and ``pilot`` (the identities asked
about: ``kind``, ``subject``, ``issuer``, ``groups``; ``pilot`` null when the switch sent
none), ``permit``, ``account``, ``reason`` and ``error``.

Each line is one ``write`` on a descriptor opened with ``O_APPEND``: lines are never
interleaved or half-written by the service itself, and a reader may follow the file as it
grows. :meth:`DecisionLog.reopen` (on SIGHUP) opens the path afresh, so the file can be
rotated by renaming it. A line that cannot be written is logged once per run of failures
and the decision is answered anyway: the log never costs a switch its answer.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from pilotage.errors import OperatorError
from pilotage.siteauthz.wire import DecisionRequest, SubjectModel
from pilotage.sitepolicy.policy import Decision

log = logging.getLogger("pilotage.siteauthz")


class DecisionLog:
    """The JSON-lines file of decisions at ``path`` (created 0640 if absent)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd = _open(path)
        except OSError as exc:
            raise OperatorError(
                f"the decision log {path} cannot be opened ({exc.strerror}); "
                "name a file in a directory the service may write"
            ) from None
        self._failing = False

    def write(self, asked: DecisionRequest, decision: Decision) -> None:
        """Append the line of one answered request."""
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        record = {
            "time": f"{stamp}.{int(now * 1000) % 1000:03d}Z",
            "user": _identity(asked.user),
            "pilot": _identity(asked.pilot) if asked.pilot is not None else None,
            "permit": decision.permit,
            "account": decision.account,
            "reason": decision.reason,
            "error": decision.error,
        }
        try:
            os.write(self._fd, (json.dumps(record) + "\n").encode())
        except OSError as exc:
            if not self._failing:
                log.error("the decision log %s cannot be written: %s", self.path, exc.strerror)
            self._failing = True
            return
        if self._failing:
            log.info("the decision log %s is written again", self.path)
            self._failing = False

    def reopen(self) -> None:
        """Open the path afresh (after a rotation); keep the old file if that fails."""
        try:
            fd = _open(self.path)
        except OSError as exc:
            log.error("the decision log %s cannot be reopened, keeping the old file: %s",
                      self.path, exc.strerror)  # fmt: skip
            return
        os.close(self._fd)
        self._fd = fd

    def close(self) -> None:
        """Close the file."""
        os.close(self._fd)


def _open(path: Path) -> int:
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(path, flags, 0o640)


def _identity(subject: SubjectModel) -> dict[str, object]:
    return {"kind": subject.kind, "subject": subject.subject, "issuer": subject.issuer,
            "groups": list(subject.groups)}  # fmt: skip
