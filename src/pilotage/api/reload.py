"""Reloading a running server's settings (SIGHUP, ``pilotage admin reload``).

The new settings are read and checked whole before anything changes: a file that does
not load, an ``[authz]`` rule that does not compile or an ``[x509] ca_dir`` that is not
a trust directory refuses the reload, and the running configuration stays. Otherwise
the reloadable keys (:mod:`pilotage.config_reload`) take effect for the next request;
the others keep their running value until a restart.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from fastapi import FastAPI

from pilotage.api.context import ServerContext
from pilotage.config import Settings, load_settings
from pilotage.config_reload import Change, changes, effective
from pilotage.credentials.service import CredentialService

log = logging.getLogger("pilotage.server")

#: One reload at a time (a SIGHUP during an admin's reload waits for it).
_LOCK = threading.Lock()


def settings_source(app: FastAPI) -> Callable[[], Settings]:
    """How the server reads its settings again: what ``pilotage server`` set, else the
    state directory's file and the environment."""
    source: Callable[[], Settings] | None = getattr(app.state, "settings_source", None)
    if source is not None:
        return source
    ctx: ServerContext = app.state.ctx
    return lambda: load_settings(ctx.state.config)


def reload(app: FastAPI) -> list[Change]:
    """Read the settings again and apply what reloads; the changes found (each says
    whether it took effect). Raises what loading or checking raised, changing nothing."""
    with _LOCK:
        ctx: ServerContext = app.state.ctx
        new = settings_source(app)()
        running = ctx.settings
        now = effective(running, new)
        old_creds: CredentialService = app.state.credentials
        creds = dataclasses.replace(
            CredentialService.build(ctx.state, now),
            store_key=old_creds.store_key,
            audit=old_creds.audit,
        )
        found = changes(running, new)
        # From here on nothing can fail: the new parts replace the old ones.
        app.state.credentials = creds
        ctx.authenticator.rules = creds.rules
        ctx.authenticator.admins = frozenset(now.server.admins)
        if ctx.authenticator.revocations is not None:
            ctx.authenticator.revocations.refresh_s = now.server.revocation_refresh_s
        if (now.server.stop_rate_per_pilot_s, now.server.stop_rate_per_site_s) != (
            running.server.stop_rate_per_pilot_s,
            running.server.stop_rate_per_site_s,
        ):
            app.state.stop_pacer = None  # made again, with the new rates, at next use
        ctx.settings = now
        app.state.settings_loaded_at = time.time()
    return found


def reload_and_log(app: FastAPI) -> None:
    """:func:`reload`, for SIGHUP: one log line saying what changed, or why not."""
    try:
        found = reload(app)
    except Exception as exc:  # noqa: BLE001  (a bad file must not stop the server)
        message = getattr(exc, "message", None) or repr(exc)
        log.warning("configuration reload refused: %s; the running configuration stays", message)
        return
    log.warning("configuration reloaded: %s", summary(found))


def summary(found: list[Change]) -> str:
    """One line: what took effect and what waits for a restart."""
    if not found:
        return "no change"
    applied = [c.name for c in found if c.reloads]
    waiting = [c.name for c in found if not c.reloads]
    parts = []
    if applied:
        parts.append("changed " + ", ".join(applied))
    if waiting:
        parts.append("needs a restart: " + ", ".join(waiting))
    return "; ".join(parts)
