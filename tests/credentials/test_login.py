"""X.509 login against a real server: proof of possession, one-time nonces, roles, VO."""

from __future__ import annotations

import base64
import datetime as dt
import os
import stat
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from credentials.x509_pool import X509Pool, error_of, pem
from pilotage.credentials import login
from pilotage.credentials.errors import NonceExpired, NonceReplayed, UnknownNonce
from pilotage.credentials.login import login_message, sign_login
from pilotage.credentials.proxy import make_proxy
from pilotage.credentials.x509_testing import (
    forge,
    make_pki,
    proxy_extension,
    proxy_subject,
    spare_key,
)
from pilotage.store.engine import Store
from pilotage.x509.certificate import CredentialKey

ALICE = "/O=Example/CN=Alice"


def test_a_login_returns_a_session_token_for_the_dn(x509_pool: X509Pool, tmp_path: Path) -> None:
    chain, key = x509_pool.proxy()
    with x509_pool.https(None) as anonymous:
        answer = x509_pool.login(anonymous, chain, key)
    assert answer.status_code == 200, answer.text
    assert answer.json()["subject"] == ALICE
    with x509_pool.https(answer.json()["token"]) as alice:
        assert alice.get("/api/v1/whoami").json() == {"name": ALICE, "role": "user", "via": "token"}

    # The CLI does the same and keeps the token private; later remote commands use it.
    proxy_file = x509_pool.user_proxy_file(tmp_path / "x509up", lifetime_s=3600)
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    pool = x509_pool.pool
    done = pool.cli("--server", pool.url, "login", "--proxy", str(proxy_file), env=env)
    assert done.returncode == 0, done.stderr
    assert f"logged in as {ALICE} (user)" in done.stdout
    saved = tmp_path / "config" / "pilotage" / "token"
    assert stat.S_IMODE(os.stat(saved).st_mode) == 0o600
    listed = pool.cli("--server", pool.url, "q", env=env)
    assert listed.returncode == 0, listed.stderr


def test_every_bad_login_is_refused_with_its_own_error(x509_pool: X509Pool, tmp_path: Path) -> None:
    chain, key = x509_pool.proxy()
    user = x509_pool.pki.user
    with x509_pool.https(None) as http:

        def attempt(
            chain_: list[x509.Certificate],
            key_: CredentialKey,
            audience: str | None = None,
            role: str = "user",
        ) -> tuple[httpx.Response, dict[str, str]]:
            nonce = http.post("/api/v1/login/nonce").json()
            signed = login_message(nonce["nonce"], audience or nonce["audience"])
            fields = {
                "nonce": nonce["nonce"],
                "chain_pem": pem(chain_),
                "signature": base64.b64encode(sign_login(key_, signed)).decode(),
                "role": role,
            }
            return http.post("/api/v1/login/x509", json=fields), fields

        # Replay: the same nonce and signature, once more; then a nonce never issued.
        first, fields = attempt(chain, key)
        assert first.status_code == 200
        assert error_of(http.post("/api/v1/login/x509", json=fields))[:2] == (401, "NonceReplayed")
        unknown = {**fields, "nonce": "never-issued"}
        assert error_of(http.post("/api/v1/login/x509", json=unknown))[:2] == (401, "UnknownNonce")
        # Signed by a key that is not the proxy's; signed for another pool.
        other_proxy, _ = make_proxy(user.cert, user.key)
        assert error_of(attempt([other_proxy, user.cert], key)[0])[:2] == (
            401,
            "LoginSignatureInvalid",
        )
        elsewhere = attempt(chain, key, audience="pilotage:elsewhere")[0]
        assert error_of(elsewhere)[:2] == (401, "LoginSignatureInvalid")
        # A chain from a CA the pool does not trust; a limited proxy; an expired proxy.
        stranger = make_pki(tmp_path / "other", ca_subject="CN=Rogue CA,O=Evil")
        rogue, rogue_key = make_proxy(stranger.user.cert, stranger.user.key)
        limited, limited_key = x509_pool.proxy(limited=True)
        now = dt.datetime.now(dt.UTC)
        expired, expired_key = forge(
            proxy_subject(user.cert),
            (user.cert, user.key),
            key=spare_key(),
            not_before=now - dt.timedelta(hours=3),
            not_after=now - dt.timedelta(hours=1),
            extensions=[proxy_extension()],
        )
        for bad_chain, bad_key, code in (
            ([rogue, stranger.user.cert], rogue_key, "untrusted_issuer"),
            (limited, limited_key, "limited_proxy_refused"),
            ([expired, user.cert], expired_key, "expired"),
        ):
            status, kind, message = error_of(attempt(bad_chain, bad_key)[0])
            assert (status, kind) == (401, "CredentialRefused")
            assert f"({code})" in message
        # A privileged role is never granted to a DN without an [authz] entry.
        for role in ("pilot", "admin"):
            status, kind, _ = error_of(attempt(chain, key, role=role)[0])
            assert (status, kind) == (403, "IdentityNotAuthorized")


