"""Everything a request handler needs, built once when the server starts."""

from __future__ import annotations

import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO, TypeVar, cast

import jwt
import sqlalchemy as sa
from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from pilotage.api.auth import Authenticator, Principal
from pilotage.api.workwait import WorkWaits
from pilotage.collector.pilot_admin import PILOTS_NOTE
from pilotage.config import Settings
from pilotage.credentials.tokens import TokenIssuer
from pilotage.matchmaking.service import MatchService, MatchSettings
from pilotage.queue.history import IDLE_NOTE, NOT_IDLE_NOTE, Actor
from pilotage.queue.sandbox import SandboxTooLarge
from pilotage.queue.spool import Spool, Upload, make_spool
from pilotage.statedir import StateDir
from pilotage.store.engine import Store

T = TypeVar("T")


class VerifiedTokens:
    """Callers of recently verified bearer tokens, so a pilot's every call does not
    verify its token's signature again (an ES256 verification costs about as much as
    the rest of a dispatch call).

    A token is served from here only while it is unexpired and for at most ``ttl_s``
    after it was verified, so a retired signing key stops working within ``ttl_s``.
    Anything but a bearer token goes to the authenticator every time.
    """

    def __init__(
        self,
        authenticator: Authenticator,
        clock: Callable[[], float],
        *,
        ttl_s: float = 60.0,
        size: int = 10_000,
    ) -> None:
        self._authenticator = authenticator
        self._clock = clock
        self._ttl_s = ttl_s
        self._size = size
        # Invariant: an entry (principal, until) was verified by the authenticator and
        # ``until`` is no later than the token's expiry.
        self._known: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def principal(self, conn: HTTPConnection) -> Principal:
        header = conn.headers.get("authorization")
        now = self._clock()
        known = self._known.get(header) if header is not None else None
        if known is not None:
            # A token revoked since it was cached goes to the authenticator, which refuses it.
            if now < known[1] and not self._authenticator.revoked(known[0]):
                return known[0]
            del self._known[header]  # type: ignore[arg-type]
        who = self._authenticator.principal(conn)
        if header is not None and who.via == "token":
            until = min(now + self._ttl_s, _expiry(header))
            self._known[header] = (who, until)
            if len(self._known) > self._size:
                self._known.popitem(last=False)
        return who


def _expiry(header: str) -> float:
    """The expiry of the (just verified) bearer token in ``header``."""
    token = header.partition(" ")[2].strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    return float(claims["exp"])


@dataclass
class ServerContext:
    """The server's long-lived parts: settings, store, spool, token issuer, caches."""

    settings: Settings
    state: StateDir
    store: Store
    spool: Spool
    issuer: TokenIssuer
    authenticator: Authenticator
    matcher: MatchService
    clock: Callable[[], float] = time.time
    tokens: VerifiedTokens = field(init=False)
    #: Requests for work held open until a job may be there (api/workwait.py).
    waits: WorkWaits = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = VerifiedTokens(self.authenticator, self.clock)
        self.waits = WorkWaits()
        self.store.listen(IDLE_NOTE, self.waits.wake)
        self.store.listen(PILOTS_NOTE, self.waits.wake)
        self.store.listen(NOT_IDLE_NOTE, lambda events: self.matcher.passed(events))

    @classmethod
    def build(cls, state: StateDir, settings: Settings, store: Store) -> ServerContext:
        issuer = TokenIssuer(state.signing_keys(), issuer=settings.issuer, audience=settings.issuer)
        spool = make_spool(
            state.spool,
            store,
            settings.server.spool,
            max_bytes=settings.server.max_sandbox_mb * 1024 * 1024,
            max_members=settings.server.max_sandbox_members,
        )
        return cls(
            settings=settings,
            state=state,
            store=store,
            spool=spool,
            issuer=issuer,
            authenticator=Authenticator(issuer, settings.server.admins),
            matcher=MatchService(
                MatchSettings(
                    half_life_s=settings.server.fairshare_half_life_s,
                    full_sync_s=settings.server.match_full_sync_s,
                    group_quotas=settings.server.group_quotas,
                    groups_accept_surplus=settings.server.groups_accept_surplus,
                    rank_window_s=settings.server.rank_window_s,
                    rank_wait_s=settings.server.rank_wait_s,
                )
            ),
        )

    @property
    def is_postgres(self) -> bool:
        return not self.store.is_sqlite

    async def write(self, work: Callable[[sa.Connection], T]) -> T:
        """Run ``work(conn)`` in a write transaction without blocking the event loop;
        its result once committed (see :class:`pilotage.store.engine.WriteQueue`)."""
        return await self.store.queue().run(work)

    async def receive_tar(self, request: Request) -> tuple[str, int]:
        """Take a tar body into the spool, refusing it past the size limit."""
        upload = await self.receive_upload(request)
        await run_in_threadpool(self.spool.keep, upload)
        return upload.digest, upload.size

    async def receive_upload(self, request: Request) -> Upload:
        """Check a tar body into a temporary file of the spool (size limit applied); the
        caller keeps or discards it."""
        limit = self.spool.max_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise SandboxTooLarge(f"the sandbox is {declared} bytes; the limit is {limit} bytes")
        buffer = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115
        try:
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise SandboxTooLarge(f"the sandbox exceeds the limit of {limit} bytes")
                buffer.write(chunk)
            buffer.seek(0)
            return await run_in_threadpool(self.spool.receive, cast(BinaryIO, buffer))
        finally:
            buffer.close()


def actor_of(principal: Principal) -> Actor:
    """The queue's view of a caller."""
    return Actor(principal.name, admin=principal.admin)
