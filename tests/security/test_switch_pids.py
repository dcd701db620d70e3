"""Finding 8 of the security review: nothing limited a job's processes.

``pids_max`` in the site's config sets ``pids.max`` on the job's cgroup, or
``RLIMIT_NPROC`` for the job's account where the node offers no pids controller. A
bounded fork bomb (ten times the limit, sleepers that end by themselves) is stopped at
the limit, and the switch still answers another invocation meanwhile.
"""

from __future__ import annotations

import os
import pwd
import secrets
import signal
import subprocess
from pathlib import Path

from .switch_helpers import Credentials, Site, run_switch, wait_for

PIDS_MAX = 32


def processes_of(uid: int, marker: str) -> list[int]:
    """Live processes whose real uid is ``uid`` and whose command line holds ``marker``:
    this test's, not those of another run of the suite on the machine (same account)."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{name}/status").read_text().splitlines()
            command = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status if ":" in line)
        mine = int(fields["Uid"].split()[0]) == uid and marker.encode() in command
        if mine and "Z" not in fields["State"]:
            found.append(int(name))
    return found


def test_a_fork_bomb_stops_at_pids_max(ssite: Site, screds: Credentials) -> None:
    wrapper = ssite.install("pids", "setuid", pids_max=str(PIDS_MAX))
    uid = pwd.getpwnam("pilotagefb").pw_uid
    # The sleepers' argument, unique to this test: it marks every process of the bomb.
    marker = f"120.{secrets.randbelow(10**6):06d}"
    family = f"c-forkbomb-{secrets.token_hex(4)}"  # its cgroup and family, this test's own
    # sh gives up at the first failed fork: Python counts its refusals and goes on.
    bomb = (
        "import os\nmade = refused = 0\n"
        f"for _ in range({10 * PIDS_MAX}):\n"
        "    try:\n        pid = os.fork()\n    except OSError:\n        refused += 1\n"
        "        continue\n"
        "    if pid == 0:\n        try:\n"
        f"            os.execv('/bin/sleep', ['sleep', '{marker}'])\n"
        "        finally:\n            os._exit(1)\n"
        "    made += 1\n"
        f"print(made, refused, flush=True)\nos.execv('/bin/sleep', ['sleep', '{marker}'])\n"
    )
    job = subprocess.Popen(
        ["sudo", "-n", str(wrapper), "--", "python3", "-c", bomb],
        env={"PATH": "/usr/bin:/bin", "PILOTAGE_EXEC_JOB_ID": family,
             "PILOTAGE_EXEC_USER_CREDENTIAL": str(screds.made["forkbomb"])},
        user="pilot", group="pilot", extra_groups=[], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert job.stdout is not None
        made, refused = map(int, job.stdout.readline().split())
        assert made < PIDS_MAX and refused >= 9 * PIDS_MAX
        # Where the limit is RLIMIT_NPROC it counts every process of the account on the
        # node: another run's bomb at the same moment leaves this one fewer (even none).
        # The main process may be between its print and its exec: wait for it.
        wait_for(lambda: len(processes_of(uid, marker)) == made + 1, timeout=60)
        assert made + 1 <= PIDS_MAX
        other = run_switch(wrapper, ["--", "id", "-un"], user=screds.made["alice"])
        assert (other.returncode, other.stdout) == (0, "alice\n"), other.stderr
        killed = run_switch(wrapper, ["--signal", "KILL", "--job", family],
                            user=screds.made["forkbomb"])  # fmt: skip
        assert killed.returncode == 0, killed.stderr
        wait_for(lambda: not processes_of(uid, marker), timeout=60)
    finally:
        for pid in processes_of(uid, marker):
            os.kill(pid, signal.SIGKILL)
        job.kill()
        job.communicate(timeout=60)
