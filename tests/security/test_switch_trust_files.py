"""Finding 6 of the security review: trust files were read without any check.

A pilot-owned grid-mapfile let the pilot map itself to bob. The grid-mapfile, the
gridmapdir (the directory and each lease file) and every file of the CA directory get the
checks of the config and the policy now: root-owned, not writable by group or others, or
the switch refuses to run (202) with a sentence naming the file.
"""

from __future__ import annotations

import marshal
import os
import pwd
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pilotage.switch.config import SETTLED_NS

from .switch_helpers import Credentials, Site, refused, run_switch, wait_for


@pytest.fixture(scope="module")
def wrapper(ssite: Site) -> Path:
    """A setuid switch without a cache, so each change is seen at once."""
    return ssite.install("trust", "setuid", cache_ttl_s="0")


@pytest.fixture
def restore(ssite: Site) -> Iterator[Callable[[Path], None]]:
    """``restore(path)`` records a file's owner, mode and bytes, put back after the test."""
    saved: list[tuple[Path, os.stat_result, bytes | None]] = []

    def remember(path: Path) -> None:
        saved.append((path, path.stat(), path.read_bytes() if path.is_file() else None))

    yield remember
    for path, st, data in reversed(saved):
        if data is not None:
            path.write_bytes(data)
        os.chown(path, st.st_uid, st.st_gid)
        path.chmod(st.st_mode & 0o7777)


def give_to_pilot(path: Path) -> int:
    pilot = pwd.getpwnam("pilot")
    os.chown(path, pilot.pw_uid, pilot.pw_gid)
    return pilot.pw_uid


def test_a_pilot_owned_grid_mapfile_cannot_map_the_pilot_to_bob(
    ssite: Site, screds: Credentials, wrapper: Path, restore: Callable[[Path], None]
) -> None:
    gridmap = ssite.root / "grid-mapfile"
    restore(gridmap)
    gridmap.write_text(gridmap.read_text() + '"/O=Example/CN=Pilot" bob\n')
    uid = give_to_pilot(gridmap)
    result = run_switch(wrapper, ["--", "id", "-un"], user=screds.made["pilot"])
    refused(result, 202, f"The grid-mapfile {gridmap} is owned by uid {uid}, not by root.")
    assert "bob" not in result.stdout
    os.chown(gridmap, 0, 0)
    gridmap.chmod(0o666)
    result = run_switch(wrapper, ["--", "id", "-un"], user=screds.made["pilot"])
    refused(result, 202, f"The grid-mapfile {gridmap} is writable by group or others.")


def test_the_gridmapdir_and_its_leases_must_be_roots(
    ssite: Site, screds: Credentials, wrapper: Path, restore: Callable[[Path], None]
) -> None:
    gridmapdir = ssite.root / "gridmapdir"
    restore(gridmapdir)
    uid = give_to_pilot(gridmapdir)
    result = run_switch(wrapper, ["--", "true"], user=screds.made["alice"])
    refused(result, 202, f"The gridmapdir {gridmapdir} is owned by uid {uid}, not by root.")
    os.chown(gridmapdir, 0, 0)
    lease = gridmapdir / "cms005"
    lease.touch()
    try:
        give_to_pilot(lease)
        result = run_switch(wrapper, ["--", "true"], user=screds.made["alice"])
        refused(result, 202, f"The gridmapdir file {lease} is owned by uid {uid}, not by root.")
    finally:
        lease.unlink()


def test_every_file_of_the_ca_directory_must_be_roots(
    ssite: Site, screds: Credentials, wrapper: Path, restore: Callable[[Path], None]
) -> None:
    ca_file = sorted((ssite.root / "certificates").iterdir())[0]
    restore(ca_file)
    uid = give_to_pilot(ca_file)
    result = run_switch(wrapper, ["--", "true"], user=screds.made["alice"])
    refused(result, 202, f"The CA directory file {ca_file} is owned by uid {uid}, not by root.")
    os.chown(ca_file, 0, 0)
    ca_file.chmod(0o664)
    result = run_switch(wrapper, ["--", "true"], user=screds.made["alice"])
    refused(result, 202, f"The CA directory file {ca_file} is writable by group or others.")
    ca_file.chmod(0o644)
    assert run_switch(wrapper, ["--", "true"], user=screds.made["alice"]).returncode == 0


def test_a_mapping_to_a_system_or_missing_account_is_refused(
    ssite: Site, screds: Credentials, wrapper: Path, restore: Callable[[Path], None]
) -> None:
    gridmap = ssite.root / "grid-mapfile"
    restore(gridmap)
    daemon = pwd.getpwnam("daemon").pw_uid
    for account, sentence in (
        ("daemon", f"The mapped account daemon has uid {daemon}, below min_uid 1000"),
        ("nosuchaccount", "The mapped account nosuchaccount does not exist on this node."),
    ):
        gridmap.write_text(f'"/O=Example/CN=Pilot" {account}\n')
        result = run_switch(wrapper, ["--", "id", "-un"], user=screds.made["pilot"])
        refused(result, 202, sentence)


def test_the_cached_config_follows_each_edit_and_is_roots_alone(
    ssite: Site, screds: Credentials, wrapper: Path, restore: Callable[[Path], None]
) -> None:
    config = ssite.root / "exec-trust.toml"
    restore(config)
    state = Path(f"/var/tmp/pilotage-exec-test-{ssite.root.name}-trust")
    # The config is cached in the switch's state directory, which the first call served
    # creates: a refused call creates nothing, and this test may be the install's first.
    assert run_switch(wrapper, ["--", "true"], user=screds.made["alice"]).returncode == 0
    assert state.is_dir()
    allowed = config.read_text()
    config.write_text(allowed.replace('invokers = ["pilot"]', 'invokers = ["pilox"]'))
    # Cached only once its ctime is older than SETTLED_NS, by the switch's own clock.
    wait_for(lambda: time.time_ns() - config.stat().st_ctime_ns > SETTLED_NS, timeout=30)
    not_allowed = "The account pilot is not allowed to call pilotage-exec."
    refused(run_switch(wrapper, ["--", "true"], user=screds.made["alice"]), 203, not_allowed)
    (cache,) = state.glob("config-*.marshal")
    assert (cache.stat().st_uid, cache.stat().st_mode & 0o777) == (0, 0o600)
    # A cached config that is not root's alone is never read, even one letting the pilot in.
    stamp, raw = marshal.loads(cache.read_bytes())
    cache.write_bytes(marshal.dumps((stamp, {**raw, "invokers": ["pilot"]})))
    give_to_pilot(cache)
    refused(run_switch(wrapper, ["--", "true"], user=screds.made["alice"]), 203, not_allowed)
    # An edit, of the same size and at once, is seen at the next call.
    config.write_text(allowed)
    assert run_switch(wrapper, ["--", "true"], user=screds.made["alice"]).returncode == 0
