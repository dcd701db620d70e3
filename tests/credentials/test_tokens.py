"""Pool tokens: what is minted verifies; every kind of bad token is refused, by name."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pilotage.credentials.pki import create_token_signing_key
from pilotage.credentials.tokens import (
    LEEWAY_S,
    Role,
    TokenClaims,
    TokenIssuer,
    parse_lifetime,
)
from pilotage.errors import BadInput, OperatorError, Unauthenticated

ISSUER = "https://pool.example.org"
AUDIENCE = "pilotage:pool.example.org"
NOW = 1_700_000_000
KEY = create_token_signing_key()
OTHER_KEY = create_token_signing_key()
MISSING = object()


class Clock:
    """A clock the test sets; the issuer reads it instead of the system's."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def issuer(clock: Clock) -> TokenIssuer:
    return TokenIssuer([KEY], ISSUER, AUDIENCE, clock=clock)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def private_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def claims(**changes: object) -> dict[str, Any]:
    """Valid claims for the test issuer, with some changed (or removed with MISSING)."""
    base: dict[str, Any] = {
        "sub": "alice",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 3600,
        "jti": "token-1",
        "wlcg.ver": "1.0",
        "wlcg.groups": ["/vo"],
        "scope": "pilotage:user",
    }
    for name, value in changes.items():
        name = name.replace("_", ".")
        if value is MISSING:
            del base[name]
        else:
            base[name] = value
    return base


def sign(
    payload: dict[str, Any] | bytes,
    *,
    key: bytes = KEY,
    headers: dict[str, Any] | None = None,
) -> str:
    """An ES256 JWS over exactly these bytes, with our kid unless headers say otherwise."""
    if isinstance(payload, dict):
        payload = json.dumps(payload).encode()
    if headers is None:
        headers = {"kid": kid_of(key)}
    return jwt.PyJWS().encode(payload, private_key(key), algorithm="ES256", headers=headers)


def kid_of(key_pem: bytes) -> str:
    """RFC 7638 thumbprint, written out by hand: members in lexical order, no spaces."""
    numbers = private_key(key_pem).public_key().public_numbers()
    x = b64url(numbers.x.to_bytes(32, "big"))
    y = b64url(numbers.y.to_bytes(32, "big"))
    canonical = f'{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}'
    return b64url(hashlib.sha256(canonical.encode()).digest())


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join(
        [
            b64url(json.dumps(header).encode()),
            b64url(json.dumps(payload).encode()),
            b64url(signature),
        ]
    )


def refused(issuer: TokenIssuer, token: Any) -> str:
    with pytest.raises(Unauthenticated) as caught:
        issuer.verify(token)
    return caught.value.message


# --- what is minted verifies ---------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_minted_token_verifies(issuer: TokenIssuer, role: Role) -> None:
    token = issuer.mint("alice", role, 3600, groups=["/vo", "/vo/analysis"])
    assert issuer.verify(token) == TokenClaims(
        subject="alice",
        role=role,
        issuer=ISSUER,
        audience=AUDIENCE,
        expires_at=NOW + 3600,
        issued_at=NOW,
        token_id=jwt.decode(token, options={"verify_signature": False})["jti"],
        groups=("/vo", "/vo/analysis"),
    )


def test_minted_token_has_wlcg_profile_claims(issuer: TokenIssuer) -> None:
    token = issuer.mint("CN=Alice,O=Example", Role.PILOT, 600)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "kid": kid_of(KEY), "typ": "JWT"}
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["wlcg.ver"] == "1.0"
    assert payload["wlcg.groups"] == []
    assert payload["scope"] == "pilotage:pilot"
    assert payload["nbf"] == payload["iat"] == NOW
    assert payload["exp"] == NOW + 600
    assert set(payload) == {
        "sub", "iss", "aud", "exp", "iat", "nbf", "jti", "wlcg.ver", "wlcg.groups", "scope"
    }  # fmt: skip


def test_token_ids_are_unique(issuer: TokenIssuer) -> None:
    ids = {issuer.verify(issuer.mint("alice", Role.USER, 60)).token_id for _ in range(50)}
    assert len(ids) == 50


