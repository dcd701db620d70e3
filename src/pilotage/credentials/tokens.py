"""Pool tokens: JWTs signed ES256 by the pool's issuer, with WLCG-profile claims.

A token names its subject (``sub``), carries the member's groups (``wlcg.groups``) and
grants exactly one pilotage role, as the scope ``pilotage:<role>``. Other scopes may
ride along (WLCG storage scopes, say) and are ignored here.

Verification trusts nothing the token says about how to check it: the algorithm must
be ES256 (never ``none``, never an HMAC that an attacker could key with our *public*
key), and the key is picked by ``kid`` from the issuer's own keys only. Every refusal
raises :class:`~pilotage.errors.Unauthenticated` with a message that says which check
failed, so an operator can tell an expired token from a forged one.

Keys rotate: the issuer signs with its first key and accepts tokens from all of them,
so a previous key stays listed until the tokens it signed have expired.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pilotage.credentials.roles import Role as Role  # where most callers import it from
from pilotage.errors import BadInput, OperatorError, Unauthenticated

#: The one signature algorithm pool tokens use.
ALGORITHM = "ES256"
#: The WLCG token profile version pool tokens follow.
WLCG_VERSION = "1.0"
#: Clock skew tolerated between the issuer and whoever verifies, in seconds.
LEEWAY_S = 60
#: Longest token accepted at all; a real one is well under 1 KiB.
MAX_TOKEN_CHARS = 16384
#: Longest subject or group name.
MAX_NAME_CHARS = 256
#: Longest lifetime :func:`parse_lifetime` accepts (ten years).
MAX_LIFETIME_S = 3650 * 86400

_SCOPE_PREFIX = "pilotage:"
_REQUIRED_CLAIMS = ("sub", "iss", "aud", "exp", "iat", "nbf", "jti", "wlcg.ver", "scope")
_LIFETIME = re.compile(r"([0-9]+)([smhd]?)")
_LIFETIME_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says. Times are Unix epoch seconds."""

    subject: str
    role: Role
    issuer: str
    audience: str
    expires_at: float
    issued_at: float
    token_id: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class _SigningKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey


