"""Authentication at the edge: who is calling, and with which role.

Two ways in, and nothing else:

* the Unix socket in the state directory: the kernel tells us the caller's uid
  (``SO_PEERCRED``), as in the documents' "local FS authentication". Only the socket's
  own protocol class (:class:`PeerCredentialProtocol`) sets that, so it cannot be forged
  over TCP or by a header;
* a bearer token (JWT signed by the pool's issuer) over TLS, or over the socket.

The local uid maps to the user of that name; root, the server's own user and the
configured admins get the admin role. A token's role holds only if the ``[authz]``
rules allow its subject that role (:mod:`pilotage.credentials.authz`).
"""

from __future__ import annotations

import os
import pwd
import socket
import struct
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pilotage.credentials.authz import RoleRules
from pilotage.credentials.issued import RevocationList
from pilotage.credentials.tokens import Role, TokenIssuer
from pilotage.errors import Denied, Unauthenticated

PEER_KEY = "pilotage.peer"

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    name: str
    role: Role
    via: str  # "socket" or "token"
    groups: tuple[str, ...] = ()  # VO groups (FQANs) a token carries
    #: The token's jti (revocation: pilotage.credentials.issued); not part of who it is.
    token_id: str = field(default="", compare=False)

    @property
    def admin(self) -> bool:
        return self.role is Role.ADMIN


def _peer_credentials(transport: Any) -> tuple[int, int, int] | None:
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def _with_peer(inner: ASGIApp, peer: tuple[int, int, int] | None) -> ASGIApp:
    async def with_peer(scope: Scope, receive: Any, send: Any) -> None:
        scope = dict(scope)
        scope["extensions"] = {**(scope.get("extensions") or {}), PEER_KEY: peer}
        await inner(scope, receive, send)

    return with_peer


class PeerCredentialProtocol(HttpToolsProtocol):
    """HTTP over the Unix socket, with the kernel's word on who connected in the scope.

    A connection upgraded to a WebSocket (an exec-in-job session) is served by another
    protocol object, which uvicorn gives the bare application: it gets the wrapped one.
    """

    def connection_made(self, transport: Any) -> None:
        peer = _peer_credentials(transport)
        self.app = _with_peer(self.app, peer)
        websocket = self.ws_protocol_class
        if websocket is not None:

            def upgraded(**kwargs: Any) -> Any:
                protocol: Any = websocket(**kwargs)
                protocol.app = _with_peer(protocol.app, peer)
                return protocol

            self.ws_protocol_class = upgraded  # type: ignore[assignment]
        super().connection_made(transport)


class Authenticator:
    """Turns a request into a :class:`Principal`, or refuses it."""

    def __init__(
        self, issuer: TokenIssuer, admins: tuple[str, ...], rules: RoleRules | None = None
    ) -> None:
        self.issuer = issuer
        self.admins = frozenset(admins)
        self.rules = rules
        #: Revoked tokens, refused on every call (set by the app, like ``rules``).
        self.revocations: RevocationList | None = None
        self.server_uid = os.getuid()

    def revoked(self, principal: Principal) -> bool:
        """Whether ``principal`` came with a token revoked since (for callers' caches)."""
        revocations = self.revocations
        return revocations is not None and revocations.is_revoked(principal.token_id)

    def principal(self, conn: HTTPConnection) -> Principal:
        header = conn.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
            claims = self.issuer.verify(token.strip())
            if self.revocations is not None:
                self.revocations.check(claims.token_id)
            if self.rules is not None:
                self.rules.check_token(claims.subject, claims.role, claims.groups)
            return Principal(claims.subject, claims.role, "token", claims.groups, claims.token_id)
        peer = (conn.scope.get("extensions") or {}).get(PEER_KEY)
        if peer is not None:
            return self._local(peer[1])
        raise Unauthenticated(
            "no credential: connect through the pool's Unix socket or send a bearer token "
            "(see 'pilotage token issue')"
        )

    def _local(self, uid: int) -> Principal:
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            raise Unauthenticated(f"local uid {uid} has no user name on this host") from None
        admin = uid in (0, self.server_uid) or name in self.admins
        return Principal(name, Role.ADMIN if admin else Role.USER, "socket")


def require(principal: Principal, *roles: Role) -> Principal:
    """Refuse a caller whose role is not one of ``roles``."""
    if principal.role not in roles:
        wanted = " or ".join(r.value for r in roles)
        raise Denied(f"{principal.name} has the {principal.role.value} role; this needs {wanted}")
    return principal