def test_tokens_verify_with_the_published_jwks(issuer: TokenIssuer) -> None:
    # What another service would do with only the JWKS: PyJWT's own JWK support.
    token = issuer.mint("alice", Role.USER, 60)
    key_set = jwt.PyJWKSet.from_dict(issuer.jwks())
    key = key_set[jwt.get_unverified_header(token)["kid"]]
    payload = jwt.decode(
        token, key, algorithms=["ES256"], audience=AUDIENCE, issuer=ISSUER,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )  # fmt: skip
    assert payload["sub"] == "alice"


def test_jwks_lists_public_keys_only(clock: Clock) -> None:
    issuer = TokenIssuer([KEY, OTHER_KEY], ISSUER, AUDIENCE, clock=clock)
    keys = issuer.jwks()["keys"]
    assert [key["kid"] for key in keys] == [kid_of(KEY), kid_of(OTHER_KEY)]
    for key in keys:
        assert set(key) == {"kty", "crv", "x", "y", "kid", "alg", "use"}  # never "d"
        assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("EC", "P-256", "ES256", "sig")
        assert len(base64.urlsafe_b64decode(key["x"] + "=")) == 32
        assert len(base64.urlsafe_b64decode(key["y"] + "=")) == 32
    assert issuer.current_kid == kid_of(KEY)


def test_rotation_keeps_old_tokens_valid_until_the_old_key_is_dropped(clock: Clock) -> None:
    old = TokenIssuer([KEY], ISSUER, AUDIENCE, clock=clock)
    rotated = TokenIssuer([OTHER_KEY, KEY], ISSUER, AUDIENCE, clock=clock)
    retired = TokenIssuer([OTHER_KEY], ISSUER, AUDIENCE, clock=clock)
    old_token = old.mint("alice", Role.USER, 60)
    new_token = rotated.mint("alice", Role.USER, 60)
    assert jwt.get_unverified_header(new_token)["kid"] == kid_of(OTHER_KEY)
    assert rotated.verify(old_token).subject == "alice"
    assert retired.verify(new_token).subject == "alice"
    assert "unknown key id" in refused(retired, old_token)


def test_audience_list_containing_ours_is_accepted(issuer: TokenIssuer) -> None:
    token = sign(claims(aud=["https://other.example.org", AUDIENCE]))
    assert issuer.verify(token).audience == AUDIENCE


def test_groups_claim_may_be_left_out(issuer: TokenIssuer) -> None:
    assert issuer.verify(sign(claims(wlcg_groups=MISSING))).groups == ()


def test_other_scopes_ride_along(issuer: TokenIssuer) -> None:
    token = sign(claims(scope="storage.read:/ pilotage:admin compute.create"))
    assert issuer.verify(token).role is Role.ADMIN


# --- the clock, with 60 s of leeway ---------------------------------------------------


def test_expired_token_is_refused_after_the_leeway(issuer: TokenIssuer, clock: Clock) -> None:
    token = issuer.mint("alice", Role.USER, 100)
    clock.now = NOW + 100 + LEEWAY_S
    assert issuer.verify(token).subject == "alice"
    clock.now += 1
    assert refused(issuer, token) == "token expired 61 s ago"


def test_early_token_is_accepted_within_the_leeway(issuer: TokenIssuer) -> None:
    token = sign(claims(nbf=NOW + LEEWAY_S, iat=NOW + LEEWAY_S))
    assert issuer.verify(token).issued_at == NOW + LEEWAY_S


def test_not_yet_valid_token_is_refused(issuer: TokenIssuer) -> None:
    assert refused(issuer, sign(claims(nbf=NOW + 120))) == (
        "token is not valid yet (for another 120 s)"
    )


def test_token_issued_in_the_future_is_refused(issuer: TokenIssuer) -> None:
    assert refused(issuer, sign(claims(iat=NOW + 120))) == (
        "token claims to be issued in the future"
    )


# --- forgeries: the signature, the algorithm and the key -----------------------------


def public_pem() -> bytes:
    return (
        private_key(KEY)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@pytest.mark.parametrize(
    "secret",
    [public_pem(), public_pem().strip()],
    ids=["pem", "pem-stripped"],
)
def test_hs256_signed_with_the_public_key_is_refused(issuer: TokenIssuer, secret: bytes) -> None:
    # Algorithm confusion: a verifier that let the token pick the algorithm would use our
    # public key, which anyone has, as the HMAC secret.
    header = {"alg": "HS256", "typ": "JWT", "kid": kid_of(KEY)}
    signing_input = unsigned(header, claims()).rsplit(".", 1)[0]
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64url(signature)}"
    assert refused(issuer, token) == "token uses algorithm 'HS256'; only ES256 is accepted"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
