"""The switch's own directory: a small cache, and the registry of running jobs.

Root's state lives in ``paths.STATE_DIR``. An unprivileged switch (namespace mode, or
log-only run without sudo) keeps its own in ``/tmp/pilotage-exec-<uid>``. Either way the
directory must belong to the effective user and be closed to everyone else, or it is not
used: a cache anyone could write would let them forge decisions.

The cache maps a SHA-256 of what was checked (the credential bytes, or the authorization
request) to the result, for ``cache_ttl_s`` seconds. A revoked credential or a new ban
thus takes effect within that time; sites choose it in the config.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from typing import Any

from . import paths
from .refusals import SiteError


def state_dir() -> str:
    """The switch's state directory for the effective user, created if missing."""
    euid = os.geteuid()
    path = paths.STATE_DIR if euid == 0 else f"/tmp/pilotage-exec-{euid}"  # noqa: S108
    return ensure_private_dir(path)


def ensure_private_dir(path: str) -> str:
    """Create ``path`` (mode 0700) if missing; refuse it unless it is ours and closed."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        raise SiteError(f"The state directory {path} cannot be created ({exc.strerror}).") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise SiteError(
            f"The state directory {path} must be a directory of uid {os.geteuid()} "
            "closed to group and others."
        )
    return path


class Cache:
    """JSON results keyed by a digest, valid for ``ttl_s`` seconds; off when ``ttl_s`` <= 0."""

    def __init__(self, directory: str, ttl_s: float) -> None:
        self.directory = directory
        self.ttl_s = ttl_s

    def _file(self, namespace: str, key: str) -> str:
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
        return os.path.join(self.directory, f"{namespace}-{digest}.json")

    def get(self, namespace: str, key: str) -> Any:
        """The value stored under ``key`` if still fresh, else None."""
        if self.ttl_s <= 0:
            return None
        try:
            with open(self._file(namespace, key), "rb") as f:
                entry = json.load(f)
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or not 0 <= time.time() - entry.get("at", 0) < self.ttl_s:
            return None
        return entry.get("value")

    def put(self, namespace: str, key: str, value: Any) -> None:
        """Store ``value`` (JSON-ready) under ``key``; a failure only loses the cache entry."""
        if self.ttl_s <= 0:
            return
        target = self._file(namespace, key)
        temporary = f"{target}.{os.getpid()}"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"at": time.time(), "value": value}, f)
            os.replace(temporary, target)
        except OSError:
            return
