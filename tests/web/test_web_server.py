"""The pages, their sign-in and downloads against a live pool, as a browser or a script
sees them over HTTPS (no browser here: see test_browser.py)."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from web.web_pool import WebPool

PAGES = (
    "/web/",
    "/web/jobs",
    "/web/jobs?view=jobs",
    "/web/history",
    "/web/sites",
    "/web/users",
    "/web/accounting",
    "/web/accounting?by=day",
    "/web/accounting?by=group",
    "/web/accounting?by=site",
    "/web/accounting?by=final_user",
    "/web/history.csv",
    "/web/history.json",
    "/web/accounting.csv",
)


def _signed_in(web: WebPool, who: str) -> httpx.Client:
    """A cookie client signed in with ``who``'s token through the sign-in form."""
    client = web.client(None)
    answer = client.post(
        "/web/signin",
        data={"token": web.tokens[who], "next": "/web/jobs"},
        headers={"Origin": web.url},
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/web/jobs"
    return client


def test_a_visitor_without_credential_sees_only_the_sign_in_page(web_pool: WebPool) -> None:
    nobody = web_pool.client(None)
    for path in (*PAGES, "/web/jobs/1.0"):
        answer = nobody.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/web/signin?next=")
    page = nobody.get("/web/signin")
    assert page.status_code == 200
    assert "Sign in" in page.text and "alice" not in page.text and "/web/jobs" not in page.text
    headers = page.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["referrer-policy"] == "same-origin"
    assert nobody.get("/metrics").status_code == 401
    # The static files are public; they hold no data.
    assert nobody.get("/web/static/pilotage.js").status_code == 200


def test_token_sign_in_sets_a_strict_cookie_and_sign_out_ends_it(web_pool: WebPool) -> None:
    client = web_pool.client(None)
    answer = client.post(
        "/web/signin", data={"token": web_pool.tokens["alice"]}, headers={"Origin": web_pool.url}
    )
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("__Host-pilotage-session=")
    for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
        assert flag.lower() in cookie.lower(), cookie
    page = client.get("/web/")
    assert page.status_code == 200 and "Signed in as <strong>alice</strong>" in page.text
    # The session is stored hashed: the cookie's value is nowhere in the database.
    secret = client.cookies["__Host-pilotage-session"]
    with sqlite3.connect(web_pool.pool.root / "pilotage.db") as db:
        stored = db.execute("SELECT session_hash FROM web_sessions").fetchall()
    assert stored and all(secret not in row[0] for row in stored)
    out = client.post("/web/signout", headers={"Origin": web_pool.url})
    assert out.status_code == 303 and out.headers["location"] == "/web/signin"
    client.cookies.set("__Host-pilotage-session", secret, domain=httpx.URL(web_pool.url).host)
    assert client.get("/web/").status_code == 303  # the old cookie opens nothing


@pytest.mark.parametrize(
    ("form", "headers", "status", "says"),
    [
        ({"token": ""}, {}, 422, "token: paste a token"),
        ({"token": "not.a.token"}, {}, 401, ""),
        ({"token": "PILOT"}, {}, 403, "the pages are for users and admins"),
        ({"token": "ALICE"}, {"Origin": "https://evil.example"}, 403, "is refused"),
        ({"token": "ALICE"}, {"Sec-Fetch-Site": "cross-site"}, 403, "cross-site page"),
    ],
    ids=["empty", "forged", "pilot-role", "other-origin", "cross-site"],
)
def test_sign_in_refusals(web_pool: WebPool, form, headers, status, says) -> None:
    token = {"PILOT": web_pool.tokens["pilot"], "ALICE": web_pool.tokens["alice"]}
    body = {"token": token.get(form["token"], form["token"])}
    client = web_pool.client(None)
    answer = client.post("/web/signin", data=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert says in answer.text
    assert "set-cookie" not in answer.headers


def _link(web: WebPool, who: str, page: str = "overview") -> str:
    """A sign-in link from the real command, as ``who``'s token."""
    token_file = web.pool.root / f"{who}.web-token"
    token_file.write_text(web.tokens[who] + "\n")
    done = web.pool.cli("--server", web.url, "--token", str(token_file), "web", "--page", page)
    assert done.returncode == 0, done.stderr
    assert f"signs you in as {who}" in done.stderr
    (url,) = done.stdout.split()
    assert url.startswith(web.url + "/web/login?key=")
    return url[len(web.url) :]


def test_a_login_link_works_once_and_never_on_a_get(web_pool: WebPool) -> None:
    path = _link(web_pool, "bob", page=web_pool.jobs["bob"][0])
    client = web_pool.client(None)
    for _ in range(2):  # looking at it (a preview, a prefetch) does not spend it
        shown = client.get(path)
        assert shown.status_code == 200 and "Sign in as bob" in shown.text
    key = re.search(r'name="key" value="([^"]+)"', shown.text).group(1)
    target = re.search(r'name="next" value="([^"]+)"', shown.text).group(1)
    assert target == f"/web/jobs/{web_pool.jobs['bob'][0]}"
    used = client.post(
        "/web/login", data={"key": key, "next": target}, headers={"Origin": web_pool.url}
    )
    assert used.status_code == 303 and used.headers["location"] == target
    assert "exit code 3" in client.get(target).text
    again = web_pool.client(None).post(
        "/web/login", data={"key": key}, headers={"Origin": web_pool.url}
    )
    assert again.status_code == 401 and "already used" in again.text
    assert "already used" in web_pool.client(None).get(path).text


def test_login_link_refusals(web_pool: WebPool) -> None:
    nobody = web_pool.client(None)
    unknown = nobody.get("/web/login?key=" + "x" * 43)
    assert unknown.status_code == 401 and "not one this pool issued" in unknown.text
    assert nobody.get("/web/login").status_code == 422
    path = _link(web_pool, "alice")
    key = path.split("key=")[1].split("&")[0]
    # The link's lifetime passes: set its end in the past, as time would.
    with sqlite3.connect(web_pool.pool.root / "pilotage.db") as db:
        db.execute(
            "UPDATE web_login_links SET expires_at = expires_at - 3600 WHERE used_at IS NULL"
        )
    expired = nobody.post("/web/login", data={"key": key}, headers={"Origin": web_pool.url})
    assert expired.status_code == 401 and "expired" in expired.text
    assert "set-cookie" not in expired.headers
    pilot = web_pool.client("pilot").post("/api/v1/web/links", json={"v": 1})
    assert pilot.status_code == 403
    assert web_pool.client(None).post("/api/v1/web/links", json={"v": 1}).status_code == 401
    bad = web_pool.pool.cli("--server", web_pool.url, "web", "--page", "nowhere")
    assert bad.returncode == 2 and "--page 'nowhere'" in bad.stderr


def _text(client: httpx.Client, path: str) -> str:
    answer = client.get(path)
    assert answer.status_code == 200, (path, answer.text[:300])
    return answer.text


def test_a_user_sees_only_their_own_jobs_everywhere(web_pool: WebPool) -> None:
    alice = _signed_in(web_pool, "alice")
    bob_jobs = web_pool.jobs["bob"]
    mine = [*web_pool.jobs["alice"], web_pool.held]
    for path in PAGES:
        text = _text(alice, path)
        for job in bob_jobs:
            assert f"/web/jobs/{job}" not in text and f'"{job}"' not in text, (path, job)
        assert "bob" not in text, path
    history = json.loads(_text(alice, "/web/history.json"))
    assert {j["id"] for j in history} == set(web_pool.jobs["alice"][:3])
    assert all(j["owner"] == "alice" for j in history)
    rows = list(csv.DictReader(io.StringIO(_text(alice, "/web/history.csv"))))
    assert {r["id"] for r in rows} == set(web_pool.jobs["alice"][:3])
    queue = _text(alice, "/web/jobs?view=jobs")
    assert all(f"/web/jobs/{job}" in queue for job in mine[3:])
    for job in bob_jobs:
        other = alice.get(f"/web/jobs/{job}")
        assert other.status_code == 404 and "not yours" in other.text and "bob" not in other.text
    assert alice.get("/web/history?user=bob").status_code == 403
    assert alice.get("/web/jobs?owner=bob").status_code == 403
    assert alice.get("/web/history.csv?user=bob").status_code == 403
    sites = _text(alice, "/web/sites")
    assert "ce-alpha" not in sites and "for the pool's admins" in sites
    # An admin sees both users' jobs.
    admin = _signed_in(web_pool, "admin")
    every = json.loads(_text(admin, "/web/history.json"))
    assert {j["owner"] for j in every} == {"alice", "bob"}
    assert all(f"/web/jobs/{job}" in _text(admin, "/web/jobs?view=jobs") for job in bob_jobs[1:])


def test_pages_show_what_the_api_says(web_pool: WebPool) -> None:
    admin = web_pool.client("admin")  # a bearer token serves scripts without a cookie
    every = web_pool.api("admin", "GET", "/api/v1/jobs")
    overview = _text(admin, "/web/")
    for state in ("IDLE", "RUNNING", "HELD", "COMPLETED", "REMOVED"):
        count = sum(j["state"] == state for j in every)
        assert f'data-count="{state}">{count}<' in overview, state
    for entry in ("ce-alpha", "ce-beta"):
        assert f'data-joined="{entry}">1<' in overview
    sites = _text(admin, "/web/sites")
    assert "switch_missing" in sites and "frontend-1" in sites
    held = _text(admin, f"/web/jobs/{web_pool.held}")
    assert "waiting for inputs" in held and f"pilotage release {web_pool.held}" in held
    failed = _text(admin, f"/web/jobs/{web_pool.jobs['bob'][0]}")
    assert "exit code 3" in failed and "COMPLETED" in failed
    accounting = list(csv.reader(io.StringIO(_text(admin, "/web/accounting.csv?by=user"))))
    assert accounting[0] == ["user", "jobs", "cpu_hours", "wall_hours"]
    assert {row[0]: int(row[1]) for row in accounting[1:]} == {"alice": 3, "bob": 1}
    by_site = list(csv.reader(io.StringIO(_text(admin, "/web/accounting.csv?by=final_user"))))
    assert by_site[0] == ["site", "final user", "identity", "jobs", "cpu_hours", "wall_hours"]
    assert {(r[0], r[1]) for r in by_site[1:]} <= {
        (s, u) for s in ("alpha", "beta") for u in ("alice", "bob")
    }
    assert sum(int(r[3]) for r in by_site[1:]) == 4
    batches = _text(admin, "/web/jobs")
    assert "ID: " in batches


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/web/jobs?page=abc", "page: &#39;abc&#39; is not a whole number"),
        ("/web/jobs?page=0", "page: 0 is out of range"),
        ("/web/jobs?state=DONE", "state: &#39;DONE&#39; is not one of IDLE, RUNNING, HELD"),
        ("/web/jobs?cluster=x", "cluster: &#39;x&#39; is not a whole number"),
        ("/web/history?exit=300", "exit: 300 is out of range"),
        ("/web/history?since=yesterday", "since: &#39;yesterday&#39; is not a date"),
        ("/web/history?since=2026-12-02&until=2026-12-01", "until: the end of the time range"),
        ("/web/history?site=a%20b", "site: &#39;a b&#39; is not a site name"),
        ("/web/history?user=%3Cb%3E", "user: &#39;&lt;b&gt;&#39; is not a user name"),
        ("/web/?window=2d", "window: &#39;2d&#39; is not one of 1h, 6h, 24h"),
        ("/web/accounting?by=planet", "by: &#39;planet&#39; is not one of user"),
        ("/web/jobs/1.x", "is not a job id"),
        ("/web/jobs/7", "name one job as CLUSTER.PROC"),
        ("/web/jobs?owner=" + "a" * 5000, "the query string is longer than"),
    ],
)
def test_bad_filters_are_refused_by_name(web_pool: WebPool, path: str, says: str) -> None:
    answer = web_pool.client("alice").get(path)
    assert answer.status_code == 422, answer.text[:300]
    assert says in answer.text
    assert 'role="alert"' in answer.text