def test_unsigned_token_is_refused(issuer: TokenIssuer, alg: str) -> None:
    token = unsigned({"alg": alg, "kid": kid_of(KEY)}, claims())
    assert refused(issuer, token) == f"token uses algorithm {alg!r}; only ES256 is accepted"


def test_other_asymmetric_algorithms_are_refused(issuer: TokenIssuer) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims(), key, algorithm="RS256", headers={"kid": kid_of(KEY)})
    assert refused(issuer, token) == "token uses algorithm 'RS256'; only ES256 is accepted"


def test_token_without_alg_is_refused(issuer: TokenIssuer) -> None:
    token = unsigned({"kid": kid_of(KEY)}, claims(), b"x" * 64)
    assert refused(issuer, token) == "token uses algorithm None; only ES256 is accepted"


def test_token_of_another_issuer_key_is_refused(issuer: TokenIssuer, clock: Clock) -> None:
    other = TokenIssuer([OTHER_KEY], ISSUER, AUDIENCE, clock=clock)
    message = refused(issuer, other.mint("alice", Role.ADMIN, 60))
    assert message.startswith(f"token is signed with unknown key id {kid_of(OTHER_KEY)!r}")


def test_token_without_kid_is_refused(issuer: TokenIssuer) -> None:
    assert refused(issuer, sign(claims(), headers={})) == "token has no key id (kid) in its header"


def test_token_signed_by_another_key_under_our_kid_is_refused(issuer: TokenIssuer) -> None:
    token = sign(claims(), key=OTHER_KEY, headers={"kid": kid_of(KEY)})
    assert refused(issuer, token) == "token signature does not verify: it was forged or altered"


def test_altered_claims_are_refused(issuer: TokenIssuer) -> None:
    header, _, signature = issuer.mint("alice", Role.USER, 60).split(".")
    forged_payload = b64url(json.dumps(claims(scope="pilotage:admin")).encode())
    token = f"{header}.{forged_payload}.{signature}"
    assert refused(issuer, token) == "token signature does not verify: it was forged or altered"


@pytest.mark.parametrize("crit", [["exp"], ["b64"], ["x-pilotage"], "exp", []])
def test_critical_header_extensions_are_refused(issuer: TokenIssuer, crit: object) -> None:
    # We understand no JWS extension, so a token that demands one cannot be checked.
    token = sign(claims(), headers={"kid": kid_of(KEY), "crit": crit})
    assert refused(issuer, token) == "malformed token: its header is not a JWT header"


# --- malformed tokens -----------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b.c",
        "a.b",
        "!!!.???.###",
        b"bytes.are.not-a-token",
        None,
        "x" * 20000,
        unsigned({"alg": "ES256"}, claims()).replace(".", ".x.", 1),
    ],
    ids=["empty", "one-part", "garbage", "two-parts", "bad-base64", "bytes", "none", "huge",
         "four-parts"],
)  # fmt: skip
def test_malformed_tokens_are_refused(issuer: TokenIssuer, token: Any) -> None:
    assert refused(issuer, token).startswith("malformed token")


@pytest.mark.parametrize(
    "header",
    [[1, 2], "ES256", {"alg": "ES256", "kid": 5}],
    ids=["list", "string", "int-kid"],
)
def test_malformed_headers_are_refused(issuer: TokenIssuer, header: Any) -> None:
    token = unsigned(header, claims(), b"x" * 64)
    assert refused(issuer, token) == "malformed token: its header is not a JWT header"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b'["a", "list"]', "not a JSON object"),
        (b'{"sub": "alice", "sub": "admin"}', "duplicate claim 'sub'"),
        (b'{"exp": NaN}', "non-JSON number NaN"),
        (b"\xff\xfe", "not valid JSON"),
    ],
    ids=["text", "list", "duplicate-claim", "nan", "not-utf8"],
)
def test_malformed_claims_are_refused(issuer: TokenIssuer, payload: bytes, reason: str) -> None:
    message = refused(issuer, sign(payload))
    assert message.startswith("malformed token: its claims are")
    assert reason in message


