"""Everything a request handler needs, built once when the server starts."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO, cast

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from pilotage.api.auth import Authenticator, Principal
from pilotage.config import Settings
from pilotage.credentials.tokens import TokenIssuer
from pilotage.errors import BadInput
from pilotage.queue.claims import AdCache
from pilotage.queue.history import Actor
from pilotage.queue.spool import Spool
from pilotage.statedir import StateDir
from pilotage.store.engine import Store


@dataclass
class ServerContext:
    """The server's long-lived parts: settings, store, spool, token issuer, caches."""

    settings: Settings
    state: StateDir
    store: Store
    spool: Spool
    issuer: TokenIssuer
    authenticator: Authenticator
    ads: AdCache = field(default_factory=AdCache)
    clock: Callable[[], float] = time.time

    @classmethod
    def build(cls, state: StateDir, settings: Settings, store: Store) -> ServerContext:
        issuer = TokenIssuer(state.signing_keys(), issuer=settings.issuer, audience=settings.issuer)
        spool = Spool(
            state.spool,
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
        )

    @property
    def is_postgres(self) -> bool:
        return not self.store.is_sqlite

    async def receive_tar(self, request: Request) -> tuple[str, int]:
        """Take a tar body into the spool, refusing it past the size limit."""
        limit = self.spool.max_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BadInput(f"the sandbox is {declared} bytes; the limit is {limit} bytes")
        buffer = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115
        try:
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BadInput(f"the sandbox exceeds the limit of {limit} bytes")
                buffer.write(chunk)
            buffer.seek(0)
            return await run_in_threadpool(self.spool.store, cast(BinaryIO, buffer))
        finally:
            buffer.close()


def actor_of(principal: Principal) -> Actor:
    """The queue's view of a caller."""
    return Actor(principal.name, admin=principal.admin)
