"""Findings 1 and 3 of the security review, against a job running through the switch.

Finding 1: every job's environment was readable by every local user, as arguments of the
long-lived root ``sudo`` process. Now it travels to the job wrapper over a socket: while
a job with a secret in its environment runs, no process's command line holds the secret,
nor does the switch's audit (the same line goes to syslog), while the job still sees it.

Finding 3: the claim's directory was 1733 while the input was unpacked, so another user
could plant ``x509_proxy`` or ``out`` there and get the job held. Now it is the pilot's,
0711, at all times, and ``job/`` is made by the switch: another account cannot create
anything in it. A ``tar`` placed first on the switch's PATH records the claim
directory's mode during the unpacking, the moment it used to be 1733.

The job waits on a FIFO the test opens, so each check happens while it surely runs.
"""

from __future__ import annotations

import os
import pwd
import secrets
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from pilot.switched_pool import ALICE, AgentPool, switch_site
from pilotage.testing import Pool
from switch.switch_site import Site, interpreter, wait_for

pytestmark = pytest.mark.slow

#: The job: it records that it runs, waits for the test, then writes what it saw.
WAITING_JOB = ': > started; read go < "$GATE"; printf "%s\\n" "$SECRET"'


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: what is tested here is the agent and the switch, not the store."""
    return f"sqlite:///{tmp_path / 'pilotage.db'}"


@pytest.fixture
def site(require_service: Callable[[str, str], NoReturn]) -> Iterator[Site]:
    with switch_site(require_service) as the_site:
        yield the_site


@pytest.fixture
def pool(
    site: Site, make_pool: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch
) -> Iterator[AgentPool]:
    monkeypatch.setenv("PILOTAGE_X509_CA_DIR", str(site.pki.trust_dir))  # type: ignore[attr-defined]
    the_pool = AgentPool.create(site, make_pool())
    yield the_pool
    the_pool.kill_agents()


def _gate(pool: AgentPool) -> Path:
    gate = pool.site.root / "gate"
    os.mkfifo(gate, 0o666)
    gate.chmod(0o666)  # the umask aside: alice reads it
    return gate


def _running_claim(pool: AgentPool) -> Path:
    """The claim directory whose job has started (its ``job/started`` exists)."""
    found: list[Path] = []

    def started() -> bool:
        found[:] = [p.parent.parent for p in pool.workdir.glob("c-*/job/started")]
        return bool(found)

    wait_for(started, timeout=60)
    return found[0]


def _release(gate: Path) -> None:
    with gate.open("w") as writer:
        writer.write("go\n")


def _every_cmdline() -> dict[int, bytes]:
    lines = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                lines[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue  # gone meanwhile
    return lines


def test_agent_env_not_in_cmdline(pool: AgentPool) -> None:
    secret = "s3cr3t-" + secrets.token_hex(16)
    gate = _gate(pool)
    job = pool.submit(
        "alice", ALICE, WAITING_JOB, environment={"SECRET": secret, "GATE": str(gate)}
    )
    agent = pool.start_agent()
    try:
        _running_claim(pool)
        holders = {pid: line for pid, line in _every_cmdline().items() if secret.encode() in line}
        assert holders == {}, "the job's environment is in a command line"
    finally:
        _release(gate)
    jobs = pool.wait([job])
    assert agent.wait(timeout=60) == 0
    assert jobs[job]["state"] == "COMPLETED", pool.log.read_text()
    # The job saw its environment.
    assert pool.output(job, "alice")["out.txt"] == f"{secret}\n".encode()
    audit = (pool.site.root / "audit-setuid" / "audit.jsonl").read_text()
    assert "python3" in audit  # the wrapper ran through the switch, and is audited
    assert secret not in audit
    assert secret not in pool.log.read_text()


def _record_unpack_modes(pool: AgentPool) -> Path:
    """A root-owned ``tar`` first on the switch's PATH that notes the claim dir's mode."""
    shim = pool.site.root / "shim"
    shim.mkdir(mode=0o755)
    modes = shim / "modes.log"
    modes.touch(mode=0o666)
    modes.chmod(0o666)
    tar = shim / "tar"
    tar.write_text(f"#!/bin/sh\nstat -c '%a %U' .. >> {modes}\nexec /usr/bin/tar \"$@\"\n")
    tar.chmod(0o755)
    config = pool.site.root / "exec-setuid.toml"
    config.write_text(f'path = "{shim}:/usr/local/bin:/usr/bin:/bin"\n' + config.read_text())
    return modes


def test_agent_claim_dir(pool: AgentPool) -> None:
    modes = _record_unpack_modes(pool)
    gate = _gate(pool)
    job = pool.submit("alice", ALICE, WAITING_JOB, environment={"GATE": str(gate)})
    agent = pool.start_agent()
    pilot = pwd.getpwnam("pilot")
    try:
        claim = _running_claim(pool)
        assert modes.read_text() == "711 pilot\n"  # while unpacking
        st = claim.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (pilot.pw_uid, 0o711)
        job_dir = (claim / "job").stat()
        alice = pwd.getpwnam("alice")
        assert (job_dir.st_uid, stat.S_IMODE(job_dir.st_mode)) == (alice.pw_uid, 0o700)
        # bob tries to plant each name the agent or the switch uses, and in job/ itself.
        targets = [claim / n for n in ("job", "out", "x509_proxy", "stage", "proxy", "x")]
        targets += [claim / "job" / "x", pool.workdir / "c-planted"]
        probe = (
            "import os, sys\n"
            "for path in sys.argv[1:]:\n"
            "    try:\n"
            "        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))\n"
            "        print('created', path)\n"
            "    except OSError as exc:\n"
            "        print(exc.errno, path)\n"
        )
        done = subprocess.run(
            [interpreter(), "-I", "-c", probe, *map(str, targets)],
            user="bob", group="bob", extra_groups=[], capture_output=True, text=True,
            timeout=60, cwd="/", check=True,
        )  # fmt: skip
        # EACCES for a new name; EEXIST for one already there (job, proxy, x509_proxy).
        answers = dict(reversed(line.split(" ", 1)) for line in done.stdout.splitlines())
        assert set(answers) == set(map(str, targets)), done.stdout
        assert set(answers.values()) <= {"13", "17"}, done.stdout
        for name in ("out", "stage", "x"):
            assert answers[str(claim / name)] == "13", done.stdout
    finally:
        _release(gate)
    jobs = pool.wait([job])
    assert agent.wait(timeout=60) == 0
    assert jobs[job]["state"] == "COMPLETED", pool.log.read_text()
