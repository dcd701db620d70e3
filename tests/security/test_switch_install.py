"""Finding 2 of the security review: the installer could hand root to the pilot.

The wrapper put a site-packages before the standard library and nobody checked who could
write it: a ``contextlib.py`` planted there ran as uid 0. The installer now refuses any
interpreter, standard library or site-packages that root does not own alone, the wrapper
appends the site-packages after the standard library, and it re-checks those paths at
every start (202, naming the path).
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cryptography
import pytest

from pilotage import exec_install as install

from .switch_helpers import Site, interpreter, own_dir, refused, run_switch

SITE = Path(cryptography.__file__).parent.parent


def copy_site(destination: Path) -> Path:
    """A copy of what the switch imports from the site-packages, at ``destination``."""
    destination.mkdir(mode=0o755)
    for name in install.SITE_PACKAGES:
        if (SITE / name).is_dir():
            shutil.copytree(SITE / name, destination / name)
    for library in SITE.glob("_cffi_backend*"):
        shutil.copy2(library, destination)
    return destination


@pytest.fixture(scope="module")
def site_copy(ssite: Site) -> Iterator[Path]:
    """A root-owned copy of the site-packages, in a directory only root may write."""
    parent = Path(tempfile.mkdtemp(prefix="site-", dir=ssite.root))
    parent.chmod(0o755)
    yield copy_site(parent / "site-packages")
    shutil.rmtree(parent, ignore_errors=True)


def test_a_site_packages_the_pilot_can_write_is_refused(ssite: Site, site_copy: Path) -> None:
    pilot = pwd.getpwnam("pilot")
    os.chown(site_copy, pilot.pw_uid, pilot.pw_gid)
    try:
        with pytest.raises(SystemExit) as refusal:
            install.install(ssite.root / "refused", "/etc/x.toml", "/var/tmp/x", "/usr/bin/python3",
                            site_copy)  # fmt: skip
        assert f"{site_copy} is owned by uid {pilot.pw_uid}, not by root" in str(refusal.value)
    finally:
        os.chown(site_copy, 0, 0)
    module = site_copy / "cryptography" / "__init__.py"
    os.chown(module, pilot.pw_uid, pilot.pw_gid)
    try:
        with pytest.raises(SystemExit) as refusal:
            install.install(ssite.root / "refused", "/etc/x.toml", "/var/tmp/x", "/usr/bin/python3",
                            site_copy)  # fmt: skip
        assert f"{module} is owned by uid {pilot.pw_uid}" in str(refusal.value)
    finally:
        os.chown(module, 0, 0)
    site_copy.chmod(0o775)
    try:
        with pytest.raises(SystemExit) as refusal:
            install.install(ssite.root / "refused", "/etc/x.toml", "/var/tmp/x", "/usr/bin/python3",
                            site_copy)  # fmt: skip
        assert f"{site_copy} is writable by group or others" in str(refusal.value)
    finally:
        site_copy.chmod(0o755)
    assert not (ssite.root / "refused" / "bin" / "pilotage-exec").exists()


def test_a_planted_standard_module_never_runs_as_root(ssite: Site, site_copy: Path) -> None:
    marker = own_dir(ssite.root / "markers", "root", 0o777) / "contextlib-ran"
    planted = f"open({str(marker)!r}, 'w').write(str(__import__('os').geteuid()))\n"
    (site_copy / "contextlib.py").write_text(planted + "raise SystemExit(99)\n")
    try:
        ssite.install("planted", "setuid")  # config, policy and sudo rule; then with the copy:
        state = f"/var/tmp/pilotage-exec-test-{ssite.root.name}-planted"
        wrapper = install.install(ssite.root / "planted", str(ssite.root / "exec-planted.toml"),
                                  state, interpreter(), site_copy)  # fmt: skip
        assert repr(str(site_copy)) in wrapper.read_text()
        result = run_switch(wrapper, ["--", "true"])
        refused(result, 201, "PILOTAGE_EXEC_USER_CREDENTIAL does not name the user credential")
        assert not marker.exists(), "the planted module ran"

        pilot = pwd.getpwnam("pilot")
        os.chown(site_copy, pilot.pw_uid, pilot.pw_gid)  # the layout goes bad after install
        result = run_switch(wrapper, ["--", "true"])
        refused(result, 202, f"pilotage-exec: {site_copy} is gone, not root-owned or writable")
        assert not marker.exists()
        os.chown(site_copy, 0, 0)
        # Any directory the switch imports from, deep down too: a __pycache__ there could
        # hand root a compiled module.
        deep = site_copy / "cryptography" / "hazmat" / "primitives"
        deep.chmod(0o777)
        result = run_switch(wrapper, ["--", "true"])
        refused(result, 202, f"pilotage-exec: {deep} is gone, not root-owned or writable")
        deep.chmod(0o755)
        # Compiled at install: an unprivileged switch, which cannot write there, never compiles.
        copy = ssite.root / "planted" / "lib" / "pilotage"
        for module in copy.rglob("*.py"):
            assert list(module.parent.glob(f"__pycache__/{module.stem}.cpython-*.pyc")), module
    finally:
        os.chown(site_copy, 0, 0)
        (site_copy / "contextlib.py").unlink()
