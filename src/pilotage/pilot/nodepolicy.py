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
- :func:`outcome` turns a refusal into what happens to the claim: a hold, or a give-back
  with how long the job stays away from this pilot and whether the pilot stops.
- :func:`switch_type_problem`: a site that requires setuid never gets a job run in
  log-only or namespace mode (seed 002); the node's switch type comes from start-up
  validation, in the slot ad (``PilotageSwitch``), and the site's answers with it.
"""

from __future__ import annotations

import enum
import json
import sys

from .wire import Failure, GiveBack, HoldCode

#: How long the server keeps a job given back for the node's fault away from this pilot.
GIVE_BACK_EXCLUDE_S = 600.0

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


def outcome(
    code: int | None, message: str, *, retried: int, retry_exclude_s: float
) -> Failure | GiveBack:
    """What a refusal does to its claim: held (a :class:`Failure`) for what the job's
    owner must fix, else given back. ``retried``: the calls retried after a passing 202;
    ``retry_exclude_s``: how long the job then stays away from this pilot."""
    text = f"pilotage-exec refused ({code}): {message}" if code else message
    cause, stop_pilot = classify(code, message)
    if cause is Cause.OWNER and code == 203:
        # This site will not run the owner; others may: the server excludes the site
        # for the job (ExcludedSites) and holds it only when no site is left.
        return GiveBack(text, node_fault=False, refusal="denied")
    if cause is Cause.OWNER:
        return Failure(HoldCode.IDENTITY, text)
    passing = cause is Cause.INTERNAL and not stop_pilot
    return GiveBack(
        f"{text} (after {retried} retries)" if passing else text,
        exclude_s=retry_exclude_s if passing else GIVE_BACK_EXCLUDE_S,
        stop_pilot=stop_pilot,
        bypassable=cause is Cause.INTERNAL,
        # A passing 202 is the site's trouble, not the job's: reported for the entry.
        refusal="transient" if passing else None,
    )


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
