"""``pilotage demo --provisioning --switch``: provisioned pilots that run each job as its owner.

As root, on this machine: the accounts ``pilot``, ``alice`` and ``bob`` (made if missing);
a throwaway CA whose users Alice and Bob delegate proxies to the pool; the switch
installed in setuid mode with ``pilotage-exec-install``'s code into a temporary prefix,
with a sudo rule for ``pilot`` and a local policy mapping Alice's DN to ``alice``, Bob's
to ``bob``, and the pilots' token to ``nobody`` (for the validation tests); a factory
whose local entry runs pilots as ``pilot`` in a world-searchable scratch, at a site that
*requires* setuid and forbids bypass; a frontend in mode ``required``. Each pilot
validates the switch (both tests, as ``nobody``) and runs the jobs of Alice and Bob,
each under its owner's account. The demo checks that every job completed, that each
job's ``id -un`` says its owner, and that the switch's audit names both accounts.

Everything made is removed at the end except the accounts.
"""

from __future__ import annotations

import base64
import io
import json
import os
import pwd
import shutil
import ssl
import sys
import tarfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from rich.console import Console

from pilotage import exec_install as install
from pilotage.cli.client import Client, locate
from pilotage.credentials.ca import IssuedCredential
from pilotage.credentials.proxy import sign_proxy_request
from pilotage.credentials.x509_testing import Pki, make_pki
from pilotage.demo_provisioning import SERVER_ENV, start_services
from pilotage.scratch import scratch_dir
from pilotage.statedir import StateDir
from pilotage.testing_accounts import ensure_accounts as ensure_unix_accounts

ACCOUNTS = ("pilot", "alice", "bob")
#: The installed switch's state directory (root's, 0700; the switch checks it), per demo.
STATE_PREFIX = "/var/tmp/pilotage-exec-"  # noqa: S108
USERS = {"alice": "CN=Alice,O=Example", "bob": "CN=Bob,O=Example"}
PILOT_TOKEN_SUBJECT = "entry:gamma/demo-frontend"  # noqa: S105 (a name, not a secret)
ENTRIES = """\
[factory]
name = "demo-factory"
cycle_s = 1

[[entry]]
name = "gamma"
backend = "local"
params = {{ user = "pilot", scratch = "{scratch}" }}
[entry.attrs]
site = "gamma"
cpus = 2
memory_mb = 1024
disk_mb = 1024
max_walltime_s = 3600
switch = "setuid"
switch_path = "{wrapper}"
[entry.policy]
multi_user = "yes"
setuid = "require"
log_only = "no"
bypass_on_error = "no"
"""
FRONTEND = """\
[frontend]
name = "demo-frontend"
cycle_s = 1
switch = "required"
switch_types = ["setuid"]
token_lifetime_s = 3600
entry_max_age_s = 30

[pressure]
max_idle = 1
max_running = 2
idle_curb = 1
remove_excess = "idle"
"""


def ensure_accounts() -> None:
    """``pilot``, ``alice`` and ``bob``, with homes, made where missing."""
    ensure_unix_accounts(ACCOUNTS)


def interpreter() -> str:
    """A Python every account may run (this one may live in root's 0700 home)."""
    real = Path(sys.executable).resolve()
    if all(p.stat().st_mode & 0o001 for p in [real, *real.parents]):
        return sys.executable
    return "/usr/bin/python3"


def _pem(certs: list[x509.Certificate]) -> str:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs).decode()


