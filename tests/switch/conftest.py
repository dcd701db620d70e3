"""A site for the switch's tests: real accounts, a CA, policy, and installed switches.

Tests run as root (CI does) and create the accounts ``pilot``, ``alice``, ``bob`` and the
pool ``cms001..cms005`` with ``useradd`` (idempotent). Each :class:`Site` mode is the
real installer's output (``pilotage.exec_install``) with its own root-owned config, and
a sudo rule in ``/etc/sudoers.d`` for ``pilot``, removed at the end of the session.
Credentials are files of the pilot, mode 0600, as a pilot would hold them.
"""

from __future__ import annotations

import os
import pwd
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from switch_site import (
    Credentials,
    Site,
    ensure_accounts,
)


@pytest.fixture(scope="session")
def site(require_service: Callable[[str, str], NoReturn]) -> Iterator[Site]:
    """The test site, with installs ``setuid``, ``logonly`` and ``namespace``."""
    ensure_accounts(require_service)
    the_site = Site.create("pilotage-switch-", '"/O=Example/CN=Bob" bob\n')
    pilot = pwd.getpwnam("pilot")
    os.chown(the_site.root / "pilot-home", pilot.pw_uid, pilot.pw_gid)
    the_site.install("setuid", "setuid")
    the_site.install("logonly", "log-only")
    the_site.install("namespace", "namespace", linger="true")
    try:
        yield the_site
    finally:
        the_site.remove()


@pytest.fixture(scope="session")
def creds(site: Site) -> Credentials:
    """Alice's, Bob's, Mallory's and the pilot's proxies, and tokens."""
    directory = site.root / "pilot-home" / "creds"
    directory.mkdir(mode=0o700)
    pilot = pwd.getpwnam("pilot")
    os.chown(directory, pilot.pw_uid, pilot.pw_gid)
    made = Credentials(directory, site)
    for subject in ("Alice", "Bob", "Mallory", "Pilot", "Nobody"):
        made.made[subject.lower()] = made.proxy(subject)
    made.made["carol-token"] = made.token("carol", ("/cms", "/cms/analysis"))
    made.made["alice-token"] = made.token("alice")
    return made


@pytest.fixture
def workdir(site: Site) -> Path:
    """A fresh world-searchable directory of the pilot, for target copies and scripts."""
    path = Path(tempfile.mkdtemp(prefix="work-", dir=site.root))
    path.chmod(0o755)
    pilot = pwd.getpwnam("pilot")
    os.chown(path, pilot.pw_uid, pilot.pw_gid)
    return path
