"""Reloading a running server's configuration: ``config check`` says what reloads and
what needs a restart; SIGHUP takes an ``[x509] ca_dir`` added after the start, so
``delegate`` works without a restart; a file that does not load changes nothing."""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotage.testing import Pool


@pytest.fixture
def pool() -> Iterator[Pool]:
    root = Path(tempfile.mkdtemp(prefix="pilotage-pool-"))
    pool = Pool(root, f"sqlite:///{root / 'pilotage.db'}")
    try:
        yield pool.start()
    finally:
        pool.stop()
        shutil.rmtree(root, ignore_errors=True)


def _wait_in_log(pool: Pool, text: str, after: int, timeout_s: float = 60) -> str:
    """Wait until the server's log, past its first ``after`` characters, has ``text``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        log = pool.server_log()[after:]
        if text in log:
            return log
        time.sleep(0.1)
    pytest.fail(f"the server never logged {text!r}; its log: {pool.server_log()[after:]}")


def test_sighup_reloads_x509_so_delegate_works_without_restart(pool: Pool) -> None:
    home, ca_dir = pool.root / "home", pool.root / "ca"
    grid = {
        "HOME": str(home),
        "PILOTAGE_CA_DIR": str(ca_dir),
        "X509_USER_PROXY": str(pool.root / "proxy.pem"),
    }
    for args in (
        ("ca", "init", "--subject", "CN=Test CA,O=Example"),
        ("ca", "issue", "--user", "CN=Alice,O=Example", "--out", str(home / ".globus")),
        ("proxy", "init", "--valid", "2:00"),
    ):
        done = pool.cli(*args, env=grid)
        assert done.returncode == 0, done.stderr
    refused = pool.cli("delegate", "--valid", "1:00", env=grid)
    assert refused.returncode == 4 and "[x509] ca_dir" in refused.stderr

    config = pool.state.config
    original = config.read_text()
    # A file that does not load is refused by 'config check', naming the key...
    broken = pool.root / "broken.toml"
    broken.write_text(original + "\n[x509]\nca_dir = 5\n")
    checked = pool.cli("config", "check", str(broken))
    assert checked.returncode == 78 and "[x509] ca_dir" in checked.stderr
    missing = pool.root / "missing.toml"
    missing.write_text(original + f'\n[x509]\nca_dir = "{pool.root / "nowhere"}"\n')
    checked = pool.cli("config", "check", str(missing))
    assert checked.returncode == 78 and "configuration [x509] ca_dir" in checked.stderr
    # ... and by a reload, which keeps the running configuration.
    server = pool.servers[0]
    config.write_text(missing.read_text())
    seen = len(pool.server_log())
    server.send_signal(signal.SIGHUP)
    _wait_in_log(pool, "configuration reload refused: configuration [x509] ca_dir", seen)
    assert pool.cli("delegate", "--valid", "1:00", env=grid).returncode == 4

    # The trust directory the CA made, and a change that needs a restart.
    trust = ca_dir / "certificates"
    edited = original.replace("max_sandbox_mb = 256", "max_sandbox_mb = 100")
    assert edited != original
    config.write_text(edited + f'\n[x509]\nca_dir = "{trust}"\n')
    checked = pool.cli("config", "check", str(config))
    assert checked.returncode == 0, checked.stderr
    assert f"[x509] ca_dir: '' -> '{trust}' (reloads)" in checked.stdout
    assert "[server] max_sandbox_mb: 256 -> 100 (needs a restart)" in checked.stdout

    seen = len(pool.server_log())
    server.send_signal(signal.SIGHUP)
    _wait_in_log(
        pool,
        "configuration reloaded: changed [x509] ca_dir; needs a restart: [server] max_sandbox_mb",
        seen,
    )
    delegated = pool.cli("delegate", "--valid", "1:00", env=grid)
    assert delegated.returncode == 0, delegated.stderr
    assert "the credential of /O=Example/CN=Alice" in delegated.stdout
    assert server.poll() is None  # the same server, never restarted

    # 'admin reload' does the same on demand; the restart-only change is still pending.
    reloaded = pool.cli("admin", "reload")
    assert reloaded.returncode == 0
    assert reloaded.stdout.strip() == "[server] max_sandbox_mb: 256 -> 100 (needs a restart)"


def test_admin_reload_refuses_a_bad_file_and_keeps_the_running_configuration(
    pool: Pool,
) -> None:
    import httpx

    config = pool.state.config
    original = config.read_text()
    with pool.admin() as client:
        before = client.call("GET", "/api/v1/admin/config")
    assert before["settings"]["server"]["max_attempts"] == 5
    # A reloadable change next to what does not load: neither takes effect.
    changed = original.replace("max_attempts = 5", "max_attempts = 7")
    assert changed != original
    for broken, what in (
        (changed + "\n[nonsense]\nkey = 1\n", "unknown section [nonsense]"),
        (changed + "\nthis is = = not toml\n", "is not valid TOML"),
        (changed.replace("heartbeat_s = 60.0", 'heartbeat_s = "often"'), "heartbeat_s"),
    ):
        config.write_text(broken)
        refused = pool.cli("admin", "reload")
        assert refused.returncode == 78, refused.stderr
        assert str(config) in refused.stderr and what in refused.stderr, refused.stderr
        assert "the running configuration stays" in refused.stderr
        assert "Traceback" not in refused.stderr
    # The API's one error body, 422 ConfigInvalid.
    transport = httpx.HTTPTransport(uds=str(pool.state.socket))
    with httpx.Client(transport=transport, base_url="http://local") as raw:
        answer = raw.post("/api/v1/admin/reload")
    assert answer.status_code == 422
    body = answer.json()
    assert set(body) == {"error", "message"} and body["error"] == "ConfigInvalid"
    assert str(config) in body["message"] and "heartbeat_s" in body["message"]
    with pool.admin() as client:
        after = client.call("GET", "/api/v1/admin/config")
    assert after["settings"] == before["settings"]
    assert after["loaded_at"] == before["loaded_at"]
    # The file fixed: the reload takes the change.
    config.write_text(changed)
    reloaded = pool.cli("admin", "reload")
    assert reloaded.returncode == 0, reloaded.stderr
    assert reloaded.stdout.strip() == "[server] max_attempts: 5 -> 7 (in effect)"
    with pool.admin() as client:
        assert client.call("GET", "/api/v1/admin/config")["settings"]["server"]["max_attempts"] == 7