def _https(state: StateDir, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=state.url_file.read_text(encoding="utf-8").strip(),
        verify=ssl.create_default_context(cafile=str(state.ca_cert)),
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def _token(client: Client, subject: str, role: str) -> str:
    body = {"subject": subject, "role": role, "lifetime_s": 86400}
    return str(client.call("POST", "/api/v1/tokens", json=body)["token"])


def delegate_and_submit(state: StateDir, client: Client, user: IssuedCredential,
                        name: str, jobs: int, iwd: Path) -> list[str]:  # fmt: skip
    """Delegate ``user``'s proxy as ``name`` and submit ``jobs`` jobs of ``id -un``."""
    with _https(state, _token(client, name, "user")) as http:
        pending = http.post("/api/v1/delegations").json()
        csr = x509.load_pem_x509_csr(pending["csr_pem"].encode())
        proxy = sign_proxy_request(csr, user.cert, user.key, [], lifetime_s=3 * 3600)
        done = http.put(f"/api/v1/delegations/{pending['delegation_id']}",
                        json={"chain_pem": _pem([proxy, user.cert])})  # fmt: skip
        done.raise_for_status()
        cluster = http.post("/api/v1/clusters").json()["cluster_id"]
        dn = "/" + "/".join(reversed(USERS[name].split(",")))
        job = {"executable": "/usr/bin/id", "arguments": ["-un"], "transfer_executable": False,
               "iwd": str(iwd), "output": "out.txt", "error": "err.txt", "x509_identity": dn,
               "max_walltime_s": 600}  # fmt: skip
        answer = http.post(f"/api/v1/clusters/{cluster}/jobs", json={"v": 1, "jobs": [job] * jobs})
        answer.raise_for_status()
    return [f"{cluster}.{n}" for n in range(jobs)]


def install_switch(root: Path, client: Client, pki: Pki) -> tuple[Path, Path]:
    """The switch in setuid mode under ``root/exec``, trusting the pool's tokens and CA;
    its wrapper and its sudo rule."""
    # The issuer and audience the switch must accept: those of a token the pool mints.
    payload = _token(client, PILOT_TOKEN_SUBJECT, "pilot").split(".")[1]
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    issuer = fields["iss"]
    audience = fields["aud"] if isinstance(fields["aud"], str) else fields["aud"][0]
    (root / "pool-jwks.json").write_text(json.dumps(client.call("GET", "/api/v1/jwks")))
    (root / "grid-mapfile").write_text("")
    (root / "gridmapdir").mkdir()
    (root / "policy.toml").write_text(
        f'pilots = ["{PILOT_TOKEN_SUBJECT}"]\ngridmapfile = "{root}/grid-mapfile"\n'
        f'gridmapdir = "{root}/gridmapdir"\nrequire_pilot = true\n\n'
        '[[map]]\ndn = "/O=Example/CN=Alice"\naccount = "alice"\n\n'
        '[[map]]\ndn = "/O=Example/CN=Bob"\naccount = "bob"\n\n'
        f'[[map]]\nsubject = "{PILOT_TOKEN_SUBJECT}"\naccount = "nobody"\n'
    )
    config = root / "exec.toml"
    config.write_text(
        'mode = "setuid"\ninvokers = ["pilot"]\n'
        f'trust_dir = "{pki.trust_dir}"\naudit_log = "{root}/audit/audit.jsonl"\n'
        "syslog = false\nallow_limited = true\n"
        f'[authz]\nkind = "local"\npolicy = "{root}/policy.toml"\n'
        f'[tokens]\naudiences = ["{audience}"]\nissuers = {{ "{issuer}" = '
        f'"{root}/pool-jwks.json" }}\n'
    )
    for path in (config, root / "policy.toml", root / "pool-jwks.json", root / "grid-mapfile"):
        path.chmod(0o644)
    wrapper = install.install(
        root / "exec", str(config), f"{STATE_PREFIX}{root.name}", interpreter()
    )
    sudoers = Path(f"/etc/sudoers.d/{root.name.replace('.', '_')}")
    install.write_sudoers(sudoers, wrapper, "pilot")
    return wrapper, sudoers


def run_switched_with_server(
    state: StateDir, root: Path, console: Console, pki: Pki, *, jobs: int = 2,
    timeout_s: float = 180,
) -> int:  # fmt: skip
    """The demo against the server of ``state``, which must trust ``pki``'s CA."""
    ensure_accounts()
    users = {"alice": pki.user, "bob": pki.ca.issue_user(USERS["bob"])}
    scratch = root / "scratch"
    scratch.mkdir(mode=0o755)
    pilot = pwd.getpwnam("pilot")
    os.chown(scratch, pilot.pw_uid, pilot.pw_gid)
    with Client(locate(state, None, None, None)) as client, ExitStack() as stack:
        wrapper, sudoers = install_switch(root, client, pki)
        stack.callback(sudoers.unlink, missing_ok=True)
        stack.callback(shutil.rmtree, f"{STATE_PREFIX}{root.name}", ignore_errors=True)
        (root / "entries.toml").write_text(ENTRIES.format(scratch=scratch, wrapper=wrapper))
        (root / "frontend.toml").write_text(FRONTEND)
        owners: dict[str, str] = {}
        for name, user in users.items():
            for job_id in delegate_and_submit(state, client, user, name, jobs, root):
                owners[job_id] = name
        console.print(f"submitted {len(owners)} jobs of alice and bob, each running `id -un`")
        start_services(state, root, client, stack)
        console.print("factory (entry gamma: setuid required, no bypass) and frontend started")
        deadline = time.monotonic() + timeout_s
        while True:
            queue = client.call("GET", "/api/v1/jobs", params={"id": list(owners)})
            if all(j["state"] in ("COMPLETED", "HELD", "REMOVED") for j in queue):
                break
            if time.monotonic() > deadline:
                console.print(f"[red]not done within {timeout_s:.0f} s; logs in {root}[/]")
                return 1
            time.sleep(0.5)
        outputs = {j["id"]: _output(state, client, j["id"], owners[j["id"]]) for j in queue}
        audit = root / "audit" / "audit.jsonl"
        records = [json.loads(x) for x in audit.read_text().splitlines()] if audit.exists() else []
    checks = {
        "every job completed": all(j["state"] == "COMPLETED" for j in queue),
        "each job ran as its owner (id -un)": all(outputs[i].strip() == owners[i] for i in owners),
        "the switch's audit names alice and bob": {"alice", "bob"}
        <= {str(r.get("account")) for r in records},
    }
    for job_id in sorted(owners):
        console.print(f"  job {job_id} of {owners[job_id]}: id -un says {outputs[job_id]!r}")
    for text, ok in checks.items():
        console.print(f"{'[green]ok[/]' if ok else '[red]FAILED[/]'}  {text}")
    return 0 if all(checks.values()) else 1


def _output(state: StateDir, client: Client, job_id: str, owner: str) -> str:
    """``out.txt`` of the job, as its owner downloads it ('' when there is none)."""
    with _https(state, _token(client, owner, "user")) as http:
        answer = http.get(f"/api/v1/jobs/{job_id}/output")
    if answer.status_code != 200:
        return ""
    with tarfile.open(fileobj=io.BytesIO(answer.content)) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith("out.txt")), None)
        data = tar.extractfile(member) if member is not None else None
        return data.read().decode(errors="replace") if data is not None else ""


def run_switched_demo(*, db: str | None) -> int:
    """The whole demo in a throwaway directory, as root; the exit code."""
    from pilotage.demo import _stop as stop_server
    from pilotage.demo import start_server

    console = Console()
    if os.geteuid() != 0 or shutil.which("sudo") is None:
        console.print("pilotage demo --provisioning --switch needs root and sudo: it makes "
                      "accounts and installs the switch with a sudo rule")  # fmt: skip
        return 1
    # Removed at the end, and when interrupted; kept (for its logs) only after a failure.
    # /tmp: the job accounts must reach it (a TMPDIR under a home may be closed to them).
    with scratch_dir("pilotage-switched-", parent="/tmp") as scratch:  # noqa: S108
        root = scratch.path
        root.chmod(0o755)
        console.print(f"[bold]pilotage demo --provisioning --switch[/] in {root}")
        pki = make_pki(root / "ca")
        state = StateDir(root / "state")
        state.init(pool_name="demo")
        env = {**SERVER_ENV, "PILOTAGE_X509_CA_DIR": str(pki.trust_dir)}
        server = start_server(state, db, root / "server.log", env)
        try:
            code = run_switched_with_server(state, root, console, pki)
        finally:
            stop_server(server)
        scratch.keep = code != 0
        return code
