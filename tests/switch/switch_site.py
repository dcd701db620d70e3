"""Helpers of the switch's tests: the test site, credential files, running the switch.

See ``conftest.py`` for the fixtures built from them.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pilotage import exec_install as install
from pilotage.credentials.proxy import make_proxy, proxy_pem
from pilotage.credentials.tokens import Role, TokenIssuer
from pilotage.credentials.x509_testing import make_pki
from pilotage.testing_accounts import AccountsUnavailable
from pilotage.testing_accounts import ensure_accounts as ensure_unix_accounts

ACCOUNTS = ("pilot", "alice", "bob", *(f"cms{n:03d}" for n in range(1, 6)))
ISSUER = "https://pool.example"
AUDIENCE = "https://site.example"

POLICY = """
pilots = ["/O=Example/CN=Pilot"]
gridmapfile = "{root}/grid-mapfile"
gridmapdir = "{root}/gridmapdir"
require_pilot = {require_pilot}

[ban]
dns = ["/O=Example/CN=Mallory"]
subjects = ["{issuer} mallory"]
groups = ["/cms/banned"]

[[map]]
dn = "/O=Example/CN=Alice"
account = "alice"

[[map]]
subject = "{issuer} alice"
account = "alice"

[[map]]
group = "/cms/*"
pool = "cms"

[pools]
cms = "cms001..cms005"
"""


def ensure_accounts(require_service: Callable[[str, str], NoReturn]) -> None:
    """Create the test accounts if missing (root only)."""
    if os.geteuid() != 0:
        require_service("root", "the switch's tests create accounts and install a sudo rule")
    if shutil.which("sudo") is None:
        require_service("sudo", "install it (scripts/provision-test-services)")
    try:
        ensure_unix_accounts(ACCOUNTS)
    except AccountsUnavailable as exc:
        require_service("real Unix users", str(exc))


def interpreter() -> str:
    """A Python every account may run (the venv's may live under root's 0700 home)."""
    for candidate in (sys.executable, "/usr/bin/python3"):
        real = Path(candidate).resolve()
        if all(p.stat().st_mode & 0o001 for p in [real, *real.parents]):
            return candidate
    return sys.executable


@dataclass
class Site:
    """The site directory: CA, policy, issuer keys, and one installed switch per mode."""

    root: Path
    pki: object
    issuer: TokenIssuer
    installs: dict[str, Path] = field(default_factory=dict)
    sudoers: list[Path] = field(default_factory=list)

    @classmethod
    def create(cls, prefix: str, grid_mapfile: str) -> Site:
        """A fresh site directory under /tmp: CA and trust directory, grid-mapfile,
        gridmapdir, the pilot's home, and a token issuer whose keys the switch trusts."""
        root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        root.chmod(0o755)
        pki = make_pki(root / "ca")
        pki.ca.export_trust_dir(root / "certificates")
        (root / "grid-mapfile").write_text(grid_mapfile)
        (root / "gridmapdir").mkdir()
        (root / "pilot-home").mkdir(mode=0o755)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        issuer = TokenIssuer([pem], ISSUER, AUDIENCE)
        (root / "jwks.json").write_text(json.dumps(issuer.jwks()))
        return cls(root, pki, issuer)

    def remove(self) -> None:
        """Take away the sudo rules, the site directory and the installs' state."""
        for path in self.sudoers:
            path.unlink(missing_ok=True)
        shutil.rmtree(self.root, ignore_errors=True)
        for name in self.installs:
            shutil.rmtree(
                f"/var/tmp/pilotage-exec-test-{self.root.name}-{name}", ignore_errors=True
            )

    def config_text(self, name: str, mode: str, **extra: str) -> str:
        """The exec.toml of the install ``name``."""
        authz = extra.pop(
            "authz", f'[authz]\nkind = "local"\npolicy = "{self.root}/policy-{name}.toml"\n'
        )
        invokers = extra.pop("invokers", '["pilot"]')
        lines = [
            f'mode = "{mode}"',
            f"invokers = {invokers}",
            f'trust_dir = "{self.root}/certificates"',
            f'audit_log = "{self.root}/audit-{name}/audit.jsonl"',
            f"syslog = {extra.pop('syslog', 'false')}",
            f'hide = ["{self.root}/pilot-home"]',
            *[f"{key} = {value}" for key, value in extra.items()],
            authz,
            "[tokens]",
            f'audiences = ["{AUDIENCE}"]',
            f'issuers = {{ "{ISSUER}" = "{self.root}/jwks.json" }}',
        ]
        return "\n".join(lines) + "\n"

    def install(self, name: str, mode: str, *, require_pilot: bool = False, **extra: str) -> Path:
        """Install a switch named ``name`` in ``mode``; return its wrapper."""
        policy = POLICY.format(
            root=self.root, issuer=ISSUER, require_pilot=str(require_pilot).lower()
        )
        (self.root / f"policy-{name}.toml").write_text(policy)
        config = self.root / f"exec-{name}.toml"
        config.write_text(self.config_text(name, mode, **extra))
        config.chmod(0o644)
        state = f"/var/tmp/pilotage-exec-test-{self.root.name}-{name}"
        wrapper = install.install(self.root / name, str(config), state, interpreter())
        tag = self.root.name.replace(".", "_")
        sudoers = Path(f"/etc/sudoers.d/pilotage-exec-test-{tag}-{name}")
        install.write_sudoers(sudoers, wrapper, "pilot")
        self.sudoers.append(sudoers)
        self.installs[name] = wrapper
        return wrapper

    def audit_unprivileged(self, name: str, account: str = "pilot") -> list[dict[str, object]]:
        """The audit records an unprivileged switch kept in its own state directory."""
        path = Path(f"/tmp/pilotage-exec-{pwd.getpwnam(account).pw_uid}/audit.jsonl")
        return [json.loads(line) for line in path.read_text().splitlines()]

    def audit(self, name: str) -> list[dict[str, object]]:
        """The audit records of the install ``name``."""
        path = self.root / f"audit-{name}" / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]


