"""The services' systemd units: what 'pilotage admin install-units' writes passes
``systemd-analyze verify``, runs each service under its own account with hardening, and
``packaging/systemd`` holds the same units rendered for /usr/bin/pilotage."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from pilotage.units import PACKAGED_CONFDIR, PACKAGED_PILOTAGE, SYSUSERS, UNITS, render

REPO = Path(__file__).resolve().parents[2]
PACKAGED = REPO / "packaging" / "systemd"


def _settings(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_packaging_holds_the_rendered_units() -> None:
    for unit in render(PACKAGED_PILOTAGE, PACKAGED_CONFDIR):
        path = PACKAGED / ("sysusers.d/pilotage.conf" if unit.name == SYSUSERS else unit.name)
        assert path.read_text() == unit.text, (
            f"{path} differs from its template: regenerate with 'pilotage admin install-units "
            "--dest packaging/systemd --sysusers-dir packaging/systemd/sysusers.d "
            "--pilotage /usr/bin/pilotage'"
        )


def _install_units(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pilotage.cli", "admin", "install-units", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_installed_units_verify_and_are_hardened(
    tmp_path: Path, require_service: Callable[[str, str], NoReturn]
) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        require_service("systemd-analyze", "install the systemd package")
    pilotage = Path(sys.executable).with_name("pilotage")
    units, users = tmp_path / "units", tmp_path / "sysusers.d"
    units.mkdir()
    done = _install_units("--dest", str(units), "--sysusers-dir", str(users),
                          "--pilotage", str(pilotage))  # fmt: skip
    assert done.returncode == 0, done.stderr
    paths = [units / name for name in UNITS]
    verified = subprocess.run([analyze, "verify", *map(str, paths)], capture_output=True,
                              text=True)  # fmt: skip
    assert verified.returncode == 0 and verified.stderr == "", verified.stderr

    accounts = set()
    for path in paths:
        settings = _settings(path.read_text())
        assert settings["ExecStart"][0].startswith(f"{pilotage} "), path
        assert settings["ProtectSystem"] == ["strict"], path
        assert settings["NoNewPrivileges"] == ["yes"], path
        assert settings["PrivateTmp"] == ["yes"], path
        (user,) = settings["User"]
        accounts.add(user)
    assert len(accounts) == len(UNITS)  # each service under an account of its own
    sysusers = (users / "pilotage.conf").read_text()
    assert all(f"u {account} " in sysusers for account in accounts)
    server = _settings((units / "pilotage-server.service").read_text())
    assert server["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert server["CapabilityBoundingSet"] == [""]

    # The check can fail: a unit whose program does not exist does not verify.
    broken = units / "broken.service"
    broken.write_text(paths[0].read_text().replace(str(pilotage), "/nonexistent/pilotage"))
    assert subprocess.run([analyze, "verify", str(broken)], capture_output=True).returncode != 0


def test_install_units_refusals(tmp_path: Path) -> None:
    missing = _install_units("--dest", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "is not a directory" in missing.stderr
    relative = _install_units("--dest", str(tmp_path), "--pilotage", "bin/pilotage")
    assert relative.returncode == 2 and "must be an absolute path" in relative.stderr
    assert list(tmp_path.iterdir()) == []
