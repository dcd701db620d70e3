"""Real Unix accounts for tests and demos: one helper, so every caller gets the same ones.

Tests that run as root create ``pilot``, ``alice``, ``bob`` and pool accounts. Whichever
test runs first creates them, so they must come out the same whoever asks: each with a
user group, ``/bin/sh`` and a home directory of its own (a job's ``HOME`` must exist). An
account that exists without its home (made by an older helper) gets one.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterable


class AccountsUnavailable(RuntimeError):
    """The accounts cannot be made here: not root, or no ``useradd``."""


def ensure_accounts(names: Iterable[str]) -> list[pwd.struct_passwd]:
    """Create the accounts ``names`` if missing (root only); return their entries.

    Concurrent callers (two test sessions) may race: an account that appears meanwhile is
    taken as it is.
    """
    if os.geteuid() != 0:
        raise AccountsUnavailable("creating Unix accounts needs root")
    if shutil.which("useradd") is None:
        raise AccountsUnavailable("useradd is not installed")
    entries = []
    for name in names:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            made = subprocess.run(
                ["useradd", "--create-home", "--user-group", "--shell", "/bin/sh", name],
                capture_output=True,
                text=True,
            )
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                raise AccountsUnavailable(
                    f"cannot create the account {name}: {made.stderr.strip()}"
                ) from None
        _ensure_home(entry)
        entries.append(entry)
    return entries


def _ensure_home(entry: pwd.struct_passwd) -> None:
    home = entry.pw_dir
    if not home or home == "/" or os.path.isdir(home):
        return
    os.makedirs(home, mode=0o755, exist_ok=True)
    os.chown(home, entry.pw_uid, entry.pw_gid)
