"""Setting a pool up for a real host: ``init --host`` puts the names in the server
certificate and the config, a client reaching the server by such a name verifies it, and
the CLI's TLS errors name the fix."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from e2e_callers import run_cli

import pilotage


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A clean environment for a pool in ``tmp_path/pool``; its server stopped after."""
    values = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PILOTAGE_STATE_DIR": str(tmp_path / "pool"),
        "PILOTAGE_SERVER_PORT": "0",
    }
    yield values
    pid_file = tmp_path / "pool" / "server.pid"
    if pid_file.exists():
        stop_detached(int(pid_file.read_text()))


def stop_detached(pid: int) -> None:
    """SIGTERM a server started with --detach (not our child) and wait until it is gone."""
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            os.kill(pid, 0)  # ProcessLookupError once it has exited
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _names(cert: Path) -> set[str]:
    san = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    ips = {str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)}
    return set(san.value.get_values_for_type(x509.DNSName)) | ips


def test_init_host_and_a_client_reaching_the_server_by_that_name(
    tmp_path: Path, env: dict[str, str]
) -> None:
    state = tmp_path / "pool"
    ca = state / "ca" / "ca.crt"
    bad = run_cli("init", "--host", "bad name!", env=env)
    assert bad.returncode == 2 and "--host 'bad name!' is neither a DNS name" in bad.stderr
    assert not state.exists()

    made = run_cli("init", "--host", "pool.example.org", "--host", "127.0.0.2", env=env)
    assert made.returncode == 0, made.stderr
    steps = made.stdout.split("next:\n", 1)[1].strip().splitlines()
    assert len(steps) == 3 and str(ca) in steps[2] and "server --detach" in steps[0]
    assert {"pool.example.org", "127.0.0.2", "localhost", "127.0.0.1"} <= _names(
        state / "server" / "server.crt"
    )
    config = tomllib.loads((state / "pilotage.toml").read_text())["server"]
    assert (config["host"], config["public_name"]) == ("0.0.0.0", "pool.example.org")

    started = run_cli("server", "--detach", env=env)
    assert started.returncode == 0, started.stderr + started.stdout
    url = (state / "server.url").read_text().strip()
    assert url.startswith("https://pool.example.org:")
    port = int(url.rsplit(":", 1)[1])
    token = tmp_path / "alice.token"
    issued = run_cli("token", "issue", "--role", "user", "--subject", "alice", "--out", str(token),
                     env=env)  # fmt: skip
    assert issued.returncode == 0, issued.stderr

    # By the IP address it carries: verified against the pool CA.
    by_ip = f"https://127.0.0.2:{port}"
    q = run_cli("--server", by_ip, "--ca", str(ca), "--token", str(token), "q", "--json", env=env)
    assert q.returncode == 0 and q.stdout.strip() == "[]", q.stderr
    # By the DNS name it carries (not resolvable here: the TLS handshake names it).
    context = ssl.create_default_context(cafile=ca)
    with (
        socket.create_connection(("127.0.0.2", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="pool.example.org") as tls,
    ):
        assert tls.version() is not None
    with (
        socket.create_connection(("127.0.0.2", port), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"),
    ):
        context.wrap_socket(raw, server_hostname="other.example.org")

    # From a machine without the pool CA: the error names the fix; PILOTAGE_CA is one.
    elsewhere = {**env, "PILOTAGE_STATE_DIR": str(tmp_path / "elsewhere")}
    no_ca = run_cli("--server", by_ip, "--token", str(token), "q", env=elsewhere)
    assert no_ca.returncode == 5
    assert "--ca $STATE/ca/ca.crt" in no_ca.stderr and "PILOTAGE_CA" in no_ca.stderr
    with_env = run_cli("--server", by_ip, "--token", str(token), "q", "--json",
                       env={**elsewhere, "PILOTAGE_CA": str(ca)})  # fmt: skip
    assert with_env.returncode == 0, with_env.stderr
    # A name the certificate lacks: the error says how to add it.
    unnamed = run_cli("--server", f"https://127.0.0.3:{port}", "--ca", str(ca), "--token",
                      str(token), "q", env=env)  # fmt: skip
    assert unnamed.returncode == 5
    assert "does not name 127.0.0.3" in unnamed.stderr
    assert "pilotage init --host 127.0.0.3" in unnamed.stderr

    # The version: the CLI's and the server's.
    assert run_cli("--version", env=env).stdout.strip() == f"pilotage {pilotage.__version__}"
    health = httpx.get(f"{by_ip}/healthz", verify=context, timeout=10)
    assert health.json()["version"] == pilotage.__version__

    # Another name later: the certificate is issued again, the old one kept.
    again = run_cli("init", "--host", "pool2.example.org", env=env)
    assert again.returncode == 0
    assert "re-issued" in again.stdout and "note:" in again.stderr
    assert {"pool.example.org", "pool2.example.org", "127.0.0.2"} <= _names(
        state / "server" / "server.crt"
    )
    assert (state / "server" / "server.key.previous").exists()
