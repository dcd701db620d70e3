"""Pool accounts leased per identity, kept stable across calls: a gridmapdir.

The directory holds one empty file per pool account (``cms001`` ...). A lease is a hard
link to that file named after the identity, ``%<quoted identity>%<pool>``; an account is
free while its file has one link. Links survive restarts and are shared by every process
that uses the directory (the local switch on a node, or the site service), and a site
admin reads or edits them with ``ls -li``. A lease is released by deleting its link.

Invariant: each account file has at most one lease link; taking one happens under an
exclusive ``flock`` on ``.lock`` in the directory, so two calls never share an account.
"""

from __future__ import annotations

import fcntl
import os
import re
import urllib.parse
from collections.abc import Sequence

_RANGE = re.compile(r"^([A-Za-z_][A-Za-z_-]*?)(\d+)\.\.([A-Za-z_][A-Za-z_-]*?)(\d+)$")


class PoolExhausted(Exception):
    """Every account of the pool is leased to someone else."""


def expand_pool(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"cms001..cms050"`` → ``("cms001", ..., "cms050")``; a list is taken as it is."""
    if not isinstance(spec, str):
        return tuple(spec)
    match = _RANGE.match(spec.strip())
    if match is None or match.group(1) != match.group(3):
        raise ValueError(f"pool {spec!r} is not a range such as cms001..cms050")
    prefix, first, last = match.group(1), match.group(2), match.group(4)
    width = len(first)
    return tuple(f"{prefix}{n:0{width}d}" for n in range(int(first), int(last) + 1))


class Leases:
    """The gridmapdir at ``directory``."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def lease(self, identity: str, pool: str, accounts: Sequence[str]) -> str:
        """The account of ``pool`` leased to ``identity``, leasing a free one if needed."""
        link = os.path.join(
            self.directory, "%" + urllib.parse.quote(identity, safe="") + "%" + pool
        )
        os.makedirs(self.directory, mode=0o755, exist_ok=True)
        lock_fd = os.open(os.path.join(self.directory, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            current = self._held(link, accounts)
            if current is not None:
                return current
            for account in accounts:
                path = os.path.join(self.directory, account)
                if not os.path.exists(path):
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
                if os.stat(path).st_nlink == 1:
                    os.link(path, link)
                    return account
            raise PoolExhausted(f"every account of pool {pool} is leased")
        finally:
            os.close(lock_fd)

    def _held(self, link: str, accounts: Sequence[str]) -> str | None:
        try:
            inode = os.stat(link).st_ino
        except FileNotFoundError:
            return None
        for account in accounts:
            try:
                if os.stat(os.path.join(self.directory, account)).st_ino == inode:
                    return account
            except FileNotFoundError:
                continue
        # The account left the pool: drop the stale link and lease anew.
        os.unlink(link)
        return None
