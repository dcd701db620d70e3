"""Verifying bearer tokens (ES256 JWTs, WLCG profile) with the issuers' keys the site trusts.

The site lists each issuer it accepts with a root-owned JWKS file (RFC 7517) holding that
issuer's public keys. Nothing the token says is trusted to choose how it is checked: the
issuer must be listed, the algorithm must be ES256, and the key is picked by ``kid`` from
that issuer's file only. Imports: the standard library, ``cryptography``, and the sibling
modules ``config`` and ``refusals``.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any, NamedTuple

from .config import check_trusted
from .refusals import ClientError, SiteError

LEEWAY_S = 60
MAX_TOKEN_CHARS = 16384


class TokenIdentity(NamedTuple):
    """What a verified token says about its holder."""

    issuer: str
    subject: str
    groups: tuple[str, ...]
    expires_at: float


def verify(
    token: str, issuers: dict[str, str], audiences: tuple[str, ...], *, now: float | None = None
) -> TokenIdentity:
    """Check ``token`` against the JWKS file of its issuer; raise ``ClientError`` if bad.

    ``issuers`` maps each accepted issuer to its JWKS file; ``audiences`` lists the values
    of ``aud`` accepted (empty: any). A JWKS file that is unsafe or unreadable is the
    site's fault and raises ``SiteError``.
    """
    token = token.strip()
    parts = token.split(".")
    if len(token) > MAX_TOKEN_CHARS or len(parts) != 3:
        raise ClientError("The token is not a JWT (three dot-separated parts).")
    header, claims = _json_part(parts[0], "header"), _json_part(parts[1], "claims")
    if header.get("alg") != "ES256":
        raise ClientError(f"The token uses algorithm {_shown(header.get('alg'))}; only ES256.")
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or issuer not in issuers:
        raise ClientError(f"The token's issuer {_shown(issuer)} is not trusted by this site.")
    key = _issuer_key(issuers[issuer], header.get("kid"), issuer)
    _check_signature(key, f"{parts[0]}.{parts[1]}".encode("ascii"), _b64(parts[2], "signature"))
    return _check_claims(claims, issuer, audiences, time.time() if now is None else now)


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ClientError(f"The token's {what} is not base64url.") from None


def _json_part(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64(text, what))
    except (ValueError, UnicodeDecodeError):
        raise ClientError(f"The token's {what} is not JSON.") from None
    if not isinstance(value, dict):
        raise ClientError(f"The token's {what} is not a JSON object.")
    return value


def _issuer_key(jwks_path: str, kid: object, issuer: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    check_trusted(jwks_path, "issuer key file")
    try:
        with open(jwks_path, "rb") as f:
            keys = json.load(f)["keys"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SiteError(f"The issuer key file {jwks_path} cannot be read ({exc}).") from None
    for jwk in keys:
        if isinstance(jwk, dict) and jwk.get("kid") == kid and jwk.get("kty") == "EC":
            try:
                numbers = ec.EllipticCurvePublicNumbers(
                    int.from_bytes(_b64(jwk["x"], "key"), "big"),
                    int.from_bytes(_b64(jwk["y"], "key"), "big"),
                    ec.SECP256R1(),
                )
                return numbers.public_key()
            except (KeyError, ValueError, ClientError):
                raise SiteError(f"The key {kid!r} in {jwks_path} is not a P-256 key.") from None
    raise ClientError(f"The token's key id {_shown(kid)} is not a key of issuer {issuer}.")


def _check_signature(key: Any, signed: bytes, signature: bytes) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    # Why: JWS carries r||s (64 bytes for P-256); cryptography wants DER.
    if len(signature) != 64:
        raise ClientError("The token's signature does not verify: forged or altered.")
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), signed, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ClientError("The token's signature does not verify: forged or altered.") from None


def _check_claims(
    claims: dict[str, Any], issuer: str, audiences: tuple[str, ...], now: float
) -> TokenIdentity:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject or not subject.isprintable():
        raise ClientError("The token has no usable subject (sub).")
    times = {}
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name, 0 if name != "exp" else None)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ClientError(f"The token's {name} claim is missing or not a number.")
        times[name] = float(value)
    if now > times["exp"] + LEEWAY_S:
        raise ClientError(f"The token expired {int(now - times['exp'])} s ago.")
    if now + LEEWAY_S < max(times["nbf"], times["iat"]):
        raise ClientError("The token is not valid yet.")
    aud = claims.get("aud")
    given = aud if isinstance(aud, list) else [aud]
    if audiences and not set(audiences) & {a for a in given if isinstance(a, str)}:
        raise ClientError(f"The token is meant for {_shown(aud)}, not for this site.")
    groups = claims.get("wlcg.groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ClientError("The token's wlcg.groups claim is not a list of group names.")
    return TokenIdentity(issuer, subject, tuple(groups), times["exp"])


def _shown(value: object) -> str:
    """A value taken from the token, quoted and cut short: it is attacker input."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
