"""The provisioning API on a real server: entries, requests, pilot tokens, idle
autoclusters and validation reports; every refusal with its status and field."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from pilotage.cli.client import Client
from pilotage.errors import BadInput, Conflict, Denied, NotFound, PilotageError
from pilotage.testing import Pool

AD = {"Site": "alpha", "Cpus": 2, "Memory": 2048, "OpSys": "LINUX", "HasSwitch": False}


def _refused(client: Client, kind: type[PilotageError], method: str, path: str, **kw: Any) -> str:
    with pytest.raises(kind) as caught:
        client.call(method, path, **kw)
    return caught.value.message


@pytest.fixture
def remote(pool: Pool) -> Iterator[Any]:
    """``remote(token)``: a client over TLS with a bearer token; closed after the test."""
    with ExitStack() as stack:

        def open_client(token: str) -> Client:
            return stack.enter_context(pool.remote(token))

        yield open_client


def test_entries_requests_and_tokens(pool: Pool, remote: Any) -> None:
    factory = remote(pool.token("factory-1", "factory"))
    other_factory = remote(pool.token("factory-2", "factory"))
    frontend = remote(pool.token("vo-frontend", "frontend"))
    user = remote(pool.token("alice", "user"))

    advert = {"ad": AD, "pilots": {"idle": 1, "running": 2, "held": 0}}
    factory.call("PUT", "/api/v1/entries/alpha", json=advert)
    factory.call("PUT", "/api/v1/entries/alpha", json=advert)  # an update
    assert "another factory (factory-1)" in _refused(
        other_factory, Conflict, "PUT", "/api/v1/entries/alpha", json=advert
    )
    # Wrong roles: 403; malformed bodies: 422 naming the field.
    _refused(frontend, Denied, "PUT", "/api/v1/entries/alpha", json=advert)
    _refused(user, Denied, "GET", "/api/v1/entries")
    assert "pilots.idle" in _refused(
        factory, BadInput, "PUT", "/api/v1/entries/alpha", json={**advert, "pilots": {"idle": -1}}
    )
    assert "colour" in _refused(
        factory, BadInput, "PUT", "/api/v1/entries/alpha", json={**advert, "colour": 1}
    )
    assert "ad.EntryName" in _refused(
        factory, BadInput, "PUT", "/api/v1/entries/alpha", json={"ad": {"EntryName": "beta"}}
    )
    _refused(factory, BadInput, "PUT", "/api/v1/entries/bad%20name", json=advert)

    [entry] = frontend.call("GET", "/api/v1/entries")
    assert entry["name"] == "alpha" and entry["factory"] == "factory-1"
    assert entry["ad"]["EntryName"] == "alpha" and entry["ad"]["Cpus"] == 2
    assert entry["pilots"] == {"idle": 1, "running": 2, "held": 0}
    assert entry["registered"] == {"total": 0, "busy": 0}

    # Pilot tokens: frontends only, known entries only, short-lived.
    minted = frontend.call(
        "POST", "/api/v1/pilot-tokens", json={"entry": "alpha", "lifetime_s": 600}
    )
    assert minted["subject"] == "entry:alpha/vo-frontend"
    _refused(
        factory, Denied, "POST", "/api/v1/pilot-tokens", json={"entry": "alpha", "lifetime_s": 600}
    )
    assert "lifetime_s" in _refused(
        frontend,
        BadInput,
        "POST",
        "/api/v1/pilot-tokens",
        json={"entry": "alpha", "lifetime_s": 10**7},
    )
    _refused(
        frontend,
        NotFound,
        "POST",
        "/api/v1/pilot-tokens",
        json={"entry": "gamma", "lifetime_s": 600},
    )

    request = {
        "idle_wanted": 2,
        "max_running": 5,
        "switch_mode": "never",
        "pilot_token": minted["token"],
    }
    frontend.call("PUT", "/api/v1/requests/vo-frontend/alpha", json=request)
    _refused(frontend, Denied, "PUT", "/api/v1/requests/someone-else/alpha", json=request)
    _refused(factory, Denied, "PUT", "/api/v1/requests/factory-1/alpha", json=request)
    _refused(frontend, NotFound, "PUT", "/api/v1/requests/vo-frontend/gamma", json=request)
    assert "removal" in _refused(
        frontend,
        BadInput,
        "PUT",
        "/api/v1/requests/vo-frontend/alpha",
        json={**request, "removal": "some"},
    )
    assert "pilot_token" in _refused(
        frontend,
        BadInput,
        "PUT",
        "/api/v1/requests/vo-frontend/alpha",
        json={**request, "pilot_token": pool.token("entry:alpha/x", "user")},
    )

    [seen] = factory.call("GET", "/api/v1/requests")
    assert seen["idle_wanted"] == 2 and seen["pilot_token"] == minted["token"]
    assert other_factory.call("GET", "/api/v1/requests") == []
    _refused(frontend, Denied, "GET", "/api/v1/requests")
    with pool.admin() as admin:
        [redacted] = admin.call("GET", "/api/v1/requests")
    assert redacted["pilot_token"] is None

    # Validation reports: the pilot of the entry (or its factory); nobody else.
    pilot = remote(minted["token"])
    report = {
        "entry": "alpha",
        "pilot": "p-1",
        "ok": False,
        "reason": "file_mismatch",
        "message": "file agent.pyz does not match the manifest",
        "file": "agent.pyz",
    }
    pilot.call("POST", "/api/v1/validation-reports", json=report)
    factory.call("POST", "/api/v1/validation-reports", json={**report, "pilot": "p-2"})
    _refused(other_factory, Denied, "POST", "/api/v1/validation-reports", json=report)
    _refused(frontend, Denied, "POST", "/api/v1/validation-reports", json=report)
    assert "reason" in _refused(
        pilot,
        BadInput,
        "POST",
        "/api/v1/validation-reports",
        json={**report, "reason": "Bad Reason"},
    )
    reports = frontend.call("GET", "/api/v1/validation-reports", params={"entry": "alpha"})
    assert [r["pilot"] for r in reports] == ["p-2", "p-1"]
    assert reports[1]["details"] == {"file": "agent.pyz"}
    assert reports[1]["reporter"] == "entry:alpha/vo-frontend"


def test_idle_autoclusters_from_the_queue(pool: Pool, remote: Any) -> None:
    work = pool.root / "work"
    work.mkdir()
    shutil.copy("/bin/true", work / "run")
    (work / "a.submit").write_text(
        'executable = run\nrequest_cpus = 2\nrequest_memory = 100MB\n+Flavour = "beta"\n'
        "requirements = TARGET.Site == MY.Flavour\nqueue 3\n"
    )
    (work / "b.submit").write_text("executable = run\nqueue 2\n")
    for name in ("a.submit", "b.submit", "a.submit"):
        assert pool.cli("submit", name, cwd=work).returncode == 0
    frontend = remote(pool.token("vo-frontend", "frontend"))
    groups = frontend.call("GET", "/api/v1/idle-autoclusters")
    assert [(g["idle"], g["cpus"], g["memory_mb"]) for g in groups] == [(6, 2, 100), (2, 1, 128)]
    assert groups[0]["requirements"] == "TARGET.Site == MY.Flavour"
    assert groups[0]["attrs"] == {"flavour": "beta"}
    assert groups[1]["requirements"] == "true"
    _refused(remote(pool.token("f", "factory")), Denied, "GET", "/api/v1/idle-autoclusters")


def test_entry_scoped_pilot_tokens_register_only_their_entry(pool: Pool, remote: Any) -> None:
    factory = remote(pool.token("factory-1", "factory"))
    frontend = remote(pool.token("vo-frontend", "frontend"))
    for name, site in (("alpha", "SITE_A"), ("beta", "SITE_B")):
        advert = {"ad": {**AD, "Site": site}, "pilots": {"idle": 0, "running": 0, "held": 0}}
        factory.call("PUT", f"/api/v1/entries/{name}", json=advert)
    minted = frontend.call(
        "POST", "/api/v1/pilot-tokens", json={"entry": "alpha", "lifetime_s": 600}
    )
    pilot = remote(minted["token"])
    body = {
        "name": "pilot-1",
        "site": "SITE_A",
        "host": "node1",
        "cpus": 1,
        "memory_mb": 512,
        "disk_mb": 100,
        "lifetime_s": 600,
        "attrs": {"EntryName": '"alpha"'},
    }
    assert pilot.call("POST", "/pilot/v1/pilots", json=body)["pilot_id"].startswith("p-")

    def refused(**changes: Any) -> str:
        return _refused(pilot, Denied, "POST", "/pilot/v1/pilots", json={**body, **changes})

    assert 'cannot register a pilot of entry "beta" (EntryName)' in refused(
        attrs={"EntryName": '"beta"'}
    )
    # ClassAd names ignore case: a second spelling cannot smuggle another entry in.
    assert "(EntryName)" in refused(attrs={"EntryName": '"alpha"', "entryname": '"beta"'})
    assert "must register with EntryName = 'alpha'" in refused(attrs={})
    assert "(site SITE_A) cannot register a pilot of site SITE_B" in refused(site="SITE_B")

    # A pilot token an admin issued (no entry in its subject) may not pass for an entry,
    # but registers pilots of a site no entry advertises.
    plain = remote(pool.token("pilot-anywhere", "pilot"))
    anywhere = {**body, "site": "SITE_B", "attrs": {"EntryName": '"beta"'}}
    assert "cannot register a pilot of entry beta" in _refused(
        plain, Denied, "POST", "/pilot/v1/pilots", json=anywhere
    )
    own_site = {**body, "site": "ADMIN_SITE", "attrs": {}}
    assert plain.call("POST", "/pilot/v1/pilots", json=own_site)["pilot_id"].startswith("p-")
