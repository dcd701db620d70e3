"""The job event log (``log = ...``) in HTCondor's user-log format, from a job's history.

Scripts and workflow tools (``htcondor2.JobEventLog``, DAGMan-style monitors,
``condor_wait``) read this format, so it is written as HTCondor writes it: one event per
state change, each a header ``NNN (cluster.proc.000) MM/DD HH:MM:SS <text>``, indented
detail lines, then a ``...`` line. The JSON form (``PILOTAGE_USERLOG_FORMAT=json``, as
HTCondor's ``DEFAULT_USERLOG_FORMAT_OPTIONS = JSON``) writes each event as one JSON
object with HTCondor's attribute names, one after another.

Events, by the state change that causes them:

====================  =====  ===========================
change                event  HTCondor name
====================  =====  ===========================
submitted             000    SubmitEvent
IDLE -> RUNNING       001    ExecuteEvent
RUNNING -> IDLE       004    JobEvictedEvent (requeued)
RUNNING -> COMPLETED  005    JobTerminatedEvent
-> REMOVED            009    JobAbortedEvent
-> HELD               012    JobHeldEvent
HELD -> IDLE          013    JobReleaseEvent
====================  =====  ===========================

Pure: the caller gives the job's view and its events (as the API returns them) and
writes the text where the job's ``log`` says.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: The hold code of an older hold, whose code the job no longer carries, by its trigger.
_TRIGGER_CODES = {"hold": 1, "too_many_attempts": 20}
#: Detail lines of the usage block, as HTCondor writes them for events 004 and 005.
_ZERO = "Usr 0 00:00:00, Sys 0 00:00:00"


@dataclass(frozen=True)
class LogEvent:
    """One event of the job event log; ``attrs`` are its attributes in the JSON form."""

    number: int
    my_type: str
    cluster: int
    proc: int
    at: float
    headline: str
    details: tuple[str, ...] = ()
    attrs: Mapping[str, Any] = field(default_factory=dict)


def events_of(
    job: Mapping[str, Any], history: Sequence[Mapping[str, Any]], *, submit_host: str
) -> list[LogEvent]:
    """The log events of one job from its state changes, oldest first.

    ``job`` is the job's public view (``cluster``, ``proc``, ``exit_code``,
    ``exit_signal``, ``hold_code``, ``hold_subcode``, ``cpu_s``); ``history`` its events
    (``at``, ``from``, ``to``, ``trigger``, ``reason``, ``pilot``).
    """
    out: list[LogEvent] = []
    cluster, proc = int(job["cluster"]), int(job["proc"])
    holds = [c for c in history if c["to"] == "HELD"]
    last_hold = holds[-1] if holds else None
    for change in history:
        made = _event(job, change, submit_host, last=change is last_hold)
        if made is not None:
            number, my_type, headline, details, attrs = made
            out.append(
                LogEvent(
                    number, my_type, cluster, proc, float(change["at"]), headline, details, attrs
                )
            )
    return out


def _event(
    job: Mapping[str, Any], change: Mapping[str, Any], submit_host: str, *, last: bool
) -> tuple[int, str, str, tuple[str, ...], dict[str, Any]] | None:
    before, after = change.get("from"), change["to"]
    details: tuple[str, ...]
    reason = str(change.get("reason") or change.get("trigger") or "")
    if before is None:
        return (
            0,
            "SubmitEvent",
            f"Job submitted from host: {submit_host}",
            (),
            {"SubmitHost": submit_host},
        )
    if before == after:
        return None  # a note without a change of state (a refused identity): not logged
    if after == "RUNNING":
        host = f"<0.0.0.0:0?pilot={change.get('pilot') or 'unknown'}>"
        return 1, "ExecuteEvent", f"Job executing on host: {host}", (), {"ExecuteHost": host}
    if after == "HELD":
        code, subcode = _TRIGGER_CODES.get(str(change.get("trigger")), 0), 0
        if change.get("actor") == "policy":
            code = 3  # HTCondor's JobPolicy
        # The job row keeps the code of its latest hold only (a removal leaves it there).
        if last and job.get("hold_reason") == change.get("reason"):
            code = int(job.get("hold_code") or code)
            subcode = int(job.get("hold_subcode") or 0)
        details = (reason, f"Code {code} Subcode {subcode}")
        attrs = {"HoldReason": reason, "HoldReasonCode": code, "HoldReasonSubCode": subcode}
        return 12, "JobHeldEvent", "Job was held.", details, attrs
    if before == "HELD" and after == "IDLE":
        return 13, "JobReleaseEvent", "Job was released.", (reason,), {"Reason": reason}
    if after == "REMOVED":
        return 9, "JobAbortedEvent", "Job was aborted.", (reason,), {"Reason": reason}
    if before == "RUNNING" and after == "IDLE":
        details = ("(0) Job was not checkpointed.", *_usage(("Run Remote", "Run Local"), 0.0))
        details += ("0  -  Run Bytes Sent By Job", "0  -  Run Bytes Received By Job")
        attrs = {"Checkpointed": False, "TerminatedAndRequeued": False, "Reason": reason}
        return 4, "JobEvictedEvent", "Job was evicted.", details, attrs
    if after == "COMPLETED":
        return _terminated(job)
    return None


def _terminated(job: Mapping[str, Any]) -> tuple[int, str, str, tuple[str, ...], dict[str, Any]]:
    cpu_s = float(job.get("cpu_s") or 0.0)
    signal = job.get("exit_signal")
    attrs: dict[str, Any] = {"TerminatedNormally": not signal}
    status: tuple[str, ...]
    if signal:
        status = (f"(0) Abnormal termination (signal {int(signal)})", "(0) No core file")
        attrs["TerminatedBySignal"] = int(signal)
    else:
        code = int(job.get("exit_code") or 0)
        status = (f"(1) Normal termination (return value {code})",)
        attrs["ReturnValue"] = code
    usage = _usage(("Run Remote", "Run Local", "Total Remote", "Total Local"), cpu_s)
    transfer = tuple(
        f"0  -  {scope} Bytes {way} By Job"
        for scope in ("Run", "Total")
        for way in ("Sent", "Received")
    )
    return 5, "JobTerminatedEvent", "Job terminated.", (*status, *usage, *transfer), attrs


def _usage(kinds: tuple[str, ...], cpu_s: float) -> tuple[str, ...]:
    lines = []
    for kind in kinds:
        used = _clock(cpu_s) if kind.endswith("Remote") else _ZERO
        lines.append(f"\t{used}  -  {kind} Usage")
    return tuple(lines)


def _clock(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    return f"Usr {days} {rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}, Sys 0 00:00:00"


def render_text(events: Sequence[LogEvent]) -> str:
    """The events in HTCondor's classic text form, oldest first."""
    chunks = []
    for event in sorted(events, key=lambda e: (e.at, e.cluster, e.proc)):
        when = time.strftime("%m/%d %H:%M:%S", time.localtime(event.at))
        ident = f"({event.cluster:03d}.{event.proc:03d}.000)"
        lines = [f"{event.number:03d} {ident} {when} {event.headline}"]
        lines += [f"\t{detail}" for detail in event.details]
        chunks.append("\n".join(lines) + "\n...\n")
    return "".join(chunks)


def render_json(events: Sequence[LogEvent]) -> str:
    """The events in HTCondor's JSON form: one object per event, one after another."""
    chunks = []
    for event in sorted(events, key=lambda e: (e.at, e.cluster, e.proc)):
        body = {
            "MyType": event.my_type,
            "EventTypeNumber": event.number,
            "Cluster": event.cluster,
            "Proc": event.proc,
            "Subproc": 0,
            "EventTime": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(event.at)),
            **event.attrs,
        }
        chunks.append(json.dumps(body, indent=4, sort_keys=True) + "\n")
    return "".join(chunks)
