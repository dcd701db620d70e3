"""The switch's security tests: a site of their own, built with the switch tests' helpers.

The site has two pilot accounts (``pilot`` and ``pilot2``, two pools on one node) and a
dedicated account ``pilotagefb`` for the fork-bomb test (``RLIMIT_NPROC`` counts every
process of an account). Its installs are made by the tests that need them.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from pilotage.testing_accounts import ensure_accounts as ensure_unix_accounts

sys.path.insert(0, str(Path(__file__).parent.parent / "switch"))

from switch_site import (
    Credentials,
    Site,
    ensure_accounts,
    interpreter,
    pilot_file,
    run_switch,
    wait_for,
)

__all__ = ["Credentials", "Site", "interpreter", "pilot_file", "refused", "run_switch", "wait_for"]
GRID_MAPFILE = '"/O=Example/CN=Bob" bob\n"/O=Example/CN=Forkbomb" pilotagefb\n'


def refused(result: subprocess.CompletedProcess[str], code: int, message: str) -> None:
    """The switch refused with ``code`` and a stderr holding ``message``."""
    assert result.returncode == code, result.stderr
    assert message in result.stderr, result.stderr


def own_dir(path: Path, owner: str, mode: int = 0o700) -> Path:
    """``path`` made a directory of ``owner`` with ``mode``."""
    path.mkdir(exist_ok=True)
    account = pwd.getpwnam(owner)
    os.chown(path, account.pw_uid, account.pw_gid)
    path.chmod(mode)
    return path


@pytest.fixture(scope="module")
def ssite(require_service: Callable[[str, str], NoReturn]) -> Iterator[Site]:
    """A fresh site for one test module; the module installs what it needs."""
    ensure_accounts(require_service)
    ensure_unix_accounts(["pilot2", "pilotagefb"])
    site = Site.create("pilotage-sec-", GRID_MAPFILE)
    own_dir(site.root / "pilot-home", "pilot", 0o755)
    try:
        yield site
    finally:
        site.remove()


@pytest.fixture(scope="module")
def screds(ssite: Site) -> Credentials:
    """Proxies of Alice, Bob, Forkbomb and the pilot, as files of the pilot."""
    made = Credentials(own_dir(ssite.root / "pilot-home" / "creds", "pilot"), ssite)
    for subject in ("Alice", "Bob", "Forkbomb", "Pilot"):
        made.made[subject.lower()] = made.proxy(subject)
    return made


def work_dir(site: Site, name: str, owner: str = "pilot", mode: int = 0o711) -> Path:
    """A claim-like directory of ``owner`` under the site's root."""
    return own_dir(site.root / name, owner, mode)
