"""The job's own policy: ``periodic_*`` and ``on_exit_*`` expressions, decided as HTCondor does.

The expressions live in the job's ad under HTCondor's names (``PeriodicHold``,
``OnExitRemove``, ...; see :mod:`pilotage.queue.jobad`), so they read the attributes
users know: ``JobStatus``, ``EnteredCurrentStatus``, ``QDate``, ``NumJobStarts``,
``NumJobCompletions``, ``ExitCode``, ``ExitBySignal``, ``HoldReasonCode``,
``HoldReasonSubCode``, ``RemoteWallClockTime``. This module only decides; the server's
sweep (:mod:`pilotage.queue.policy_store`) and the exit path apply the decision through
the job's transition table.

Order, as in HTCondor: while queued, ``PeriodicRemove`` before ``PeriodicHold``
(``PeriodicRelease`` for a held job); at exit, ``OnExitHold`` before ``OnExitRemove``.
An expression that is undefined or not a boolean counts as false, so a typo never
removes a job.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import classad2

#: HTCondor's HoldReasonCode for a hold caused by the job's own policy.
JOB_POLICY_HOLD_CODE = 3
#: HTCondor's JobStatus numbers.
JOB_STATUS = {"IDLE": 1, "RUNNING": 2, "REMOVED": 3, "COMPLETED": 4, "HELD": 5}


class Action(enum.Enum):
    """What the policy asks for."""

    HOLD = "hold"
    RELEASE = "release"
    REMOVE = "remove"
    REQUEUE = "requeue"  # at exit: run the job again


@dataclass(frozen=True)
class Decision:
    """One policy decision, with the reason recorded in the job's history."""

    action: Action
    reason: str
    code: int = 0
    subcode: int = 0


def runtime_attrs(row: Any, now: float) -> dict[str, Any]:
    """The dynamic attributes of a job row, as HTCondor names them."""
    running_s = now - float(row.entered_state_at) if row.state == "RUNNING" else 0.0
    attrs: dict[str, Any] = {
        "JobStatus": JOB_STATUS[row.state],
        "EnteredCurrentStatus": int(row.entered_state_at),
        "NumJobStarts": int(row.attempts),
        "RemoteWallClockTime": float(row.wall_s or 0.0) + running_s,
        "CurrentTime": int(now),
    }
    if row.hold_code is not None:
        attrs["HoldReasonCode"] = int(row.hold_code)
        attrs["HoldReason"] = row.hold_reason or ""
    return attrs


def periodic(ad_text: str, attrs: Mapping[str, Any]) -> Decision | None:
    """The periodic decision for a queued job (IDLE, RUNNING or HELD), if any."""
    ad = _with(ad_text, attrs)
    status = attrs["JobStatus"]
    if _true(ad, "PeriodicRemove"):
        return Decision(Action.REMOVE, _why(ad, "PeriodicRemove", None))
    if status == JOB_STATUS["HELD"]:
        if _true(ad, "PeriodicRelease"):
            return Decision(Action.RELEASE, _why(ad, "PeriodicRelease", None))
        return None
    if _true(ad, "PeriodicHold"):
        reason = _why(ad, "PeriodicHold", "PeriodicHoldReason")
        return Decision(Action.HOLD, reason, JOB_POLICY_HOLD_CODE, _int(ad, "PeriodicHoldSubCode"))
    return None


def on_exit(ad_text: str, attrs: Mapping[str, Any]) -> Decision | None:
    """The exit decision (hold or run again), or ``None`` for the ordinary completion."""
    ad = _with(ad_text, attrs)
    if _true(ad, "OnExitHold"):
        reason = _why(ad, "OnExitHold", "OnExitHoldReason")
        return Decision(Action.HOLD, reason, JOB_POLICY_HOLD_CODE, _int(ad, "OnExitHoldSubCode"))
    if "OnExitRemove" in ad and not _true(ad, "OnExitRemove"):
        return Decision(Action.REQUEUE, f"OnExitRemove {ad.lookup('OnExitRemove')} is false")
    return None


def has_periodic(ad_text: str) -> bool:
    """Whether a stored ad carries any periodic expression (a cheap text test first)."""
    return "Periodic" in ad_text


def with_attrs(ad_text: str, attrs: Mapping[str, Any]) -> str:
    """The ad with ``attrs`` set (kept in the stored ad: completions, hold subcode)."""
    return str(_with(ad_text, attrs))


def whole_number(ad_text: str, name: str) -> int:
    """An integer attribute of a stored ad, 0 when absent or not an integer."""
    return _int(classad2.ClassAd(ad_text), name)


def _with(ad_text: str, attrs: Mapping[str, Any]) -> Any:
    ad = classad2.ClassAd(ad_text)
    for name, value in attrs.items():
        ad[name] = value
    return ad


def _true(ad: Any, name: str) -> bool:
    if name not in ad:
        return False
    try:
        return ad.eval(name) is True
    except Exception:  # noqa: BLE001  (classad2 raises its own untyped exception)
        return False


def _int(ad: Any, name: str) -> int:
    try:
        value = ad.eval(name) if name in ad else 0
    except Exception:  # noqa: BLE001
        return 0
    return value if type(value) is int else 0


def _why(ad: Any, name: str, reason_attr: str | None) -> str:
    if reason_attr is not None and reason_attr in ad:
        try:
            value = ad.eval(reason_attr)
        except Exception:  # noqa: BLE001
            value = None
        if isinstance(value, str) and value:
            return value
    return f"the job attribute {name} expression '{ad.lookup(name)}' evaluated to TRUE"
