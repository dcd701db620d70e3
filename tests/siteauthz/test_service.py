"""``pilotage site-authz serve``: decisions over HTTPS, reload on SIGHUP without a drop."""

from __future__ import annotations

import re
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pilotage.siteauthz.testing import Service, ca_for_service

POLICY = """
gridmapdir = "{root}/gridmapdir"
[ban]
dns = [{banned}]
[[map]]
dn = "/O=Example/CN=Alice"
account = "alice"
[[map]]
group = "/cms/*"
pool = "cms"
[pools]
cms = "cms001..cms050"
"""


def write_policy(path: Path, banned: str = "") -> None:
    path.write_text(POLICY.format(root=path.parent, banned=banned))


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    policy = tmp_path / "policy.toml"
    write_policy(policy)
    running = Service(policy, ca_for_service(tmp_path), tmp_path).start()
    try:
        yield running
    finally:
        running.stop()


def ask(client: httpx.Client, url: str, subject: str, groups: tuple[str, ...] = ()) -> dict:
    body = {"version": 1, "user": {"kind": "x509", "subject": subject, "issuer": "",
                                   "groups": list(groups)}}  # fmt: skip
    response = client.post(url, json=body)
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def test_decisions(service: Service) -> None:
    with httpx.Client(verify=ssl.create_default_context(cafile=service.ca_file)) as client:
        assert ask(client, service.url, "/O=Example/CN=Alice")["account"] == "alice"
        carol = ask(client, service.url, "/O=Example/CN=Carol", ("/cms/prod",))
        assert carol["permit"] and carol["account"].startswith("cms")
        assert ask(client, service.url, "/O=Example/CN=Carol", ("/cms/prod",)) == carol
        denied = ask(client, service.url, "/O=Example/CN=Nobody")
        assert (denied["permit"], denied["reason"]) == (
            False, "No mapping rule matches '/O=Example/CN=Nobody'."
        )  # fmt: skip
        bad = client.post(service.url, json={"version": 2, "user": {}})
        assert bad.status_code == 422


def test_reload_on_sighup_drops_no_request(service: Service) -> None:
    failures: list[str] = []
    answers: list[bool] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(verify=ssl.create_default_context(cafile=service.ca_file)) as client:
            while not stop.is_set():
                try:
                    answers.append(ask(client, service.url, "/O=Example/CN=Alice")["permit"])
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        with httpx.Client(verify=ssl.create_default_context(cafile=service.ca_file)) as client:
            for generation in range(2, 7):
                banned = '"/O=Example/CN=Alice"' if generation == 6 else ""
                write_policy(service.policy, banned)
                service.reload()
                health = service.url.replace("decision", "health")
                for _ in range(200):
                    if client.get(health).json()["generation"] == generation:
                        break
                    threading.Event().wait(0.02)
                else:
                    pytest.fail(f"generation {generation} never loaded")
            threading.Event().wait(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert answers and answers[0] is True and answers[-1] is False


def test_a_broken_policy_keeps_the_old_one(service: Service) -> None:
    service.policy.write_text("map = [")
    service.reload()
    threading.Event().wait(0.5)
    with httpx.Client(verify=ssl.create_default_context(cafile=service.ca_file)) as client:
        assert ask(client, service.url, "/O=Example/CN=Alice")["account"] == "alice"
        health = client.get(service.url.replace("decision", "health")).json()
    assert health["generation"] == 1
    assert "policy reload failed" in service.log.read_text()


def test_the_decision_log_has_a_line_per_decision_and_reopens_on_sighup(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    write_policy(policy, '"/O=Example/CN=Mallory"')
    running = Service(policy, ca_for_service(tmp_path), tmp_path, decisions=True).start()
    assert running.decision_log is not None
    try:
        with httpx.Client(verify=ssl.create_default_context(cafile=running.ca_file)) as client:
            ask(client, running.url, "/O=Example/CN=Alice")
            ask(client, running.url, "/O=Example/CN=Mallory")
            bad = client.post(running.url, json={"version": 1})
            assert bad.status_code == 422  # not a decision: not logged
            alice, mallory = running.decisions()
            assert (alice["permit"], alice["account"], alice["pilot"]) == (True, "alice", None)
            assert alice["user"] == {
                "kind": "x509", "subject": "/O=Example/CN=Alice", "issuer": "", "groups": [],
            }  # fmt: skip
            assert (mallory["permit"], mallory["reason"]) == (
                False, "The DN '/O=Example/CN=Mallory' is banned."
            )  # fmt: skip
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", alice["time"])
            assert (running.decision_log.stat().st_mode & 0o777) == 0o640

            # Rotated: renamed, then SIGHUP; the next decision goes to a new file.
            rotated = running.decision_log.rename(tmp_path / "decisions.jsonl.1")
            running.reload()
            health = running.url.replace("decision", "health")
            for _ in range(200):
                if client.get(health).json()["generation"] == 2:
                    break
                threading.Event().wait(0.02)
            ask(client, running.url, "/O=Example/CN=Alice")
        assert len(rotated.read_text().splitlines()) == 2
        assert [r["account"] for r in running.decisions()] == ["alice"]
    finally:
        running.stop()


def test_a_decision_log_that_cannot_be_opened_is_refused_by_name(tmp_path: Path) -> None:
    service = Service(tmp_path / "policy.toml", ca_for_service(tmp_path), tmp_path)
    write_policy(service.policy)
    where = tmp_path / "missing" / "decisions.jsonl"
    command = [
        sys.executable, "-m", "pilotage.cli", "site-authz", "serve",
        "--policy", str(service.policy), "--cert", str(service.cert), "--key", str(service.key),
        "--host", "127.0.0.1", "--port", "0", "--decision-log", str(where),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 78, done.stderr
    assert f"the decision log {where} cannot be opened (No such file or directory)" in done.stderr
