"""X.509 login: prove possession of a proxy's key by signing a server nonce.

The flow (``pilotage login``)::

    client                                       server
      POST /api/v1/login/nonce            ──▶    a random 256-bit nonce, stored hashed,
                                          ◀──    valid NONCE_TTL_S seconds
      sign login_message(nonce, audience)
      with the proxy's private key
      POST /api/v1/login/x509             ──▶    spend the nonce (any attempt spends it),
        {nonce, chain_pem, signature, role}      validate the chain (trust directory),
                                                 verify the signature with the leaf's key,
                                                 apply [authz] for the role asked,
                                          ◀──    a session token for the identity (the
                                                 end-entity DN), with its VO groups

The signed message names the pool's audience, so a signature made for one pool is no
use at another; the nonce is one-time, so a captured login cannot be replayed. The key
never leaves the client. Limited proxies are refused: they are for data transfer only.
"""

from __future__ import annotations

import hashlib
import secrets

import sqlalchemy as sa
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

from pilotage.credentials.errors import (
    CredentialRefused,
    LoginSignatureInvalid,
    NonceExpired,
    NonceReplayed,
    UnknownNonce,
)
from pilotage.store.tables import login_nonces
from pilotage.x509.certificate import CredentialKey
from pilotage.x509.chain import (
    CredentialError,
    TrustStore,
    ValidatedChain,
    load_credential,
    validate_chain,
)

NONCE_TTL_S = 120
_MESSAGE_PREFIX = b"pilotage-login-v1\x00"


def login_message(nonce: str, audience: str) -> bytes:
    """The bytes a client signs: a fixed prefix, the pool's audience and the nonce."""
    return _MESSAGE_PREFIX + audience.encode() + b"\x00" + nonce.encode()


def sign_login(key: CredentialKey, message: bytes) -> bytes:
    """The client's half: sign ``message`` with a proxy's key (RSA-PSS or ECDSA, SHA-256)."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, _PSS, hashes.SHA256())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(hashes.SHA256()))
    return key.sign(message)


def issue_nonce(conn: sa.Connection, now: float) -> tuple[str, float]:
    """A new nonce and its end; only its hash is stored."""
    nonce = secrets.token_urlsafe(32)
    expires_at = now + NONCE_TTL_S
    conn.execute(
        sa.insert(login_nonces).values(
            nonce_hash=_hash(nonce), created_at=now, expires_at=expires_at, used_at=None
        )
    )
    # Expired nonces are of no use to anyone; drop them here rather than in a timer.
    conn.execute(sa.delete(login_nonces).where(login_nonces.c.expires_at < now - NONCE_TTL_S))
    return nonce, expires_at


def spend_nonce(conn: sa.Connection, nonce: str, now: float) -> None:
    """Mark ``nonce`` used, or refuse it as unknown, expired or replayed."""
    row = conn.execute(
        sa.select(login_nonces).where(login_nonces.c.nonce_hash == _hash(nonce))
    ).first()
    if row is None:
        raise UnknownNonce("the login nonce was not issued by this pool; ask for a new one")
    # Why: the conditional update is the one atomic test-and-set, also across servers.
    spent = conn.execute(
        sa.update(login_nonces)
        .where(login_nonces.c.nonce_hash == row.nonce_hash, login_nonces.c.used_at.is_(None))
        .values(used_at=now)
    )
    if spent.rowcount != 1:
        raise NonceReplayed("the login nonce was already used: a login cannot be replayed")
    if row.expires_at < now:
        raise NonceExpired(f"the login nonce expired {int(now - row.expires_at)} s ago")


def check_login(
    chain_pem: bytes,
    signature: bytes,
    message: bytes,
    *,
    trust: TrustStore,
    require_crl: bool = False,
) -> ValidatedChain:
    """Validate the chain against ``trust``, then the signature of ``message`` by its leaf.

    The caller then applies ``[authz]`` to the identity (``RoleRules.check_login``).
    """
    try:
        chain, _ = load_credential(chain_pem)
        validated = validate_chain(chain, trust, allow_limited=False, require_crl=require_crl)
    except CredentialError as exc:
        raise CredentialRefused(exc) from None
    _verify(chain[0], signature, message)
    return validated


_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


def _verify(leaf: x509.Certificate, signature: bytes, message: bytes) -> None:
    public_key = leaf.public_key()
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, message, _PSS, hashes.SHA256())
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            public_key.verify(signature, message)
        else:
            raise InvalidSignature
    except InvalidSignature:
        raise LoginSignatureInvalid(
            "the login signature does not verify with the key of the proxy presented"
        ) from None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
