"""Real Unix accounts for tests and demos: one helper, so every caller gets the same ones.

Tests that run as root create ``pilot``, ``alice``, ``bob`` and pool accounts. Whichever
test runs first creates them, so they must come out the same whoever asks: each with a
user group, ``/bin/sh`` and a home directory of its own (a job's ``HOME`` must exist). An
account that exists without its home (made by an older helper) gets one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterable, Iterator

#: Held while accounts are made, so parallel test workers never run two ``useradd`` at
#: once (the second would fail to lock ``/etc/passwd`` and give up at once).
_LOCK = "/run/lock/pilotage-test-accounts.lock"


class AccountsUnavailable(RuntimeError):
    """The accounts cannot be made here: not root, or no ``useradd``."""


def ensure_accounts(names: Iterable[str]) -> list[pwd.struct_passwd]:
    """Create the accounts ``names`` if missing (root only); return their entries.

    Concurrent callers (parallel test workers, two test sessions) take turns on a lock
    file; an account that another caller made meanwhile is taken as it is.
    """
    if os.geteuid() != 0:
        raise AccountsUnavailable("creating Unix accounts needs root")
    if shutil.which("useradd") is None:
        raise AccountsUnavailable("useradd is not installed")
    with _accounts_lock():
        return [_ensure_account(name) for name in names]


def ensure_system_account(name: str) -> pwd.struct_passwd:
    """Create the system account ``name`` (no home, no login shell) if missing; root only.

    For services the tests run as someone other than root (PostgreSQL refuses root).
    """
    if os.geteuid() != 0:
        raise AccountsUnavailable("creating Unix accounts needs root")
    if shutil.which("useradd") is None:
        raise AccountsUnavailable("useradd is not installed")
    with _accounts_lock():
        return _ensure_account(
            name,
            "--system", "--user-group", "--no-create-home",
            "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
        )  # fmt: skip


@contextlib.contextmanager
def _accounts_lock() -> Iterator[None]:
    os.makedirs(os.path.dirname(_LOCK), exist_ok=True)
    fd = os.open(_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _ensure_account(name: str, *options: str) -> pwd.struct_passwd:
    options = options or ("--create-home", "--user-group", "--shell", "/bin/sh")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        made = subprocess.run(
            ["useradd", *options, name],
            capture_output=True,
            text=True,
        )
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise AccountsUnavailable(
                f"cannot create the account {name}: {made.stderr.strip()}"
            ) from None
    if "--create-home" in options:
        _ensure_home(entry)
    return entry


def _ensure_home(entry: pwd.struct_passwd) -> None:
    home = entry.pw_dir
    if not home or home == "/" or os.path.isdir(home):
        return
    os.makedirs(home, mode=0o755, exist_ok=True)
    os.chown(home, entry.pw_uid, entry.pw_gid)