class TokenIssuer:
    """Mints and verifies the pool's tokens with its signing keys.

    ``keys`` are PEM EC P-256 private keys: the first signs new tokens, all of them
    verify (rotation keeps the previous key here until its tokens have expired).
    ``clock`` returns the current Unix time; tests pass their own.
    """

    def __init__(
        self,
        keys: list[bytes],
        issuer: str,
        audience: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not keys:
            raise OperatorError("the token issuer needs at least one signing key")
        if not issuer or not audience:
            raise OperatorError("the token issuer needs a non-empty issuer and audience")
        # Invariant: ordered as given, so the first entry is the current signing key.
        self._keys: dict[str, _SigningKey] = {}
        for index, pem in enumerate(keys):
            key = _load_signing_key(pem, index)
            kid = _thumbprint(key.public_key())
            if kid in self._keys:
                raise OperatorError(f"token signing key #{index} is listed twice")
            self._keys[kid] = _SigningKey(kid, key)
        self._current = next(iter(self._keys.values()))
        self.issuer = issuer
        self.audience = audience
        self._clock = clock
        #: Called with every minted token's claims and who asked for it (the server
        #: records them so they can be listed and revoked: credentials/issued.py).
        self.on_mint: Callable[[TokenClaims, str], None] | None = None

    @property
    def current_kid(self) -> str:
        """The key id new tokens are signed with."""
        return self._current.kid

    def mint(
        self,
        subject: str,
        role: Role,
        lifetime_s: int,
        groups: Sequence[str] = (),
        *,
        issued_by: str = "server",
    ) -> str:
        """Sign a token for ``subject`` granting ``role`` for ``lifetime_s`` seconds.

        ``issued_by`` names who asked for it, for :attr:`on_mint`. Raises
        :class:`BadInput` for an unusable subject, group or lifetime.
        """
        if not isinstance(role, Role):
            raise BadInput(f"{role!r} is not a pilotage role")
        if isinstance(lifetime_s, bool) or not isinstance(lifetime_s, int) or lifetime_s < 1:
            raise BadInput(f"token lifetime {lifetime_s!r} must be a positive number of seconds")
        if lifetime_s > MAX_LIFETIME_S:
            raise BadInput(f"token lifetime {lifetime_s} s is longer than ten years")
        _check_name(subject, "subject", BadInput)
        if isinstance(groups, str):
            raise BadInput("groups must be a sequence of group names, not one string")
        for group in groups:
            _check_name(group, "group", BadInput)
        now = int(self._clock())
        claims: dict[str, Any] = {
            "sub": subject,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime_s,
            # Hex: an id never starts with '-', which a command line would take for an option.
            "jti": secrets.token_hex(16),
            "wlcg.ver": WLCG_VERSION,
            "wlcg.groups": list(groups),
            "scope": _SCOPE_PREFIX + role.value,
        }
        token = jwt.encode(
            claims,
            self._current.private_key,
            algorithm=ALGORITHM,
            headers={"kid": self._current.kid, "typ": "JWT"},
        )
        if self.on_mint is not None:
            self.on_mint(self.verify(token), issued_by)
        return token

    def verify(self, token: str) -> TokenClaims:
        """Check a token's signature and claims; return what it says.

        Raises :class:`Unauthenticated` naming the first check that failed.
        """
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("malformed token: not a JWT of reasonable size")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("malformed token: its header is not a JWT header") from None
        if header.get("alg") != ALGORITHM:
            raise Unauthenticated(
                f"token uses algorithm {_shown(header.get('alg'))}; only {ALGORITHM} is accepted"
            )
        kid = header.get("kid")
        if kid is None:
            raise Unauthenticated("token has no key id (kid) in its header")
        signing_key = self._keys.get(kid)
        if signing_key is None:
            raise Unauthenticated(
                f"token is signed with unknown key id {_shown(kid)}; "
                "it was not issued by this pool or its key has been retired"
            )
        try:
            decoded = jwt.PyJWS().decode_complete(
                token, signing_key.private_key.public_key(), algorithms=[ALGORITHM]
            )
        except jwt.InvalidSignatureError:
            raise Unauthenticated(
                "token signature does not verify: it was forged or altered"
            ) from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("malformed token: it cannot be decoded") from None
        return self._check_claims(_parse_payload(decoded["payload"]))

    def jwks(self) -> dict[str, Any]:
        """The issuer's public keys as a JSON Web Key Set (RFC 7517), current key first."""
        return {"keys": [_public_jwk(key) for key in self._keys.values()]}

    def _check_claims(self, claims: dict[str, Any]) -> TokenClaims:
        for name in _REQUIRED_CLAIMS:
            if name not in claims:
                raise Unauthenticated(f"token is missing the {name!r} claim")
        subject = _claim_str(claims, "sub")
        _check_name(subject, "subject", Unauthenticated)
        if _claim_str(claims, "iss") != self.issuer:
            raise Unauthenticated(
                f"token was issued by {_shown(claims['iss'])}, not by this pool's issuer"
            )
        audience = claims["aud"]
        audiences = audience if isinstance(audience, list) else [audience]
        if self.audience not in audiences:
            raise Unauthenticated(f"token is meant for {_shown(audience)}, not for this pool")
        expires_at = _claim_time(claims, "exp")
        issued_at = _claim_time(claims, "iat")
        not_before = _claim_time(claims, "nbf")
        now = self._clock()
        if now > expires_at + LEEWAY_S:
            raise Unauthenticated(f"token expired {int(now - expires_at)} s ago")
        if now + LEEWAY_S < not_before:
            raise Unauthenticated(f"token is not valid yet (for another {int(not_before - now)} s)")
        if now + LEEWAY_S < issued_at:
            raise Unauthenticated("token claims to be issued in the future")
        if claims["wlcg.ver"] != WLCG_VERSION:
            raise Unauthenticated(
                f"token has wlcg.ver {_shown(claims['wlcg.ver'])}; "
                f"only {WLCG_VERSION!r} is accepted"
            )
        token_id = _claim_str(claims, "jti")
        if not token_id:
            raise Unauthenticated("token has an empty 'jti' claim")
        return TokenClaims(
            subject=subject,
            role=_role_from_scope(_claim_str(claims, "scope")),
            issuer=self.issuer,
            audience=self.audience,
            expires_at=expires_at,
            issued_at=issued_at,
            token_id=token_id,
            groups=_claim_groups(claims),
        )


def parse_lifetime(text: str) -> int:
    """Read a lifetime such as ``90s``, ``30m``, ``12h``, ``7d`` or ``3600``; return seconds.

    Raises :class:`BadInput` for anything else, for zero, and for more than ten years.
    """
    match = _LIFETIME.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise BadInput(
            f"lifetime {text!r} is not a number of seconds or a number followed by "
            "s, m, h or d (for example 90s, 30m, 12h, 7d)"
        )
    seconds = int(match.group(1)) * _LIFETIME_UNIT_S[match.group(2)]
    if seconds == 0:
        raise BadInput(f"lifetime {text!r} must be longer than zero")
    if seconds > MAX_LIFETIME_S:
        raise BadInput(f"lifetime {text!r} is longer than ten years")
    return seconds


def _load_signing_key(pem: bytes, index: int) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise OperatorError(
            f"token signing key #{index} is not an unencrypted PEM private key"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise OperatorError(f"token signing key #{index} is not an EC P-256 key (ES256 needs one)")
    return key


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _coordinates(public_key: ec.EllipticCurvePublicKey) -> tuple[str, str]:
    numbers = public_key.public_numbers()
    return _b64url(numbers.x.to_bytes(32, "big")), _b64url(numbers.y.to_bytes(32, "big"))


def _thumbprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """The RFC 7638 JWK thumbprint: SHA-256 of the canonical required members."""
    x, y = _coordinates(public_key)
    canonical = json.dumps(
        {"crv": "P-256", "kty": "EC", "x": x, "y": y}, separators=(",", ":"), sort_keys=True
    )
    return _b64url(hashlib.sha256(canonical.encode("ascii")).digest())


def _public_jwk(key: _SigningKey) -> dict[str, str]:
    x, y = _coordinates(key.private_key.public_key())
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": x,
        "y": y,
        "kid": key.kid,
        "alg": ALGORITHM,
        "use": "sig",
    }


def _shown(value: object) -> str:
    """Quote a value taken from a token for a message, cut short: it is attacker input."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _parse_payload(payload: bytes) -> dict[str, Any]:
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        # Two "sub" members could be read differently by two parsers: refuse the ambiguity.
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise ValueError(f"duplicate claim {key!r}")
            result[key] = value
        return result

    def no_constant(name: str) -> None:
        raise ValueError(f"non-JSON number {name}")

    try:
        claims = json.loads(payload, object_pairs_hook=unique, parse_constant=no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Unauthenticated(f"malformed token: its claims are not valid JSON ({exc})") from None
    if not isinstance(claims, dict):
        raise Unauthenticated("malformed token: its claims are not a JSON object")
    return claims


def _check_name(value: object, what: str, error: type[BadInput] | type[Unauthenticated]) -> None:
    if (
        not isinstance(value, str)
        or not value
        or len(value) > MAX_NAME_CHARS
        or not value.isprintable()
    ):
        raise error(
            f"token {what} {_shown(value)} must be 1 to {MAX_NAME_CHARS} printable characters"
        )


def _claim_str(claims: dict[str, Any], name: str) -> str:
    value = claims[name]
    if not isinstance(value, str):
        raise Unauthenticated(f"token claim {name!r} must be a string")
    return value


def _claim_time(claims: dict[str, Any], name: str) -> float:
    value = claims[name]
    # Bounded so float() cannot overflow and the sum with the leeway stays exact.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 2**53:
        raise Unauthenticated(f"token claim {name!r} must be a number of seconds since the epoch")
    return float(value)


def _claim_groups(claims: dict[str, Any]) -> tuple[str, ...]:
    # The WLCG profile lets a token without group memberships leave the claim out.
    groups = claims.get("wlcg.groups", [])
    if not isinstance(groups, list):
        raise Unauthenticated("token claim 'wlcg.groups' must be a list of group names")
    for group in groups:
        _check_name(group, "group", Unauthenticated)
    return tuple(groups)


def _role_from_scope(scope: str) -> Role:
    granted = [item for item in scope.split() if item.startswith(_SCOPE_PREFIX)]
    if not granted:
        raise Unauthenticated("token grants no pilotage role (no 'pilotage:<role>' scope)")
    if len(granted) > 1:
        raise Unauthenticated(
            f"token grants more than one role ({', '.join(granted)}); a token carries exactly one"
        )
    try:
        return Role(granted[0].removeprefix(_SCOPE_PREFIX))
    except ValueError:
        raise Unauthenticated(f"token grants unknown role {_shown(granted[0])}") from None
