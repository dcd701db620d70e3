"""Finding 1 (switch side) and issue 9's accounting: what the audit and syslog carry.

The audit's ``command`` field and syslog never carry a job's environment: the agent sends
it over a pipe, here the switch's stdin, and a secret there shows up nowhere. Syslog is
captured for real on a throwaway datagram socket named in the root-owned config
(``syslog_socket``). Usage is recorded per job in both linger modes and summed by
``pilotage-exec --accounting``.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .switch_helpers import Credentials, Site, refused, run_switch


@pytest.fixture(scope="module")
def syslog(ssite: Site) -> Iterator[socket.socket]:
    """A datagram socket standing in for /dev/log."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(ssite.root / "log.sock"))
    sock.settimeout(30)
    yield sock
    sock.close()


@pytest.fixture(scope="module")
def wrapper(ssite: Site, syslog: socket.socket) -> Path:
    """A setuid switch that sends its records to the test's syslog socket."""
    return ssite.install("audit", "setuid", syslog="true",
                         syslog_socket=f'"{ssite.root / "log.sock"}"')  # fmt: skip


def received(sock: socket.socket, count: int) -> list[bytes]:
    """The next ``count`` datagrams (waits for each, up to the socket's timeout)."""
    return [sock.recv(65536) for _ in range(count)]


def test_a_secret_on_stdin_is_in_no_record(
    ssite: Site, screds: Credentials, wrapper: Path, syslog: socket.socket
) -> None:
    secret = f"SECRET_TOKEN={secrets.token_hex(16)}"
    script = 'IFS= read -r line; [ "${line#SECRET_TOKEN=}" != "$line" ] && echo received'
    result = run_switch(wrapper, ["--linger", "--", "sh", "-c", script],
                        user=screds.made["alice"], input=secret + "\n")  # fmt: skip
    assert (result.returncode, result.stdout) == (0, "received\n"), result.stderr
    lines = received(syslog, 1)
    assert lines[0].startswith(b"<86>pilotage-exec[")  # authpriv.info, tagged
    record = json.loads(lines[0].split(b"]: ", 1)[1])
    assert record["event"] == "exit" and record["account"] == "alice"
    assert record["command"] == ["sh", "-c", script]
    log = (ssite.root / "audit-audit" / "audit.jsonl").read_text()
    assert record in [json.loads(line) for line in log.splitlines()]
    assert secret not in log and secret.encode() not in lines[0]


def test_usage_is_summed_by_account_and_user_in_both_linger_modes(
    ssite: Site, screds: Credentials, wrapper: Path, syslog: socket.socket
) -> None:
    busy = "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done"
    keys = {"alice": f"c-{secrets.token_hex(4)}", "bob": f"c-{secrets.token_hex(4)}"}
    ran = run_switch(wrapper, ["--no-linger", "--", "sh", "-c", busy], user=screds.made["alice"],
                     job=keys["alice"], extra_env={"PILOTAGE_EXEC_JOB_NAME": "12.3"})  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    ran = run_switch(wrapper, ["--linger", "--", "sh", "-c", busy], user=screds.made["bob"],
                     job=keys["bob"])  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    for who, key in keys.items():
        killed = run_switch(wrapper, ["--signal", "KILL", "--job", key], user=screds.made[who])
        assert killed.returncode == 0, killed.stderr
    records = [json.loads(line.split(b"]: ", 1)[1]) for line in received(syslog, 6)]
    by_event = {(r.get("family"), r["event"]): r for r in records}
    end = by_event[(keys["alice"], "end")]
    assert end["job"] == "12.3" and end["account"] == "alice" and end["wall_s"] > 0
    if end.get("cgroup"):  # cgroup v2: cpu time from its cpu.stat
        assert end["cpu_user_s"] + end["cpu_sys_s"] > 0
    assert by_event[(keys["alice"], "exec")]["job"] == "12.3"
    assert by_event[(keys["bob"], "exit")]["cpu_user_s"] >= 0
    assert "wall_s" not in by_event[(keys["bob"], "end")]  # counted once, in its exit record

    shown = subprocess.run([str(wrapper), "--accounting", "--json"], capture_output=True,
                           text=True, check=True)  # fmt: skip
    sums = json.loads(shown.stdout)
    # Every job once: bob ran one here; alice one here, one more if the test above ran.
    assert sums["by_account"]["bob"]["jobs"] == 1
    assert sums["by_account"]["alice"]["jobs"] in (1, 2)
    assert sums["by_account"]["bob"]["cpu_h"] > 0
    alice = [row for user, row in sums["by_user"].items() if user.endswith("/O=Example/CN=Alice")]
    assert len(alice) == 1 and alice[0]["wall_h"] > 0
    table = subprocess.run([str(wrapper), "--accounting"], capture_output=True, text=True,
                           check=True).stdout  # fmt: skip
    assert "alice" in table and "bob" in table and "/O=Example/CN=Bob" in table
    later = subprocess.run([str(wrapper), "--accounting", "--json", "--since", "2999-01-01"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert json.loads(later.stdout)["by_account"] == {}


def test_accounting_is_not_for_the_switch_callers(
    ssite: Site, screds: Credentials, wrapper: Path
) -> None:
    through_sudo = run_switch(wrapper, ["--accounting"])
    refused(through_sudo, 203, "--accounting is for root or a site administrator")
    as_root = subprocess.run([str(wrapper), "--accounting", "--since", "yesterday"],
                             capture_output=True, text=True)  # fmt: skip
    refused(as_root, 201, "--since 'yesterday' is not a date or time.")
    assert os.geteuid() == 0