# --- each claim checked ---------------------------------------------------------------


@pytest.mark.parametrize(
    "claim", ["sub", "iss", "aud", "exp", "iat", "nbf", "jti", "wlcg.ver", "scope"]
)
def test_missing_claim_is_refused(issuer: TokenIssuer, claim: str) -> None:
    token = sign({name: value for name, value in claims().items() if name != claim})
    assert refused(issuer, token) == f"token is missing the {claim!r} claim"


def test_wrong_issuer_is_refused(issuer: TokenIssuer, clock: Clock) -> None:
    impostor = TokenIssuer([KEY], "https://evil.example.org", AUDIENCE, clock=clock)
    assert refused(issuer, impostor.mint("alice", Role.USER, 60)) == (
        "token was issued by 'https://evil.example.org', not by this pool's issuer"
    )


@pytest.mark.parametrize("audience", ["other-pool", ["other-pool", "another"], []])
def test_wrong_audience_is_refused(issuer: TokenIssuer, audience: object) -> None:
    assert refused(issuer, sign(claims(aud=audience))) == (
        f"token is meant for {audience!r}, not for this pool"
    )


@pytest.mark.parametrize("version", ["2.0", 1.0, "1"])
def test_wrong_wlcg_version_is_refused(issuer: TokenIssuer, version: object) -> None:
    assert refused(issuer, sign(claims(wlcg_ver=version))) == (
        f"token has wlcg.ver {version!r}; only '1.0' is accepted"
    )


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        ("", "token grants no pilotage role (no 'pilotage:<role>' scope)"),
        ("storage.read:/", "token grants no pilotage role (no 'pilotage:<role>' scope)"),
        (
            "pilotage:user pilotage:admin",
            "token grants more than one role (pilotage:user, pilotage:admin); "
            "a token carries exactly one",
        ),
        (
            "pilotage:user pilotage:user",
            "token grants more than one role (pilotage:user, pilotage:user); "
            "a token carries exactly one",
        ),
        ("pilotage:root", "token grants unknown role 'pilotage:root'"),
        ("pilotage:", "token grants unknown role 'pilotage:'"),
    ],
)
def test_role_must_be_exactly_one_known_role(issuer: TokenIssuer, scope: str, message: str) -> None:
    assert refused(issuer, sign(claims(scope=scope))) == message


@pytest.mark.parametrize("subject", ["", "a\nb", "x" * 257, 42])
def test_bad_subject_in_token_is_refused(issuer: TokenIssuer, subject: object) -> None:
    message = refused(issuer, sign(claims(sub=subject)))
    assert message in (
        "token claim 'sub' must be a string",
        f"token subject {subject!r} must be 1 to 256 printable characters"
        if len(repr(subject)) <= 60
        else f"token subject {repr(subject)[:57]}... must be 1 to 256 printable characters",
    )


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
@pytest.mark.parametrize(
    "value", ['"tomorrow"', "true", "null", "-1", "9223372036854775808", "1e400"]
)
def test_times_must_be_epoch_seconds(issuer: TokenIssuer, claim: str, value: str) -> None:
    # Written as JSON text: 1e400 parses to infinity, which json.dumps cannot write.
    payload = json.dumps(claims(**{claim: "VALUE"})).replace('"VALUE"', value)
    assert refused(issuer, sign(payload.encode())) == (
        f"token claim {claim!r} must be a number of seconds since the epoch"
    )


@pytest.mark.parametrize("claim", ["iss", "jti", "scope"])
def test_string_claims_must_be_strings(issuer: TokenIssuer, claim: str) -> None:
    assert refused(issuer, sign(claims(**{claim: ["a"]}))) == (
        f"token claim {claim!r} must be a string"
    )


def test_empty_token_id_is_refused(issuer: TokenIssuer) -> None:
    assert refused(issuer, sign(claims(jti=""))) == "token has an empty 'jti' claim"


@pytest.mark.parametrize("groups", ["/vo", [1], [""], ["a\tb"]])
def test_bad_groups_claim_is_refused(issuer: TokenIssuer, groups: object) -> None:
    message = refused(issuer, sign(claims(wlcg_groups=groups)))
    assert message.startswith(("token claim 'wlcg.groups' must be a list", "token group"))


