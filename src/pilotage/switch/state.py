"""The switch's own directory: a small cache, and the registry of running jobs.

Root's state lives in ``paths.STATE_DIR``. An unprivileged switch (namespace mode, or
log-only run without sudo) keeps its own in ``/tmp/pilotage-exec-<uid>``. Either way the
directory must belong to the effective user and be closed to everyone else, or it is not
used: a cache anyone could write would let them forge decisions.

The cache maps a digest of what was checked (the credential bytes, or the authorization
request) to the result, for ``cache_ttl_s`` seconds. A revoked credential or a new ban
thus takes effect within that time; sites choose it in the config.

Entries are ``marshal`` data, not JSON: the ``json`` package costs about 2 ms of imports
at every start, ``marshal`` is built in. ``marshal`` must never read what an adversary
wrote; a cache file is read only from the directory above, which nobody but its owner may
write, and only if the file itself is its owner's and closed to others, and what it holds
is checked for shape before use. Digests are BLAKE2b (256 bits) from the interpreter's own
module: ``hashlib`` loads OpenSSL's libcrypto, another 2 ms at every start.
"""

from __future__ import annotations

import marshal
import os
import stat
import time

from . import paths
from .refusals import SiteError

try:  # the C module behind hashlib.blake2b, without loading libcrypto
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - an interpreter built without it
    from hashlib import blake2b

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def digest(data: bytes) -> str:
    """The hex BLAKE2b-256 digest of ``data``: the cache's keys."""
    return blake2b(data, digest_size=32).hexdigest()


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
    if not private(st):
        raise SiteError(
            f"The state directory {path} must be a directory of uid {os.geteuid()} "
            "closed to group and others."
        )
    return path


def private(st: os.stat_result, *, directory: bool = True) -> bool:
    """Whether ``st`` is a directory (or a regular file) of the effective uid, closed to others."""
    kind = stat.S_ISDIR(st.st_mode) if directory else stat.S_ISREG(st.st_mode)
    return kind and st.st_uid == os.geteuid() and not st.st_mode & 0o077


def read_private(path: str) -> Any:
    """The ``marshal`` value in the file ``path`` if it is ours and closed, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not private(os.fstat(fd), directory=False):
            return None
        return marshal.loads(os.read(fd, 1 << 20))  # noqa: S302 - our own file, see above
    except (OSError, ValueError, EOFError, TypeError):
        return None
    finally:
        os.close(fd)


def write_private(path: str, value: Any) -> None:
    """Replace the file ``path`` with ``value`` (``marshal``), mode 0600, through a new file
    renamed over it; ``OSError``, or ``ValueError`` for a value ``marshal`` cannot write."""
    data = marshal.dumps(value)
    temporary = f"{path}.{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(temporary, path)


class Cache:
    """Results keyed by a digest, valid for ``ttl_s`` seconds; off when ``ttl_s`` <= 0."""

    def __init__(self, directory: str, ttl_s: float) -> None:
        self.directory = directory
        self.ttl_s = ttl_s

    def _file(self, namespace: str, key: str) -> str:
        name = digest(key.encode("utf-8", "surrogateescape"))
        return os.path.join(self.directory, f"{namespace}-{name}.marshal")

    def get(self, namespace: str, key: str) -> Any:
        """The value stored under ``key`` if still fresh, else None."""
        if self.ttl_s <= 0:
            return None
        entry = read_private(self._file(namespace, key))
        if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], float)):
            return None
        return entry[1] if 0 <= time.time() - entry[0] < self.ttl_s else None

    def put(self, namespace: str, key: str, value: Any) -> None:
        """Store ``value`` (plain data) under ``key``; a failure only loses the cache entry."""
        if self.ttl_s > 0:
            try:
                write_private(self._file(namespace, key), (time.time(), value))
            except (OSError, ValueError):
                pass
