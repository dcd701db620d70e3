"""Whose fault a switch refusal is, and whether this node may run switched jobs at all.

Pure logic, no I/O but :func:`report_line`; the agent acts on the answers
(docs/pilot.md, "Switch exit codes"):

- :func:`classify` sorts a refusal of ``pilotage-exec`` by who must act (issue 9, "Work path
  and node faults"). The job is held only for what its owner must fix: its credential
  (201 on the user credential) or the site's denial of its identity (203). Everything
  else is the node's or the pilot's: a path the target account cannot search, a missing
  or broken switch, a pilot account the switch does not accept. Then the job goes back
  to the queue at once without counting against it, and the pilot stops taking jobs.
  A 202 (or a switch that died without a status line) is the switch's internal error:
  the job goes back too, or, where the site allows it, runs as the pilot account.
- :func:`switch_type_problem`: a site that requires setuid never gets a job run in
  log-only or namespace mode (seed 002); the node's switch type comes from start-up
  validation, in the slot ad (``PilotageSwitch``), and the site's answers with it.
"""

from __future__ import annotations

import enum
import json
import sys

#: 201 messages about the job's own credential: its owner must fix them.
_OWNER_201 = (
    "The user credential is not valid",
    "The user credential holds no private key",
    "The user credential is neither",
)
#: 203 messages about the pilot, not the job's owner: no other job would fare better.
_PILOT_203 = (
    "is not allowed to call pilotage-exec",
    "requires the pilot credential",
    "is not an accepted pilot",
)
#: 202 messages of a passing trouble (the site's service); any other 202 is a broken install.
_PASSING_202 = (
    "unreachable",
    "timed out",
    "overloaded",
    "No pool account is free",
    "answered HTTP",
    "sent an unreadable answer",
)


class Cause(enum.Enum):
    """Who must act on a refusal."""

    OWNER = "owner"  # held: the job's owner must fix it
    NODE = "node"  # given back, not counted; the pilot stops taking jobs
    INTERNAL = "internal"  # 202 or no status line: given back, or run as the pilot if allowed


def classify(code: int | None, message: str) -> tuple[Cause, bool]:
    """The cause of a refusal with ``code`` (``None``: no status line) and whether the
    pilot must stop taking jobs."""
    if code == 201:
        if message.startswith(_OWNER_201):
            return Cause.OWNER, False
        return Cause.NODE, True
    if code == 203:
        if any(part in message for part in _PILOT_203):
            return Cause.NODE, True
        return Cause.OWNER, False
    if code == 202:
        return Cause.INTERNAL, not any(part in message for part in _PASSING_202)
    if code is None:
        return Cause.INTERNAL, True
    return Cause.NODE, True


def _word(attrs: dict[str, str], name: str) -> str | None:
    """A slot attribute given as a ClassAd string literal, unquoted; None if absent."""
    text = attrs.get(name)
    if text is None:
        return None
    text = text.strip()
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def switch_type_problem(attrs: dict[str, str], switched: bool) -> str | None:
    """Why this pilot must not run switched jobs under the site's answers; None if it may.

    Only a pilot that states the site's answers (``PolicySetuid``, ``PolicyLogOnly``, as
    provisioned pilots do) is checked: a pilot started by hand without them is its
    operator's business.
    """
    setuid = _word(attrs, "PolicySetuid")
    log_only = _word(attrs, "PolicyLogOnly")
    if not switched or (setuid is None and log_only is None):
        return None
    kind = _word(attrs, "PilotageSwitch") or "unknown"
    if setuid == "require" and kind != "setuid":
        return (
            f"the site requires setuid mode but this node's switch is {kind!r}; "
            "no job may run in log-only or namespace mode here"
        )
    if kind == "setuid" and setuid not in ("allow", "require"):
        return "this node's switch is 'setuid' but the site does not allow setuid mode"
    if kind in ("log-only", "namespace") and log_only not in ("allow", "require"):
        return f"this node's switch is {kind!r} but the site does not allow log-only mode"
    if kind not in ("setuid", "log-only", "namespace"):
        return f"this node's switch type is {kind!r}; start-up validation did not establish it"
    return None


def report_line(reason: str, message: str, **details: str | int | None) -> None:
    """Print the report the factory forwards to the collector (``pilotage-validation``)."""
    report = {"ok": False, "reason": reason, "message": message[:4000], **details}
    print("pilotage-validation: " + json.dumps(report, sort_keys=True), flush=True)
    sys.stdout.flush()
