"""Finding 4 of the security review: a job's final kill could hit another pool's processes.

The family registry and the cgroup were keyed by the job id alone (``1.0`` in every pool
of the node). They are keyed by the caller's uid and the agent's claim id now; two pools
(``pilot`` and ``pilot2``) that use the same key each reach only their own job, and the
final kill removes the family's cgroup and registry entry, with linger on and off.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotage import exec_install as install

from .switch_helpers import Credentials, Site, own_dir, pilot_file, run_switch, wait_for

CGROUP_V2 = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")


@pytest.fixture(scope="module")
def wrapper(ssite: Site) -> Path:
    """A setuid switch that both pools may call."""
    path = ssite.install("families", "setuid", invokers='["pilot", "pilot2"]')
    sudoers = Path(f"/etc/sudoers.d/pilotage-exec-test-{ssite.root.name}-families2")
    install.write_sudoers(sudoers, path, "pilot2")
    ssite.sudoers.append(sudoers)
    return path


@pytest.fixture(scope="module")
def pilot2_alice(ssite: Site, screds: Credentials) -> Path:
    """Alice's proxy as the second pool's pilot holds it."""
    home = own_dir(ssite.root / "pilot2-home", "pilot2")
    return pilot_file(home / "alice", screds.made["alice"].read_bytes(), owner="pilot2")


def sleepers(marker: str) -> list[int]:
    """Live ``sleep MARKER`` processes."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{name}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if argv[0].endswith(b"sleep") and argv[1:2] == [marker.encode()] and state != b"Z":
            found.append(int(name))
    return found


def start(wrapper: Path, credential: Path, key: str, marker: str, caller: str,
          linger: bool) -> subprocess.Popen[bytes]:  # fmt: skip
    """Start ``sleep MARKER`` as the credential's owner through the switch, as ``caller``."""
    env = {"PATH": "/usr/bin:/bin", "PILOTAGE_EXEC_USER_CREDENTIAL": str(credential),
           "PILOTAGE_EXEC_JOB_ID": key}  # fmt: skip
    flag = "--linger" if linger else "--no-linger"
    return subprocess.Popen(
        ["sudo", "-n", str(wrapper), flag, "--", "sleep", marker], env=env, user=caller,
        group=caller, extra_groups=[], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


@pytest.fixture
def markers() -> Iterator[tuple[str, str]]:
    """Two unique sleep durations; whatever is left of them is killed afterwards."""
    pair = tuple(f"{900 + secrets.randbelow(1000)}.{secrets.randbelow(10**6)}" for _ in "ab")
    yield pair  # type: ignore[misc]
    for marker in pair:
        for pid in sleepers(marker):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("linger", [False, True], ids=["no-linger", "linger"])
def test_same_job_id_in_two_pools_stays_apart(
    ssite: Site, screds: Credentials, wrapper: Path, pilot2_alice: Path,
    markers: tuple[str, str], linger: bool,
) -> None:  # fmt: skip
    key = f"c-{secrets.token_hex(6)}"
    first = start(wrapper, screds.made["alice"], key, markers[0], "pilot", linger)
    wait_for(lambda: len(sleepers(markers[0])) == 1 or first.poll() is not None)
    assert first.poll() is None, first.communicate()
    second = start(wrapper, pilot2_alice, key, markers[1], "pilot2", linger)
    try:
        wait_for(lambda: len(sleepers(markers[1])) == 1)
        killed = run_switch(wrapper, ["--signal", "KILL", "--job", key], user=pilot2_alice,
                            as_user="pilot2")  # fmt: skip
        assert (killed.returncode, killed.stderr) == (0, "")
        wait_for(lambda: not sleepers(markers[1]))
        assert len(sleepers(markers[0])) == 1, "the other pool's job must live on"
        killed = run_switch(wrapper, ["--signal", "KILL", "--job", key], user=screds.made["alice"])
        assert (killed.returncode, killed.stderr) == (0, "")
        wait_for(lambda: not sleepers(markers[0]))
        records = [r for r in ssite.audit("families") if r.get("family") == key]
        ends = [r for r in records if r["event"] == "end"]
        assert sorted(r["caller"] for r in ends) == ["pilot", "pilot2"]
        cgroups = {r["caller"]: r.get("cgroup") for r in records if r["event"] in ("exec", "exit")}
        assert set(cgroups) == {"pilot", "pilot2"}
        if any(os.path.exists(f"{root}/cgroup.controllers") for root in CGROUP_V2):
            assert all(cgroups.values()), "a cgroup v2 node gives each family a cgroup"
        for caller, cgroup in cgroups.items():
            if cgroup:  # a node with cgroup v2: the family's own, gone with the family
                assert f"/pilotage/{pwd_uid(caller)}/{key}" in cgroup
                wait_for(lambda cgroup=cgroup: not os.path.exists(cgroup))
        # The registry entry went with it: the family cannot be signalled again.
        again = run_switch(wrapper, ["--signal", "KILL", "--job", key], user=screds.made["alice"])
        assert again.returncode == 201 and f"No job {key} was started" in again.stderr
    finally:
        for pid in sleepers(markers[0]) + sleepers(markers[1]):
            os.kill(pid, signal.SIGKILL)
        for process in (first, second):
            process.kill()
            process.communicate(timeout=60)


def pwd_uid(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid
