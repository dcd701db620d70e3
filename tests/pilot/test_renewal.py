"""A switched job's credential over its life: renewal, identity change, expiry.

As root with the real switch (tests/pilot/switched_pool.py): the pool releases proxies of
60 s, the agent renews at a tenth of their life and stops a job 40 s before its copy ends.
Every wait is on an event (the switch's audit, the server's audit, a job state, a file the
job writes) with a generous deadline, never on the clock: a slow machine only takes longer.

- A job outlives three renewals: each proxy it sees at ``$X509_USER_PROXY`` ends later
  than the one before and names the same identity; the server audits each ``renew``; a
  re-delegation of another identity meanwhile is refused, the job keeps running, and the
  refusal is in the job's history.
- A user who re-delegates a longer credential extends the running job: its renewals,
  which had reached the stored credential's end, go on past it.
- A job whose owner destroys the stored credential and delegates another identity is
  stopped before its copy ends (TERM, then KILL as it ignores TERM), cleaned up, and held
  with code 15 and a reason naming the commands to run.
"""

from __future__ import annotations

import calendar
import datetime as dt
import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from pilot.switched_pool import ALICE, AgentPool, switch_site
from pilotage.testing import Pool
from switch.switch_site import Site

pytestmark = pytest.mark.slow

BOB = "CN=Bob,O=Example"
RENEWAL = (
    "--renewal", "fraction=0.1", "--renewal", "renew_margin_s=0", "--renewal", "retry_s=2",
    "--renewal", "expiry_margin_s=40", "--renewal", "kill_grace_s=5",
)  # fmt: skip
DEADLINE_S = 240.0


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: what is tested here is the agent and the switch, not the store."""
    return f"sqlite:///{tmp_path / 'pilotage.db'}"


@pytest.fixture
def site(require_service: Callable[[str, str], NoReturn]) -> Iterator[Site]:
    with switch_site(require_service) as the_site:
        yield the_site


@pytest.fixture
def signals() -> Iterator[Path]:
    """A directory Alice's job writes to and the test reads (and a file it waits for)."""
    path = Path(tempfile.mkdtemp(prefix="pilotage-renewal-"))
    alice = pwd.getpwnam("alice")
    os.chown(path, alice.pw_uid, alice.pw_gid)
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def agent_pool(
    site: Site, make_pool: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch, request: Any
) -> Iterator[AgentPool]:
    """The pool: releases of 60 s (or the ``release_s`` of the test's parameter)."""
    release_s = getattr(request, "param", 60)
    monkeypatch.setenv("PILOTAGE_X509_CA_DIR", str(site.pki.trust_dir))  # type: ignore[attr-defined]
    monkeypatch.setenv("PILOTAGE_CREDENTIALS_RELEASE_LIFETIME_S", str(release_s))
    # A stored credential need outlive only the job's walltime (a short one is delegated).
    monkeypatch.setenv("PILOTAGE_CREDENTIALS_LIFETIME_MARGIN_S", "0")
    pool = AgentPool.create(site, make_pool())
    yield pool
    pool.kill_agents()