def test_metrics_counters_match_the_api(web_pool: WebPool) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    alice = web_pool.client("alice")
    calls = 3
    for _ in range(calls):
        assert alice.get("/api/v1/jobs").status_code == 200

    def scrape(who: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        answer = web_pool.client(who).get("/metrics")
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/plain")
        found = {}
        for family in text_string_to_metric_families(answer.text):
            for sample in family.samples:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return found

    every = web_pool.api("admin", "GET", "/api/v1/jobs")
    metrics = scrape("frontend")
    for state in ("IDLE", "RUNNING", "HELD", "COMPLETED", "REMOVED"):
        got = metrics[("pilotage_jobs", (("state", state),))]
        assert got == sum(j["state"] == state for j in every), state
    completed = [j for j in every if j["state"] == "COMPLETED"]
    ok = sum(j["exit_code"] == 0 for j in completed)
    assert metrics[("pilotage_job_completions_total", (("result", "success"),))] == ok
    assert (
        metrics[("pilotage_job_completions_total", (("result", "failure"),))] == len(completed) - ok
    )
    assert metrics[("pilotage_jobs_submitted_total", ())] == len(every)
    started = sum(j["attempts"] for j in every)
    assert metrics[("pilotage_job_starts_total", ())] == started
    assert metrics[("pilotage_claim_latency_seconds_count", ())] == started
    assert metrics[("pilotage_job_wall_seconds_count", ())] == len(completed)
    assert metrics[("pilotage_job_holds_total", ())] == 1
    for site in ("alpha", "beta"):
        assert metrics[("pilotage_slots", (("site", site),))] == 1
        assert metrics[("pilotage_slot_cpus", (("site", site),))] == 2
    running = {j["site"] for j in every if j["state"] == "RUNNING"}
    assert running == {"alpha", "beta"}
    claimed = sum(metrics[("pilotage_claimed_cpus", (("site", s),))] for s in running)
    assert claimed == sum(j["state"] == "RUNNING" for j in every)
    for entry in ("ce-alpha", "ce-beta"):
        assert metrics[("pilotage_pilots_joined", (("entry", entry),))] == 1
        assert metrics[("pilotage_pilots", (("entry", entry), ("state", "running")))] == 1
        key = (
            "pilotage_requested_pilots",
            (("entry", entry), ("frontend", "frontend-1"), ("limit", "idle")),
        )
        assert metrics[key] == 2
    failed = ("entry", "ce-beta"), ("reason", "switch_missing"), ("result", "failed")
    assert metrics[("pilotage_validation_reports_total", failed)] == 1
    route = (("method", "GET"), ("route", "/api/v1/jobs"), ("status", "200"))
    assert metrics[("pilotage_api_request_duration_seconds_count", route)] >= calls
    before = metrics[("pilotage_api_request_duration_seconds_count", route)]
    assert any(name == "pilotage_db_query_duration_seconds_count" for name, _ in metrics)
    # Counters move with what happens next: one more call, one removal.
    assert alice.get("/api/v1/jobs").status_code == 200
    victim = web_pool.jobs["bob"][1]
    web_pool.api("bob", "POST", "/api/v1/jobs/actions", json={"action": "remove", "ids": [victim]})
    after = scrape("admin")
    assert after[("pilotage_api_request_duration_seconds_count", route)] == before + 1
    assert after[("pilotage_job_removals_total", ())] == 1
    assert after[("pilotage_jobs", (("state", "REMOVED"),))] == 1
    assert web_pool.client("pilot").get("/metrics").status_code == 403
    # The shipped Grafana dashboard reads only metrics the server serves.
    served = {
        f.name
        for f in text_string_to_metric_families(web_pool.client("admin").get("/metrics").text)
    }
    dashboard = (Path(__file__).parents[2] / "docs" / "grafana-dashboard.json").read_text()
    for name in set(re.findall(r"pilotage_[a-z_]+", dashboard)):
        assert re.sub(r"_(total|bucket|count|sum)$", "", name) in served, name


def _on_a_terminal(web: WebPool, *args: str, cwd: Path | None = None) -> tuple[str, int]:
    """Run ``pilotage ARGS`` on a pseudo-terminal: what it showed, and its exit code."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: nothing here may return into pytest
        try:
            if cwd is not None:
                os.chdir(cwd)
            env = web.pool.env({"COLUMNS": "100", "TERM": "xterm"})
            os.execve(sys.executable, [sys.executable, "-m", "pilotage.cli", *args], env)
        finally:
            os._exit(127)
    seen = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return seen.decode(errors="replace"), os.waitstatus_to_exitcode(status)


def test_status_fits_80_columns_and_progress_shows_only_on_a_terminal(
    web_pool: WebPool, tmp_path: Path
) -> None:
    token = tmp_path / "alice.token"
    token.write_text(web_pool.tokens["alice"] + "\n")
    admin = tmp_path / "admin.token"
    admin.write_text(web_pool.tokens["admin"] + "\n")
    as_admin = ("--server", web_pool.url, "--token", str(admin))
    as_alice = ("--server", web_pool.url, "--token", str(token))
    status = web_pool.pool.cli(*as_admin, "status", env={"COLUMNS": "80"})
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, status.stdout
    assert sum("pilot-alpha" in line or "pilot-beta" in line for line in lines) == 2
    # Off a terminal: the answer only, no bar.
    done = web_pool.jobs["alice"][0]
    quiet = web_pool.pool.cli(*as_alice, "wait", done, "--no-fetch")
    assert quiet.returncode == 0 and quiet.stderr == "" and "\x1b" not in quiet.stdout
    # On a terminal: the bar while a job still runs (until the timeout, exit 75).
    shown, code = _on_a_terminal(
        web_pool, *as_alice, "wait", web_pool.jobs["alice"][3], "--timeout", "3", "--no-fetch"
    )
    assert "waiting: 1 jobs: 1 running" in shown and code == 75, shown
    # A big cluster's submission: a bar on a terminal, none off it.
    (tmp_path / "big.submit").write_text(
        "executable = /bin/true\ntransfer_executable = false\nrequirements = false\nqueue 150\n"
    )
    shown, code = _on_a_terminal(web_pool, *as_alice, "submit", "big.submit", cwd=tmp_path)
    assert code == 0 and "sending 150 jobs of cluster" in shown, shown
    quiet = web_pool.pool.cli(*as_alice, "submit", "big.submit", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert quiet.stdout.startswith("150 job(s) submitted to cluster")
    for cluster in {line.split()[-1].rstrip(".") for line in (shown, quiet.stdout)}:
        web_pool.pool.cli(*as_alice, "rm", cluster)


def test_shell_completion_offers_commands() -> None:
    script = Path(sys.executable).with_name("pilotage")
    env = dict(
        os.environ, _PILOTAGE_COMPLETE="complete_bash", COMP_WORDS="pilotage we", COMP_CWORD="1"
    )
    done = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.split() == ["web"], done
    shown = subprocess.run(
        [str(script), "--show-completion", "bash"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, SHELL="/bin/bash"),
    )
    assert "_PILOTAGE_COMPLETE" in shown.stdout, shown


def test_revoking_a_token_ends_the_sessions_it_opened(web_pool: WebPool) -> None:
    token = web_pool.pool.token("alice", "user")
    web_pool.tokens["alice-revoked"] = token
    client = _signed_in(web_pool, "alice-revoked")
    assert client.get("/web/jobs").status_code == 200
    revoked = web_pool.api("admin", "POST", "/api/v1/tokens/revocations", json={"token": token})
    assert [r["already_revoked"] for r in revoked] == [False]
    # The server that revoked it refuses at once: the page sends the browser to sign in.
    answer = client.get("/web/jobs")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/web/signin")
    # Sessions opened by other tokens of the same user are untouched.
    assert _signed_in(web_pool, "alice").get("/web/jobs").status_code == 200
