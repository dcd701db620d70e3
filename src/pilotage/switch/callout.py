"""Asking the site's policy for a decision: the local policy file, or the remote service.

Decisions are cached (``state.Cache``) for ``cache_ttl_s``, denials included, so a pilot
retrying a banned user cannot hammer the site's service (seed 000, §4.6-4.7). A service
that cannot be reached, times out, or answers 429/503 is a transient site error (202);
only an explicit deny is 203.
"""

from __future__ import annotations

import os

from .config import check_trusted
from .refusals import Denied, SiteError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..sitepolicy.policy import Decision, Subject
    from .config import AuthzConfig
    from .identity import Identity
    from .state import Cache

API_VERSION = 1


def authorize(authz: AuthzConfig, cache: Cache, user: Identity, pilot: Identity | None) -> str:
    """The account a permit maps ``user`` to; raise ``Denied`` (203) or ``SiteError`` (202).

    On a cache hit nothing else is imported: the policy engine only on a miss.
    """
    source = authz.url if authz.kind == "remote" else f"{authz.policy} {_stamp(authz.policy)}"
    user_asked = (user.kind, user.subject, user.issuer, user.groups)
    pilot_asked = (pilot.kind, pilot.subject, pilot.issuer, pilot.groups) if pilot else None
    key = repr((source, user_asked, pilot_asked))
    cached = cache.get("decision", key)
    if isinstance(cached, tuple) and len(cached) == 3:
        permit, account, reason = cached
    else:
        from ..sitepolicy.policy import Subject

        ask = _local if authz.kind == "local" else _remote
        decision = ask(authz, Subject(*user_asked), Subject(*pilot_asked) if pilot_asked else None)
        if decision.error:
            raise SiteError(f"The site authorization failed: {decision.reason}")
        permit, account, reason = decision.permit, decision.account, decision.reason
        cache.put("decision", key, (permit, account, reason))
    if not permit:
        raise Denied(f"Authorization denied: {reason}")
    return str(account)


def _stamp(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def _local(authz: AuthzConfig, user: Subject, pilot: Subject | None) -> Decision:
    from ..sitepolicy.policy import Policy, PolicyError
    from .config import check_trusted_dir

    def check(path: str, what: str) -> None:
        if what == "gridmapdir":
            if os.path.exists(path):  # the first lease creates it, root-owned
                check_trusted_dir(path, what)
        else:
            check_trusted(path, what)

    check_trusted(authz.policy, "policy file")
    try:
        return Policy.from_file(authz.policy, check).decide(user, pilot)
    except PolicyError as exc:
        raise SiteError(f"The site policy is broken: {exc}.") from None


def _remote(authz: AuthzConfig, user: Subject, pilot: Subject | None) -> Decision:
    import http.client
    import json
    import ssl
    import urllib.parse

    from ..sitepolicy.policy import Decision

    url = urllib.parse.urlsplit(authz.url)
    try:
        context = ssl.create_default_context(cafile=authz.ca_file or None)
        if authz.client_cert:
            context.load_cert_chain(authz.client_cert, authz.client_key or None)
    except (OSError, ssl.SSLError) as exc:
        raise SiteError(f"The TLS settings for the site authorization fail ({exc}).") from None
    body = json.dumps({
        "version": API_VERSION,
        "user": user.to_json(),
        "pilot": pilot.to_json() if pilot is not None else None,
    })  # fmt: skip
    connection = http.client.HTTPSConnection(
        url.hostname or "", url.port or 443, timeout=authz.timeout_s, context=context
    )
    try:
        connection.request("POST", url.path or "/", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = response.read(65536)
    except TimeoutError:
        raise SiteError(
            f"The site authorization service at {authz.url} timed out after {authz.timeout_s} s."
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        raise SiteError(
            f"The site authorization service at {authz.url} is unreachable ({exc})."
        ) from None
    finally:
        connection.close()
    if response.status in (429, 503):
        raise SiteError(f"The site authorization service is overloaded (HTTP {response.status}).")
    if response.status != 200:
        raise SiteError(f"The site authorization service answered HTTP {response.status}.")
    try:
        answer = json.loads(payload)
        return Decision(
            bool(answer["permit"]), str(answer["account"]), str(answer["reason"]),
            bool(answer.get("error", False)),
        )  # fmt: skip
    except (ValueError, KeyError, TypeError):
        raise SiteError("The site authorization service sent an unreadable answer.") from None
