"""The switch against ``pilotage site-authz``: 202 when unreachable, 203 when denied, cache."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from switch_site import Credentials, Site, run_switch

from pilotage.siteauthz.testing import Service, ca_for_service


@pytest.fixture(scope="module")
def service(site: Site) -> Iterator[Service]:
    directory = site.root / "authz"
    directory.mkdir(exist_ok=True)
    policy = site.root / "policy-remote-service.toml"
    policy.write_text((site.root / "policy-setuid.toml").read_text())
    running = Service(policy, ca_for_service(directory), directory).start()
    authz = (
        f'[authz]\nkind = "remote"\nurl = "{running.url}"\n'
        f'ca_file = "{running.ca_file}"\ntimeout_s = 3\n'
    )
    site.install("remote", "setuid", authz=authz)
    try:
        yield running
    finally:
        running.stop()


def test_remote_decisions(site: Site, creds: Credentials, service: Service) -> None:
    wrapper = site.installs["remote"]
    result = run_switch(wrapper, ["--", "id", "-un"], user=creds.made["alice"])
    assert (result.returncode, result.stdout, result.stderr) == (0, "alice\n", "")
    banned = run_switch(wrapper, ["--", "true"], user=creds.made["mallory"])
    assert banned.returncode == 203
    assert "Authorization denied: The DN '/O=Example/CN=Mallory' is banned." in banned.stderr


def test_stopped_service_is_202_and_the_cache_still_serves(
    site: Site, creds: Credentials, service: Service
) -> None:
    wrapper = site.installs["remote"]
    assert run_switch(wrapper, ["--", "true"], user=creds.made["bob"]).returncode == 0
    service.stop()
    try:
        fresh = creds.token("frank", ("/cms",))  # nobody asked about frank yet
        result = run_switch(wrapper, ["--", "true"], user=fresh)
        assert result.returncode == 202
        assert f"The site authorization service at {service.url} is unreachable" in result.stderr
        # Bob's decision is still in the cache (TTL 60 s): no call, no error.
        warm = run_switch(wrapper, ["--", "id", "-un"], user=creds.made["bob"])
        assert (warm.returncode, warm.stdout) == (0, "bob\n")
    finally:
        service.start()


def test_a_silent_service_times_out_as_202(site: Site, creds: Credentials) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts into the backlog, never answers the TLS handshake
    try:
        port = silent.getsockname()[1]
        authz = f'[authz]\nkind = "remote"\nurl = "https://localhost:{port}/v1/decision"\n'
        authz += "timeout_s = 1\n"
        wrapper = site.installs.get("silent") or site.install("silent", "setuid", authz=authz)
        result = run_switch(wrapper, ["--", "true"], user=creds.made["alice"])
        assert result.returncode == 202
        assert "timed out after 1.0 s" in result.stderr
    finally:
        silent.close()
