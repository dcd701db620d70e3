"""Which job events mail the owner, by notification level, and the relay setting."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from pilotage.errors import OperatorError
from pilotage.queue.notify import (
    ALWAYS,
    COMPLETE,
    ERROR,
    START,
    MailSettings,
    compose,
    reason_to_mail,
)


def job(exit_code: int | None = 0, signal: int | None = None, success: int | None = None):  # type: ignore[no-untyped-def]
    spec = {"executable": "run.sh", "arguments": ["a"], "iwd": "/home/alice",
            "policy": {"success_exit_code": success}}  # fmt: skip
    return SimpleNamespace(
        spec=json.dumps(spec), exit_code=exit_code, exit_signal=signal, owner="alice",
        cluster_id=7, proc_id=1, wall_s=3.0, cpu_s=1.0,
    )  # fmt: skip


def event(to: str, trigger: str = "exit", actor: str = "pilot:p", frm: str = "RUNNING"):  # type: ignore[no-untyped-def]
    return SimpleNamespace(to_state=to, trigger=trigger, actor=actor, from_state=frm, reason="why")


@pytest.mark.parametrize(
    ("level", "ev", "jb", "said"),
    [
        (COMPLETE, event("COMPLETED"), job(0), "exited with status 0"),
        (ALWAYS, event("COMPLETED"), job(4), "exited with status 4"),
        (ERROR, event("COMPLETED"), job(0), None),
        (ERROR, event("COMPLETED"), job(2), "exited with status 2"),
        (ERROR, event("COMPLETED"), job(2, success=2), None),
        (ERROR, event("COMPLETED"), job(None, signal=9), "was killed by signal 9"),
        (ERROR, event("HELD", "hold", "alice"), job(), None),
        (ERROR, event("HELD", "hold", "policy"), job(), "was held: why"),
        (ERROR, event("HELD", "failure"), job(), "was held: why"),
        (COMPLETE, event("HELD", "failure"), job(), None),
        (ALWAYS, event("HELD", "hold", "alice"), job(), None),
        (ALWAYS, event("REMOVED", "remove", "alice", "IDLE"), job(), None),
        (ALWAYS, event("IDLE", "lease_expired"), job(), None),
        (START, event("COMPLETED"), job(0), None),
        (None, event("COMPLETED"), job(1), None),
    ],
)
def test_events_that_mail(level: int | None, ev: object, jb: object, said: str | None) -> None:
    assert reason_to_mail(level, ev, jb) == said


def test_start_mails_the_first_start_only() -> None:
    started = event("RUNNING", "claim", frm="IDLE")
    assert reason_to_mail(START, started, job(), first_start=True) == "started"
    assert reason_to_mail(START, started, job(), first_start=False) is None
    assert reason_to_mail(COMPLETE, started, job(), first_start=True) is None


def test_relay_setting_and_default_recipient() -> None:
    assert MailSettings.parse("") is None
    relay = MailSettings.parse("smtp.example.org", "pool@example.org", "example.org")
    assert relay is not None and (relay.host, relay.port) == ("smtp.example.org", 25)
    message = compose(relay, job(), event("COMPLETED"), "exited with status 0")
    assert message["To"] == "alice@example.org" and message["From"] == "pool@example.org"
    assert "Command:        run.sh a" in message.get_content()
    for bad in ("smtp:port", "smtp:0", ":25"):
        with pytest.raises(OperatorError, match="is not host:port"):
            MailSettings.parse(bad)
