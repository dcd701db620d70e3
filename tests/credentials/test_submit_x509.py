"""The X.509 submit commands and what the job's ad says about its credential."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilotage.credentials.lifetime import delegate_command
from pilotage.queue.jobad import build_job_ad, load_ad
from pilotage.queue.spec import JobSpec
from pilotage.queue.submit import SubmitError, parse_submit

HEAD = "executable = /bin/true\ntransfer_executable = false\n"


def _parse(text: str) -> list[JobSpec]:
    return parse_submit(
        HEAD + text, source="job.sub", iwd=Path("/home/alice"), cluster_id=1, owner="alice"
    )


def test_proxy_and_walltime_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X509_USER_PROXY", "/tmp/x509up_alice")
    first, second, third = _parse(
        "use_x509userproxy = true\nallowed_job_duration = 7200\nqueue\n"
        "x509userproxy = proxies/mine.pem\nqueue\n"
        "use_x509userproxy = false\nx509userproxy =\nallowed_job_duration =\nqueue\n"
    )
    assert (first.x509userproxy, first.max_walltime_s) == ("/tmp/x509up_alice", 7200)
    assert second.x509userproxy == "/home/alice/proxies/mine.pem"
    assert (third.x509userproxy, third.max_walltime_s) == (None, None)
    # The identity is the client's to fill in from the proxy file, never the parser's.
    assert first.x509_identity is None
    for bad in ("0", "1.5", "2h", "99999999"):
        with pytest.raises(SubmitError, match=r"job\.sub, line 3: .*number of seconds"):
            _parse(f"allowed_job_duration = {bad}\nqueue\n")


def test_the_ad_names_the_credential_and_a_user_cannot_claim_one() -> None:
    spec = JobSpec(executable="run", x509_identity="/O=Example/CN=Alice", max_walltime_s=600)
    ad = load_ad(build_job_ad(spec, cluster_id=1, proc_id=0, owner="alice", qdate=0))
    assert ad["x509userproxysubject"] == "/O=Example/CN=Alice"
    assert ad["AllowedJobDuration"] == 600
    forged = JobSpec(executable="run", attrs={"x509UserProxySubject": '"/O=Example/CN=Admin"'})
    ad = load_ad(build_job_ad(forged, cluster_id=1, proc_id=0, owner="mallory", qdate=0))
    assert "x509userproxysubject" not in ad


def test_the_suggested_command_leaves_ten_minutes_to_act() -> None:
    assert delegate_command(3600 + 600) == "pilotage delegate --valid 01:20"
    assert delegate_command(86400 + 3600) == "pilotage delegate --valid 25:10"
