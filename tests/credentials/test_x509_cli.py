"""``pilotage ca`` and ``pilotage proxy`` as real processes: outputs, files and exit codes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pilotage.x509.chain import TrustStore, load_credential, validate_chain

CA = "from pilotage.cli.ca import app; app()"
PROXY = "from pilotage.cli.proxy import app; app()"
MAIN = "from pilotage.cli.main import main; main()"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home directory with ``~/.globus`` holding Alice's certificate, and a CA next to it."""
    env = {"HOME": str(tmp_path / "home")}
    run(CA, "init", "--dir", str(tmp_path / "ca"), "--subject", "CN=Test CA,O=Example", env=env)
    globus = tmp_path / "home" / ".globus"
    run(
        CA,
        "issue",
        "--dir",
        str(tmp_path / "ca"),
        "--user",
        "CN=Alice,O=Example",
        "--out",
        str(globus),
        env=env,
    )
    return tmp_path / "home"


def run(
    entry: str, *args: str, env: dict[str, str] | None = None, code: int = 0
) -> subprocess.CompletedProcess[str]:
    """Run a CLI entry with a clean grid environment; check its exit code."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("X509_")}
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-c", entry, *args],
        env=full_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == code, (result.stdout, result.stderr)
    return result


def grid_env(home: Path, **extra: str) -> dict[str, str]:
    return {
        "HOME": str(home),
        "X509_USER_PROXY": str(home / "x509up"),
        "X509_CERT_DIR": str(home.parent / "ca" / "certificates"),
        **extra,
    }


def test_ca_init_issue_and_list(home: Path) -> None:
    ca_dir = home.parent / "ca"
    globus = home / ".globus"
    assert stat.S_IMODE((globus / "userkey.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((ca_dir / "ca.key").stat().st_mode) == 0o600
    run(
        CA,
        "issue",
        "--dir",
        str(ca_dir),
        "--host",
        "node1.example.org",
        "--out",
        str(home / "host"),
    )
    assert (home / "host" / "hostcert.pem").is_file()
    listing = json.loads(run(CA, "list", "--dir", str(ca_dir), "--json").stdout)
    assert [(e["serial"], e["kind"]) for e in listing] == [(1, "user"), (2, "host")]
    # The CA directory can also come from the environment.
    text = run(CA, "list", env={"PILOTAGE_CA_DIR": str(ca_dir)}).stdout
    assert "/O=Example/CN=Alice" in text


def test_ca_refusals_and_exit_codes(home: Path) -> None:
    ca_dir = str(home.parent / "ca")
    result = run(CA, "issue", "--dir", ca_dir, "--user", "CN=A", "--host", "h", code=2)
    assert "exactly one of --user" in result.stderr
    result = run(
        CA,
        "issue",
        "--dir",
        ca_dir,
        "--user",
        "CN=Alice,O=Example",
        "--out",
        str(home / ".globus"),
        code=2,
    )
    assert "already exists" in result.stderr
    assert (
        "not a revocation reason"
        in run(CA, "revoke", "--dir", ca_dir, "1", "--reason", "x", code=2).stderr
    )
    assert (
        "no certificate with serial 77" in run(CA, "revoke", "--dir", ca_dir, "77", code=3).stderr
    )
    assert "not a CA directory" in run(CA, "list", "--dir", str(home), code=3).stderr


def test_proxy_init_with_grid_defaults_and_info(home: Path) -> None:
    env = grid_env(home)
    out = run(PROXY, "init", "--valid", "2:30", env=env).stdout
    assert "Your identity: /O=Example/CN=Alice" in out
    proxy_file = home / "x509up"
    assert stat.S_IMODE(proxy_file.stat().st_mode) == 0o600
    chain, key = load_credential(proxy_file.read_bytes())
    trust = TrustStore.from_directory(home.parent / "ca" / "certificates")
    assert validate_chain(chain, trust, key=key).proxy_type == "full"
    info = json.loads(run(PROXY, "info", "--json", env=env).stdout)
    assert info["identity"] == "/O=Example/CN=Alice"
    assert info["identity_rfc4514"] == "CN=Alice,O=Example"
    assert info["issuer"] == "/O=Example/CN=Alice"
    assert info["subject"].startswith("/O=Example/CN=Alice/CN=")
    assert (info["type"], info["key_bits"], info["path_length"]) == ("full", 2048, None)
    assert 2 * 3600 < info["time_left_s"] <= 2.5 * 3600
    text = run(PROXY, "info", env=env).stdout
    assert "type        : full (RFC 3820)" in text and "strength    : 2048 bits" in text


def test_limited_proxy_of_a_proxy(home: Path) -> None:
    env = grid_env(home)
    run(PROXY, "init", "--path-length", "2", env=env)
    second, third = home / "second", home / "third"
    run(PROXY, "init", "--cert", str(home / "x509up"), "--limited", "--out", str(second), env=env)
    info = json.loads(run(PROXY, "info", "--json", "-f", str(second), env=env).stdout)
    assert (info["type"], info["path_length"]) == ("limited", 1)
    # A full proxy cannot come out of a limited one, nor a proxy past the path length.
    result = run(PROXY, "init", "--cert", str(second), "--out", str(third), env=env, code=4)
    assert "only a limited proxy" in result.stderr
    run(PROXY, "init", "--cert", str(second), "--limited", "--out", str(third), env=env)
    fourth = ("--limited", "--out", str(home / "fourth"))
    result = run(PROXY, "init", "--cert", str(third), *fourth, env=env, code=4)
    assert "may not sign further proxies" in result.stderr


def test_proxy_init_refusals_and_exit_codes(home: Path, tmp_path: Path) -> None:
    env = grid_env(home)
    assert "HH:MM" in run(PROXY, "init", "--valid", "12", env=env, code=2).stderr
    missing = run(PROXY, "init", "--cert", str(tmp_path / "none.pem"), env=env, code=3)
    assert "does not exist" in missing.stderr
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    assert (
        "no PEM certificate" in run(PROXY, "init", "--cert", str(garbage), env=env, code=2).stderr
    )
    # Bob's key with Alice's certificate: a refused credential.
    run(
        CA,
        "issue",
        "--dir",
        str(home.parent / "ca"),
        "--user",
        "CN=Bob,O=Example",
        "--out",
        str(tmp_path / "bob"),
    )
    result = run(PROXY, "init", "--key", str(tmp_path / "bob" / "userkey.pem"), env=env, code=4)
    assert "does not belong to the certificate '/O=Example/CN=Alice'" in result.stderr
    # A key others can read is refused, as grid-proxy-init does.
    key = home / ".globus" / "userkey.pem"
    key.chmod(0o644)
    assert "readable by others" in run(PROXY, "init", env=env, code=2).stderr
    key.chmod(0o600)


def test_proxy_init_refuses_a_revoked_certificate_when_verifying(home: Path) -> None:
    env = grid_env(home)
    run(CA, "revoke", "--dir", str(home.parent / "ca"), str(home / ".globus" / "usercert.pem"))
    result = run(PROXY, "init", env=env, code=4)
    assert "is revoked by its CA '/O=Example/CN=Test CA'" in result.stderr
    assert not (home / "x509up").exists()


def test_main_cli_registers_ca_and_proxy(home: Path) -> None:
    env = grid_env(home)
    run(MAIN, "proxy", "init", "--valid", "1:00", env=env)
    info = json.loads(run(MAIN, "proxy", "info", "--json", env=env).stdout)
    assert info["identity"] == "/O=Example/CN=Alice"
    assert "Alice" in run(MAIN, "ca", "list", "--dir", str(home.parent / "ca"), env=env).stdout