def test_vo_roles_grant_the_pilot_role_and_authz_checks_tokens(
    make_x509_pool: Callable[..., X509Pool],
) -> None:
    x509_pool = make_x509_pool(PILOTAGE_AUTHZ_PILOT="fqan:/pilotage/Role=pilot")
    pool = x509_pool.pool
    chain, key = x509_pool.proxy()
    with x509_pool.https(None) as http:
        assert error_of(x509_pool.login(http, chain, key, "pilot"))[:2] == (
            403,
            "IdentityNotAuthorized",
        )
        added = pool.cli("admin", "vo", "add", ALICE, "/pilotage/Role=pilot")
        assert added.returncode == 0 and "now holds" in added.stdout, added.stderr
        answer = x509_pool.login(http, chain, key, "pilot")
        assert answer.status_code == 200, answer.text
        assert answer.json()["groups"] == ["/pilotage/Role=pilot"]
    body = {"v": 1, "name": "p", "host": "wn", "cpus": 1, "memory_mb": 100, "disk_mb": 0}
    with x509_pool.https(answer.json()["token"]) as as_pilot:
        registered = as_pilot.post("/pilot/v1/pilots", json={**body, "lifetime_s": 60})
        assert registered.status_code == 201, registered.text
    # A pilot token the rules do not name is refused at the edge.
    with x509_pool.https(pool.token("some-pilot", "pilot")) as stray:
        refused = stray.post("/pilot/v1/pilots", json={**body, "lifetime_s": 60})
        assert error_of(refused)[:2] == (403, "IdentityNotAuthorized")
    listed = pool.cli("admin", "vo", "list", ALICE)
    assert listed.stdout.strip() == f"{ALICE}\t/pilotage/Role=pilot"
    assert pool.cli("admin", "vo", "add", ALICE, "pilotage/Role=x").returncode == 2
    assert pool.cli("admin", "vo", "remove", ALICE, "/pilotage/Role=pilot").returncode == 0
    assert pool.cli("admin", "vo", "remove", ALICE, "/pilotage/Role=pilot").returncode == 3
    with x509_pool.https(pool.token("mallory", "user")) as user:
        denied = user.post("/api/v1/vo/members", json={"identity": "mallory", "fqan": "/pilotage"})
        assert denied.status_code == 403


def test_nonces_are_one_time_and_short_lived(db_url: str) -> None:
    store = Store(db_url)
    try:
        store.migrate()
        with store.write() as conn:
            nonce, expires_at = login.issue_nonce(conn, now=1000.0)
        assert expires_at == 1000.0 + login.NONCE_TTL_S
        with pytest.raises(NonceExpired), store.write() as conn:
            login.spend_nonce(conn, nonce, now=expires_at + 1)
        with pytest.raises(UnknownNonce), store.write() as conn:
            login.spend_nonce(conn, nonce + "x", now=1001.0)
        with store.write() as conn:
            login.spend_nonce(conn, nonce, now=1001.0)
        with pytest.raises(NonceReplayed), store.write() as conn:
            login.spend_nonce(conn, nonce, now=1002.0)
    finally:
        store.dispose()