def wait_for(what: str, check: Callable[[], Any], pool: AgentPool) -> Any:
    """Poll ``check`` until it returns something true, or fail naming ``what``."""
    deadline = time.monotonic() + DEADLINE_S
    while not (got := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {DEADLINE_S:.0f} s\nagent log:\n{pool.log.read_text()}")
        time.sleep(0.2)
    return got


def switch_audit(site: Site) -> list[dict[str, Any]]:
    """The switch's audit records so far (none before its first call)."""
    if not (site.root / "audit-setuid" / "audit.jsonl").exists():
        return []
    return site.audit("setuid")


def refreshes(site: Site) -> list[dict[str, Any]]:
    """The switch's ``--refresh`` records for Alice's job."""
    return [r for r in switch_audit(site) if r.get("event") == "refresh" and r.get("exit") == 0]


def events(pool: AgentPool, job: str) -> list[dict[str, Any]]:
    """The job's history as its owner sees it."""
    with pool.x509.https(pool.pool.token("alice", "user")) as http:
        answer = http.get(f"/api/v1/jobs/{job}/events")
        assert answer.status_code == 200, answer.text
        return list(answer.json())


def delegate_other_identity(pool: AgentPool) -> Any:
    """Alice delegates a proxy of Bob's certificate: the server's answer."""
    bob = pool.x509.pki.ca.issue_user(BOB)
    chain, key = pool.x509.proxy(bob, lifetime_s=3 * 3600)
    with pool.x509.https(pool.pool.token("alice", "user")) as http:
        return pool.x509.delegate(http, chain, key, lifetime_s=2 * 3600)


def not_after(text: str) -> float:
    """``notAfter=Dec  3 18:10:36 2026 GMT`` as a POSIX time."""
    stamp = time.strptime(text.strip().removeprefix("notAfter="), "%b %d %H:%M:%S %Y %Z")
    return float(calendar.timegm(stamp))


def test_a_job_outlives_three_renewals_and_keeps_its_identity(
    agent_pool: AgentPool, site: Site, signals: Path
) -> None:
    pool = agent_pool
    done = signals / "done"
    # The job notes every proxy it is given, until the test says it may end.
    # It looks at its proxy once more after the test's word, so the last renewal (audited
    # once its copy is in place) is always seen.
    script = f"""last=""
while :; do
  sum=$(cksum < "$X509_USER_PROXY")
  if [ "$sum" != "$last" ]; then
    openssl x509 -noout -subject -enddate -nameopt compat -in "$X509_USER_PROXY" | tr '\\n' ' '
    echo
    last=$sum
  fi
  [ -e {done} ] && break
  sleep 0.2
done"""
    job = pool.submit("alice", ALICE, script)
    pool.start_agent(*RENEWAL)
    wait_for("first renewal", lambda: refreshes(site), pool)

    # Alice re-delegates under another identity while the job runs: refused, audited,
    # noted in the job's history; the job goes on renewing under Alice's.
    refused = delegate_other_identity(pool)
    assert refused.status_code == 409 and refused.json()["error"] == "IdentityChanged", refused.text
    before = len(refreshes(site))
    wait_for("two more renewals", lambda: len(refreshes(site)) >= max(3, before + 2), pool)
    done.touch()
    jobs = pool.wait([job], timeout=DEADLINE_S)
    text = pool.log.read_text()
    assert (jobs[job]["state"], jobs[job]["exit_code"]) == ("COMPLETED", 0), text

    seen = list(dict.fromkeys(pool.output(job, "alice")["out.txt"].decode().splitlines()))
    ends = [not_after(line.split("notAfter=", 1)[1]) for line in seen]
    assert len(ends) >= 4, seen  # the first proxy and three renewals at least
    assert ends == sorted(ends) and len(set(ends)) == len(ends), seen
    assert all(line.startswith(f"subject={ALICE}/CN=") for line in seen), seen

    records = [r for r in pool.x509.audit() if r["job_id"] == job]
    renewed = [r for r in records if (r["event"], r["outcome"]) == ("renew", "granted")]
    assert len(renewed) >= 3 and all(r["identity"] == ALICE for r in renewed), records
    assert next(r["event"] for r in records if r["event"] in ("release", "renew")) == "release"
    audit = refreshes(site)
    assert all(r["account"] == "alice" and r["user"] == ALICE for r in audit), audit

    # No key of any proxy in the agent's log nor in the switch's audit.
    assert "PRIVATE KEY" not in text and "PRIVATE KEY" not in str(switch_audit(site))

    noted = [e for e in events(pool, job) if e["trigger"] == "identity_refused"]
    assert len(noted) == 1, events(pool, job)
    assert (noted[0]["from"], noted[0]["to"]) == ("RUNNING", "RUNNING")
    assert "/O=Example/CN=Bob" in noted[0]["reason"] and "keeps its own" in noted[0]["reason"]
    assert pool.wait_workdir_empty() == [], text


NOTE_PROXIES = """last=""
while [ ! -e {done} ]; do
  sum=$(cksum < "$X509_USER_PROXY")
  if [ "$sum" != "$last" ]; then
    openssl x509 -noout -subject -enddate -nameopt compat -in "$X509_USER_PROXY" | tr '\\n' ' '
    echo
    openssl x509 -noout -enddate -in "$X509_USER_PROXY" > {ends}.new && mv -f {ends}.new {ends}
    last=$sum
  fi
  sleep 0.2
done"""


@pytest.mark.parametrize("agent_pool", [30], indirect=True)
def test_a_longer_delegation_extends_the_running_job(
    agent_pool: AgentPool, site: Site, signals: Path
) -> None:
    pool = agent_pool
    done, ends = signals / "done", signals / "ends"
    alice_token = pool.pool.token("alice", "user")
    with pool.x509.https(alice_token) as http:
        # A stored credential of 90 s: without more, the job would be stopped 15 s
        # before it ends, as renewals cannot go past it.
        assert pool.x509.delegate(http, *pool.x509.proxy(), lifetime_s=90).status_code == 200
        stored_end = http.get("/api/v1/credential").json()["not_after"]
    job = pool.submit("alice", ALICE, NOTE_PROXIES.format(done=done, ends=ends), max_walltime_s=30)
    pool.start_agent(*RENEWAL[:-4], "--renewal", "expiry_margin_s=15")
    wait_for("the job's first credential", ends.exists, pool)
    with pool.x509.https(alice_token) as http:
        answer = pool.x509.delegate(http, *pool.x509.proxy(lifetime_s=3 * 3600), lifetime_s=7200)
        assert answer.status_code == 200 and answer.json()["refreshed"], answer.text
    wait_for(
        "a renewal past the first stored credential's end",
        lambda: ends.exists() and not_after(ends.read_text()) > stored_end + 1,
        pool,
    )
    done.touch()
    jobs = pool.wait([job], timeout=DEADLINE_S)
    text = pool.log.read_text()
    assert (jobs[job]["state"], jobs[job]["exit_code"]) == ("COMPLETED", 0), text
    seen = pool.output(job, "alice")["out.txt"].decode().splitlines()
    assert max(not_after(line.split("notAfter=", 1)[1]) for line in seen) > stored_end + 1


def test_a_job_without_a_valid_credential_is_stopped_before_it_ends_and_held(
    agent_pool: AgentPool, site: Site, signals: Path
) -> None:
    pool = agent_pool
    ends = signals / "ends"
    # The job ignores TERM (so only the KILL after the grace ends it) and keeps writing
    # where its current proxy ends.
    script = f"""trap '' TERM
while :; do
  openssl x509 -noout -enddate -in "$X509_USER_PROXY" > {ends}.new && mv -f {ends}.new {ends}
  sleep 0.5
done"""
    job = pool.submit("alice", ALICE, script)
    pool.start_agent(*RENEWAL)
    wait_for("the job's first credential", ends.exists, pool)

    # Alice destroys her stored credential and delegates Bob's: no renewal can succeed.
    with pool.x509.https(pool.pool.token("alice", "user")) as http:
        assert http.delete("/api/v1/credential").status_code == 204
    assert delegate_other_identity(pool).status_code == 200

    jobs = pool.wait([job], timeout=DEADLINE_S)
    text = pool.log.read_text()
    held = jobs[job]
    assert (held["state"], held["hold_code"]) == ("HELD", 15), text
    reason = held["hold_reason"]
    assert reason.startswith("the job's credential ran out"), reason
    assert "IdentityChanged" in reason or "NoStoredCredential" in reason, reason
    assert "'pilotage delegate'" in reason and f"'pilotage release {job}'" in reason, reason

    # Stopped before the copy it held ran out: TERM, then KILL after the grace.
    copy_end = not_after(ends.read_text())
    signalled = [r for r in site.audit("setuid") if r.get("event") == "signal"]
    term = [r for r in signalled if r["signal"] == "SIGTERM"]
    kill = [r for r in signalled if r["signal"] == "SIGKILL" and r["signalled"]]
    assert term and kill, signalled
    term_at, kill_at = _time(term[0]), _time(kill[0])
    assert term_at < copy_end - 20, (term[0], copy_end)
    assert kill_at - term_at >= 4, (term[0], kill[0])

    history = events(pool, job)
    assert any(e["trigger"] == "identity_refused" and "CN=Bob" in e["reason"] for e in history)
    records = [r for r in pool.x509.audit() if r["job_id"] == job and r["event"] == "renew"]
    assert any(r["outcome"] == "refused" for r in records), records
    # Cleaned as the user: nothing of the job is left on the node.
    assert pool.wait_workdir_empty() == [], text


def _time(record: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00")).timestamp()