def test_refusal_messages_are_distinct(issuer: TokenIssuer, clock: Clock) -> None:
    expired = issuer.mint("alice", Role.USER, 1)
    clock.now += 1000
    expired_message = refused(issuer, expired)
    clock.now = NOW
    messages = [
        refused(issuer, "a.b.c"),
        refused(issuer, unsigned({"alg": "none", "kid": kid_of(KEY)}, claims())),
        refused(issuer, sign(claims(), key=OTHER_KEY)),
        refused(issuer, sign(claims(), headers={"kid": kid_of(KEY)}, key=OTHER_KEY)),
        refused(issuer, sign(claims(iss="other"))),
        refused(issuer, sign(claims(aud="other"))),
        expired_message,
        refused(issuer, sign(claims(nbf=NOW + 3600))),
        refused(issuer, sign(claims(jti=MISSING))),
        refused(issuer, sign(claims(wlcg_ver="2.0"))),
        refused(issuer, sign(claims(scope=""))),
        refused(issuer, sign(claims(scope="pilotage:user pilotage:pilot"))),
    ]
    assert len(set(messages)) == len(messages)


# --- minting and configuration refusals -----------------------------------------------


@pytest.mark.parametrize("subject", ["", "a\nb", "x" * 257])
def test_mint_refuses_a_bad_subject(issuer: TokenIssuer, subject: str) -> None:
    with pytest.raises(BadInput, match="must be 1 to 256 printable characters"):
        issuer.mint(subject, Role.USER, 60)


def test_mint_accepts_a_subject_of_256_characters(issuer: TokenIssuer) -> None:
    assert issuer.verify(issuer.mint("x" * 256, Role.USER, 60)).subject == "x" * 256


@pytest.mark.parametrize("lifetime_s", [0, -5, True, 1.5, 3650 * 86400 + 1])
def test_mint_refuses_a_bad_lifetime(issuer: TokenIssuer, lifetime_s: Any) -> None:
    with pytest.raises(BadInput, match="lifetime"):
        issuer.mint("alice", Role.USER, lifetime_s)


def test_mint_refuses_bad_groups_and_roles(issuer: TokenIssuer) -> None:
    with pytest.raises(BadInput, match="sequence of group names"):
        issuer.mint("alice", Role.USER, 60, groups="/vo")
    with pytest.raises(BadInput, match="token group '' must be"):
        issuer.mint("alice", Role.USER, 60, groups=[""])
    with pytest.raises(BadInput, match="is not a pilotage role"):
        issuer.mint("alice", "admin", 60)  # type: ignore[arg-type]


def test_issuer_needs_usable_keys() -> None:
    with pytest.raises(OperatorError, match="at least one signing key"):
        TokenIssuer([], ISSUER, AUDIENCE)
    with pytest.raises(OperatorError, match="#0 is not an unencrypted PEM private key"):
        TokenIssuer([b"garbage"], ISSUER, AUDIENCE)
    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(OperatorError, match="#1 is not an EC P-256 key"):
        TokenIssuer([KEY, p384], ISSUER, AUDIENCE)
    with pytest.raises(OperatorError, match="#1 is listed twice"):
        TokenIssuer([KEY, KEY], ISSUER, AUDIENCE)
    with pytest.raises(OperatorError, match="non-empty issuer and audience"):
        TokenIssuer([KEY], "", AUDIENCE)


# --- lifetimes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("12h", 43200),
        ("7d", 604800),
        ("3600", 3600),
        (" 5m ", 300),
        ("3650d", 3650 * 86400),
    ],
)
def test_parse_lifetime(text: str, seconds: int) -> None:
    assert parse_lifetime(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not a number of seconds"),
        ("soon", "is not a number of seconds"),
        ("1.5h", "is not a number of seconds"),
        ("-5m", "is not a number of seconds"),
        ("5 m", "is not a number of seconds"),
        ("12H", "is not a number of seconds"),
        ("1w", "is not a number of seconds"),
        ("٣s", "is not a number of seconds"),
        ("0", "must be longer than zero"),
        ("0d", "must be longer than zero"),
        ("3651d", "longer than ten years"),
        ("9" * 40, "longer than ten years"),
    ],
)
def test_parse_lifetime_refuses(text: str, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        parse_lifetime(text)
