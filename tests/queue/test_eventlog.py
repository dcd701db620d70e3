"""The job event log is read by HTCondor's own reader, event by event."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import htcondor2
import pytest

from pilotage.cli.submitting import write_user_log

T0 = 1_790_000_000.0


def change(
    at: float, before: str | None, after: str, trigger: str, reason: str | None = None
) -> dict[str, Any]:
    return {
        "at": T0 + at,
        "from": before,
        "to": after,
        "trigger": trigger,
        "reason": reason,
        "pilot": "p-1",
    }


def job(proc: int, state: str, **extra: Any) -> dict[str, Any]:
    view = {"cluster": 12, "proc": proc, "state": state, "exit_code": None, "exit_signal": None}
    view.update(hold_code=None, hold_reason=None, cpu_s=3.0)
    return {**view, **extra}


#: Job 12.0 goes through every state; 12.1 is removed while idle; 12.2 dies of a signal.
HISTORY = [
    (
        job(0, "COMPLETED", exit_code=3),
        [
            change(0, None, "IDLE", "submit"),
            change(1, "IDLE", "RUNNING", "claim"),
            change(2, "RUNNING", "HELD", "hold", "held by alice"),
            change(3, "HELD", "IDLE", "release", "release by alice"),
            change(4, "IDLE", "RUNNING", "claim"),
            change(5, "RUNNING", "IDLE", "lease_expired", "the pilot stopped answering"),
            change(6, "IDLE", "RUNNING", "claim"),
            change(7, "RUNNING", "COMPLETED", "exit", "exit code 3"),
        ],
    ),
    (
        job(1, "REMOVED"),
        [change(0, None, "IDLE", "submit"), change(8, "IDLE", "REMOVED", "remove", "rm by alice")],
    ),
    (
        job(2, "COMPLETED", exit_signal=9),
        [
            change(0, None, "IDLE", "submit"),
            change(1, "IDLE", "RUNNING", "claim"),
            change(9, "RUNNING", "COMPLETED", "exit"),
        ],
    ),
]

E = htcondor2.JobEventType
EXPECTED = [
    (0, E.SUBMIT),
    (1, E.SUBMIT),
    (2, E.SUBMIT),
    (0, E.EXECUTE),
    (2, E.EXECUTE),
    (0, E.JOB_HELD),
    (0, E.JOB_RELEASED),
    (0, E.EXECUTE),
    (0, E.JOB_EVICTED),
    (0, E.EXECUTE),
    (0, E.JOB_TERMINATED),
    (1, E.JOB_ABORTED),
    (2, E.JOB_TERMINATED),
]


@pytest.mark.parametrize("json_form", [False, True])
def test_htcondor_reads_every_event_of_the_log(tmp_path: Path, json_form: bool) -> None:
    log = tmp_path / "cluster.log"
    write_user_log(log, HISTORY, json_form=json_form)
    events = list(htcondor2.JobEventLog(str(log)).events(stop_after=0))
    assert [(e.proc, e.type) for e in events] == EXPECTED
    assert all(e.cluster == 12 for e in events)
    by = {(e.proc, e.type): e for e in events}
    held = by[(0, E.JOB_HELD)]
    assert (held["HoldReason"], held["HoldReasonCode"], held["HoldReasonSubCode"]) == (
        "held by alice",
        1,
        0,
    )
    assert by[(0, E.JOB_RELEASED)]["Reason"] == "release by alice"
    assert by[(0, E.JOB_TERMINATED)]["ReturnValue"] == 3
    assert by[(0, E.JOB_TERMINATED)]["TerminatedNormally"] is True
    assert by[(2, E.JOB_TERMINATED)]["TerminatedBySignal"] == 9
    assert by[(1, E.JOB_ABORTED)]["Reason"] == "rm by alice"
    assert [e.timestamp for e in events] == sorted(e.timestamp for e in events)


def test_the_text_form_looks_like_htcondors(tmp_path: Path) -> None:
    log = tmp_path / "cluster.log"
    write_user_log(log, HISTORY[1:2])
    first, separator = log.read_text().splitlines()[:2]
    assert first.startswith("000 (012.001.000) ") and "Job submitted from host: <" in first
    assert separator == "..."
