"""The cache of verified bearer tokens: it never outlives the token, nor ``ttl_s``."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.requests import HTTPConnection

from pilotage.api.auth import Authenticator, Principal
from pilotage.api.context import VerifiedTokens
from pilotage.credentials.tokens import Role, TokenIssuer
from pilotage.errors import Unauthenticated

ISSUER = "pilotage:test"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class CountingAuthenticator(Authenticator):
    calls = 0

    def principal(self, conn: HTTPConnection) -> Principal:
        self.calls += 1
        return super().principal(conn)


def key() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def request(token: str | None) -> HTTPConnection:
    headers = [] if token is None else [(b"authorization", f"Bearer {token}".encode())]
    return HTTPConnection({"type": "http", "headers": headers})


def setup(lifetime_s: int) -> tuple[Clock, CountingAuthenticator, VerifiedTokens, str]:
    clock = Clock()
    issuer = TokenIssuer([key()], ISSUER, ISSUER, clock=clock)
    auth = CountingAuthenticator(issuer, ())
    return (
        clock,
        auth,
        VerifiedTokens(auth, clock, ttl_s=60),
        issuer.mint("p1", Role.PILOT, lifetime_s),
    )


def test_a_token_is_verified_once_per_ttl() -> None:
    clock, auth, tokens, token = setup(3600)
    for _ in range(5):
        assert tokens.principal(request(token)) == Principal("p1", Role.PILOT, "token")
    assert auth.calls == 1
    clock.now += 61
    tokens.principal(request(token))
    assert auth.calls == 2


def test_an_expired_token_is_verified_again_and_refused() -> None:
    clock, auth, tokens, token = setup(30)
    tokens.principal(request(token))
    clock.now += 30 + 3600  # past its expiry and any leeway
    with pytest.raises(Unauthenticated, match="expired"):
        tokens.principal(request(token))
    assert auth.calls == 2


def test_no_token_is_never_cached() -> None:
    _clock, auth, tokens, _token = setup(3600)
    for _ in range(2):
        with pytest.raises(Unauthenticated, match="no credential"):
            tokens.principal(request(None))
    assert auth.calls == 2
