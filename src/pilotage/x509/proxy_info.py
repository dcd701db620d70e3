"""What a proxy file says about itself, without judging trust (``pilotage proxy info``).

Like ``grid-proxy-info``: subject, issuer, identity, type, path length, time left and key
size, read from the certificates alone. Nothing here is a reason to trust anything; use
``chain.validate_chain`` for that. Imports: the standard library, ``cryptography`` and the
sibling ``certificate`` module only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from .certificate import PROXY_TYPES, dn_slash, key_bits, name_key, proxy_cert_info, subject_of
from .errors import MalformedCredential


@dataclass(frozen=True)
class ProxyInfo:
    """The description of a credential's leaf certificate and the proxies above it.

    ``proxy_type`` follows ``ValidatedChain``'s rule (the most restrictive in the chain);
    ``path_length`` is how many more proxies may be made below the leaf, None when
    unlimited; ``time_left_s`` counts down to the earliest end among leaf and issuers.
    """

    subject: str
    issuer: str
    identity: str
    identity_rfc4514: str
    proxy_type: str
    path_length: int | None
    not_after: dt.datetime
    time_left_s: int
    key_bits: int

    def to_dict(self) -> dict[str, object]:
        """The fields as JSON-ready values (``not_after`` in ISO 8601, UTC)."""
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "identity": self.identity,
            "identity_rfc4514": self.identity_rfc4514,
            "type": self.proxy_type,
            "path_length": self.path_length,
            "not_after": self.not_after.isoformat(),
            "time_left_s": self.time_left_s,
            "key_bits": self.key_bits,
        }


def proxy_info(chain: Sequence[x509.Certificate], *, now: dt.datetime | None = None) -> ProxyInfo:
    """Describe ``chain`` (leaf first, as ``load_credential`` returns it)."""
    if not chain:
        raise MalformedCredential("The credential holds no certificate.")
    now = now or dt.datetime.now(dt.UTC)
    leaf = chain[0]
    walked = [leaf]
    types: list[str] = []
    path_lengths: list[int | None] = []
    current, pool = leaf, list(chain[1:])
    identity = leaf.subject
    while (info := proxy_cert_info(current)) is not None:
        types.append(PROXY_TYPES.get(info.policy_language, "unknown"))
        path_lengths.append(info.path_length)
        identity = current.issuer
        wanted = name_key(current.issuer)
        issuer = next((c for c in pool if name_key(c.subject) == wanted), None)
        if issuer is None:
            break  # The end entity is not in the file: its name is the issuer's.
        pool.remove(issuer)
        walked.append(issuer)
        current = issuer
    remaining: int | None = None
    for limit in reversed(path_lengths):  # top-down, as the validator counts
        if remaining is not None:
            remaining = max(remaining - 1, 0)
        if limit is not None and (remaining is None or limit < remaining):
            remaining = limit
    not_after = min(c.not_valid_after_utc for c in walked)
    order = ("unknown", "limited", "independent", "full")
    return ProxyInfo(
        subject=subject_of(leaf),
        issuer=dn_slash(leaf.issuer),
        identity=dn_slash(identity),
        identity_rfc4514=identity.rfc4514_string(),
        proxy_type=next((t for t in order if t in types), "none"),
        path_length=remaining,
        not_after=not_after,
        time_left_s=max(0, int((not_after - now).total_seconds())),
        key_bits=key_bits(leaf),
    )
