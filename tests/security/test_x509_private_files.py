"""Finding 13 of the security review: ``pilotage login --proxy`` took a proxy others could read.

``proxy init`` and the switch refused such a file, ``login`` did not. Now one rule
(``pilotage.credentials.private_file``) holds for every command that reads a file with a
private key: the caller's own regular file, not a symlink, mode 0600 or 0400. Each
refusal names the file and the fix, and nothing reaches the server. See docs/security.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pilotage.credentials.proxy import write_proxy_file
from pilotage.credentials.x509_testing import Pki, make_pki
from pilotage.testing import Pool


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def alice_proxy(pki: Pki, path: Path) -> Path:
    chain, key = pki.proxy()
    return write_proxy_file(path, chain[0], key, chain[1:])


def test_login_refuses_a_proxy_others_can_read_and_accepts_it_once_private(
    pki: Pki, make_pool: Callable[..., Pool], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PILOTAGE_X509_CA_DIR", str(pki.trust_dir))
    pool = make_pool()
    proxy = alice_proxy(pki, tmp_path / "x509up")
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    token = tmp_path / "config" / "pilotage" / "token"
    proxy.chmod(0o644)
    refused = pool.cli("--server", pool.url, "login", "--proxy", str(proxy), env=env)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr == (
        f"pilotage: The proxy file {proxy} holds a private key and is readable by others "
        f"(mode 0644); run 'chmod 600 {proxy}'.\n"
    )
    assert not token.exists()
    proxy.chmod(0o400)
    done = pool.cli("--server", pool.url, "login", "--proxy", str(proxy), env=env)
    assert done.returncode == 0, done.stderr
    assert token.exists()


def test_login_refuses_a_symlinked_or_foreign_proxy(
    pki: Pki, make_pool: Callable[..., Pool], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PILOTAGE_X509_CA_DIR", str(pki.trust_dir))
    pool = make_pool()
    proxy = alice_proxy(pki, tmp_path / "x509up")
    link = tmp_path / "link"
    link.symlink_to(proxy)
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    refused = pool.cli("--server", pool.url, "login", "--proxy", str(link), env=env)
    assert refused.returncode == 2, refused.stderr
    assert f"The proxy file {link} is a symbolic link" in refused.stderr
    if os.geteuid() != 0:
        pytest.skip("giving the proxy to another account needs root")
    os.chown(proxy, 65534, -1)
    refused = pool.cli("--server", pool.url, "login", "--proxy", str(proxy), env=env)
    assert refused.returncode == 2, refused.stderr
    assert f"The proxy file {proxy} belongs to uid 65534, not to you" in refused.stderr
    assert not (tmp_path / "config" / "pilotage" / "token").exists()


def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("X509_")}
    done = subprocess.run(
        [sys.executable, "-m", "pilotage.cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode, done.stderr


def test_every_command_reading_a_key_applies_the_same_rule(pki: Pki, tmp_path: Path) -> None:
    proxy = alice_proxy(pki, tmp_path / "x509up")
    proxy.chmod(0o640)
    globus = tmp_path / "home" / ".globus"
    globus.mkdir(parents=True)
    (globus / "usercert.pem").write_bytes(pki.user.cert_pem())
    (globus / "userkey.pem").write_bytes(pki.user.key_pem())
    (globus / "userkey.pem").chmod(0o644)
    env = {"HOME": str(tmp_path / "home")}
    sentence = "holds a private key and is readable by others"
    commands = {
        "proxy info": (["proxy", "info", "--file", str(proxy)], proxy),
        "proxy of a proxy": (["proxy", "init", "--cert", str(proxy)], proxy),
        "proxy init": (["proxy", "init", "--out", str(tmp_path / "new")], globus / "userkey.pem"),
        "delegate": (["--server", "https://127.0.0.1:1", "delegate", "--proxy", str(proxy)], proxy),
    }
    for name, (args, culprit) in commands.items():
        code, stderr = run_cli(*args, env=env)
        assert code == 2, (name, stderr)
        assert f"{culprit} {sentence}" in stderr and f"chmod 600 {culprit}" in stderr, name
    assert not (tmp_path / "new").exists()
    # The certificate alone may be public (it is): only key files must be private.
    (globus / "userkey.pem").chmod(0o600)
    code, stderr = run_cli(*commands["proxy init"][0], env=env)
    assert code == 0, stderr