def pilot_file(path: Path, data: bytes, mode: int = 0o600, owner: str = "pilot") -> Path:
    """Write ``data`` at ``path``, owned by ``owner``, with ``mode``."""
    path.write_bytes(data)
    account = pwd.getpwnam(owner)
    os.chown(path, account.pw_uid, account.pw_gid)
    path.chmod(mode)
    return path


@dataclass
class Credentials:
    """Credential files of the pilot, in a directory of the pilot."""

    directory: Path
    site: Site
    made: dict[str, Path] = field(default_factory=dict)

    def proxy(self, subject: str, name: str | None = None, lifetime_s: int = 3600) -> Path:
        """A proxy of a new certificate ``CN=subject,O=Example``, as a pilot file."""
        name = name or subject.lower()
        user = self.site.pki.ca.issue_user(f"CN={subject},O=Example")  # type: ignore[attr-defined]
        cert, key = make_proxy(user.cert, user.key, [], lifetime_s=lifetime_s)
        return pilot_file(self.directory / name, proxy_pem(cert, key, [user.cert]))

    def token(self, subject: str, groups: tuple[str, ...] = (), name: str | None = None) -> Path:
        """A pool token for ``subject`` with ``groups``, as a pilot file."""
        token = self.site.issuer.mint(subject, Role.USER, 3600, groups)
        return pilot_file(self.directory / (name or f"token-{subject}"), token.encode())


def run_switch(
    wrapper: Path,
    args: list[str],
    *,
    user: Path | None = None,
    pilot: Path | None = None,
    target: Path | None = None,
    job: str | None = None,
    sudo: bool = True,
    as_user: str = "pilot",
    extra_env: dict[str, str] | None = None,
    timeout: float = 30,
    **popen: object,
) -> subprocess.CompletedProcess[str]:
    """Run the switch as the account ``pilot`` (through sudo by default)."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **(extra_env or {})}
    for name, value in (
        ("PILOTAGE_EXEC_USER_CREDENTIAL", user),
        ("PILOTAGE_EXEC_PILOT_CREDENTIAL", pilot),
        ("PILOTAGE_EXEC_TARGET_DIR", target),
        ("PILOTAGE_EXEC_JOB_ID", job),
    ):
        if value is not None:
            env[name] = str(value)
    command = ["sudo", "-n", str(wrapper), *args] if sudo else [str(wrapper), *args]
    return subprocess.run(
        command,
        env=env,
        user=as_user,
        group=as_user,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",
        **popen,  # type: ignore[arg-type]
    )


def wait_for(predicate: Callable[[], bool], timeout: float = 10) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.05)
