"""notification / notify_user end to end, with a real SMTP server as the pool's relay:
mail for the events HTCondor mails for, none for the others, and a warning at submit
when the pool has no relay."""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable, Iterator

import pytest
from smtp_sink import SmtpSink

from pilotage.testing import Pool

SUBMIT = """executable = job.sh
arguments = $(code)
notification = $(note)
notify_user = alice@example.org, ops@example.org
batch_name = nightly
queue note, code from (
  complete, 0
  error, 0
  error, 3
)
"""


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    running = SmtpSink().start()
    yield running
    running.stop()


def _submit(pool: Pool, text: str) -> str:
    work = pool.root / "work"
    work.mkdir(exist_ok=True)
    (work / "job.sh").write_text("#!/bin/sh\nexit $1\n")
    (work / "job.sh").chmod(0o755)
    (work / "job.sub").write_text(text)
    result = pool.cli("submit", "job.sub", "--json", cwd=work)
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_mail_on_the_events_asked_for(make_pool: Callable[..., Pool], sink: SmtpSink) -> None:
    pool = make_pool(mail_relay=sink.relay, mail_domain="example.org")
    assert "warning" not in _submit(pool, SUBMIT)
    pool.pilots(1, cpus=3, memory_mb=1024)
    pool.wait_jobs(["1.0", "1.1", "1.2"], ("COMPLETED",))
    subjects = sorted(str(m["Subject"]) for m in sink.wait_for(2))
    assert subjects == [
        "[pilotage] Job 1.0 exited with status 0",
        "[pilotage] Job 1.2 exited with status 3",
    ]
    first = sink.wait_for(2)[0]
    assert first["To"] == "alice@example.org, ops@example.org"
    assert "Batch:          nightly" in first.get_content()
    assert sorted(sink.envelopes[0][1]) == ["<alice@example.org>", "<ops@example.org>"]
    # A later job's mail comes after every earlier event was looked at: 1.1 sent none.
    _submit(pool, "executable = job.sh\narguments = 0\nnotification = start\nqueue\n")
    pool.wait_jobs(["2.0"], ("COMPLETED",))
    mails = sink.wait_for(3)
    assert len(mails) == 3 and mails[2]["Subject"] == "[pilotage] Job 2.0 started"
    assert mails[2]["To"] == f"{pwd.getpwuid(os.geteuid()).pw_name}@example.org"


def test_no_relay_warns_at_submit(pool: Pool) -> None:
    said = _submit(pool, "executable = job.sh\nnotification = error\nqueue\n")
    assert "pilotage: warning: notification = error: this pool has no mail relay" in said
    said = _submit(pool, "executable = job.sh\nnotify_user = a@example.org\nqueue\n")
    assert "notify_user is set but notification is not" in said
